"""Pipeline steps that decide what a mail makes us send, written to the outbox in the mail's own
transaction: the acknowledgement of a new case, the relay of a proven agent's reply to the customer,
the notification of the queue's agents, and the error report for bad agent commands.

The first proven agent reply that reaches the customer (relayed, or written to them directly) sets
the case's first-response time, which the SLA clock reads.
"""

from __future__ import annotations

from datetime import timedelta

import structlog

from mailbridge.domain import Address, TicketStatus
from mailbridge.ingest.commands import STATUS_COMMANDS
from mailbridge.ingest.context import MailContext
from mailbridge.lifecycle import status_times
from mailbridge.outbound.compose import OutgoingAttachment
from mailbridge.outbound.guard import AutoMailGuard
from mailbridge.outbound.messages import Built, MailBuilder
from mailbridge.outbound.outbox import enqueue
from mailbridge.settings import Settings
from mailbridge.sla.deadlines import Deadlines
from mailbridge.store import repositories as repo
from mailbridge.store.models import Message, Ticket
from mailbridge.store.repositories import ThreadParent

log = structlog.get_logger(__name__)

# Message kinds that make up the conversation with the customer (what a relay continues).
CUSTOMER_THREAD_KINDS = ("customer", "ack", "relay")


def _over_limit(ctx: MailContext, settings: Settings, kind: str) -> bool:
    """True (and recorded) when the case already sent its hourly share of ``kind``."""
    assert ctx.ticket is not None
    limit = settings.conversations.max_mails_per_case_per_hour
    if repo.recent_outbound(ctx.session, ctx.ticket.id, (kind,), ctx.now - timedelta(hours=1)) < limit:
        return False
    ctx.event("mail_limit_reached", kind=kind, limit=limit)
    log.warning("mail_limit_reached", kind=kind, limit=limit)
    return True


def _enqueue(ctx: MailContext, built: Built, kind: str, dedup_key: str) -> int:
    assert ctx.ticket is not None
    return enqueue(
        ctx.session,
        built.out,
        kind=kind,
        dedup_key=dedup_key,
        now=ctx.now,
        ticket_id=ctx.ticket.id,
        in_reply_to=built.in_reply_to,
        references=built.references,
        language=ctx.language,
        thread_index=built.thread_index,
    )


class Acknowledge:
    """The acknowledgement of a new case, to the customer (never for machine-made mail)."""

    name = "acknowledge"

    def __init__(self, builder: MailBuilder, settings: Settings, deadlines: Deadlines, guard: AutoMailGuard):
        self.builder = builder
        self.settings = settings
        self.deadlines = deadlines
        self.guard = guard

    def __call__(self, ctx: MailContext) -> None:
        if not ctx.new_ticket:
            return
        t, p, q = ctx.ticket, ctx.parsed, ctx.queue
        assert t is not None and p is not None and q is not None and p.from_ is not None
        if ctx.ack_suppressed:
            ctx.event("ack_suppressed", reason=ctx.ack_suppressed)
            log.info("ack_suppressed", reason=ctx.ack_suppressed)
            return
        # The address the case answers to (Ticket.reply_to: the first mail's Reply-To, else From).
        to = p.reply_to[0] if t.reply_to else p.from_
        refusal = self.guard.check(ctx.session, to.email, t.id, ctx.now)
        if refusal is not None:
            ctx.event("auto_mail_suppressed", mail="ack", reason=refusal.reason, **refusal.detail)
            ctx.flags.append(f"not acknowledged: {refusal.text()}")
            log.warning("auto_mail_suppressed", mail="ack", reason=refusal.reason, to=to.email)
            return
        unknown = [
            {"number": u.number, "reason": u.reason, "suggestion": u.suggestion}
            for u in (ctx.match.unknown if ctx.match else [])
        ]
        built = self.builder.ack(
            t,
            q,
            to,
            parent_id=p.message_id,
            parent_refs=p.references,
            parent_index=p.header("thread-index"),
            attachments=[a.filename for a in p.attachments],
            previous_case=ctx.link_from.case_number if ctx.link_reason == "closed-case" and ctx.link_from else None,
            unknown=unknown,
            severity=ctx.sla.level.label(t.language) if ctx.sla and ctx.sla.level else None,
            first_response_due=(
                self.deadlines.format(q.name, ctx.sla.first_response_due, t.language, t.organisation)
                if ctx.sla and ctx.sla.first_response_due
                else None
            ),
            no_contract=ctx.customer is not None and not ctx.customer.promised,
            now=ctx.now,
        )
        outbox_id = _enqueue(ctx, built, "ack", f"ack:{t.case_number}")
        self.guard.record(ctx.session, to.email, t.id, "ack", ctx.now)
        ctx.event("ack_queued", outbox_id=outbox_id, message_id=built.out.message_id, to=to.email)


