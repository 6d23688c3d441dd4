"""The ordered pipeline steps. Each has a ``name`` and ``__call__(ctx)``; adding a stage is one
class and one line in :func:`default_steps`.

A step may end the mail's run early by setting ``ctx.done`` (a duplicate, a mail to quarantine);
expected outcomes are values on the context, never exceptions.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Protocol

import structlog

from mailbridge.domain import ParsedMail, TicketStatus
from mailbridge.ingest import noise
from mailbridge.ingest.clocks import TrackClocks
from mailbridge.ingest.context import InboundMail, MailContext
from mailbridge.ingest.conversation import AgentCommands, ApplyReply, Identify
from mailbridge.ingest.language import LanguageDetector
from mailbridge.ingest.matcher import Matcher
from mailbridge.ingest.noise import MailClass
from mailbridge.ingest.outgoing import Acknowledge, CommandErrors, NotifyAgents, OversizeNotice, Relay
from mailbridge.ingest.parser import ParseError, parse_mail
from mailbridge.ingest.references import DEFAULT_REPLY_PREFIXES, SubjectNormalizer
from mailbridge.outbound import compose as comp
from mailbridge.outbound.guard import AutoMailGuard
from mailbridge.outbound.messages import MailBuilder
from mailbridge.sla.deadlines import Deadlines
from mailbridge.sla.escalation import Escalations
from mailbridge.store import repositories as repo
from mailbridge.store.models import AttachmentRow, Message, RawMessage, Ticket
from mailbridge.store.rawstore import ContentStore, sha256_hex
from mailbridge.store.repositories import TicketRef

log = structlog.get_logger(__name__)


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
        if ctx.parsed is None:
            ctx.header_block = _header_block(ctx.mail.raw)
        if ctx.parsed is not None:
            structlog.contextvars.bind_contextvars(message_id=ctx.parsed.message_id)


# How far into an oversized mail we look for the end of its header block (the rest is not read).
MAX_HEADER_BLOCK = 256 * 1024


def _header_block(raw: bytes) -> ParsedMail | None:
    """The header block of a mail we did not parse whole (over the size limit, or the parser gave
    up), parsed alone: who sent it and whether it is automatic. None when there is none."""
    head = raw[:MAX_HEADER_BLOCK]
    ends = [i for i in (head.find(b"\r\n\r\n"), head.find(b"\n\n")) if i >= 0]
    if not ends:
        return None
    try:
        return parse_mail(head[: min(ends)] + b"\r\n\r\n")
    except ParseError:
        return None


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
                "mail_class": ctx.mail_class.kind.value if ctx.mail_class else None,
            },
        )


class Validate:
    """Mails that could not be parsed, or whose content cannot be trusted, go to quarantine instead
    of becoming a ticket; the sender of a mail over the size limit is told (``notice``)."""

    name = "validate"

    def __init__(self, max_bytes: int, notice=None):
        self.max_bytes = max_bytes
        self.notice = notice

    def __call__(self, ctx: MailContext) -> None:
        p = ctx.parsed
        if p is None and len(ctx.mail.raw) > self.max_bytes:
            ctx.to_quarantine("size", ctx.parse_error or "over the size limit")
            if self.notice is not None:
                self.notice(ctx)
        elif ctx.parse_error is not None or p is None:
            ctx.to_quarantine("parse", ctx.parse_error or "not parsed")
        elif p.fatal_defects:
            ctx.to_quarantine(self.name, "; ".join(dict.fromkeys(p.fatal_defects)))
        elif p.from_ is None:
            ctx.to_quarantine(self.name, "no usable sender address in From")


class Classify:
    """The mail's class (ingest/noise.py): a person's, auto-forwarded, an out-of-office or other
    auto-reply, a hard or soft bounce, list mail, or our own."""

    name = "classify"

    def __init__(self, own: frozenset[str], detector: LanguageDetector, max_bytes: int):
        self.own = own
        self.max_bytes = max_bytes
        self.detector = detector

    def __call__(self, ctx: MailContext) -> None:
        # Before the raw row is written (it records the class); a mail the parser did not read
        # whole (too large, or it gave up) by its header block.
        p = ctx.parsed or ctx.header_block
        if p is None:
            return
        raw = ctx.mail.raw if len(ctx.mail.raw) <= self.max_bytes else b""
        ctx.mail_class = c = noise.classify_mail(p, raw, self.own)
        if c.kind == MailClass.OWN:
            # Never processed as a customer's mail: it would answer ourselves (a loop).
            ctx.ignored = c.reason
            return
        if not c.personal:
            # Never acknowledged, relayed, allowed to reopen a case or to notify anyone.
            ctx.ack_suppressed = c.reason
        elif c.kind == MailClass.AUTO_FORWARDED:
            ctx.flags.append(f"forwarded automatically by the sender's mail server ({c.reason})")


class Route:
    """The queue: the support address the mail was written to (To, Cc), else the one it was delivered
    to, else the account's default queue."""

    name = "route"

    def __init__(self, settings):
        self.settings = settings

    def __call__(self, ctx: MailContext) -> None:
        p = ctx.parsed
        assert p is not None
        # The addresses the customer wrote to come first: a server that delivers a second support
        # address into a shared mailbox stamps Delivered-To with the mailbox's own address. The
        # envelope's (Delivered-To, X-Original-To) decide for a Bcc.
        for addr in [*(a.email for a in [*p.to, *p.cc]), *p.delivered_to]:
            q = self.settings.queue_for_address(addr)
            if q is not None:
                ctx.queue = q
                ctx.routing["queue"] = {"queue": q.name, "by": "recipient", "evidence": addr}
                return
        ctx.queue = self.settings.default_queue_for(ctx.mail.account)
        ctx.routing["queue"] = {"queue": ctx.queue.name, "by": "account-default", "evidence": ctx.mail.account}


