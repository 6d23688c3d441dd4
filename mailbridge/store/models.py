"""SQLAlchemy 2 typed models: the durable state of mailbridge.

The schema itself is created only by Alembic (``alembic/versions``); these classes must match it
(``tests/integration/test_migrations.py`` compares them). Times are stored as timezone-aware UTC.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

# A BIGINT primary key that SQLite still treats as its ROWID alias (SQLite only autoincrements
# "INTEGER PRIMARY KEY").
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UtcDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out, on SQLite (no tz support) and PostgreSQL alike."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect):  # type: ignore[override]
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; pass an aware UTC time")
        from datetime import UTC

        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect):  # type: ignore[override]
        if value is None:
            return None
        from datetime import UTC

        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class CaseSequence(Base):
    """The next case-number serial per format; bumped in the ticket's own transaction (no gaps)."""

    __tablename__ = "case_sequences"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    next_serial: Mapped[int] = mapped_column(BigInteger, nullable=False)


class Ticket(Base):
    __tablename__ = "tickets"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    case_number: Mapped[str] = mapped_column(String(32), unique=True, nullable=False)
    serial: Mapped[int] = mapped_column(BigInteger, nullable=False)
    queue: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    status: Mapped[str] = mapped_column(String(16), nullable=False, index=True)
    subject: Mapped[str] = mapped_column(Text, nullable=False)
    requester_email: Mapped[str] = mapped_column(String(320), nullable=False, index=True)
    requester_name: Mapped[str] = mapped_column(String(320), nullable=False, default="")
    language: Mapped[str] = mapped_column(String(8), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    # A level of the queue's severity scheme; None until classified or set by an agent (#severity).
    severity: Mapped[str | None] = mapped_column(String(16))
    # The agent address the case is assigned to (#assign); None: the queue's agents.
    assignee: Mapped[str | None] = mapped_column(String(320))
    # When the first verified agent reply reached (or was relayed to) the customer: the SLA's
    # first-response clock stops here.
    first_response_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # Set when the status becomes solved / closed; the reopen window counts from solved_at.
    solved_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # Where answers go: the Reply-To of the first mail (a web form's noreply From), else None = the
    # requester. Later mails cannot change it, so a forged Reply-To cannot redirect a case.
    reply_to: Mapped[str | None] = mapped_column(String(320))
    # When the first response and the resolution are due (the severity's targets on the queue's
    # calendar); None: no promise (no scheme, no target). Indexed for the escalation job.
    first_response_due: Mapped[datetime | None] = mapped_column(UtcDateTime, index=True)
    resolution_due: Mapped[datetime | None] = mapped_column(UtcDateTime, index=True)
    # The customer's organisation ([[organisations]]) and its contract (None: none; seed 003).
    organisation: Mapped[str | None] = mapped_column(String(128))
    contract: Mapped[str | None] = mapped_column(String(64))
    # The follow-up clock: while the case is active, an answer to the customer is due this long
    # after the last one (last_answer_at) when the severity has a follow_up target.
    update_due: Mapped[datetime | None] = mapped_column(UtcDateTime, index=True)
    last_answer_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # When the current follow-up period began: the last answer, or the moment the case became
    # active again (a reopened or resumed case owes its customer a new follow-up from then on).
    update_started_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # Since when the clocks stand still (pending, when the queue pauses); and the business seconds
    # paused so far (the due times above already include them).
    paused_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    paused_seconds: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    # When the escalation job has to look at the case next (the next stage of a running clock);
    # None: nothing to escalate. The job reads only rows whose time has come.
    next_escalation_at: Mapped[datetime | None] = mapped_column(UtcDateTime, index=True)
    # The earlier case this one follows up (a customer wrote about a closed case).
    linked_ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"))
    # The queue's checklist of required information (mailbridge/checklist.py) as the case's mails
    # gave it: {item key: {"given": bool, "evidence": str | None, "message_id": int | None}}, the
    # message being the first inbound message that gave it. None: the queue has no checklist.
    checklist: Mapped[dict | None] = mapped_column(JSON)
    # When retention or an erasure replaced the case's personal data (subject, names, addresses) by
    # placeholders; the skeleton (number, dates, SLA figures) stays.
    anonymised_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    messages: Mapped[list[Message]] = relationship(back_populates="ticket", order_by="Message.id")
    events: Mapped[list[Event]] = relationship(back_populates="ticket", order_by="Event.id")
    participants: Mapped[list[Participant]] = relationship(back_populates="ticket", order_by="Participant.id")
    linked_ticket: Mapped[Ticket | None] = relationship(remote_side="Ticket.id")

    # The auto-close job looks for solved tickets by the time they were solved; the reports for the
    # cases created in a period.
    __table_args__ = (
        Index("ix_tickets_status_solved_at", "status", "solved_at"),
        Index("ix_tickets_created_at", "created_at"),
    )


class Participant(Base):
    """Someone who takes part in a case, and in which role.

    role: requester (opened it) | customer (Cc of the first mail, or a colleague from the requester's
    organisation) | agent | third_party (referenced the case without belonging to it) | erased (their data
    was erased: ``mailbridge privacy erase``; nothing is sent to them).
    """

    __tablename__ = "ticket_participants"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), nullable=False)
    email: Mapped[str] = mapped_column(String(320), nullable=False)
    name: Mapped[str] = mapped_column(String(320), nullable=False, default="")
    role: Mapped[str] = mapped_column(String(16), nullable=False)
    added_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)

    ticket: Mapped[Ticket] = relationship(back_populates="participants")

    __table_args__ = (
        UniqueConstraint("ticket_id", "email", name="uq_ticket_participants_email"),
        # A known customer by address (status by mail, the tracker's sign-in and visibility, erasure).
        Index("ix_ticket_participants_email", "email"),
    )


