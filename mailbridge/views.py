"""Plain-text views for the CLI: ticket lists (a queue's in working order), one ticket with messages
and history, how a case's deadlines were computed, quarantine, suppressed and failing addresses."""

from __future__ import annotations

import json
import re
from email.parser import BytesHeaderParser
from email.policy import compat32

from mailbridge.outbound import compose as comp
from mailbridge.store import automail
from mailbridge.store import repositories as repo
from mailbridge.store.db import session_scope

# The cases a queue's list shows unless --status says otherwise: the ones still to be worked on.
ACTIVE_STATUSES = ("new", "open", "pending")


# What a terminal must not be handed from stored mail: control characters (escape sequences) and
# Unicode direction and invisible formatting marks (a file name "gpj.exe" shown as "exe.jpg").
_UNPRINTABLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")


def printable(text: str) -> str:
    """``text`` safe to print on a terminal: every control or direction character becomes "?"."""
    return _UNPRINTABLE.sub("?", text)


def _ts(dt) -> str:
    return dt.strftime("%Y-%m-%d %H:%M:%SZ") if dt else "-"


def severity_order(app, queue: str) -> list[str]:
    """The severity levels of a queue's scheme, most severe first (none for an unknown queue): the
    working order of its list (:func:`mailbridge.store.repositories.queue_worklist`)."""
    return app.settings.severity_levels(app.settings.queue(queue)) if _known(app, queue) else []


def _known(app, queue: str) -> bool:
    return any(q.name == queue for q in app.settings.queues)


def _queue_table(app, queue: str, status: str | None, limit: int) -> str:
    statuses = (status,) if status else ACTIVE_STATUSES
    with session_scope(app.session_factory) as s:
        rows = repo.queue_worklist(s, queue, statuses, severity_order(app, queue), limit)
        if not rows:
            return f"no {'/'.join(statuses)} tickets in queue {queue}"
        lines = [
            f"{'CASE':<12} {'STATUS':<8} {'CONTRACT / ORGANISATION':<32} {'SEV':<5} {'FIRST RESPONSE DUE':<20} "
            f"{'CREATED':<20} {'REQUESTER':<30} SUBJECT"
        ]
        for t in rows:
            who = f"{t.contract} / {t.organisation or '-'}" if t.contract else f"- / {t.organisation or '-'}"
            due = "answered" if t.first_response_at else _ts(t.first_response_due)
            lines.append(
                f"{t.case_number:<12} {t.status:<8} {who[:32]:<32} {t.severity or '-':<5} {due:<20} "
                f"{_ts(t.created_at):<20} {t.requester_email[:30]:<30} {t.subject[:60]}"
            )
        return printable("\n".join(lines))


def tickets_table(app, queue=None, status=None, limit=50) -> str:
    """The newest tickets; with ``queue``, that queue's active cases in working order
    (:func:`mailbridge.store.repositories.queue_worklist`)."""
    if queue:
        return _queue_table(app, queue, status, limit)
    with session_scope(app.session_factory) as s:
        rows = repo.list_tickets(s, queue=queue, status=status, limit=limit)
        if not rows:
            return "no tickets"
        lines = [f"{'CASE':<12} {'STATUS':<8} {'QUEUE':<12} {'LANG':<4} {'CREATED':<20} {'REQUESTER':<30} SUBJECT"]
        for t in rows:
            lines.append(
                f"{t.case_number:<12} {t.status:<8} {t.queue:<12} {t.language:<4} {_ts(t.created_at):<20} "
                f"{t.requester_email[:30]:<30} {t.subject[:60]}"
            )
        return printable("\n".join(lines))


