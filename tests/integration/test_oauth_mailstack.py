"""OAuth2 for IMAP and SMTP (issue 12) against real servers: Dovecot's ``oauth2`` passdb checking tokens
of the local authorization server (tests/support/oauth_server.py) by RFC 7662 introspection, in the
private mail stack (tests/mailstack.py, ``MailStack(oauth2_introspection_url=…)``), and aiosmtpd with
AUTH XOAUTH2 (tests/support/oauth_smtp.py).

The first tests check the test bed itself with plain imapclient; the scenarios of the issue follow."""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from imapclient import IMAPClient
from imapclient.exceptions import LoginError
from sqlalchemy import select

from mailbridge.store.db import make_engine
from mailbridge.store.models import OAuthToken, Outbox, Ticket
from tests.mailstack import (  # noqa: F401  (fixtures)
    MailStack,
    mailstack_oauth_fixture,
    mailstack_oauth_session_fixture,
)
from tests.support import SUPPORT_ADDRESS, make_mail
from tests.support.oauth_server import (  # noqa: F401  (fixtures)
    JWT_BEARER_GRANT,
    OAuthServer,
    oauth_server_fixture,
    oauth_server_session_fixture,
)
from tests.support.oauth_smtp import OAuthSmtpSink
from tests.support.service import Service

pytestmark = [pytest.mark.mailstack, pytest.mark.slow]

MAILBOX = SUPPORT_ADDRESS
OTHER = "hotline-box@vendor.example"


@contextlib.contextmanager
def imap(stack: MailStack):
    client = IMAPClient(stack.host, port=stack.imap_port, ssl=False, timeout=30)
    try:
        yield client
    finally:
        # Dovecot's master waits for open client connections at its stop: close every one.
        with contextlib.suppress(Exception):
            client.logout()
        with contextlib.suppress(Exception):
            client.shutdown()


def test_dovecot_takes_xoauth2_and_oauthbearer_tokens_and_passwords_still_work(
    mailstack_oauth: MailStack, oauth_server: OAuthServer
):
    mailstack_oauth.add_users(MAILBOX, OTHER)
    oauth_server.register_client("app-support", mailbox=MAILBOX)
    token = oauth_server.mint_access_token("app-support", None)
    with imap(mailstack_oauth) as c:
        assert {b"AUTH=XOAUTH2", b"AUTH=OAUTHBEARER", b"AUTH=PLAIN"} <= set(c.capabilities())
        c.oauth2_login(MAILBOX, token)
        assert c.select_folder("INBOX")[b"EXISTS"] == 0
    with imap(mailstack_oauth) as c:
        c.oauthbearer_login(MAILBOX, token)
        c.select_folder("INBOX")
    with mailstack_oauth.imap(OTHER) as c:  # a password user, as before
        c.select_folder("INBOX")
    log = mailstack_oauth.dovecot_log()
    assert f"user=<{MAILBOX}>, method=XOAUTH2" in log and f"user=<{MAILBOX}>, method=OAUTHBEARER" in log
    assert f"user=<{OTHER}>, method=PLAIN" in log


def test_mail_is_delivered_to_users_of_the_oauth_stack_and_strangers_bounce(mailstack_oauth: MailStack):
    """The oauth2 passdb changes nothing for LMTP: a user's mail is delivered, a stranger's bounces."""
    mailstack_oauth.add_users(MAILBOX, "kunde@kunde.example")
    mid = mailstack_oauth.send(make_mail(to=MAILBOX, sender=("Kunde", "kunde@kunde.example")))
    [delivered] = mailstack_oauth.wait_for_mail(MAILBOX, message_id=mid)
    assert delivered.subject == "Lizenzserver startet nicht"
    mailstack_oauth.send(make_mail(to="nobody@vendor.example", sender=("Kunde", "kunde@kunde.example")))
    mailstack_oauth.wait_idle()
    assert any("nobody@vendor.example" in line for line in mailstack_oauth.postfix_events("bounced"))


