"""The ordered pipeline steps. Each has a ``name`` and ``__call__(mail)``; adding a stage is one
class and one line in :func:`default_steps` (see ARCHITECTURE.md, "Adding a step").

A step may end the mail's run early with ``mail.finish`` (a duplicate, our own mail, noise) or
``mail.to_quarantine``; expected outcomes are values on the mail, never exceptions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import structlog

from mailbridge.domain import TicketStatus
from mailbridge.ingest import outgoing, prepare
from mailbridge.ingest.clocks import ArchiveClocks, TrackClocks
from mailbridge.ingest.conversation import AgentCommands, AgentFiling, ApplyReply, Identify
from mailbridge.ingest.information import CheckInformation
from mailbridge.ingest.language import LanguageDetector
from mailbridge.ingest.mail import TICKET_REF_FIELDS, InboundMail
from mailbridge.ingest.matcher import Matcher
from mailbridge.ingest.noise import MailClass
from mailbridge.ingest.outgoing import (
    Acknowledge,
    AgentAnswers,
    AutoAnswers,
    CommandErrors,
    ConfirmRaise,
    NotifyAgents,
    OversizeNotice,
    Relay,
    StatusByMail,
)
from mailbridge.ingest.pipeline import Step
from mailbridge.ingest.routing import is_ours, route
from mailbridge.outbound import compose as comp
from mailbridge.outbound.guard import AutoMailGuard
from mailbridge.outbound.links import AttachmentLinks, CaseLinks
from mailbridge.outbound.messages import MailBuilder
from mailbridge.settings import QueueSettings, Settings
from mailbridge.sla.deadlines import Deadlines
from mailbridge.sla.escalation import Escalations
from mailbridge.store import repositories as repo
from mailbridge.store.models import AttachmentRow, Message, RawMessage, Ticket
from mailbridge.store.rawstore import ContentStore
from mailbridge.store.repositories import TicketRef
from mailbridge.store.tracker import Viewer
from mailbridge.subjects import SubjectNormalizer, case_tag_pattern
from mailbridge.vocabulary import AuthorRole, Disposition, MessageKind

log = structlog.get_logger(__name__)


class Deduplicate:
    """A mail we already have (same bytes, or same Message-ID) is not processed again (UIDVALIDITY
    changes, a crash between commit and MOVE, the same mail delivered to two support addresses)."""

    name = "deduplicate"

    def __call__(self, mail: InboundMail) -> None:
        mid = mail.parsed.message_id if mail.parsed is not None else None
        repo.hold_message_id(mail.session, mid)  # a copy in another open batch commits first
        dup = repo.find_duplicate(mail.session, mail.sha256, mid, besides=mail.requeue_of)
        if dup is not None:
            dup_id, dup_disposition = dup
            mail.finish(Disposition.DUPLICATE, f"same as raw message {dup_id} ({dup_disposition})")
            log.info("mail_duplicate", original_raw_id=dup_id)


class Classify:
    """The mail's class (ingest/noise.py): a person's, auto-forwarded, an out-of-office or other
    auto-reply, a hard or soft bounce, list mail, or our own. A mail the parser did not read whole
    (too large, or it gave up) is classified by its header block."""

    name = "classify"

    def __init__(self, own: frozenset[str]):
        self.own = own

    def __call__(self, mail: InboundMail) -> None:
        # Before the raw row is written (it records the class).
        p = mail.head
        if p is None:
            return
        # A parse worker may have classified it already (``prepare.Ahead``, the same call).
        mail.mail_class = c = mail.classified or prepare.classify(p, mail.raw, mail.oversize, self.own)
        if mail.machine_made:
            mail.kind = MessageKind.AUTO  # a bounce on a case becomes "bounce" (RecordNoise)
        elif c.kind == MailClass.AUTO_FORWARDED:
            mail.flags.append(f"forwarded automatically by the sender's mail server ({c.reason})")


class RecordRaw:
    """The raw-message row: where the bytes are and which mailbox/UID they came from."""

    name = "record_raw"

    def __call__(self, mail: InboundMail) -> None:
        # The disposition is corrected at the end of the transaction if the mail went elsewhere.
        row = mail.raw_row(Disposition.PROCESSED, mail.now)
        if mail.requeue_of is not None:  # run again: its row is there (where the bytes are, since when)
            mail.raw_id = mail.requeue_of
            repo.update_row(mail.session, RawMessage, mail.raw_id, {k: row[k] for k in ("disposition", "mail_class")})
        else:
            mail.raw_id = repo.insert_row(mail.session, RawMessage, row)


class Route:
    """The mail's queue (``ingest/routing.py``), also for a mail read only by its header block:
    the notice about an oversized mail comes from the queue it was written to."""

    name = "route"

    def __init__(self, settings: Settings):
        self.settings = settings

    def __call__(self, mail: InboundMail) -> None:
        mail.queue, mail.routing["queue"] = route(self.settings, mail.head, mail.account)


class RouteImported:
    """The queue of a mail imported from a file (``mailbridge import``): the one the operator named
    (``--queue``), else the queue of the support address it was written to (``ingest/routing.py``);
    a mail written to none of them goes to the default queue of the first account (it was fetched
    from no account of ours)."""

    name = "route"

    def __init__(self, settings: Settings, queue: QueueSettings | None):
        self.settings = settings
        self.queue = queue

    def __call__(self, mail: InboundMail) -> None:
        if self.queue is not None:
            mail.queue = self.queue
            mail.routing["queue"] = {"queue": self.queue.name, "by": "import", "evidence": "--queue"}
        else:
            mail.queue, mail.routing["queue"] = route(self.settings, mail.head, self.settings.accounts[0].name)


class Validate:
    """What we process at all. A mail over the size limit, one that could not be parsed, or one whose
    content cannot be trusted goes to quarantine (its raw bytes kept) instead of becoming a ticket;
    the sender of an oversized mail is told (``notice``). Our own mail is set aside (ignored): it
    would answer ourselves (a loop)."""

    name = "validate"

    def __init__(self, notice: OversizeNotice | None = None):
        self.notice = notice

    def __call__(self, mail: InboundMail) -> None:
        p = mail.parsed
        if mail.oversize:
            mail.to_quarantine("size", mail.parse_error or "over the size limit")
            if self.notice is not None:
                self.notice(mail)
        elif p is None:
            mail.to_quarantine("parse", mail.parse_error or "not parsed")
        elif p.fatal_defects:
            mail.to_quarantine(self.name, "; ".join(dict.fromkeys(p.fatal_defects)))
        elif p.from_ is None:
            mail.to_quarantine(self.name, "no usable sender address in From")
        elif mail.mail_class is not None and mail.mail_class.kind == MailClass.OWN:
            mail.routing.update({"rule": "ignored", "evidence": mail.mail_class.reason})
            mail.finish(Disposition.IGNORED, mail.mail_class.reason)


class MatchCase:
    """Which existing case the mail is about (``ingest/matcher.py``), and its language."""

    name = "match"

    def __init__(self, matcher: Matcher, detector: LanguageDetector):
        self.matcher = matcher
        self.detector = detector

    def __call__(self, mail: InboundMail) -> None:
        p = mail.parsed
        assert p is not None and mail.queue is not None
        bounce = mail.mail_class.bounce if mail.mail_class is not None else None
        if bounce is not None:
            # A bounce names the mail it returns, not its case: look for that one of ours.
            p = replace(
                p,
                references=[*p.references, *bounce.original_message_ids],
                subject=f"{p.subject} {bounce.original_subject or ''}".strip(),
            )
        mail.match = m = self.matcher.match(mail.session, p)
        mail.routing.update(m.as_routing())
        # Read again, locked: another mail or the close job must not change this case meanwhile.
        mail.ticket = repo.ticket_ref(mail.session, ticket_id=m.ticket.id, lock=True) if m.ticket else None
        if m.conflicts:
            mail.flags.append("conflicting references: " + ", ".join(c["case"] for c in m.conflicts))
        p = mail.parsed
        guess = p.language if p.language_detected else self.detector.guess_mail(p)
        mail.language = guess or mail.queue.language


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

    def __call__(self, mail: InboundMail) -> None:
        c, p = mail.mail_class, mail.parsed
        if c is None or p is None or c.personal or c.kind == MailClass.LIST:
            return
        t = mail.ticket
        if t is None:
            mail.routing.update({"rule": "noise", "evidence": f"{c.kind}: {c.reason}"})
            mail.finish(Disposition.NOISE, c.reason)
            log.info("noise_unmatched", mail_class=c.kind.value, reason=c.reason)
            return
        if c.bounce is not None:
            mail.kind = MessageKind.BOUNCE
            failed = []
            for address in c.bounce.recipients:
                until = self.guard.record_bounce(
                    mail.session,
                    address,
                    permanent=c.bounce.permanent,
                    status=c.bounce.status,
                    reason=c.reason,
                    ticket_id=t.id,
                    now=mail.now,
                )
                failed.append({"address": address, "suppressed_until": until.isoformat() if until else None})
            mail.event(
                "delivery_failed",
                permanent=c.bounce.permanent,
                status=c.bounce.status,
                addresses=failed,
                bounced=list(c.bounce.original_message_ids),
                reason=c.reason,
            )
            mail.flags.append(
                f"{'hard' if c.bounce.permanent else 'soft'} bounce for {', '.join(c.bounce.recipients) or '?'}"
            )
            log.warning("mail_bounced", permanent=c.bounce.permanent, recipients=list(c.bounce.recipients))
        else:
            mail.event("auto_reply_received", mail_class=c.kind.value, reason=c.reason)


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

    def _reply_to(self, p) -> str | None:
        """The first mail's Reply-To when it names someone else (a web form's noreply sender)."""
        if p.reply_to and p.from_ is not None:
            addr = p.reply_to[0].email
            if addr != p.from_.email and not is_ours(self.settings, addr) and len(addr) <= 320:
                return addr
        return None

    def __call__(self, mail: InboundMail) -> None:
        if mail.ticket is not None:
            return
        p, f = mail.parsed, mail.filing
        assert p is not None and p.from_ is not None and mail.queue is not None and mail.language
        # A case an agent files (a forward, a call) is the customer's, counted from their request.
        reply_to = self._reply_to(p) if f is None else None
        requester = f.requester if f is not None else p.from_
        start = f.received if f is not None else mail.now
        subject, text = (f.subject, f.text) if f is not None else (p.subject, p.text)
        # The organisation of whoever the case answers to, and whether it has a response promise;
        # the severity the mail asks for and the deadlines it sets (no scheme: no promise). The
        # whole first mail counts: a forwarded error report is the request.
        mail.customer = self.deadlines.customer(mail.queue.name, reply_to or requester.email)
        if f is not None and f.severity:
            mail.sla = self.deadlines.for_level(mail.queue.name, f.severity, start, mail.customer)
        else:
            mail.sla = self.deadlines.assess(mail.queue.name, subject, text, start, mail.customer)
        values = self._row(mail, requester, subject, start, reply_to)
        ticket_id = repo.insert_row(mail.session, Ticket, values)
        mail.ticket = TicketRef(id=ticket_id, **{k: v for k, v in values.items() if k in TICKET_REF_FIELDS})
        mail.new_ticket = True
        mail.role = AuthorRole.REQUESTER
        if mail.machine_made:
            mail.flags.append(f"automatic mail ({mail.machine_made}): probably no request of a person")
        structlog.contextvars.bind_contextvars(case=mail.ticket.case_number)
        people = [(requester.email, requester.name, AuthorRole.REQUESTER)]
        # Cc'd customers take part; our own addresses and the queue's agents do not.
        people += [
            (a.email, a.name, AuthorRole.CUSTOMER)
            for a in (p.cc if f is None else [])
            if not is_ours(self.settings, a.email, mail.queue)
        ]
        repo.add_participants(mail.session, ticket_id, people, mail.now, new_ticket=True)
        self._history(mail, requester.email)
        log.info("ticket_created", queue=mail.queue.name, language=mail.language, linked=values["linked_ticket_id"])

    def _row(self, mail: InboundMail, requester, subject: str, start, reply_to: str | None) -> dict:
        """The new ticket's row, with the next case number; created when the request came (``start``)."""
        assert mail.queue is not None and mail.customer is not None and mail.sla is not None
        serial = repo.allocate_serial(mail.session, self.fmt, self.first_serial)
        if mail.link_from is not None:
            # The old case's tag and the reply prefixes are not part of the new case's subject (a
            # number the customer typed is: only the old case's own tag goes).
            subject = self.normalizer.topic(subject, case_tag_pattern(mail.link_from.case_number)) or subject
        sla, customer = mail.sla, mail.customer
        return {
            "case_number": self.fmt.format(serial),
            "serial": serial,
            "queue": mail.queue.name,
            "status": TicketStatus.NEW.value,
            "subject": comp.header_safe(subject, 2000),
            "requester_email": requester.email,
            "requester_name": comp.header_safe(requester.name, 300),
            "language": mail.language,
            "created_at": start,
            "updated_at": mail.now,
            "linked_ticket_id": mail.link_from.id if mail.link_from is not None else None,
            "reply_to": reply_to,
            "organisation": customer.organisation,
            "contract": customer.contract,
            "severity": sla.level.key if sla.level else None,
            "first_response_due": sla.first_response_due,
            "resolution_due": sla.resolution_due,
            "assignee": mail.filing.assignee if mail.filing is not None else None,
        }

    @staticmethod
    def _history(mail: InboundMail, requester: str) -> None:
        """The new case's first events: created, its severity, and the link to the case it follows up."""
        assert mail.queue is not None and mail.customer is not None and mail.sla is not None
        assert mail.ticket is not None
        customer, sla = mail.customer, mail.sla
        mail.event(
            "created",
            queue=mail.queue.name,
            language=mail.language,
            requester=requester,
            organisation=customer.organisation,
            contract=customer.contract,
            promised=customer.promised,
        )
        f = mail.filing
        if f is not None:
            # Who filed the case for the customer, how, and since when it counts.
            mail.event(
                "filed_by_agent",
                how=f.how,
                by=f.agent.email,
                received=f.received.isoformat(),
                original_message_id=f.message_id,
                **({"assignee": f.assignee} if f.assignee else {}),
            )
            if f.how == "phone":
                mail.flags.append(f"taken by phone by {f.agent.email}")
        if sla.level is not None:
            mail.event(
                "severity_set",
                new=sla.level.key,
                by=f.agent.email if f is not None and f.severity else "detection" if sla.words else "default",
                words=sla.words,
                first_response_due=sla.first_response_due.isoformat() if sla.first_response_due else None,
                resolution_due=sla.resolution_due.isoformat() if sla.resolution_due else None,
            )
        if mail.link_from is not None:
            mail.event("linked", to=mail.link_from.case_number, reason=mail.link_reason)
            mail.events.append(
                {
                    "ticket_id": mail.link_from.id,
                    "kind": "follow_up_case",
                    "detail": {"case": mail.ticket.case_number, "reason": mail.link_reason},
                    "created_at": mail.now,
                }
            )


