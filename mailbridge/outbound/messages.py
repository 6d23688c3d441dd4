"""The mails a case sends, built from templates: acknowledgement, agent notification, relayed agent
reply, command error. No I/O and no database: the pipeline steps pass in what they know and enqueue
the result.

Every mail carries the case tag in its subject and Outlook's ``Thread-Topic``/``Thread-Index``
(``outbound/threadindex.py``), so that mail clients keep one conversation per case. Notifications to
agents carry a Message-ID signed for their case (``outbound/tokens.py``): an agent's reply to one
proves where it comes from. Customer text reaches templates only as data (sandboxed Jinja2,
autoescaped HTML).

**Languages.** A mail to the customer is in the case's language; a mail to agents or managers
(notification, escalation, command error) is in the queue's language, the agents' — all of it: the
reasons an error mail gives come from :data:`REASONS` in that language (:class:`Reason`, :func:`say`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from babel.numbers import format_decimal
from markupsafe import Markup

from mailbridge.domain import REPLY_MARKER, Address, CaseNumberFormat
from mailbridge.outbound import compose as comp
from mailbridge.outbound.threadindex import thread_index_reply, thread_index_root
from mailbridge.outbound.tokens import case_for_notification_id, notification_message_id
from mailbridge.settings import QueueSettings
from mailbridge.store.repositories import ThreadParent, TicketRef
from mailbridge.subjects import SubjectNormalizer, case_tag_pattern, may_carry_tag

# RFC 3834 3.1.7: a reply made by a program to a specific mail; a program's own report is
# "auto-generated" (notifications and error reports to agents).
AUTO_REPLIED = "auto-replied"
AUTO_GENERATED = "auto-generated"


# The texts told to an agent about a mail of theirs, by kind and language. English is the fallback
# for a language without its own text. Values are inserted as given (quoted lines already shortened).
REASONS: dict[str, dict[str, str]] = {
    "not_a_command": {
        "en": 'line "{line}": not a command',
        "de": 'Zeile "{line}": kein Befehl',
    },
    "unknown_command": {
        "en": 'line "{line}": unknown command #{name} (known: {known})',
        "de": 'Zeile "{line}": unbekannter Befehl #{name} (bekannt: {known})',
    },
    "unknown_command_suggest": {
        "en": 'line "{line}": unknown command #{name}, did you mean #{suggestion}? (known: {known})',
        "de": 'Zeile "{line}": unbekannter Befehl #{name}, meinten Sie #{suggestion}? (bekannt: {known})',
    },
    "takes_no_argument": {
        "en": 'line "{line}": #{name} takes no argument',
        "de": 'Zeile "{line}": #{name} hat kein Argument',
    },
    "needs_severity": {
        "en": 'line "{line}": #{name} needs an argument (severity level)',
        "de": 'Zeile "{line}": #{name} braucht ein Argument (eine Schwere)',
    },
    "needs_agent": {
        "en": 'line "{line}": #{name} needs an argument (agent address)',
        "de": 'Zeile "{line}": #{name} braucht ein Argument (die Adresse eines Agenten)',
    },
    "unknown_severity": {
        "en": 'line "{line}": unknown severity {arg} (known: {known})',
        "de": 'Zeile "{line}": unbekannte Schwere {arg} (bekannt: {known})',
    },
    "not_an_address": {
        "en": 'line "{line}": #{name} needs one e-mail address, got {arg}',
        "de": 'Zeile "{line}": #{name} braucht genau eine E-Mail-Adresse, nicht {arg}',
    },
    "not_an_agent": {
        "en": 'line "{line}": {address} is not an agent of this queue',
        "de": 'Zeile "{line}": {address} ist kein Agent dieser Queue',
    },
    "conflict_status": {
        "en": 'line "{line}": contradicts line "{first}" (two different status commands in one mail)',
        "de": 'Zeile "{line}": widerspricht Zeile "{first}" (zwei verschiedene Status-Befehle in einer Mail)',
    },
    "conflict_severity": {
        "en": 'line "{line}": contradicts line "{first}" (two different severities in one mail)',
        "de": 'Zeile "{line}": widerspricht Zeile "{first}" (zwei verschiedene Schweren in einer Mail)',
    },
    "conflict_assign": {
        "en": 'line "{line}": contradicts line "{first}" (two different assignees in one mail)',
        "de": 'Zeile "{line}": widerspricht Zeile "{first}" (zwei verschiedene Zuweisungen in einer Mail)',
    },
    "needs_customer": {
        "en": 'line "{line}": #{name} needs an argument (the customer\'s e-mail address)',
        "de": 'Zeile "{line}": #{name} braucht ein Argument (die E-Mail-Adresse des Kunden)',
    },
    "needs_time": {
        "en": 'line "{line}": #{name} needs an argument (a time such as 2027-01-05 09:12)',
        "de": 'Zeile "{line}": #{name} braucht ein Argument (eine Zeit wie 2027-01-05 09:12)',
    },
    "bad_time": {
        "en": 'line "{line}": {arg} is not a time (write it as 2027-01-05 09:12)',
        "de": 'Zeile "{line}": {arg} ist keine Zeitangabe (schreiben Sie sie als 2027-01-05 09:12)',
    },
    "time_in_future": {
        "en": 'line "{line}": the time is in the future',
        "de": 'Zeile "{line}": die Zeit liegt in der Zukunft',
    },
    "new_for_agent": {
        "en": 'line "{line}": {address} is an agent of this queue, not a customer',
        "de": 'Zeile "{line}": {address} ist ein Agent dieser Queue, kein Kunde',
    },
    "needs_no_case": {
        "en": 'line "{line}": #{name} goes in a new mail to the support address, not in a mail about a case',
        "de": 'Zeile "{line}": #{name} gehört in eine neue Mail an die Support-Adresse, nicht in eine Mail zu '
        "einem Fall",
    },
    "needs_case": {
        "en": 'line "{line}": #{name} needs a case: reply to the notification of the case, or open one with '
        "#new customer@example.com",
        "de": 'Zeile "{line}": #{name} braucht einen Fall: antworten Sie auf die Benachrichtigung des Falls, oder '
        "legen Sie einen mit #new kunde@example.com an",
    },
    "not_with_new": {
        "en": 'line "{line}": #{name} cannot go with #new (with it: #severity, #assign, #received)',
        "de": 'Zeile "{line}": #{name} geht nicht zusammen mit #new (dazu passen: #severity, #assign, #received)',
    },
    "help_alone": {
        "en": 'line "{line}": #help goes alone',
        "de": 'Zeile "{line}": #help steht allein',
    },
    "conflict_new": {
        "en": 'line "{line}": contradicts line "{first}" (two different customers in one mail)',
        "de": 'Zeile "{line}": widerspricht Zeile "{first}" (zwei verschiedene Kunden in einer Mail)',
    },
    "conflict_received": {
        "en": 'line "{line}": contradicts line "{first}" (two different times in one mail)',
        "de": 'Zeile "{line}": widerspricht Zeile "{first}" (zwei verschiedene Zeiten in einer Mail)',
    },
    "too_many_lines": {
        "en": "more than {limit} command lines; the rest were not read",
        "de": "mehr als {limit} Befehlszeilen; der Rest wurde nicht gelesen",
    },
    # Notices of the pipeline's other steps (ingest/outgoing.py, ingest/conversation.py).
    "no_text": {
        "en": "nothing was sent to the customer: we found no text of yours above the quoted notification "
        "(write your answer at the top of the reply)",
        "de": "an den Kunden wurde nichts gesendet: über der zitierten Benachrichtigung stand kein Text von "
        "Ihnen (schreiben Sie Ihre Antwort oben in die Antwortmail)",
    },
    "relay_cap": {
        "en": "nothing was sent to the customer: case {case} already sent {limit} relayed replies in the last "
        "hour (a guard against mail loops); send your answer again later or write to the customer directly",
        "de": "an den Kunden wurde nichts gesendet: Fall {case} hat in der letzten Stunde schon {limit} "
        "weitergeleitete Antworten gesendet (ein Schutz gegen Mail-Schleifen); senden Sie Ihre Antwort "
        "später noch einmal oder schreiben Sie dem Kunden direkt",
    },
    "not_proven": {
        "en": "this mail is not proven to come from you: it does not answer a notification of this case "
        "(reply to the notification mail to use commands)",
        "de": "diese Mail ist nicht als Ihre nachgewiesen: sie antwortet auf keine Benachrichtigung zu diesem "
        "Fall (antworten Sie auf die Benachrichtigung, um Befehle zu verwenden)",
    },
    "notification_leaked": {
        "en": "your reply to the notification also went to {to}, who now hold its signed Message-ID; that "
        "notification no longer proves anything, and nothing from this mail was applied. Answer customers by "
        "replying to the notification only (mailbridge relays it), or directly without commands.",
        "de": "Ihre Antwort auf die Benachrichtigung ging auch an {to}, die nun ihre signierte Message-ID "
        "haben; diese Benachrichtigung beweist nichts mehr, und aus dieser Mail wurde nichts ausgeführt. "
        "Antworten Sie Kunden nur über die Benachrichtigung (mailbridge leitet weiter) oder direkt ohne "
        "Befehle.",
    },
}


class Reason(str):
    """A text told to an agent: its English text as the string, plus its kind and values, so that
    :meth:`say` can give it in another language. Compares, hashes and serialises as the English text."""

    kind: str
    values: dict[str, str]

    def __new__(cls, kind: str, /, **values: object) -> Reason:
        texts = REASONS[kind]
        strs = {k: str(v) for k, v in values.items()}
        self = super().__new__(cls, texts["en"].format(**strs))
        self.kind, self.values = kind, strs
        return self

    def say(self, language: str) -> str:
        texts = REASONS[self.kind]
        return texts.get(language, texts["en"]).format(**self.values)

    def __reduce__(self):  # pickling (the prepare pool) keeps kind and values
        return (_reason, (self.kind, self.values))


def _reason(kind: str, values: dict[str, str]) -> Reason:
    return Reason(kind, **values)


def _english_pattern(text: str) -> re.Pattern[str]:
    # "…{name}…" → "…(?P<name>.+?)…", everything else literal.
    parts = re.split(r"\{(\w+)\}", text)
    return re.compile("".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>.+?)" for i, p in enumerate(parts)), re.DOTALL)


_ENGLISH = [(kind, _english_pattern(texts["en"])) for kind, texts in REASONS.items()]


def say(text: str, language: str) -> str:
    """``text`` told to an agent in ``language``: a :class:`Reason` in its own words; a plain string
    that is a catalogue text in English (a notice made before :class:`Reason` existed) recognised and
    translated; any other text as it is."""
    if isinstance(text, Reason):
        return text.say(language)
    for kind, pattern in _ENGLISH:
        m = pattern.fullmatch(text)
        if m is not None:
            return Reason(kind, **m.groupdict()).say(language)
    return text


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
        subject, number = ticket.subject, ticket.case_number
        tag = case_tag_pattern(number) if isinstance(subject, str) and may_carry_tag(subject, number) else None
        return self.normalizer.topic(subject, tag) or subject

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
        attachments: list[comp.OutgoingAttachment] | None = None,
        html: bool = False,
    ) -> Built:
        """A mail about a case to agents or managers, in the queue's language, continuing the
        agent-side thread (``previous``), from the queue's address with the case in its name; with
        ``html`` also ``{template}.html.j2`` as its HTML alternative."""
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
            html=self.templates.render(lang, f"{template}.html.j2", **tctx) if html else None,
            auto_submitted=AUTO_GENERATED,
            language=lang,
            message_id=message_id,
            to_agents=True,
            attachments=attachments,
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
        filed_by: str | None = None,
        filed_how: str | None = None,
        case_url: str | None = None,
    ) -> Built:
        """The acknowledgement of a new case, to the customer, in the case's language; with the
        severity understood and the first-response deadline when the queue promises one, the support
        hours (and the days we are closed before that deadline), and the labels of the information
        the request still lacks (with a block to fill in by replying). ``filed_by``: the agent who
        filed the case for the customer, ``filed_how``: from their forwarded mail ("forward") or
        their call ("phone"). ``case_url``: the recipient's signed link to the case in the case
        tracker (``outbound/links.py`` ``CaseLinks``), None without ``[web]``."""
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
            "filed_by": filed_by,
            "filed_how": filed_how,
            "case_url": case_url,
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
        files: list[comp.OutgoingAttachment] | None = None,
        too_large: list[dict] | None = None,
        budget: str = "",
        link_days: str = "",
        to: list[str] | None = None,
        customer_html: Markup | None = None,
        whole_html: bool = False,
        message_id: str | None = None,
    ) -> Built:
        """Tell the queue's agents about a new case or a reply; its Message-ID is signed for the case
        (``message_id``: that of an earlier copy of the same notification to another recipient).
        ``checklist``: the case's required information ({label, given, evidence}); ``raised_to``: the
        level the customer's request raised the case to.

        ``attachments``: the names of the customer's files that travel along (``files``, their
        bytes; inline images keep their Content-ID); ``too_large``: those over the budget
        ({name, size, url or None}), listed with their size and download link; ``budget``: the
        budget in words. ``to``: the recipients (default: the queue's notification addresses).

        ``customer_html``: the customer's HTML, sanitised (``outbound/customer_html.py``: Markup, so the
        autoescaping template inserts it as it is); with it the
        notification has an HTML alternative (``notification.html.j2``), the frame of the text's,
        whose ``cid:`` images are the ``files`` with a Content-ID. ``whole_html``: the HTML is the
        whole mail while ``text`` is only its new part (a reply): the HTML shows the new part, then
        the whole mail below a separator.

        ``event``: new | reply | reopened | third-party | unverified-agent.
        """
        domain = queue.address.rsplit("@", 1)[-1]
        mid = message_id or notification_message_id(ticket.case_number, domain, self.secrets[0])
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
            "too_large": list(too_large or []),
            "budget": budget,
            "link_days": link_days,
            "customer_html": customer_html,
            "whole_html": whole_html,
        }
        recipients = to if to is not None else queue.notify_addresses
        return self._to_agents(
            ticket, queue, "notification", tctx, recipients, previous, now, mid, files, html=customer_html is not None
        )

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
        case_url: str | None = None,
        message_id: str | None = None,
    ) -> Built:
        """An agent's reply, sent to the customer from the support address in the case's thread.
        ``message_id``: the Message-ID of the first copy, for the further copies of one relay.
        ``case_url``: the signed link to the case of the one recipient this copy goes to (with
        ``[web]``, each recipient gets a copy of their own), None without ``[web]``."""
        agent_name = agent.name or agent.email.split("@", 1)[0]
        tctx = {
            "text": text,
            "agent_name": agent_name,
            "queue_name": queue.display_name,
            "support_address": queue.address,
            "case_number": ticket.case_number,
            "case_url": case_url,
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
            message_id=message_id,
        )

    def oversize_notice(
        self,
        queue: QueueSettings,
        to: Address,
        *,
        refused: str,
        subject: str,
        size: int,
        limit: int,
        max_parts: int,
        parent_id: str | None,
        parent_refs: list[str],
        now: datetime,
    ) -> Built:
        """The short notice to the sender of a mail refused before parsing (quarantined, no case):
        ``refused`` is why ("size": over ``limit`` bytes; "parts": over ``max_parts`` MIME parts)."""
        lang = queue.language

        def mb(n: int) -> str:
            return f"{format_decimal(n / 1024 / 1024, format='#,##0.0', locale=lang)} MB"

        tctx = {
            "name": to.name,
            "subject": subject,
            "refused": refused,
            "size": mb(size),
            "limit": mb(limit),
            "max_parts": format_decimal(max_parts, locale=lang),
            "support_address": queue.address,
            "queue_name": queue.display_name,
        }
        parent_refs = self._public(list(parent_refs))
        return self._caseless(queue, to, "oversize_notice", tctx, lang, parent_id, parent_refs, now)

    def _caseless(
        self,
        queue: QueueSettings,
        to: Address,
        template: str,
        tctx: dict,
        language: str,
        parent_id: str | None,
        parent_refs: list[str],
        now: datetime,
        *,
        auto_submitted: str = AUTO_REPLIED,
    ) -> Built:
        """A plain automatic mail about no case from the queue's address to one person, from
        ``{template}.subject.j2``/``.txt.j2``, answering ``parent_id`` when given."""
        refs = comp.references_for(parent_id, parent_refs) if parent_id else []
        out = comp.compose(
            date=now,
            in_reply_to=parent_id,
            references=refs,
            from_name=queue.display_name,
            from_addr=queue.address,
            to=[(to.name, to.email)],
            subject=self.templates.render(language, f"{template}.subject.j2", **tctx).strip(),
            text=self.templates.render(language, f"{template}.txt.j2", **tctx),
            html=None,
            auto_submitted=auto_submitted,
            language=language,
        )
        return Built(out, parent_id, refs, "")

    def signin(self, queue: QueueSettings, to: Address, *, language: str, url: str, minutes: int, now) -> Built:
        """The case tracker's sign-in mail (``mailbridge web``): the single-use link, in the
        customer's language, from the queue's address; automatic, so nobody's robot answers it."""
        tctx = {"name": to.name, "url": url, "minutes": minutes, "queue_name": queue.display_name}
        return self._caseless(queue, to, "signin", tctx, language, None, [], now, auto_submitted=AUTO_GENERATED)

    def help(
        self, queue: QueueSettings, agent: Address, *, parent_id: str | None, parent_refs: list[str], now
    ) -> Built:
        """The agents' cheat sheet (``#help``), in the queue's language: the same text as the README's."""
        lang = queue.language
        return self._caseless(queue, agent, "help", {}, lang, parent_id, parent_refs, now)

    def status_list(
        self,
        queue: QueueSettings,
        to: Address,
        *,
        language: str,
        cases: list[dict],
        total: int,
        organisation: str | None,
        parent_id: str | None,
        parent_refs: list[str],
        now: datetime,
    ) -> Built:
        """The answer to a known customer's status request (``outgoing.StatusByMail``): their open
        cases, or their organisation's (``organisation``: its name, when it lets its people see all of
        its cases), in ``language``. ``cases``: {case_number, subject, status, severity (label),
        due (as the customer reads it), due_kind (first_response | resolution), url (their signed
        case link or None)}, the first of ``total``."""
        tctx = {
            "name": to.name,
            "cases": cases,
            "total": total,
            "organisation": organisation,
            "queue_name": queue.display_name,
            "support_address": queue.address,
        }
        parent_refs = self._public(list(parent_refs))
        return self._caseless(queue, to, "status_list", tctx, language, parent_id, parent_refs, now)

    def command_error(
        self,
        ticket: TicketRef | None,
        queue: QueueSettings,
        *,
        agent: Address,
        errors: list[str],
        verified: bool,
        parent_id: str | None,
        parent_refs: list[str],
        now: datetime,
    ) -> Built:
        """Tell an agent that the commands of their mail were not applied, and why; all of it in the
        queue's language (the agents'), each reason said in it by :func:`say`. ``ticket`` None: a
        mail about no case (``#new`` with an error): nothing was opened."""
        lang = queue.language
        tctx = {
            "case_number": ticket.case_number if ticket else None,
            "errors": [say(e, lang) for e in errors],
            "verified": verified,
        }
        if ticket is None:
            return self._caseless(queue, agent, "command_error", tctx, lang, parent_id, parent_refs, now)
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
        Message-ID proves nothing, and the mail says a reply does not reach the customer instead of
        inviting one (no reply marker, no commands).
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
            "signed": signed,
        }
        mid = notification_message_id(ticket.case_number, domain, self.secrets[0]) if signed else None
        return self._to_agents(ticket, queue, "escalation", tctx, to, previous, now, mid)

    def report(
        self,
        *,
        from_name: str,
        from_addr: str,
        to: list[str],
        name: str,
        report: str,
        rendered,
        language: str,
        generated: str,
        late: str | None,
        now: datetime,
    ) -> comp.Outgoing:
        """A scheduled report (``scheduled.py``) to its recipients. ``rendered`` is what
        ``mailbridge.reports.render`` made (data, content_type, filename, images, summary): an HTML
        report is the mail's HTML body with its charts as inline ``cid:`` images (multipart/related);
        any other format is attached as its file. ``late``: the due time ("Mo 08:00") of a report
        sent after it (the service was down then)."""
        # The type without its parameters (a file's charset travels inside the file: CSV is UTF-8).
        content_type = rendered.content_type.split(";")[0].strip().lower()
        html = content_type == "text/html"
        ctx = {
            "name": name,
            "report": report,
            "summary": rendered.summary,
            "filename": rendered.filename,
            "generated": generated,
            "late": late,
            "inline": html,
        }
        subject = self.templates.render(language, "report.subject.j2", **ctx).strip()
        text = self.templates.render(language, "report.txt.j2", **ctx)
        if html:
            body = rendered.data.decode("utf-8")
            files = [comp.OutgoingAttachment(f"{cid}.png", "image/png", png, cid) for cid, png in rendered.images]
        else:
            body = None
            files = [comp.OutgoingAttachment(rendered.filename, content_type, rendered.data)]
        return comp.compose(
            from_name=from_name,
            from_addr=from_addr,
            to=[("", a) for a in to],
            subject=subject,
            text=text,
            html=body,
            date=now,
            auto_submitted=AUTO_GENERATED,
            language=language,
            attachments=files,
        )