@pytest.mark.parametrize("how", ["revoked", "expired", "another user's", "unknown", "a password"])
def test_dovecot_refuses_a_bad_token(mailstack_oauth: MailStack, oauth_server: OAuthServer, how: str):
    mailstack_oauth.add_users(MAILBOX, OTHER)
    oauth_server.register_client("app", mailbox=MAILBOX)
    if how == "revoked":
        token = oauth_server.mint_access_token("app", None)
        oauth_server.revoke_access_tokens()
    elif how == "expired":
        token = oauth_server.mint_access_token("app", None, lifetime=0)
    elif how == "another user's":
        token = oauth_server.mint_access_token("app", OTHER)
    elif how == "unknown":
        token = "at-never-issued"
    else:
        token = mailstack_oauth.password(MAILBOX)  # the oauth2 passdb does not take passwords as tokens
    with imap(mailstack_oauth) as c, pytest.raises(LoginError, match="AUTHENTICATIONFAILED"):
        c.oauth2_login(MAILBOX, token)
    # and the good token of that moment still works
    with imap(mailstack_oauth) as c:
        c.oauth2_login(MAILBOX, oauth_server.mint_access_token("app", None))


# -- the scenarios of issue 12: `mailbridge run` with OAuth on both sides ---------------------------------
# IMAP: Dovecot of the OAuth stack, XOAUTH2 with tokens of the local server (generic provider: msal and
# google-auth are tested against the same server in tests/integration/test_oauth_tokens.py). SMTP:
# aiosmtpd requiring AUTH XOAUTH2 (tests/support/oauth_smtp.py). Mail comes in through Postfix.

CUSTOMER = ("Jürgen Müller", "juergen.mueller@kunde.example")
SECOND = "vertrieb@vendor.example"  # a second account, with a password
OPS = "it-ops@vendor.example"
SECRET_ENV, REFRESH_ENV, KEY_ENV = "MB_TEST_OAUTH_SECRET", "MB_TEST_OAUTH_REFRESH", "MB_TEST_TOKEN_KEY"
SMTP_SECRET_ENV, SECOND_PASSWORD_ENV = "MB_TEST_SMTP_SECRET", "MB_TEST_SECOND_PASSWORD"
IMAP_APP, SMTP_APP = "mailbridge-imap", "mailbridge-smtp"
# A password account in IDLE acknowledges a new mail within this (tests/integration/test_service.py).
IDLE_LATENCY_LIMIT = 10.0


