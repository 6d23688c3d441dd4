"""``mailbridge report sla``: SLA compliance of the cases opened in a period, per group (queue,
severity, organisation or agent) and per week or month — computed from the stored clocks only.

The rules (:func:`compliance`, the one place that decides them for reports):

- **first response met** when the first response came at or before its due time; **missed** when it
  came later, or has not come and the due time has passed. A case without a first-response due time
  (no promise) or whose clock still runs counts in neither; the % is met / (met + missed).
- **resolution** likewise, with the resolution as the time the case was solved (or closed, when it
  was closed without being solved) against its resolution due time (which already includes the
  paused time).
- **first-response time**: business hours on the case's calendar from its creation to the first
  response; **resolution time**: business hours from creation to the resolution, less the business
  time the case was paused. Median and p90 (linear interpolation, ``statistics.quantiles``
  inclusive) over the cases that have one.
- **backlog at the end of a period**: the cases (of the group) created before the period's end (or
  now, for the current period) that were neither solved nor closed then, by their current
  ``solved_at``/``closed_at`` (a case solved and reopened later counts as unresolved since its
  creation).
"""

from __future__ import annotations

import statistics
from bisect import bisect_left
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from mailbridge.reports import ReportError
from mailbridge.reports.common import (
    Clocks,
    check_filters,
    local_midnight,
    next_period,
    period_label,
    periods,
    report_zone,
    span,
)
from mailbridge.reports.model import Chart, Field, Report, Table
from mailbridge.store import report_queries as rq
from mailbridge.store.db import session_scope

GROUPS = ("queue", "severity", "organisation", "agent")
PERIODS = ("week", "month")
ALL = "(all)"
# The backlog-by-age chart's buckets: (label, upper bound of the age).
AGE_BUCKETS = (
    ("< 1 day", timedelta(days=1)),
    ("1-3 days", timedelta(days=3)),
    ("3-7 days", timedelta(days=7)),
    ("1-2 weeks", timedelta(days=14)),
    ("2-4 weeks", timedelta(days=28)),
    ("> 4 weeks", None),
)


@dataclass
class Tally:
    opened: int = 0
    fr_met: int = 0
    fr_missed: int = 0
    res_met: int = 0
    res_missed: int = 0
    fr_hours: list[float] = field(default_factory=list)
    res_hours: list[float] = field(default_factory=list)

    @staticmethod
    def share(met: int, missed: int) -> float | None:
        return met / (met + missed) if met + missed else None


def met(done: datetime | None, due: datetime | None, now: datetime) -> bool | None:
    """True: met; False: missed; None: counts in neither (no due time, or not yet due)."""
    if due is None:
        return None
    if done is not None:
        return done <= due
    return False if due <= now else None


def compliance(row, clocks: Clocks, now: datetime) -> tuple[bool | None, bool | None, float | None, float | None]:
    """(first response met?, resolution met?, first-response business hours, resolution business
    hours) of one case (module docstring)."""
    resolved = row.solved_at or row.closed_at
    fr_hours = res_hours = None
    if row.first_response_at is not None:
        fr_hours = clocks.hours(row.queue, row.organisation, row.created_at, row.first_response_at)
    if resolved is not None:
        h = clocks.hours(row.queue, row.organisation, row.created_at, resolved)
        if h is not None:
            res_hours = max(0.0, h - (row.paused_seconds or 0) / 3600)
    return (
        met(row.first_response_at, row.first_response_due, now),
        met(resolved, row.resolution_due, now),
        fr_hours,
        res_hours,
    )


def _group_of(row, by: str | None) -> str:
    if by is None:
        return ALL
    value = {"queue": row.queue, "severity": row.severity, "organisation": row.organisation, "agent": row.assignee}[by]
    return value or ("(unassigned)" if by == "agent" else "(none)")


def _median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def _p90(xs: list[float]) -> float | None:
    if not xs:
        return None
    if len(xs) == 1:
        return xs[0]
    return statistics.quantiles(xs, n=10, method="inclusive")[8]


FIELDS = [
    Field("PERIOD"),
    Field("GROUP", ratio=1, min_width=8),
    Field("OPENED", "int"),
    Field("FR MET", "int"),
    Field("FR MISSED", "int"),
    Field("FR MET", "pct"),
    Field("RES MET", "int"),
    Field("RES MISSED", "int"),
    Field("RES MET", "pct"),
    Field("FR MEDIAN", "hours", optional=2),
    Field("FR P90", "hours", optional=2),
    Field("RES MEDIAN", "hours", optional=1),
    Field("RES P90", "hours", optional=1),
    Field("BACKLOG AT END", "int"),
]