class RawMessage(Base):
    """One distinct inbound mail as bytes (content-addressed on disk); the anchor of deduplication."""

    __tablename__ = "raw_messages"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    size: Mapped[int] = mapped_column(BigInteger, nullable=False)
    # Path relative to the raw store's root.
    path: Mapped[str] = mapped_column(String(255), nullable=False)
    account: Mapped[str] = mapped_column(String(64), nullable=False)
    folder: Mapped[str] = mapped_column(String(255), nullable=False)
    uidvalidity: Mapped[int] = mapped_column(BigInteger, nullable=False)
    uid: Mapped[int] = mapped_column(BigInteger, nullable=False)
    # processed | duplicate | ignored | noise | quarantined
    disposition: Mapped[str] = mapped_column(String(16), nullable=False)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    # What kind of mail it is (ingest/noise.py MailClass: human, out_of_office, hard_bounce, …).
    mail_class: Mapped[str | None] = mapped_column(String(24))
    # When retention or an erasure deleted the file (the row stays: deduplication, the mailbox's UIDs).
    purged_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    __table_args__ = (Index("ix_raw_messages_mailbox_uid", "account", "folder", "uidvalidity", "uid"),)


class Message(Base):
    """Every inbound and outbound mail of a ticket, with the headers we thread on."""

    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"), index=True)
    direction: Mapped[str] = mapped_column(String(8), nullable=False)  # in | out
    # The Message-ID without angle brackets; not unique: other systems reuse them.
    message_id: Mapped[str | None] = mapped_column(String(998), index=True)
    in_reply_to: Mapped[str | None] = mapped_column(Text)
    references: Mapped[str | None] = mapped_column(Text)
    sender_email: Mapped[str] = mapped_column(String(320), nullable=False, default="")
    sender_name: Mapped[str] = mapped_column(String(320), nullable=False, default="")
    recipients: Mapped[list[str]] = mapped_column(JSON, nullable=False, default=list)
    subject: Mapped[str] = mapped_column(Text, nullable=False, default="")
    body_text: Mapped[str] = mapped_column(Text, nullable=False, default="")
    date: Mapped[datetime | None] = mapped_column(UtcDateTime)
    language: Mapped[str | None] = mapped_column(String(8))
    # Inbound: the raw bytes; outbound: the outbox row that carries them.
    raw_id: Mapped[int | None] = mapped_column(ForeignKey("raw_messages.id"), index=True)
    outbox_id: Mapped[int | None] = mapped_column(ForeignKey("outbox.id"))
    # Why the pipeline routed this mail where it went (rule and evidence).
    routing: Mapped[dict | None] = mapped_column(JSON)
    # Inbound: the new part of the text (quoted history and signature removed); outbound: None.
    body_new: Mapped[str | None] = mapped_column(Text)
    # What the mail is on the case: customer | agent | agent_unverified | note | third_party | auto
    # (inbound), ack | notification | relay | command_error (outbound).
    kind: Mapped[str | None] = mapped_column(String(24))
    # Inbound: the mail's class (ingest/noise.py MailClass); outbound: None.
    mail_class: Mapped[str | None] = mapped_column(String(24))
    # Why agents should look at it (an unknown third party, a forged agent address, a conflict).
    flags: Mapped[list[str] | None] = mapped_column(JSON)
    # Outlook's conversation index as received or sent (MS-OXOMSG), continued by our replies.
    thread_index: Mapped[str | None] = mapped_column(String(2048))
    # A signed notification whose Message-ID reached someone who is not an agent: replies that
    # quote it prove nothing any more.
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    defects: Mapped[list[str] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    # When retention or an erasure emptied body_text/body_new (and the subject).
    text_removed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    ticket: Mapped[Ticket | None] = relationship(back_populates="messages")
    attachments: Mapped[list[AttachmentRow]] = relationship(back_populates="message")
    # Linked as objects so a whole mail is written in one flush (no flush just to learn an id).
    raw: Mapped[RawMessage | None] = relationship()
    outbox: Mapped[Outbox | None] = relationship()

    # The reports: the mails of a period (the history).
    __table_args__ = (Index("ix_messages_created_at", "created_at"),)


class AttachmentRow(Base):
    """Metadata of one attachment; the bytes live in the content-addressed store under var/."""

    __tablename__ = "attachments"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id"), index=True, nullable=False)
    # As the sender named it (for display only; never used as a path).
    filename: Mapped[str] = mapped_column(Text, nullable=False)
    content_type: Mapped[str] = mapped_column(String(255), nullable=False)
    size: Mapped[int] = mapped_column(BigInteger, nullable=False)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    content_id: Mapped[str | None] = mapped_column(String(998))
    # When retention or an erasure removed this attachment's bytes (the file goes when no other
    # attachment that is kept has the same sha256).
    purged_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    message: Mapped[Message] = relationship(back_populates="attachments")


class Event(Base):
    """The ticket's history: created, acknowledged, status changes, suppressed mail, …"""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True, nullable=False)
    kind: Mapped[str] = mapped_column(String(64), nullable=False)
    detail: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)

    ticket: Mapped[Ticket] = relationship(back_populates="events")

    # The reports: the history of a period; the cases with an event of a kind (reopened).
    __table_args__ = (
        Index("ix_events_created_at", "created_at"),
        Index("ix_events_kind_ticket", "kind", "ticket_id"),
    )


