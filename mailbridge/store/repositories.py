"""Queries grouped per aggregate. Callers own the transaction: nothing here commits.

The ingest hot path (a transaction per batch of mails, a savepoint per mail) writes with Core
statements on the session's own connection: ``INSERT … RETURNING id`` and plain UPDATEs; the
statements it runs per mail are built once, with bind parameters. The ORM unit of work (flush) costs several
milliseconds for the nine-odd rows of one mail, more than parsing the mail; the rest of the code
(CLI views, tests) uses the ORM models as usual.

Case numbers come from ``case_sequences`` through one ``UPDATE … RETURNING`` inside the ticket's own
transaction: the row lock (PostgreSQL) or the write lock (SQLite, ``BEGIN IMMEDIATE``) serialises
allocators, and a rolled-back ticket rolls its serial back too, so numbers have neither gaps nor
collisions, also with several processes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, case, func, insert, literal_column, or_, select, text, union_all, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, selectinload

from mailbridge.domain import CaseNumberFormat
from mailbridge.store.models import (
    AttachmentRow,
    CaseSequence,
    Event,
    MailboxState,
    Message,
    Outbox,
    Participant,
    Quarantine,
    RawMessage,
    Ticket,
)

# ---------------------------------------------------------------- Core helpers for the hot path


def _conn(session: Session) -> Connection:
    """The connection of the session's transaction (Core statements skip the unit of work)."""
    return session.connection()


# Statements are built once and executed with parameter dicts: building ``insert(t).values(**row)``
# per row makes SQLAlchemy coerce every value and compute a fresh cache key, which costs more than
# the INSERT itself.
_INSERT_RETURNING_ID: dict[str, Any] = {}


def insert_row(session: Session, model, values: dict) -> int:
    """INSERT one row of ``model``'s table; return its id."""
    t = model.__table__
    stmt = _INSERT_RETURNING_ID.get(t.name)
    if stmt is None:
        stmt = _INSERT_RETURNING_ID[t.name] = insert(t).returning(t.c.id)
    return _conn(session).execute(stmt, values).scalar_one()


def insert_rows(session: Session, model, rows: list[dict]) -> None:
    """INSERT several rows of ``model``'s table in one executemany."""
    if rows:
        _conn(session).execute(model.__table__.insert(), rows)


def update_row(session: Session, model, row_id: int, values: dict) -> None:
    t = model.__table__
    _conn(session).execute(update(t).where(t.c.id == bindparam("_row_id")), {"_row_id": row_id, **values})


@dataclass(frozen=True)
class TicketRef:
    """What the pipeline needs of a ticket: no ORM object, no lazy loading."""

    id: int
    case_number: str
    queue: str
    status: str
    subject: str
    requester_email: str
    requester_name: str
    language: str
    created_at: datetime
    severity: str | None = None
    assignee: str | None = None
    first_response_at: datetime | None = None
    solved_at: datetime | None = None
    linked_ticket_id: int | None = None
    reply_to: str | None = None
    organisation: str | None = None
    contract: str | None = None
    paused_seconds: int = 0

    @property
    def answer_to(self) -> str:
        """Where answers to the customer go (see Ticket.reply_to)."""
        return self.reply_to or self.requester_email


TICKET_REF_COLS = (
    Ticket.id,
    Ticket.case_number,
    Ticket.queue,
    Ticket.status,
    Ticket.subject,
    Ticket.requester_email,
    Ticket.requester_name,
    Ticket.language,
    Ticket.created_at,
    Ticket.severity,
    Ticket.assignee,
    Ticket.first_response_at,
    Ticket.solved_at,
    Ticket.linked_ticket_id,
    Ticket.reply_to,
    Ticket.organisation,
    Ticket.contract,
    Ticket.paused_seconds,
)


# Built once (the matcher reads a case, locked, for every mail on a case): (by id?, locked?) → select.
_TICKET_REF = {
    (by_id, lock): (q.with_for_update() if lock else q)
    for by_id in (True, False)
    for lock in (True, False)
    for q in [
        select(*TICKET_REF_COLS).where(
            Ticket.id == bindparam("key") if by_id else Ticket.case_number == bindparam("key")
        )
    ]
}