class MatchCase:
    """Which existing case the mail is about (``ingest/matcher.py``), and its language."""

    name = "match"

    def __init__(self, matcher: Matcher, detector: LanguageDetector):
        self.matcher = matcher
        self.detector = detector

    def __call__(self, ctx: MailContext) -> None:
        if ctx.ignored:
            return
        p = ctx.parsed
        assert p is not None and ctx.queue is not None
        bounce = ctx.mail_class.bounce if ctx.mail_class is not None else None
        if bounce is not None:
            # A bounce names the mail it returns, not its case: look for that one of ours.
            p = replace(
                p,
                references=[*p.references, *bounce.original_message_ids],
                subject=f"{p.subject} {bounce.original_subject or ''}".strip(),
            )
        ctx.match = m = self.matcher.match(ctx.session, p)
        ctx.routing.update(m.as_routing())
        # Read again, locked: another mail or the close job must not change this case meanwhile.
        ctx.ticket = repo.ticket_ref(ctx.session, ticket_id=m.ticket.id, lock=True) if m.ticket else None
        if m.conflicts:
            ctx.flags.append("conflicting references: " + ", ".join(c["case"] for c in m.conflicts))
        p = ctx.parsed
        guess = p.language if p.language_detected else self.detector.guess(p.subject, p.new_text or p.text)
        ctx.language = guess or ctx.queue.language


class RecordNoise:
    """Auto-replies and bounces never open a case. One that answers a case is recorded on it without
    changing it (an out-of-office reply; a bounce also marks its recipients as failing, and a hard
    bounce stops automatic mail to them); one that answers nothing of ours is kept for the operator
    (``mailbridge noise list``). List mail may open a case (a customer can write through a list),
    but is never acknowledged.

    A new mail from a hard-bounced address does not lift the suppression: spam with a forged sender
    is exactly what would otherwise make us bounce again and again (backscatter)."""

    name = "noise"

    def __init__(self, guard: AutoMailGuard):
        self.guard = guard

    def __call__(self, ctx: MailContext) -> None:
        c, p = ctx.mail_class, ctx.parsed
        if ctx.ignored or c is None or p is None:
            return
        if c.personal or c.kind == MailClass.LIST:
            return
        t = ctx.ticket
        if t is None:
            ctx.noise = c.reason
            ctx.routing.update({"rule": "noise", "evidence": f"{c.kind}: {c.reason}"})
            log.info("noise_unmatched", mail_class=c.kind.value, reason=c.reason)
            return
        if c.bounce is not None:
            ctx.kind = "bounce"
            failed = []
            for address in c.bounce.recipients:
                until = self.guard.record_bounce(
                    ctx.session,
                    address,
                    permanent=c.bounce.permanent,
                    status=c.bounce.status,
                    reason=c.reason,
                    ticket_id=t.id,
                    now=ctx.now,
                )
                failed.append({"address": address, "suppressed_until": until.isoformat() if until else None})
            ctx.event(
                "delivery_failed",
                permanent=c.bounce.permanent,
                status=c.bounce.status,
                addresses=failed,
                bounced=list(c.bounce.original_message_ids),
                reason=c.reason,
            )
            ctx.flags.append(
                f"{'hard' if c.bounce.permanent else 'soft'} bounce for {', '.join(c.bounce.recipients) or '?'}"
            )
            log.warning("mail_bounced", permanent=c.bounce.permanent, recipients=list(c.bounce.recipients))
        else:
            ctx.kind = "auto"
            ctx.event("auto_reply_received", mail_class=c.kind.value, reason=c.reason)


