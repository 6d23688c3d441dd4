"""Recomputing the deadlines of the active cases after the configuration changed (``mailbridge sla
recompute``): new calendars, holidays or hours, new targets, organisations that gained or lost a
contract.

For every case that is not solved or closed: the organisation and contract are found again from
the case's answer address (the Reply-To of a web form, else the requester); the first-response and
resolution due times are counted again from the creation for the case's level, and the follow-up
due time from the last answer; then the escalation job's next visit is stored again.

**Pauses** are replayed as the pipeline applied them (``ingest/clocks.py``): each pause the case
was resumed from moved a due time on by the business time it lasted, but only a due time still
ahead when the pause began, and the first response only while it was unanswered; the follow-up only
for pauses that ended after the last answer. The business seconds are those recorded on the
``clock_resumed`` event (they add up to ``paused_seconds``). A case whose events do not account for
its ``paused_seconds`` falls back to moving every due time on by ``paused_seconds``. A pause that
still lasts is not counted: the pipeline adds it when the case becomes active again.

The rules are pure (:func:`dues_for`, no database); :func:`recompute` walks the cases in batches of
``BATCH`` (one transaction each), records an ``sla_recomputed`` event with the old and new values on
every case that changed, and writes nothing with ``dry_run``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import structlog

from mailbridge.settings import Settings
from mailbridge.sla.calendar import BusinessCalendar, add_business_time
from mailbridge.sla.deadlines import Deadlines
from mailbridge.sla.policy import due
from mailbridge.store import repositories as repo
from mailbridge.store import sla_queries as sq
from mailbridge.store.db import session_scope
from mailbridge.store.models import Event, Ticket
from mailbridge.vocabulary import CLOCKS_NOT_STARTED

log = structlog.get_logger(__name__)

# Cases per transaction: big enough to be quick, small enough not to hold the cases' rows (locked on
# PostgreSQL while a batch is recomputed) away from the pipeline for long.
BATCH = 500
# Statuses whose clocks are over: their deadlines are history and stay as they were.
FINISHED = ("solved", "closed")
# The columns a recompute may change, in the order they are reported.
FIELDS = ("organisation", "contract", "first_response_due", "resolution_due", "update_due")
# The event kinds that record a pause (see ingest/clocks.py).
PAUSE_EVENTS = ("clock_resumed",)


@dataclass(frozen=True)
class Pause:
    """One time a case's clocks stood still: from ``since`` until ``until`` (None: still paused),
    ``business_seconds`` of open time (recorded when it ended), and which due times it moved (the
    ``*_due`` columns named on the ``clock_resumed`` event)."""

    since: datetime
    until: datetime | None = None
    business_seconds: int = 0
    moved: frozenset[str] = frozenset()


def _aware(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if isinstance(value, str) and value:
        try:
            at = datetime.fromisoformat(value)
        except ValueError:
            return None
        return at if at.tzinfo is not None else at.replace(tzinfo=UTC)
    return None


def pauses_from_events(events: Iterable[tuple[str, dict, datetime]], paused_at: datetime | None = None) -> list[Pause]:
    """The pauses of a case from its history (``(kind, detail, created_at)`` in order) and, when it is
    paused now, the pause that still lasts (``paused_at``), oldest first."""
    out: list[Pause] = []
    for kind, detail, at in events:
        if kind != "clock_resumed":
            continue
        since = _aware((detail or {}).get("paused_since"))
        if since is None:
            continue
        seconds = (detail or {}).get("paused_business_seconds") or 0
        moved = frozenset(k for k in detail if k.endswith("_due") and detail[k])
        out.append(Pause(since, at, int(seconds), moved))
    if paused_at is not None:
        out.append(Pause(paused_at, None))
    return out


def move_by_pauses(
    cal: BusinessCalendar,
    at: datetime | None,
    pauses: Iterable[Pause],
    *,
    answered_at: datetime | None = None,
    after: datetime | None = None,
) -> datetime | None:
    """``at`` moved on by every ended pause that began before it, as the pipeline did: a pause that
    ended at or before ``after`` (the follow-up's last answer) does not count, nor one that ended
    once ``answered_at`` had come (the first response stopped its clock)."""
    if at is None:
        return None
    for p in pauses:
        if p.until is None or p.business_seconds <= 0:
            continue
        if after is not None and p.until <= after:
            continue
        if answered_at is not None and answered_at <= p.until:
            continue
        if at > p.since:
            at = add_business_time(cal, at, timedelta(seconds=p.business_seconds))
    return at


@dataclass(frozen=True)
class CaseClocks:
    """What the deadlines of a case are computed from (columns of the ticket)."""

    queue: str
    severity: str | None
    answer_to: str
    created_at: datetime
    first_response_at: datetime | None = None
    last_answer_at: datetime | None = None
    paused_seconds: int = 0


@dataclass(frozen=True)
class Dues:
    """A case's customer and due times: as stored, or as the configuration makes them."""

    organisation: str | None
    contract: str | None
    first_response_due: datetime | None
    resolution_due: datetime | None
    update_due: datetime | None

    def values(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in FIELDS}

    def changed(self, other: Dues) -> list[str]:
        return [f for f in FIELDS if getattr(self, f) != getattr(other, f)]


def dues_for(deadlines: Deadlines, case: CaseClocks, pauses: list[Pause]) -> Dues:
    """What the current configuration makes of ``case`` (see the module docstring)."""
    customer = deadlines.customer(case.queue, case.answer_to)
    level = deadlines.level(case.queue, case.severity)
    cal = deadlines.calendar(case.queue, customer.organisation)
    if level is None or cal is None or not customer.promised:
        return Dues(customer.organisation, customer.contract, None, None, None)
    ended = [p for p in pauses if p.until is not None]
    replay = sum(p.business_seconds for p in ended) == case.paused_seconds
    base = deadlines.for_level(
        case.queue, level.key, case.created_at, customer, paused_seconds=0 if replay else case.paused_seconds
    )
    first, resolution = base.first_response_due, base.resolution_due
    if replay:
        first = move_by_pauses(cal, first, ended, answered_at=case.first_response_at)
        resolution = move_by_pauses(cal, resolution, ended)
    update = None
    start = case.last_answer_at or case.first_response_at
    if start is not None and level.follow_up is not None:
        update = due(cal, start, level.follow_up)
        if replay:
            update = move_by_pauses(cal, update, ended, after=start)
    return Dues(customer.organisation, customer.contract, first, resolution, update)


# -- the command ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    case_number: str
    old: Dues
    new: Dues
    tz: ZoneInfo | None

    @property
    def fields(self) -> list[str]:
        return self.old.changed(self.new)

    def describe(self) -> str:
        """``C1000002  first_response_due Mon 2026-11-23 10:00 CET → Mon 2026-11-23 12:00 CET``"""
        old, new, tz = self.old, self.new, self.tz
        parts = [f"{f} {_show(getattr(old, f), tz)} → {_show(getattr(new, f), tz)}" for f in self.fields]
        return f"{self.case_number}  " + "; ".join(parts)


@dataclass
class Report:
    dry_run: bool = False
    visited: int = 0
    changes: list[Change] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    without_clocks: int = 0  # archived cases left without clocks

    def lines(self) -> list[str]:
        out = [c.describe() for c in self.changes]
        out += [f"warning: {w}" for w in self.warnings]
        if self.without_clocks:
            out.append(f"{self.without_clocks} case(s) from an archive import left without clocks")
        verb = "would change" if self.dry_run else "changed"
        summary = f"{len(self.changes)} of {self.visited} active case{'s' if self.visited != 1 else ''} {verb}"
        out.append(summary + (" (dry run: nothing was written)" if self.dry_run else ""))
        return out


_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def _show(value: Any, tz: ZoneInfo | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        local = value.astimezone(tz or UTC)
        return f"{_WEEKDAYS[local.weekday()]} {local:%Y-%m-%d %H:%M} {local.tzname()}"
    return str(value)


def _json(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def recompute(
    *,
    settings: Settings,
    deadlines: Deadlines,
    escalations,
    session_factory,
    now: datetime,
    dry_run: bool = False,
    batch: int = BATCH,
) -> Report:
    """Apply the current configuration to every case that is not solved or closed (module
    docstring); ``escalations`` (``sla.escalation.Escalations``) stores each case's next escalation
    time again. With ``dry_run`` nothing is written (``escalations`` may then be None)."""
    report = Report(dry_run=dry_run)
    queues = {q.name for q in settings.queues}
    last_id = 0
    while True:
        with session_scope(session_factory) as s:
            # Locked unless dry: the pipeline locks a case's row while a mail changes it
            # (PostgreSQL): neither may overwrite what the other just wrote.
            rows = sq.cases_after(s, last_id, batch, except_status=FINISHED, lock=not dry_run)
            if not rows:
                break
            history = sq.events_by_ticket(s, [r.id for r in rows], (*PAUSE_EVENTS, CLOCKS_NOT_STARTED))
            for r in rows:
                if _without_clocks(r, history[r.id]):
                    report.visited += 1
                    report.without_clocks += 1
                    continue
                _one(s, r, history[r.id], queues, deadlines, escalations, now, report)
        last_id = rows[-1].id
        if len(rows) < batch:
            break
    log.info("sla_recomputed", visited=report.visited, changed=len(report.changes), dry_run=dry_run)
    return report


def _without_clocks(r, history) -> bool:
    """A case opened from an archive whose clocks no live mail has started: it stays without clocks
    (its deadlines, counted from its original date, passed long before it reached mailbridge)."""
    return any(kind == CLOCKS_NOT_STARTED for kind, _, _ in history) and not (
        r.first_response_due or r.resolution_due or r.update_due
    )


def _one(s, r, history, queues: set[str], deadlines: Deadlines, escalations, now: datetime, report: Report) -> None:
    report.visited += 1
    case = CaseClocks(
        queue=r.queue,
        severity=r.severity,
        answer_to=r.reply_to or r.requester_email,
        created_at=r.created_at,
        first_response_at=r.first_response_at,
        last_answer_at=r.update_started_at or r.first_response_at,
        paused_seconds=r.paused_seconds or 0,
    )
    if r.queue not in queues:
        report.warnings.append(f"{r.case_number}: queue {r.queue!r} is not configured; its deadlines are dropped")
    elif r.severity is not None and deadlines.scheme(r.queue) and deadlines.level(r.queue, r.severity) is None:
        report.warnings.append(
            f"{r.case_number}: severity {r.severity!r} is not a level of queue {r.queue}'s scheme; no deadlines"
        )
    old = Dues(r.organisation, r.contract, r.first_response_due, r.resolution_due, r.update_due)
    new = dues_for(deadlines, case, pauses_from_events(history, r.paused_at))
    fields = old.changed(new)
    if fields:
        cal = deadlines.calendar(r.queue, new.organisation) or deadlines.calendar(r.queue, old.organisation)
        report.changes.append(Change(r.case_number, old, new, cal.tz if cal is not None else None))
    if report.dry_run:
        return
    if fields:
        repo.update_row(s, Ticket, r.id, {f: getattr(new, f) for f in fields})
        repo.insert_row(
            s,
            Event,
            {
                "ticket_id": r.id,
                "kind": "sla_recomputed",
                "detail": {
                    "old": {f: _json(getattr(old, f)) for f in fields},
                    "new": {f: _json(getattr(new, f)) for f in fields},
                },
                "created_at": now,
            },
        )
        log.info("case_sla_recomputed", case=r.case_number, fields=fields)
    # Also when nothing above changed: the escalation ladders may have.
    escalations.refresh(s, r.id, now)
