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
            f"  status {t.status}, queue {t.queue}, language {t.language}",
            f"  requester {t.requester_name} <{t.requester_email}>",
            f"  created {_ts(t.created_at)}, updated {_ts(t.updated_at)}",
            "",
            "messages:",
        ]
        for m in t.messages:
            arrow = "<-" if m.direction == "in" else "->"
            who = m.sender_email if m.direction == "in" else ", ".join(m.recipients)
            out.append(f"  {arrow} {_ts(m.created_at)} {who}  <{m.message_id}>")
            out.append(f"     subject: {m.subject}")
            if m.routing:
                out.append(f"     routed: {json.dumps(m.routing, ensure_ascii=False)}")
            for a in m.attachments:
                out.append(f"     attachment: {a.filename} ({a.content_type}, {a.size} bytes, sha256 {a.sha256[:12]}…)")
            if m.defects:
                out.append(f"     defects: {len(m.defects)}")
            body = (m.body_text or "").strip().splitlines()
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