def build(app, params: dict, now: datetime) -> Report:
    check_filters(app, params)
    by = params.get("by") or None
    if by is not None and by not in GROUPS:
        raise ReportError(f"by: {by!r} is not one of {', '.join(GROUPS)}")
    period = params.get("period") or None
    if period is not None and period not in PERIODS:
        raise ReportError(f"period: {period!r} is not one of {', '.join(PERIODS)}")
    tz = report_zone(app, params)
    sp = span(params, tz, now)
    filters = {k: params.get(k) for k in ("queue", "organisation", "severity")}
    clocks = Clocks(app)
    with session_scope(app.session_factory) as s:
        created = rq.cases_created(s, sp.start, sp.end, **filters)
        alive = rq.backlog_cases(s, sp.start, sp.end, **filters)

    # The periods: each [start, end) in UTC with its label; one for the whole span without --period.
    if period:
        bounds = []
        for d in periods(sp, period):
            a = max(local_midnight(d, tz), sp.start)
            b = min(local_midnight(next_period(d, period), tz), sp.end)
            bounds.append((period_label(d, period), a, b))
    else:
        bounds = [(f"{sp.first.isoformat()}..{sp.last.isoformat()}", sp.start, sp.end)]
    starts = [a for _, a, _ in bounds]

    tallies: dict[tuple[int, str], Tally] = defaultdict(Tally)
    all_fr_hours: list[float] = []
    judged = [(r, compliance(r, clocks, now)) for r in created]
    for r, (fr, res, frh, resh) in judged:
        i = bisect_left(starts, r.created_at + timedelta(microseconds=1)) - 1
        for g in {_group_of(r, by), ALL}:
            t = tallies[(i, g)]
            t.opened += 1
            t.fr_met += fr is True
            t.fr_missed += fr is False
            t.res_met += res is True
            t.res_missed += res is False
            if frh is not None:
                t.fr_hours.append(frh)
            if resh is not None:
                t.res_hours.append(resh)
        if frh is not None:
            all_fr_hours.append(frh)

    # Backlog: per group, sorted creation and resolution times; at T it is #created<T - #resolved<T.
    made: dict[str, list[datetime]] = defaultdict(list)
    done: dict[str, list[datetime]] = defaultdict(list)
    for r in alive:
        resolved = r.solved_at or r.closed_at
        for g in {_group_of(r, by), ALL}:
            made[g].append(r.created_at)
            if resolved is not None:
                done[g].append(resolved)
    for xs in (*made.values(), *done.values()):
        xs.sort()

    def backlog(g: str, at: datetime) -> int:
        return bisect_left(made.get(g, []), at) - bisect_left(done.get(g, []), at)

    groups = sorted({g for _, g in tallies} | set(made), key=lambda g: (g == ALL, g))
    if by is None:
        groups = [ALL]
    rows = []
    for i, (label, _, b) in enumerate(bounds):
        end = min(b, now)
        for g in groups:
            t = tallies.get((i, g), Tally())
            if by is not None and g != ALL and not t.opened and not backlog(g, end):
                continue
            rows.append(
                (
                    label,
                    g,
                    t.opened,
                    t.fr_met,
                    t.fr_missed,
                    Tally.share(t.fr_met, t.fr_missed),
                    t.res_met,
                    t.res_missed,
                    Tally.share(t.res_met, t.res_missed),
                    _median(t.fr_hours),
                    _p90(t.fr_hours),
                    _median(t.res_hours),
                    _p90(t.res_hours),
                    backlog(g, end),
                )
            )

    # Charts: compliance per period (per week without --period), the first-response distribution,
    # the backlog by age at the span's end.
    chart_period = period or "week"
    cbounds = [(period_label(d, chart_period), max(local_midnight(d, tz), sp.start)) for d in periods(sp, chart_period)]
    cstarts = [a for _, a in cbounds]
    fr_c, res_c = [[0, 0] for _ in cbounds], [[0, 0] for _ in cbounds]
    for r, (fr, res, _, _) in judged:
        i = bisect_left(cstarts, r.created_at + timedelta(microseconds=1)) - 1
        if fr is not None:
            fr_c[i][0 if fr else 1] += 1
        if res is not None:
            res_c[i][0 if res else 1] += 1

    def pct(c):
        return None if not sum(c) else 100 * c[0] / sum(c)

    at = min(sp.end, now)
    ages = [0] * len(AGE_BUCKETS)
    for r in alive:
        resolved = r.solved_at or r.closed_at
        if r.created_at < at and (resolved is None or resolved >= at):
            age = at - r.created_at
            ages[next(k for k, (_, hi) in enumerate(AGE_BUCKETS) if hi is None or age < hi)] += 1
    top = max(all_fr_hours, default=0)
    step = max(1, int(top / 12) + 1) if top > 0 else 1
    charts = [
        Chart(
            "SLA compliance over time",
            "line",
            x=[lbl for lbl, _ in cbounds],
            series={
                "first response met %": [pct(c) for c in fr_c],
                "resolution met %": [pct(c) for c in res_c],
            },
            xlabel=chart_period,
            ylabel="% met",
        ),
        Chart(
            "First-response time (business hours)",
            "hist",
            values=all_fr_hours,
            bins=[step * k for k in range(int(top / step) + 2)],
            xlabel="business hours to the first response",
            ylabel="cases",
        ),
        Chart(
            f"Backlog by age at {at.astimezone(tz).strftime('%Y-%m-%d %H:%M %Z')}",
            "bar",
            x=[lbl for lbl, _ in AGE_BUCKETS],
            series={"open cases": ages},
            xlabel="age (calendar time)",
            ylabel="cases",
        ),
    ]
    opened = sum(t.opened for (i, g), t in tallies.items() if g == ALL)
    fr_met = sum(t.fr_met for (i, g), t in tallies.items() if g == ALL)
    fr_missed = sum(t.fr_missed for (i, g), t in tallies.items() if g == ALL)
    share = Tally.share(fr_met, fr_missed)
    summary = f"SLA {sp.first}..{sp.last}: {opened} opened, first response met " + (
        f"{share * 100:.0f} %" if share is not None else "-"
    )
    notes = [
        f"cases opened {sp.describe(tz)}"
        + (f", by {by}" if by else "")
        + (f", per {period}" if period else "")
        + "".join(f", {k} {v}" for k, v in filters.items() if v),
        "FR: first response; RES: resolution; met % = met / (met + missed); times in business hours on each "
        "case's calendar; backlog: cases neither solved nor closed at the period's end",
        f"as of {now.astimezone(tz).strftime('%Y-%m-%d %H:%M %Z')}",
    ]
    return Report(
        "sla",
        "SLA compliance",
        tz,
        notes=notes,
        tables=[Table("SLA compliance", FIELDS, rows)],
        charts=charts,
        summary=summary,
        generated=now,
    )
