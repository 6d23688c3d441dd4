"""Pipeline steps for mail about an existing case: who wrote it, what it does to the case, and the
commands of agents.

**Who wrote it** (``Identify``), relative to the matched case: the requester; a customer (Cc'd on the
first mail); a colleague (same mail domain as the requester, free-mail domains excepted: treated as
a customer, but not copied on our answers); an agent of the queue (``queues[].agents``); or an
unknown third party.

**Agents are proven, never believed.** A mail whose From is an agent address counts as the agent's
only when it answers a notification whose signed Message-ID is valid for this case
(``outbound/tokens.py``), or when ``conversations.trusted_authserv_id`` is set and our own receiving
server's Authentication-Results header reports DKIM pass for the agent's domain. Otherwise it is
stored as ``agent_unverified``, flagged, and changes nothing: no commands, no relay, no first
response, no status change. A forged From header alone never changes a case.

**What it does** (``ApplyReply``): see :mod:`mailbridge.lifecycle`; a third party's reply is attached
and flagged (or opens a case of its own, ``conversations.third_party``); machine-made mail is attached
and changes nothing.
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import structlog

from mailbridge.domain import Address, TicketStatus
from mailbridge.ingest.authres import dkim_pass_domains
from mailbridge.ingest.commands import parse_commands
from mailbridge.ingest.forwards import Forwarded, find_forward
from mailbridge.ingest.mail import Filing, InboundMail
from mailbridge.ingest.matcher import organisation_key
from mailbridge.ingest.quoting import extract_new_text
from mailbridge.ingest.routing import is_ours
from mailbridge.ingest.urgency import find_urgency
from mailbridge.lifecycle import STATUS_COMMANDS, ReplyEffect, customer_reply_effect, status_times
from mailbridge.settings import Settings, ThirdPartyPolicy
from mailbridge.sla.deadlines import Deadlines
from mailbridge.sla.recompute import move_by_pauses, pauses_from_events
from mailbridge.store import repositories as repo
from mailbridge.vocabulary import AgentMode, AuthorRole, Disposition, MessageKind

log = structlog.get_logger(__name__)


class Identify:
    """Who wrote the mail, relative to its case, and whether an agent's mail is proven."""

    name = "identify"

    def __init__(self, settings: Settings):
        self.settings = settings
        self.public = frozenset(settings.conversations.public_domains)
        self.authserv_id = settings.conversations.trusted_authserv_id

    def _dkim(self, p, sender: str) -> bool:
        """Our own receiving server reports DKIM pass for the sender's domain."""
        return bool(self.authserv_id) and sender.rsplit("@", 1)[-1] in dkim_pass_domains(
            p.auth_results, self.authserv_id or ""
        )

    def __call__(self, mail: InboundMail) -> None:
        t, p = mail.ticket, mail.parsed
        if t is None:
            # A mail about no case: an agent's counts as theirs only with DKIM (no notification
            # can prove it); what it files is decided by AgentFiling.
            if p is not None and p.from_ is not None and mail.queue is not None and mail.queue.is_agent(p.from_.email):
                mail.role = AuthorRole.AGENT
                mail.agent_proof = "dkim" if self._dkim(p, p.from_.email) else None
            return
        assert p is not None and p.from_ is not None and mail.match is not None
        sender = p.from_.email
        queue = self.settings.queue(t.queue)
        people = repo.participants(mail.session, t.id)
        if queue.is_agent(sender):
            mail.role = AuthorRole.AGENT
            dkim = self._dkim(p, sender)
            if t.case_number in mail.match.notification_cases:
                mail.agent_proof = "notification"
            elif dkim:
                mail.agent_proof = "dkim"
            self._agent_mode(mail, queue, people)
            if mail.agent_proof is None and dkim:
                mail.agent_proof = "dkim"  # the notification was revoked, DKIM still proves the sender
            if mail.machine_made:
                pass  # an agent's out-of-office: stored, nothing else
            elif mail.agent_proof is None:
                mail.kind = MessageKind.AGENT_UNVERIFIED
                if not mail.agent_notice:
                    mail.flags.append(
                        f"unverified agent mail: From is {sender}, but the mail neither answers a signed "
                        "notification of this case nor carries a trusted DKIM pass"
                    )
                log.warning("agent_mail_unverified", sender=sender)
            else:
                mail.kind = MessageKind.NOTE if mail.agent_mode == AgentMode.INTERNAL else MessageKind.AGENT
            return
        if mail.match.notification_ids:
            # Someone who is not an agent holds a signed notification id (a Bcc, a forward): it must
            # not prove anything any more. Revoking needs the id itself, so it gives nobody a lever.
            repo.revoke_notifications(mail.session, mail.match.notification_ids, mail.now)
            mail.event("notification_revoked", ids=mail.match.notification_ids, reached=[sender])
            mail.flags.append(f"{sender} quoted a signed agent notification; it was revoked")
        # A case opened through a web form (From: its noreply address) belongs to the Reply-To:
        # later mails are the requester's when they come from, or answer to, that address.
        author = p.reply_to[0].email if t.reply_to and p.reply_to else sender
        if author == t.answer_to or sender == t.answer_to:
            mail.role = AuthorRole.REQUESTER
        elif people.get(author) in (AuthorRole.REQUESTER, AuthorRole.CUSTOMER):
            mail.role = AuthorRole.CUSTOMER
        elif (
            people.get(author) == AuthorRole.COLLEAGUE
            or organisation_key(author, self.public) == organisation_key(t.answer_to, self.public)
            or self._same_configured_organisation(author, t.organisation)
        ):
            # Same organisation (the mail domain, or an address or domain of the case's configured
            # organisation: a lead person of a company-wide case tracker commenting on a colleague's
            # case): a customer for the lifecycle, but not copied on our answers.
            mail.role = AuthorRole.COLLEAGUE
        else:
            mail.role = AuthorRole.THIRD_PARTY
            if not mail.machine_made:
                mail.kind = MessageKind.THIRD_PARTY
                mail.flags.append(f"unknown third party {author} referenced this case")

    def _same_configured_organisation(self, author: str, organisation: str | None) -> bool:
        org = self.settings.organisation_for(author) if organisation else None
        return org is not None and org.name == organisation

    def _agent_mode(self, mail: InboundMail, queue, people: dict[str, str]) -> None:
        """Where an agent's mail went decides what it is (``mail.agent_mode``):

        - ``direct``: to the customer (requester or a customer participant), the support address
          in Cc/Bcc — recorded, not sent again;
        - ``external``: to someone outside the case — recorded for the agents, never relayed;
        - ``relay``: to the support address (To) and otherwise only agents — relayed to the customer;
        - ``internal``: the support address only in Cc/Bcc, the rest agents — an internal note.

        A signed notification whose id went to anyone but agents (an agent replied to all and added
        the customer) is revoked: from then on replies quoting it prove nothing, and this mail
        applies nothing either.
        """
        t, p = mail.ticket, mail.parsed
        assert t is not None and p is not None
        own = self.settings.own_addresses
        ours = [is_ours(self.settings, a.email, queue) for a in [*p.to, *p.cc]]
        customers = {t.requester_email, t.answer_to} | {
            e for e, r in people.items() if r in (AuthorRole.REQUESTER, AuthorRole.CUSTOMER, AuthorRole.COLLEAGUE)
        }
        recipients = [a.email for a in [*p.to, *p.cc] if a.email not in own]
        # Everyone outside (not ours) it reached, and those of them who are not the case's customers.
        leaked_to = [a.email for a, o in zip([*p.to, *p.cc], ours, strict=True) if not o]
        outsiders = [r for r in leaked_to if r not in customers]
        if any(r in customers for r in recipients):
            mail.agent_mode = AgentMode.DIRECT
        elif outsiders:
            mail.agent_mode = AgentMode.EXTERNAL
        elif any(a.email in own for a in p.to):
            mail.agent_mode = AgentMode.RELAY
        else:
            mail.agent_mode = AgentMode.INTERNAL
        if mail.agent_proof == "notification" and leaked_to:
            assert mail.match is not None
            repo.revoke_notifications(mail.session, mail.match.notification_ids, mail.now)
            mail.event("notification_revoked", ids=mail.match.notification_ids, reached=leaked_to)
            mail.agent_proof = None
            mail.agent_notice = (
                f"your reply to the notification also went to {', '.join(leaked_to)}, who now hold its signed "
                "Message-ID; that notification no longer proves anything, and nothing from this mail was applied. "
                "Answer customers by replying to the notification only (mailbridge relays it), or directly "
                "without commands."
            )
            mail.flags.append(f"a signed notification reached {', '.join(leaked_to)} and was revoked")
            log.warning("notification_revoked", reached=leaked_to)