@dataclass
class Bed:
    """One scenario's far side: the OAuth stack, the authorization server, the XOAUTH2 SMTP server,
    the service's environment (secrets) and its database."""

    stack: MailStack
    server: OAuthServer
    smtp: OAuthSmtpSink
    tmp_path: Path
    db_url: str
    env: dict[str, str] = field(default_factory=dict)
    secrets: list[str] = field(default_factory=list)
    _started: list[Service] = field(default_factory=list)

    def config(
        self,
        *,
        flow: str = "client_credentials",
        poll_interval: float = 2,
        refresh_margin: float = 300,
        second_account: bool = False,
        alerts: bool = False,
        smtp_own_app: bool = False,
        name: str = "mailbridge.toml",
        log_level: str = "info",
        oauth2_table: str | None = None,
    ) -> Path:
        """A complete config: account "main" (SUPPORT, OAuth2 generic ``flow``), optionally "second"
        (SECOND, password), SMTP with XOAUTH2 on main's token (or on an app of its own)."""
        creds = f'client_secret_env = "{SECRET_ENV}"'
        if flow == "refresh_token":
            creds += f'\nrefresh_token_env = "{REFRESH_ENV}"'
        second = f"""
[[accounts]]
name = "second"
host = "127.0.0.1"
port = {self.stack.imap_port}
tls = "none"
user = "{SECOND}"
password_env = "{SECOND_PASSWORD_ENV}"
poll_interval = 2

[[queues]]
name = "sales"
addresses = ["{SECOND}"]
language = "de"
account = "second"
display_name = "Vendor Vertrieb"
"""
        if smtp_own_app:
            smtp_auth = f"""[smtp.oauth2]
provider = "generic"
flow = "client_credentials"
token_url = "{self.server.token_url}"
client_id = "{SMTP_APP}"
client_secret_env = "{SMTP_SECRET_ENV}"
scopes = ["smtp"]
refresh_margin = {refresh_margin}
"""
        else:
            smtp_auth = 'oauth2_account = "main"\n'
        generic = f"""provider = "generic"
flow = "{flow}"
token_url = "{self.server.token_url}"
client_id = "{IMAP_APP}"
{creds}
scopes = ["imap", "offline_access"]
refresh_margin = {refresh_margin}"""
        path = self.tmp_path / name
        path.write_text(
            f"""
var_dir = "{self.tmp_path / "var"}"

[database]
url = "{self.db_url}"

[[accounts]]
name = "main"
host = "127.0.0.1"
port = {self.stack.imap_port}
tls = "none"
user = "{SUPPORT_ADDRESS}"
auth = "oauth2"
poll_interval = {poll_interval}
permanent_fault_retry = 3600

[accounts.oauth2]
{oauth2_table or generic}

[[queues]]
name = "support"
addresses = ["{SUPPORT_ADDRESS}"]
language = "en"
account = "main"
display_name = "Vendor Support"
{second if second_account else ""}
[smtp]
host = "127.0.0.1"
port = {self.smtp.port}
tls = "none"
timeout = 10
user = "{SUPPORT_ADDRESS}"
auth = "oauth2"
{smtp_auth}
[tokens]
key_env = "{KEY_ENV}"

[outbox]
interval = 1
backoff_seconds = 1
max_backoff_seconds = 4
lease_seconds = 5

{f'[alerts]{chr(10)}recipients = ["{OPS}"]{chr(10)}language = "en"{chr(10)}interval = 0.5' if alerts else ""}

[logging]
format = "json"
level = "{log_level}"
""",
            encoding="utf-8",
        )
        return path

    def service(self, config: Path, log_name: str = "service.log") -> Service:
        svc = Service(config, self.env, self.tmp_path / log_name)
        self._started.append(svc)
        return svc

    def customer_mail(self, subject: str, to: str = SUPPORT_ADDRESS) -> str:
        raw = make_mail(subject=subject, sender=CUSTOMER, to=to)
        return self.stack.send(raw)

    def acks(self, count: int, timeout: float = 60) -> list[EmailMessage]:
        """The first ``count`` mails the SMTP server accepted, waited for."""
        received = self.smtp.wait_for(count, timeout=timeout)
        assert len(received) >= count, f"{len(received)} of {count} mails at the SMTP server"
        return [m.message for m in received]

    def assert_no_secret_in(self, *logs: Path) -> None:
        """No client secret, no refresh token (the seed and every rotated one), no access token the
        server issued, no token-store key, in any of the service's logs."""
        access = self.server.access_tokens()
        issued = [*access, *self.server._by_refresh]
        # also as they go over the wire: base64 in the SASL exchange (a debug log may show that)
        sasl = [
            base64.b64encode(f"user={SUPPORT_ADDRESS}\x01auth=Bearer {t}\x01\x01".encode()).decode() for t in access
        ] + [base64.b64encode(f"n,a={SUPPORT_ADDRESS},\x01auth=Bearer {t}\x01\x01".encode()).decode() for t in access]
        needles = [*self.secrets, *issued, *sasl]
        assert issued, "the server issued no token: nothing was checked"
        for log in logs:
            text = log.read_text(encoding="utf-8", errors="replace")
            assert text, f"{log} is empty"
            leaked = [n[:8] + "…" for n in needles if n and n in text]
            assert not leaked, f"secrets in {log.name}: {leaked}"