class OversizeNotice:
    """The short notice to the sender of a mail over ``ingest.max_message_bytes`` (called by
    Validate, which quarantines the mail): only for a person's mail, within the same guards as
    acknowledgements; the quarantine reason says whether it went out."""

    def __init__(self, builder: MailBuilder, settings: Settings, guard: AutoMailGuard):
        self.builder = builder
        self.settings = settings
        self.guard = guard

    def __call__(self, ctx: MailContext) -> None:
        h, c = ctx.header_block, ctx.mail_class
        assert ctx.quarantine is not None
        stage, reason = ctx.quarantine
        if h is None or h.from_ is None or c is None:
            ctx.quarantine = (stage, f"{reason}; no notice: no sender address in the header block")
            return
        if not c.personal:
            ctx.quarantine = (stage, f"{reason}; no notice: {c.kind.value} ({c.reason})")
            return
        to = h.from_
        refusal = self.guard.check(ctx.session, to.email, None, ctx.now)
        if refusal is not None:
            ctx.quarantine = (stage, f"{reason}; no notice: {refusal.text()}")
            log.warning("auto_mail_suppressed", mail="oversize_notice", reason=refusal.reason, to=to.email)
            return
        queue = next(
            (q for a in h.recipient_emails if (q := self.settings.queue_for_address(a)) is not None),
            None,
        ) or self.settings.default_queue_for(ctx.mail.account)
        built = self.builder.oversize_notice(
            queue,
            to,
            subject=h.subject,
            size=len(ctx.mail.raw),
            limit=self.settings.ingest.max_message_bytes,
            parent_id=h.message_id,
            parent_refs=h.references,
            now=ctx.now,
        )
        enqueue(
            ctx.session,
            built.out,
            kind="oversize_notice",
            dedup_key=f"oversize:{ctx.mail.sha256}",
            now=ctx.now,
            ticket_id=None,
            in_reply_to=built.in_reply_to,
            references=built.references,
            language=queue.language,
        )
        self.guard.record(ctx.session, to.email, None, "oversize_notice", ctx.now)
        ctx.quarantine = (stage, f"{reason}; the sender {to.email} was told ({built.out.message_id})")
        log.info("oversize_notice_queued", to=to.email)