class StoreMessage:
    """The inbound message row with its attachments (bytes in the content-addressed store); also
    for our own mail and unmatched noise, which are kept without a case."""

    name = "store_message"
    records_kept = True

    def __init__(self, attachments: ContentStore):
        self.attachments = attachments

    def __call__(self, mail: InboundMail) -> None:
        p = mail.parsed
        assert p is not None and mail.raw_id is not None
        if mail.ticket is not None:
            mail.routing["author"] = {"role": mail.role, "proof": mail.agent_proof, "kind": mail.kind}
        f = mail.filing
        if f is not None and mail.new_ticket:
            # The agent wrote this mail; the case is the customer's.
            mail.routing["author"] = {"role": AuthorRole.AGENT, "proof": mail.agent_proof, "kind": mail.kind}
            mail.routing["filed"] = {"how": f.how, "by": f.agent.email, "for": f.requester.email}
            self._filed(mail, f)
            return
        mail.message_id = self._insert(mail, p.attachments, {})
        if mail.ticket is not None and not mail.new_ticket:
            repo.update_row(mail.session, Ticket, mail.ticket.id, {"updated_at": mail.now})
            mail.event(
                "message_received",
                rule=mail.routing.get("rule"),
                sender=p.from_.email if p.from_ else "",
                message_kind=mail.kind,
                flags=mail.flags or None,
            )
            log.info("message_attached", rule=mail.routing.get("rule"), kind=mail.kind)

    def _filed(self, mail: InboundMail, f) -> None:
        """A case an agent filed: the customer's request as its first message (the forwarded mail:
        its sender, date, subject, text, files and Message-ID; a call: the agent's text without the
        commands), and for a forward the agent's own words as an internal note. Both rows point to
        the one raw mail."""
        request = {
            "message_id": f.message_id,
            "in_reply_to": None,
            "references": " ".join(f.references) or None,
            "sender_email": f.author.email,
            "sender_name": f.author.name,
            "subject": f.subject,
            "body_text": f.text,
            "body_new": f.text,
            "date": f.received,
        }
        mail.message_id = self._insert(mail, f.attachments, request)
        if f.how == "forward":
            note = {"kind": MessageKind.NOTE, "body_new": f.note, "flags": None}
            self._insert(mail, [], note)

    def _insert(self, mail: InboundMail, attachments, overrides: dict) -> int:
        """One inbound message row of this mail with its attachments; ``overrides`` replace what the
        mail's own header and text say."""
        p = mail.parsed
        assert p is not None
        message_id = repo.insert_row(
            mail.session,
            Message,
            {
                "ticket_id": mail.ticket.id if mail.ticket else None,
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
                "kind": mail.kind if mail.ticket is not None else None,
                "mail_class": mail.mail_class.kind.value if mail.mail_class else None,
                "flags": mail.flags or None,
                "thread_index": comp.header_safe(p.header("thread-index") or "", 2048) or None,
                "date": p.date,
                "language": mail.language,
                "raw_id": mail.raw_id,
                "routing": mail.routing,
                "defects": p.defects or None,
                "created_at": mail.now,
            }
            | overrides,
        )
        rows = []
        for a in attachments:
            digest, _ = self.attachments.put(a.data)
            rows.append(
                {
                    "message_id": message_id,
                    "filename": comp.stored_filename(a),
                    "content_type": a.content_type[:255],
                    "size": len(a.data),
                    "sha256": digest,
                    "content_id": a.content_id,
                }
            )
        repo.insert_rows(mail.session, AttachmentRow, rows)
        return message_id