@pytest.fixture
def bed(mailstack_oauth: MailStack, oauth_server: OAuthServer, tmp_path, db_url, monkeypatch):
    smtp = OAuthSmtpSink.for_server(oauth_server).start()
    mailstack_oauth.add_users(SUPPORT_ADDRESS, CUSTOMER[1], SECOND, OPS)
    key = Fernet.generate_key().decode()
    imap_secret, smtp_secret = "imap-app-" + secrets.token_urlsafe(12), "smtp-app-" + secrets.token_urlsafe(12)
    oauth_server.register_client(IMAP_APP, imap_secret, mailbox=SUPPORT_ADDRESS)
    oauth_server.register_client(SMTP_APP, smtp_secret, mailbox=SUPPORT_ADDRESS)
    env = {
        **os.environ,
        SECRET_ENV: imap_secret,
        SMTP_SECRET_ENV: smtp_secret,
        KEY_ENV: key,
        SECOND_PASSWORD_ENV: mailstack_oauth.password(SECOND),
    }
    b = Bed(mailstack_oauth, oauth_server, smtp, tmp_path, db_url, env, [imap_secret, smtp_secret, key])
    yield b
    for svc in b._started:
        svc.kill()
    smtp.stop()


def _engine(db_url: str):
    return make_engine(db_url)


def _tickets(db_url: str) -> list[tuple[str, str]]:
    engine = _engine(db_url)
    try:
        with engine.connect() as c:
            return [tuple(r) for r in c.execute(select(Ticket.case_number, Ticket.queue)).all()]
    finally:
        engine.dispose()


def _inbox_count(stack: MailStack, address: str) -> int:
    return len(stack.messages(address))


def test_ingest_and_acknowledgement_with_oauth_on_imap_and_smtp(bed: Bed):
    """A customer mail arrives in Dovecot; mailbridge logs in with XOAUTH2 (a client-credentials token
    of the local server), opens a case and sends the acknowledgement through SMTP with AUTH XOAUTH2
    on the same token: one token request for both."""
    mid = bed.customer_mail("Lizenzserver startet nicht")
    svc = bed.service(bed.config())
    svc.wait_started()
    [ack] = bed.acks(1)
    text = ack.get_body(("plain",)).get_content()
    print(f"\n--- the acknowledgement, as the SMTP server got it ---\n{ack['Subject']}\nTo: {ack['To']}\n\n{text}")
    assert ack["To"] and CUSTOMER[1] in ack["To"]
    assert ack["In-Reply-To"] == mid
    assert "Lizenzserver startet nicht" in ack["Subject"]
    [(case, queue)] = _tickets(bed.db_url)
    assert case in ack["Subject"] and queue == "support"
    # IMAP: Dovecot let mailbridge in with a token; SMTP: the server checked a token for that user
    assert f"user=<{SUPPORT_ADDRESS}>, method=XOAUTH2" in bed.stack.dovecot_log()
    assert [(x.mechanism, x.user, x.ok) for x in bed.smtp.logins] == [("XOAUTH2", SUPPORT_ADDRESS, True)]
    assert bed.smtp.senders == [SUPPORT_ADDRESS]
    assert bed.server.token_requests("client_credentials") == 1
    assert all(i["active"] for i in bed.server.introspections), bed.server.introspections
    svc.wait("the mail to be moved to Processed", lambda: _inbox_count(bed.stack, SUPPORT_ADDRESS) == 0)
    assert svc.stop() == 0
    svc.assert_stopped_cleanly()
    bed.assert_no_secret_in(svc.log)