class OpenTicket:
    """A mail that belongs to no case (or that must not join the case it names) opens one with the
    next case number; the requester and the customers in Cc become its participants."""

    name = "open_ticket"

    def __init__(self, fmt, first_serial: int, normalizer: SubjectNormalizer, settings, deadlines: Deadlines):
        self.fmt = fmt
        self.first_serial = first_serial
        self.normalizer = normalizer
        self.settings = settings
        self.deadlines = deadlines
        self.tag_re = fmt.tag_pattern()

    def _reply_to(self, p) -> str | None:
        """The first mail's Reply-To when it names someone else (a web form's noreply sender)."""
        if p.reply_to and p.from_ is not None:
            addr = p.reply_to[0].email
            if (
                addr != p.from_.email
                and addr not in self.settings.own_addresses
                and not any(q.is_agent(addr) or addr in q.notify_addresses for q in self.settings.queues)
                and len(addr) <= 320
            ):
                return addr
        return None

    def __call__(self, ctx: MailContext) -> None:
        if ctx.ignored or ctx.noise or ctx.ticket is not None:
            return
        p = ctx.parsed
        assert p is not None and p.from_ is not None and ctx.queue is not None and ctx.language
        # The severity the mail asks for and the deadlines it sets (no scheme: no promise). The whole
        # first mail counts: a forwarded error report is the request.
        reply_to = self._reply_to(p)
        # The organisation of whoever the case answers to, and whether it has a response promise.
        customer = self.deadlines.customer(ctx.queue.name, reply_to or p.from_.email)
        sla = self.deadlines.assess(ctx.queue.name, p.subject, p.text, ctx.now, customer)
        ctx.sla = sla
        ctx.customer = customer
        serial = repo.allocate_serial(ctx.session, self.fmt, self.first_serial)
        subject = p.subject
        if ctx.link_from is not None:
            # The old case's tag and the reply prefixes are not part of the new case's subject.
            subject = self.normalizer.topic(subject, self.tag_re) or subject
        values = {
            "case_number": self.fmt.format(serial),
            "serial": serial,
            "queue": ctx.queue.name,
            "status": TicketStatus.NEW.value,
            "subject": comp.header_safe(subject, 2000),
            "requester_email": p.from_.email,
            "requester_name": comp.header_safe(p.from_.name, 300),
            "language": ctx.language,
            "created_at": ctx.now,
            "updated_at": ctx.now,
            "linked_ticket_id": ctx.link_from.id if ctx.link_from is not None else None,
            "reply_to": reply_to,
            "organisation": customer.organisation,
            "contract": customer.contract,
            "severity": sla.level.key if sla.level else None,
            "first_response_due": sla.first_response_due,
            "resolution_due": sla.resolution_due,
        }
        ticket_id = repo.insert_row(ctx.session, Ticket, values)
        ctx.ticket = TicketRef(
            id=ticket_id,
            **{k: values[k] for k in ("case_number", "queue", "status", "subject", "requester_email")},
            requester_name=values["requester_name"],
            language=values["language"],
            created_at=ctx.now,
            linked_ticket_id=values["linked_ticket_id"],
            reply_to=values["reply_to"],
            severity=values["severity"],
            organisation=customer.organisation,
            contract=customer.contract,
        )
        ctx.new_ticket = True
        ctx.role = "requester"
        if ctx.ack_suppressed:
            ctx.flags.append(f"automatic mail ({ctx.ack_suppressed}): probably no request of a person")
        structlog.contextvars.bind_contextvars(case=ctx.ticket.case_number)
        people = [(p.from_.email, p.from_.name, "requester")]
        own = self.settings.own_addresses
        for a in p.cc:
            # Cc'd customers take part; our own addresses and the queue's agents do not.
            if a.email not in own and not ctx.queue.is_agent(a.email):
                people.append((a.email, a.name, "customer"))
        repo.add_participants(ctx.session, ticket_id, people, ctx.now, new_ticket=True)
        ctx.event(
            "created",
            queue=ctx.queue.name,
            language=ctx.language,
            requester=p.from_.email,
            organisation=customer.organisation,
            contract=customer.contract,
            promised=customer.promised,
        )
        if sla.level is not None:
            ctx.event(
                "severity_set",
                new=sla.level.key,
                by="detection" if sla.words else "default",
                words=sla.words,
                first_response_due=sla.first_response_due.isoformat() if sla.first_response_due else None,
                resolution_due=sla.resolution_due.isoformat() if sla.resolution_due else None,
            )
        if ctx.link_from is not None:
            ctx.event("linked", to=ctx.link_from.case_number, reason=ctx.link_reason)
            ctx.events.append(
                {
                    "ticket_id": ctx.link_from.id,
                    "kind": "follow_up_case",
                    "detail": {"case": ctx.ticket.case_number, "reason": ctx.link_reason},
                    "created_at": ctx.now,
                }
            )
        log.info("ticket_created", queue=ctx.queue.name, language=ctx.language, linked=values["linked_ticket_id"])


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
        elif ctx.noise:
            ctx.disposition = "noise"
        if ctx.ack_suppressed and ctx.kind == "customer":
            ctx.kind = "auto"  # machine-made, also when it opened the case
        if ctx.ticket is not None:
            ctx.routing["author"] = {"role": ctx.role, "proof": ctx.agent_proof, "kind": ctx.kind}
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
                "body_new": p.new_text,
                "kind": ctx.kind if ctx.ticket is not None else None,
                "mail_class": ctx.mail_class.kind.value if ctx.mail_class else None,
                "flags": ctx.flags or None,
                "thread_index": comp.header_safe(p.header("thread-index") or "", 2048) or None,
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
            ctx.event(
                "message_received",
                rule=ctx.routing.get("rule"),
                sender=p.from_.email if p.from_ else "",
                message_kind=ctx.kind,
                flags=ctx.flags or None,
            )
            log.info("message_attached", rule=ctx.routing.get("rule"), kind=ctx.kind)


