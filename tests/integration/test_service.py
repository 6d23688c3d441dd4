"""``mailbridge run`` as a real subprocess: IMAP IDLE, a clean stop on SIGTERM, an unreachable
account that backs off while the others keep working, and ``check-config`` on a bad file.

The service's stderr (JSON lines, ``[logging] format = "json"``) goes to a file the tests read;
the database is only read, never written, by the tests.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, select

from mailbridge.embedded import free_port
from mailbridge.store.models import Event, Message, Outbox, Ticket
from tests.support import HOTLINE_ADDRESS, IMAP_PASSWORD_ENV, SUPPORT_ADDRESS, make_mail, write_config
from tests.support.service import Service, append, message_ids, start_services

# The service creates the schema at its first start, as in production: an empty database.
pytestmark = [pytest.mark.slow, pytest.mark.empty_database]

# Bounds on every wait (seconds).
START_TIMEOUT = 30.0
# A stop finishes the mail in hand and the sender's batch: well under a second here.
STOP_TIMEOUT = 15.0
WORK_TIMEOUT = 60.0
# With IDLE a new mail must be acknowledged within this; polling every 60 s could not do that.
IDLE_LATENCY_LIMIT = 10.0
IDLE_POLL_INTERVAL = 60
POLL_SECONDS = 0.02


# ------------------------------------------------------------------------------------ helpers


def _config(
    tmp_path: Path,
    imap_server,
    smtp_sink,
    db_url: str,
    *,
    poll_interval: float | None = None,
    extra: str = "",
    account_extra: str = "",
):
    path = write_config(
        tmp_path / "mailbridge.toml",
        imap_port=imap_server.port,
        imap_user=imap_server.user,
        smtp_port=smtp_sink.port,
        db_url=db_url,
        var_dir=tmp_path / "var",
        extra=extra,
        account_extra=account_extra,
    )
    if poll_interval is not None:
        # The template fixes poll_interval; a second key would be a TOML error, so replace it.
        text = path.read_text(encoding="utf-8")
        assert text.count("poll_interval = 2\n") == 1
        path.write_text(text.replace("poll_interval = 2\n", f"poll_interval = {poll_interval}\n"), encoding="utf-8")
    return path


@pytest.fixture
def service(imap_env, tmp_path):
    """Start services with ``service(config_path)``; any still running at the end are killed."""
    yield from start_services(Service, imap_env, tmp_path / "service.log")


def _counts(engine) -> tuple[int, dict[str, int]]:
    try:
        with engine.connect() as c:
            tickets = c.scalar(select(func.count()).select_from(Ticket))
            outbox = dict(c.execute(select(Outbox.status, func.count()).group_by(Outbox.status)).all())
    except Exception:  # the service has not created the schema yet
        return 0, {}
    return tickets, outbox


def _all_sent(engine, n: int) -> bool:
    tickets, outbox = _counts(engine)
    return tickets >= n and outbox.get("sent", 0) >= n and not (outbox.get("queued") or outbox.get("sending"))


def _inbound_ids(engine) -> Counter:
    with engine.connect() as c:
        return Counter(
            c.scalars(select(Message.message_id).where(Message.direction == "in", Message.ticket_id.is_not(None)))
        )


def _mail(i: int, tag: str) -> tuple[str, bytes]:
    if i % 2:
        sender = (f"Jane Roe {i}", f"jane{i}@customer.example")
        body = f"Hello,\n\nour nightly import job {i} stopped with a timeout.\n\nRegards\nJane"
        subject, to = f"Import job {i} times out", SUPPORT_ADDRESS
    else:
        sender = (f"Jürgen Müller {i}", f"juergen{i}@kunde.example")
        body = f"Guten Tag,\n\nder Drucker in Halle {i} druckt seit gestern nur noch leere Seiten.\n\nGruß\nJürgen"
        subject, to = f"Drucker in Halle {i} defekt", HOTLINE_ADDRESS
    mid = f"{tag}-{i}@{sender[1].split('@')[1]}"
    return mid, make_mail(subject=subject, body=body, sender=sender, to=to, message_id=f"<{mid}>")


# ------------------------------------------------------------------------------------ tests


def test_idle_acknowledges_a_new_mail_within_seconds(tmp_path, db_url, imap_server, smtp_sink, service):
    """With a 60 s poll interval, a mail that arrives while the service waits is acknowledged within
    10 s: the server's IDLE push (RFC 2177) started the cycle, not the timer."""
    cfg = _config(tmp_path, imap_server, smtp_sink, db_url, poll_interval=IDLE_POLL_INTERVAL)
    append(imap_server, [_mail(0, "idle")[1]])  # the first cycle processes this one, then IDLEs
    svc = service(cfg)
    svc.wait_started()
    assert len(smtp_sink.wait_for(1, timeout=WORK_TIMEOUT)) == 1, svc.tail()
    # The cycle that processed the first mail is over; from here the poller waits in IDLE.
    svc.wait("the first cycle to end", lambda: svc.named("imap_cycle_done"))

    append(imap_server, [_mail(1, "idle")[1]])
    appended = time.monotonic()
    received = smtp_sink.wait_for(2, timeout=IDLE_LATENCY_LIMIT)
    latency = time.monotonic() - appended
    print(f"\n[{db_url.split(':')[0].split('+')[0]}] IDLE: acknowledgement {latency:.2f}s after the mail was appended")
    assert len(received) == 2, f"no acknowledgement within {IDLE_LATENCY_LIMIT}s:\n{svc.tail()}"
    assert latency < IDLE_LATENCY_LIMIT
    assert received[1].rcpt_tos == ["jane1@customer.example"]

    connected = svc.named("imap_connected")
    assert len(connected) == 1 and connected[0]["idle"] is True  # one connection, never re-established
    assert svc.stop() == 0
    svc.assert_stopped_cleanly()
    # The IDLE wait ends on the stop flag and the poller leaves IDLE itself; the connection must
    # not be closed under it (that shows as a broken pipe or a confused server, and a backoff).
    svc.assert_no_backoff("main")