def ticket_ref(
    session: Session, *, ticket_id: int | None = None, case_number: str | None = None, lock: bool = False
) -> TicketRef | None:
    """The ticket by id or case number; ``lock``: hold its row until the transaction ends
    (PostgreSQL; SQLite's BEGIN IMMEDIATE already serialises writers), so two mails or the close
    job cannot change one case at the same time."""
    if ticket_id is not None:
        key: int | str = ticket_id
    else:
        assert case_number is not None
        key = case_number.upper()
    row = _conn(session).execute(_TICKET_REF[ticket_id is not None, lock], {"key": key}).first()
    return TicketRef(*row) if row is not None else None


def tickets_by_case_numbers(session: Session, numbers: list[str]) -> dict[str, TicketRef]:
    """The existing tickets among ``numbers`` (normalised case numbers), in one query."""
    if not numbers:
        return {}
    rows = _conn(session).execute(select(*TICKET_REF_COLS).where(Ticket.case_number.in_(set(numbers)))).all()
    return {r.case_number: TicketRef(*r) for r in rows}


_PARTICIPANTS = select(Participant.email, Participant.role).where(Participant.ticket_id == bindparam("tid"))


def participants(session: Session, ticket_id: int) -> dict[str, str]:
    """email → role of everyone taking part in the ticket."""
    return dict(_conn(session).execute(_PARTICIPANTS, {"tid": ticket_id}).all())


def customer_emails(session: Session, ticket_ids: list[int]) -> dict[int, set[str]]:
    """ticket id → the requester and customer participants' addresses."""
    out: dict[int, set[str]] = {t: set() for t in ticket_ids}
    if not ticket_ids:
        return out
    for tid, email in _conn(session).execute(
        select(Ticket.id, Ticket.requester_email).where(Ticket.id.in_(ticket_ids))
    ):
        out[tid].add(email)
    for tid, email in _conn(session).execute(
        select(Participant.ticket_id, Participant.email).where(
            Participant.ticket_id.in_(ticket_ids), Participant.role.in_(("requester", "customer"))
        )
    ):
        out[tid].add(email)
    return out


def add_participants(
    session: Session, ticket_id: int, people: list[tuple[str, str, str]], now: datetime, *, new_ticket: bool = False
) -> list[str]:
    """Add (email, name, role) entries not yet on the ticket; return the addresses added.

    ``new_ticket``: the ticket was created in this transaction, so nobody is on it yet (no query)."""
    known = {} if new_ticket else participants(session, ticket_id)
    rows, seen = [], set(known)
    for email, name, role in people:
        if email and len(email) <= 320 and email not in seen:
            seen.add(email)
            rows.append(
                {"ticket_id": ticket_id, "email": email[:320], "name": name[:320], "role": role, "added_at": now}
            )
    insert_rows(session, Participant, rows)
    return [r["email"] for r in rows]


@dataclass(frozen=True)
class ThreadParent:
    """The message a reply of ours continues: its Message-ID, References and Thread-Index."""

    message_id: str | None
    references: list[str]
    thread_index: str | None


def last_message(
    session: Session, ticket_id: int, kinds: tuple[str, ...], *, first: bool = False
) -> ThreadParent | None:
    """The newest (``first``: the oldest) message of the ticket of one of ``kinds`` (see Message.kind)."""
    row = (
        _conn(session)
        .execute(
            select(Message.message_id, Message.references, Message.thread_index)
            .where(Message.ticket_id == ticket_id, Message.kind.in_(kinds))
            .order_by(Message.id if first else Message.id.desc())
            .limit(1)
        )
        .first()
    )
    if row is None:
        return None
    return ThreadParent(row[0], (row[1] or "").split(), row[2])


def last_messages(session: Session, ticket_ids: list[int], kinds: tuple[str, ...]) -> dict[int, ThreadParent]:
    """:func:`last_message` for many tickets in two statements (the escalation job's batches)."""
    if not ticket_ids:
        return {}
    newest = (
        select(func.max(Message.id))
        .where(Message.ticket_id.in_(set(ticket_ids)), Message.kind.in_(kinds))
        .group_by(Message.ticket_id)
    )
    rows = _conn(session).execute(
        select(Message.ticket_id, Message.message_id, Message.references, Message.thread_index).where(
            Message.id.in_(newest)
        )
    )
    return {r[0]: ThreadParent(r[1], (r[2] or "").split(), r[3]) for r in rows}


