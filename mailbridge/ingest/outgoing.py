"""Pipeline steps that decide what a mail makes us send, written to the outbox in the mail's own
transaction: the acknowledgement of a new case, the relay of a proven agent's reply to the customer,
the notification of the queue's agents, and the error report for bad agent commands.

The first proven agent reply that reaches the customer (relayed, or written to them directly) sets
the case's first-response time, which the SLA clock reads.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta

import structlog
from babel.numbers import format_decimal

from mailbridge.domain import Address, TicketStatus
from mailbridge.ingest.commands import STATUS_COMMANDS
from mailbridge.ingest.mail import InboundMail
from mailbridge.ingest.parser import MAX_MIME_PARTS
from mailbridge.ingest.prepare import REFUSED_SIZE
from mailbridge.ingest.routing import is_ours
from mailbridge.lifecycle import status_times
from mailbridge.outbound.attachments import CustomerFile, capacity, human_size, plan, text_reserve
from mailbridge.outbound.compose import OutgoingAttachment
from mailbridge.outbound.customer_html import MAX_SHOWN_CHARS, CleanHtml, sanitise
from mailbridge.outbound.guard import AutoMailGuard, Refusal
from mailbridge.outbound.links import AttachmentLinks, CaseLinks
from mailbridge.outbound.messages import Built, MailBuilder
from mailbridge.outbound.outbox import enqueue
from mailbridge.settings import QueueSettings, Settings
from mailbridge.sla.deadlines import Deadlines
from mailbridge.store import repositories as repo
from mailbridge.store import tracker
from mailbridge.store.models import Message
from mailbridge.store.rawstore import ContentStore
from mailbridge.store.repositories import ThreadParent
from mailbridge.store.tracker import Viewer
from mailbridge.subjects import SubjectNormalizer
from mailbridge.vocabulary import AGENTS_OWN, CUSTOMER_THREAD, AgentMode, AuthorRole, Disposition, MessageKind

log = structlog.get_logger(__name__)


class AutoAnswers:
    """Whether we may send an automatic mail (an acknowledgement, a refusal notice) to the sender of
    this mail: the one place that decides it, asked by every step that sends one.

    Never to machine-made mail (its class is not a person's: ``InboundMail.machine_made``), and
    never past the guards on the recipient (``outbound/guard.py``: a hard-bounced address, the
    per-recipient limits). What was held back is said by the returned reason."""

    def __init__(self, guard: AutoMailGuard):
        self.guard = guard

    def refusal(self, mail: InboundMail, to: str, ticket_id: int | None) -> tuple[str, Refusal | None] | None:
        """None when the mail may go; else (why, the guard's refusal or None for machine-made mail)."""
        if mail.machine_made:
            c = mail.mail_class
            assert c is not None
            return f"{c.kind.value} ({c.reason})", None
        # Counted at the time the mail arrived, not when a backlog reaches it (``InboundMail.arrived``).
        refusal = self.guard.check(mail.session, to, ticket_id, mail.now, mail.arrived)
        return (refusal.text(), refusal) if refusal is not None else None

    def sent(self, mail: InboundMail, to: str, ticket_id: int | None, kind: MessageKind) -> None:
        """Count an automatic mail against the recipient's limits."""
        self.guard.record(mail.session, to, ticket_id, kind.value, mail.arrived)


def _over_limit(mail: InboundMail, settings: Settings, kind: MessageKind) -> bool:
    """True (and recorded) when the case already sent its hourly share of ``kind``."""
    assert mail.ticket is not None
    limit = settings.conversations.max_mails_per_case_per_hour
    if repo.recent_outbound(mail.session, mail.ticket.id, (kind,), mail.now - timedelta(hours=1)) < limit:
        return False
    mail.event("mail_limit_reached", kind=kind, limit=limit)
    log.warning("mail_limit_reached", kind=kind, limit=limit)
    return True


def _enqueue(
    mail: InboundMail,
    built: Built,
    kind: MessageKind,
    dedup_key: str,
    record: bool = True,
    recipients: list[str] | None = None,
) -> int:
    assert mail.ticket is not None
    return enqueue(
        mail.session,
        built.out,
        kind=kind,
        dedup_key=dedup_key,
        now=mail.now,
        ticket_id=mail.ticket.id,
        in_reply_to=built.in_reply_to,
        references=built.references,
        language=mail.language,
        thread_index=built.thread_index,
        record=record,
        recipients=recipients,
    )


def _checklist_view(queue, state: dict | None, language: str) -> list[dict]:
    """The queue's checklist as the case has it: label (in ``language``), given, evidence."""
    if not state:
        return []
    return [
        {"label": i.label(language), "given": state[i.key]["given"], "evidence": state[i.key].get("evidence")}
        for i in queue.checklist
        if i.key in state
    ]


def _checklist_labels(queue, state: dict | None, language: str, *, given: bool) -> list[str]:
    return [c["label"] for c in _checklist_view(queue, state, language) if c["given"] is given]


class Acknowledge:
    """The acknowledgement of a new case, to the customer (never for machine-made mail). A case an
    agent filed (``InboundMail.filing``) is acknowledged to its customer, in the thread of their own
    mail where we have its Message-ID, saying which agent filed it; a forwarded one only where the
    queue says so (``acknowledge_forwards``). With ``[web] base_url`` it carries the recipient's
    signed link to the case (``case_links``)."""

    name = "acknowledge"

    def __init__(
        self, builder: MailBuilder, deadlines: Deadlines, answers: AutoAnswers, case_links: CaseLinks | None = None
    ):
        self.builder = builder
        self.deadlines = deadlines
        self.answers = answers
        self.case_links = case_links

    def __call__(self, mail: InboundMail) -> None:
        if not mail.new_ticket:
            return
        t, p, q, f = mail.ticket, mail.parsed, mail.queue, mail.filing
        assert t is not None and p is not None and q is not None and p.from_ is not None
        if f is not None and f.how == "forward" and not q.acknowledge_forwards:
            mail.event("ack_suppressed", reason="the queue does not acknowledge forwarded mail (acknowledge_forwards)")
            return
        # The address the case answers to (Ticket.reply_to: the first mail's Reply-To, else From; a
        # filed case's customer).
        to = f.requester if f is not None else p.reply_to[0] if t.reply_to else p.from_
        held = self.answers.refusal(mail, to.email, t.id)
        if held is not None:
            text, refusal = held
            if refusal is None:  # machine-made
                mail.event("ack_suppressed", reason=mail.machine_made)
                log.info("ack_suppressed", reason=mail.machine_made)
            else:
                mail.event("auto_mail_suppressed", mail="ack", reason=refusal.reason, **refusal.detail)
                mail.flags.append(f"not acknowledged: {text}")
                log.warning("auto_mail_suppressed", mail="ack", reason=refusal.reason, to=to.email)
            return
        unknown = [
            {"number": u.number, "reason": u.reason, "suggestion": u.suggestion}
            for u in (mail.match.unknown if mail.match else [])
        ]
        # The hours of the calendar this customer's deadlines count in, and the days we are closed
        # before the promised first response.
        hours = self.deadlines.support_hours(
            q.name, t.organisation, t.language, mail.now, mail.sla.first_response_due if mail.sla else None
        )
        built = self.builder.ack(
            t,
            q,
            to,
            # A forwarded mail's own Message-ID (attached forwards have one); a call has no mail.
            parent_id=p.message_id if f is None else f.message_id if f.how == "forward" else None,
            parent_refs=p.references if f is None else f.references,
            parent_index=p.header("thread-index") if f is None else None,
            attachments=[a.filename for a in (p.attachments if f is None else f.attachments)],
            filed_by=(f.agent.name or f.agent.email) if f is not None else None,
            filed_how=f.how if f is not None else None,
            previous_case=mail.link_from.case_number if mail.link_reason == "closed-case" and mail.link_from else None,
            unknown=unknown,
            severity=mail.sla.level.label(t.language) if mail.sla and mail.sla.level else None,
            first_response_due=(
                self.deadlines.format(q.name, mail.sla.first_response_due, t.language, t.organisation)
                if mail.sla and mail.sla.first_response_due
                else None
            ),
            no_contract=mail.customer is not None and not mail.customer.promised,
            missing=_checklist_labels(q, mail.checklist, t.language, given=False),
            support_hours=hours.text if hours is not None else None,
            closures=[c.text for c in hours.closures] if hours is not None else [],
            case_url=self.case_links.url(to.email, t.case_number) if self.case_links is not None else None,
            now=mail.now,
        )
        outbox_id = _enqueue(mail, built, MessageKind.ACK, f"ack:{t.case_number}")
        self.answers.sent(mail, to.email, t.id, MessageKind.ACK)
        mail.event("ack_queued", outbox_id=outbox_id, message_id=built.out.message_id, to=to.email)


# What a status list shows: the cases not yet solved, at most this many (the rest are counted).
STATUS_LIST_STATUSES = (TicketStatus.NEW, TicketStatus.OPEN, TicketStatus.PENDING)
STATUS_LIST_MAX = 50


class StatusByMail:
    """A known customer's status request: a new mail (about no case) to a queue whose subject, after
    the reply prefixes (``subjects.py``), is only one of the queue's ``status_words`` (any case)
    gets back the list of the cases the sender may see — by the tracker's rule (``viewer_for`` and
    ``may_ask`` are ``web/visibility.py``'s ``viewer_for`` and ``may_sign_in``, passed in by
    ``App``): their own, or their organisation's where it allows it — that are not solved yet,
    with status, severity, the next due time and, with ``[web]``, a case link each. No case is
    opened; the run ends ``ignored`` (the mail is kept without a case).

    Only for a known sender (a requester or customer-side participant of a case, or an address of
    an ``[[organisations]]`` entry): a stranger's "Status" mail opens a case as any mail does (and
    learns nothing). The list goes to the From address only, never to a Reply-To, and within the
    guards of every automatic mail (``AutoAnswers``): machine-made mail and a guarded address get
    nothing."""

    name = "status_by_mail"

    def __init__(
        self,
        builder: MailBuilder,
        settings: Settings,
        normalizer: SubjectNormalizer,
        deadlines: Deadlines,
        answers: AutoAnswers,
        viewer_for: Callable[[Settings, str], Viewer],
        may_ask: Callable[[Settings, str, bool], bool],
        case_links: CaseLinks | None = None,
    ):
        self.builder = builder
        self.settings = settings
        self.normalizer = normalizer
        self.deadlines = deadlines
        self.answers = answers
        self.viewer_for = viewer_for
        self.may_ask = may_ask
        self.case_links = case_links

    def is_request(self, queue: QueueSettings, subject: str) -> bool:
        """Whether ``subject`` is only one of the queue's status words (reply prefixes aside)."""
        words = {w.strip().casefold() for w in queue.status_words}
        return bool(words) and self.normalizer.strip_prefixes(subject).casefold() in words

    def __call__(self, mail: InboundMail) -> None:
        p, q = mail.parsed, mail.queue
        if mail.ticket is not None or mail.filing is not None or p is None or p.from_ is None or q is None:
            return
        if not self.is_request(q, p.subject):
            return
        address = p.from_.email.lower()
        if is_ours(self.settings, address, q):
            return
        known = tracker.known_address(mail.session, address)
        if not self.may_ask(self.settings, address, known):
            # A stranger: the mail goes on and opens a case, as any first mail does.
            log.info("status_request_unknown_sender")
            return
        held = self.answers.refusal(mail, address, None)
        if held is not None:
            text, refusal = held
            if refusal is not None:
                log.warning("auto_mail_suppressed", mail="status_list", reason=refusal.reason, to=address)
            self._end(mail, f"status request from {address}: not answered ({text})")
            return
        viewer = self.viewer_for(self.settings, address)
        rows: list[tuple[tracker.CaseRow, datetime | None, str]] = []
        total = 0
        for status in STATUS_LIST_STATUSES:
            found, n = tracker.list_cases(
                mail.session, viewer, status=status.value, sort="due", descending=False, page_size=STATUS_LIST_MAX
            )
            total += n
            for r in found:
                due, kind = (
                    (r.first_response_due, "first_response")
                    if r.first_response_at is None
                    else (r.resolution_due, "resolution")
                )
                rows.append((r, due, kind))
        # The next deadline first; cases without one after them, the latest activity first.
        rows.sort(key=lambda x: (0, x[1].timestamp()) if x[1] is not None else (1, -x[0].updated_at.timestamp()))
        rows = rows[:STATUS_LIST_MAX]
        language = tracker.customer_language(mail.session, address) or mail.language or q.language
        cases = []
        for r, due, kind in rows:
            level = self.deadlines.level(r.queue, r.severity)
            cases.append(
                {
                    "case_number": r.case_number,
                    "subject": r.subject,
                    "status": r.status,
                    "severity": level.label(language) if level is not None else r.severity,
                    "due": self.deadlines.format(r.queue, due, language, r.organisation) if due else None,
                    "due_kind": kind,
                    "url": self.case_links.url(address, r.case_number) if self.case_links is not None else None,
                }
            )
        built = self.builder.status_list(
            q,
            p.from_,
            language=language,
            cases=cases,
            total=total,
            organisation=viewer.organisation if viewer.organisation_wide else None,
            parent_id=p.message_id,
            parent_refs=p.references,
            now=mail.now,
        )
        enqueue(
            mail.session,
            built.out,
            kind=MessageKind.STATUS_LIST,
            dedup_key=f"status:{mail.sha256}",
            now=mail.now,
            ticket_id=None,
            in_reply_to=built.in_reply_to,
            references=built.references,
            language=language,
        )
        self.answers.sent(mail, address, None, MessageKind.STATUS_LIST)
        log.info("status_list_queued", cases=total, organisation_wide=viewer.organisation_wide)
        self._end(mail, f"status request from {address}: {total} open cases listed ({built.out.message_id})")

    @staticmethod
    def _end(mail: InboundMail, why: str) -> None:
        """End the run: the mail is kept without a case, the reason on its message row (routing)."""
        mail.routing.update({"rule": "status_request", "evidence": why})
        mail.finish(Disposition.IGNORED, why)


class AgentAnswers:
    """The mails that answer an agent's mail about no case (``conversation.AgentFiling``): the cheat
    sheet for ``#help`` and the error mail for a command block that was not applied; in the queue's
    language (the agents'), in the thread of the agent's mail. Called by that step, which ends the
    mail's run (no case); each returns the Message-ID it queued, for the raw row's reason."""

    def __init__(self, builder: MailBuilder, settings: Settings):
        self.builder = builder
        self.settings = settings

    def _queue(self, mail: InboundMail, built: Built, kind: MessageKind, dedup_key: str) -> str:
        assert mail.queue is not None
        enqueue(
            mail.session,
            built.out,
            kind=kind,
            dedup_key=dedup_key,
            now=mail.now,
            ticket_id=None,
            in_reply_to=built.in_reply_to,
            references=built.references,
            language=mail.queue.language,
        )
        return built.out.message_id

    def help(self, mail: InboundMail) -> str:
        p, q = mail.parsed, mail.queue
        assert p is not None and p.from_ is not None and q is not None
        built = self.builder.help(q, p.from_, parent_id=p.message_id, parent_refs=p.references, now=mail.now)
        return self._queue(mail, built, MessageKind.HELP, f"help:{mail.sha256}")

    def errors(self, mail: InboundMail, errors: list[str]) -> str:
        p, q = mail.parsed, mail.queue
        assert p is not None and p.from_ is not None and q is not None
        built = self.builder.command_error(
            None,
            q,
            agent=p.from_,
            errors=errors,
            verified=True,
            parent_id=p.message_id,
            parent_refs=p.references,
            now=mail.now,
        )
        return self._queue(mail, built, MessageKind.COMMAND_ERROR, f"cmderr:{mail.sha256}")


class OversizeNotice:
    """The short notice to the sender of a mail refused before parsing (``prepare_one``): too large
    (over ``ingest.max_message_bytes``) or with too many MIME parts (the parser's limits), the
    reason said in words (called by Validate, which quarantines the mail). Only for a person's
    mail, within the same guards as acknowledgements (``AutoAnswers``), from the queue the mail was
    written to (``Route``); the quarantine reason says whether it went out. (The name, like the
    setting ``auto_mail.oversize_notice`` and the outbox kind, is from when size was the only
    reason.)"""

    def __init__(self, builder: MailBuilder, settings: Settings, answers: AutoAnswers):
        self.builder = builder
        self.settings = settings
        self.answers = answers

    def __call__(self, mail: InboundMail) -> None:
        h, out = mail.header_block, mail.outcome
        assert out is not None and mail.queue is not None

        def say(note: str) -> None:
            mail.outcome = replace(out, reason=f"{out.reason}; {note}")

        if h is None or h.from_ is None or mail.mail_class is None:
            say("no notice: no sender address in the header block")
            return
        to, queue = h.from_, mail.queue
        held = self.answers.refusal(mail, to.email, None)
        if held is not None:
            text, refusal = held
            say(f"no notice: {text}")
            if refusal is not None:
                log.warning("auto_mail_suppressed", mail="oversize_notice", reason=refusal.reason, to=to.email)
            return
        built = self.builder.oversize_notice(
            queue,
            to,
            refused=mail.refused or REFUSED_SIZE,
            subject=h.subject,
            size=len(mail.raw),
            limit=self.settings.ingest.max_message_bytes,
            max_parts=MAX_MIME_PARTS,
            parent_id=h.message_id,
            parent_refs=h.references,
            now=mail.now,
        )
        enqueue(
            mail.session,
            built.out,
            kind=MessageKind.OVERSIZE_NOTICE,
            dedup_key=f"oversize:{mail.sha256}",
            now=mail.now,
            ticket_id=None,
            in_reply_to=built.in_reply_to,
            references=built.references,
            language=queue.language,
        )
        self.answers.sent(mail, to.email, None, MessageKind.OVERSIZE_NOTICE)
        say(f"the sender {to.email} was told ({built.out.message_id})")
        log.info("oversize_notice_queued", to=to.email, refused=mail.refused)


class ConfirmRaise:
    """The customer hears that their request raised the case's severity (``customer_may_raise``),
    within the guards of every automatic mail (``AutoAnswers``)."""

    name = "confirm_raise"

    def __init__(self, builder: MailBuilder, settings: Settings, deadlines: Deadlines, answers: AutoAnswers):
        self.builder = builder
        self.settings = settings
        self.deadlines = deadlines
        self.answers = answers

    def __call__(self, mail: InboundMail) -> None:
        t, p = mail.ticket, mail.parsed
        if not mail.customer_raised or t is None or p is None or p.from_ is None:
            return
        to = p.from_
        held = self.answers.refusal(mail, to.email, t.id)
        if held is not None:
            mail.flags.append(f"the customer was not told of the raised severity: {held[0]}")
            return
        level = self.deadlines.level(t.queue, t.severity)
        due = repo.ticket_due(mail.session, t.id) if t.first_response_at is None else None
        built = self.builder.severity_raised(
            t,
            self.settings.queue(t.queue),
            to,
            level=level.label(t.language) if level is not None else (t.severity or ""),
            first_response_due=self.deadlines.format(t.queue, due, t.language, t.organisation) if due else None,
            parent_id=p.message_id,
            parent_refs=p.references,
            now=mail.now,
        )
        outbox_id = _enqueue(mail, built, MessageKind.SEVERITY_NOTICE, f"raised:{mail.message_id}")
        self.answers.sent(mail, to.email, t.id, MessageKind.SEVERITY_NOTICE)
        mail.event("severity_notice_queued", outbox_id=outbox_id, to=to.email, severity=t.severity)


class Relay:
    """A proven agent's reply goes to the customer from the support address, without the quoted
    notification and without the command lines; a reply the agent wrote to the customer directly
    is recorded and not sent again. With ``[web] base_url`` (``case_links``) each recipient gets a
    copy of their own carrying their signed link to the case (a link names the address it was
    issued to); each copy shows the same To and Cc, so a reply to all still reaches everyone."""

    name = "relay"

    def __init__(self, builder: MailBuilder, settings: Settings, case_links: CaseLinks | None = None):
        self.builder = builder
        self.settings = settings
        self.case_links = case_links

    def __call__(self, mail: InboundMail) -> None:
        t, p = mail.ticket, mail.parsed
        if t is None or mail.kind != MessageKind.AGENT:
            return
        assert p is not None and p.from_ is not None and mail.commands is not None
        queue = self.settings.queue(t.queue)
        by = p.from_.email
        if mail.agent_mode == AgentMode.DIRECT:
            mail.event("agent_replied_directly", by=by)
        elif mail.agent_mode == AgentMode.EXTERNAL:
            mail.event("agent_wrote_elsewhere", by=by, to=[a.email for a in [*p.to, *p.cc]])
            return
        else:
            text = mail.commands.text.strip()
            if not text:
                if not mail.commands.commands:
                    # Written below the quote, or only quote: say so rather than let the agent
                    # believe the customer was answered.
                    mail.agent_notice = (
                        "nothing was sent to the customer: we found no text of yours above the quoted "
                        "notification (write your answer at the top of the reply)"
                    )
                    mail.event("agent_reply_empty", by=by)
                return
            if not self._relay(mail, queue, text):
                return
        mail.answered = True
        values: dict = {}
        if t.first_response_at is None:
            values["first_response_at"] = mail.now
            mail.event("first_response", by=by, via=mail.agent_mode)
        status_set = any(c.name in STATUS_COMMANDS for c in mail.commands.commands)
        if t.status == TicketStatus.NEW or (t.status in (TicketStatus.SOLVED, TicketStatus.CLOSED) and not status_set):
            # An agent answering a finished case without saying otherwise takes it up again; the
            # customer's answer then lands on this case, not on a new one.
            values.update({"status": TicketStatus.OPEN.value, **status_times(TicketStatus.OPEN, mail.now)})
            mail.event("status_changed", old=t.status, new=TicketStatus.OPEN, by=by, reason="agent reply")
        if values:
            values["updated_at"] = mail.now
            mail.change_ticket(values)

    @staticmethod
    def _parent(session, ticket_id: int) -> ThreadParent | None:
        """The newest message of the customer conversation, with the case's first mail (and its own
        ancestors) and our acknowledgement kept at the front of References: a colleague who started
        a thread of their own must not take the relay out of the requester's conversation."""
        parent = repo.last_message(session, ticket_id, CUSTOMER_THREAD)
        if parent is None:
            return None
        first = repo.last_message(session, ticket_id, (MessageKind.CUSTOMER,), first=True)
        ack = repo.last_message(session, ticket_id, (MessageKind.ACK,), first=True)
        chain: list[str] = []
        if first is not None:
            chain += [*first.references, *([first.message_id] if first.message_id else [])]
        if ack is not None and ack.message_id:
            chain.append(ack.message_id)
        refs = list(dict.fromkeys([*chain, *parent.references]))
        return ThreadParent(parent.message_id, refs, parent.thread_index)

    def _relay(self, mail: InboundMail, queue, text: str) -> bool:
        """Queue the relay; False when the case's hourly cap held it back (the agent is told)."""
        t, p = mail.ticket, mail.parsed
        assert t is not None and p is not None and p.from_ is not None
        people = repo.participants(mail.session, t.id)
        cc = [
            Address("", e)
            for e, role in people.items()
            if role == AuthorRole.CUSTOMER
            and e not in (t.requester_email, t.answer_to)
            and not is_ours(self.settings, e, queue)
        ]
        # Inline images with a Content-ID are the agent's signature logos, not files for the customer.
        if _over_limit(mail, self.settings, MessageKind.RELAY):
            mail.agent_notice = (
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
        to = [Address(t.requester_name if t.answer_to == t.requester_email else "", t.answer_to)]
        parent = self._parent(mail.session, t.id)
        # Without case links one mail to all; with them one copy per recipient, each with its link
        # and only its recipient in the envelope, all with the first copy's Message-ID (one mail,
        # recorded once on the case, to whom it went; a reply to any copy threads onto it).
        copies: list[str | None] = [a.email for a in [*to, *cc]] if self.case_links is not None else [None]
        outbox_ids: list[int] = []
        first_id: str | None = None
        for i, recipient in enumerate(copies):
            built = self.builder.relay(
                t,
                queue,
                agent=p.from_,
                text=text,
                to=to,
                cc=cc,
                parent=parent,
                attachments=files,
                now=mail.now,
                case_url=self.case_links.url(recipient, t.case_number)
                if self.case_links is not None and recipient is not None
                else None,
                message_id=first_id,
            )
            first_id = first_id or built.out.message_id
            everyone = built.out.envelope_to
            key = f"relay:{mail.message_id}"
            if recipient is not None:
                built = replace(built, out=replace(built.out, envelope_to=[recipient]))
                if i > 0:  # the requester's copy keeps the key a relay has without links
                    key += ":" + hashlib.sha256(recipient.encode("utf-8")).hexdigest()[:16]
            outbox_ids.append(_enqueue(mail, built, MessageKind.RELAY, key, record=i == 0, recipients=everyone))
        envelope = everyone
        mail.event("relayed", outbox_id=outbox_ids[0], by=p.from_.email, to=envelope, files=len(files))
        log.info("agent_reply_relayed", to=envelope, copies=len(outbox_ids))
        return True


class CommandErrors:
    """An agent whose commands were not applied gets a mail saying which and why."""

    name = "command_errors"

    def __init__(self, builder: MailBuilder, settings: Settings):
        self.builder = builder
        self.settings = settings

    def __call__(self, mail: InboundMail) -> None:
        t, p, block = mail.ticket, mail.parsed, mail.commands
        if t is None or mail.role != AuthorRole.AGENT or mail.machine_made:
            return
        assert p is not None and p.from_ is not None
        verified = mail.agent_proof is not None
        if mail.agent_notice:
            errors = [mail.agent_notice]
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
            now=mail.now,
        )
        outbox_id = _enqueue(mail, built, MessageKind.COMMAND_ERROR, f"cmderr:{mail.message_id}")
        mail.event("command_error_sent", outbox_id=outbox_id, to=p.from_.email, errors=errors)


def _sanitised(mail: InboundMail, shown: str, inline: set[str]) -> CleanHtml:
    """``sanitise(shown, inline)``; done by the parse worker when it sanitised the same HTML with the
    same inline parts (``prepare.Ahead.customer_html``)."""
    ahead = mail.customer_html
    if ahead is not None and mail.parsed is not None and shown is mail.parsed.html and ahead[0] == inline:
        return ahead[1]
    return sanitise(shown, inline)


class NotifyAgents:
    """The queue's agents hear of every new case and every reply that is not their own proven one,
    with the customer's files: those within ``notifications.attach_max_bytes`` and the SMTP
    server's ``smtp.max_message_bytes`` travel along (the budget rule: ``outbound/attachments.py``
    ``plan``), the others are listed with their size and, when ``[web] base_url`` is set, a signed
    download link for each recipient (``links``). A notification with links goes to each recipient
    as a mail of its own, since a link names the address it was issued to. When the customer wrote
    HTML, the notification has an HTML alternative with it, sanitised (``outbound/customer_html.py``:
    only ``cid:`` images, of the inline parts that travel)."""

    name = "notify_agents"

    def __init__(
        self, builder: MailBuilder, settings: Settings, store: ContentStore, links: AttachmentLinks | None = None
    ):
        self.builder = builder
        self.settings = settings
        self.store = store
        self.links = links

    def __call__(self, mail: InboundMail) -> None:
        t, p = mail.ticket, mail.parsed
        # Machine-made replies (out-of-office, robots) are stored without a word to anyone; a case
        # that such a mail opened is still announced, or nobody would know it exists.
        auto_reply = mail.machine_made and not mail.new_ticket
        if t is None or auto_reply or mail.kind in AGENTS_OWN:
            return
        assert p is not None and p.from_ is not None and mail.message_id is not None
        queue = self.settings.queue(t.queue)
        if not queue.notify_addresses:
            return
        if mail.new_ticket:
            event = "new"
        elif mail.kind == MessageKind.THIRD_PARTY:
            event = "third-party"
        elif mail.kind == MessageKind.AGENT_UNVERIFIED:
            event = "unverified-agent"
        elif any(e["kind"] == "reopened" for e in mail.events):
            event = "reopened"
        else:
            event = "reply"
        # A case opened by this mail has no earlier notification and nothing else changed it: the
        # three lookups below are for replies only (this runs for every new case).
        if not mail.new_ticket and _over_limit(mail, self.settings, MessageKind.NOTIFICATION):
            # Stored on the case and flagged, so agents looking at it see what was not announced.
            limit = self.settings.conversations.max_mails_per_case_per_hour
            flag = f"not notified: the case reached {limit} notifications in an hour"
            repo.update_row(mail.session, Message, mail.message_id, {"flags": [*mail.flags, flag]})
            return
        previous = None if mail.new_ticket else repo.last_message(mail.session, t.id, (MessageKind.NOTIFICATION,))
        lang = queue.language
        # A case an agent filed shows the customer's request (the forwarded mail, the call's notes)
        # under its author, not the agent's forward around it.
        filed = mail.filing
        sender = filed.author if filed is not None else p.from_
        # (The customer wrote a forwarded mail; the agent wrote a call's notes.)
        filed_role = AuthorRole.REQUESTER if filed is not None and filed.how == "forward" else AuthorRole.AGENT
        role = mail.role if filed is None else filed_role
        text = filed.text if filed is not None else p.text if mail.new_ticket else (p.new_text or p.text)
        files = [CustomerFile(*row) for row in repo.attachments_of(mail.session, mail.message_id)]
        # The customer's HTML, sanitised (customer_html.py): first with every inline image, for its
        # size; once the budget is applied, again if some do not travel. An HTML too large to show
        # gives the plain notification (its inline images then travel as files).
        inline = {f.content_id for f in files if f.content_id}
        # (A filed case's mail is the agent's forward or call notes: its HTML is not the customer's.)
        shown = p.html if filed is None and p.html and len(p.html) <= MAX_SHOWN_CHARS else None
        html = _sanitised(mail, shown, inline) if shown else None
        # (Quoted-printable writes a byte as up to three.)
        html_reserve = 3 * len(html.html.encode("utf-8")) if html is not None else 0
        room = self.settings.smtp.max_message_bytes - text_reserve(text) - html_reserve
        attached, listed = plan(files, self.settings.notifications.attach_max_bytes, room)
        links = self.links if listed else None
        carried_inline = {f.content_id for f in attached if f.content_id}
        if shown and carried_inline != inline:
            html = sanitise(shown, carried_inline)
        # The bytes as StoreMessage stored them (the files just written, read back once). With an
        # HTML alternative, an inline image its HTML shows travels beside it (multipart/related,
        # its Content-ID kept); one it does not show is a file like any other.
        carried = [
            OutgoingAttachment(
                f.filename,
                f.content_type,
                self.store.get(self.store.relpath(f.sha256)),
                f.content_id if html is None or f.content_id in html.referenced else None,
            )
            for f in attached
        ]
        groups = [[a] for a in queue.notify_addresses] if links is not None else [queue.notify_addresses]
        outbox_ids: list[int] = []
        first_id: str | None = None
        for i, to in enumerate(groups):
            built = self.builder.notification(
                t,
                queue,
                event=event,
                sender=sender,
                role=role,
                # A new case shows the whole mail (a forward's content is the request); a reply its new part.
                text=text,
                flags=mail.flags,
                urgency=mail.urgency,
                attachments=[f.filename for f in attached],
                previous=previous,
                linked_case=mail.link_from.case_number if mail.link_from else None,
                severity_levels=self.settings.severity_levels(queue),
                checklist=_checklist_view(queue, mail.checklist, t.language),
                raised_to=t.severity if mail.customer_raised else None,
                files=carried,
                too_large=[
                    {
                        "name": f.filename,
                        "size": human_size(f.size, lang),
                        "url": links.url(f.id, to[0]) if links is not None else None,
                    }
                    for f in listed
                ],
                budget=human_size(capacity(self.settings.notifications.attach_max_bytes, room), lang),
                link_days=format_decimal(self.settings.web.link_days, locale=lang),
                to=to,
                customer_html=html.html if html is not None else None,
                # A reply's text is its new part; its HTML cannot be cut there, so it comes whole.
                whole_html=html is not None and text != p.text,
                message_id=first_id,
                now=mail.now,
            )
            first_id = first_id or built.out.message_id
            # One notification per inbound message; with links, one copy per recipient (the address
            # hashed: an address of 254 characters would not fit the key's 255), all with the same
            # Message-ID and recorded once, so the case lists it once and the hourly cap counts it once.
            key = f"notify:{mail.message_id}"
            if len(groups) > 1:
                key += ":" + hashlib.sha256(to[0].encode("utf-8")).hexdigest()[:16]
            outbox_ids.append(
                _enqueue(
                    mail, built, MessageKind.NOTIFICATION, key, record=i == 0, recipients=list(queue.notify_addresses)
                )
            )
        mail.event(
            "agents_notified",
            outbox_id=outbox_ids[0],
            event=event,
            to=list(queue.notify_addresses),
            attached=len(attached),
            listed=len(listed),
        )
