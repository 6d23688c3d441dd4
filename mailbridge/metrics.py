"""What ``mailbridge run`` tells Prometheus and an orchestrator: ``/metrics``, ``/healthz``, ``/readyz``.

Every metric is defined here, once, with its meaning (the help text) and its labels:

- **counters of events**, in :class:`Metrics` (one per ``App``, in a registry of its own, so two
  apps in one process never share a number). Each is counted at the one place the event happens,
  after the transaction that recorded it committed: the pipeline (mails fetched and their
  dispositions, the acknowledgement latency), the outbox sender (sent, failed, SMTP errors), the
  escalations (escalation mails queued);
- **gauges of facts in the database** (unsent outbox rows, open quarantine rows, open SLA breaches),
  read at scrape time by :class:`DatabaseCollector` with the queries of ``store/metrics_queries.py``,
  bounded in time; when the database does not answer, ``mailbridge_database_up`` is 0 and those
  gauges are left out, and ``/metrics`` still answers;
- **the IMAP connections**, read at scrape time from the running service's pollers
  (:class:`ImapCollector`).

:class:`MetricsServer` serves them with prometheus-client's exposition and the standard library's
``ThreadingHTTPServer`` in a daemon thread, together with ``/healthz`` (the process and its event
loop are alive) and ``/readyz`` (the scheduler runs, the database answers and its schema is the
newest). ``mailbridge run`` starts it when ``[metrics] listen`` is set and stops it when the
service has stopped.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import datetime
from http.server import ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import MetricsHandler

from mailbridge.store import metrics_queries as mq
from mailbridge.store.db import session_scope
from mailbridge.vocabulary import Disposition

if TYPE_CHECKING:
    from mailbridge.app import App

log = structlog.get_logger(__name__)

# From fetching a new case's mail to the commit that queued its acknowledgement (seconds): a single
# mail takes tens of milliseconds, a backlog's last mail waits for those before it.
ACK_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
# The kinds of SMTP failure (``outbound/sender.py`` ``smtp_error_kind`` decides which is which).
SMTP_ERROR_KINDS = (
    "connect",  # the server could not be reached or the TLS handshake failed
    "auth",  # the login was refused
    "sender_refused",  # MAIL FROM refused
    "recipient_refused",  # RCPT TO refused (every recipient)
    "data_refused",  # the message itself refused after DATA
    "response",  # another error reply
    "connection_lost",  # the connection broke or timed out during a mail
    "client",  # the client library refused to send the mail as it is (e.g. SMTPUTF8 not offered)
)
# How long a scrape or a readiness check waits for the database (seconds).
DATABASE_TIMEOUT = 2.0
# How long /healthz waits for the event loop to run a callback (seconds).
LOOP_TIMEOUT = 2.0


class Metrics:
    """The counters and the histogram of one app; each is incremented by one method, at one place."""

    def __init__(self, accounts: Iterable[str] = ()):
        self.registry = CollectorRegistry()
        r = self.registry
        self._fetched = Counter(
            "mailbridge_mails_fetched",
            "Mails fetched from IMAP and recorded by the pipeline (counted when their batch committed: a "
            "batch rolled back by a database outage and fetched again counts once).",
            ["account"],
            registry=r,
        )
        self._processed = Counter(
            "mailbridge_mails_processed",
            "Mails whose outcome was committed, by account and disposition "
            "(processed, duplicate, ignored, noise, quarantined).",
            ["account", "disposition"],
            registry=r,
        )
        self._ack_latency = Histogram(
            "mailbridge_ack_latency_seconds",
            "From fetching a new case's mail from IMAP to the commit that queued its acknowledgement.",
            buckets=ACK_LATENCY_BUCKETS,
            registry=r,
        )
        self._sent = Counter(
            "mailbridge_outbox_sent",
            "Outbox mails the SMTP server accepted, by kind (ack, relay, …).",
            ["kind"],
            registry=r,
        )
        self._failed = Counter(
            "mailbridge_outbox_failed",
            "Outbox mails given up: refused for good (5xx) or out of attempts, by kind.",
            ["kind"],
            registry=r,
        )
        self._smtp_errors = Counter(
            "mailbridge_smtp_errors",
            "SMTP failures, by kind (" + ", ".join(SMTP_ERROR_KINDS) + ").",
            ["kind"],
            registry=r,
        )
        self._escalations = Counter(
            "mailbridge_escalations_sent",
            "Escalation mails queued (committed), by kind (created, warning, breach, repeat).",
            ["kind"],
            registry=r,
        )
        # Known label values start at 0, so rate() and alerts see a series from the first scrape.
        for account in accounts:
            self._fetched.labels(account)
            for d in Disposition:
                self._processed.labels(account, d.value)
        for kind in SMTP_ERROR_KINDS:
            self._smtp_errors.labels(kind)

    # -- the events (each called from one place) --------------------------------------------------

    def mail_fetched(self, account: str) -> None:
        """``ingest/pipeline.py``: a fetched mail's batch committed."""
        self._fetched.labels(account).inc()

    def mail_done(self, account: str, disposition: Disposition) -> None:
        """``ingest/pipeline.py``: a mail's outcome committed."""
        self._processed.labels(account, disposition.value).inc()

    def ack_queued(self, fetched_at: float) -> None:
        """``ingest/pipeline.py``: the transaction that queued an acknowledgement committed;
        ``fetched_at`` is the mail's ``time.monotonic()`` when the poller fetched it."""
        self._ack_latency.observe(max(0.0, time.monotonic() - fetched_at))

    def outbox_recorded(self, kind: str, status: str) -> None:
        """``outbound/sender.py``: a mail's outcome was recorded (sent, failed, or queued again)."""
        if status == "sent":
            self._sent.labels(kind).inc()
        elif status == "failed":
            self._failed.labels(kind).inc()

    def smtp_error(self, kind: str) -> None:
        """``outbound/sender.py``: an SMTP failure of ``kind`` (one of :data:`SMTP_ERROR_KINDS`)."""
        assert kind in SMTP_ERROR_KINDS, kind
        self._smtp_errors.labels(kind).inc()

    def escalation_sent(self, kind: str) -> None:
        """``sla/escalation.py``: an escalation mail's transaction committed."""
        self._escalations.labels(kind).inc()