def default_steps(
    settings: Settings,
    *,
    detector: LanguageDetector,
    attachments: ContentStore,
    matcher: Matcher,
    normalizer: SubjectNormalizer,
    builder: MailBuilder,
    guard: AutoMailGuard,
    deadlines: Deadlines,
    escalations: Escalations,
    links: AttachmentLinks | None = None,
    viewer_for: Callable[[Settings, str], Viewer],
    may_ask: Callable[[Settings, str, bool], bool],
    case_links: CaseLinks | None = None,
) -> list[Step]:
    """The pipeline, in order (the parts are built once, by the composition root ``mailbridge/app.py``).
    Matching and who-wrote-it come before the case is opened or changed; everything a mail makes
    us send comes last, in the same transaction."""
    answers = AutoAnswers(guard)
    return [
        Deduplicate(),
        Classify(settings.own_addresses),
        RecordRaw(),
        Route(settings),
        Validate(OversizeNotice(builder, settings, answers) if settings.auto_mail.oversize_notice else None),
        MatchCase(matcher, detector),
        RecordNoise(guard),
        Identify(settings),
        AgentFiling(settings, deadlines, detector, matcher, AgentAnswers(builder, settings)),
        StatusByMail(builder, settings, normalizer, deadlines, answers, viewer_for, may_ask, case_links),
        ApplyReply(settings, normalizer, deadlines),
        OpenTicket(settings.case_numbers.fmt, settings.case_numbers.first_serial, normalizer, settings, deadlines),
        AgentCommands(settings, deadlines),
        StoreMessage(attachments),
        CheckInformation(settings, normalizer),
        Acknowledge(builder, deadlines, answers, case_links),
        ConfirmRaise(builder, settings, deadlines, answers),
        Relay(builder, settings, case_links),
        CommandErrors(builder, settings),
        NotifyAgents(builder, settings, attachments, links),
        TrackClocks(settings, deadlines, escalations),
    ]


