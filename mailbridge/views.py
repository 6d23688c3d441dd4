"""Plain-text views for the CLI: ticket lists, one ticket with messages and history, quarantine."""

from __future__ import annotations

import json

from mailbridge.store import repositories as repo
from mailbridge.store.db import session_scope


def _ts(dt) -> str:
    return dt.strftime("%Y-%m-%d %H:%M:%SZ") if dt else "-"


def tickets_table(app, queue=None, status=None, limit=50) -> str:
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
        return "\n".join(lines)


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
        if t.linked_ticket is not None:
            out.append(f"  follows up {t.linked_ticket.case_number} ({t.linked_ticket.subject})")
        if t.participants:
            out.append("  participants: " + ", ".join(f"{p.email} ({p.role})" for p in t.participants))
        out += ["", "conversation:"]
        first_inbound = next((m.id for m in t.messages if m.direction == "in"), None)
        for m in t.messages:
            arrow = "<-" if m.direction == "in" else "->"
            who = m.sender_email if m.direction == "in" else ", ".join(m.recipients)
            out.append(f"  {arrow} {_ts(m.created_at)} [{m.kind or '-'}] {who}  <{m.message_id}>")
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
        return "\n".join(out)


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
        return "\n".join(lines)
