"""The mails a case sends, built from templates: acknowledgement, agent notification, relayed agent
reply, command error. No I/O and no database: the pipeline steps pass in what they know and enqueue
the result.

Every mail carries the case tag in its subject and Outlook's ``Thread-Topic``/``Thread-Index``
(``outbound/threadindex.py``), so that mail clients keep one conversation per case. Notifications to
agents carry a Message-ID signed for their case (``outbound/tokens.py``): an agent's reply to one
proves where it comes from. Customer text reaches templates only as data (sandboxed Jinja2,
autoescaped HTML).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from babel.numbers import format_decimal

from mailbridge.domain import REPLY_MARKER, Address, CaseNumberFormat
from mailbridge.outbound import compose as comp
from mailbridge.outbound.threadindex import thread_index_reply, thread_index_root
from mailbridge.outbound.tokens import case_for_notification_id, notification_message_id
from mailbridge.settings import QueueSettings
from mailbridge.store.repositories import ThreadParent, TicketRef
from mailbridge.subjects import SubjectNormalizer, case_tag_pattern

# RFC 3834 3.1.7: a reply made by a program to a specific mail; a program's own report is
# "auto-generated" (notifications and error reports to agents).
AUTO_REPLIED = "auto-replied"
AUTO_GENERATED = "auto-generated"


@dataclass(frozen=True)
class Built:
    """A composed mail and the threading we record with it."""

    out: comp.Outgoing
    in_reply_to: str | None
    references: list[str]
    thread_index: str


class MailBuilder:
    def __init__(self, templates, fmt: CaseNumberFormat, normalizer: SubjectNormalizer, secrets: list[bytes]):
        self.templates = templates
        self.normalizer = normalizer
        self.secrets = secrets
        self.tag_re = fmt.tag_pattern()

    # -- helpers ---------------------------------------------------------------------------------

    def topic(self, ticket: TicketRef) -> str:
        """The conversation's topic: the case subject without reply prefixes and this case's tag.

        Only the case's own tag goes: a case number the customer typed ("Frage zu C1000005") is
        part of the topic, even when it has the shape of ours.
        """
        return self.normalizer.topic(ticket.subject, case_tag_pattern(ticket.case_number)) or ticket.subject

    def _thread_index(self, ticket: TicketRef, parent: str | None, now: datetime) -> str:
        return thread_index_reply(parent, now, fallback_root=thread_index_root(ticket.case_number, ticket.created_at))

    def _public(self, ids: list[str]) -> list[str]:
        """``ids`` without our signed notification ids: those prove an agent, so no mail to a
        customer may carry one (a customer who answered a leaked copy would otherwise get it back)."""
        return [i for i in ids if case_for_notification_id(i, self.secrets) is None]

    def _compose(
        self, ticket: TicketRef, *, parent_id, parent_refs, parent_index, now, to_agents: bool = False, **kw
    ) -> Built:
        if not to_agents:
            parent_refs = self._public(list(parent_refs))
            parent_id = (
                parent_id if parent_id and self._public([parent_id]) else (parent_refs[-1] if parent_refs else None)
            )
        refs = comp.references_for(parent_id, parent_refs) if parent_id else []
        index = self._thread_index(ticket, parent_index, now)
        out = comp.compose(
            date=now,
            in_reply_to=parent_id,
            references=refs,
            thread_topic=self.topic(ticket),
            thread_index=index,
            **kw,
        )
        return Built(out, parent_id, refs, index)

    def _to_agents(
        self,
        ticket: TicketRef,
        queue: QueueSettings,
        template: str,
        tctx: dict,
        to: list[str],
        previous: ThreadParent | None,
        now: datetime,
        message_id: str | None,
    ) -> Built:
        """A mail about a case to agents or managers, in the queue's language, continuing the
        agent-side thread (``previous``), from the queue's address with the case in its name."""
        lang = queue.language
        subject = self.templates.render(lang, f"{template}.subject.j2", **tctx).strip()
        return self._compose(
            ticket,
            parent_id=previous.message_id if previous else None,
            parent_refs=previous.references if previous else [],
            parent_index=previous.thread_index if previous else None,
            now=now,
            from_name=f"{queue.display_name} {ticket.case_number}",
            from_addr=queue.address,
            to=[("", a) for a in to],
            reply_to=queue.address,
            subject=comp.tagged_subject(ticket.case_number, subject),
            text=self.templates.render(lang, f"{template}.txt.j2", **tctx),
            html=None,
            auto_submitted=AUTO_GENERATED,
            language=lang,
            message_id=message_id,
            to_agents=True,
        )

    # -- the mails -------------------------------------------------------------------------------

    def ack(
        self,
        ticket: TicketRef,
        queue: QueueSettings,
        to: Address,
        *,
        parent_id: str | None,
        parent_refs: list[str],
        parent_index: str | None,
        attachments: list[str],
        previous_case: str | None,
        unknown: list[dict],
        now: datetime,
        severity: str | None = None,
        first_response_due: str | None = None,
        no_contract: bool = False,
        missing: list[str] | None = None,
        support_hours: str | None = None,
        closures: list[str] | None = None,
    ) -> Built:
        """The acknowledgement of a new case, to the customer, in the case's language; with the
        severity understood and the first-response deadline when the queue promises one, the support
        hours (and the days we are closed before that deadline), and the labels of the information
        the request still lacks (with a block to fill in by replying)."""
        tctx = {
            "case_number": ticket.case_number,
            "subject": ticket.subject,
            "requester_name": ticket.requester_name,
            "requester_email": ticket.requester_email,
            "queue_name": queue.display_name,
            "support_address": queue.address,
            "attachments": attachments,
            "previous_case": previous_case,
            "unknown_references": unknown,
            "severity": severity,
            "first_response_due": first_response_due,
            "no_contract": no_contract,
            "missing": list(missing or []),
            "support_hours": support_hours,
            "closures": list(closures or []),
        }
        lang = ticket.language
        subject = comp.tagged_subject(ticket.case_number, self.templates.render(lang, "ack.subject.j2", **tctx).strip())
        return self._compose(
            ticket,
            parent_id=parent_id,
            parent_refs=parent_refs,
            parent_index=parent_index,
            now=now,
            from_name=queue.display_name,
            from_addr=queue.address,
            to=[(to.name, to.email)],
            subject=subject,
            text=self.templates.render(lang, "ack.txt.j2", **tctx),
            html=self.templates.render(lang, "ack.html.j2", **tctx),
            auto_submitted=AUTO_REPLIED,
            language=lang,
        )

    def notification(
        self,
        ticket: TicketRef,
        queue: QueueSettings,
        *,
        event: str,
        sender: Address,
        role: str,
        text: str,
        flags: list[str],
        urgency: list[str],
        attachments: list[str],
        previous: ThreadParent | None,
        linked_case: str | None,
        severity_levels: list[str],
        now: datetime,
        checklist: list[dict] | None = None,
        raised_to: str | None = None,
    ) -> Built:
        """Tell the queue's agents about a new case or a reply; its Message-ID is signed for the case.
        ``checklist``: the case's required information ({label, given, evidence}); ``raised_to``: the
        level the customer's request raised the case to.

        ``event``: new | reply | reopened | third-party | unverified-agent.
        """
        domain = queue.address.rsplit("@", 1)[-1]
        mid = notification_message_id(ticket.case_number, domain, self.secrets[0])
        tctx = {
            "marker": REPLY_MARKER,
            "event": event,
            "case_number": ticket.case_number,
            "subject": self.topic(ticket),
            "status": ticket.status,
            "severity": ticket.severity,
            "assignee": ticket.assignee,
            "sender_name": sender.name,
            "sender_email": sender.email,
            "role": role,
            "text": text,
            "flags": flags,
            "urgency": urgency,
            "attachments": attachments,
            "linked_case": linked_case,
            "severity_levels": severity_levels,
            "queue_name": queue.display_name,
            "checklist": list(checklist or []),
            "raised_to": raised_to,
        }
        return self._to_agents(ticket, queue, "notification", tctx, queue.notify_addresses, previous, now, mid)

    def severity_raised(
        self,
        ticket: TicketRef,
        queue: QueueSettings,
        to: Address,
        *,
        level: str,
        first_response_due: str | None,
        parent_id: str | None,
        parent_refs: list[str],
        now: datetime,
    ) -> Built:
        """Tell the customer that their request raised the case's severity (``customer_may_raise``)."""
        tctx = {
            "case_number": ticket.case_number,
            "subject": ticket.subject,
            "requester_name": ticket.requester_name,
            "queue_name": queue.display_name,
            "support_address": queue.address,
            "severity": level,
            "first_response_due": first_response_due,
        }
        lang = ticket.language
        subject = self.templates.render(lang, "severity_raised.subject.j2", **tctx).strip()
        return self._compose(
            ticket,
            parent_id=parent_id,
            parent_refs=parent_refs,
            parent_index=None,
            now=now,
            from_name=queue.display_name,
            from_addr=queue.address,
            to=[(to.name, to.email)],
            subject=comp.tagged_subject(ticket.case_number, subject),
            text=self.templates.render(lang, "severity_raised.txt.j2", **tctx),
            html=None,
            auto_submitted=AUTO_REPLIED,
            language=lang,
        )

    def relay(
        self,
        ticket: TicketRef,
        queue: QueueSettings,
        *,
        agent: Address,
        text: str,
        to: list[Address],
        cc: list[Address],
        parent: ThreadParent | None,
        attachments: list[comp.OutgoingAttachment],
        now: datetime,
    ) -> Built:
        """An agent's reply, sent to the customer from the support address in the case's thread."""
        agent_name = agent.name or agent.email.split("@", 1)[0]
        tctx = {
            "text": text,
            "agent_name": agent_name,
            "queue_name": queue.display_name,
            "support_address": queue.address,
            "case_number": ticket.case_number,
        }
        return self._compose(
            ticket,
            parent_id=parent.message_id if parent else None,
            parent_refs=parent.references if parent else [],
            parent_index=parent.thread_index if parent else None,
            now=now,
            from_name=f"{agent_name} ({queue.display_name})",
            from_addr=queue.address,
            to=[(a.name, a.email) for a in to],
            cc=[(a.name, a.email) for a in cc],
            reply_to=queue.address,
            subject=comp.tagged_subject(ticket.case_number, self.topic(ticket)),
            text=self.templates.render(ticket.language, "relay.txt.j2", **tctx),
            html=None,
            language=ticket.language,
            attachments=attachments,
        )

    def oversize_notice(
        self,
        queue: QueueSettings,
        to: Address,
        *,
        subject: str,
        size: int,
        limit: int,
        parent_id: str | None,
        parent_refs: list[str],
        now: datetime,
    ) -> Built:
        """The short notice to the sender of a mail over the size limit (quarantined, no case)."""
        lang = queue.language

        def mb(n: int) -> str:
            return f"{format_decimal(n / 1024 / 1024, format='#,##0.0', locale=lang)} MB"

        tctx = {
            "name": to.name,
            "subject": subject,
            "size": mb(size),
            "limit": mb(limit),
            "support_address": queue.address,
            "queue_name": queue.display_name,
        }
        parent_refs = self._public(list(parent_refs))
        refs = comp.references_for(parent_id, parent_refs) if parent_id else []
        out = comp.compose(
            date=now,
            in_reply_to=parent_id,
            references=refs,
            from_name=queue.display_name,
            from_addr=queue.address,
            to=[(to.name, to.email)],
            subject=self.templates.render(lang, "oversize_notice.subject.j2", **tctx).strip(),
            text=self.templates.render(lang, "oversize_notice.txt.j2", **tctx),
            html=None,
            auto_submitted=AUTO_REPLIED,
            language=lang,
        )
        return Built(out, parent_id, refs, "")

    def command_error(
        self,
        ticket: TicketRef,
        queue: QueueSettings,
        *,
        agent: Address,
        errors: list[str],
        verified: bool,
        parent_id: str | None,
        parent_refs: list[str],
        now: datetime,
    ) -> Built:
        """Tell an agent that the commands of their mail were not applied, and why."""
        tctx = {"case_number": ticket.case_number, "errors": errors, "verified": verified}
        lang = queue.language
        return self._compose(
            ticket,
            parent_id=parent_id,
            parent_refs=parent_refs,
            parent_index=None,
            now=now,
            from_name=queue.display_name,
            from_addr=queue.address,
            to=[(agent.name, agent.email)],
            subject=comp.tagged_subject(
                ticket.case_number, self.templates.render(lang, "command_error.subject.j2", **tctx).strip()
            ),
            text=self.templates.render(lang, "command_error.txt.j2", **tctx),
            html=None,
            auto_submitted=AUTO_REPLIED,
            language=lang,
            to_agents=True,
        )

    def escalation(
        self,
        ticket: TicketRef,
        queue: QueueSettings,
        *,
        to: list[str],
        facts: dict,
        previous: ThreadParent | None,
        now: datetime,
        signed: bool = True,
    ) -> Built:
        """An SLA warning, breach or re-escalation (or an escalation on creation) about a case, to
        agents or managers. Signed like a notification: an agent who answers it answers the customer.

        ``facts``: what the template shows (kind, clock, stage, due, severity, organisation, …).
        ``signed``: False when it goes to someone who is not an agent (a manager): then its
        Message-ID proves nothing.
        """
        domain = queue.address.rsplit("@", 1)[-1]
        tctx = {
            "marker": REPLY_MARKER,
            "case_number": ticket.case_number,
            "subject": self.topic(ticket),
            "status": ticket.status,
            "assignee": ticket.assignee,
            "requester": ticket.answer_to,
            "queue_name": queue.display_name,
            **facts,
        }
        mid = notification_message_id(ticket.case_number, domain, self.secrets[0]) if signed else None
        return self._to_agents(ticket, queue, "escalation", tctx, to, previous, now, mid)
