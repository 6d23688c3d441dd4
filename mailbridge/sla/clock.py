"""The SLA clocks of a case and their escalation ladders, as pure functions (no clock, no database).

A case has up to three **clocks**, each with a start and a due time; one never moves another:

- ``first_response``: from the case's creation until an agent's answer reaches the customer;
- ``update`` (the follow-up cadence, seed 002 "täglich verfolgt"): from the last answer to the
  customer until the next one is due; it runs only while the case is new or open;
- ``resolution``: from the creation until the case is solved.

No clock runs while the case is solved or closed, or while it is paused (pending, when the queue
pauses). A clock whose answer came in time simply stops: a case answered in time is never
escalated.

Each running clock walks the level's **ladder**: a stage at ``p`` % fires when ``p`` % of the
clock's business time (from start to due, on the case's calendar) has passed; 100 % is the due time
itself, the breach. After the breach the breach stage is repeated at the level's re-escalation
cadence. A stage that is not urgent is held back while the calendar is closed and goes at the next
opening (an instant at the very close of a day still counts as open: the recipients are there).

**Catching up** (after downtime, or when one run of the job covers several stages): of the stages of
a clock whose time has come, only the latest on the ladder is sent; the earlier ones are superseded
(a 50 % warning after the breach tells nobody anything). Every stage has a key (case, clock, due
time, stage), so it is sent at most once per case and deadline; a new due time (a new follow-up
period, a severity change) starts a new ladder.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from mailbridge.sla.calendar import BusinessCalendar, add_business_time, business_time_between, next_opening
from mailbridge.sla.policy import Recipients, SeverityLevel, Stage, Target, due

# How many re-escalations one deadline gets at most (the settings ask for a cadence of at least a
# quarter of an hour: that is more than three months of quarter-hourly reminders).
MAX_REPEATS = 10_000


class ClockName(enum.StrEnum):
    FIRST_RESPONSE = "first_response"
    UPDATE = "update"
    RESOLUTION = "resolution"

    def label(self, language: str) -> str:
        return CLOCK_LABELS[language if language in CLOCK_LABELS else "en"][self.value]


CLOCK_LABELS = {
    "de": {"first_response": "Erstreaktion", "update": "Zwischenstand", "resolution": "Lösung"},
    "en": {"first_response": "first response", "update": "follow-up", "resolution": "resolution"},
}


@dataclass(frozen=True)
class Running:
    """A clock that runs: it started at ``start`` and falls due at ``due``."""

    clock: ClockName
    start: datetime
    due: datetime
    # Business time the case stood still before the due time (its pauses): the stages are counted
    # from start + shift, so a pause delays the warnings as it delayed the due time.
    shift: timedelta = timedelta(0)
    # What identifies this clock's period in the outbox keys (its start and level): a pause that
    # moves the due time keeps it, so a stage sent before the pause is not sent again after it.
    period: str = ""


@dataclass(frozen=True)
class Firing:
    """One stage of one clock: when it goes out and to whom."""

    clock: ClockName
    rank: int  # its place on the ladder: the stages in order, then the re-escalations
    stage: Stage
    at: datetime  # when it goes out (held to the next opening unless urgent)
    due: datetime
    repeat: int = 0  # 0: a stage of the ladder; n: the n-th re-escalation after the breach
    period: str = ""

    @property
    def name(self) -> str:
        return f"re-escalation {self.repeat}" if self.repeat else self.stage.name

    def key(self, ticket_id: int) -> str:
        """The outbox key: each stage once per case, clock and period (start and level; without a
        period: the due time)."""
        return f"esc:{ticket_id}:{self.clock.value}:{self.period or self.due.isoformat()}:{self.name}"

    @property
    def breached(self) -> bool:
        return self.repeat > 0 or self.stage.is_breach


@dataclass(frozen=True)
class ClockFacts:
    """What the clocks of a case depend on (columns of the ticket)."""

    status: str
    created_at: datetime
    first_response_at: datetime | None
    first_response_due: datetime | None
    update_due: datetime | None
    last_answer_at: datetime | None
    resolution_due: datetime | None
    paused_at: datetime | None
    paused_seconds: int = 0


def running_clocks(f: ClockFacts) -> list[Running]:
    """The clocks that run now (see the module docstring)."""
    if f.paused_at is not None or f.status in ("solved", "closed"):
        return []
    out = []
    paused = timedelta(seconds=f.paused_seconds)
    if f.first_response_due is not None and f.first_response_at is None:
        out.append(Running(ClockName.FIRST_RESPONSE, f.created_at, f.first_response_due, paused))
    if f.update_due is not None and f.status in ("new", "open"):
        out.append(Running(ClockName.UPDATE, f.last_answer_at or f.first_response_at or f.created_at, f.update_due))
    if f.resolution_due is not None:
        out.append(Running(ClockName.RESOLUTION, f.created_at, f.resolution_due, paused))
    return out


def _in_hours(cal: BusinessCalendar, at: datetime) -> bool:
    """Open at ``at``, or ``at`` is the very instant of a close."""
    return cal.is_open(at) or cal.is_open(at - timedelta(microseconds=1))


def _held(cal: BusinessCalendar, at: datetime, urgent: bool) -> datetime:
    return at if urgent or _in_hours(cal, at) else next_opening(cal, at)


def _span(cal: BusinessCalendar, run: Running) -> tuple[datetime, timedelta]:
    """Where a clock's stages are counted from (its start, moved by its pauses) and how much open
    time lies between there and the due time."""
    start = min(add_business_time(cal, run.start, run.shift), run.due) if run.shift else run.start
    return start, business_time_between(cal, start, run.due) if run.due > start else timedelta(0)


def stage_time(
    cal: BusinessCalendar, run: Running, at_percent: float, span: tuple[datetime, timedelta] | None = None
) -> datetime:
    """When ``at_percent`` % of the clock's business time has passed (100: the due time).
    ``span``: ``_span(cal, run)`` when the caller has it already."""
    if at_percent == 100:
        return run.due
    start, total = span or _span(cal, run)
    if total <= timedelta(0):
        # No open time between start and due (a wall-clock target over a weekend): the warning
        # stages fall on the start, the late ones on the due time.
        return start if at_percent < 100 else run.due
    return add_business_time(cal, start, total * (at_percent / 100))


@dataclass(frozen=True)
class Plan:
    """What a clock's ladder asks for at ``now``: the stage to send (if any) and when to look again."""

    send: Firing | None
    next_at: datetime | None


