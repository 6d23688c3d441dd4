"""The ordered pipeline steps. Each has a ``name`` and ``__call__(ctx)``; adding a stage is one
class and one line in :func:`default_steps`.

A step may end the mail's run early by setting ``ctx.done`` (a duplicate, a mail to quarantine);
expected outcomes are values on the context, never exceptions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

import structlog
from sqlalchemy.orm import Session

from mailbridge.domain import ParsedMail, TicketStatus
from mailbridge.ingest import classify
from mailbridge.ingest.matcher import match_ticket
from mailbridge.ingest.parser import ParseError, parse_mail
from mailbridge.outbound import compose as comp
from mailbridge.outbound.outbox import enqueue
from mailbridge.settings import QueueSettings
from mailbridge.store import repositories as repo
from mailbridge.store.models import AttachmentRow, Message, RawMessage, Ticket
from mailbridge.store.rawstore import ContentStore, sha256_hex
from mailbridge.store.repositories import TicketRef

log = structlog.get_logger(__name__)


@dataclass
class InboundMail:
    """One fetched mail and where it came from; the raw bytes are already in the raw store."""

    raw: bytes
    sha256: str
    raw_path: str
    account: str
    folder: str
    uidvalidity: int
    uid: int
    # Filled in ahead of the transaction by the parse pool (ingest/prepare.py), else by Parse.
    parsed: ParsedMail | None = None
    parse_error: str | None = None


@dataclass
class MailContext:
    mail: InboundMail
    session: Session
    now: datetime
    parsed: ParsedMail | None = None
    parse_error: str | None = None
    raw_id: int | None = None
    queue: QueueSettings | None = None
    language: str | None = None
    ticket: TicketRef | None = None
    new_ticket: bool = False
    message_id: int | None = None
    # History entries of this mail, written with one executemany at the end of the transaction.
    events: list[dict] = field(default_factory=list)
    routing: dict = field(default_factory=dict)
    ack_suppressed: str | None = None
    ignored: str | None = None
    disposition: str = "processed"
    quarantine: tuple[str, str] | None = None  # (stage, reason)
    done: bool = False
    stage: str = ""  # the step running now, for logs and quarantine reasons

    def event(self, kind: str, **detail) -> None:
        """Add an entry to the ticket's history (the ticket of this mail)."""
        assert self.ticket is not None
        self.events.append({"ticket_id": self.ticket.id, "kind": kind, "detail": detail, "created_at": self.now})

    def to_quarantine(self, stage: str, reason: str) -> None:
        self.quarantine = (stage, reason)
        self.disposition = "quarantined"
        self.done = True


class Step(Protocol):
    name: str

    def __call__(self, ctx: MailContext) -> None: ...


class Parse:
    """Bytes → ParsedMail. Touches no database, so it runs before the transaction takes its lock.

    A mail may arrive already parsed (by the parse pool, see ``ingest/prepare.py``). A mail over the
    size limit is not parsed at all; the failure is recorded and Validate quarantines it once the
    raw row exists.
    """

    name = "parse"

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes

    def __call__(self, ctx: MailContext) -> None:
        if ctx.mail.parsed is not None or ctx.mail.parse_error is not None:
            ctx.parsed, ctx.parse_error = ctx.mail.parsed, ctx.mail.parse_error
        elif len(ctx.mail.raw) > self.max_bytes:
            ctx.parse_error = f"mail is {len(ctx.mail.raw)} bytes, over the limit of {self.max_bytes}"
        else:
            try:
                ctx.parsed = parse_mail(ctx.mail.raw)
            except ParseError as e:
                ctx.parse_error = f"unparseable: {e}"
        if ctx.parsed is not None:
            structlog.contextvars.bind_contextvars(message_id=ctx.parsed.message_id)


class Deduplicate:
    """A mail we already have (same bytes, or same Message-ID) is not processed again (UIDVALIDITY
    changes, a crash between commit and MOVE, the same mail delivered to two support addresses)."""

    name = "deduplicate"

    def __call__(self, ctx: MailContext) -> None:
        mid = ctx.parsed.message_id if ctx.parsed is not None else None
        dup = repo.find_duplicate(ctx.session, ctx.mail.sha256, mid)
        if dup is not None:
            dup_id, dup_disposition = dup
            ctx.disposition = "duplicate"
            ctx.routing = {"rule": "duplicate", "evidence": f"same as raw message {dup_id} ({dup_disposition})"}
            ctx.done = True
            log.info("mail_duplicate", original_raw_id=dup_id)