def default_steps(
    settings, templates, detector, attachments: ContentStore, secrets: list[bytes], deadlines: Deadlines
) -> list[Step]:
    """The pipeline, in order. Matching and who-wrote-it come before the case is opened or changed;
    everything a mail makes us send comes last, in the same transaction."""
    fmt = settings.case_numbers.fmt
    conv = settings.conversations
    normalizer = SubjectNormalizer(conv.reply_prefixes if conv.reply_prefixes is not None else DEFAULT_REPLY_PREFIXES)
    matcher = Matcher(fmt, secrets, frozenset(conv.public_domains))
    builder = MailBuilder(templates, fmt, normalizer, secrets)
    guard = AutoMailGuard(settings.auto_mail)
    return [
        Parse(settings.ingest.max_message_bytes),
        Deduplicate(),
        Classify(settings.own_addresses, detector, settings.ingest.max_message_bytes),
        RecordRaw(),
        Validate(
            settings.ingest.max_message_bytes,
            OversizeNotice(builder, settings, guard) if settings.auto_mail.oversize_notice else None,
        ),
        Route(settings),
        MatchCase(matcher, detector),
        RecordNoise(guard),
        Identify(settings),
        ApplyReply(settings, normalizer),
        OpenTicket(fmt, settings.case_numbers.first_serial, normalizer, settings, deadlines),
        AgentCommands(settings, deadlines),
        StoreMessage(attachments),
        Acknowledge(builder, settings, deadlines, guard),
        Relay(builder, settings),
        CommandErrors(builder, settings),
        NotifyAgents(builder, settings),
        TrackClocks(settings, deadlines, Escalations(settings, deadlines, builder)),
    ]


__all__ = ["InboundMail", "MailContext", "default_steps", "sha256_hex"]
