"""Alert mails from the running service (``mailbridge run`` as a subprocess against pymap and
aiosmtpd): a refused IMAP login is an error, retried slowly, and one alert mail to the operators;
once the password is fixed on the server the same process heals and sends one back-to-normal mail.
SMTP away: the alert arrives when it is back, then the back-to-normal mail."""

from __future__ import annotations

import email
import email.policy
import itertools
from datetime import datetime

import pytest
from sqlalchemy import select

from mailbridge.embedded import PymapServer, SmtpSink
from mailbridge.store.models import AccountHealth, AlertState, Outbox
from tests.support import IMAP_PASSWORD, IMAP_PASSWORD_ENV, make_mail
from tests.support.faults import make_config
from tests.support.service import FaultService, append, start_services

pytestmark = [pytest.mark.slow]

OPS = "it-ops@vendor-it.example"
# permanent_fault_retry in the tests (seconds); the fast backoff would retry after 1 s, 2 s, 4 s.
RETRY = 4
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


def _ts(event) -> float:
    return datetime.fromisoformat(event["timestamp"]).timestamp()


def _alerts(smtp_sink):
    return [
        email.message_from_bytes(m.data, policy=email.policy.default) for m in smtp_sink.received if OPS in m.rcpt_tos
    ]


@pytest.fixture
def maildir_imap(tmp_path):
    """pymap with its Maildir backend, whose users' passwords are read from a file at every login:
    a password can be changed on the server while mailbridge runs."""
    server = PymapServer(user="support", password="changed-on-the-server", maildir=tmp_path / "maildir")
    server.start()
    yield server
    server.stop()


def _set_server_password(server: PymapServer, password: str) -> None:
    from pymap.config import IMAPConfig

    hashed = IMAPConfig._get_hash_context(None).hash(password)
    shadow = server.maildir / "pymap-etc-shadow"
    tmp = shadow.with_suffix(".new")
    tmp.write_text(f"{server.user}:{hashed}\r\n", encoding="utf-8")
    tmp.replace(shadow)
    server.password = password


def test_wrong_password_one_alert_slow_retries_then_back_to_normal_without_restart(
    tmp_path, db_url, maildir_imap, smtp_sink, service, db
):
    """The password was changed on the server: the login is refused, logged as imap_login_failed
    (error) and retried every permanent_fault_retry seconds, not with the fast backoff; one alert
    mail however many evaluations and retries. The password is set back on the server: the running
    service heals at its next retry and sends one back-to-normal mail."""
    cfg = make_config(
        tmp_path,
        imap=maildir_imap,
        smtp_port=smtp_sink.port,
        db_url=db_url,
        account_extra=f"permanent_fault_retry = {RETRY}",
        extra=ALERTS,
    )
    svc = service(cfg, IMAP_PASSWORD)
    svc.wait("the alert mail", lambda: _alerts(smtp_sink))
    svc.wait("a retry", lambda: len(svc.named("imap_login_failed")) >= 2, timeout=RETRY * 3)
    (alert,) = _alerts(smtp_sink)
    failed = svc.named("imap_login_failed")
    ev = failed[0]
    assert ev["level"] == "error" and ev["user"] == "support" and ev["host"] == "127.0.0.1"
    assert ev["retry_in"] == RETRY and ev["error"] == "[AUTHENTICATIONFAILED] Invalid authentication credentials."
    gaps = [_ts(b) - _ts(a) for a, b in itertools.pairwise(failed)]
    assert min(gaps) >= RETRY * 0.9, f"retried after {gaps} s: the fast backoff"
    assert not svc.named("account_backoff")
    assert alert["Auto-Submitted"] == "auto-generated" and alert["To"] == OPS
    assert alert["Subject"] == "[mailbridge] IMAP login refused for support on 127.0.0.1"
    text = " ".join(alert.get_body(("plain",)).get_content().split())
    assert "check the password for user support on 127.0.0.1" in text
    assert f"retries every {RETRY} seconds" in text and "no restart is needed" in text
    assert "The server said: [AUTHENTICATIONFAILED] Invalid authentication credentials." in text
    with db.connect() as c:
        row = c.execute(select(AccountHealth)).one()
        assert (row.connected, row.error_kind) == (False, "login") and row.failing_since is not None
        assert c.execute(select(AlertState.sent)).scalar_one() == 1

    # Fixed on the server; the same process heals at its next retry and says so once.
    append(maildir_imap, [make_mail(message_id="<after-fix@kunde.example>")])
    _set_server_password(maildir_imap, IMAP_PASSWORD)
    svc.wait("the back-to-normal mail", lambda: len(_alerts(smtp_sink)) == 2, timeout=RETRY * 4)
    svc.wait("the acknowledgement", lambda: len(smtp_sink.received) == 3)
    svc.stay_alive(1.0)
    assert svc.stop() == 0
    assert len(_alerts(smtp_sink)) == 2
    ok = _alerts(smtp_sink)[1]
    assert ok["Subject"] == "[mailbridge] Back to normal: IMAP login refused for support on 127.0.0.1"
    body = " ".join(ok.get_body(("plain",)).get_content().split())
    assert "Account main (support on 127.0.0.1) fetches mail again" in body
    assert "The problem began at" in body and "and lasted" in body
    assert ok["Auto-Submitted"] == "auto-generated"
    assert len(svc.named("imap_connected")) == 1 and svc.named("account_recovered")
    with db.connect() as c:
        row = c.execute(select(AccountHealth)).one()
        assert row.connected and row.failing_since is None and row.last_fetch_at is not None
        assert c.execute(select(AlertState.firing_since)).scalar_one() is None
        assert c.execute(select(Outbox.kind).order_by(Outbox.id)).scalars().all() == ["alert", "ack", "alert"]