class RecordRaw:
    """The raw-message row: where the bytes are and which mailbox/UID they came from."""

    name = "record_raw"

    def __call__(self, ctx: MailContext) -> None:
        m = ctx.mail
        ctx.raw_id = repo.insert_row(
            ctx.session,
            RawMessage,
            {
                "sha256": m.sha256,
                "size": len(m.raw),
                "path": m.raw_path,
                "account": m.account,
                "folder": m.folder,
                "uidvalidity": m.uidvalidity,
                "uid": m.uid,
                "disposition": "processed",  # corrected at the end if the mail went elsewhere
                "received_at": ctx.now,
            },
        )


class Validate:
    """Mails that could not be parsed, or whose content cannot be trusted, go to quarantine instead
    of becoming a ticket."""

    name = "validate"

    def __call__(self, ctx: MailContext) -> None:
        p = ctx.parsed
        if ctx.parse_error is not None or p is None:
            ctx.to_quarantine("parse", ctx.parse_error or "not parsed")
        elif p.fatal_defects:
            ctx.to_quarantine(self.name, "; ".join(dict.fromkeys(p.fatal_defects)))
        elif p.from_ is None:
            ctx.to_quarantine(self.name, "no usable sender address in From")


class Classify:
    """Machine-made mail and our own mail are noted; the language is detected."""

    name = "classify"

    def __init__(self, own: frozenset[str], detector: classify.LanguageDetector):
        self.own = own
        self.detector = detector

    def __call__(self, ctx: MailContext) -> None:
        p = ctx.parsed
        assert p is not None
        own = classify.from_own_address(p, self.own)
        if own.hit:
            # Never processed as a customer's mail: it would answer ourselves (a loop).
            ctx.ignored = own.reason
            return
        auto = classify.auto_submitted(p)
        if auto.hit:
            ctx.ack_suppressed = auto.reason


class Route:
    """The queue: the support address the mail was sent to, else the account's default queue."""

    name = "route"

    def __init__(self, settings):
        self.settings = settings

    def __call__(self, ctx: MailContext) -> None:
        p = ctx.parsed
        assert p is not None
        for addr in p.recipient_emails:
            q = self.settings.queue_for_address(addr)
            if q is not None:
                ctx.queue = q
                ctx.routing["queue"] = {"queue": q.name, "by": "recipient", "evidence": addr}
                return
        ctx.queue = self.settings.default_queue_for(ctx.mail.account)
        ctx.routing["queue"] = {"queue": ctx.queue.name, "by": "account-default", "evidence": ctx.mail.account}


class Match:
    name = "match"

    def __init__(self, fmt, detector: classify.LanguageDetector):
        self.fmt = fmt
        self.detector = detector

    def __call__(self, ctx: MailContext) -> None:
        if ctx.ignored:
            return
        p = ctx.parsed
        assert p is not None and ctx.queue is not None
        m = match_ticket(ctx.session, p, self.fmt)
        ctx.routing.update(m.as_routing())
        ctx.ticket = m.ticket
        guess = p.language if p.language_detected else self.detector.guess(p.subject, p.text)
        ctx.language = guess or ctx.queue.language


class OpenTicket:
    """A mail with no reference to an existing case opens one, with the next case number."""

    name = "open_ticket"

    def __init__(self, fmt, first_serial: int):
        self.fmt = fmt
        self.first_serial = first_serial

    def __call__(self, ctx: MailContext) -> None:
        if ctx.ignored or ctx.ticket is not None:
            return
        p = ctx.parsed
        assert p is not None and p.from_ is not None and ctx.queue is not None and ctx.language
        serial = repo.allocate_serial(ctx.session, self.fmt, self.first_serial)
        values = {
            "case_number": self.fmt.format(serial),
            "serial": serial,
            "queue": ctx.queue.name,
            "status": TicketStatus.NEW.value,
            "subject": comp.header_safe(p.subject, 2000),
            "requester_email": p.from_.email,
            "requester_name": comp.header_safe(p.from_.name, 300),
            "language": ctx.language,
            "created_at": ctx.now,
            "updated_at": ctx.now,
        }
        ticket_id = repo.insert_row(ctx.session, Ticket, values)
        ctx.ticket = TicketRef(
            id=ticket_id,
            **{k: values[k] for k in ("case_number", "queue", "status", "subject", "requester_email")},
            requester_name=values["requester_name"],
            language=values["language"],
        )
        ctx.new_ticket = True
        structlog.contextvars.bind_contextvars(case=ctx.ticket.case_number)
        ctx.event("created", queue=ctx.queue.name, language=ctx.language, requester=p.from_.email)
        log.info("ticket_created", queue=ctx.queue.name, language=ctx.language)


