"""``mailbridge report history``: the processing history — every event and every mail of one case
(``--case``) or of all cases in a period (``--from``/``--to``), in the order they happened, with
who, what, when and which mail (its Message-ID)."""

from __future__ import annotations

from datetime import datetime

from mailbridge.reports import ReportError
from mailbridge.reports.common import check_filters, report_zone, span
from mailbridge.reports.model import Field, Report, Table
from mailbridge.store import report_queries as rq
from mailbridge.store.db import session_scope

FIELDS = [
    Field("WHEN", "time"),
    Field("CASE"),
    Field("WHO", ratio=2, min_width=10),
    Field("WHAT", ratio=5, min_width=16),
    Field("MAIL", ratio=2, min_width=10, optional=1),
]

# The detail keys that say who acted, in order of preference.
_WHO_KEYS = ("by", "to")
# Detail keys that are shown under WHO or MAIL, not repeated under WHAT.
_SHOWN_ELSEWHERE = {"by", "message_id"}


def _who(detail: dict) -> str:
    for k in _WHO_KEYS:
        v = detail.get(k)
        if v:
            return ", ".join(v) if isinstance(v, list) else str(v)
    return "mailbridge"


def _what(kind: str, detail: dict) -> str:
    parts = []
    for k, v in detail.items():
        if k in _SHOWN_ELSEWHERE or v in (None, "", [], {}):
            continue
        if isinstance(v, list):
            v = ", ".join(str(x) for x in v)
        elif isinstance(v, dict):
            v = ", ".join(f"{a}={b}" for a, b in v.items())
        parts.append(f"{k}={v}" if k != "to" else f"to {v}")
    text = kind.replace("_", " ")
    return f"{text}: {'; '.join(parts)}" if parts else text


def _mail_what(direction: str, kind: str | None, recipients, subject: str) -> str:
    if direction == "in":
        return f"mail in ({kind or 'unmatched'}): {subject}"
    to = ", ".join(recipients or [])
    return f"mail out ({kind or 'mail'}) to {to}: {subject}"


def build(app, params: dict, now: datetime) -> Report:
    check_filters(app, params)
    case = params.get("case")
    tz = report_zone(app, params)
    queue, org = params.get("queue"), params.get("organisation")
    with session_scope(app.session_factory) as s:
        if case:
            if not rq.case_exists(s, case):
                raise ReportError(f"case: no case {case}")
            window = {"case_number": case}
            about = f"case {case.upper()}"
        else:
            sp = span(params, tz, now)
            window = {"start": sp.start, "end": sp.end}
            about = sp.describe(tz)
        events = rq.history_events(s, queue=queue, organisation=org, **window)
        mails = rq.history_messages(s, queue=queue, organisation=org, **window)
    merged = [
        (
            e.created_at,
            1,
            e.id,
            e.case_number,
            _who(e.detail or {}),
            _what(e.kind, e.detail or {}),
            (e.detail or {}).get("message_id") or "",
        )
        for e in events
    ] + [
        (
            m.created_at,
            0,
            m.id,
            m.case_number,
            m.sender_email or "-",
            _mail_what(m.direction, m.kind, m.recipients, m.subject),
            m.message_id or "",
        )
        for m in mails
    ]
    # At the same instant a mail comes before what it caused (its events are recorded with it).
    merged.sort(key=lambda r: (r[0], r[1], r[2]))
    rows = [(when, c, who, what, mail) for when, _, _, c, who, what, mail in merged]
    cases = len({r[1] for r in rows})
    notes = [
        f"{about}: {len(events)} events and {len(mails)} mails of {cases} cases",
        f"times in {getattr(tz, 'key', tz)}",
    ]
    return Report(
        "history",
        "Processing history",
        tz,
        notes=notes,
        tables=[Table("History", FIELDS, rows)],
        summary=f"Processing history, {about}: {len(rows)} entries",
        generated=now,
    )
