"""OAuth2 as a user meets it (issue 12): `mailbridge auth status | login | test` through their output,
and mail in and out with OAuth on both sides — against real servers: Dovecot's oauth2 passdb
(tests/mailstack.py) checking tokens of the local authorization server (tests/support/oauth_server.py)
by introspection, and aiosmtpd taking AUTH XOAUTH2 (tests/support/oauth_smtp.py)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.fernet import Fernet
from sqlalchemy import select

from mailbridge.app import App
from mailbridge.cli import cli
from mailbridge.ingest.fetcher import FaultKind
from mailbridge.settings import load_settings
from mailbridge.store.db import session_scope
from mailbridge.store.models import AccountHealth, Ticket
from tests.mailstack import (  # noqa: F401  (fixtures)
    MailStack,
    mailstack_oauth_fixture,
    mailstack_oauth_session_fixture,
)
from tests.support import SUPPORT_ADDRESS, make_mail, write_config
from tests.support.oauth_server import OAuthServer, oauth_server_fixture, oauth_server_session_fixture  # noqa: F401
from tests.support.oauth_smtp import OAuthSmtpSink

pytestmark = pytest.mark.mailstack

MAILBOX = SUPPORT_ADDRESS
SECRET = "cs-" + "s3cr3t" * 6
KEY = Fernet.generate_key().decode()
ENV = {"MB_TEST_OAUTH_SECRET": SECRET, "MB_TEST_TOKEN_KEY": KEY, "MB_TEST_IMAP_PASSWORD": "unused"}


@pytest.fixture
def smtp(oauth_server):
    sink = OAuthSmtpSink.for_server(oauth_server)
    sink.start()
    yield sink
    sink.stop()


def _config(
    tmp_path: Path, stack: MailStack, smtp: OAuthSmtpSink, oauth: str, *, db_url: str, mechanism="xoauth2"
) -> Path:
    path = write_config(
        tmp_path / "mailbridge.toml",
        imap_port=stack.imap_port,
        smtp_port=smtp.port,
        db_url=db_url,
        var_dir=tmp_path / "var",
        imap_user=MAILBOX,
        account_extra=f'auth = "oauth2"\n[accounts.oauth2]\n{oauth}\nmechanism = "{mechanism}"\n',
        extra='[tokens]\nkey_env = "MB_TEST_TOKEN_KEY"\n',
    )
    text = path.read_text(encoding="utf-8")
    text = text.replace("[smtp]\n", f'[smtp]\nauth = "oauth2"\noauth2_account = "main"\nuser = "{MAILBOX}"\n', 1)
    path.write_text(text, encoding="utf-8")
    return path


def _app_only(server: OAuthServer) -> str:
    return (
        f'provider = "generic"\nflow = "client_credentials"\ntoken_url = "{server.token_url}"\n'
        'client_id = "app-support"\nclient_secret_env = "MB_TEST_OAUTH_SECRET"\nscopes = ["mail"]'
    )


def _run(path: Path, *args: str):
    result = CliRunner().invoke(cli, ["--config", str(path), *args], env=ENV, catch_exceptions=False)
    return result.exit_code, result.stdout, result.output


def test_auth_status_test_and_an_expired_secret(mailstack_oauth, oauth_server, smtp, tmp_path, db_url):
    mailstack_oauth.add_users(MAILBOX)
    oauth_server.register_client("app-support", SECRET, mailbox=MAILBOX)
    path = _config(tmp_path, mailstack_oauth, smtp, _app_only(oauth_server), db_url=db_url)

    # Before the first token: every login is listed; the token comes at the first use (a warning).
    _run(path, "db", "upgrade")
    code, out, _ = _run(path, "auth", "status")
    assert code == 1, out
    assert out.startswith("mailbridge auth: WARNING")
    assert "main" in out and "oauth2 generic/client_credentials (xoauth2)" in out and "no token yet" in out
    assert "oauth2, the token of main" in out  # SMTP shares the account's token

    # `auth test`: a real IMAP login (XOAUTH2 at Dovecot) and a real SMTP AUTH XOAUTH2.
    log_before = len(mailstack_oauth.dovecot_log())  # the stack (and its log) is the session's
    code, out, everything = _run(path, "auth", "test", "main")
    assert code == 0, everything
    lines = out.splitlines()
    assert lines[0] == (
        f"IMAP 127.0.0.1:{mailstack_oauth.imap_port}: OK: logged in as {MAILBOX} (SASL XOAUTH2 with an OAuth2 "
        "token); folder INBOX: 0 mail(s)"
    )
    assert lines[1] == (
        f"SMTP 127.0.0.1:{smtp.port}: OK: 127.0.0.1:{smtp.port} accepted the connection (AUTH XOAUTH2 as {MAILBOX})"
    )
    assert [(x.mechanism, x.user, x.ok) for x in smtp.logins] == [("XOAUTH2", MAILBOX, True)]
    assert f"user=<{MAILBOX}>, method=XOAUTH2" in mailstack_oauth.dovecot_log()[log_before:]
    assert oauth_server.token_requests("client_credentials") == 1  # one token for IMAP and SMTP

    code, out, _ = _run(path, "auth", "status")
    assert code == 0, out
    assert out.startswith("mailbridge auth: OK") and "OK: valid" in out
    code, out, _ = _run(path, "auth", "status", "--json")
    doc = json.loads(out)
    main = next(x for x in doc["logins"] if x["login"] == "main")
    assert main["level"] == "ok" and main["renewals"] == 1 and main["token_expires"] and main["last_error"] is None
    # `mailbridge status` has the token slot too: how the account logs in and when its token expires.
    code, out, _ = _run(path, "status", "--json")
    (acc,) = json.loads(out)["accounts"]
    assert acc["auth"] == "oauth2 generic/client_credentials" and acc["token_expires"] == main["token_expires"]

    # The client secret expires (AADSTS7000222) and the stored token is gone: reauth_required.
    oauth_server.expire_secret("app-support")
    oauth_server.revoke_access_tokens()
    app = App(load_settings(path, ENV))
    with session_scope(app.session_factory) as s:
        from mailbridge.store.tokens import forget_access_token

        forget_access_token(s, "main", app.clock())
    app.close()
    code, out, everything = _run(path, "auth", "test", "main")
    assert code == 1
    assert "IMAP" in out and "FAILED: reauth_required: " in out and "AADSTS7000222" in out
    assert "the client secret expired: create a new secret in the app registration" in out
    assert "SMTP" in out and "FAILED: OAuth token:" in out
    code, out, everything = _run(path, "auth", "status")
    assert code == 2 and out.startswith("mailbridge auth: CRITICAL")
    assert "CRITICAL: reauth_required (AADSTS7000222)" in out, out
    # The client secret, the key and the tokens never show up in any output or log line.
    for tok in [*oauth_server.access_tokens(), SECRET, KEY]:
        assert tok not in everything


def test_auth_login_device_code_prints_url_and_code_then_stores_the_token(
    mailstack_oauth, oauth_server, smtp, tmp_path, db_url
):
    mailstack_oauth.add_users(MAILBOX)
    oauth_server.register_client("desk-app", public=True)
    oauth = (
        f'provider = "generic"\nflow = "device_code"\ntoken_url = "{oauth_server.token_url}"\n'
        f'device_authorization_url = "{oauth_server.device_authorization_url}"\nclient_id = "desk-app"\n'
        'scopes = ["mail", "offline_access"]'
    )
    path = _config(tmp_path, mailstack_oauth, smtp, oauth, db_url=db_url, mechanism="oauthbearer")
    _run(path, "db", "upgrade")
    code, out, _ = _run(path, "auth", "status")
    assert code == 2 and "never signed in: run `mailbridge auth login main`" in out

    def person_signs_in():  # at the verification page, on another device
        for _ in range(200):
            codes = oauth_server.pending_user_codes()
            if codes:
                oauth_server.approve(codes[0], MAILBOX)
                return
            time.sleep(0.05)

    helper = threading.Thread(target=person_signs_in)
    helper.start()
    code, out, everything = _run(path, "auth", "login", "main")
    helper.join(10)
    assert code == 0, everything
    lines = out.splitlines()
    assert lines[1].startswith(f"URL:  {oauth_server.url}/")
    code_shown = lines[2].removeprefix("Code: ")
    assert code_shown and code_shown in lines[0]  # the provider's message names the code too
    assert "Waiting for the sign-in" in out and "main: signed in; token stored" in out
    code, out, _ = _run(path, "auth", "status")
    assert code == 0, out
    # IMAP with OAUTHBEARER (Dovecot offers it), SMTP with XOAUTH2 (aiosmtplib's mechanism).
    log_before = len(mailstack_oauth.dovecot_log())
    code, out, everything = _run(path, "auth", "test", "main")
    assert code == 0, everything
    assert "SASL OAUTHBEARER" in out
    assert f"user=<{MAILBOX}>, method=OAUTHBEARER" in mailstack_oauth.dovecot_log()[log_before:]
    assert [x.mechanism for x in smtp.logins] == ["XOAUTH2"]
    for tok in oauth_server.access_tokens() + oauth_server.live_refresh_tokens():
        assert tok not in everything


def _provider_config(provider: str, server: OAuthServer, tmp_path: Path) -> str:
    """The [accounts.oauth2] table of each provider, registered at the local server: generic
    (authlib), microsoft app-only (msal, the https authority with the test CA), google service
    account (google-auth, the key file's token_uri pointing here)."""
    if provider == "generic":
        server.register_client("app-support", SECRET, mailbox=MAILBOX)
        return _app_only(server)
    if provider == "microsoft":
        server.register_client("app-support", SECRET, mailbox=MAILBOX)
        return (
            f'provider = "microsoft"\nflow = "client_credentials"\ntenant = "contoso.example"\n'
            f'authority = "{server.authority("contoso.example")}"\nclient_id = "app-support"\n'
            f'client_secret_env = "MB_TEST_OAUTH_SECRET"\nca_file = "{server.ca_file}"'
        )
    key_file = tmp_path / "service-account.json"
    key_file.write_text(json.dumps(server.register_service_account("mailbridge@project.iam.gserviceaccount.com")))
    return (
        f'provider = "google"\nflow = "service_account"\nservice_account_file = "{key_file}"\n'
        f'token_url = "{server.token_url}"'
    )


@pytest.mark.parametrize("provider", ["generic", "microsoft", "google"])
def test_ingest_and_acknowledgement_with_oauth_on_both_sides(
    mailstack_oauth, oauth_server, smtp, tmp_path, db_url, provider
):
    """A customer's mail fetched over IMAP with XOAUTH2, its acknowledgement sent with SMTP AUTH
    XOAUTH2 — one token for both, from each provider's library; read back from the SMTP server."""
    mailstack_oauth.add_users(MAILBOX)
    path = _config(tmp_path, mailstack_oauth, smtp, _provider_config(provider, oauth_server, tmp_path), db_url=db_url)
    app = App(load_settings(path, ENV))
    app.upgrade_db()
    log_before = len(mailstack_oauth.dovecot_log())
    try:
        # The customer's mail arrives through Postfix and Dovecot's LMTP.
        mailstack_oauth.send(make_mail(message_id="<oauth-1@kunde.example>"), rcpt_tos=[MAILBOX])
        mailstack_oauth.wait_idle()
        mailstack_oauth.wait_for_mail(MAILBOX, message_id="<oauth-1@kunde.example>")
        poller = app.poller("main")
        report = poller.cycle()
        poller.close()
        assert report.fetched == 1 and report.dispositions == {"processed": 1}
        sent = asyncio.run(app.sender().run_once())
        assert sent.sent == 1, sent
        with session_scope(app.session_factory) as s:
            (ticket,) = s.scalars(select(Ticket)).all()
            assert s.get(AccountHealth, "main") is None or s.get(AccountHealth, "main").error_kind is None
        (mail,) = smtp.received
        ack = mail.message
        assert ticket.case_number in ack["Subject"] and mail.rcpt_tos == ["juergen.mueller@kunde.example"]
        assert ticket.case_number in ack.get_body(("plain",)).get_content()
        assert smtp.senders == [MAILBOX.lower()]
        assert [(x.mechanism, x.ok) for x in smtp.logins] == [("XOAUTH2", True)]
        assert oauth_server.token_requests() == 1
        assert f"user=<{MAILBOX}>, method=XOAUTH2" in mailstack_oauth.dovecot_log()[log_before:]
        print(ack.as_string()[:1500])
    finally:
        app.close()


def test_revoked_token_is_a_reauth_fault_of_that_account_only(mailstack_oauth, oauth_server, smtp, tmp_path, db_url):
    """The poller's view: the token endpoint refuses (consent revoked) → FaultKind.REAUTH, a health
    row with reauth_required and the provider's code; the IMAP server is not even asked."""
    mailstack_oauth.add_users(MAILBOX)
    oauth_server.register_client("app-support", SECRET, mailbox=MAILBOX)
    oauth_server.revoke_consent(client_id="app-support", code=65001)
    path = _config(tmp_path, mailstack_oauth, smtp, _app_only(oauth_server), db_url=db_url)
    app = App(load_settings(path, ENV))
    app.upgrade_db()
    try:
        poller = app.poller("main")
        poller.tick(0.5, threading.Event())
        with session_scope(app.session_factory) as s:
            row = s.get(AccountHealth, "main")
            assert row.error_kind == FaultKind.REAUTH.value == "reauth_required"
            assert "AADSTS65001" in row.last_error and "admin consent" in row.last_error
        assert poller.retry_at - time.monotonic() > 200  # permanent_fault_retry (300 s), not a 1-s backoff
        poller.close()
    finally:
        app.close()


def test_a_token_expiring_during_idle_is_renewed_before_the_reconnect(
    mailstack_oauth, oauth_server, smtp, tmp_path, db_url
):
    """Tokens of 4 s, a fetch run of 7 s: the IDLE ends when the connection's token is due (half its
    life, as that is shorter than refresh_margin), the poller logs in again at once with a new token
    from the source and IDLEs on; no failure, no backoff, and the mailbox still works."""
    mailstack_oauth.add_users(MAILBOX)
    oauth_server.register_client("app-support", SECRET, mailbox=MAILBOX)
    oauth_server.access_token_lifetime = 4
    path = _config(tmp_path, mailstack_oauth, smtp, _app_only(oauth_server), db_url=db_url)
    app = App(load_settings(path, ENV))
    app.upgrade_db()
    poller = app.poller("main")
    log_before = len(mailstack_oauth.dovecot_log())  # the stack (and its log) is the session's
    try:
        started = time.monotonic()
        poller.tick(7, threading.Event())
        assert 6.5 < time.monotonic() - started < 15  # the whole window, not ended by the first renewal
        logins = mailstack_oauth.dovecot_log()[log_before:].count(f"user=<{MAILBOX}>, method=XOAUTH2")
        tokens = oauth_server.token_requests("client_credentials")
        assert logins >= 3 and tokens == logins  # a new token for each login, renewed every ~2 s
        assert poller.failures == 0 and poller.mailbox.client is not None
        first = oauth_server.access_tokens()[0]
        assert oauth_server.introspect(first) == {"active": False}  # long expired
        with mailstack_oauth.imap(MAILBOX) as c:
            c.append("INBOX", make_mail(message_id="<idle-1@kunde.example>"))
        report = poller.cycle()
        assert report.dispositions == {"processed": 1}
    finally:
        poller.close()
        app.close()


@pytest.mark.slow
@pytest.mark.parametrize("level", ["info", "debug"])
def test_the_running_service_with_oauth_logs_no_secret(mailstack_oauth, oauth_server, smtp, tmp_path, db_url, level):
    """`mailbridge run` with OAuth on both sides, at info and at debug level (library loggers
    included): a mail in, its acknowledgement out; the client secret, the token key, every access
    token and the XOAUTH2 strings are nowhere in the log."""
    from tests.support.service import Service, start_services

    mailstack_oauth.add_users(MAILBOX)
    oauth_server.register_client("app-support", SECRET, mailbox=MAILBOX)
    path = _config(tmp_path, mailstack_oauth, smtp, _app_only(oauth_server), db_url=db_url)
    path.write_text(path.read_text().replace('format = "json"\n', f'format = "json"\nlevel = "{level}"\n'))
    with mailstack_oauth.imap(MAILBOX) as c:
        c.append("INBOX", make_mail(message_id="<svc-1@kunde.example>"))
    gen = start_services(Service, {**os.environ, **ENV}, tmp_path / "service.log")
    service = next(gen)(path)
    try:
        service.wait_started()
        service.wait("the acknowledgement", lambda: smtp.received)
        assert service.stop() == 0
    finally:
        next(gen, None)
    log = "\n".join(service.lines())
    assert "oauth_token_renewed" in log
    tokens = oauth_server.access_tokens()
    assert tokens
    secrets = [SECRET, KEY, *tokens]
    secrets += [base64.b64encode(f"user={MAILBOX}\x01auth=Bearer {t}\x01\x01".encode()).decode() for t in tokens]
    for secret in secrets:
        assert secret not in log, f"a secret in the {level} log"


def test_a_token_refused_by_the_imap_server_is_replaced_at_once(mailstack_oauth, oauth_server, smtp, tmp_path, db_url):
    """The stored token is still within its lifetime but the server no longer takes it (sessions
    revoked): the login is tried once more at once with a new token — no login fault, no slow retry.
    A fresh token refused too is a login fault (imap_login_failed, permanent_fault_retry)."""
    mailstack_oauth.add_users(MAILBOX)
    oauth_server.register_client("app-support", SECRET, mailbox=MAILBOX)
    path = _config(tmp_path, mailstack_oauth, smtp, _app_only(oauth_server), db_url=db_url)
    app = App(load_settings(path, ENV))
    app.upgrade_db()
    poller = app.poller("main")
    try:
        poller.cycle()
        poller.close()
        oauth_server.revoke_access_tokens()  # what Entra ID's "revoke sessions" does to IMAP sessions
        report = poller.cycle()
        assert report.fetched == 0 and poller.mailbox.client is not None
        assert oauth_server.token_requests("client_credentials") == 2
        poller.close()
        # The app loses its mailbox permission: every token is refused.
        oauth_server.register_client("app-support", SECRET, mailbox="someone-else@vendor.example")
        oauth_server.revoke_access_tokens()
        poller.tick(0.5, threading.Event())
        assert poller.failures == 1 and poller.retry_at - time.monotonic() > 200
        assert oauth_server.token_requests("client_credentials") == 3  # the stored one refused, one fresh try
        with session_scope(app.session_factory) as s:
            assert s.get(AccountHealth, "main").error_kind == "login"
    finally:
        poller.close()
        app.close()
