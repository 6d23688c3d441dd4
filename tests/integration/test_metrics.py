"""``/metrics``, ``/healthz`` and ``/readyz`` of ``mailbridge run`` (``[metrics] listen``), scraped over
HTTP the way Prometheus and an orchestrator do, while mail flows through the real IMAP server, the
pipeline and the real SMTP server; every figure is checked against what the database holds."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url

from mailbridge.app import App
from mailbridge.embedded import LOOPBACK, free_port
from mailbridge.metrics import MetricsServer, serve_metrics
from mailbridge.scheduler import Service
from mailbridge.settings import load_settings
from mailbridge.store.db import session_scope
from mailbridge.store.migrate import current_revision
from mailbridge.store.models import Outbox, Quarantine
from tests.integration.conversation_support import berlin, sla_desk
from tests.integration.test_faults import TcpProxy
from tests.support import make_mail, write_config
from tests.support.faults import make_mails
from tests.support.service import FaultService, start_services

# Mails over this many bytes are quarantined (set low so one test mail is over it).
MAX_BYTES = 200_000
WAIT_SECONDS = 60.0


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://{LOOPBACK}:{port}{path}", timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except urllib.error.URLError as e:  # not listening (yet)
        return 0, str(e.reason)


class Scrape:
    """One scrape of /metrics, parsed with prometheus-client's own parser."""

    def __init__(self, port: int):
        status, text = _get(port, "/metrics")
        assert status == 200, text
        self.samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def __call__(self, name: str, **labels) -> float | None:
        return self.samples.get((name, tuple(sorted(labels.items()))))


def _until(what: str, check, timeout: float = WAIT_SECONDS):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


def _config(tmp_path, imap_server, smtp_sink, db_url, port: int, extra: str = ""):
    return write_config(
        tmp_path / "mailbridge.toml",
        imap_port=imap_server.port,
        imap_user=imap_server.user,
        smtp_port=smtp_sink.port,
        db_url=db_url,
        var_dir=tmp_path / "var",
        extra=f'[metrics]\nlisten = "{LOOPBACK}:{port}"\n{extra}',
    )


