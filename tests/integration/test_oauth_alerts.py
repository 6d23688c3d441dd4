"""A mailbox whose OAuth token cannot be renewed (issue 12): the poller's fault is reauth_required
with the provider's code, one alert mail to the operators (at most one a day while it lasts), the
other mailbox keeps ingesting; and a client secret close to its expiry date is alerted once a day.

Real servers: pymap for the password account, the local authorization server for the OAuth one,
aiosmtpd for the alert mails (read back and checked); the clock is injected."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select

from mailbridge.app import App
from mailbridge.settings import load_settings
from mailbridge.store.db import session_scope
from mailbridge.store.models import AccountHealth, Outbox, Ticket
from tests.support import IMAP_PASSWORD, IMAP_PASSWORD_ENV, make_mail
from tests.support.oauth_server import OAuthServer, oauth_server_fixture, oauth_server_session_fixture  # noqa: F401

OPS = "it-ops@vendor-it.example"
M365 = "service@kessler-wzm.example"
KEY = Fernet.generate_key().decode()


class Clock:
    def __init__(self):
        self.now = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)

    def __call__(self):
        return self.now


@pytest.fixture
def desk(tmp_path, db_url, imap_server, smtp_sink, oauth_server: OAuthServer, monkeypatch):
    oauth_server.register_client("desk-app", "desk-secret")
    seed = oauth_server.mint_refresh_token("desk-app", M365, scope="mail")
    monkeypatch.setenv(IMAP_PASSWORD_ENV, IMAP_PASSWORD)
    monkeypatch.setenv("MB_T_KEY", KEY)
    monkeypatch.setenv("MB_T_SECRET", "desk-secret")
    monkeypatch.setenv("MB_T_RT", seed)
    clock = Clock()
    expires = (clock.now + timedelta(days=10)).date().isoformat()
    path = tmp_path / "mailbridge.toml"
    path.write_text(
        f"""
var_dir = "{tmp_path / "var"}"
[database]
url = "{db_url}"

[[accounts]]
name = "m365"
host = "127.0.0.1"
port = 1
tls = "none"
user = "{M365}"
auth = "oauth2"
[accounts.oauth2]
provider = "generic"
flow = "refresh_token"
token_url = "{oauth_server.token_url}"
client_id = "desk-app"
client_secret_env = "MB_T_SECRET"
refresh_token_env = "MB_T_RT"
scopes = ["mail"]
client_secret_expires = {expires}

[[accounts]]
name = "legacy"
host = "127.0.0.1"
port = {imap_server.port}
tls = "none"
user = "{imap_server.user}"
password_env = "{IMAP_PASSWORD_ENV}"

[[queues]]
name = "machines"
addresses = ["{M365}"]
account = "m365"
language = "de"

[[queues]]
name = "software"
addresses = ["support@vendor.example"]
account = "legacy"

[smtp]
host = "127.0.0.1"
port = {smtp_sink.port}
tls = "none"

[tokens]
key_env = "MB_T_KEY"

[alerts]
recipients = ["{OPS}"]
language = "en"
repeat_minutes = 60
""",
        encoding="utf-8",
    )
    app = App(load_settings(path), clock=clock)
    app.upgrade_db()
    yield app, clock
    app.close()


def _send(app) -> int:
    return asyncio.run(app.sender().run_once()).sent


def test_revoked_consent_one_alert_a_day_and_the_other_mailbox_keeps_ingesting(
    desk, oauth_server, imap_server, smtp_sink
):
    app, clock = desk
    oauth_server.revoke_consent(M365, code=50173)
    m365, legacy = app.poller("m365"), app.poller("legacy")
    imap_server.append([make_mail(message_id="<legacy-1@kunde.example>")])
    m365.tick(0.2, threading.Event())
    report = legacy.cycle()
    legacy.close()
    assert report.dispositions == {"processed": 1}
    with session_scope(app.session_factory) as s:
        assert len(s.scalars(select(Ticket)).all()) == 1  # the password mailbox went on
        row = s.get(AccountHealth, "m365")
        assert row.error_kind == "reauth_required" and "AADSTS50173" in row.last_error

    assert app.check_alerts() == 2  # the sign-in, and the secret expiring in 10 days
    assert _send(app) >= 2
    alerts = {m.message["Subject"]: m.message for m in smtp_sink.received if OPS in m.rcpt_tos}
    subject = "[mailbridge] OAuth sign-in needed for account m365"
    assert subject in alerts
    text = alerts[subject].get_body(("plain",)).get_content()
    print(text)
    assert f"The OAuth2 token of account m365 ({M365} on 127.0.0.1) cannot be" in text
    assert "(AADSTS50173)" in text and "the user's password changed" in " ".join(text.split())
    assert "No mail is fetched from this mailbox until someone acts." in text
    assert "Every other mailbox keeps running." in text
    assert "at most one such mail every 24 hours" in text
    expiry = f"[mailbridge] client secret of m365 expires on {(clock.now + timedelta(days=10)).date().isoformat()}"
    assert expiry in alerts
    assert "in 10 day(s)" in alerts[expiry].get_body(("plain",)).get_content()

    # An hour later (repeat_minutes 60) and still failing: no mail; a day later: one more each.
    clock.now += timedelta(hours=1, minutes=1)
    m365.retry_at = 0
    m365.tick(0.2, threading.Event())
    assert app.check_alerts() == 0
    clock.now += timedelta(hours=23)
    m365.retry_at = 0
    m365.tick(0.2, threading.Event())
    assert app.check_alerts() == 2
    with session_scope(app.session_factory) as s:
        kinds = [o.dedup_key.split(":")[1] for o in s.scalars(select(Outbox).where(Outbox.kind == "alert"))]
    assert sorted(kinds) == ["account", "account", "secret", "secret"]
    m365.close()
    # The key, the client secret and the tokens are in no alert mail.
    raw = b"".join(m.data for m in smtp_sink.received)
    for secret in (KEY, "desk-secret", *oauth_server.access_tokens(), *oauth_server.live_refresh_tokens()):
        assert secret.encode() not in raw