def ticket_detail(app, case_number: str) -> str | None:
    with session_scope(app.session_factory) as s:
        t = repo.ticket_by_case(s, case_number)
        if t is None:
            return None
        out = [
            f"{t.case_number}  {t.subject}",
            f"  status {t.status}, queue {t.queue}, language {t.language}"
            + (f", severity {t.severity}" if t.severity else "")
            + (f", assigned to {t.assignee}" if t.assignee else ""),
            f"  requester {t.requester_name} <{t.requester_email}>",
            f"  created {_ts(t.created_at)}, updated {_ts(t.updated_at)}"
            + (f", first response {_ts(t.first_response_at)}" if t.first_response_at else ", no response yet")
            + (f", solved {_ts(t.solved_at)}" if t.solved_at else "")
            + (f", closed {_ts(t.closed_at)}" if t.closed_at else ""),
        ]
        if t.organisation or t.contract:
            out.append(f"  organisation {t.organisation or '-'}, contract {t.contract or 'none'}")
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
            out.append(
                "  due: "
                + (", ".join(f"{label} {_ts(at)}" for label, at in dues) or "-")
                + (f"; paused since {_ts(t.paused_at)}" if t.paused_at else "")
                + (f"; next escalation check {_ts(t.next_escalation_at)}" if t.next_escalation_at else "")
                + f"  (mailbridge sla explain {t.case_number})"
            )
        if t.checklist:
            out.append("  information:")
            queue = next((q for q in app.settings.queues if q.name == t.queue), None)
            labels = {i.key: i.label("en") for i in (queue.checklist if queue else [])}
            sent = {m.id: m for m in t.messages}
            for key, item in t.checklist.items():
                if not item.get("given"):
                    out.append(f"    [ ] {labels.get(key, key)}: missing")
                    continue
                m = sent.get(item.get("message_id"))
                source = f" (mail of {_ts(m.created_at)} <{m.message_id}>)" if m is not None else ""
                out.append(f"    [x] {labels.get(key, key)}: {item.get('evidence') or 'given'}{source}")
        if t.linked_ticket is not None:
            out.append(f"  follows up {t.linked_ticket.case_number} ({t.linked_ticket.subject})")
        if t.participants:
            out.append("  participants: " + ", ".join(f"{p.email} ({p.role})" for p in t.participants))
        out += ["", "conversation:"]
        first_inbound = next((m.id for m in t.messages if m.direction == "in"), None)
        for m in t.messages:
            arrow = "<-" if m.direction == "in" else "->"
            who = m.sender_email if m.direction == "in" else ", ".join(m.recipients)
            kind = m.kind or "-"
            if m.mail_class and m.mail_class != "human":
                kind += f", {m.mail_class}"
            out.append(f"  {arrow} {_ts(m.created_at)} [{kind}] {who}  <{m.message_id}>")
            out.append(f"     subject: {m.subject}")
            for flag in m.flags or []:
                out.append(f"     FLAG: {flag}")
            if m.routing:
                out.append(f"     routed: {json.dumps(m.routing, ensure_ascii=False)}")
            for a in m.attachments:
                out.append(f"     attachment: {a.filename} ({a.content_type}, {a.size} bytes, sha256 {a.sha256[:12]}…)")
            if m.defects:
                out.append(f"     defects: {len(m.defects)}")
            # The new part of an inbound mail (quoted history removed); the whole text where it has none.
            # (The first mail of a case is shown whole: what it quotes or forwards is the request.)
            body = (m.body_text if m.id == first_inbound else (m.body_new or m.body_text) or "").strip().splitlines()
            for line in body[:8]:
                out.append(f"     | {line}")
            if len(body) > 8:
                out.append(f"     | … ({len(body) - 8} more lines)")
        out += ["", "history:"]
        for e in t.events:
            detail = ", ".join(f"{k}={v}" for k, v in e.detail.items() if v is not None)
            out.append(f"  {_ts(e.created_at)} {e.kind}  {detail}")
        return printable("\n".join(out))


def quarantine_table(app) -> str:
    with session_scope(app.session_factory) as s:
        rows = repo.list_quarantine(s)
        if not rows:
            return "quarantine is empty"
        lines = []
        for q, raw in rows:
            lines.append(
                f"#{q.id} {_ts(q.created_at)} stage={q.stage} from={q.sender or '-'} "
                f"uid={raw.account}/{raw.folder}/{raw.uid} raw={raw.path}"
            )
            lines.append(f"    subject: {q.subject or '-'}")
            lines.append(f"    reason: {q.reason}")
        return printable("\n".join(lines))