@pytest.mark.parametrize("provider", ["microsoft", "microsoft-certificate", "google"])
def test_ingest_and_acknowledgement_through_msal_and_google_auth(bed: Bed, provider: str):
    """The same through the providers' own libraries pointed at the local server: Microsoft app-only
    (msal, an https authority with the test CA) with a client secret or a certificate, and a Google
    service account with domain-wide delegation (google-auth, its assertion signed with the key
    file's private key)."""
    if provider == "microsoft":
        table = f"""provider = "microsoft"
flow = "client_credentials"
tenant = "contoso"
authority = "{bed.server.authority("contoso")}"
ca_file = "{bed.server.ca_file}"
client_id = "{IMAP_APP}"
client_secret_env = "{SECRET_ENV}"
"""
        grant = "client_credentials"
    elif provider == "microsoft-certificate":
        pem, thumbprint = bed.server.register_certificate_client("mailbridge-cert", mailbox=SUPPORT_ADDRESS)
        cert_file = bed.tmp_path / "app-certificate.pem"
        cert_file.write_bytes(pem)
        bed.secrets.append(pem.decode().splitlines()[1])  # a line of the private key
        table = f"""provider = "microsoft"
flow = "client_credentials"
tenant = "contoso"
authority = "{bed.server.authority("contoso")}"
ca_file = "{bed.server.ca_file}"
client_id = "mailbridge-cert"
certificate_file = "{cert_file}"
certificate_thumbprint = "{thumbprint}"
"""
        grant = "client_credentials"
    else:
        info = bed.server.register_service_account("mailbridge@desk-project.iam.gserviceaccount.com")
        key_file = bed.tmp_path / "service-account.json"
        key_file.write_text(json.dumps(info), encoding="utf-8")
        bed.secrets.append(info["private_key"].splitlines()[1])  # a line of the PEM body
        table = f"""provider = "google"
flow = "service_account"
service_account_file = "{key_file}"
token_url = "{bed.server.token_url}"
"""
        grant = JWT_BEARER_GRANT
    mid = bed.customer_mail("Lizenzserver startet nicht")
    svc = bed.service(bed.config(oauth2_table=table))
    svc.wait_started()
    [ack] = bed.acks(1)
    assert ack["In-Reply-To"] == mid and CUSTOMER[1] in ack["To"]
    assert bed.server.token_requests(grant) == 1 and bed.server.token_requests() == 1
    token = bed.server.access_tokens()[0]
    assert bed.server.introspect(token)["username"] == SUPPORT_ADDRESS
    assert f"user=<{SUPPORT_ADDRESS}>, method=XOAUTH2" in bed.stack.dovecot_log()
    assert [(x.mechanism, x.user, x.ok) for x in bed.smtp.logins] == [("XOAUTH2", SUPPORT_ADDRESS, True)]
    assert svc.stop() == 0
    svc.assert_stopped_cleanly()
    bed.assert_no_secret_in(svc.log)


def test_a_token_expiring_during_idle_is_renewed_before_the_reconnect(bed: Bed):
    """Access tokens live 6 s (renewed 2 s ahead); the poller waits in IDLE (poll interval 60 s). The
    IDLE ends when the token is due, the account logs in again with a fresh token at once and waits
    in IDLE again: a mail that arrives after the first token expired is acknowledged within the IDLE
    latency of a password account (10 s, tests/integration/test_service.py), no login is refused, no
    backoff."""
    bed.server.access_token_lifetime = 6
    svc = bed.service(bed.config(poll_interval=60, refresh_margin=2))
    svc.wait_started()
    bed.customer_mail("Erste Meldung")
    bed.acks(1, timeout=30)
    first = bed.server.access_tokens()[0]
    time.sleep(9)  # the first token has expired: a session that lives on it is over at Exchange or Gmail
    assert not bed.server.introspect(first)["active"]
    sent = time.monotonic()
    bed.customer_mail("Zweite Meldung")
    received = bed.smtp.wait_for(2, timeout=IDLE_LATENCY_LIMIT)
    latency = time.monotonic() - sent
    print(f"\nacknowledgement {latency:.1f}s after the mail, {bed.server.token_requests()} token requests")
    assert len(received) == 2, (
        f"no acknowledgement within {IDLE_LATENCY_LIMIT}s after the token expired during IDLE "
        f"(reconnects so far: {len(svc.named('imap_token_renewal_reconnect'))}):\n{svc.tail(8)}"
    )
    assert "Zweite Meldung" in received[1].message["Subject"]
    assert svc.named("imap_token_renewal_reconnect")
    logins = [i for i in bed.server.introspections if i["token"]]
    assert len({i["token"] for i in logins}) >= 2, "the reconnect used a new token"
    assert all(i["active"] for i in bed.server.introspections), "a login offered an expired token"
    assert svc.stop() == 0
    svc.assert_no_backoff("main")
    svc.assert_stopped_cleanly()
    bed.assert_no_secret_in(svc.log)