def existing_outbox_keys(session: Session, keys: list[str]) -> set[str]:
    """Those of ``keys`` that are queued (or sent) already."""
    if not keys:
        return set()
    rows = _conn(session).execute(select(Outbox.dedup_key).where(Outbox.dedup_key.in_(set(keys))))
    return {r[0] for r in rows}


def close_solved(session: Session, solved_before: datetime, now: datetime) -> list[tuple[int, str]]:
    """Close solved tickets solved before ``solved_before``; return (id, case number) of each one
    this statement closed (a case reopened meanwhile is left alone: the condition is re-checked
    by the UPDATE itself)."""
    rows = _conn(session).execute(
        update(Ticket)
        .where(Ticket.status == "solved", Ticket.solved_at <= solved_before)
        .values(status="closed", closed_at=now, updated_at=now)
        .returning(Ticket.id, Ticket.case_number)
    )
    return [(r[0], r[1]) for r in rows]


def ticket_due(session: Session, ticket_id: int) -> datetime | None:
    """The case's first-response due time."""
    return _conn(session).execute(select(Ticket.first_response_due).where(Ticket.id == ticket_id)).scalar_one_or_none()


def ticket_checklist(session: Session, ticket_id: int) -> dict | None:
    """The case's checklist state (Ticket.checklist)."""
    return _conn(session).execute(select(Ticket.checklist).where(Ticket.id == ticket_id)).scalar_one_or_none()


def events_of(session: Session, ticket_id: int, kinds: tuple[str, ...]) -> list[tuple[str, dict, datetime]]:
    """The ticket's history entries of ``kinds``, oldest first, as (kind, detail, created_at)."""
    rows = _conn(session).execute(
        select(Event.kind, Event.detail, Event.created_at)
        .where(Event.ticket_id == ticket_id, Event.kind.in_(kinds))
        .order_by(Event.id)
    )
    return [(r[0], r[1] or {}, r[2]) for r in rows]


# Mails to agents whose Message-ID is signed for their case (a reply to one proves the agent).
SIGNED_KINDS = ("notification", "escalation")


def live_notifications(session: Session, message_ids: list[str]) -> set[str]:
    """Those of ``message_ids`` that are notifications we sent and that were not revoked."""
    if not message_ids:
        return set()
    rows = _conn(session).execute(
        select(Message.message_id).where(
            Message.message_id.in_(set(message_ids)),
            Message.direction == "out",
            Message.kind.in_(SIGNED_KINDS),
            Message.revoked_at.is_(None),
        )
    )
    return {r[0] for r in rows}