def quarantine_detail(app, quarantine_id: int) -> str | None:
    """One quarantined mail: why, where its raw bytes are, and its header block as received."""
    with session_scope(app.session_factory) as s:
        q = repo.quarantine_row(s, quarantine_id)
        if q is None:
            return None
        raw = q.raw
        path = app.raw_store.root / raw.path
        out = [
            f"#{q.id}  {q.status}" + (f" ({q.outcome}, {_ts(q.resolved_at)})" if q.outcome else ""),
            f"  stage {q.stage}, quarantined {_ts(q.created_at)}",
            f"  reason: {q.reason}",
            f"  from {q.sender or '-'}, Message-ID <{q.message_id or '-'}>",
            f"  subject: {q.subject or '-'}",
            f"  mailbox {raw.account}/{raw.folder} UID {raw.uid} (UIDVALIDITY {raw.uidvalidity})",
            f"  raw: {path} ({raw.size} bytes, sha256 {raw.sha256})",
            "",
            "headers:",
        ]
        data = app.raw_store.get(raw.path)
    headers = BytesHeaderParser(policy=compat32).parsebytes(data)
    for name, value in headers.items():
        out.append(f"  {name}: {' '.join(str(value).split())[:300]}")
    return printable("\n".join(out))


def noise_table(app, limit: int = 100) -> str:
    """Auto-replies and bounces that belong to no case, and the addresses our mail bounced from."""
    with session_scope(app.session_factory) as s:
        lines = []
        rows = repo.list_noise(s, limit)
        lines.append(f"{len(rows)} automatic mail(s) that answered nothing of ours" + (":" if rows else ""))
        for raw, m in rows:
            evidence = (m.routing or {}).get("evidence", "")
            lines.append(f"raw #{raw.id} {_ts(raw.received_at)} {raw.mail_class or '-'} from={m.sender_email or '-'}")
            lines.append(f"    subject: {comp.header_safe(m.subject, 200) or '-'}")
            lines.append(f"    evidence: {evidence}")
            lines.append(f"    raw: {raw.path}")
        failing = repo.failing_addresses(s, limit)
        lines.append(f"{len(failing)} failing address(es)" + (":" if failing else ""))
        for a in failing:
            until = f", automatic mail suppressed until {_ts(a.suppressed_until)}" if a.suppressed_until else ""
            lines.append(
                f"{a.email}: {'hard' if a.permanent else 'soft'} bounce {a.last_status or '-'}, "
                f"{a.bounces} since {_ts(a.first_failed_at)}{until}"
            )
        return printable("\n".join(lines))


def sla_explanation(app, case_number: str) -> str | None:
    """How the deadlines of a case were computed (``mailbridge sla explain``); None: no such case."""
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
        events = [(e.kind, e.detail or {}, e.created_at) for e in t.events]
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
    return explain_case(facts, terms, events, app.clock(), expected)


def suppressions_table(app) -> str:
    """The addresses our mail bounced from and nothing lifted since: suppressed ones (a hard bounce;
    no automatic mail until UNTIL) first, then failing ones (soft bounces, or a suppression that ran
    out), with bounce count, last status and reason, and the case of the mail that bounced last."""
    now = app.clock()
    with session_scope(app.session_factory) as s:
        rows = automail.failing(s)
    if not rows:
        return "no address is suppressed or failing"
    rows.sort(key=lambda h: not h.suppressed(now))  # stable: newest bounce first within each group
    header = ("ADDRESS", "STATE", "SINCE", "UNTIL", "BOUNCES", "STATUS", "LAST CASE")
    table = [
        (
            h.address,
            "suppressed" if h.suppressed(now) else "failing",
            _ts(h.since),
            _ts(h.suppressed_until) if h.suppressed(now) else "-",
            str(h.bounces),
            h.last_status or "-",
            h.last_case or "-",
        )
        for h in rows
    ]
    widths = [max(len(r[i]) for r in [header, *table]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(header, widths, strict=True)).rstrip()]
    for h, r in zip(rows, table, strict=True):
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        lines.append(f"    last bounce {_ts(h.last_failed_at)}: {comp.header_safe(h.last_reason or '-', 200)}")
    suppressed = sum(1 for h in rows if h.suppressed(now))
    lines.append(f"{suppressed} suppressed, {len(rows) - suppressed} failing")
    return printable("\n".join(lines))
