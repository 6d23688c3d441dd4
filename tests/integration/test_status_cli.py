"""``mailbridge status`` over a database filled through the real servers: mails in via IMAP (the
poller records the account's health as the service does), acknowledgements out via SMTP, a mail the
SMTP server keeps refusing with 4xx, a quarantined mail; the exit codes 0 / 1 / 2 and ``--json``."""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import timedelta

from click.testing import CliRunner

from mailbridge.cli import cli
from tests.support import make_mail


def _status(config_path, *args, clock=None):
    obj = {"clock": clock} if clock else None
    result = CliRunner().invoke(cli, ["--config", str(config_path), "status", *args], obj=obj, catch_exceptions=False)
    return result.exit_code, result.stdout


def _fetch(app):
    """One fetch run as the service runs it (it records the account's health)."""
    poller = app.poller("main")
    try:
        poller.tick(0.3, threading.Event())
    finally:
        poller.close()


def test_status_ok_warning_critical_and_json(config_path, app, imap_server, smtp_sink):
    # Nobody ran the service on this database yet: a warning that says so, not a crash.
    code, out = _status(config_path)
    assert code == 1, out
    assert "WARNING" in out and "the service has not run here yet" in out

    # OK: two mails in through IMAP, acknowledged through SMTP.
    imap_server.append([make_mail(message_id=f"<st-{i}@kunde.example>") for i in range(2)])
    _fetch(app)
    assert asyncio.run(app.sender().run_once()).sent == 2
    code, out = _status(config_path)
    assert code == 0, out
    assert out.startswith("mailbridge: OK")
    assert "connected" in out and "idle" in out  # pymap offers IDLE
    code, out = _status(config_path, "--json")
    doc = json.loads(out)
    assert doc["status"] == "ok" and doc["problems"] == []
    (acc,) = doc["accounts"]
    assert (acc["name"], acc["connected"], acc["mode"], acc["waiting"], acc["error"]) == ("main", True, "idle", 2, None)
    assert acc["last_fetch"] is not None and doc["outbox"]["pending"] == 0 and doc["quarantine"]["open"] == 0
    assert doc["schema"]["current"] == doc["schema"]["newest"] == "0014"

    # WARNING: a quarantined mail (no sender), and the SMTP server refusing with 4xx for a short time.
    no_sender = b"To: support@vendor.example\r\nSubject: Ohne Absender\r\nMessage-ID: <nos@x.example>\r\n\r\nHallo\r\n"
    imap_server.append([no_sender, make_mail(message_id="<st-late@kunde.example>")])
    _fetch(app)
    smtp_sink.set_reply("451 4.3.0 mailbox busy, try later")
    report = asyncio.run(app.sender().run_once())
    assert report.retry == 1 and report.sent == 0
    code, out = _status(config_path)
    assert code == 1, out
    assert "1 open quarantined mail" in out and "451 4.3.0 mailbox busy" in out
    doc = json.loads(_status(config_path, "--json")[1])
    assert doc["status"] == "warning"
    assert {p["condition"]: p["level"] for p in doc["problems"]} == {"quarantine:open": "warning", "outbox": "warning"}
    assert (doc["outbox"]["pending"], doc["outbox"]["retrying"]) == (1, 1)
    assert doc["outbox"]["last_error"].startswith("451 4.3.0")

    # CRITICAL: a quarter of an hour later the mail is still being retried (outbox_failing_minutes 10).
    later = app.clock() + timedelta(minutes=15)
    code, out = _status(config_path, clock=lambda: later)
    assert code == 2, out
    assert out.startswith("mailbridge: CRITICAL") and "CRITICAL outbox: sending fails: 451 4.3.0" in out
    doc = json.loads(_status(config_path, "--json", clock=lambda: later)[1])
    assert doc["status"] == "critical"
    assert doc["timezone"] == "UTC" and doc["time"].endswith("+00:00")
    # Nobody has fetched for those 15 minutes either: no service runs the account (stopped, crashed).
    assert "CRITICAL account:main:silent: no word from the service for 15 min (is mailbridge run running?)" in out
    assert {p["condition"]: p["level"] for p in doc["problems"]}["account:main:silent"] == "critical"