class Relay:
    """A proven agent's reply goes to the customer from the support address, without the quoted
    notification and without the command lines; a reply the agent wrote to the customer directly
    is recorded and not sent again."""

    name = "relay"

    def __init__(self, builder: MailBuilder, settings: Settings):
        self.builder = builder
        self.settings = settings

    def __call__(self, ctx: MailContext) -> None:
        t, p = ctx.ticket, ctx.parsed
        if ctx.ignored or t is None or ctx.kind != "agent":
            return
        assert p is not None and p.from_ is not None and ctx.commands is not None
        queue = self.settings.queue(t.queue)
        by = p.from_.email
        if ctx.agent_mode == "direct":
            ctx.event("agent_replied_directly", by=by)
        elif ctx.agent_mode == "external":
            ctx.event("agent_wrote_elsewhere", by=by, to=[a.email for a in [*p.to, *p.cc]])
            return
        else:
            text = ctx.commands.text.strip()
            if not text:
                if not ctx.commands.commands:
                    # Written below the quote, or only quote: say so rather than let the agent
                    # believe the customer was answered.
                    ctx.agent_notice = (
                        "nothing was sent to the customer: we found no text of yours above the quoted "
                        "notification (write your answer at the top of the reply)"
                    )
                    ctx.event("agent_reply_empty", by=by)
                return
            if not self._relay(ctx, queue, text):
                return
        ctx.answered = True
        values: dict = {}
        if t.first_response_at is None:
            values["first_response_at"] = ctx.now
            ctx.event("first_response", by=by, via=ctx.agent_mode)
        status_set = any(c.name in STATUS_COMMANDS for c in ctx.commands.commands)
        if t.status == TicketStatus.NEW or (t.status in (TicketStatus.SOLVED, TicketStatus.CLOSED) and not status_set):
            # An agent answering a finished case without saying otherwise takes it up again; the
            # customer's answer then lands on this case, not on a new one.
            values.update({"status": TicketStatus.OPEN.value, **status_times("open", ctx.now)})
            ctx.event("status_changed", old=t.status, new="open", by=by, reason="agent reply")
        if values:
            values["updated_at"] = ctx.now
            repo.update_row(ctx.session, Ticket, t.id, values)

    @staticmethod
    def _parent(session, ticket_id: int) -> ThreadParent | None:
        """The newest message of the customer conversation, with the case's first mail (and its own
        ancestors) and our acknowledgement kept at the front of References: a colleague who started
        a thread of their own must not take the relay out of the requester's conversation."""
        parent = repo.last_message(session, ticket_id, CUSTOMER_THREAD_KINDS)
        if parent is None:
            return None
        first = repo.last_message(session, ticket_id, ("customer",), first=True)
        ack = repo.last_message(session, ticket_id, ("ack",), first=True)
        chain: list[str] = []
        if first is not None:
            chain += [*first.references, *([first.message_id] if first.message_id else [])]
        if ack is not None and ack.message_id:
            chain.append(ack.message_id)
        refs = list(dict.fromkeys([*chain, *parent.references]))
        return ThreadParent(parent.message_id, refs, parent.thread_index)

    def _relay(self, ctx: MailContext, queue, text: str) -> bool:
        """Queue the relay; False when the case's hourly cap held it back (the agent is told)."""
        t, p = ctx.ticket, ctx.parsed
        assert t is not None and p is not None and p.from_ is not None
        people = repo.participants(ctx.session, t.id)
        own = self.settings.own_addresses
        cc = [
            Address("", e)
            for e, role in people.items()
            if role == "customer"
            and e not in (t.requester_email, t.answer_to)
            and e not in own
            and not queue.is_agent(e)
        ]
        # Inline images with a Content-ID are the agent's signature logos, not files for the customer.
        if _over_limit(ctx, self.settings, "relay"):
            ctx.agent_notice = (
                f"nothing was sent to the customer: case {t.case_number} already sent "
                f"{self.settings.conversations.max_mails_per_case_per_hour} relayed replies in the last hour "
                "(a guard against mail loops); send your answer again later or write to the customer directly"
            )
            return False
        files = [
            OutgoingAttachment(a.filename, a.content_type, a.data)
            for a in p.attachments
            if not (a.content_id and a.content_type.startswith("image/"))
        ]
        built = self.builder.relay(
            t,
            queue,
            agent=p.from_,
            text=text,
            to=[Address(t.requester_name if t.answer_to == t.requester_email else "", t.answer_to)],
            cc=cc,
            parent=self._parent(ctx.session, t.id),
            attachments=files,
            now=ctx.now,
        )
        outbox_id = _enqueue(ctx, built, "relay", f"relay:{ctx.message_id}")
        ctx.event("relayed", outbox_id=outbox_id, by=p.from_.email, to=built.out.envelope_to, files=len(files))
        log.info("agent_reply_relayed", to=built.out.envelope_to)
        return True


