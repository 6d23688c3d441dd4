"""A backlog (more than one fetch batch) shows progress while it is worked: ``backlog_progress``
lines with done, remaining, rate and eta, every ``logging.progress_interval`` seconds; a single
batch shows none."""

from __future__ import annotations

import threading

import structlog
from structlog.testing import capture_logs

from mailbridge.app import App
from mailbridge.settings import load_settings
from tests.support import write_config
from tests.support.faults import make_mails


def test_backlog_progress_lines(tmp_path, db_url, imap_server, smtp_sink, imap_env):
    cfg = write_config(
        tmp_path / "mailbridge.toml",
        imap_port=imap_server.port,
        imap_user=imap_server.user,
        smtp_port=smtp_sink.port,
        db_url=db_url,
        var_dir=tmp_path / "var",
        extra="progress_interval = 0.1",  # in [logging]
    )
    app = App(load_settings(cfg))
    n = 60  # fetch_batch is 50: two batches
    imap_server.append([raw for _, raw in make_mails(n, "backlog")])
    poller = app.poller("main")
    try:
        with capture_logs() as logs:
            poller.tick(0.2, threading.Event())
        imap_server.append([raw for _, raw in make_mails(3, "small", start=n)])
        with capture_logs() as small:
            poller.tick(0.2, threading.Event())
    finally:
        poller.close()
        app.close()
        structlog.reset_defaults()
    done = [e for e in logs if e["event"] == "imap_cycle_done"]
    assert done and done[0]["fetched"] == n
    progress = [e for e in logs if e["event"] == "backlog_progress"]
    assert progress, "no progress line while a backlog of 60 mails was worked"
    print(f"\n[{db_url.split(':')[0]}] {len(progress)} progress lines, last: {progress[-1]}")
    for e in progress:
        assert e["account"] == "main" and 0 < e["done"] < n and e["done"] + e["remaining"] == n
        assert e["rate"] > 0 and e["eta_seconds"] is not None and e["eta_seconds"] >= 0
    assert [e["done"] for e in progress] == sorted({e["done"] for e in progress})  # increasing
    assert not [e for e in small if e["event"] == "backlog_progress"]