class Outbox(Base):
    """A mail to send, exactly as it will go on the wire; drained by the sender.

    status: queued → claimed (until ``claimed_until``) → sending (in its SMTP exchange) → sent | failed.
    ``dedup_key`` is unique: whoever enqueues the same logical mail twice gets one row.
    """

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    dedup_key: Mapped[str] = mapped_column(String(255), unique=True, nullable=False)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"), index=True)
    message_id: Mapped[str] = mapped_column(String(998), nullable=False)
    envelope_from: Mapped[str] = mapped_column(String(320), nullable=False)
    envelope_to: Mapped[list[str]] = mapped_column(JSON, nullable=False)
    raw: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    claimed_until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    ticket: Mapped[Ticket | None] = relationship()

    __table_args__ = (Index("ix_outbox_due", "status", "next_attempt_at"),)


class AddressHealth(Base):
    """An address our mail bounced from: failing since when, why, and until when automatic mail to
    it is suppressed (a hard bounce; ``auto_mail.hard_bounce_suppress_days``)."""

    __tablename__ = "address_health"

    email: Mapped[str] = mapped_column(String(320), primary_key=True)
    # failing (a bounce was recorded; nothing delivered since)
    state: Mapped[str] = mapped_column(String(16), nullable=False)
    permanent: Mapped[bool] = mapped_column(Boolean, nullable=False)
    bounces: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    # RFC 3463 status of the last bounce ("5.1.1") and the classifier's evidence.
    last_status: Mapped[str | None] = mapped_column(String(16))
    last_reason: Mapped[str | None] = mapped_column(Text)
    first_failed_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    last_failed_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    suppressed_until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"))