class CommandErrors:
    """An agent whose commands were not applied gets a mail saying which and why."""

    name = "command_errors"

    def __init__(self, builder: MailBuilder, settings: Settings):
        self.builder = builder
        self.settings = settings

    def __call__(self, ctx: MailContext) -> None:
        t, p, block = ctx.ticket, ctx.parsed, ctx.commands
        if t is None or ctx.role != "agent" or ctx.ack_suppressed:
            return
        assert p is not None and p.from_ is not None
        verified = ctx.agent_proof is not None
        if ctx.agent_notice:
            errors = [ctx.agent_notice]
        elif block is None or not (block.commands or block.errors):
            return
        elif not verified:
            errors = [
                "this mail is not proven to come from you: it does not answer a notification of this case "
                "(reply to the notification mail to use commands)"
            ]
        elif block.errors:
            errors = list(block.errors)
        else:
            return
        built = self.builder.command_error(
            t,
            self.settings.queue(t.queue),
            agent=p.from_,
            errors=errors,
            verified=verified,
            parent_id=p.message_id,
            parent_refs=p.references,
            now=ctx.now,
        )
        outbox_id = _enqueue(ctx, built, "command_error", f"cmderr:{ctx.message_id}")
        ctx.event("command_error_sent", outbox_id=outbox_id, to=p.from_.email, errors=errors)


class NotifyAgents:
    """The queue's agents hear of every new case and every reply that is not their own proven one."""

    name = "notify_agents"

    def __init__(self, builder: MailBuilder, settings: Settings):
        self.builder = builder
        self.settings = settings

    def __call__(self, ctx: MailContext) -> None:
        t, p = ctx.ticket, ctx.parsed
        # Machine-made replies (out-of-office, robots) are stored without a word to anyone; a case
        # that such a mail opened is still announced, or nobody would know it exists.
        auto_reply = ctx.ack_suppressed and not ctx.new_ticket
        if ctx.ignored or t is None or auto_reply or ctx.kind in ("agent", "note", "agent_rejected"):
            return
        assert p is not None and p.from_ is not None
        queue = self.settings.queue(t.queue)
        if not queue.notify_addresses:
            return
        if ctx.new_ticket:
            event = "new"
        elif ctx.kind == "third_party":
            event = "third-party"
        elif ctx.kind == "agent_unverified":
            event = "unverified-agent"
        elif any(e["kind"] == "reopened" for e in ctx.events):
            event = "reopened"
        else:
            event = "reply"
        # A case opened by this mail has no earlier notification and nothing else changed it: the
        # three lookups below are for replies only (this runs for every new case).
        if not ctx.new_ticket and _over_limit(ctx, self.settings, "notification"):
            # Stored on the case and flagged, so agents looking at it see what was not announced.
            limit = self.settings.conversations.max_mails_per_case_per_hour
            flag = f"not notified: the case reached {limit} notifications in an hour"
            repo.update_row(ctx.session, Message, ctx.message_id, {"flags": [*ctx.flags, flag]})
            return
        ticket = t if ctx.new_ticket else (repo.ticket_ref(ctx.session, ticket_id=t.id) or t)
        previous = None if ctx.new_ticket else repo.last_message(ctx.session, t.id, ("notification",))
        built = self.builder.notification(
            ticket,
            queue,
            event=event,
            sender=p.from_,
            role=ctx.role,
            # A new case shows the whole mail (a forward's content is the request); a reply its new part.
            text=p.text if ctx.new_ticket else (p.new_text or p.text),
            flags=ctx.flags,
            urgency=ctx.urgency,
            attachments=[a.filename for a in p.attachments],
            previous=previous,
            linked_case=ctx.link_from.case_number if ctx.link_from else None,
            severity_levels=self.settings.severity_levels(queue),
            now=ctx.now,
        )
        outbox_id = _enqueue(ctx, built, "notification", f"notify:{ctx.message_id}")
        ctx.event("agents_notified", outbox_id=outbox_id, event=event, to=built.out.envelope_to)