class AgentFiling:
    """What a proven agent's mail files for a customer (the one place that decides it):

    - a mail about no case with ``#new kunde@firma.example`` (+ ``#severity``, ``#assign``,
      ``#received``): a case for that customer, taken by phone, counted from the call;
    - a mail about no case with ``#help``: the cheat sheet goes back to the agent, no case;
    - a mail about no case whose command block has an error: nothing is applied, no case; the agent
      gets the error mail;
    - a forward of a customer's mail (``ingest/forwards.py``) without a case reference: a case for the
      forwarded mail's sender, with its date, subject, text and files; the agent's words above it are
      an internal note. A forward whose original is on a case already (its Message-ID is stored, or
      its subject, body or thread headers name the case) lands there as the agent's internal note, as
      does a proven agent's forward that names a case in its own subject (the customer's words are in
      the note's text; nothing is relayed).

    An agent's mail that is not proven (no DKIM pass from our own server: a forged From) files
    nothing and is treated as any other mail: its sender is the requester.

    **The time a filed case counts from** (its ``created_at``, which the SLA clocks start at): the
    customer waited since their own mail, so the forwarded mail's date, but never after the forward
    arrived, and not older than ``MAX_FORWARD_AGE`` before it (an old mail forwarded now counts from
    now, flagged); no readable date: now. A call: the ``#received`` time (never in the future, an
    error), else now."""

    name = "agent_filing"
    MAX_FORWARD_AGE = timedelta(days=7)

    def __init__(self, settings: Settings, deadlines: Deadlines, detector, matcher, answers):
        self.settings = settings
        self.deadlines = deadlines
        self.detector = detector
        self.matcher = matcher
        # outgoing.AgentAnswers (the help and error mails of a mail without a case); None: send nothing.
        self.answers = answers

    def _zone(self, queue: str):
        cal = self.deadlines.calendar(queue)
        return cal.tz if cal is not None else UTC

    def _forward(self, mail: InboundMail, queue) -> Forwarded | None:
        """The customer's mail this mail forwards (not one of ours or of an agent), or None."""
        assert mail.parsed is not None
        fw = find_forward(mail.parsed, self._zone(queue.name))
        if fw is None or is_ours(self.settings, fw.sender.email, queue):
            return None
        return fw

    def __call__(self, mail: InboundMail) -> None:
        p = mail.parsed
        if mail.role != AuthorRole.AGENT or mail.machine_made or p is None:
            return
        assert p.from_ is not None
        if mail.agent_proof is None:
            block = parse_commands(p.new_text, severity_levels=(), is_agent=lambda _: False, new_case=True)
            if (
                mail.ticket is None
                and mail.queue is not None
                and (block.commands or block.errors or self._forward(mail, mail.queue) is not None)
            ):
                # Treated as anyone's mail; agents see why their forward or commands did nothing.
                mail.flags.append(
                    f"from agent address {p.from_.email}, but not proven (no DKIM pass from our own server): "
                    "its forward or commands were not applied"
                )
            return
        if mail.ticket is not None:
            if mail.kind == MessageKind.AGENT and (fw := self._forward(mail, self.settings.queue(mail.ticket.queue))):
                self._noted(mail, fw, "the forward names this case")
            return
        queue = mail.queue
        assert queue is not None
        text = extract_new_text(p.text, keep_signature=True)
        block = parse_commands(
            text,
            severity_levels=self.settings.severity_levels(queue),
            is_agent=queue.is_agent,
            new_case=True,
            zone=self._zone(queue.name),
            now=mail.now,
        )
        args = {c.name: c.arg for c in block.commands}
        if block.errors:
            mail.commands = block
            sent = self.answers.errors(mail, list(block.errors)) if self.answers else "not sent"
            mail.finish(Disposition.IGNORED, f"agent commands rejected ({len(block.errors)} errors); error mail {sent}")
            log.info("agent_commands_rejected", errors=list(block.errors))
            return
        if "help" in args:
            sent = self.answers.help(mail) if self.answers else "not sent"
            mail.finish(Disposition.IGNORED, f"#help: the cheat sheet for {p.from_.email} ({sent})")
            log.info("agent_help_sent", to=p.from_.email)
            return
        if "new" in args:
            customer = args["new"]
            assert customer is not None
            mail.commands = block
            mail.filing = Filing(
                how="phone",
                agent=p.from_,
                requester=Address("", customer),
                author=p.from_,
                received=datetime.fromisoformat(args["received"]) if args.get("received") else mail.now,
                subject=p.subject,
                text=block.text.strip(),
                attachments=[a for a in p.attachments if not (a.content_id and a.content_type.startswith("image/"))],
                message_id=p.message_id,
                severity=args.get("severity"),
                assignee=args.get("assign"),
            )
            self._language(mail)
            return
        fw = self._forward(mail, queue)
        if fw is None:
            return
        known = repo.ticket_for_message_ids(mail.session, [fw.message_id]) if fw.message_id else None
        if known is None:
            original = replace(p, subject=fw.subject, new_text=fw.text, in_reply_to=[], references=fw.references)
            known = self.matcher.match(mail.session, original).ticket
        if known is not None:
            mail.ticket = repo.ticket_ref(mail.session, ticket_id=known.id, lock=True)
            self._noted(mail, fw, "the forwarded mail is on this case")
            return
        received = fw.date or mail.now
        if received > mail.now or received < mail.now - self.MAX_FORWARD_AGE:
            mail.flags.append(f"the forwarded mail's date {fw.date.isoformat() if fw.date else '?'} was not used")
            received = mail.now
        mail.filing = Filing(
            how="forward",
            agent=p.from_,
            requester=fw.sender,
            author=fw.sender,
            received=received,
            subject=fw.subject or p.subject,
            text=fw.text,
            attachments=fw.attachments,
            message_id=fw.message_id,
            references=fw.references,
            note=fw.note,
        )
        self._language(mail)

    def _language(self, mail: InboundMail) -> None:
        """A filed case speaks the customer's language: that of their words, not of the agent's."""
        f = mail.filing
        assert f is not None and mail.queue is not None
        mail.language = self.detector.guess(f.subject, f.text) or mail.queue.language

    @staticmethod
    def _noted(mail: InboundMail, fw: Forwarded, why: str) -> None:
        assert mail.parsed is not None and mail.parsed.from_ is not None
        mail.kind, mail.agent_mode = MessageKind.NOTE, AgentMode.INTERNAL
        mail.routing.update({"forward": {"from": fw.sender.email, "form": fw.form, "why": why}})
        mail.event("forward_noted", by=mail.parsed.from_.email, original_sender=fw.sender.email, why=why)
        log.info("agent_forward_noted", why=why)


