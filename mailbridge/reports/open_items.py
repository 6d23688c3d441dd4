"""``mailbridge report open-items``: every case still to be worked on (new, open, pending), across
queues, in working order, with its age, its SLA state, its next deadline and the last customer and
agent activity.

The SLA state of an open case (:func:`sla_state`) is decided from its running clocks
(``sla.clock.running_clocks``, the escalation job's view): **overdue** when a running clock's due
time has passed (by how much: the longest), else **at risk** when a warning stage of the case's
severity level (a stage below 100 %) has been reached on a running clock, else **on time**; a case
whose clocks stand still is **paused**, one without running clocks **no deadline**.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from babel.dates import format_timedelta

from mailbridge.reports.common import Clocks, check_filters, report_zone
from mailbridge.reports.model import Field, Report, Table
from mailbridge.sla.clock import ClockFacts, running_clocks, stage_time
from mailbridge.store import report_queries as rq
from mailbridge.store.db import session_scope

ON_TIME, AT_RISK, OVERDUE, PAUSED, NO_DEADLINE = "on time", "at risk", "overdue", "paused", "no deadline"


@dataclass(frozen=True)
class SlaState:
    state: str  # ON_TIME | AT_RISK | OVERDUE | PAUSED | NO_DEADLINE
    overdue_by: timedelta | None  # OVERDUE: the longest overdue clock's lateness
    next_due: datetime | None  # the earliest due time of a running clock
    next_clock: str | None  # its name (first_response, update, resolution)

    def describe(self) -> str:
        if self.state == OVERDUE and self.overdue_by is not None:
            return f"overdue by {format_timedelta(self.overdue_by, locale='en', threshold=1.1)}"
        return self.state


def sla_state(app, row, now: datetime) -> SlaState:
    """The SLA state of an open case at ``now`` (the module docstring): the one place that decides
    on time / at risk / overdue for reports."""
    if row.paused_at is not None:
        return SlaState(PAUSED, None, None, None)
    facts = ClockFacts(
        status=row.status,
        created_at=row.created_at,
        first_response_at=row.first_response_at,
        first_response_due=row.first_response_due,
        update_due=row.update_due,
        last_answer_at=row.update_started_at,
        resolution_due=row.resolution_due,
        paused_at=row.paused_at,
        paused_seconds=row.paused_seconds or 0,
    )
    runs = running_clocks(facts)
    if not runs:
        return SlaState(NO_DEADLINE, None, None, None)
    nxt = min(runs, key=lambda r: r.due)
    late = [now - r.due for r in runs if r.due <= now]
    if late:
        return SlaState(OVERDUE, max(late), nxt.due, nxt.clock.value)
    level = app.deadlines.level(row.queue, row.severity)
    cal = app.deadlines.calendar(row.queue, row.organisation)
    if level is not None and cal is not None:
        warnings = [st for st in level.stages if st.at < 100]
        for run in runs:
            if warnings and run.start <= now and stage_time(cal, run, min(st.at for st in warnings)) <= now:
                return SlaState(AT_RISK, None, nxt.due, nxt.clock.value)
    return SlaState(ON_TIME, None, nxt.due, nxt.clock.value)


FIELDS = [
    Field("CASE"),
    Field("QUEUE", optional=6),
    Field("STATUS"),
    Field("SEV"),
    Field("ASSIGNEE", ratio=1, min_width=8, optional=4),
    Field("CONTRACT / ORGANISATION", ratio=2, min_width=10, optional=5),
    Field("AGE BUSINESS", "hours"),
    Field("AGE CALENDAR", "hours", optional=3),
    Field("SLA"),
    Field("NEXT DEADLINE", "time"),
    Field("NEXT CLOCK", optional=2),
    Field("LAST CUSTOMER", "time", optional=1),
    Field("LAST AGENT", "time", optional=1),
    Field("SUBJECT", ratio=3, min_width=12),
]


def build(app, params: dict, now: datetime) -> Report:
    check_filters(app, params)
    queue, org, sev = params.get("queue"), params.get("organisation"), params.get("severity")
    tz = report_zone(app, params)
    clocks = Clocks(app)
    with session_scope(app.session_factory) as s:
        cases = rq.open_cases(s, queue, org, sev)
        activity = rq.last_activity(s, queue, org, sev)
    order = {}
    for q in app.settings.queues:
        order[q.name] = {k: i for i, k in enumerate(app.settings.severity_levels(q))}

    def working_order(r):
        ranks = order.get(r.queue, {})
        sev_rank = len(ranks) + 1 if r.severity is None else ranks.get(r.severity, len(ranks))
        return (r.contract is None, sev_rank, r.created_at, r.id)

    rows = []
    counts = {ON_TIME: 0, AT_RISK: 0, OVERDUE: 0, PAUSED: 0, NO_DEADLINE: 0}
    for r in sorted(cases, key=working_order):
        st = sla_state(app, r, now)
        counts[st.state] += 1
        cust, agent = activity.get(r.id, (None, None))
        rows.append(
            (
                r.case_number,
                r.queue,
                r.status,
                r.severity or "-",
                r.assignee or "-",
                f"{r.contract or '-'} / {r.organisation or '-'}",
                clocks.hours(r.queue, r.organisation, r.created_at, now),
                (now - r.created_at).total_seconds() / 3600,
                st.describe(),
                st.next_due,
                st.next_clock or "-",
                cust,
                agent,
                r.subject,
            )
        )
    filters = ", ".join(f"{k} {params[k]}" for k in ("queue", "organisation", "severity") if params.get(k))
    summary = f"Open items: {len(rows)} open, {counts[OVERDUE]} overdue, {counts[AT_RISK]} at risk" + (
        f" ({filters})" if filters else ""
    )
    notes = [
        f"{len(rows)} open cases: {counts[OVERDUE]} overdue, {counts[AT_RISK]} at risk, {counts[ON_TIME]} on time, "
        f"{counts[PAUSED]} paused, {counts[NO_DEADLINE]} without deadline" + (f"; {filters}" if filters else ""),
        f"as of {now.astimezone(tz).strftime('%Y-%m-%d %H:%M %Z')}; times in {getattr(tz, 'key', tz)}; "
        "age in business hours (the case's calendar) and calendar hours",
    ]
    return Report(
        "open-items",
        "Open items",
        tz,
        notes=notes,
        tables=[Table("Open items", FIELDS, rows)],
        summary=summary,
        generated=now,
    )
