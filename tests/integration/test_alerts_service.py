"""Alert mails from the running service (``mailbridge run`` as a subprocess against pymap and
aiosmtpd): a wrong IMAP password is an error, retried slowly, and one alert mail to the operators;
after the password is fixed (the config's variable, and a restart) one back-to-normal mail."""

from __future__ import annotations

import email
import email.policy

import pytest
from sqlalchemy import select

from mailbridge.store.models import AccountHealth, AlertState, Outbox
from tests.support import IMAP_PASSWORD_ENV, make_mail
from tests.support.faults import make_config
from tests.support.service import FaultService, start_services

pytestmark = [pytest.mark.slow]

OPS = "it-ops@vendor-it.example"
ALERTS = f"""
[alerts]
recipients = ["{OPS}"]
language = "en"
interval = 0.5
repeat_minutes = 60
"""


@pytest.fixture
def service(imap_env, tmp_path):
    """``service(config_path, password)``: a ``mailbridge run`` whose IMAP password is ``password``."""
    runs = {}

    def start(config_path, password):
        env = {**imap_env, IMAP_PASSWORD_ENV: password}
        gen = start_services(FaultService, env, tmp_path / f"service-{len(runs)}.log")
        runs[len(runs)] = gen
        return next(gen)(config_path)

    yield start
    for gen in runs.values():
        next(gen, None)


def _alerts(smtp_sink):
    return [
        email.message_from_bytes(m.data, policy=email.policy.default) for m in smtp_sink.received if OPS in m.rcpt_tos
    ]


def test_wrong_password_one_alert_then_back_to_normal(tmp_path, db_url, imap_server, smtp_sink, service, db):
    cfg = make_config(
        tmp_path,
        imap=imap_server,
        smtp_port=smtp_sink.port,
        db_url=db_url,
        account_extra="permanent_fault_retry = 3600",
        extra=ALERTS,
    )
    svc = service(cfg, "wrong-password")
    svc.wait("the alert mail", lambda: _alerts(smtp_sink))
    # A few more evaluations (every 0.5 s): still one mail, and still one login attempt.
    svc.stay_alive(3.0)
    assert svc.stop() == 0
    (alert,) = _alerts(smtp_sink)
    failed = svc.named("imap_login_failed")
    assert len(failed) == 1, "a refused login must not be retried with the fast backoff"
    ev = failed[0]
    assert ev["level"] == "error" and ev["user"] == imap_server.user and ev["host"] == "127.0.0.1"
    assert ev["retry_in"] == 3600 and ev["error"]
    assert not svc.named("account_backoff")
    assert alert["Auto-Submitted"] == "auto-generated" and alert["To"] == OPS
    assert alert["Subject"] == f"[mailbridge] IMAP login refused for {imap_server.user} on 127.0.0.1"
    text = alert.get_body(("plain",)).get_content()
    assert f"check the password for user {imap_server.user} on 127.0.0.1" in " ".join(text.split())
    assert "retries every 1 hour" in text and "no restart is needed" in " ".join(text.split())
    assert ev["error"] in " ".join(text.split())  # the server's words
    with db.connect() as c:
        row = c.execute(select(AccountHealth)).one()
        assert (row.connected, row.error_kind) == (False, "login") and row.failing_since is not None
        assert c.execute(select(AlertState.sent)).scalar_one() == 1
        assert {r.kind for r in c.execute(select(Outbox))} == {"alert"}

    # The password is fixed; the service comes back, fetches, and says so once.
    imap_server.append([make_mail(message_id="<after-fix@kunde.example>")])
    svc = service(cfg, imap_server.password)
    svc.wait("the back-to-normal mail", lambda: len(_alerts(smtp_sink)) == 2)
    svc.stay_alive(1.5)
    assert svc.stop() == 0
    alert, ok = _alerts(smtp_sink)
    assert len(_alerts(smtp_sink)) == 2
    assert ok["Subject"].startswith("[mailbridge] Back to normal: IMAP login refused")
    body = " ".join(ok.get_body(("plain",)).get_content().split())
    assert f"Account main ({imap_server.user} on 127.0.0.1) fetches mail again" in body
    assert "The problem began at" in body and "and lasted" in body
    assert ok["Auto-Submitted"] == "auto-generated"
    with db.connect() as c:
        row = c.execute(select(AccountHealth)).one()
        assert row.connected and row.failing_since is None and row.last_fetch_at is not None
        assert c.execute(select(AlertState.firing_since)).scalar_one() is None
    assert svc.named("imap_connected") and not svc.errors()
