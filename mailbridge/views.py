"""Views for the CLI: ticket lists (a queue's in working order), one ticket with messages, send
attempts and history, how a case's deadlines were computed, quarantine, suppressed and failing
addresses.

Tables are rendered by rich at the terminal's width (:func:`terminal_width`: ``COLUMNS``, else the
terminal, else 120 when the output is a pipe); a cell too long for its column is cut with "…", never
wrapped out of line. Nothing is coloured: the text is the same on a terminal and in a pipe. Times are
shown in the zone of the business calendar the case counts in (:func:`zone_of`), with the zone's
abbreviation (CET/CEST), so that a time is never ambiguous. Everything that came from stored mail goes
through :func:`printable` first.
"""

from __future__ import annotations

import io
import re
import shutil
import textwrap
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import Literal

from rich.cells import cell_len
from rich.console import Console
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from mailbridge.outbound import compose as comp
from mailbridge.store import automail
from mailbridge.store import repositories as repo
from mailbridge.store.db import session_scope

# The cases a queue's list shows unless --status says otherwise: the ones still to be worked on.
ACTIVE_STATUSES = ("new", "open", "pending")
# The width when the output is no terminal (a pipe, a file, a test's runner) and COLUMNS is not set.
DEFAULT_WIDTH = 120
# Narrower than this, the tables would be nothing but "…".
MIN_WIDTH = 40
# Spaces between two columns.
GAP = 2


# What a terminal must not be handed from stored mail: control characters (escape sequences) and
# Unicode direction and invisible formatting marks (a file name "gpj.exe" shown as "exe.jpg").
_UNPRINTABLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")


def printable(text: str) -> str:
    """``text`` safe to print on a terminal: every control or direction character becomes "?"."""
    return _UNPRINTABLE.sub("?", text)


def terminal_width() -> int:
    """The width to render for: ``COLUMNS`` when set, else the terminal's, else :data:`DEFAULT_WIDTH`."""
    return max(MIN_WIDTH, shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns)


