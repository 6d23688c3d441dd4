"""The one carrier of an inbound mail, from fetch to commit: :class:`InboundMail`.

The poller creates it with where the mail came from and its bytes; the preparer (``ingest/prepare.py``)
adds the hash, the raw-store path and the parse; the pipeline's steps add their decisions. The
decisions belong to one attempt at the mail's transaction: :meth:`InboundMail.begin` starts them
afresh when the pipeline retries after a conflict.

Every run ends in exactly one :class:`~mailbridge.vocabulary.Disposition`. A step that knows the
outcome early says so with :meth:`InboundMail.finish` or :meth:`InboundMail.to_quarantine`; the
pipeline then skips the remaining steps except those that record every kept mail (``records_kept``).
Expected outcomes are values here, never exceptions.
"""

from __future__ import annotations

import time
from dataclasses import MISSING, dataclass, field, fields, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from mailbridge.checklist import ItemResult
from mailbridge.domain import Address, Attachment, ParsedMail
from mailbridge.ingest.commands import CommandBlock
from mailbridge.ingest.matcher import Match
from mailbridge.ingest.noise import Classification
from mailbridge.outbound.customer_html import CleanHtml
from mailbridge.settings import QueueSettings
from mailbridge.sla.deadlines import Assessment, Customer
from mailbridge.store import repositories as repo
from mailbridge.store.models import Event, Ticket
from mailbridge.store.repositories import TicketRef
from mailbridge.vocabulary import AgentMode, AuthorRole, Disposition, MessageKind

if TYPE_CHECKING:
    from mailbridge.store.db import Session

TICKET_REF_FIELDS = frozenset(f.name for f in fields(TicketRef))
# What the mail carries from fetch and prepare; every other field is decided by one attempt at the
# mail's transaction (reset by ``begin``).
_CARRIED = frozenset(
    {"account", "folder", "uidvalidity", "uid", "raw", "sha256", "raw_path", "oversize", "parsed", "parse_error"}
    | {"header_block", "requeue_of", "fetched_at", "refused", "occurred_at", "waited", "classified"}
    | {"checklist_found", "customer_html"}
)


@dataclass(frozen=True)
class Outcome:
    """How a mail's run ended before its last step: the disposition and why."""

    disposition: Disposition
    reason: str
    # For a quarantined mail: the stage that refused it.
    stage: str | None = None

    @property
    def keeps_message(self) -> bool:
        """Our own mail and unmatched noise are still stored as messages (without a case)."""
        return self.disposition in (Disposition.IGNORED, Disposition.NOISE)


@dataclass(frozen=True)
class Filing:
    """A case a proven agent opens for a customer (``ingest/conversation.py`` ``AgentFiling``): the
    customer's mail the agent forwarded (``how="forward"``), or a caller's request the agent wrote
    down with ``#new`` (``how="phone"``).

    ``requester``: whom the case is for; ``author``: who wrote its first message (the customer of a
    forward, the agent for a call); ``received``: when the customer's request came (the forwarded
    mail's date, the call's ``#received`` time), which the case's clocks count from; ``message_id``
    and ``references``: the forwarded mail's own (a forward as attachment), else None/[]; ``note``:
    the agent's own words above a forward (an internal note on the case); ``severity``/``assignee``:
    the ``#severity``/``#assign`` that came with ``#new``."""

    how: str
    agent: Address
    requester: Address
    author: Address
    received: datetime
    subject: str
    text: str
    attachments: list[Attachment] = field(default_factory=list)
    message_id: str | None = None
    references: list[str] = field(default_factory=list)
    note: str = ""
    severity: str | None = None
    assignee: str | None = None