def revoke_notifications(session: Session, message_ids: list[str], now: datetime) -> int:
    """Mark notifications as leaked: replies quoting them prove nothing any more."""
    if not message_ids:
        return 0
    res = _conn(session).execute(
        update(Message)
        .where(Message.message_id.in_(set(message_ids)), Message.kind.in_(SIGNED_KINDS), Message.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return res.rowcount


def recent_outbound(session: Session, ticket_id: int, kinds: tuple[str, ...], since: datetime) -> int:
    """How many mails of ``kinds`` the ticket queued since ``since``; the copies of one mail to
    several recipients (one Message-ID, e.g. a relay with each recipient's case link) count once."""
    return (
        _conn(session)
        .execute(
            select(func.count(func.distinct(Outbox.message_id)))
            .select_from(Outbox)
            .where(Outbox.ticket_id == ticket_id, Outbox.kind.in_(kinds), Outbox.created_at >= since)
        )
        .scalar_one()
    )


# ---------------------------------------------------------------- case numbers and tickets


def ensure_case_sequence(session: Session, fmt: CaseNumberFormat, first_serial: int) -> None:
    """Create the sequence row once (at start-up), so allocators never race to create it."""
    name = f"{fmt.prefix}{fmt.digits}"
    if session.get(CaseSequence, name) is None:
        session.add(CaseSequence(name=name, next_serial=first_serial))


_CS = CaseSequence.__table__
_NEXT_SERIAL = (
    update(_CS)
    .where(_CS.c.name == bindparam("seq"))
    .values(next_serial=_CS.c.next_serial + 1)
    .returning(_CS.c.next_serial)
)


def allocate_serial(session: Session, fmt: CaseNumberFormat, first_serial: int) -> int:
    """Take the next serial for ``fmt`` in the caller's transaction (see module docstring)."""
    name = f"{fmt.prefix}{fmt.digits}"
    got = _conn(session).execute(_NEXT_SERIAL, {"seq": name}).scalar_one_or_none()
    if got is None:
        # First ticket ever for this format. Two processes racing here both try to insert; the
        # loser's unique violation rolls back its transaction and the pipeline retries the mail.
        _conn(session).execute(insert(CaseSequence.__table__).values(name=name, next_serial=first_serial + 1))
        return first_serial
    serial = got - 1
    if serial > fmt.max_serial:
        raise OverflowError(f"case numbers for {name} are exhausted")
    return serial


def ticket_by_case(session: Session, case_number: str) -> Ticket | None:
    return session.scalars(
        select(Ticket)
        .where(func.upper(Ticket.case_number) == case_number.upper())
        .options(
            selectinload(Ticket.messages).selectinload(Message.attachments),
            selectinload(Ticket.events),
            selectinload(Ticket.participants),
            selectinload(Ticket.linked_ticket),
        )
    ).one_or_none()


def ticket_outbox(session: Session, ticket_id: int) -> list[Outbox]:
    """The mails queued for a case, in the order queued: what was sent, is waiting or failed."""
    return list(session.scalars(select(Outbox).where(Outbox.ticket_id == ticket_id).order_by(Outbox.id)))


def list_tickets(session: Session, queue: str | None = None, status: str | None = None, limit: int = 100):
    q = select(Ticket).order_by(Ticket.id.desc()).limit(limit)
    if queue:
        q = q.where(Ticket.queue == queue)
    if status:
        q = q.where(Ticket.status == status)
    return list(session.scalars(q))


def queue_worklist(
    session: Session, queue: str, statuses: tuple[str, ...], severity_keys: list[str], limit: int
) -> list[Ticket]:
    """A queue's cases of ``statuses`` in working order (seed 003): cases with a contract first, then
    by severity in the order of ``severity_keys`` (the scheme's, most severe first; a level the
    scheme does not know (any more) after the known ones, no level at all last), then by arrival
    (oldest first)."""
    severity = case(
        (Ticket.severity.is_(None), len(severity_keys) + 1),
        *((Ticket.severity == key, i) for i, key in enumerate(severity_keys)),
        else_=len(severity_keys),
    )
    order = (case((Ticket.contract.is_(None), 1), else_=0), severity, Ticket.created_at, Ticket.id)
    return list(
        session.scalars(
            select(Ticket).where(Ticket.queue == queue, Ticket.status.in_(statuses)).order_by(*order).limit(limit)
        )
    )


def outbox_mails(session: Session) -> list[tuple[str, str, str, str | None]]:
    """(Message-ID, kind, dedup key, case number or None) of every mail in the outbox."""
    query = select(Outbox.message_id, Outbox.kind, Outbox.dedup_key, Ticket.case_number).outerjoin(
        Ticket, Outbox.ticket_id == Ticket.id
    )
    return [(mid, kind, dedup, case_number) for mid, kind, dedup, case_number in session.execute(query)]


def message_ids_of_rows(session: Session, row_ids: set[int]) -> dict[int, str]:
    """The Message-ID of each of the ``messages`` rows ``row_ids``."""
    if not row_ids:
        return {}
    rows = session.execute(select(Message.id, Message.message_id).where(Message.id.in_(row_ids)))
    return {row_id: message_id for row_id, message_id in rows}


def add_event(session: Session, ticket: Ticket | int, kind: str, now: datetime, **detail) -> None:
    """Record ``kind`` on the ticket's history; ``ticket`` may be an unflushed Ticket object."""
    if isinstance(ticket, Ticket):
        session.add(Event(ticket=ticket, kind=kind, detail=detail, created_at=now))
    else:
        session.add(Event(ticket_id=ticket, kind=kind, detail=detail, created_at=now))


# ---------------------------------------------------------------- inbound messages


def _duplicate_query():
    """Both questions of deduplication in one statement (one round trip per mail): the raw row with
    the same bytes (the ``sha256`` unique index), else an inbound message with the same Message-ID
    (the ``messages.message_id`` index); the same bytes win. ``besides`` (-1: none) is a raw row
    that does not count."""
    by_sha = select(RawMessage.id, RawMessage.disposition, literal_column("0").label("rank")).where(
        RawMessage.sha256 == bindparam("sha"), RawMessage.id != bindparam("besides")
    )
    by_mid = (
        select(RawMessage.id, RawMessage.disposition, literal_column("1").label("rank"))
        .join(Message, Message.raw_id == RawMessage.id)
        .where(
            Message.message_id == bindparam("mid"),
            Message.direction == "in",
            RawMessage.id != bindparam("besides"),
        )
        .limit(1)
    )
    both = union_all(by_sha, by_mid.subquery().select()).subquery()
    return select(both.c.id, both.c.disposition).order_by(both.c.rank).limit(1)


_DUPLICATE = _duplicate_query()


# Held per Message-ID until the transaction ends (PostgreSQL): see hold_message_id.
_HOLD_MESSAGE_ID = text("SELECT pg_advisory_xact_lock(hashtextextended(:mid, 1713))")


def hold_message_id(session: Session, message_id: str | None) -> None:
    """On PostgreSQL, hold ``message_id`` until this transaction ends (an advisory lock), before
    :func:`find_duplicate` looks for it: two copies of one mail (delivered to two support
    addresses, fetched by two pollers or instances whose batches are open at once) otherwise both
    find nothing, and both open a case. The second waits until the first's batch committed, then
    finds it. SQLite needs none: one writer at a time."""
    if message_id and session.get_bind().dialect.name == "postgresql":
        _conn(session).execute(_HOLD_MESSAGE_ID, {"mid": message_id})


def find_duplicate(
    session: Session, sha256: str, message_id: str | None, *, besides: int | None = None
) -> tuple[int, str] | None:
    """(raw id, disposition) of the earlier copy of this mail: the same bytes, or an inbound mail
    with the same Message-ID. One prebuilt statement: this runs for every mail. ``besides``: a raw
    row that is this very mail (a quarantined one run again) and does not count."""
    params = {"sha": sha256, "mid": message_id or None, "besides": -1 if besides is None else besides}
    row = _conn(session).execute(_DUPLICATE, params).first()
    return (row[0], row[1]) if row is not None else None


# ---------------------------------------------------------------- quarantine


def quarantine_row(session: Session, quarantine_id: int) -> Quarantine | None:
    """A quarantine row with its raw-message row."""
    return session.get(Quarantine, quarantine_id)


def open_quarantine_ids(session: Session, stage: str | None = None) -> list[int]:
    q = select(Quarantine.id).where(Quarantine.status == "open").order_by(Quarantine.id)
    if stage is not None:
        q = q.where(Quarantine.stage == stage)
    return list(session.scalars(q))


def quarantine_of_raw(session: Session, raw_id: int) -> int | None:
    """The id of the raw row's quarantine row, if it has one."""
    return session.scalar(select(Quarantine.id).where(Quarantine.raw_id == raw_id))


def requarantine(session: Session, raw_id: int, stage: str, reason: str, now: datetime) -> None:
    """A requeued mail failed again: its row says why now, and stays open."""
    _conn(session).execute(
        update(Quarantine)
        .where(Quarantine.raw_id == raw_id)
        .values(stage=stage, reason=reason[:4000], created_at=now, status="open", outcome=None, resolved_at=None)
    )


def resolve_quarantine(session: Session, raw_id: int, status: str, outcome: str, now: datetime) -> None:
    """The quarantined mail was requeued (with this outcome) or discarded."""
    _conn(session).execute(
        update(Quarantine).where(Quarantine.raw_id == raw_id).values(status=status, outcome=outcome, resolved_at=now)
    )


# Built once (thread matching runs for every reply): the list of Message-IDs is an expanding parameter.
_TICKETS_OF_MESSAGE_IDS = select(Message.message_id, Message.ticket_id).where(
    Message.message_id.in_(bindparam("ids", expanding=True)), Message.ticket_id.is_not(None)
)


def ticket_for_message_ids(session: Session, ids: list[str]) -> TicketRef | None:
    """The ticket of a stored message (in or out) whose Message-ID is one of ``ids``; the id nearest
    the end of ``ids`` (the most recent in a References chain) wins. One query."""
    if not ids:
        return None
    found = dict(_conn(session).execute(_TICKETS_OF_MESSAGE_IDS, {"ids": list(set(ids))}).all())
    for mid in reversed(ids):
        if mid in found:
            return ticket_ref(session, ticket_id=found[mid])
    return None


def dispositions_for_uids(
    session: Session, account: str, folder: str, uidvalidity: int, uids: list[int]
) -> dict[int, str]:
    """What became of mails already committed, by UID (for moving leftovers after a crash)."""
    out: dict[int, str] = {}
    for i in range(0, len(uids), 500):
        chunk = uids[i : i + 500]
        rows = session.execute(
            select(RawMessage.uid, RawMessage.disposition).where(
                RawMessage.account == account,
                RawMessage.folder == folder,
                RawMessage.uidvalidity == uidvalidity,
                RawMessage.uid.in_(chunk),
            )
        )
        out.update({uid: disp for uid, disp in rows})
    return out


# ---------------------------------------------------------------- mailbox state


def mailbox_state(session: Session, account: str, folder: str) -> MailboxState | None:
    return session.get(MailboxState, (account, folder))


def set_uidvalidity(session: Session, account: str, folder: str, uidvalidity: int, now: datetime) -> int:
    """Record the folder's UIDVALIDITY; return the last committed UID under it (0 after a change)."""
    st = session.get(MailboxState, (account, folder), with_for_update=True)
    if st is None:
        session.add(MailboxState(account=account, folder=folder, uidvalidity=uidvalidity, last_uid=0, updated_at=now))
        return 0
    if st.uidvalidity != uidvalidity:
        st.uidvalidity = uidvalidity
        st.last_uid = 0
        st.updated_at = now
        return 0
    return st.last_uid


_MS = MailboxState.__table__
_ADVANCE_LAST_UID = (
    update(_MS)
    .where(
        _MS.c.account == bindparam("acc"),
        _MS.c.folder == bindparam("fld"),
        _MS.c.uidvalidity == bindparam("uv"),
        _MS.c.last_uid < bindparam("new_uid"),
    )
    .values(last_uid=bindparam("new_uid"), updated_at=bindparam("now"))
)


def advance_last_uid(session: Session, account: str, folder: str, uidvalidity: int, uid: int, now: datetime) -> None:
    _conn(session).execute(
        _ADVANCE_LAST_UID, {"acc": account, "fld": folder, "uv": uidvalidity, "new_uid": uid, "now": now}
    )


# ---------------------------------------------------------------- outbox


@dataclass(frozen=True)
class ClaimedMail:
    id: int
    ticket_id: int | None
    case_number: str | None
    message_id: str
    kind: str
    envelope_from: str
    envelope_to: list[str]
    raw: bytes
    attempts: int
    reclaimed: bool


def claim_outbox(session: Session, now: datetime, lease: timedelta, limit: int, skip_locked: bool) -> list[ClaimedMail]:
    """Claim due rows in id order: queued and due, or claimed/sending rows whose lease ran out (their
    sender died). ``reclaimed`` marks a row that died *in* its SMTP exchange: it may have arrived."""
    q = (
        select(Outbox)
        .where(
            or_(
                and_(Outbox.status == "queued", Outbox.next_attempt_at <= now),
                and_(Outbox.status.in_(("claimed", "sending")), Outbox.claimed_until < now),
            )
        )
        .order_by(Outbox.id)
        .limit(limit)
    )
    if skip_locked:
        q = q.with_for_update(skip_locked=True)
    rows = list(session.scalars(q))
    ticket_ids = {r.ticket_id for r in rows if r.ticket_id is not None}
    cases = (
        dict(session.execute(select(Ticket.id, Ticket.case_number).where(Ticket.id.in_(ticket_ids))).all())
        if ticket_ids
        else {}
    )
    claimed = []
    for r in rows:
        reclaimed = r.status == "sending"
        r.status = "claimed"
        r.claimed_until = now + lease
        claimed.append(
            ClaimedMail(
                id=r.id,
                ticket_id=r.ticket_id,
                case_number=cases.get(r.ticket_id),
                message_id=r.message_id,
                kind=r.kind,
                envelope_from=r.envelope_from,
                envelope_to=list(r.envelope_to),
                raw=r.raw,
                attempts=r.attempts,
                reclaimed=reclaimed,
            )
        )
    return claimed


def outbox_mark(
    session: Session,
    row_id: int,
    now: datetime,
    status: str,
    *,
    error: str | None = None,
    next_attempt_at: datetime | None = None,
) -> bool:
    """Record the outcome of one attempt; only a row still claimed ('sending') changes."""
    values: dict = {"status": status, "claimed_until": None, "attempts": Outbox.attempts + 1, "last_error": error}
    if status == "sent":
        values["sent_at"] = now
    if next_attempt_at is not None:
        values["next_attempt_at"] = next_attempt_at
    res = session.execute(update(Outbox).where(Outbox.id == row_id, Outbox.status == "sending").values(**values))
    return res.rowcount == 1


def outbox_mark_sending(session: Session, row_id: int) -> bool:
    """Right before the SMTP exchange of one claimed row: from here on its outcome is in doubt
    until :func:`outbox_mark` records it."""
    res = session.execute(
        update(Outbox).where(Outbox.id == row_id, Outbox.status == "claimed").values(status="sending")
    )
    return res.rowcount == 1


def outbox_release(session: Session, row_ids: list[int]) -> None:
    """Give back claimed rows that were not attempted (the SMTP server was away, a stop)."""
    if row_ids:
        session.execute(
            update(Outbox)
            .where(Outbox.id.in_(row_ids), Outbox.status == "claimed")
            .values(status="queued", claimed_until=None)
        )


def outbox_counts(session: Session) -> dict[str, int]:
    return dict(session.execute(select(Outbox.status, func.count()).group_by(Outbox.status)).all())


# ---------------------------------------------------------------- quarantine


def list_quarantine(session: Session, status: str = "open", limit: int = 100):
    return list(
        session.execute(
            select(Quarantine, RawMessage)
            .join(RawMessage, RawMessage.id == Quarantine.raw_id)
            .where(Quarantine.status == status)
            .order_by(Quarantine.id)
            .limit(limit)
        ).all()
    )


def list_noise(session: Session, limit: int = 100):
    """Auto-replies and bounces that answered nothing of ours (kept for the operator), newest first:
    (raw row, message row)."""
    return list(
        session.execute(
            select(RawMessage, Message)
            .join(Message, (Message.raw_id == RawMessage.id) & (Message.direction == "in"))
            .where(RawMessage.disposition == "noise")
            .order_by(RawMessage.id.desc())
            .limit(limit)
        ).all()
    )


def failing_addresses(session: Session, limit: int = 100):
    from mailbridge.store.models import AddressHealth

    return list(
        session.execute(select(AddressHealth).order_by(AddressHealth.last_failed_at.desc()).limit(limit)).scalars()
    )


def attachments_of(session: Session, message_id: int) -> list[tuple[int, str, str, int, str, str | None]]:
    """A message's attachment rows as (id, filename, content_type, size, sha256, content_id), in
    the order they were stored (the mail's order)."""
    t = AttachmentRow.__table__
    q = select(t.c.id, t.c.filename, t.c.content_type, t.c.size, t.c.sha256, t.c.content_id)
    return [tuple(r) for r in _conn(session).execute(q.where(t.c.message_id == message_id).order_by(t.c.id))]


@dataclass(frozen=True)
class StoredAttachment:
    """An attachment row with the queue of the case its message belongs to (for a download)."""

    id: int
    filename: str
    content_type: str
    size: int
    sha256: str
    queue: str


def attachment_for_download(session: Session, attachment_id: int) -> StoredAttachment | None:
    """The attachment ``attachment_id`` of a message on a case, or None (no such row, or no case)."""
    a, m, tk = AttachmentRow.__table__, Message.__table__, Ticket.__table__
    row = (
        _conn(session)
        .execute(
            select(a.c.id, a.c.filename, a.c.content_type, a.c.size, a.c.sha256, tk.c.queue)
            .join(m, m.c.id == a.c.message_id)
            .join(tk, tk.c.id == m.c.ticket_id)
            .where(a.c.id == attachment_id)
        )
        .first()
    )
    return StoredAttachment(*row) if row is not None else None
