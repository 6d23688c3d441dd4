"""The text of ``mailbridge sla explain C1234567``: how each deadline of a case was computed.

It states the case (queue, level, organisation and contract), the calendar the deadlines count in,
and for every clock the target, the start, one line per local day of the span (the open intervals
counted and their hours, or why the day counted none: weekend, public holiday, closed date, special
hours), the pauses that moved it, the due time as stored, and whether it was met, is running or is
overdue at ``now``. Times are shown in the calendar's zone.

Pure: it takes the case's columns, its history, what the configuration says (:class:`Terms`, see
:func:`terms_of`) and ``now``; the caller reads the database (``views.sla_explanation``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from mailbridge.sla.calendar import BusinessCalendar, business_time_between, explain, next_opening, open_intervals
from mailbridge.sla.clock import ClockName
from mailbridge.sla.deadlines import Deadlines
from mailbridge.sla.policy import SeverityLevel, Target, TargetKind, due
from mailbridge.sla.recompute import Dues, Pause, pauses_from_events

WEEKDAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
# A span longer than this many days (a target of months) is summarised after the first days.
MAX_DAY_LINES = 62
# The stored column of each clock's due time (also the key a clock_resumed event names it by).
DUE_COLUMNS = {
    ClockName.FIRST_RESPONSE: "first_response_due",
    ClockName.RESOLUTION: "resolution_due",
    ClockName.UPDATE: "update_due",
}


@dataclass(frozen=True)
class CaseFacts:
    """The columns of a case that its deadlines depend on."""

    case_number: str
    subject: str
    queue: str
    status: str
    created_at: datetime
    severity: str | None = None
    organisation: str | None = None
    contract: str | None = None
    first_response_due: datetime | None = None
    first_response_at: datetime | None = None
    resolution_due: datetime | None = None
    solved_at: datetime | None = None
    update_due: datetime | None = None
    last_answer_at: datetime | None = None
    paused_at: datetime | None = None
    paused_seconds: int = 0


@dataclass(frozen=True)
class Terms:
    """What the configuration says about a case: its level, calendar and promise."""

    level: SeverityLevel | None
    calendar: BusinessCalendar | None
    calendar_name: str | None = None
    # Whose calendar it is: "queue support" or "organisation Kunde GmbH".
    calendar_owner: str | None = None
    promised: bool = True
    contract_required: bool = False
    has_scheme: bool = True


def terms_of(deadlines: Deadlines, queue: str, severity: str | None, organisation: str | None, contract: str | None):
    """The :class:`Terms` of a case with the stored level, organisation and contract."""
    q = deadlines.queues.get(queue)
    org = deadlines.settings.organisation(organisation)
    return Terms(
        level=deadlines.level(queue, severity),
        calendar=deadlines.calendar(queue, organisation),
        calendar_name=deadlines.calendar_name(queue, organisation),
        calendar_owner=f"organisation {organisation}" if org is not None and org.calendar else f"queue {queue}",
        promised=deadlines.customer_of(queue, organisation, contract).promised,
        contract_required=q is not None and q.contract_required,
        has_scheme=deadlines.scheme(queue) is not None,
    )


# -- formatting -----------------------------------------------------------------------------------


def fmt_at(at: datetime, tz: ZoneInfo | None) -> str:
    """``Mon 2026-11-23 10:00 CET``"""
    local = at.astimezone(tz or UTC)
    return f"{WEEKDAY_NAMES[local.weekday()]} {local:%Y-%m-%d %H:%M} {local.tzname()}"


def fmt_hours(d: timedelta) -> str:
    """Business time as hours and minutes: ``2:00``, ``31:30``."""
    minutes = round(d.total_seconds() / 60)
    return f"{minutes // 60}:{minutes % 60:02d}"


def fmt_wall(d: timedelta) -> str:
    """Wall-clock time: ``3:00``, ``2 days 3:00``."""
    minutes = round(d.total_seconds() / 60)
    days, rest = divmod(minutes, 24 * 60)
    hm = f"{rest // 60}:{rest % 60:02d}"
    return f"{days} day{'s' if days != 1 else ''} {hm}" if days else hm


def _intervals(intervals) -> str:
    return ", ".join(f"{s // 60:02d}:{s % 60:02d}-{e // 60:02d}:{e % 60:02d}" for s, e in intervals) or "closed"


def describe_calendar(cal: BusinessCalendar) -> str:
    """``Europe/Berlin, public holidays DE-NW, Mon-Fri 08:00-17:00, Sat-Sun closed``"""
    parts = [cal.tz.key]
    if cal.always_open:
        return f"{cal.tz.key}, open around the clock (every hour counts)"
    if cal.country:
        parts.append(f"public holidays {cal.country}" + (f"-{cal.subdivision}" if cal.subdivision else ""))
    else:
        parts.append("no public holidays")
    runs: list[list] = []
    for i, hours in enumerate(cal.weekly):
        if runs and runs[-1][2] == hours:
            runs[-1][1] = i
        else:
            runs.append([i, i, hours])
    for a, b, hours in runs:
        days = WEEKDAY_NAMES[a] + (f"-{WEEKDAY_NAMES[b]}" if b > a else "")
        parts.append(f"{days} {_intervals(hours)}")
    closed = [d.isoformat() for d in sorted(cal.closed_dates)]
    closed += [f"every {m:02d}-{d:02d}" for m, d in sorted(cal.closed_yearly)]
    if closed:
        parts.append("closed " + ", ".join(closed))
    special = [f"{d.isoformat()} {_intervals(h)}" for d, h in cal.special]
    special += [f"every {m:02d}-{d:02d} {_intervals(h)}" for (m, d), h in cal.special_yearly]
    if special:
        parts.append("special hours " + ", ".join(special))
    return ", ".join(parts)


def _hm(at: datetime, tz: ZoneInfo, day: date) -> str:
    local = at.astimezone(tz)
    return "24:00" if local.date() > day else f"{local:%H:%M}"


def _minus(lo: datetime, hi: datetime, holes: list[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    """[lo, hi) without the ``holes`` (sorted, not overlapping)."""
    out, at = [], lo
    for a, b in holes:
        if b <= at or a >= hi:
            continue
        if a > at:
            out.append((at, a))
        at = max(at, b)
    if at < hi:
        out.append((at, hi))
    return out


def _skipped(day: date, note: str) -> str:
    """Why a day counts no or other time, as an operator reads it."""
    if note.startswith("holiday: "):
        return "public holiday: " + note.removeprefix("holiday: ")
    if note.startswith("no hours on"):
        return "weekend" if day.weekday() >= 5 else f"no opening hours on {WEEKDAY_NAMES[day.weekday()]}"
    return note


# -- one clock ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Clock:
    name: ClockName
    target: Target | None
    start: datetime
    start_label: str
    due: datetime | None
    stopped: datetime | None  # the answer or the solution that stopped it
    stopped_label: str


def _days(cal: BusinessCalendar, clock: _Clock, pauses: list[Pause]) -> list[str]:
    """One line per local day of [start, due): the open intervals counted and their hours."""
    assert clock.due is not None and clock.target is not None
    tz = cal.tz
    column = DUE_COLUMNS[clock.name]
    holes = sorted((p.since, p.until) for p in pauses if p.until is not None and column in p.moved)
    by_days = clock.target.kind == TargetKind.BUSINESS_DAYS
    begin = next_opening(cal, clock.start).astimezone(tz).date() if by_days else None
    ordinal = 0
    total = timedelta(0)
    lines: list[str] = []
    days = explain(cal, clock.start, clock.due) if clock.due > clock.start else []
    for n, dc in enumerate(days):
        counted, paused, pieces = timedelta(0), timedelta(0), []
        for a, b in open_intervals(cal, dc.day):
            lo, hi = max(a, clock.start), min(b, clock.due)
            if hi <= lo:
                continue
            kept = _minus(lo, hi, holes)
            pieces += kept
            got = sum((y - x for x, y in kept), timedelta(0))
            counted += got
            paused += (hi - lo) - got
        total += counted
        notes = [_skipped(dc.day, dc.note)] if dc.note else []
        if paused:
            notes.append(f"paused {fmt_hours(paused)}")
        if begin is not None and cal.hours_on(dc.day):
            if dc.day == begin:
                notes.append("start")
            elif dc.day > begin and ordinal < clock.target.amount:
                ordinal += 1
                notes.append(f"business day {ordinal}")
        if not counted and not notes:
            notes.append("after hours" if n == 0 else "before opening" if n == len(days) - 1 else "nothing counted")
        if n < MAX_DAY_LINES:
            spans = ", ".join(f"{_hm(x, tz, dc.day)}-{_hm(y, tz, dc.day)}" for x, y in pieces) or "-"
            lines.append(
                f"    {WEEKDAY_NAMES[dc.day.weekday()]} {dc.day.isoformat()}  {spans:<24} {fmt_hours(counted):>6}"
                + (f"  {'; '.join(notes)}" if notes else "")
            )
    if len(days) > MAX_DAY_LINES:
        rest = sum((d.counted for d in days[MAX_DAY_LINES:]), timedelta(0))
        lines.append(f"    … {len(days) - MAX_DAY_LINES} more days ({fmt_hours(rest)} open time)")
    summary = f"{fmt_hours(total)} counted"
    if clock.target.kind == TargetKind.BUSINESS_HOURS:
        # Differs only when the stored due time is not what the target gives (see the note below it).
        same = total == timedelta(hours=clock.target.amount)
        summary += f" = {clock.target.describe()}" if same else f" (the target is {clock.target.describe()})"
    lines.append(f"    {'':<39} {'=' * 6}  {summary}")
    return lines


def _verdict(cal: BusinessCalendar, clock: _Clock, case: CaseFacts, now: datetime) -> str:
    assert clock.due is not None
    tz = cal.tz

    def late(a: datetime, b: datetime) -> str:
        return f"{fmt_hours(business_time_between(cal, a, b))} business time ({fmt_wall(b - a)} on the clock)"

    if clock.stopped is not None:
        when = f"{clock.stopped_label} {fmt_at(clock.stopped, tz)}"
        if clock.stopped <= clock.due:
            ahead = business_time_between(cal, clock.stopped, clock.due)
            return f"met: {when}, in time ({fmt_hours(ahead)} business time before the due time)"
        return f"missed: {when}, late by {late(clock.due, clock.stopped)}"
    if case.status in ("solved", "closed"):
        return f"stopped: the case is {case.status}" + (
            f" (solved {fmt_at(case.solved_at, tz)})" if case.solved_at else ""
        )
    if case.paused_at is not None:
        return (
            f"paused since {fmt_at(case.paused_at, tz)} (the case waits for the customer): the clock stands "
            "still; the due time moves on by the business time paused when the case becomes active again"
        )
    if clock.name == ClockName.UPDATE and case.status not in ("new", "open"):
        return f"stands still while the case is {case.status}"
    if now < clock.due:
        left = business_time_between(cal, now, clock.due)
        return f"running: {fmt_hours(left)} business time ({fmt_wall(clock.due - now)} on the clock) left at now"
    return f"OVERDUE by {late(clock.due, now)} at now"


def _clock_lines(
    cal: BusinessCalendar, clock: _Clock, case: CaseFacts, pauses: list[Pause], expected: Dues | None, now: datetime
) -> list[str]:
    tz = cal.tz
    label = clock.name.label("en")
    if clock.target is None:
        return [f"{label}: the level has no {label} target"]
    out = [f"{label}: {clock.target.describe()} from {clock.start_label}, {fmt_at(clock.start, tz)}"]
    if clock.due is None:
        out.append("  no due time is stored (`mailbridge sla recompute` computes it from today's configuration)")
        return out
    if clock.target.kind == TargetKind.CALENDAR_HOURS:
        out.append(
            f"  calendar time: every hour counts, also outside the opening hours: {fmt_at(clock.start, tz)} + "
            f"{clock.target.describe()} = {fmt_at(due(cal, clock.start, clock.target), tz)} ({tz.key} wall clock)"
        )
    elif clock.target.kind == TargetKind.BUSINESS_DAYS:
        out.append(
            f"  business days: the same time of day on business day {clock.target.amount:g} after the start "
            "(a start outside the hours counts from the next opening)"
        )
    column = DUE_COLUMNS[clock.name]
    for p in pauses:
        if p.until is not None and column in p.moved:
            out.append(
                f"  paused {fmt_at(p.since, tz)} → {fmt_at(p.until, tz)}: "
                f"moved the due time on by {fmt_hours(timedelta(seconds=p.business_seconds))} business time"
            )
    if clock.target.kind != TargetKind.CALENDAR_HOURS:
        out += _days(cal, clock, pauses)
    out.append(f"  due {fmt_at(clock.due, tz)} (as stored)")
    config_due = getattr(expected, column) if expected is not None else None
    if expected is not None and config_due != clock.due:
        gives = fmt_at(config_due, tz) if config_due is not None else "no due time"
        out.append(f"  note: today's configuration gives {gives}; `mailbridge sla recompute` applies it")
    out.append("  " + _verdict(cal, clock, case, now))
    return out


# -- the whole case -------------------------------------------------------------------------------


def _level_history(events: list[tuple[str, dict, datetime]], tz: ZoneInfo | None) -> list[str]:
    out = []
    for kind, detail, at in events:
        if kind == "severity_set":
            how = detail.get("by") or "?"
            words = f' ("{detail["words"]}")' if detail.get("words") else ""
            out.append(f"set to {detail.get('new')} by {how}{words} {fmt_at(at, tz)}")
        elif kind == "severity_changed":
            out.append(f"changed {detail.get('old')} → {detail.get('new')} by {detail.get('by')} {fmt_at(at, tz)}")
    return out


def explain_case(
    case: CaseFacts,
    terms: Terms,
    events: list[tuple[str, dict, datetime]],
    now: datetime,
    expected: Dues | None = None,
) -> str:
    """The explanation of ``case``'s deadlines (module docstring).

    Args:
        case: the case's columns.
        terms: what the configuration says about it (:func:`terms_of`).
        events: its history as ``(kind, detail, created_at)``, oldest first (pauses, level changes).
        now: the time "running" and "overdue" refer to.
        expected: what today's configuration makes of it (``recompute.dues_for``); a due time that
            differs from the stored one is pointed out.
    """
    cal = terms.calendar
    tz = cal.tz if cal is not None else None
    level = terms.level
    out = [f"{case.case_number}  {case.subject}"]
    out.append(f"case:      queue {case.queue}, status {case.status}, created {fmt_at(case.created_at, tz)}")
    if level is not None:
        labels = level.label_en if level.label_en == level.label_de else f"{level.label_en} / {level.label_de}"
        out.append(f"severity:  {level.key} ({labels})")
    elif case.severity is not None:
        out.append(f"severity:  {case.severity} (not a level of the queue's severity scheme: no targets)")
    else:
        out.append("severity:  none" + ("" if terms.has_scheme else " (the queue has no severity scheme)"))
    for line in _level_history(events, tz):
        out.append(f"           {line}")
    who = f"organisation {case.organisation}" if case.organisation else "no organisation"
    if case.contract:
        out.append(f"customer:  {who}, contract {case.contract}")
    elif not terms.promised:
        out.append(f"customer:  {who}, no contract: no promise (the queue requires a contract)")
    else:
        out.append(f"customer:  {who}, no contract (the queue does not require one)")
    if cal is not None:
        out.append(f"calendar:  {terms.calendar_name}, named by {terms.calendar_owner}: {describe_calendar(cal)}")
    else:
        out.append("calendar:  none (the queue names no calendar): no deadlines")
    out.append(f"now:       {fmt_at(now, tz)}")

    pauses = pauses_from_events(events, case.paused_at)
    if pauses:
        out.append("pauses:")
        for p in pauses:
            if p.until is None:
                out.append(f"  since {fmt_at(p.since, tz)}: still paused")
                continue
            moved = [n.label("en") for n, col in DUE_COLUMNS.items() if col in p.moved]
            out.append(
                f"  {fmt_at(p.since, tz)} → {fmt_at(p.until, tz)}: "
                f"{fmt_hours(timedelta(seconds=p.business_seconds))} business time paused; "
                + (f"moved {', '.join(moved)}" if moved else "no due time was ahead: none moved")
            )
        out.append(f"  {fmt_hours(timedelta(seconds=case.paused_seconds))} business time paused in all")

    if cal is None or level is None or not terms.promised:
        reason = (
            "no contract, no promise" if not terms.promised else "no calendar" if cal is None else "no severity level"
        )
        out += ["", f"no deadlines: {reason}"]
        return "\n".join(out)

    follow_start = case.last_answer_at or case.first_response_at
    clocks = [
        _Clock(
            ClockName.FIRST_RESPONSE,
            level.first_response,
            case.created_at,
            "the creation",
            case.first_response_due,
            case.first_response_at,
            "answered",
        ),
        _Clock(
            ClockName.RESOLUTION,
            level.resolution,
            case.created_at,
            "the creation",
            case.resolution_due,
            case.solved_at if case.status in ("solved", "closed") else None,
            "solved",
        ),
    ]
    if case.update_due is not None and follow_start is not None:
        clocks.append(
            _Clock(ClockName.UPDATE, level.follow_up, follow_start, "the last answer", case.update_due, None, "")
        )
    for clock in clocks:
        out.append("")
        out += _clock_lines(cal, clock, case, pauses, expected, now)
    if case.update_due is None and level.follow_up is not None:
        out += ["", f"follow-up: {level.follow_up.describe()} after each answer to the customer; not started yet"]
    if expected is not None and (expected.organisation, expected.contract) != (case.organisation, case.contract):
        out += [
            "",
            f"note: today's configuration makes the customer {expected.organisation or 'no organisation'}, "
            f"contract {expected.contract or 'none'}; `mailbridge sla recompute` applies it",
        ]
    return "\n".join(out)