def change_severity(mail: InboundMail, deadlines: Deadlines, key: str, by: str, values: dict, **why) -> None:
    """Level ``key`` for the mail's case, by ``by``: the due times follow it, counted from the case's
    creation on its calendar and moved by its pauses the way they moved the old ones (a pause after a
    due time had passed, or after the first response, does not move it; see sla/recompute.py); no
    contract, no due times. The columns go into ``values`` (the caller writes them with the rest);
    the history says who and why. The one way a case's severity changes after it was opened."""
    t = mail.ticket
    assert t is not None
    customer = deadlines.customer_of(t.queue, t.organisation, t.contract)
    if not t.paused_seconds:
        sla = deadlines.for_level(t.queue, key, t.created_at, customer)
    else:
        pauses = pauses_from_events(repo.events_of(mail.session, t.id, ("clock_resumed",)))
        cal = deadlines.calendar(t.queue, t.organisation)
        if cal is None or sum(p.business_seconds for p in pauses) != t.paused_seconds:
            sla = deadlines.for_level(t.queue, key, t.created_at, customer, t.paused_seconds)
        else:
            base = deadlines.for_level(t.queue, key, t.created_at, customer)
            sla = replace(
                base,
                first_response_due=move_by_pauses(
                    cal, base.first_response_due, pauses, answered_at=t.first_response_at
                ),
                resolution_due=move_by_pauses(cal, base.resolution_due, pauses),
            )
    mail.severity_changed = True
    mail.event(
        "severity_changed",
        old=values.get("severity", t.severity),
        new=key,
        by=by,
        first_response_due=sla.first_response_due.isoformat() if sla.first_response_due else None,
        resolution_due=sla.resolution_due.isoformat() if sla.resolution_due else None,
        **why,
    )
    values.update(severity=key, first_response_due=sla.first_response_due, resolution_due=sla.resolution_due)