def plan(
    cal: BusinessCalendar,
    run: Running,
    stages: tuple[Stage, ...],
    repeat: Target | None,
    now: datetime,
    hold: BusinessCalendar | None = None,
) -> Plan:
    """The stage of ``run``'s ladder that is due at ``now`` (the latest whose time has come) and the
    time of the next one. "Latest" is by the stage's own time (before holding back), so a stage
    beyond 100 % takes its place between the re-escalations. ``hold``: the recipients' calendar, which
    holds back stages that are not urgent (default: ``cal``, the case's)."""
    hold = hold or cal
    # (order key, time, ladder index, stage, repeat). The order key is the time, but never earlier
    # than an earlier rung's: when due lies before start, the breach still outranks the warnings.
    raw = []
    floor_at: datetime | None = None
    span = _span(cal, run)
    for i, st in enumerate(stages):
        at = stage_time(cal, run, st.at, span)
        floor_at = at if floor_at is None else max(floor_at, at)
        raw.append((floor_at, at, i, st, 0))
    breach_i = next((i for i, st in enumerate(stages) if st.at == 100), None)
    if breach_i is not None and repeat is not None:
        breach, key = stages[breach_i], raw[breach_i][0]
        # Only the last re-escalation whose time has come and the first still ahead matter.
        at, last = run.due, None
        for n in range(1, MAX_REPEATS + 1):
            at = due(cal, at, repeat)
            entry = (max(key, at), at, len(stages), breach, n)
            if _held(hold, at, breach.urgent) > now:
                raw.append(entry)
                break
            last = entry
        if last is not None:
            raw.append(last)
    raw.sort(key=lambda r: (r[0], r[2], r[4]))
    firings = [
        Firing(run.clock, rank, st, _held(hold, at, st.urgent), run.due, repeat=n, period=run.period)
        for rank, (_, at, _, st, n) in enumerate(raw)
    ]
    passed = [f for f in firings if f.at <= now]
    send = max(passed, key=lambda f: f.rank) if passed else None
    floor = send.rank if send is not None else -1
    return Plan(send=send, next_at=min((f.at for f in firings if f.rank > floor), default=None))


def next_escalation(
    cal: BusinessCalendar | None,
    facts: ClockFacts,
    level: SeverityLevel | None,
    now: datetime,
    hold: BusinessCalendar | None = None,
) -> tuple[list[Plan], datetime | None]:
    """The plans of every running clock of a case and the earliest time one of them wants the job."""
    if cal is None or level is None:
        return [], None
    plans = [
        plan(cal, replace(run, period=f"{run.start.isoformat()}/{level.key}"), level.stages, level.repeat, now, hold)
        for run in running_clocks(facts)
    ]
    return plans, min((p.next_at for p in plans if p.next_at is not None), default=None)


def recipients_of(stage: Stage) -> str:
    return stage.to.value if isinstance(stage.to, Recipients) else stage.to
