"""What one mail carries through the pipeline: the fetched mail and the context the steps share.

Steps read and fill a :class:`MailContext`; expected outcomes (a duplicate, an auto-reply, a mail for
quarantine) are values here, never exceptions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.orm import Session

from mailbridge.domain import ParsedMail
from mailbridge.ingest.commands import CommandBlock
from mailbridge.ingest.matcher import Match
from mailbridge.ingest.noise import Classification
from mailbridge.settings import QueueSettings
from mailbridge.sla.deadlines import Assessment, Customer
from mailbridge.store.repositories import TicketRef


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
    # Why the mail is machine-made (RFC 3834 Auto-Submitted, …): never acknowledged, relayed or
    # allowed to change a case.
    ack_suppressed: str | None = None
    ignored: str | None = None
    # What kind of mail it is (ingest/noise.py): a person's, an out-of-office reply, a bounce, …
    mail_class: Classification | None = None
    # An auto-reply or bounce that belongs to no case: kept for the operator, never a case.
    noise: str | None = None
    # A mail over the size limit or one the parser gave up on: only its header block, parsed (its
    # class, and the sender's notice).
    header_block: ParsedMail | None = None
    # -- conversations (ingest/conversation.py) --
    match: Match | None = None
    # Who wrote it, relative to the matched case: requester | customer | agent | third_party.
    role: str = "requester"
    # An agent's mail proven by a signed notification or DKIM ("notification" / "dkim"); None: unproven.
    agent_proof: str | None = None
    # The message's kind on the case (see Message.kind) and why agents should look at it.
    kind: str = "customer"
    flags: list[str] = field(default_factory=list)
    # An agent's command block, and the text that may go to the customer (None: nothing to relay).
    commands: CommandBlock | None = None
    relay_text: str | None = None
    # The case a new case follows up, and why ("closed-case" / "third-party").
    link_from: TicketRef | None = None
    link_reason: str | None = None
    # The severity and deadlines a new case got (sla/deadlines.py).
    sla: Assessment | None = None
    # The requester's organisation and contract (sla/deadlines.py), for a new case.
    customer: Customer | None = None
    # An agent's answer reached the customer with this mail (relayed or sent directly): the
    # first-response clock stops, the follow-up clock starts again.
    answered: bool = False
    # An agent changed the severity: the follow-up clock follows the new level.
    severity_changed: bool = False
    # Phrases with which a customer asked for more urgency.
    urgency: list[str] = field(default_factory=list)
    # Where an agent's mail went: direct | external | relay | internal (ingest/conversation.py).
    agent_mode: str | None = None
    # Something the agent must be told although no command failed (a revoked notification, a
    # reply with nothing to send).
    agent_notice: str | None = None
    disposition: str = "processed"
    quarantine: tuple[str, str] | None = None  # (stage, reason)
    done: bool = False
    stage: str = ""  # the step running now, for logs and quarantine reasons

    def event(self, kind: str, /, **detail) -> None:
        """Add an entry to the ticket's history (the ticket of this mail)."""
        assert self.ticket is not None
        self.events.append({"ticket_id": self.ticket.id, "kind": kind, "detail": detail, "created_at": self.now})

    def to_quarantine(self, stage: str, reason: str) -> None:
        self.quarantine = (stage, reason)
        self.disposition = "quarantined"
        self.done = True