class Screen:
    """Lines and tables rendered as plain text ``width`` columns wide (no colour, no markup: a "["
    in a subject is a "[")."""

    def __init__(self, width: int | None = None):
        self.width = max(MIN_WIDTH, width or terminal_width())
        self.console = Console(
            file=io.StringIO(),
            width=self.width,
            color_system=None,
            force_terminal=False,
            force_interactive=False,
            highlight=False,
            markup=False,
            emoji=False,
        )

    def line(self, text: str = "", hang: int = 2, wrap: bool = True) -> None:
        """One line of text, wrapped at spaces where it is longer than the width (text is read, not
        scanned in columns): continuation lines keep the line's indentation, ``hang`` columns more.
        A word longer than a line (a path, a Message-ID) is kept whole, to be copied; ``wrap=False``:
        a line that names something (a file) stays one line."""
        text = printable(text)
        body = text.lstrip(" ")
        indent = " " * (len(text) - len(body))
        pieces = (
            [body]
            if not wrap
            else textwrap.wrap(
                body,
                width=max(MIN_WIDTH // 2, self.width - len(indent)),
                subsequent_indent=" " * hang,
                break_long_words=False,
                break_on_hyphens=False,
            )
        )
        for piece in pieces or [""]:
            self.console.print(Text(indent + piece), no_wrap=True, overflow="ignore", crop=False)

    def table(self, columns: list[Column], rows: list[tuple[str, ...]], indent: int = 0) -> None:
        """A table whose cells are cut with "…" to fit the width: the fixed columns keep their
        width, the flexible ones (``ratio``) share what is left when all does not fit, and the
        ``optional`` columns are left out (rank 1 first) while the others do not fit even at their
        minimum widths."""
        cells = [[printable(c) for c in row] for row in rows]
        keep, widths = self._layout(columns, cells, indent)
        table = Table(box=None, show_edge=False, pad_edge=False, padding=(0, GAP, 0, 0), header_style=None)
        for i in keep:
            c = columns[i]
            table.add_column(c.header, no_wrap=True, overflow="ellipsis", width=widths[i], justify=c.justify)
        for row in cells:
            table.add_row(*(Text(row[i]) for i in keep))
        self.console.print(Padding(table, (0, 0, 0, indent)) if indent else table)

    def long_table(self, columns: list[Column], rows: list[tuple[str, ...]]) -> None:
        """The same table as :meth:`table` (the same widths, columns left out and cuts with "…"),
        written line by line: a report of ten thousand rows takes a fraction of a second, where
        rich's table layout takes seconds."""
        cells = [[printable(c) for c in row] for row in rows]
        keep, widths = self._layout(columns, cells, 0)
        if sum(widths.values()) + GAP * (len(keep) - 1) > self.width:
            # Too narrow even at the minimum widths: rich's own way of squeezing the columns.
            self.table(columns, rows)
            return
        out = self.console.file

        def line(values: list[str]) -> str:
            parts = []
            for i in keep:
                v, w = values[i], widths[i]
                n = cell_len(v)
                if n > w:  # cut as rich cuts a cell ("…" in the last column)
                    t = Text(v)
                    t.truncate(w, overflow="ellipsis")
                    v, n = t.plain, t.cell_len
                pad = " " * (w - n)
                parts.append(pad + v if columns[i].justify == "right" else v + pad)
            return (" " * GAP).join(parts).rstrip()

        out.write(line([c.header for c in columns]) + "\n")
        for row in cells:
            out.write(line(row) + "\n")

    def _layout(self, columns: list[Column], cells: list[list[str]], indent: int) -> tuple[list[int], dict[int, int]]:
        """The columns shown and their widths (see :meth:`table`)."""
        width = self.width - indent
        keep = list(range(len(columns)))
        widest = [max([cell_len(c.header), *(cell_len(r[i]) for r in cells)]) for i, c in enumerate(columns)]

        def natural(i: int) -> int:
            return widest[i]

        def least(i: int) -> int:
            c = columns[i]
            return min(natural(i), c.min_width or 6) if c.ratio else natural(i)

        def total(width_of) -> int:
            return sum(width_of(j) for j in keep) + GAP * (len(keep) - 1)

        for i in sorted((i for i, c in enumerate(columns) if c.optional), key=lambda i: columns[i].optional or 0):
            if total(least) <= width:
                break
            keep.remove(i)
        # A flexible column whose content fits in its share of the space needs no share: it is as
        # wide as its content, and the others share the rest.
        flexible = [i for i in keep if columns[i].ratio]
        widths = {i: natural(i) for i in keep}
        while flexible:
            space = width - sum(widths[j] for j in keep if j not in flexible) - GAP * (len(keep) - 1)
            ratios = sum(columns[j].ratio or 0 for j in flexible)
            fitting = [j for j in flexible if natural(j) <= space * (columns[j].ratio or 0) / ratios]
            if not fitting:
                widths |= _shares(space, {j: (columns[j].ratio or 0, least(j)) for j in flexible})
                break
            flexible = [j for j in flexible if j not in fitting]
        return keep, widths

    def text(self) -> str:
        out = self.console.file.getvalue()  # type: ignore[attr-defined]
        return "\n".join(line.rstrip() for line in out.splitlines())


def _shares(space: int, columns: dict[int, tuple[int, int]]) -> dict[int, int]:
    """``space`` split among columns by their ratios, none below its minimum: {column: (ratio,
    minimum)} → {column: width}."""
    out = {}
    ratios = sum(r for r, _ in columns.values())
    for i, (ratio, minimum) in columns.items():
        out[i] = max(minimum, space * ratio // ratios) if ratios else max(minimum, space)
        space, ratios = space - out[i], ratios - ratio
    return out


@dataclass(frozen=True)
class Column:
    """A table column: fixed (as wide as its content) or, with a ``ratio``, sharing the space left
    (at least ``min_width``)."""

    header: str
    ratio: int | None = None
    min_width: int | None = None
    justify: Literal["left", "right"] = "left"
    # Left out when the table does not fit even with every flexible column at its minimum: the
    # rank in which optional columns go (1 first); None: always shown.
    optional: int | None = None


def zone_of(app, queue: str | None = None, organisation: str | None = None) -> tzinfo:
    """The zone times of a case are shown in: its business calendar's (its organisation's, else its
    queue's). Without a case or a calendar: the calendars' zone when they all have one, else UTC."""
    cal = app.deadlines.calendar(queue, organisation) if queue else None
    if cal is not None:
        return cal.tz
    zones = {c.tz.key: c.tz for c in app.deadlines.calendars.values()}
    return next(iter(zones.values())) if len(zones) == 1 else UTC


def shown_time(app, dt: datetime | None) -> str:
    """A time not of one case (a suppression's end), as :func:`zone_of` shows it."""
    return _ts(dt, zone_of(app))


def _ts(dt: datetime | None, tz: tzinfo) -> str:
    """``2026-12-03 14:05 CET``: minutes, in ``tz``, with the zone's abbreviation (CET or CEST)."""
    return dt.astimezone(tz).strftime("%Y-%m-%d %H:%M %Z") if dt else "-"


def severity_order(app, queue: str) -> list[str]:
    """The severity levels of a queue's scheme, most severe first (none for an unknown queue): the
    working order of its list (:func:`mailbridge.store.repositories.queue_worklist`)."""
    return app.settings.severity_levels(app.settings.queue(queue)) if _known(app, queue) else []


def _known(app, queue: str) -> bool:
    return any(q.name == queue for q in app.settings.queues)


def _queue_table(app, queue: str, status: str | None, limit: int, width: int | None) -> str:
    statuses = (status,) if status else ACTIVE_STATUSES
    with session_scope(app.session_factory) as s:
        rows = repo.queue_worklist(s, queue, statuses, severity_order(app, queue), limit)
        if not rows:
            return f"no {'/'.join(statuses)} tickets in queue {queue}"
        table = []
        for t in rows:
            tz = zone_of(app, t.queue, t.organisation)
            due = "answered" if t.first_response_at else _ts(t.first_response_due, tz)
            table.append(
                (
                    t.case_number,
                    t.status,
                    f"{t.contract or '-'} / {t.organisation or '-'}",
                    t.severity or "-",
                    due,
                    _ts(t.created_at, tz),
                    t.requester_email,
                    t.subject,
                )
            )
    screen = Screen(width)
    screen.table(
        [
            Column("CASE"),
            Column("STATUS"),
            Column("CONTRACT / ORGANISATION", ratio=3, min_width=12),
            Column("SEV"),
            Column("FIRST RESPONSE DUE"),
            Column("CREATED", optional=1),
            Column("REQUESTER", ratio=2, min_width=10, optional=2),
            Column("SUBJECT", ratio=5, min_width=16),
        ],
        table,
    )
    return screen.text()


def tickets_table(app, queue=None, status=None, limit=50, width: int | None = None) -> str:
    """The newest tickets; with ``queue``, that queue's active cases in working order
    (:func:`mailbridge.store.repositories.queue_worklist`)."""
    if queue:
        return _queue_table(app, queue, status, limit, width)
    with session_scope(app.session_factory) as s:
        rows = repo.list_tickets(s, queue=queue, status=status, limit=limit)
        if not rows:
            return "no tickets"
        table = [
            (
                t.case_number,
                t.status,
                t.queue,
                t.language,
                _ts(t.created_at, zone_of(app, t.queue, t.organisation)),
                t.requester_email,
                t.subject,
            )
            for t in rows
        ]
    screen = Screen(width)
    screen.table(
        [
            Column("CASE"),
            Column("STATUS"),
            Column("QUEUE", ratio=2, min_width=8),
            Column("LANG", optional=1),
            Column("CREATED", optional=2),
            Column("REQUESTER", ratio=2, min_width=10),
            Column("SUBJECT", ratio=5, min_width=20),
        ],
        table,
    )
    return screen.text()


# How a mail found its case, by the matcher's rule (ingest/matcher.py, ingest/conversation.py, steps).
_CASE_RULES = {
    "thread-header": "onto this case: {evidence}",
    "subject": "onto this case by the case number in its subject ({evidence})",
    "body": "onto this case by the case number in its text ({evidence})",
    "new": "a new case ({evidence})",
    "new-linked": "a new case: {evidence}",
    "noise": "kept as automatic mail, no case: {evidence}",
    "ignored": "set aside, no case: {evidence}",
}


def routing_in_words(routing: dict) -> str:
    """Where a stored mail went and why, as a sentence (the routing record of ``ingest/routing.py``
    and ``ingest/matcher.py``): "to support@… (queue support, by its recipient address); a new case
    (no reference to an existing case)"."""
    parts = []
    q = routing.get("queue") or {}
    if q.get("by") == "recipient":
        parts.append(f"to {q.get('evidence')} (queue {q.get('queue')}, by its recipient address)")
    elif q:
        parts.append(
            f"to queue {q.get('queue')} (no support address among its recipients: "
            f"the default queue of account {q.get('evidence')})"
        )
    rule = routing.get("rule")
    if rule:
        parts.append(_CASE_RULES.get(rule, rule + " ({evidence})").format(evidence=routing.get("evidence") or "-"))
    for c in routing.get("conflicts") or []:
        parts.append(f"it also names {c.get('case')} (by {c.get('rule')}: {c.get('evidence')}), not followed")
    for u in routing.get("unknown_references") or []:
        hint = f", perhaps {u['suggestion']}" if u.get("suggestion") else ""
        parts.append(f"{u.get('number')} names no case ({u.get('reason')}{hint})")
    if routing.get("signed_notification"):
        parts.append("it answers our signed notification of " + ", ".join(routing["signed_notification"]))
    filed = routing.get("filed")
    if filed:
        how = "from their forwarded mail" if filed.get("how") == "forward" else "taken by phone"
        parts.append(f"filed by {filed.get('by')} for {filed.get('for')} ({how})")
    author = routing.get("author")
    if author:
        proof = f", proven by {author['proof']}" if author.get("proof") else ""
        parts.append(f"written by the {author.get('role')} ({author.get('kind')}{proof})")
    return "; ".join(parts)


def ticket_detail(app, case_number: str, width: int | None = None) -> str | None:
    """One case: its facts and due times, information, participants, the conversation, the mails
    we sent or tried to send for it (send attempts), and its history in the order it was recorded."""
    screen = Screen(width)
    line = screen.line
    with session_scope(app.session_factory) as s:
        t = repo.ticket_by_case(s, case_number)
        if t is None:
            return None
        tz = zone_of(app, t.queue, t.organisation)
        cal = app.deadlines.calendar_name(t.queue, t.organisation)
        line(f"{t.case_number}  {t.subject}")
        line(
            f"  status {t.status}, queue {t.queue}, language {t.language}"
            + (f", severity {t.severity}" if t.severity else "")
            + (f", assigned to {t.assignee}" if t.assignee else "")
        )
        line(f"  requester {t.requester_name} <{t.requester_email}>")
        line(
            f"  created {_ts(t.created_at, tz)}, updated {_ts(t.updated_at, tz)}"
            + (f", first response {_ts(t.first_response_at, tz)}" if t.first_response_at else ", no response yet")
            + (f", solved {_ts(t.solved_at, tz)}" if t.solved_at else "")
            + (f", closed {_ts(t.closed_at, tz)}" if t.closed_at else "")
        )
        line(f"  times in {getattr(tz, 'key', 'UTC')}" + (f" (calendar {cal})" if cal else ""))
        if t.organisation or t.contract:
            line(f"  organisation {t.organisation or '-'}, contract {t.contract or 'none'}")
        dues = [
            (label, at)
            for label, at in (
                ("first response", t.first_response_due if t.first_response_at is None else None),
                ("follow-up", t.update_due),
                ("resolution", t.resolution_due),
            )
            if at is not None
        ]
        if dues or t.paused_at or t.next_escalation_at:
            line(
                "  due: "
                + (", ".join(f"{label} {_ts(at, tz)}" for label, at in dues) or "-")
                + (f"; paused since {_ts(t.paused_at, tz)}" if t.paused_at else "")
                + (f"; next escalation check {_ts(t.next_escalation_at, tz)}" if t.next_escalation_at else "")
                + f"  (mailbridge sla explain {t.case_number})"
            )
        if t.checklist:
            line("  information:")
            queue = next((q for q in app.settings.queues if q.name == t.queue), None)
            labels = {i.key: i.label("en") for i in (queue.checklist if queue else [])}
            sent = {m.id: m for m in t.messages}
            for key, item in t.checklist.items():
                if not item.get("given"):
                    line(f"    [ ] {labels.get(key, key)}: missing")
                    continue
                m = sent.get(item.get("message_id"))
                source = f" (mail of {_ts(m.created_at, tz)} <{m.message_id}>)" if m is not None else ""
                line(f"    [x] {labels.get(key, key)}: {item.get('evidence') or 'given'}{source}")
        if t.linked_ticket is not None:
            line(f"  follows up {t.linked_ticket.case_number} ({t.linked_ticket.subject})")
        if t.participants:
            line("  participants: " + ", ".join(f"{p.email} ({p.role})" for p in t.participants))
        line()
        line("conversation:")
        first_inbound = next((m.id for m in t.messages if m.direction == "in"), None)
        for m in t.messages:
            arrow = "<-" if m.direction == "in" else "->"
            who = m.sender_email if m.direction == "in" else ", ".join(m.recipients)
            kind = m.kind or "-"
            if m.mail_class and m.mail_class != "human":
                kind += f", {m.mail_class}"
            line(f"  {arrow} {_ts(m.created_at, tz)} [{kind}] {who}  <{m.message_id}>")
            line(f"     subject: {m.subject}")
            for flag in m.flags or []:
                line(f"     FLAG: {flag}")
            if m.routing:
                line(f"     routed: {routing_in_words(m.routing)}")
            for a in m.attachments:
                line(f"     attachment: {a.filename} ({a.content_type}, {a.size} bytes, sha256 {a.sha256[:12]}…)")
            if m.defects:
                line(f"     defects: {len(m.defects)}")
            # The new part of an inbound mail (quoted history removed); the whole text where it has none.
            # (The first mail of a case is shown whole: what it quotes or forwards is the request.)
            body = (m.body_text if m.id == first_inbound else (m.body_new or m.body_text) or "").strip().splitlines()
            for text in body[:8]:
                line(f"     | {text}")
            if len(body) > 8:
                line(f"     | … ({len(body) - 8} more lines)")
        attempts = repo.ticket_outbox(s, t.id)
        line()
        line("send attempts:" if attempts else "send attempts: none")
        if attempts:
            screen.table(
                [
                    Column("KIND"),
                    Column("TO", ratio=2, min_width=10),
                    Column("STATUS"),
                    Column("ATTEMPTS", justify="right"),
                    Column("QUEUED", optional=1),
                    Column("SENT"),
                    Column("LAST ERROR", ratio=3, min_width=10),
                ],
                [
                    (
                        o.kind,
                        ", ".join(o.envelope_to),
                        o.status,
                        str(o.attempts),
                        _ts(o.created_at, tz),
                        _ts(o.sent_at, tz),
                        " ".join((o.last_error or "-").split()),
                    )
                    for o in attempts
                ],
                indent=2,
            )
        line()
        line("history:")
        # In the order recorded (by id; the relationship's order is by id too, said here for the reader).
        events = sorted(t.events, key=lambda e: e.id)
        screen.table(
            [Column("TIME"), Column("EVENT"), Column("DETAIL", ratio=1, min_width=10)],
            [(_ts(e.created_at, tz), e.kind, _detail(e.detail or {}, tz)) for e in events],
            indent=2,
        )
    return screen.text()


def _aware_time(text: str) -> datetime | None:
    """``text`` as a time when it is one with a zone (as events record times: ``isoformat``)."""
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        return None
    return at if at.tzinfo is not None else None


def _detail(detail: dict, tz: tzinfo) -> str:
    """An event's detail as ``key=value`` pairs, a list as its items, a time in ``tz``."""

    def value(v) -> str:
        if isinstance(v, str) and (at := _aware_time(v)) is not None:
            return _ts(at, tz)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k}: {value(x)}" for k, x in v.items()) + "}"
        return str(v)

    return ", ".join(f"{k}={value(v)}" for k, v in detail.items() if v is not None)