def test_a_rotated_refresh_token_still_works_after_a_restart(bed: Bed):
    """Delegated login (refresh_token flow): the seed from the environment is used once, the server
    rotates it (the seed is dead), mailbridge stores the new one; a new service on the same database,
    after the access token expired, renews with the stored token, not with the dead seed."""
    seed = bed.server.mint_refresh_token(IMAP_APP, SUPPORT_ADDRESS, "imap offline_access")
    bed.env[REFRESH_ENV] = seed
    bed.secrets.append(seed)
    bed.server.access_token_lifetime = 4
    config = bed.config(flow="refresh_token", refresh_margin=1)
    first = bed.service(config, "service-1.log")
    first.wait_started()
    bed.customer_mail("Vor dem Neustart")
    bed.acks(1)
    assert first.stop() == 0
    first.assert_stopped_cleanly()
    assert seed not in bed.server.live_refresh_tokens()
    time.sleep(4.5)  # every access token issued so far has expired
    renewals_before = bed.server.token_requests("refresh_token")

    second = bed.service(config, "service-2.log")
    second.wait_started()
    bed.customer_mail("Nach dem Neustart")
    acks = bed.acks(2)
    assert "Nach dem Neustart" in acks[1]["Subject"]
    assert bed.server.token_requests("refresh_token") > renewals_before
    refused = [r for r in bed.server.requests if r.get("error")]
    assert not refused, f"a token request was refused (the dead seed?): {refused}"
    assert second.stop() == 0
    second.assert_stopped_cleanly()
    bed.assert_no_secret_in(first.log, second.log)


def test_revoked_consent_is_reauth_required_one_alert_and_the_other_account_keeps_ingesting(bed: Bed):
    """The user's grant to mailbridge's IMAP app is revoked (AADSTS50173). At its next renewal the
    account goes reauth_required (error log with the provider's code and a hint), the operators get
    exactly one alert mail, and the second account (password) keeps ingesting. SMTP uses an app of
    its own (client credentials), so alerts and acknowledgements can still go out."""
    seed = bed.server.mint_refresh_token(IMAP_APP, SUPPORT_ADDRESS, "imap offline_access")
    bed.env[REFRESH_ENV] = seed
    bed.secrets.append(seed)
    bed.server.access_token_lifetime = 5
    svc = bed.service(
        bed.config(flow="refresh_token", refresh_margin=2, second_account=True, alerts=True, smtp_own_app=True)
    )
    svc.wait_started()
    bed.customer_mail("Vor dem Widerruf")
    bed.acks(1)

    bed.server.revoke_consent(SUPPORT_ADDRESS, client_id=IMAP_APP, code=50173)
    reauth = svc.wait("oauth_reauth_required", lambda: svc.named("oauth_reauth_required"), 30)
    assert reauth[0]["level"] == "error" and reauth[0]["code"] == "AADSTS50173", reauth[0]
    assert reauth[0]["hint"]

    def alerts() -> list[EmailMessage]:
        return [m.message for m in bed.smtp.received if OPS in m.rcpt_tos]

    svc.wait("the alert mail", alerts, 30)
    bed.customer_mail("Nach dem Widerruf", to=SUPPORT_ADDRESS)
    bed.customer_mail("Anfrage an den Vertrieb", to=SECOND)
    svc.wait(
        "the second account's acknowledgement",
        lambda: [m for m in bed.smtp.received if "Anfrage an den Vertrieb" in str(m.message["Subject"])],
        30,
    )
    time.sleep(5)  # ten more alert intervals: still one alert mail
    [alert] = alerts()
    body = alert.get_body(("plain",)).get_content()
    print(f"\n--- the alert mail ---\nSubject: {alert['Subject']}\nTo: {alert['To']}\n\n{body}")
    assert "main" in alert["Subject"] + body
    assert "AADSTS50173" in body
    # the revoked account fetched nothing more: its mail waits in the INBOX
    assert [m.subject for m in bed.stack.messages(SUPPORT_ADDRESS)] == ["Nach dem Widerruf"]
    engine = _engine(bed.db_url)
    try:
        with engine.connect() as c:
            row = c.execute(
                select(OAuthToken.reauth_required, OAuthToken.error_code).where(OAuthToken.name == "main")
            ).one()
            assert row == (True, "AADSTS50173")
    finally:
        engine.dispose()
    assert svc.stop() == 0
    bed.assert_no_secret_in(svc.log)


