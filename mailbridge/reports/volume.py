"""``mailbridge report volume``: the cases opened per day or week by queue, how many of them were
reopened (the reopen rate: cases with a ``reopened`` event / cases opened), and how many follow up
a closed case (opened as a new case linked to it)."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from mailbridge.reports import ReportError
from mailbridge.reports.common import check_filters, period_label, period_start, periods, report_zone, span
from mailbridge.reports.model import Chart, Field, Report, Table
from mailbridge.store import report_queries as rq
from mailbridge.store.db import session_scope

PERIODS = ("day", "week")
ALL = "(all)"

FIELDS = [
    Field("PERIOD"),
    Field("QUEUE", ratio=1, min_width=8),
    Field("OPENED", "int"),
    Field("REOPENED", "int"),
    Field("REOPEN RATE", "pct"),
    Field("LINKED TO A CLOSED CASE", "int"),
]


def build(app, params: dict, now: datetime) -> Report:
    check_filters(app, params)
    period = params.get("period") or "day"
    if period not in PERIODS:
        raise ReportError(f"period: {period!r} is not one of {', '.join(PERIODS)}")
    tz = report_zone(app, params)
    sp = span(params, tz, now)
    filters = {k: params.get(k) for k in ("queue", "organisation", "severity")}
    with session_scope(app.session_factory) as s:
        cases = rq.volume_cases(s, sp.start, sp.end, **filters)
    counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    queues = set()
    for r in cases:
        label = period_label(period_start(r.created_at.astimezone(tz).date(), period), period)
        queues.add(r.queue)
        for q in (r.queue, ALL):
            c = counts[(label, q)]
            c[0] += 1
            c[1] += bool(r.reopened)
            c[2] += bool(r.linked)
    labels = [period_label(d, period) for d in periods(sp, period)]
    shown_queues = sorted(queues) + ([ALL] if len(queues) > 1 else [])
    rows = []
    for label in labels:
        for q in shown_queues if shown_queues else [ALL]:
            opened, reopened, linked = counts.get((label, q), [0, 0, 0])
            rows.append((label, q, opened, reopened, reopened / opened if opened else None, linked))
    total = [0, 0, 0]
    for (_, q), c in counts.items():
        if q == ALL:
            total = [a + b for a, b in zip(total, c, strict=True)]
    chart = Chart(
        f"Cases opened per {period} by queue",
        "bar",
        x=labels,
        series={q: [counts.get((lbl, q), [0])[0] for lbl in labels] for q in sorted(queues)},
        xlabel=period,
        ylabel="cases",
    )
    rate = f"{100 * total[1] / total[0]:.1f} %" if total[0] else "-"
    notes = [
        f"cases opened {sp.describe(tz)}, per {period}" + "".join(f", {k} {v}" for k, v in filters.items() if v),
        f"{total[0]} opened, {total[1]} reopened (reopen rate {rate}), {total[2]} linked to a closed case",
    ]
    return Report(
        "volume",
        "Volume",
        tz,
        notes=notes,
        tables=[Table("Volume", FIELDS, rows)],
        charts=[chart],
        summary=f"Volume {sp.first}..{sp.last}: {total[0]} opened, reopen rate {rate}",
        generated=now,
    )
