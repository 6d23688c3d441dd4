"""``mailbridge report sla``: SLA compliance of the cases opened in a period, per group (queue,
severity, organisation or agent) and per week or month — computed from the stored clocks only.

The rules (met/missed: ``store/report_queries.py`` ``_met``, in SQL, so that 100,000 cases need no
due time fetched; the business hours: :func:`durations`):

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
from bisect import bisect_right
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


def durations(row, clocks: Clocks) -> tuple[float | None, float | None]:
    """(first-response business hours, resolution business hours) of one case (module docstring)
    from a row of ``store.report_queries.sla_rows`` (times as POSIX seconds)."""
    ot = clocks.of(row.queue, row.organisation)
    if ot is None:
        return None, None
    fr = res = None
    # Rounded to the second: SQLite's julianday() carries the times with an error of microseconds.
    if row.first_response is not None:
        fr = round(ot.seconds_ts(row.created, row.first_response)) / 3600
    if row.resolved is not None:
        res = max(0.0, round(ot.seconds_ts(row.created, row.resolved) - (row.paused_seconds or 0)) / 3600)
    return fr, res


def _label(value: str | None, by: str | None) -> str:
    if by is None:
        return ALL
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
        created = rq.sla_rows(s, sp.start, sp.end, now, by, **filters)
    # The periods: each [start, end) in UTC with its label; one for the whole span without --period.
    if period:
        bounds = []
        for d in periods(sp, period):
            a = max(local_midnight(d, tz), sp.start)
            b = min(local_midnight(next_period(d, period), tz), sp.end)
            bounds.append((period_label(d, period), a, b))
    else:
        bounds = [(f"{sp.first.isoformat()}..{sp.last.isoformat()}", sp.start, sp.end)]
    starts = [a.timestamp() for _, a, _ in bounds]

    tallies: dict[tuple[int, str], Tally] = defaultdict(Tally)
    all_fr_hours: list[float] = []
    judged = []
    for r in created:
        frh, resh = durations(r, clocks)
        fr, res = r.fr_met, r.res_met  # 1 met, 0 missed, None neither
        i = bisect_right(starts, r.created) - 1
        judged.append((r.created, fr, res))
        label = _label(r.grp, by)
        for g in (label, ALL) if label != ALL else (ALL,):
            t = tallies[(i, g)]
            t.opened += 1
            t.fr_met += fr == 1
            t.fr_missed += fr == 0
            t.res_met += res == 1
            t.res_missed += res == 0
            if frh is not None:
                t.fr_hours.append(frh)
            if resh is not None:
                t.res_hours.append(resh)
        if frh is not None:
            all_fr_hours.append(frh)

    # Backlog at each period's end (or now): cases created before it less those solved or closed
    # before it, summed over the buckets of the period ends (two GROUP BYs in the database).
    ends = [min(b, now) for _, _, b in bounds]
    with session_scope(app.session_factory) as s:
        made_rows, done_rows = rq.backlog_counts(s, ends, by, **filters)
        at = min(sp.end, now)
        still_open = rq.open_at(s, at, **filters)
    made: dict[tuple[str, int], int] = defaultdict(int)
    for g, b, n in made_rows:
        for key in {_label(g, by), ALL}:
            made[(key, b)] += n
    done: dict[tuple[str, int], int] = defaultdict(int)
    for g, b, n in done_rows:
        for key in {_label(g, by), ALL}:
            done[(key, b)] += n
    backlog_groups = {g for g, _ in made}

    def backlog(g: str, k: int) -> int:
        """At ends[k]: the buckets 0..k (before ends[k])."""
        return sum(made.get((g, j), 0) - done.get((g, j), 0) for j in range(k + 1))

    groups = sorted({g for _, g in tallies} | backlog_groups, key=lambda g: (g == ALL, g))
    if by is None:
        groups = [ALL]
    rows = []
    for i, (label, _, _) in enumerate(bounds):
        for g in groups:
            t = tallies.get((i, g), Tally())
            if by is not None and g != ALL and not t.opened and not backlog(g, i):
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
                    backlog(g, i),
                )
            )

    # Charts: compliance per period (per week without --period), the first-response distribution,
    # the backlog by age at the span's end.
    chart_period = period or "week"
    cbounds = [(period_label(d, chart_period), max(local_midnight(d, tz), sp.start)) for d in periods(sp, chart_period)]
    cstarts = [a.timestamp() for _, a in cbounds]
    fr_c, res_c = [[0, 0] for _ in cbounds], [[0, 0] for _ in cbounds]
    for created_ts, fr, res in judged:
        i = bisect_right(cstarts, created_ts) - 1
        if fr is not None:
            fr_c[i][0 if fr else 1] += 1
        if res is not None:
            res_c[i][0 if res else 1] += 1

    def pct(c):
        return None if not sum(c) else 100 * c[0] / sum(c)

    ages = [0] * len(AGE_BUCKETS)
    for created_at in still_open:
        age = at - created_at
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
            ylim=(0, 105),
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
    table = Table("SLA compliance", FIELDS, rows)
    if period is None:  # one period, named in the notes: no column that says it on every row
        table = Table("SLA compliance", FIELDS[1:], [row[1:] for row in rows])
    return Report(
        "sla",
        "SLA compliance",
        tz,
        notes=notes,
        tables=[table],
        charts=charts,
        summary=summary,
        generated=now,
    )