@pytest.mark.parametrize("flow", ["client_credentials", "refresh_token"])
def test_two_instances_share_one_token_without_a_refresh_race(bed: Bed, flow: str):
    """Two services on one database and one config: the token is renewed by one of them at a time.
    Tokens live 8 s and are renewed 3 s ahead; over ~20 s the token endpoint is asked once per token
    life, not once per instance. With rotating refresh tokens a race would also be a refusal: the
    loser would present the refresh token the winner just used up (invalid_grant)."""
    if flow == "refresh_token":
        seed = bed.server.mint_refresh_token(IMAP_APP, SUPPORT_ADDRESS, "imap offline_access")
        bed.env[REFRESH_ENV] = seed
        bed.secrets.append(seed)
    bed.server.access_token_lifetime = 8
    config = bed.config(flow=flow, refresh_margin=3)
    one, two = bed.service(config, "service-1.log"), bed.service(config, "service-2.log")
    one.wait_started()
    two.wait_started()
    bed.customer_mail("Zwei Instanzen")
    bed.acks(1)
    time.sleep(20)
    bed.customer_mail("Noch eine Meldung")
    bed.acks(2)
    requests_at = [r["at"] for r in bed.server.requests if r["grant_type"] == flow]
    gaps = [round(b - a, 2) for a, b in itertools.pairwise(requests_at)]
    print(f"\ntoken requests: {len(requests_at)}, seconds between them: {gaps}")
    assert len(requests_at) >= 3  # renewed over the 20 s ...
    assert all(g > 3 for g in gaps), f"two renewals within one token life (a race): {gaps}"  # ... never twice
    renewed = one.named("oauth_token_renewed") + two.named("oauth_token_renewed")
    assert len(renewed) == len(requests_at)
    assert all(r.get("error") is None for r in bed.server.requests), bed.server.requests
    assert not one.named("oauth_reauth_required") and not two.named("oauth_reauth_required")
    assert len(bed.smtp.received) == 2  # each mail acknowledged once
    assert one.stop() == 0 and two.stop() == 0
    bed.assert_no_secret_in(one.log, two.log)


