"""``mailbridge privacy export ADDRESS -o FILE.zip``: everything held about a person, for an access
request (GDPR Art. 15).

The zip holds ``index.html`` (readable in a browser, ``templates/<lang>/privacy_export.html.j2``,
autoescaped), ``data.json`` (the same, for machines), and per case ``cases/<case>/<n>.txt`` (a
message's text), ``<n>.eml`` (the mail as received, or as we sent it) and ``<n>-files/<name>`` (its
attachments). Included:

- every case the person opened (requester or Reply-To), whole: its messages, history, participants;
- on other cases, the messages the person wrote or received (sender, To/Cc) and the history entries
  that name them — not the rest of another customer's case;
- their auto-replies and bounces of no case, quarantined mails, the bounce/suppression row and the
  automatic mails counted for them.
"""

from __future__ import annotations

import json
import re
import zipfile
from datetime import datetime
from pathlib import Path

import structlog

from mailbridge.outbound.templates import Templates
from mailbridge.privacy.erase import normalise
from mailbridge.store import privacy_queries as pq
from mailbridge.store.db import session_scope
from mailbridge.store.rawstore import ContentStore

log = structlog.get_logger(__name__)

_UNSAFE = re.compile(r"[^\w.-]+", re.UNICODE)


def safe_name(name: str, fallback: str) -> str:
    """A file name for inside the zip: no directories, no control characters."""
    cleaned = _UNSAFE.sub("_", Path(name or "").name).strip("._")
    return cleaned[:100] or fallback


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t is not None else None


def _names(address: str, value) -> bool:
    return address in json.dumps(value, ensure_ascii=False, default=str).lower()


class Exporter:
    def __init__(
        self, session_factory, raw_store: ContentStore, attachments: ContentStore, templates: Templates, clock
    ):
        self.session_factory = session_factory
        self.raw_store = raw_store
        self.attachments = attachments
        self.templates = templates
        self.clock = clock

    def export(self, address: str, output: Path, *, language: str = "en", by: str = "operator") -> dict:
        """Write the zip; return its data (what ``data.json`` holds)."""
        a = normalise(address)
        now = self.clock()
        # name in the zip → its bytes, or the file to copy (attachments: read one at a time).
        files: dict[str, bytes | Path] = {}
        with session_scope(self.session_factory) as s:
            refs = {c.id: c for c in pq.person_cases(s, a)}
            cases = [self._case(t, refs[t.id].own, a, files) for t in pq.tickets_for_export(s, list(refs))]
            noise = [self._message(m, f"other/{m.id}", files) for m in pq.noise_of(s, a)]
            quarantined = []
            for q in pq.quarantined_of(s, a):
                entry = {
                    "id": q.id,
                    "received": _iso(q.created_at),
                    "subject": q.subject,
                    "reason": q.reason,
                    "status": q.status,
                }
                entry["raw"] = self._raw(
                    q.raw.path if q.raw.purged_at is None else None, f"quarantine/{q.id}.eml", files
                )
                quarantined.append(entry)
            health, auto = pq.suppression_of(s, a)
            pq.audit(s, "export", by, now, cases=[c["case_number"] for c in cases], file=output.name)
        data = {
            "address": a,
            "generated_at": now.isoformat(),
            "cases": cases,
            "other_messages": noise,
            "quarantined": quarantined,
            "suppression": [{k: _iso(v) if isinstance(v, datetime) else v for k, v in h.items()} for h in health],
            "automatic_mails": [{**m, "created_at": _iso(m["created_at"])} for m in auto],
        }
        html = self.templates.render(language, "privacy_export.html.j2", data=data)
        with zipfile.ZipFile(output, "w", compression=zipfile.ZIP_DEFLATED) as z:
            z.writestr("index.html", html)
            z.writestr("data.json", json.dumps(data, ensure_ascii=False, indent=2))
            for name, content in sorted(files.items()):
                if isinstance(content, Path):
                    z.write(content, name)
                else:
                    z.writestr(name, content)
        log.info("privacy_exported", cases=len(cases), files=len(files))
        return data

    def _raw(self, path: str | None, name: str, files: dict) -> str | None:
        if path is None or not (self.raw_store.root / path).exists():
            return None
        files[name] = self.raw_store.get(path)
        return name

    def _message(self, m, prefix: str, files: dict) -> dict:
        out = {
            "id": m.id,
            "direction": m.direction,
            "date": _iso(m.date or m.created_at),
            "from": m.sender_email,
            "from_name": m.sender_name,
            "to": list(m.recipients or []),
            "subject": m.subject,
            "kind": m.kind,
            "text": None,
            "raw": None,
            "attachments": [],
        }
        if m.body_text:
            out["text"] = f"{prefix}.txt"
            files[out["text"]] = m.body_text.encode("utf-8")
        if m.raw is not None and m.raw.purged_at is None:
            out["raw"] = self._raw(m.raw.path, f"{prefix}.eml", files)
        elif m.outbox is not None and m.outbox.raw:
            out["raw"] = f"{prefix}.eml"
            files[out["raw"]] = m.outbox.raw
        for i, att in enumerate(m.attachments, 1):
            entry = {"filename": att.filename, "content_type": att.content_type, "size": att.size, "file": None}
            stored = self.attachments.root / self.attachments.relpath(att.sha256)
            if att.purged_at is None and stored.exists():
                entry["file"] = f"{prefix}-files/{i}-{safe_name(att.filename, 'attachment')}"
                files[entry["file"]] = stored
            out["attachments"].append(entry)
        return out

    def _case(self, t, own: bool, a: str, files: dict) -> dict:
        messages = [
            m
            for m in t.messages
            if own or (m.sender_email or "").lower() == a or any((r or "").lower() == a for r in m.recipients or [])
        ]
        events = [e for e in t.events if own or _names(a, e.detail)]
        return {
            "case_number": t.case_number,
            "role": "requester" if own else next((p.role for p in t.participants if p.email.lower() == a), "named"),
            "queue": t.queue,
            "status": t.status,
            "subject": t.subject if own else None,
            "opened": _iso(t.created_at),
            "solved": _iso(t.solved_at),
            "closed": _iso(t.closed_at),
            "participants": [
                {"email": p.email, "name": p.name, "role": p.role}
                for p in t.participants
                if own or p.email.lower() == a
            ],
            "messages": [self._message(m, f"cases/{t.case_number}/{m.id}", files) for m in messages],
            "events": [{"kind": e.kind, "at": _iso(e.created_at), "detail": e.detail} for e in events],
        }