class ApplyReply:
    """What a customer's or third party's mail does to its case (``mailbridge.lifecycle``). A
    customer's request for more urgency (``ingest/urgency.py``, in any wording, or one of the queue's
    ``urgency_words``) is noted for agents; where the queue lets customers raise the level
    (``customer_may_raise``) and the mail names a more severe one, the case gets it."""

    name = "apply_reply"

    def __init__(self, settings: Settings, normalizer, deadlines: Deadlines):
        self.settings = settings
        self.window = timedelta(days=settings.conversations.reopen_window_days)
        self.policy = settings.conversations.third_party
        self.normalizer = normalizer
        self.deadlines = deadlines
        self._urgency: dict[str, re.Pattern] = {}

    def _urgency_re(self, queue) -> re.Pattern | None:
        if queue.name not in self._urgency:
            words = sorted({w.strip() for w in queue.urgency_words if w.strip()}, key=len, reverse=True)
            self._urgency[queue.name] = (
                re.compile(r"(?<!\w)(" + "|".join(re.escape(w) for w in words) + r")(?!\w)", re.IGNORECASE)
                if words
                else None
            )
        return self._urgency[queue.name]

    def __call__(self, mail: InboundMail) -> None:
        t, p = mail.ticket, mail.parsed
        if t is None or mail.role == AuthorRole.AGENT or mail.machine_made:
            return
        assert p is not None
        if mail.role == AuthorRole.THIRD_PARTY:
            if self.policy == ThirdPartyPolicy.NEW_TICKET:
                # A case of its own; its acknowledgement says nothing of the case referenced.
                mail.link_from, mail.link_reason, mail.ticket = t, "third-party", None
                mail.kind, mail.flags = MessageKind.CUSTOMER, []
                mail.routing.update({"rule": "new", "evidence": f"third party referenced {t.case_number}"})
            return
        effect = customer_reply_effect(t.status, t.solved_at, mail.now, self.window)
        if effect is ReplyEffect.NEW_LINKED_CASE:
            mail.link_from, mail.link_reason, mail.ticket = t, "closed-case", None
            mail.routing.update(
                {"rule": "new-linked", "evidence": f"{t.case_number} is {t.status}; a new case follows it up"}
            )
            log.info("reply_to_closed_case", old_case=t.case_number)
            return
        if effect is ReplyEffect.REOPEN:
            mail.change_ticket({"status": TicketStatus.OPEN.value, **status_times(TicketStatus.OPEN, mail.now)})
            mail.event(
                "status_changed",
                old=t.status,
                new=TicketStatus.OPEN,
                by=p.from_.email if p.from_ else None,
                reason="customer reply",
            )
            if t.status == TicketStatus.SOLVED:
                mail.event("reopened", by=p.from_.email if p.from_ else None)
        queue = self.settings.queue(t.queue)
        if mail.role == AuthorRole.COLLEAGUE and p.from_ is not None:
            repo.add_participants(mail.session, t.id, [(p.from_.email, p.from_.name, AuthorRole.COLLEAGUE)], mail.now)
        self._note_urgency(mail, queue)

    def _note_urgency(self, mail: InboundMail, queue) -> None:
        t, p = mail.ticket, mail.parsed
        assert t is not None and p is not None and p.from_ is not None
        # A subject that only repeats the case's own is no new request.
        new_subject = self.normalizer.strip_prefixes(p.subject).lower() not in t.subject.lower()
        subject = p.subject if new_subject else ""
        scheme = self.deadlines.scheme(t.queue)
        levels = scheme.levels if scheme is not None else ()
        request = find_urgency(p.new_text or "", subject, levels)
        words = list(request.phrases) if request is not None else []
        rx = self._urgency_re(queue)
        if rx is not None:
            found = (m.group(1) for text in (p.new_text, subject) for m in rx.finditer(text or ""))
            words += [w for w in found if not any(w.lower() in x.lower() for x in words)]
        if not words:
            return
        words = list(dict.fromkeys(w.lower() for w in words))
        level = request.level if request is not None and request.explicit else None
        mail.urgency = words
        mail.event("urgency_requested", words=words, by=p.from_.email, **({"level": level} if level else {}))
        if level is None or not queue.customer_may_raise or scheme is None:
            return
        order = [lv.key for lv in scheme.levels]  # the most severe first
        if t.severity in order and order.index(level) >= order.index(t.severity):
            return  # not more severe than the case already is
        values: dict = {"updated_at": mail.now}
        change_severity(mail, self.deadlines, level, p.from_.email, values, reason="customer request")
        mail.customer_raised = True
        mail.change_ticket(values)
        log.info("severity_raised_by_customer", old=t.severity, new=level)