def test_no_secret_or_token_in_the_log_even_at_debug_level_nor_in_the_cli_output(bed: Bed):
    """At log level debug (libraries included), through renewals with rotated refresh tokens, a token
    endpoint answering 503, an expired SMTP client secret (invalid_client) and a revoked grant
    (invalid_grant): no client secret, refresh token, access token (also not base64 in a SASL
    exchange) nor the token-store key in the log; nor in ``check-config`` / ``auth status``."""
    seed = bed.server.mint_refresh_token(IMAP_APP, SUPPORT_ADDRESS, "imap offline_access")
    bed.env[REFRESH_ENV] = seed
    bed.secrets.append(seed)
    bed.server.access_token_lifetime = 6
    config = bed.config(flow="refresh_token", refresh_margin=2, smtp_own_app=True, log_level="debug")
    # The first token request meets a 503 (no token in hand yet: the account backs off and retries).
    bed.server.fail(503, times=1)
    svc = bed.service(config)
    svc.wait_started()
    bed.customer_mail("Erste Meldung")
    bed.acks(1)
    assert svc.named("oauth_token_unavailable")
    svc.wait("two renewals", lambda: len(svc.named("oauth_token_renewed")) >= 3, 30)
    bed.server.expire_secret(SMTP_APP)
    bed.server.revoke_access_tokens(client_id=SMTP_APP)  # the next send needs a new token
    bed.customer_mail("Zweite Meldung")
    svc.wait("the SMTP token refused", lambda: [e for e in svc.named("oauth_reauth_required") if e["login"] == "smtp"])
    bed.server.revoke_consent(SUPPORT_ADDRESS, client_id=IMAP_APP)
    svc.wait("main refused", lambda: [e for e in svc.named("oauth_reauth_required") if e["login"] == "main"], 30)
    assert svc.stop() == 0
    assert len(bed.server._by_refresh) >= 3  # rotated tokens to look for
    assert any(e.get("level") == "debug" for e in svc.events()), "the log is not at debug level"
    bed.assert_no_secret_in(svc.log)

    outputs = []
    for args in (["check-config"], ["auth", "status"]):
        run = subprocess.run(
            [sys.executable, "-m", "mailbridge", "--config", str(config), *args],
            env=bed.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        outputs.append(bed.tmp_path / f"{args[-1]}.out")
        outputs[-1].write_text(run.stdout + run.stderr, encoding="utf-8")
        assert "No such command" not in run.stderr, run.stderr
    bed.assert_no_secret_in(*outputs)


def test_an_expired_smtp_secret_keeps_the_mail_and_does_not_hammer_the_token_endpoint(bed: Bed):
    """SMTP logs in with an app of its own whose client secret expired (invalid_client, AADSTS7000222).
    The acknowledgement waits in the outbox (nothing lost), IMAP keeps ingesting, ``auth status`` says
    a person must act (exit 2, the code named), and the token endpoint is not asked again at every
    outbox run (every second here): a refusal that needs a person is retried slowly, like an IMAP
    account's reauth_required (permanent_fault_retry), not at the pace of the outbox."""
    config = bed.config(smtp_own_app=True)
    bed.server.expire_secret(SMTP_APP)
    svc = bed.service(config)
    svc.wait_started()
    bed.customer_mail("Meldung ohne SMTP")
    svc.wait("the SMTP token refused", lambda: [e for e in svc.named("oauth_reauth_required") if e["login"] == "smtp"])
    svc.wait("the case", lambda: _tickets(bed.db_url))
    time.sleep(15)  # fifteen outbox runs
    refused = [e for e in svc.named("oauth_reauth_required") if e["login"] == "smtp"]
    asked = [r for r in bed.server.requests if r.get("error") == "invalid_client"]
    print(f"\n~15 s: {len(asked)} token requests with the expired secret, {len(refused)} error lines")
    assert not bed.smtp.received  # nothing went out ...
    engine = _engine(bed.db_url)
    try:
        with engine.connect() as c:
            assert c.execute(select(Outbox.status)).scalars().all() == ["queued"]  # ... and nothing is lost
    finally:
        engine.dispose()
    status = subprocess.run(
        [sys.executable, "-m", "mailbridge", "--config", str(config), "auth", "status"],
        env=bed.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    print(status.stdout)
    assert status.returncode == 2, status.stdout + status.stderr
    assert "smtp" in status.stdout and "AADSTS7000222" in status.stdout
    assert svc.stop() == 0
    assert len(asked) <= 2, f"the expired SMTP secret was sent to the token endpoint {len(asked)} times in ~15 s"
    assert len(refused) <= 2, f"{len(refused)} error lines for one expired secret in ~15 s"


def test_an_access_token_the_imap_server_refuses_is_replaced_at_once(bed: Bed):
    """The provider revokes the access tokens in circulation (an admin's "revoke sessions", a security
    event) while the grant stays good; the IMAP connection drops (Dovecot restarted). The token
    mailbridge holds is still within its lifetime, so its next login offers it and is refused. That
    is not a wrong password: mailbridge gets a new token and logs in again at once. The mailbox
    keeps flowing, with no login failure (an error, an alert, permanent_fault_retry) in between."""
    svc = bed.service(bed.config(poll_interval=2))
    svc.wait_started()
    bed.customer_mail("Vor dem Widerruf der Sitzungen")
    bed.acks(1)
    bed.server.revoke_access_tokens()
    bed.stack.restart_dovecot()
    bed.customer_mail("Nach dem Widerruf der Sitzungen")
    received = bed.smtp.wait_for(2, timeout=30)
    failed = svc.named("imap_login_failed")
    assert len(received) == 2, f"the mailbox stopped after a refused token: {failed}\n{svc.tail(6)}"
    assert not failed, f"a refused (stale) token was taken for a wrong password: {failed}"
    assert bed.server.token_requests("client_credentials") == 2
    assert svc.stop() == 0
