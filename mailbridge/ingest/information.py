"""The pipeline step that keeps a case's checklist of required information (seed 000: "Die Anfrage
hat den Fehler mit folgenden Basisinformationen zu beschreiben").

A queue's ``checklist`` (``mailbridge/checklist.py``) names what a request should contain. The first
mail of a case is checked whole (a forwarded error report is the request), with its attachments'
names and types; the acknowledgement asks for what is missing. A later mail of the customer's side
is checked for the items still missing; what it supplies is recorded with the message that gave it.
An item once given stays given. Machine-made mail, agents' and third parties' mail change nothing.

The state is ``Ticket.checklist``: ``{key: {"given": bool, "evidence": str | None, "message_id":
int | None}}``, in the order of the queue's items.
"""

from __future__ import annotations

import structlog

from mailbridge.checklist import evaluate
from mailbridge.ingest.mail import InboundMail
from mailbridge.settings import Settings
from mailbridge.store import repositories as repo
from mailbridge.subjects import SubjectNormalizer
from mailbridge.vocabulary import AuthorRole

log = structlog.get_logger(__name__)

# Who can supply the information: the customer's side of the case.
CUSTOMER_SIDE = (AuthorRole.REQUESTER, AuthorRole.CUSTOMER, AuthorRole.COLLEAGUE)


class CheckInformation:
    name = "checklist"

    def __init__(self, settings: Settings, normalizer: SubjectNormalizer):
        self.settings = settings
        self.normalizer = normalizer

    def __call__(self, mail: InboundMail) -> None:
        t, p = mail.ticket, mail.parsed
        if t is None or p is None or mail.machine_made:
            return
        items = self.settings.queue(t.queue).checklist
        if not items or not (mail.new_ticket or mail.role in CUSTOMER_SIDE):
            return
        attachments = [(a.filename, a.content_type) for a in p.attachments]
        if mail.new_ticket:
            state: dict = {}
            todo, subject = items, p.subject
        else:
            state = dict(repo.ticket_checklist(mail.session, t.id) or {})
            todo = [i for i in items if not state.get(i.key, {}).get("given")]
            # A subject that only repeats the case's own says nothing new.
            new_subject = self.normalizer.strip_prefixes(p.subject).lower() not in t.subject.lower()
            subject = p.subject if new_subject else ""
        if not todo:
            mail.checklist = state
            return
        results = self._found(mail, items, todo, subject)
        if results is None:
            results = evaluate(todo, subject, p.text, attachments)
        given = [r for r in results if r.given]
        for r in results:
            if r.given:
                state[r.key] = {"given": True, "evidence": r.evidence, "message_id": mail.message_id}
            else:
                state.setdefault(r.key, {"given": False, "evidence": None, "message_id": None})
        # The queue's order, whatever order the items were given in.
        state = {i.key: state[i.key] for i in items if i.key in state}
        mail.checklist = state
        if mail.new_ticket:
            missing = [k for k, v in state.items() if not v["given"]]
            mail.event("checklist", given=[r.key for r in given], missing=missing)
        elif given:
            mail.event("information_given", items=[r.key for r in given], message_id=mail.message_id)
            log.info("information_given", items=[r.key for r in given])
        if mail.new_ticket or given:
            mail.change_ticket({"checklist": state})

    @staticmethod
    def _found(mail: InboundMail, items, todo, subject: str) -> list | None:
        """What a parse worker found for the queue's whole checklist with the mail's subject
        (``prepare.Ahead.checklist_findings``), for the items still to do; None when it did not look
        (prepared inline) or looked with other arguments (a reply whose subject is the case's)."""
        assert mail.ticket is not None and mail.parsed is not None
        found = (mail.checklist_found or {}).get(mail.ticket.queue)
        if found is None or subject != mail.parsed.subject or [r.key for r in found] != [i.key for i in items]:
            return None
        keys = {i.key for i in todo}
        return [r for r in found if r.key in keys]
