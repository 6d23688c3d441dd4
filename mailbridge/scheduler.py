"""The running service: APScheduler (AsyncIO) jobs for every account's fetch cycle and the outbox.

- ``fetch:<account>``: an interval job per account, run in a worker thread (imapclient blocks).
  Each run works for one poll interval: a cycle, then IDLE until new mail or the interval ends.
  ``max_instances=1`` and ``coalesce`` keep one cycle per account at a time; accounts are
  independent, so one failing account never holds up another.
- ``outbox``: a coroutine job that drains the outbox; a poller that queued mail wakes it at once,
  so an acknowledgement goes out within about a second of the customer's mail arriving.
- ``close_solved``: closes solved cases whose reopen window has passed (``conversations``).
- ``escalate``: every ``sla.escalation_interval`` seconds (60), the escalation job (``sla/escalation.py``);
  it starts at once, so stages that fell due while the service was down go out first, in order.
- ``schedules``: every ``SCHEDULE_TICK_SECONDS`` (30) and at once on start, each ``[[reports]]`` and
  ``[[digests]]`` entry sends its owed due time (``scheduled.py``: the database decides, not this job
  store; a due time missed while the service was down goes out once, marked late). Its health is
  recorded per entry, as ``report:<name>`` / ``digest:<name>``.
- ``retention``: daily at ``retention.daily_at`` (UTC) when a ``[retention]`` period is set
  (``privacy/retention.py``); one run per day over all instances.
- ``alerts``: every ``alerts.interval`` seconds (when ``alerts.recipients`` is set), the alert job
  (``alerts.py``): alert and back-to-normal mails to the operators.

Several instances on one database (``cluster.py``, ``store/leases.py``): a heartbeat thread renews
this instance's leases every ``cluster.lease_seconds / 3``. A ``fetch:<account>`` run works only
while this instance holds that mailbox's lease, with a stop event of its own that is set when the
service stops *or* the lease is lost or given up: the cycle ends after the mail it is on, and a
given-up lease is released once the run has returned. The jobs in ``LEADER_JOBS`` (close_solved,
escalate, schedules, alerts) run only on the holder of the ``leader`` lease; ``retention`` and the
outbox run on every instance (a daily run row, the outbox's claims). A clean stop releases every
lease, so another instance takes over at its next heartbeat.

Every job's run is recorded in ``job_health`` (``store/health.py``) for ``mailbridge status``; the
outbox's only when its state changes (SMTP starts or stops failing) or once a minute, not per run.

SIGTERM/SIGINT set a stop flag: an IDLE wait returns, a cycle finishes the mail it is on (its
transaction commits or rolls back as a whole) and moves what was committed, the outbox finishes
its current mail. Only when every fetch thread has returned are the IMAP connections and the
database engine closed (APScheduler 3's ``AsyncIOScheduler.shutdown(wait=True)`` does not wait for
thread-pool jobs, so we count them ourselves).
"""

from __future__ import annotations

import asyncio
import signal
import threading
from datetime import UTC, datetime

import structlog
from apscheduler.executors.asyncio import AsyncIOExecutor
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger

from mailbridge.app import App
from mailbridge.cluster import Cluster
from mailbridge.store import health, leases
from mailbridge.store.db import session_scope

log = structlog.get_logger(__name__)

# Keep the gap between two fetch runs small: the next run starts this long before the window ends.
FETCH_WINDOW_SLACK_SECONDS = 0.2
# How long a stop waits for running fetch cycles (a cycle stops after the mail it is on).
STOP_TIMEOUT_SECONDS = 120.0
# The outbox's health row is written when its state changes, else at most this often (seconds).
OUTBOX_HEALTH_SECONDS = 60.0
# How often the scheduled reports and digests look for an owed due time (seconds).
SCHEDULE_TICK_SECONDS = 30.0
# The jobs only the holder of the leader lease runs (each is also safe to run twice: the leader
# lease spares the others the work, and a leader change in mid-run costs nothing; ARCHITECTURE.md).
LEADER_JOBS = ("close_solved", "escalate", "schedules", "alerts")