def test_sigterm_mid_batch_stops_cleanly_and_a_restart_finishes(config_path, imap_server, smtp_sink, service, db):
    """SIGTERM while a batch is being ingested: exit code 0 and ``service_stopped``; every mail is
    either done (ticket, moved to Processed) or untouched in INBOX, never half; no acknowledgement
    is left claimed. A second start processes the rest, and every mail ends up with exactly one
    ticket, one place in Processed and one acknowledgement."""
    n = 120
    mails = [_mail(i, "term") for i in range(n)]
    all_ids = Counter(mid for mid, _ in mails)

    # In the INBOX before the start, so that the first cycle is busy with them when SIGTERM comes
    # (and no IDLE push is involved: that is the IDLE test's business).
    append(imap_server, [raw for _, raw in mails])
    svc = service(config_path)
    svc.wait("the first tickets", lambda: _counts(db)[0] >= 1)
    assert svc.stop() == 0
    assert svc.named("service_stopping")
    svc.assert_stopped_cleanly()
    # The cycle finishes the mail in hand and moves it; its IMAP connection is not closed under it.
    svc.assert_no_backoff("main")

    done = _inbound_ids(db)
    inbox, processed = message_ids(imap_server, "INBOX"), message_ids(imap_server, "Processed")
    tickets, outbox = _counts(db)
    print(f"\n[{db.dialect.name}] SIGTERM: {tickets} of {n} mails done, {sum(inbox.values())} left; outbox {outbox}")
    assert 0 < tickets < n, "the stop did not land in the middle of the batch"
    assert tickets == sum(done.values())
    assert processed == done, "a committed mail was not moved, or a moved mail has no ticket"
    assert inbox + processed == all_ids
    assert not (set(inbox) & set(done))
    assert not outbox.get("sending"), "a clean stop must not leave a claimed outbox row behind"

    svc = service(config_path)
    svc.wait("all mails acknowledged", lambda: _all_sent(db, n))
    assert svc.stop() == 0
    svc.assert_stopped_cleanly()
    svc.assert_no_backoff("main")

    assert _inbound_ids(db) == all_ids
    assert message_ids(imap_server, "INBOX") == Counter()
    assert message_ids(imap_server, "Processed") == all_ids
    with db.connect() as c:
        ack_ids = c.scalars(select(Outbox.message_id)).all()
        resent = c.scalar(select(func.count()).select_from(Event).where(Event.kind == "mail_resent_unknown_outcome"))
    assert len(ack_ids) == n and resent == 0
    received = Counter(r.message["Message-ID"].strip("<>") for r in smtp_sink.received)
    assert received == Counter(ack_ids), "an acknowledgement is missing or was sent twice"


def test_an_unreachable_account_backs_off_while_another_keeps_working(
    tmp_path, db_url, imap_server, smtp_sink, service, db
):
    """A second account whose IMAP port has nothing listening logs ``account_backoff`` with growing
    failure counts; the good account meanwhile turns its mails into tickets and acknowledgements."""
    dead_port = free_port()
    extra = f"""
[[accounts]]
name = "dead"
host = "127.0.0.1"
port = {dead_port}
tls = "none"
user = "support"
password_env = "{IMAP_PASSWORD_ENV}"
poll_interval = 1

[[queues]]
name = "sales"
addresses = ["sales@vendor.example"]
language = "en"
account = "dead"
"""
    # The good account polls (every 2 s) instead of IDLEing: this test is about the accounts
    # being independent, the IDLE test covers IDLE.
    cfg = _config(tmp_path, imap_server, smtp_sink, db_url, extra=extra, account_extra="idle = false")
    n = 6
    svc = service(cfg)
    svc.wait_started()
    append(imap_server, [_mail(i, "good")[1] for i in range(n)])

    def progress():
        failures = [e["failures"] for e in svc.backoffs("dead")]
        return _all_sent(db, n) and len(failures) >= 2 and failures

    failures = svc.wait("tickets for the good account and backoffs of the dead one", progress)
    backoffs = svc.backoffs("dead")
    print(f"\n[{db.dialect.name}] dead account: failures {failures}, retry_in {[e['retry_in'] for e in backoffs]}")
    assert failures == list(range(1, len(failures) + 1))
    assert all(str(dead_port) in e["error"] or "refused" in e["error"].lower() for e in backoffs)
    svc.assert_no_backoff("main")
    assert svc.proc.poll() is None, "the service must survive an unreachable account"
    assert len(smtp_sink.received) == n
    with db.connect() as c:
        assert set(c.scalars(select(Ticket.queue))) <= {"support", "hotline"}
    assert svc.stop() == 0
    assert svc.named("service_stopped")


def test_check_config_names_file_key_and_problem(tmp_path, imap_env):
    """``mailbridge check-config`` on a config with an impossible SMTP port exits 2 with one line
    naming the file, the key and the problem, and no traceback."""
    path = write_config(
        tmp_path / "bad.toml",
        imap_port=1143,
        smtp_port=70000,
        db_url=f"sqlite:///{tmp_path / 'mb.db'}",
        var_dir=tmp_path / "var",
    )
    r = subprocess.run(
        [sys.executable, "-m", "mailbridge", "--config", str(path), "check-config"],
        env=imap_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert str(path) in lines[0]
    assert "smtp.port" in lines[0]
    assert "65536" in lines[0]
    assert "Traceback" not in r.stderr