def quarantine_table(app, width: int | None = None) -> str:
    """The open quarantine: when, the stage that refused the mail, sender, subject, reason (cut to
    the width: ``mailbridge quarantine show ID`` has the whole of it, the mailbox and the raw file)."""
    tz = zone_of(app)
    with session_scope(app.session_factory) as s:
        rows = repo.list_quarantine(s)
        if not rows:
            return "quarantine is empty"
        table = [
            (
                f"#{q.id}",
                _ts(q.created_at, tz),
                q.stage,
                q.sender or "-",
                q.subject or "-",
                " ".join(q.reason.split()),
            )
            for q, _raw in rows
        ]
    screen = Screen(width)
    screen.table(
        [
            Column("ID"),
            Column("QUARANTINED"),
            Column("STAGE"),
            Column("FROM", ratio=2, min_width=10),
            Column("SUBJECT", ratio=2, min_width=10),
            Column("REASON", ratio=4, min_width=12),
        ],
        table,
    )
    screen.line(f"{len(table)} quarantined; the whole of each: mailbridge quarantine show ID")
    return screen.text()


def quarantine_detail(app, quarantine_id: int, width: int | None = None) -> str | None:
    """One quarantined mail: why, where its raw bytes are, and its header block as received."""
    tz = zone_of(app)
    screen = Screen(width)
    line = screen.line
    with session_scope(app.session_factory) as s:
        q = repo.quarantine_row(s, quarantine_id)
        if q is None:
            return None
        raw = q.raw
        path = app.raw_store.root / raw.path
        line(f"#{q.id}  {q.status}" + (f" ({q.outcome}, {_ts(q.resolved_at, tz)})" if q.outcome else ""))
        line(f"  stage {q.stage}, quarantined {_ts(q.created_at, tz)}")
        line(f"  reason: {q.reason}")
        line(f"  from {q.sender or '-'}, Message-ID <{q.message_id or '-'}>")
        line(f"  subject: {q.subject or '-'}")
        line(f"  mailbox {raw.account}/{raw.folder} UID {raw.uid} (UIDVALIDITY {raw.uidvalidity})")
        line(f"  raw: {path}", wrap=False)
        line(f"  {raw.size} bytes, sha256 {raw.sha256}")
        line()
        line("headers:")
        data = app.raw_store.get(raw.path)
    headers = BytesHeaderParser(policy=compat32).parsebytes(data)
    for name, value in headers.items():
        line(f"  {name}: {' '.join(str(value).split())[:300]}")
    return screen.text()