def _first_line(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


class _FetchStop(threading.Event):
    """A fetch run's stop: set by a service stop or when the lease is lost or given up (``_lost``);
    it also reads as set once the lease's local hold ran out without a heartbeat renewing it (a
    heartbeat that hangs rather than fails), so the cycle stops after the mail it is on."""

    def __init__(self, holds) -> None:
        super().__init__()
        self._holds = holds

    def is_set(self) -> bool:
        return super().is_set() or not self._holds()


class Service:
    def __init__(self, app: App):
        self.app = app
        self.stop_event = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.scheduler: AsyncIOScheduler | None = None
        self.pollers = []
        self._sender = app.sender(should_stop=self.stop_event.is_set)
        self._sender_running = False
        self._sender_again = False
        self._active_ticks = 0
        self._imap_executor: ThreadPoolExecutor | None = None
        self._ticks_done = threading.Condition()
        # The outbox's last recorded state (None: not yet recorded) and when it was written.
        self._outbox_error: str | None = None
        self._outbox_recorded_at: float | None = None
        # The mailbox lease of each account, and the stop event of each fetch run going on (by lease).
        self._lease_of = {a.name: leases.mailbox_lease(a.name, a.folder) for a in app.settings.accounts}
        self._account_of = {lease: account for account, lease in self._lease_of.items()}
        self._fetching: dict[str, threading.Event] = {}
        self.cluster: Cluster = app.cluster(
            self._lease_of.values(), busy=self._busy, on_gained=self._gained, on_lost=self._lost
        )
        self._heartbeat: threading.Thread | None = None
        self._beat_now = threading.Event()
        self._heartbeat_stop = threading.Event()

    # -- health --------------------------------------------------------------------------------

    def _record_job(self, job: str, error: str | None = None) -> None:
        """One run of ``job`` in ``job_health``; the database being away costs only this row."""
        try:
            with session_scope(self.app.session_factory) as s:
                health.job_ran(s, job, self.app.clock(), error)
        except Exception as e:
            log.warning("job_health_not_recorded", job=job, error=_first_line(e)[:200])

    async def _record_outbox(self, error: str | None) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        changed = self._outbox_recorded_at is None or (error is None) != (self._outbox_error is None)
        if not changed and now - self._outbox_recorded_at < OUTBOX_HEALTH_SECONDS:
            return
        self._outbox_error, self._outbox_recorded_at = error, now
        await asyncio.to_thread(self._record_job, "outbox", error)

    # -- outbox ------------------------------------------------------------------------------

    async def drain_outbox(self) -> None:
        """Send until nothing is due; rows queued while we send are picked up in the same run."""
        self._sender_running = True
        try:
            while not self.stop_event.is_set():
                self._sender_again = False
                report = await self._sender.run_once()
                if report.sent or report.errors:
                    await self._record_outbox(report.errors[-1][:500] if report.errors else None)
                busy = report.sent or report.failed or (report.retry and not report.errors)
                if not (busy or self._sender_again):
                    return
                if report.errors:
                    return  # SMTP is away: wait for the next interval
        finally:
            self._sender_running = False

    def _kick_sender(self) -> None:
        if self._sender_running:
            self._sender_again = True
        elif self.scheduler is not None and self.scheduler.running:
            self.scheduler.modify_job("outbox", next_run_time=datetime.now(UTC))

    def wake_sender(self) -> None:
        """Thread-safe: called by pollers after they committed mail."""
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._kick_sender)

    # -- fetching ------------------------------------------------------------------------------

    def _tick(self, poller, window: float) -> None:
        """One fetch run of one account (in a worker thread), counted so a stop can wait for it; only
        while this instance holds the mailbox's lease. Its stop event is set by a service stop or
        when the lease is lost or given up (``_lost``)."""
        lease = self._lease_of[poller.account.name]
        with self._ticks_done:
            if self.stop_event.is_set() or not self.cluster.holds(lease):
                return
            stop = _FetchStop(lambda: self.cluster.holds(lease))
            self._fetching[lease] = stop
            self._active_ticks += 1
        try:
            poller.tick(window, stop)
        finally:
            with self._ticks_done:
                del self._fetching[lease]
                self._active_ticks -= 1
                self._ticks_done.notify_all()
            if not self.cluster.holds(lease) and not self.stop_event.is_set():
                # Another instance fetches this mailbox now: our connection is not needed.
                poller.close()
                if self.cluster.leaving(lease):
                    self._beat_now.set()  # release it now rather than at the next heartbeat

    def _busy(self, lease: str) -> bool:
        with self._ticks_done:
            return lease in self._fetching

    def _lost(self, names: list[str]) -> None:
        """The heartbeat lost or gave up these leases: their fetch runs stop after the mail in hand."""
        with self._ticks_done:
            for name in names:
                stop = self._fetching.get(name)
                if stop is not None:
                    stop.set()

    def _gained(self, names: list[str]) -> None:
        """The heartbeat took these leases: their jobs run at once, not at their next interval."""
        jobs = [f"fetch:{self._account_of[n]}" for n in names if n in self._account_of]
        if leases.LEADER in names:
            jobs += LEADER_JOBS
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._run_now, jobs)

    def _run_now(self, jobs: list[str]) -> None:
        if self.scheduler is None or not self.scheduler.running or self.stop_event.is_set():
            return
        now = datetime.now(UTC)
        for job_id in jobs:
            if self.scheduler.get_job(job_id) is not None:
                self.scheduler.modify_job(job_id, next_run_time=now)

    def _heartbeat_loop(self) -> None:
        """The cluster's heartbeat, in a thread of its own: a busy thread pool or a paused scheduler
        (while stopping) must not let the leases run out."""
        while True:
            self._beat_now.wait(self.cluster.interval)
            self._beat_now.clear()
            if self._heartbeat_stop.is_set():
                return
            try:
                self.cluster.beat()
            except Exception:  # a bug in a callback: the heartbeat must go on
                log.exception("cluster_heartbeat_crashed")

    def _wait_for_ticks(self, timeout: float) -> bool:
        with self._ticks_done:
            return self._ticks_done.wait_for(lambda: self._active_ticks == 0, timeout)

    # -- lifecycle -----------------------------------------------------------------------------

    def _setup(self) -> None:
        s = self.app.settings
        self.loop = asyncio.get_running_loop()
        accounts = len(s.accounts)
        # One thread per account, one each for the close, escalation, schedules, retention and alert jobs.
        self._imap_executor = ThreadPoolExecutor(max_workers=accounts + 5)
        self.scheduler = AsyncIOScheduler(
            executors={"default": AsyncIOExecutor(), "imap": self._imap_executor},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 3600},
            timezone=UTC,
        )
        now = datetime.now(UTC)
        for acc in s.accounts:
            poller = self.app.poller(acc.name, on_progress=self.wake_sender)
            self.pollers.append(poller)
            window = max(0.5, acc.poll_interval - FETCH_WINDOW_SLACK_SECONDS)
            self.scheduler.add_job(
                self._tick,
                "interval",
                seconds=acc.poll_interval,
                args=[poller, window],
                id=f"fetch:{acc.name}",
                executor="imap",
                next_run_time=now,
            )
        self.scheduler.add_job(self.drain_outbox, "interval", seconds=s.outbox.interval, id="outbox", next_run_time=now)
        self.scheduler.add_job(
            self._close_solved,
            "interval",
            seconds=s.conversations.close_interval,
            id="close_solved",
            executor="imap",
            next_run_time=now,
        )

        self.scheduler.add_job(
            self._escalate,
            "interval",
            seconds=s.sla.escalation_interval,
            id="escalate",
            executor="imap",
            next_run_time=now,
        )
        if s.digests or s.reports:
            self.scheduler.add_job(
                self._schedules,
                "interval",
                seconds=SCHEDULE_TICK_SECONDS,
                id="schedules",
                executor="imap",
                next_run_time=now,
            )
        if s.retention.enabled:
            hour, minute = (int(x) for x in s.retention.daily_at.split(":"))
            self.scheduler.add_job(
                self._retention,
                CronTrigger(hour=hour, minute=minute, timezone=UTC),
                id="retention",
                executor="imap",
            )
        if s.alerts.recipients:
            self.scheduler.add_job(
                self._alerts,
                "interval",
                seconds=s.alerts.interval,
                id="alerts",
                executor="imap",
                next_run_time=now,
            )

    def _escalate(self) -> None:
        if self.stop_event.is_set() or not self.cluster.is_leader():
            return
        try:
            report = self.app.escalate()
        except Exception as e:  # the database is away: the next run catches up
            log.warning("escalation_failed", error=_first_line(e))
            self._record_job("escalate", _first_line(e))
            return
        self._record_job("escalate")
        if report.sent:
            self.wake_sender()

    def _schedules(self) -> None:
        """One tick of the scheduled reports and digests; one failing entry holds up no other."""
        if not self.cluster.is_leader():
            return
        for item in self.app.scheduled.items:
            if self.stop_event.is_set():
                return
            try:
                outcome = self.app.run_schedule(item.run)
            except Exception as e:  # the database or the report failed: the next tick tries again
                log.warning("schedule_failed", run=item.run, error=_first_line(e))
                self._record_job(item.run, _first_line(e))
                continue
            self._record_job(item.run)
            if outcome is not None and outcome.outbox_id is not None:
                self.wake_sender()

    def _close_solved(self) -> None:
        if not self.stop_event.is_set() and self.cluster.is_leader():
            try:
                self.app.close_solved()
            except Exception as e:  # the database is away: the next run tries again
                log.warning("close_solved_failed", error=_first_line(e))
                self._record_job("close_solved", _first_line(e))
                return
            self._record_job("close_solved")

    def _retention(self) -> None:
        if self.stop_event.is_set():
            return
        try:
            self.app.retention(should_stop=self.stop_event.is_set).daily()
        except Exception as e:  # the database or IMAP is away: tomorrow's run catches up
            log.warning("retention_failed", error=_first_line(e))
            self._record_job("retention", _first_line(e))
            return
        self._record_job("retention")

    def _alerts(self) -> None:
        if self.stop_event.is_set() or not self.cluster.is_leader():
            return
        try:
            queued = self.app.check_alerts()
        except Exception as e:  # the database is away: the account's own alert says so later
            log.warning("alerts_failed", error=_first_line(e))
            self._record_job("alerts", _first_line(e))
            return
        self._record_job("alerts")
        if queued:
            self.wake_sender()

    async def run(self, install_signals: bool = True) -> None:
        self.app.upgrade_db()
        # The parse pool (or, without one, the language models) once here rather than inside the
        # first customer's mail.
        await asyncio.to_thread(self.app.warm_up)
        self._setup()
        assert self.loop is not None and self.scheduler is not None
        # The first heartbeat before the jobs start: a single instance fetches and leads at once.
        await asyncio.to_thread(self.cluster.beat)
        self._heartbeat = threading.Thread(target=self._heartbeat_loop, name="cluster-heartbeat", daemon=True)
        self._heartbeat.start()
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                self.loop.add_signal_handler(sig, self.request_stop)
        self.scheduler.start()
        log.info(
            "service_started",
            accounts=[a.name for a in self.app.settings.accounts],
            queues=[q.name for q in self.app.settings.queues],
            instance=self.cluster.instance,
            leases=self.cluster.held(),
        )
        while not self.stop_event.is_set():
            await asyncio.sleep(0.2)
        log.info("service_stopping")
        self.scheduler.pause()
        # The sender sees the stop flag after the mail it is on; cancelling it mid-send could
        # lose the record of a delivery.
        while self._sender_running:
            await asyncio.sleep(0.05)
        # Running fetch cycles see the stop flag and finish the mail they are on.
        if not await asyncio.to_thread(self._wait_for_ticks, STOP_TIMEOUT_SECONDS):
            log.error("service_stop_timeout", waited=STOP_TIMEOUT_SECONDS)
        self.scheduler.shutdown(wait=False)
        await asyncio.sleep(0)  # AsyncIOScheduler runs its shutdown on the next loop iteration
        await asyncio.to_thread(self._imap_executor.shutdown, True)
        log.info("service_jobs_finished")
        self._heartbeat_stop.set()
        self._beat_now.set()
        await asyncio.to_thread(self._heartbeat.join)
        await asyncio.to_thread(self.cluster.release_all)
        for p in self.pollers:
            p.close()
        self.app.close()
        log.info("service_stopped")

    def request_stop(self) -> None:
        self.stop_event.set()
        with self._ticks_done:
            for stop in self._fetching.values():
                stop.set()