class AgentCommands:
    """Commands at the top of a proven agent's mail (``#solve``, ``#severity 2``, …), applied in order.

    All or nothing: a block with any invalid command applies none and relays nothing (a mistyped
    ``#note`` must not send an internal note to the customer); the agent gets an error mail. Command
    lines in an unproven mail are never applied; the agent address gets a mail saying so.
    """

    name = "agent_commands"

    def __init__(self, settings: Settings, deadlines: Deadlines):
        self.settings = settings
        self.deadlines = deadlines

    def __call__(self, mail: InboundMail) -> None:
        t, p = mail.ticket, mail.parsed
        if t is None or mail.role != AuthorRole.AGENT or mail.machine_made:
            return
        assert p is not None and p.from_ is not None
        queue = self.settings.queue(t.queue)
        # The agent's own closing and signature stay in what is relayed; the quoted notification goes.
        text = extract_new_text(p.text, keep_signature=True)
        block = parse_commands(text, severity_levels=self.settings.severity_levels(queue), is_agent=queue.is_agent)
        mail.commands = block
        if mail.agent_proof is None:
            if block.commands or block.errors:
                mail.event("commands_rejected", by=p.from_.email, reason="sender not proven")
            return
        if block.errors:
            mail.kind = MessageKind.AGENT_REJECTED
            mail.event("commands_rejected", by=p.from_.email, errors=block.errors)
            return
        by = p.from_.email
        status = t.status
        values: dict = {}
        for c in block.commands:
            mail.event("command", name=c.name, arg=c.arg, by=by)
            if c.name == "severity":
                change_severity(mail, self.deadlines, c.arg, by, values)
            elif c.name == "assign":
                mail.event("assigned", old=values.get("assignee", t.assignee), new=c.arg, by=by)
                values["assignee"] = c.arg
            elif c.name == "note":
                mail.kind = MessageKind.NOTE
            elif c.name in STATUS_COMMANDS:
                new = STATUS_COMMANDS[c.name].value
                if new != status:
                    mail.event("status_changed", old=status, new=new, by=by, reason=f"#{c.name}")
                    values.update({"status": new, **status_times(new, mail.now)})
                    status = new
        if values:
            values["updated_at"] = mail.now
            mail.change_ticket(values)
        log.info("agent_commands_applied", commands=[c.name for c in block.commands])
