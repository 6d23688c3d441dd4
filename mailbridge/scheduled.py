"""Scheduled mail on a durable schedule: the ``[[reports]]`` and the ``[[digests]]``.

Each scheduled thing (``report:<name>``, ``digest:<name>``) has due times from its schedule in its
zone (``schedules.py``; a digest's crontab line likewise through APScheduler's ``CronTrigger``). The
truth of what was sent is the database, not APScheduler's job store:

- **Which due time is owed.** At every tick (``Service``'s ``schedules`` job, and at once on start)
  the latest due time at or before now is owed if it has no ``schedule_runs`` row and is not before
  the thing was first seen (``schedule_starts``: a new schedule does not send yesterday's report).
  Only the latest: after a long downtime one mail, not a burst of all the missed ones.
- **Once.** Its row is claimed (unique name and due time) in the transaction that queues its outbox
  mail, whose ``dedup_key`` ``report:<name>:<due>`` is unique too; two instances on one database,
  or a restart, find the row or lose the insert and roll back. A due time that sends nothing (a
  closed day of the calendar, a digest with nothing to report) gets its row as well.
- **Late.** A mail queued more than ``LATE_AFTER`` after its due time says so in its subject and
  text: "(due Mon 08:00, sent late)".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import structlog
from apscheduler.triggers.cron import CronTrigger
from babel.dates import format_datetime

from mailbridge.business_calendar import BusinessCalendar
from mailbridge.outbound.messages import MailBuilder
from mailbridge.outbound.outbox import enqueue
from mailbridge.schedules import from_crontab, last_fire
from mailbridge.settings import ReportSettings, Settings
from mailbridge.sla.digest import Digests
from mailbridge.store import schedule_runs
from mailbridge.store.db import IntegrityError, session_scope
from mailbridge.vocabulary import MessageKind

log = structlog.get_logger(__name__)

# A mail queued later than this after its due time (the service was down) is marked late.
LATE_AFTER = timedelta(minutes=15)
DUE_FORMAT = {"de": "EEE dd.MM. HH:mm", "en": "EEE d MMM HH:mm"}
GENERATED_FORMAT = {"de": "EEE dd.MM.yyyy HH:mm zzz", "en": "EEE d MMM yyyy HH:mm zzz"}


@dataclass(frozen=True)
class Scheduled:
    """One scheduled thing: its run name, when it is due, in which zone and language."""

    run: str  # report:<name> / digest:<name>
    kind: str  # report / digest
    name: str
    trigger: CronTrigger
    zone: ZoneInfo
    language: str
    calendar: BusinessCalendar | None = None


@dataclass(frozen=True)
class Outcome:
    run: str
    due_at: datetime
    outbox_id: int | None  # None: nothing sent (closed day, nothing to report, claimed elsewhere)


# (report name, params, format, now) → mailbridge.reports.Rendered
RenderReport = Callable[[str, dict, str, datetime], object]


class ScheduledMail:
    def __init__(self, settings: Settings, digests: Digests, builder: MailBuilder, render: RenderReport):
        self.settings = settings
        self.digests = digests
        self.builder = builder
        self.render = render
        calendars = {c.name: c.calendar() for c in settings.calendars}
        self.items: list[Scheduled] = []
        for r in settings.reports:
            sched = settings.report_schedule(r)
            cal = calendars.get(r.calendar) if r.calendar else None
            self.items.append(
                Scheduled(f"report:{r.name}", "report", r.name, sched.trigger, sched.zone, r.language, cal)
            )
        for d in settings.digests:
            cal = calendars.get(d.calendar) if d.calendar else None
            trigger = from_crontab(d.cron, d.timezone)
            self.items.append(
                Scheduled(f"digest:{d.name}", "digest", d.name, trigger, ZoneInfo(d.timezone), d.language, cal)
            )

    def item(self, run: str) -> Scheduled:
        return next(i for i in self.items if i.run == run)

    def owed(self, session_factory, item: Scheduled, now: datetime) -> datetime | None:
        """The due time of ``item`` owed at ``now`` (see the module docstring), else None."""
        due = last_fire(item.trigger, now)
        with session_scope(session_factory) as s:
            since = schedule_runs.first_seen(s, item.run)
            done = due is not None and schedule_runs.done(s, item.run, due)
        if since is None:
            try:
                with session_scope(session_factory) as s:
                    schedule_runs.record_start(s, item.run, now)
            except IntegrityError:  # another instance saw it first
                pass
            with session_scope(session_factory) as s:
                since = schedule_runs.first_seen(s, item.run)
        if due is None or done or due < since:
            return None
        return due

    def run(self, session_factory, item: Scheduled, now: datetime) -> Outcome | None:
        """Send ``item``'s owed due time, if any; None when nothing is owed."""
        due = self.owed(session_factory, item, now)
        if due is None:
            return None
        return self.send(session_factory, item, due, now)

    def send(self, session_factory, item: Scheduled, due: datetime, now: datetime) -> Outcome:
        """Send ``item``'s due time ``due`` at ``now``, claiming it: nothing on a closed day of its
        calendar (the day in the item's zone); marked late more than ``LATE_AFTER`` after it."""
        day = due.astimezone(item.calendar.tz if item.calendar else item.zone).date()
        if item.calendar is not None and not item.calendar.hours_on(day):
            try:
                with session_scope(session_factory) as s:
                    schedule_runs.claim(s, item.run, due, now, "closed_day")
            except IntegrityError:  # another instance recorded it
                pass
            log.info("schedule_skipped", run=item.run, due=due.isoformat(), reason="no business day")
            return Outcome(item.run, due, None)
        late = self._fmt(due, item, DUE_FORMAT) if now - due > LATE_AFTER else None
        if item.kind == "digest":
            d = next(d for d in self.settings.digests if d.name == item.name)
            return Outcome(item.run, due, self.digests.send(session_factory, d, now, due, late))
        r = next(r for r in self.settings.reports if r.name == item.name)
        return Outcome(item.run, due, self._report(session_factory, item, r, due, now, late))

    def _fmt(self, at: datetime, item: Scheduled, formats: dict[str, str]) -> str:
        return format_datetime(at, formats.get(item.language, formats["en"]), locale=item.language, tzinfo=item.zone)

    def _report(
        self, session_factory, item: Scheduled, r: ReportSettings, due: datetime, now: datetime, late: str | None
    ) -> int | None:
        # Built outside the transaction: a report may read for a while; the claim decides.
        rendered = self.render(r.report, dict(r.params), r.format, now)
        q = self._queue(r)
        out = self.builder.report(
            from_name=q.display_name,
            from_addr=q.address,
            to=r.recipients,
            name=r.name,
            report=r.report,
            rendered=rendered,
            language=r.language,
            generated=self._fmt(now, item, GENERATED_FORMAT),
            late=late,
            now=now,
        )
        key = f"{item.run}:{due.astimezone(UTC).isoformat()}"
        try:
            with session_scope(session_factory) as s:
                outbox_id = enqueue(
                    s, out, kind=MessageKind.REPORT, dedup_key=key, now=now, ticket_id=None, language=r.language
                )
                schedule_runs.claim(s, item.run, due, now, "late" if late else "sent", outbox_id)
        except IntegrityError:
            log.info("report_already_queued", report=r.name, due=due.isoformat())
            return None
        log.info("report_queued", report=r.name, due=due.isoformat(), late=bool(late), format=r.format)
        return outbox_id

    def _queue(self, r: ReportSettings):
        """The queue a report is sent from: the one its ``queue`` parameter names, else the first."""
        wanted = r.params.get("queue")
        return next((q for q in self.settings.queues if q.name == wanted), self.settings.queues[0])