def noise_table(app, limit: int = 100, width: int | None = None) -> str:
    """Auto-replies and bounces that belong to no case, and the addresses our mail bounced from."""
    tz = zone_of(app)
    screen = Screen(width)
    with session_scope(app.session_factory) as s:
        rows = repo.list_noise(s, limit)
        screen.line(f"{len(rows)} automatic mail(s) that answered nothing of ours" + (":" if rows else ""))
        if rows:
            screen.table(
                [
                    Column("RAW"),
                    Column("RECEIVED"),
                    Column("CLASS"),
                    Column("FROM", ratio=2, min_width=10),
                    Column("SUBJECT", ratio=2, min_width=10),
                    Column("EVIDENCE", ratio=2, min_width=10),
                ],
                [
                    (
                        f"#{raw.id}",
                        _ts(raw.received_at, tz),
                        raw.mail_class or "-",
                        m.sender_email or "-",
                        comp.header_safe(m.subject, 200) or "-",
                        (m.routing or {}).get("evidence", ""),
                    )
                    for raw, m in rows
                ],
                indent=2,
            )
            screen.line("  raw files:")
            for raw, _m in rows:
                screen.line(f"    #{raw.id} {app.raw_store.root / raw.path}", wrap=False)
        failing = repo.failing_addresses(s, limit)
        screen.line(f"{len(failing)} failing address(es)" + (":" if failing else ""))
        if failing:
            screen.table(
                [
                    Column("ADDRESS", ratio=1, min_width=12),
                    Column("BOUNCE"),
                    Column("STATUS"),
                    Column("BOUNCES", justify="right"),
                    Column("SINCE", optional=1),
                    Column("SUPPRESSED UNTIL"),
                ],
                [
                    (
                        a.email,
                        "hard" if a.permanent else "soft",
                        a.last_status or "-",
                        str(a.bounces),
                        _ts(a.first_failed_at, tz),
                        _ts(a.suppressed_until, tz),
                    )
                    for a in failing
                ],
                indent=2,
            )
    return screen.text()