def test_smtp_away_the_alert_arrives_when_it_is_back_then_back_to_normal(
    tmp_path, db_url, imap_server, smtp_sink, service, db
):
    """The SMTP server is away longer than outbox_failing_minutes: the alert is queued (it cannot
    go out yet), and when the server is back it arrives, saying how many mails waited, after the
    customer's acknowledgement; then one back-to-normal mail."""
    port = smtp_sink.port
    smtp_sink.stop()
    cfg = make_config(
        tmp_path,
        imap=imap_server,
        smtp_port=port,
        db_url=db_url,
        extra=ALERTS + "outbox_failing_minutes = 0.05\n",  # 3 seconds
    )
    svc = service(cfg, imap_server.password)
    imap_server.append([make_mail(message_id="<smtp-away@kunde.example>")])

    def alert_queued():
        with db.connect() as c:
            return c.execute(select(AlertState).where(AlertState.condition == "outbox")).first()

    svc.wait("the outbox alert to be queued", alert_queued)
    back = SmtpSink(port=port).start()
    try:
        svc.wait("the back-to-normal mail", lambda: len(_alerts(back)) == 2)
        svc.stay_alive(1.5)
        assert svc.stop() == 0
        received = back.received
    finally:
        back.stop()
    kinds = [("ack" if OPS not in m.rcpt_tos else "alert") for m in received]
    assert kinds == ["ack", "alert", "alert"], kinds  # queued in this order, sent in this order
    alert, ok = _alerts(back)
    assert alert["Subject"] == "[mailbridge] outgoing mail is failing (127.0.0.1)"
    text = " ".join(alert.get_body(("plain",)).get_content().split())
    assert f"The SMTP server 127.0.0.1:{port} has not accepted mail" in text
    assert "for more than 3 seconds. 1 mail(s) are waiting to go out." in text and "Connect call failed" in text
    assert "if you read it long after" in text
    assert ok["Subject"] == "[mailbridge] Back to normal: outgoing mail is failing (127.0.0.1)"
    assert "accepts mail again" in ok.get_body(("plain",)).get_content()
    assert svc.named("smtp_unreachable") and not svc.errors()