def archive_steps(settings: Settings, **parts) -> list[Step]:
    """The pipeline for archived mail (``mailbridge import --archive``): the steps of
    :func:`default_steps`, in the same order, without any that sends mail. Every step of
    ``ingest/outgoing.py`` is left out (that module is where everything a mail makes us send is
    decided: acknowledgements, raise confirmations, relays, command errors, notifications), the
    oversize notice and the agents' answers of ``AgentFiling`` (help, errors) too;
    :class:`~mailbridge.ingest.clocks.ArchiveClocks` replaces ``TrackClocks``
    (which could escalate on creation, and would start clocks whose deadlines passed long ago)."""
    steps: list[Step] = []
    for step in default_steps(settings, **parts):
        if type(step).__module__ == outgoing.__name__:
            continue
        if isinstance(step, Validate):
            step = Validate(None)
        elif isinstance(step, AgentFiling):
            step = AgentFiling(step.settings, step.deadlines, step.detector, step.matcher, None)
        elif isinstance(step, TrackClocks):
            step = ArchiveClocks()
        steps.append(step)
    return steps


def import_steps(settings: Settings, *, archive: bool, queue: QueueSettings | None, **parts) -> list[Step]:
    """The pipeline for mail imported from a file (``mailbridge/importer.py``): :func:`archive_steps`
    or, for pending mail, :func:`default_steps` (processed as if it had just arrived), with the
    imported mail's routing (:class:`RouteImported`)."""
    steps = archive_steps(settings, **parts) if archive else default_steps(settings, **parts)
    return [RouteImported(settings, queue) if isinstance(s, Route) else s for s in steps]