def sla_explanation(app, case_number: str, width: int | None = None) -> str | None:
    """How the deadlines of a case were computed (``mailbridge sla explain``); None: no such case.
    Its times are in the case's calendar zone (``sla/explain.py``); a line longer than the width
    wraps, indented."""
    from mailbridge.sla.explain import CaseFacts, explain_case, terms_of
    from mailbridge.sla.recompute import CaseClocks, dues_for, pauses_from_events

    with session_scope(app.session_factory) as s:
        t = repo.ticket_by_case(s, case_number)
        if t is None:
            return None
        facts = CaseFacts(
            case_number=t.case_number,
            subject=t.subject,
            queue=t.queue,
            status=t.status,
            created_at=t.created_at,
            severity=t.severity,
            organisation=t.organisation,
            contract=t.contract,
            first_response_due=t.first_response_due,
            first_response_at=t.first_response_at,
            resolution_due=t.resolution_due,
            solved_at=t.solved_at,
            update_due=t.update_due,
            last_answer_at=t.update_started_at,
            paused_at=t.paused_at,
            paused_seconds=t.paused_seconds or 0,
        )
        events = [(e.kind, e.detail or {}, e.created_at) for e in sorted(t.events, key=lambda e: e.id)]
        answer_to = t.reply_to or t.requester_email
    deadlines = app.deadlines
    terms = terms_of(deadlines, facts.queue, facts.severity, facts.organisation, facts.contract)
    clocks = CaseClocks(
        queue=facts.queue,
        severity=facts.severity,
        answer_to=answer_to,
        created_at=facts.created_at,
        first_response_at=facts.first_response_at,
        last_answer_at=facts.last_answer_at,
        paused_seconds=facts.paused_seconds,
    )
    expected = dues_for(deadlines, clocks, pauses_from_events(events, facts.paused_at))
    screen = Screen(width)
    for line in explain_case(facts, terms, events, app.clock(), expected).splitlines():
        screen.line(line, hang=4)
    return screen.text()