def test_metrics_while_mails_flow(tmp_path, db_url, imap_server, smtp_sink, imap_env):
    """N customer mails and an oversize one through the running service: the dispositions, the
    acknowledgement latency, the outbox, the quarantine and the IMAP connection as Prometheus reads
    them; then an SMTP server that defers (4xx) and refuses (5xx) an acknowledgement."""
    n = 3
    port = free_port()
    settings = load_settings(
        _config(tmp_path, imap_server, smtp_sink, db_url, port, f"[ingest]\nmax_message_bytes = {MAX_BYTES}\n")
    )
    app = App(settings)
    svc = Service(app)
    endpoints = serve_metrics(app, svc)
    assert endpoints is not None
    runner = threading.Thread(target=lambda: asyncio.run(svc.run(install_signals=False)), daemon=True)
    try:
        # Before the service runs: alive, not ready.
        assert _get(port, "/healthz") == (200, "starting\n")
        assert _get(port, "/readyz") == (503, "scheduler not started\n")
        assert _get(port, "/nothing")[0] == 404

        runner.start()
        _until("ready", lambda: _get(port, "/readyz") == (200, "ready\n"))
        assert _get(port, "/healthz") == (200, "ok\n")
        mails = [raw for _, raw in make_mails(n, "metrics")]
        oversize = make_mail(
            subject="Logdateien", attachments=[("logs.bin", "application/octet-stream", b"\x00" * MAX_BYTES)]
        )
        imap_server.append([*mails, oversize])

        m = _until(
            "every acknowledgement sent",
            lambda: (
                (s := Scrape(port))("mailbridge_outbox_sent_total", kind="ack") == n
                and s("mailbridge_outbox_queued") == 0
                and s
            ),
        )
        assert m("mailbridge_mails_fetched_total", account="main") == n + 1
        assert m("mailbridge_mails_processed_total", account="main", disposition="processed") == n
        assert m("mailbridge_mails_processed_total", account="main", disposition="quarantined") == 1
        assert m("mailbridge_mails_processed_total", account="main", disposition="duplicate") == 0
        # One latency per acknowledgement, each under the minute this took at most.
        assert m("mailbridge_ack_latency_seconds_count") == n
        assert 0 < m("mailbridge_ack_latency_seconds_sum") < n * WAIT_SECONDS
        assert m("mailbridge_ack_latency_seconds_bucket", le="+Inf") == n
        assert m("mailbridge_quarantine_open") == 1
        assert m("mailbridge_outbox_failed_total", kind="ack") is None
        assert m("mailbridge_smtp_errors_total", kind="data_refused") == 0
        assert m("mailbridge_database_up") == 1
        assert m("mailbridge_imap_connected", account="main") == 1
        assert m("mailbridge_imap_idle", account="main") == 1  # pymap offers IDLE
        assert m("mailbridge_imap_failures", account="main") == 0
        assert m("mailbridge_sla_breaches_open", queue="support", clock="first_response") == 0
        with session_scope(app.session_factory) as s:
            acks = s.scalar(select(func.count()).where(Outbox.kind == "ack", Outbox.status == "sent"))
            quarantined = s.scalar(select(func.count()).where(Quarantine.status == "open"))
        assert (acks, quarantined) == (n, 1)

        # The SMTP server defers the next acknowledgement: an error, a mail still queued.
        smtp_sink.set_reply("451 4.3.0 try again later")
        imap_server.append([make_mail(subject="Lizenz abgelaufen", message_id="<deferred@kunde.example>")])
        m = _until(
            "the deferral",
            lambda: (s := Scrape(port))("mailbridge_smtp_errors_total", kind="data_refused") >= 1 and s,
        )
        assert m("mailbridge_outbox_queued") == 1
        assert m("mailbridge_outbox_oldest_queued_age_seconds") >= 0
        assert m("mailbridge_mails_processed_total", account="main", disposition="processed") == n + 1
        assert m("mailbridge_ack_latency_seconds_count") == n + 1

        # Now it refuses it for good: failed, nothing waits.
        smtp_sink.set_reply("550 5.7.1 message refused")
        m = _until("the refusal", lambda: (s := Scrape(port))("mailbridge_outbox_failed_total", kind="ack") == 1 and s)
        assert m("mailbridge_outbox_queued") == 0
        assert m("mailbridge_outbox_sent_total", kind="ack") == n
        assert m("mailbridge_smtp_errors_total", kind="data_refused") >= 2
        with session_scope(app.session_factory) as s:
            failed = s.scalars(select(Outbox).where(Outbox.status == "failed")).all()
        assert [o.kind for o in failed] == ["ack"] and "550" in failed[0].last_error

        # A newer mailbridge migrated the database past what this one knows: not ready.
        newest = _get(port, "/readyz") == (200, "ready\n") and current_revision(app.engine)
        with app.engine.begin() as c:
            c.execute(text("UPDATE alembic_version SET version_num = 'from_the_future'"))
        assert _get(port, "/readyz") == (
            503,
            f"database schema at from_the_future, not {newest} (mailbridge db upgrade)\n",
        )
        with app.engine.begin() as c:
            c.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": newest})
        assert _get(port, "/readyz") == (200, "ready\n")
    finally:
        svc.request_stop()
        runner.join(30)
        endpoints.stop()
    assert not runner.is_alive()
    with pytest.raises(OSError):  # stopped with the service: the port is closed
        urllib.request.urlopen(f"http://{LOOPBACK}:{port}/healthz", timeout=5)