class AutoMail(Base):
    """One automatic mail (acknowledgement, notice) queued to one outside recipient: what the
    per-recipient limits count (``outbound/guard.py``)."""

    __tablename__ = "auto_mails"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    recipient: Mapped[str] = mapped_column(String(320), nullable=False)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"))
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)

    __table_args__ = (Index("ix_auto_mails_recipient_created", "recipient", "created_at"),)


class MailboxState(Base):
    """Per account and folder: UIDVALIDITY and the highest UID whose mail is committed.

    Invariant: every UID <= last_uid (under this uidvalidity) has a raw_messages row, so a restart
    never processes it twice; a different UIDVALIDITY resets last_uid and relies on deduplication.
    """

    __tablename__ = "mailbox_state"

    account: Mapped[str] = mapped_column(String(64), primary_key=True)
    folder: Mapped[str] = mapped_column(String(255), primary_key=True)
    uidvalidity: Mapped[int] = mapped_column(BigInteger, nullable=False)
    last_uid: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)


class Quarantine(Base):
    """A mail that could not become a ticket, with the stage and the reason; raw bytes are kept."""

    __tablename__ = "quarantine"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    raw_id: Mapped[int] = mapped_column(ForeignKey("raw_messages.id"), nullable=False, index=True)
    stage: Mapped[str] = mapped_column(String(64), nullable=False)
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    message_id: Mapped[str | None] = mapped_column(String(998))
    sender: Mapped[str | None] = mapped_column(String(320))
    subject: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    # open | requeued | discarded
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="open")
    # What became of it when an operator requeued (the new disposition) or discarded it, and when.
    outcome: Mapped[str | None] = mapped_column(String(16))
    resolved_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    raw: Mapped[RawMessage] = relationship()

    __table_args__ = (UniqueConstraint("raw_id", name="uq_quarantine_raw"),)


class AccountHealth(Base):
    """How an IMAP account fared at its last cycle, written by the running service (per cycle and
    per failure, not per mail); read by ``mailbridge status`` and the alert job. Several instances
    on one database write the same row: the last writer wins."""

    __tablename__ = "account_health"

    account: Mapped[str] = mapped_column(String(64), primary_key=True)
    connected: Mapped[bool] = mapped_column(Boolean, nullable=False)
    # idle | polling (None before the first connection)
    mode: Mapped[str | None] = mapped_column(String(16))
    last_fetch_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # The current failure streak: the last error, its kind (transient | login | tls) and the time
    # of its first failure; all None while the account works.
    last_error: Mapped[str | None] = mapped_column(Text)
    error_kind: Mapped[str | None] = mapped_column(String(16))
    failing_since: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # New mails found in the watched folder at the start of the last cycle.
    waiting: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)


class JobHealth(Base):
    """The last run of a scheduled job (escalate, close_solved, digest:<name>, outbox): when it
    ran, when it last succeeded, and its last error (None once it succeeds again)."""

    __tablename__ = "job_health"

    job: Mapped[str] = mapped_column(String(128), primary_key=True)
    last_run_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_success_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    # The first failure of the current streak; None while the job works.
    failing_since: Mapped[datetime | None] = mapped_column(UtcDateTime)


class AlertState(Base):
    """One alert condition (``account:<name>``, ``outbox``, ``quarantine``): firing since when,
    when its last mail went out, how many were sent in this firing; ``firing_since`` None: normal."""

    __tablename__ = "alert_state"

    condition: Mapped[str] = mapped_column(String(128), primary_key=True)
    firing_since: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    sent: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # What the last evaluation found (the facts of the alert mail).
    detail: Mapped[dict | None] = mapped_column(JSON)


class LegalHold(Base):
    """A case under legal hold (commercial records): retention and erasure leave it as it is."""

    __tablename__ = "legal_holds"

    ticket_id: Mapped[int] = mapped_column(BigId, ForeignKey("tickets.id"), primary_key=True)
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    # Who placed it (a login name, ``--by``).
    held_by: Mapped[str] = mapped_column(String(128), nullable=False)
    held_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)