def suppressions_table(app, width: int | None = None) -> str:
    """The addresses our mail bounced from and nothing lifted since: suppressed ones (a hard bounce;
    no automatic mail until UNTIL) first, then failing ones (soft bounces, or a suppression that ran
    out), with bounce count, last status and the case of the mail that bounced last; then the last
    bounce of each, with its reason."""
    now = app.clock()
    tz = zone_of(app)
    with session_scope(app.session_factory) as s:
        rows = automail.failing(s)
    if not rows:
        return "no address is suppressed or failing"
    rows.sort(key=lambda h: not h.suppressed(now))  # stable: newest bounce first within each group
    screen = Screen(width)
    screen.table(
        [
            Column("ADDRESS", ratio=1, min_width=12),
            Column("STATE"),
            Column("SINCE", optional=1),
            Column("UNTIL"),
            Column("BOUNCES", justify="right"),
            Column("STATUS"),
            Column("LAST CASE"),
        ],
        [
            (
                h.address,
                "suppressed" if h.suppressed(now) else "failing",
                _ts(h.since, tz),
                _ts(h.suppressed_until, tz) if h.suppressed(now) else "-",
                str(h.bounces),
                h.last_status or "-",
                h.last_case or "-",
            )
            for h in rows
        ],
    )
    screen.line("last bounces:")
    screen.table(
        [Column("ADDRESS", ratio=1, min_width=12), Column("AT"), Column("REASON", ratio=2, min_width=12)],
        [(h.address, _ts(h.last_failed_at, tz), comp.header_safe(h.last_reason or "-", 200)) for h in rows],
        indent=2,
    )
    suppressed = sum(1 for h in rows if h.suppressed(now))
    screen.line(f"{suppressed} suppressed, {len(rows) - suppressed} failing")
    return screen.text()