def test_escalations_and_open_breaches(tmp_path, imap_server, smtp_sink, db_url, imap_env):
    """The escalation job's mails are counted by kind once committed; a case past its first-response
    time is an open breach of its queue until it is answered (read at the app's clock)."""
    desk = sla_desk(tmp_path, imap_server, smtp_sink, db_url)
    port = free_port()
    # The endpoints of a service that is not running: the app's counters and the database's facts.
    endpoints = MetricsServer(desk.app, Service(desk.app), (LOOPBACK, port)).start()
    try:
        desk.clock.now = berlin(2026, 11, 23, 9, 0)  # due 13:00 (4 business hours)
        desk.deliver(make_mail(subject="Systemstillstand Linie 3", body="Alles steht."))
        m = Scrape(port)
        assert m("mailbridge_escalations_sent_total", kind="warning") is None
        assert m("mailbridge_sla_breaches_open", queue="support", clock="first_response") == 0

        desk.clock.now = berlin(2026, 11, 23, 11, 0)
        assert len(desk.escalate()) == 1
        m = Scrape(port)
        assert m("mailbridge_escalations_sent_total", kind="warning") == 1
        assert m("mailbridge_outbox_sent_total", kind="escalation") == 1
        assert m("mailbridge_sla_breaches_open", queue="support", clock="first_response") == 0

        desk.clock.now = berlin(2026, 11, 23, 13, 0) + timedelta(minutes=1)
        assert len(desk.escalate()) == 1
        m = Scrape(port)
        assert m("mailbridge_escalations_sent_total", kind="breach") == 1
        assert m("mailbridge_escalations_sent_total", kind="warning") == 1
        assert m("mailbridge_sla_breaches_open", queue="support", clock="first_response") == 1
        assert m("mailbridge_sla_breaches_open", queue="hotline", clock="first_response") == 0
        # The job running again sends nothing and counts nothing.
        assert desk.escalate() == []
        assert Scrape(port)("mailbridge_escalations_sent_total", kind="breach") == 1
    finally:
        endpoints.stop()
        desk.app.close()


@pytest.fixture
def service(imap_env, tmp_path):
    yield from start_services(FaultService, imap_env, tmp_path / "service.log")


def test_readyz_follows_the_database(tmp_path, db_url, imap_server, smtp_sink, service, db):
    """``mailbridge run`` serves the endpoints; /readyz says 503 with the reason while the database
    does not answer (SQLite: locked by another process; PostgreSQL: the link cut), /healthz and
    /metrics keep answering, and /readyz is 200 again when the database is back."""
    proxy = None
    service_url = db_url
    if db.dialect.name == "postgresql":
        u = make_url(db_url)
        proxy = TcpProxy((u.host or LOOPBACK, u.port or 5432))
        service_url = u.set(host=LOOPBACK, port=proxy.port).render_as_string(hide_password=False)
    port = free_port()
    svc = service(_config(tmp_path, imap_server, smtp_sink, service_url, port))
    holder = None
    try:
        svc.wait("ready", lambda: _get(port, "/readyz") == (200, "ready\n"))
        assert svc.named("metrics_serving")[0]["address"] == f"{LOOPBACK}:{port}"
        assert Scrape(port)("mailbridge_database_up") == 1
        if proxy is not None:
            proxy.cut()
        else:
            holder = sqlite3.connect(make_url(db_url).database, timeout=30, isolation_level=None)
            holder.execute("BEGIN EXCLUSIVE")
        status, reason = _get(port, "/readyz")
        assert status == 503 and reason.startswith("database: "), reason
        m = Scrape(port)
        assert m("mailbridge_database_up") == 0
        assert m("mailbridge_quarantine_open") is None  # left out, not made up
        assert m("mailbridge_imap_connected", account="main") is not None
        assert _get(port, "/healthz") == (200, "ok\n")
    finally:
        if proxy is not None:
            proxy.restore()
        if holder is not None:
            holder.execute("COMMIT")
            holder.close()
    svc.wait("ready again", lambda: _get(port, "/readyz") == (200, "ready\n"))
    assert Scrape(port)("mailbridge_database_up") == 1
    assert svc.stop() == 0
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://{LOOPBACK}:{port}/healthz", timeout=5)
    if proxy is not None:
        proxy.close()


def test_run_refuses_a_metrics_address_in_use(tmp_path, imap_env):
    """A port that cannot be bound stops ``mailbridge run`` at once with the address and the reason."""
    with socket.socket() as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        cfg = write_config(
            tmp_path / "mailbridge.toml",
            imap_port=free_port(),
            smtp_port=free_port(),
            db_url=f"sqlite:///{tmp_path / 'mailbridge.db'}",
            var_dir=tmp_path / "var",
            extra=f'[metrics]\nlisten = "{LOOPBACK}:{port}"\n',
        )
        r = subprocess.run(
            [sys.executable, "-m", "mailbridge", "--config", str(cfg), "run"],
            env=imap_env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert r.returncode == 1
    assert f"mailbridge: cannot serve metrics on {LOOPBACK}:{port}: Address already in use" in r.stderr