class RetentionRun(Base):
    """One run of the retention job (``run_key`` unique: ``daily:<date>`` claims the day's run for
    one instance; ``manual:<…>`` a run from the CLI); what it removed, per kind."""

    __tablename__ = "retention_runs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_key: Mapped[str] = mapped_column(String(128), nullable=False)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    dry_run: Mapped[bool] = mapped_column(Boolean, nullable=False)
    # {kind: count} (raw_files, attachment_files, message_texts, cases_anonymised, noise, quarantine,
    # imap_expunged); None while the run is going on.
    counts: Mapped[dict | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (UniqueConstraint("run_key", name="uq_retention_runs_key"),)


class PrivacyAudit(Base):
    """What was done for data protection (erase, export, hold, release): when, by whom, how much;
    never the erased data itself (an erased address appears only as its pseudonym)."""

    __tablename__ = "privacy_audit"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    action: Mapped[str] = mapped_column(String(32), nullable=False)
    actor: Mapped[str] = mapped_column(String(128), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    detail: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)


class SigninToken(Base):
    """A mailed sign-in link of the case tracker (``mailbridge web``): only the SHA-256 of its
    random token is kept; valid until ``expires_at`` (15 minutes), once (``used_at``), for one address."""

    __tablename__ = "signin_tokens"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    address: Mapped[str] = mapped_column(String(320), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class SigninRequest(Base):
    """One request for a sign-in mail (known address or not): what the rate limits per address and
    per client count."""

    __tablename__ = "signin_requests"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    address: Mapped[str] = mapped_column(String(320), nullable=False)
    client: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)

    __table_args__ = (
        Index("ix_signin_requests_address", "address", "created_at"),
        Index("ix_signin_requests_client", "client", "created_at"),
    )


class ScheduleStart(Base):
    """When a scheduled thing (``report:<name>``, ``digest:<name>``) was first seen by a running
    service: due times before it are not owed (a new schedule does not send yesterday's report)."""

    __tablename__ = "schedule_starts"

    name: Mapped[str] = mapped_column(String(160), primary_key=True)
    since: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)


class ScheduleRun(Base):
    """One due time of a scheduled thing, claimed once (unique name and due time) in the transaction
    that queued its mail: what came of it (sent, sent late, skipped and why) and its outbox row."""

    __tablename__ = "schedule_runs"
    __table_args__ = (UniqueConstraint("name", "due_at", name="uq_schedule_runs_name_due"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(160), nullable=False)
    due_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    ran_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    # sent, late (sent after a later tick than its due time's), closed_day, nothing_to_report
    outcome: Mapped[str] = mapped_column(String(32), nullable=False)
    outbox_id: Mapped[int | None] = mapped_column(BigInteger)


class OAuthToken(Base):
    """The OAuth2 token of one login (an account's name, or ``smtp`` for SMTP's own table), shared by
    every instance on the database. Tokens are Fernet-encrypted (``store/tokens.py``); ``identity``
    is the provider, flow and client the token was issued for (another config: not used).

    One instance renews at a time: it takes the lease (``lease_owner``/``lease_until``) by
    compare-and-set, asks the token endpoint outside any transaction, writes the new token (and the
    rotated refresh token) and frees the lease; the others wait for the row to carry a fresh token."""

    __tablename__ = "oauth_tokens"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    identity: Mapped[str] = mapped_column(String(512), nullable=False)
    access_token: Mapped[bytes | None] = mapped_column(LargeBinary)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    refresh_token: Mapped[bytes | None] = mapped_column(LargeBinary)
    # The last successful renewal, and how many there were.
    renewed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    renewals: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # The last failure (None once a renewal works): the provider's error code, its words and hint,
    # whether a person must sign in again (reauth_required), and since when it fails.
    error_code: Mapped[str | None] = mapped_column(String(128))
    last_error: Mapped[str | None] = mapped_column(Text)
    reauth_required: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    failing_since: Mapped[datetime | None] = mapped_column(UtcDateTime)
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)


class Lease(Base):
    """A lease shared by the instances on one database (``store/leases.py``): ``mailbox:<account>/<folder>``
    (only its holder fetches that mailbox), ``leader`` (only its holder runs the scheduler's
    cluster-wide jobs), ``instance:<name>`` (an instance's heartbeat: it is alive until
    ``expires_at``). Times are the database's clock on PostgreSQL. ``holder`` None: released (then
    ``expires_at`` is when)."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(255))
    acquired_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