@dataclass(eq=False)
class InboundMail:
    # -- fetched (ingest/poller.py) --
    account: str
    folder: str
    uidvalidity: int
    uid: int
    raw: bytes
    # When the poller fetched it (``time.monotonic()``, set as it makes the carrier): where the
    # acknowledgement latency starts (``mailbridge_ack_latency_seconds``).
    fetched_at: float = field(default_factory=time.monotonic)
    # How long it had waited in the folder when it was fetched (seconds; the server's INTERNALDATE
    # to our clock, ``ImapMailbox.waited``): a backlog after downtime is older than it is processed.
    waited: float = 0.0
    # -- prepared, before any transaction (ingest/prepare.py) --
    sha256: str = ""
    raw_path: str = ""
    # Refused before parsing (decided once, in prepare_one): over ``ingest.max_message_bytes``, or
    # over the MIME limits; ``refused`` says which (``prepare.REFUSED_SIZE`` / ``REFUSED_PARTS``).
    # Such a mail is quarantined at stage "size" and its sender told (``Validate``).
    oversize: bool = False
    refused: str | None = None
    parsed: ParsedMail | None = None
    parse_error: str | None = None
    # A mail not parsed whole (too large, or the parser gave up): its header block alone, parsed
    # (who sent it and whether it is automatic). None when it has none, or the mail was parsed.
    header_block: ParsedMail | None = None
    # The steps' pure work, done by a parse worker (``prepare.Ahead``); None: not done, the step
    # computes it. The class ``Classify`` gives the mail, and per queue (by name) what the queue's
    # whole checklist finds in the mail's subject, text and attachments (``CheckInformation``).
    classified: Classification | None = None
    checklist_found: dict[str, tuple[ItemResult, ...]] | None = None
    # The customer's HTML sanitised with the Content-IDs of the mail's inline parts (``NotifyAgents``).
    customer_html: tuple[frozenset[str], CleanHtml] | None = None
    # A quarantined mail an operator runs again (``mailbridge quarantine requeue``): its raw row. It
    # is this very mail, so deduplication passes it; the mailbox's state is not touched.
    requeue_of: int | None = None
    # When the mail happened, if not now: an archived mail imported from a file (``mailbridge import
    # --archive``) keeps its own time, decided by ``mailbridge/importer.py`` ``mail_time``. The
    # attempt's ``now`` (the case's, the message's and the history's times) is then this one.
    occurred_at: datetime | None = None

    # -- decided by the steps, in one attempt at the mail's transaction --
    session: Session | None = None
    now: datetime | None = None
    stage: str = ""  # the step running now, for logs and quarantine reasons
    outcome: Outcome | None = None
    raw_id: int | None = None
    # What kind of mail it is (ingest/noise.py): a person's, an out-of-office reply, a bounce, …
    mail_class: Classification | None = None
    queue: QueueSettings | None = None
    language: str | None = None
    ticket: TicketRef | None = None
    new_ticket: bool = False
    message_id: int | None = None
    # History entries of this mail, written with one executemany at the end of the transaction.
    events: list[dict] = field(default_factory=list)
    events_written: int = 0  # how many of ``events`` are rows already (``write_events``)
    routing: dict = field(default_factory=dict)
    # -- conversations (ingest/conversation.py) --
    match: Match | None = None
    role: AuthorRole = AuthorRole.REQUESTER
    # An agent's mail proven by a signed notification or DKIM ("notification" / "dkim"); None: unproven.
    agent_proof: str | None = None
    # The message's kind on the case and why agents should look at it.
    kind: MessageKind = MessageKind.CUSTOMER
    flags: list[str] = field(default_factory=list)
    # An agent's command block (its text is what may go to the customer).
    commands: CommandBlock | None = None
    # The case a new case follows up, and why ("closed-case" / "third-party").
    link_from: TicketRef | None = None
    link_reason: str | None = None
    # The severity and deadlines a new case got, and the requester's organisation and contract.
    sla: Assessment | None = None
    customer: Customer | None = None
    # An agent's answer reached the customer with this mail (relayed or sent directly): the
    # first-response clock stops, the follow-up clock starts again.
    answered: bool = False
    # An agent changed the severity: the follow-up clock follows the new level.
    severity_changed: bool = False
    # Phrases with which a customer asked for more urgency, and whether that raised the severity.
    urgency: list[str] = field(default_factory=list)
    customer_raised: bool = False
    # The case's checklist of required information after this mail (ingest/information.py).
    checklist: dict | None = None
    agent_mode: AgentMode | None = None
    # A case a proven agent files for a customer with this mail (a forward, a call), or None.
    filing: Filing | None = None
    # Something the agent must be told although no command failed (a revoked notification, a
    # reply with nothing to send).
    agent_notice: str | None = None

    def begin(self, session: Session, now: datetime) -> None:
        """Start an attempt at the mail's transaction: every decision of an earlier attempt is gone."""
        for f in fields(self):
            if f.name not in _CARRIED:
                setattr(self, f.name, f.default if f.default_factory is MISSING else f.default_factory())
        self.session, self.now = session, self.occurred_at or now

    def raw_row(self, disposition: Disposition, received_at: datetime) -> dict:
        """The raw-message row: where the bytes are, which mailbox and UID they came from, the class."""
        return {
            "sha256": self.sha256,
            "size": len(self.raw),
            "path": self.raw_path,
            "account": self.account,
            "folder": self.folder,
            "uidvalidity": self.uidvalidity,
            "uid": self.uid,
            "disposition": disposition.value,
            "received_at": received_at,
            "mail_class": self.mail_class.kind.value if self.mail_class else None,
        }

    @property
    def arrived(self) -> datetime:
        """When the mail arrived, on the attempt's clock: ``now`` less the time it waited in the
        mailbox. The automatic-mail limits count it then (``ingest/outgoing.py`` ``AutoAnswers``): a
        backlog worked after downtime is limited as its mails were when they came, not as a storm."""
        assert self.now is not None
        return self.now - timedelta(seconds=self.waited)

    @property
    def head(self) -> ParsedMail | None:
        """What we could read of the mail: the whole parse, else its header block."""
        return self.parsed or self.header_block

    @property
    def machine_made(self) -> str | None:
        """Why no person wrote this mail (its class is not a person's), or None.

        The one rule behind "never answer machine-made mail": such a mail is never acknowledged,
        relayed, allowed to change or reopen a case, or announced as a reply. Every step asks
        this property; none reads the class for it."""
        c = self.mail_class
        return None if c is None or c.personal else c.reason

    @property
    def disposition(self) -> Disposition:
        return self.outcome.disposition if self.outcome is not None else Disposition.PROCESSED

    def finish(self, disposition: Disposition, reason: str) -> None:
        """End the run here with ``disposition``: later steps are skipped (see ``records_kept``)."""
        self.outcome = Outcome(disposition, reason)

    def to_quarantine(self, stage: str, reason: str) -> None:
        self.outcome = Outcome(Disposition.QUARANTINED, reason, stage)

    def change_ticket(self, values: dict) -> None:
        """Write ``values`` to this mail's ticket and keep the snapshot (``ticket``) in step with them:
        the one way a step changes the case, so no later step reads a stale status."""
        assert self.ticket is not None and self.session is not None
        repo.update_row(self.session, Ticket, self.ticket.id, values)
        self.ticket = replace(self.ticket, **{k: v for k, v in values.items() if k in TICKET_REF_FIELDS})

    def event(self, kind: str, /, **detail) -> None:
        """Add an entry to the ticket's history (the ticket of this mail)."""
        assert self.ticket is not None
        self.events.append({"ticket_id": self.ticket.id, "kind": kind, "detail": detail, "created_at": self.now})

    def write_events(self) -> None:
        """Write the history recorded so far as rows, in recording order. The pipeline calls it at
        the end; a step calls it before something else writes history directly (the escalation on
        creation), so the case's history reads in the order things happened."""
        new = self.events[self.events_written :]
        if new:
            repo.insert_rows(self.session, Event, new)
        self.events_written = len(self.events)