class StoreMessage:
    """The inbound message row with its attachments (bytes in the content-addressed store)."""

    name = "store_message"

    def __init__(self, attachments: ContentStore):
        self.attachments = attachments

    def __call__(self, ctx: MailContext) -> None:
        p = ctx.parsed
        assert p is not None and ctx.raw_id is not None
        if ctx.ignored:
            ctx.disposition = "ignored"
            ctx.routing.update({"rule": "ignored", "evidence": ctx.ignored})
        ctx.message_id = repo.insert_row(
            ctx.session,
            Message,
            {
                "ticket_id": ctx.ticket.id if ctx.ticket else None,
                "direction": "in",
                "message_id": p.message_id,
                "in_reply_to": " ".join(p.in_reply_to) or None,
                "references": " ".join(p.references) or None,
                "sender_email": p.from_.email if p.from_ else "",
                "sender_name": p.from_.name if p.from_ else "",
                "recipients": p.recipient_emails,
                "subject": p.subject,
                "body_text": p.text,
                "date": p.date,
                "language": ctx.language,
                "raw_id": ctx.raw_id,
                "routing": ctx.routing,
                "defects": p.defects or None,
                "created_at": ctx.now,
            },
        )
        rows = []
        for a in p.attachments:
            digest, _ = self.attachments.put(a.data)
            rows.append(
                {
                    "message_id": ctx.message_id,
                    "filename": comp.header_safe(a.filename, 255) or "unnamed",
                    "content_type": a.content_type[:255],
                    "size": len(a.data),
                    "sha256": digest,
                    "content_id": a.content_id,
                }
            )
        repo.insert_rows(ctx.session, AttachmentRow, rows)
        if ctx.ticket is not None and not ctx.new_ticket:
            repo.update_row(ctx.session, Ticket, ctx.ticket.id, {"updated_at": ctx.now})
            ctx.event("message_received", rule=ctx.routing.get("rule"), sender=p.from_.email if p.from_ else "")
            log.info("message_attached", rule=ctx.routing.get("rule"))


class Acknowledge:
    """The acknowledgement of a new ticket, into the outbox in this same transaction."""

    name = "acknowledge"

    def __init__(self, templates, settings):
        self.templates = templates
        self.settings = settings

    def __call__(self, ctx: MailContext) -> None:
        if not ctx.new_ticket:
            return
        t, p, q = ctx.ticket, ctx.parsed, ctx.queue
        assert t is not None and p is not None and q is not None and p.from_ is not None
        if ctx.ack_suppressed:
            ctx.event("ack_suppressed", reason=ctx.ack_suppressed)
            log.info("ack_suppressed", reason=ctx.ack_suppressed)
            return
        to = p.reply_to[0] if p.reply_to and p.reply_to[0].email not in self.settings.own_addresses else p.from_
        tctx = {
            "case_number": t.case_number,
            "subject": t.subject,
            "requester_name": t.requester_name,
            "requester_email": t.requester_email,
            "queue_name": q.display_name,
            "support_address": q.address,
            "attachments": [a.filename for a in p.attachments],
        }
        subject = comp.tagged_subject(
            t.case_number, self.templates.render(t.language, "ack.subject.j2", **tctx).strip()
        )
        refs = comp.references_for(p.message_id, p.references)
        out = comp.compose(
            from_name=q.display_name,
            from_addr=q.address,
            to=[(to.name, to.email)],
            subject=subject,
            text=self.templates.render(t.language, "ack.txt.j2", **tctx),
            html=self.templates.render(t.language, "ack.html.j2", **tctx),
            date=ctx.now,
            in_reply_to=p.message_id,
            references=refs,
            auto_submitted="auto-replied",
            language=t.language,
        )
        outbox_id = enqueue(
            ctx.session,
            out,
            kind="ack",
            dedup_key=f"ack:{t.case_number}",
            now=ctx.now,
            ticket_id=t.id,
            in_reply_to=p.message_id,
            references=refs,
            language=t.language,
        )
        ctx.event("ack_queued", outbox_id=outbox_id, message_id=out.message_id, to=to.email)


def default_steps(settings, templates, detector, attachments: ContentStore) -> list[Step]:
    fmt = settings.case_numbers.fmt
    return [
        Parse(settings.ingest.max_message_bytes),
        Deduplicate(),
        RecordRaw(),
        Validate(),
        Classify(settings.own_addresses, detector),
        Route(settings),
        Match(fmt, detector),
        OpenTicket(fmt, settings.case_numbers.first_serial),
        StoreMessage(attachments),
        Acknowledge(templates, settings),
    ]


__all__ = ["InboundMail", "MailContext", "default_steps", "sha256_hex"]