# ------------------------------------------------------------------------------ scrape-time facts


class _Bounded:
    """Runs a blocking call in a daemon thread and waits for it at most ``timeout`` seconds. While a
    call is still running (a database that hangs), the next caller waits for that same call instead
    of starting another one, so a hanging database holds at most one thread and one connection."""

    def __init__(self, name: str, fn: Callable[[], Any]):
        self.name = name
        self.fn = fn
        self._lock = threading.Lock()
        self._running: Future | None = None

    def _run(self, future: Future) -> None:
        try:
            future.set_result(self.fn())
        except BaseException as e:
            future.set_exception(e)

    def __call__(self, timeout: float) -> Any:
        with self._lock:
            future = self._running
            if future is None or future.done():
                future = self._running = Future()
                threading.Thread(target=self._run, args=(future,), name=self.name, daemon=True).start()
        try:
            return future.result(timeout)
        except FutureTimeout:
            raise TimeoutError(f"no answer within {timeout:g} s") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else type(e).__name__


class DatabaseCollector:
    """The gauges that are facts in the database, read at each scrape (three cheap statements)."""

    def __init__(self, app: App, timeout: float = DATABASE_TIMEOUT):
        self.app = app
        self.timeout = timeout
        self._read = _Bounded("metrics-database", self._facts)

    def _facts(self) -> tuple[int, datetime | None, int, dict[tuple[str, str], int], datetime]:
        now = self.app.clock()
        with session_scope(self.app.session_factory) as s:
            unsent, oldest = mq.outbox_unsent(s)
            return unsent, oldest, mq.quarantine_open(s), mq.breaches_open(s, now), now

    def collect(self):
        up = GaugeMetricFamily(
            "mailbridge_database_up", "1 when the database answered this scrape's queries in time, else 0."
        )
        try:
            unsent, oldest, quarantined, breaches, now = self._read(self.timeout)
        except Exception as e:
            log.warning("metrics_database_unavailable", error=_first_line(e))
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield GaugeMetricFamily(
            "mailbridge_outbox_queued", "Outbox mails not yet sent (queued, claimed or sending).", value=unsent
        )
        yield GaugeMetricFamily(
            "mailbridge_outbox_oldest_queued_age_seconds",
            "How long the oldest outbox mail not yet sent has waited (0: none waits).",
            value=(now - oldest).total_seconds() if oldest is not None else 0.0,
        )
        yield GaugeMetricFamily(
            "mailbridge_quarantine_open", "Quarantined mails not yet requeued or discarded.", value=quarantined
        )
        g = GaugeMetricFamily(
            "mailbridge_sla_breaches_open",
            "Active cases whose running SLA clock is past its due time, by queue and clock.",
            labels=["queue", "clock"],
        )
        for q in self.app.settings.queues:
            for clock in ("first_response", "update", "resolution"):
                g.add_metric([q.name, clock], breaches.pop((q.name, clock), 0))
        for (queue, clock), n in sorted(breaches.items()):  # a queue no longer configured
            g.add_metric([queue, clock], n)
        yield g


