"""The quarantine-growth alert through the real servers and two instances on one database: mail
quarantined via IMAP, the alert job of both instances at the same moment (one mail), nothing more
within the period, one more after it while the quarantine still grows, and back to normal."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from sqlalchemy import func, select

from mailbridge.app import App, utc_now
from mailbridge.settings import load_settings
from mailbridge.store.db import session_scope
from mailbridge.store.models import AlertState, Outbox
from tests.support import write_config

OPS = "it-ops@vendor-it.example"


class Clock:
    def __init__(self):
        self.now = utc_now()

    def __call__(self):
        return self.now


def _no_sender(i: int) -> bytes:
    head = f"To: support@vendor.example\r\nSubject: Ohne Absender {i}\r\nMessage-ID: <nos{i}@x.example>\r\n"
    return (head + "\r\nHallo\r\n").encode()


def test_quarantine_growth_alert_once_per_period_across_instances(tmp_path, db_url, imap_server, smtp_sink, imap_env):
    cfg = write_config(
        tmp_path / "mailbridge.toml",
        imap_port=imap_server.port,
        imap_user=imap_server.user,
        smtp_port=smtp_sink.port,
        db_url=db_url,
        var_dir=tmp_path / "var",
        extra=f'\n[alerts]\nrecipients = ["{OPS}"]\nquarantine_growth = 1\nrepeat_minutes = 60\n',
    )
    clock = Clock()
    one, two = App(load_settings(cfg), clock=clock), App(load_settings(cfg), clock=clock)
    try:
        imap_server.append([_no_sender(0), _no_sender(1)])
        assert one.poller("main").cycle().dispositions == {"quarantined": 2}

        clock.now += timedelta(minutes=1)
        with ThreadPoolExecutor(2) as pool:  # two instances at the same moment: one mail
            assert sum(pool.map(lambda app: app.check_alerts(), [one, two])) == 1
        clock.now += timedelta(minutes=50)
        assert one.check_alerts() + two.check_alerts() == 0  # within the period
        imap_server.append([_no_sender(2), _no_sender(3)])
        assert two.poller("main").cycle().dispositions == {"quarantined": 2}
        clock.now += timedelta(minutes=10)  # the period is over and two more were quarantined
        assert one.check_alerts() + two.check_alerts() == 1
        clock.now += timedelta(minutes=61)  # nothing quarantined in the last hour: back to normal
        assert two.check_alerts() + one.check_alerts() == 1
        assert one.check_alerts() + two.check_alerts() == 0
        assert asyncio.run(one.sender().run_once()).sent == 3
        with session_scope(one.session_factory) as s:
            assert s.scalar(select(func.count()).select_from(Outbox).where(Outbox.kind == "alert")) == 3
            state = s.get(AlertState, "quarantine")
            assert (state.firing_since, state.sent) == (None, 2)
    finally:
        one.close()
        two.close()
    first, again, ok = (m.message for m in smtp_sink.received)
    assert [m.rcpt_tos for m in smtp_sink.received] == [[OPS]] * 3
    assert first["Subject"] == "[mailbridge] 2 mails quarantined"
    assert again["Subject"] == "[mailbridge] 2 mails quarantined"  # the last hour's
    assert ok["Subject"] == "[mailbridge] Back to normal: 2 mails quarantined"
    text = " ".join(first.get_body(("plain",)).get_content().split())
    assert "2 mails were quarantined within the last 60 minutes (more than 1); 2 quarantined mail(s) are open" in text
    assert "mailbridge quarantine requeue --all" in text