class ImapCollector:
    """Each account's IMAP connection, read from the running service's pollers at each scrape.

    Only their public attributes are read (``account``, ``mailbox.client``, ``mailbox.has``,
    ``failures``); an account whose poller has not been made yet counts as not connected."""

    def __init__(self, app: App, service):
        self.app = app
        self.service = service

    def collect(self):
        pollers = {p.account.name: p for p in list(self.service.pollers)}
        connected = GaugeMetricFamily(
            "mailbridge_imap_connected", "1 while the account's IMAP connection is open, else 0.", labels=["account"]
        )
        idle = GaugeMetricFamily(
            "mailbridge_imap_idle",
            "For a connected account: 1 when it waits for new mail with IMAP IDLE, 0 when it polls.",
            labels=["account"],
        )
        failures = GaugeMetricFamily(
            "mailbridge_imap_failures",
            "Fetch cycles of the account that failed in a row (0 after a good cycle).",
            labels=["account"],
        )
        for acc in self.app.settings.accounts:
            p = pollers.get(acc.name)
            is_connected = p is not None and p.mailbox.client is not None
            connected.add_metric([acc.name], 1 if is_connected else 0)
            if is_connected:
                idle.add_metric([acc.name], 1 if acc.idle and p.mailbox.has("IDLE") else 0)
            failures.add_metric([acc.name], p.failures if p is not None else 0)
        yield connected
        yield idle
        yield failures


# ------------------------------------------------------------------------------ the HTTP endpoints


class MetricsServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` of a running :class:`~mailbridge.scheduler.Service`,
    on ``address`` (host, port), from :meth:`start` until :meth:`stop`."""

    def __init__(self, app: App, service, address: tuple[str, int], timeout: float = DATABASE_TIMEOUT):
        self.app = app
        self.service = service
        self.address = address
        self.timeout = timeout
        self._collectors = [DatabaseCollector(app, timeout), ImapCollector(app, service)]
        self._ready_probe = _Bounded("readiness-database", self._schema_revision)
        self._newest = mq.newest_revision(app.engine)
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- the answers ---------------------------------------------------------------------------

    def health(self) -> tuple[bool, str]:
        """Alive: the process answers, and the service's event loop (once it runs) runs a callback."""
        loop = self.service.loop
        if loop is None:
            return True, "starting"
        ran = threading.Event()
        try:
            loop.call_soon_threadsafe(ran.set)
        except RuntimeError:  # the loop is closed
            return False, "event loop closed"
        if not ran.wait(LOOP_TIMEOUT):
            return False, f"event loop did not answer within {LOOP_TIMEOUT:g} s"
        return True, "ok"

    def _schema_revision(self) -> str | None:
        mq.database_answers(self.app.engine)
        return mq.schema_revision(self.app.engine)

    def readiness(self) -> tuple[bool, str]:
        """Ready: the scheduler runs, the database answers in time and its schema is the newest."""
        s = self.service
        if s.stop_event.is_set():
            return False, "stopping"
        if s.scheduler is None or not s.scheduler.running:
            return False, "scheduler not started"
        try:
            revision = self._ready_probe(self.timeout)
        except Exception as e:
            return False, f"database: {_first_line(e)}"
        if revision != self._newest:
            return False, f"database schema at {revision or 'nothing'}, not {self._newest} (mailbridge db upgrade)"
        return True, "ready"

    # -- the server ----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        assert self._httpd is not None
        return self._httpd.server_address[1]

    def start(self) -> MetricsServer:
        """Bind and serve in a daemon thread; raises OSError when the address cannot be bound."""
        host, port = self.address
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        server_class = type("MetricsHTTPServer", (ThreadingHTTPServer,), {"address_family": family})
        self._httpd = server_class((host, port), _handler(self))
        self._httpd.daemon_threads = True
        for c in self._collectors:
            self.app.metrics.registry.register(c)
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="metrics-http", daemon=True)
        self._thread.start()
        log.info("metrics_serving", address=f"{host}:{self.port}", paths=["/metrics", "/healthz", "/readyz"])
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)
        for c in self._collectors:
            self.app.metrics.registry.unregister(c)

    def __enter__(self) -> MetricsServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _handler(server: MetricsServer) -> type[MetricsHandler]:
    class Handler(MetricsHandler):
        registry = server.app.metrics.registry

        def do_GET(self) -> None:
            path = urlsplit(self.path).path
            if path == "/metrics":
                super().do_GET()
                return
            if path == "/healthz":
                ok, reason = server.health()
            elif path == "/readyz":
                ok, reason = server.readiness()
            else:
                self._plain(404, "not found: /metrics, /healthz, /readyz\n")
                return
            self._plain(200 if ok else 503, reason + "\n")

        def _plain(self, status: int, body: str) -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


def serve_metrics(app: App, service) -> MetricsServer | None:
    """The endpoints of ``service`` on ``[metrics] listen``, started; None when that is not set."""
    address = app.settings.metrics.address
    if address is None:
        return None
    return MetricsServer(app, service, address).start()
