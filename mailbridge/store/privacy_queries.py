"""What data protection reads and writes: which rows hold a person's address, a case's personal data
and how it is replaced, legal holds, the audit log.

**Every text, JSON and binary column of every table is named here**, either in
:data:`PERSONAL_COLUMNS` (it may hold an address or a person's words: the erasure sweeps it) or in
:data:`NO_PERSONAL_DATA` (with the reason it cannot). ``tests/unit/test_privacy_columns.py`` fails for a
column in neither, so a new column cannot be forgotten by the erasure.

Callers own the transaction; files and IMAP are the caller's (``mailbridge/privacy``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import JSON, LargeBinary, String, Text, cast, delete, func, or_, select, update
from sqlalchemy.orm import Session

from mailbridge.store.models import (
    AddressHealth,
    AttachmentRow,
    AutoMail,
    Base,
    Event,
    LegalHold,
    Message,
    Outbox,
    Participant,
    PrivacyAudit,
    Quarantine,
    RawMessage,
    SigninRequest,
    SigninToken,
    Ticket,
)

# What replaces removed text, a removed subject, a removed file name.
REMOVED = "[removed]"
# The role of an erased person's participant rows (ticket_participants.role).
ERASED_ROLE = "erased"
# Outbox states whose mail has not gone out yet: erased or removed mail must not go out any more.
UNSENT = ("queued", "claimed", "sending")

# table → column → what it may hold. The erasure replaces the address in every one of them (the
# sweep); "text" columns are also emptied when a message's or a case's text is removed; "mail" holds
# mail bytes (rewritten by the caller with mailbridge/privacy/mailtext.py).
PERSONAL_COLUMNS: dict[str, dict[str, str]] = {
    "tickets": {
        "subject": "text",
        "requester_email": "address",
        "requester_name": "name",
        "assignee": "address",
        "reply_to": "address",
        "checklist": "text",  # the evidence a mail gave (a serial number, a phone number)
    },
    "ticket_participants": {"email": "address", "name": "name"},
    "messages": {
        "message_id": "address",  # some clients put the address into the Message-ID
        "in_reply_to": "address",
        "references": "address",
        "sender_email": "address",
        "sender_name": "name",
        "recipients": "address",
        "subject": "text",
        "body_text": "text",
        "body_new": "text",
        "routing": "address",  # the rule's evidence: the address it matched
        "thread_index": "address",  # base64 of a GUID and times; swept anyway, it is cheap
        "flags": "address",  # sentences for agents: "unknown third party x@y referenced this case"
        "defects": "address",  # the parser's words, may quote a header
    },
    "attachments": {"filename": "text"},
    "events": {"detail": "address"},
    "outbox": {"message_id": "address", "envelope_to": "address", "raw": "mail", "last_error": "address"},
    "address_health": {"email": "address", "last_reason": "address"},
    "auto_mails": {"recipient": "address"},
    "quarantine": {"message_id": "address", "sender": "address", "subject": "text", "reason": "text"},
    "account_health": {"last_error": "address"},  # a server's words
    "job_health": {"last_error": "address"},
    "alert_state": {"detail": "address"},
    "legal_holds": {"reason": "text", "held_by": "name"},
    "retention_runs": {"error": "address"},
    "privacy_audit": {"actor": "name", "detail": "address"},
    # The case tracker's (deleted by an erasure: privacy/erase.py Eraser._other_stores).
    "signin_tokens": {"address": "address"},
    "signin_requests": {"address": "address", "client": "address"},  # an IP address is personal data
}

NO_PERSONAL_DATA: dict[str, dict[str, str]] = {
    "case_sequences": {"name": "the case number format"},
    "tickets": {
        "case_number": "our number",
        "queue": "a configured queue",
        "status": "a lifecycle word",
        "language": "a language code",
        "severity": "a configured level",
        "organisation": "a configured customer organisation (a company)",
        "contract": "a configured contract",
    },
    "ticket_participants": {"role": "a role word"},
    "raw_messages": {
        "sha256": "a digest",
        "path": "derived from the digest",
        "account": "a configured account",
        "folder": "a configured folder or an import file's path",
        "disposition": "an outcome word",
        "mail_class": "a class word",
    },
    "messages": {
        "direction": "in/out",
        "language": "a language code",
        "kind": "a kind word",
        "mail_class": "a class word",
    },
    "attachments": {"content_type": "a MIME type", "sha256": "a digest", "content_id": "a MIME part id"},
    "events": {"kind": "an event word"},
    "outbox": {
        "kind": "a mail kind",
        "dedup_key": "ids and kinds",
        "envelope_from": "our own address",
        "status": "a state",
    },
    "address_health": {"state": "a state word", "last_status": "an RFC 3463 code"},
    "auto_mails": {"kind": "a mail kind"},
    "mailbox_state": {"account": "a configured account", "folder": "a configured folder"},
    "quarantine": {"stage": "a stage name", "status": "a state word", "outcome": "an outcome word"},
    "account_health": {"account": "a configured account", "mode": "idle/polling", "error_kind": "a fault word"},
    "job_health": {"job": "a job name"},
    "alert_state": {"condition": "a condition name"},
    "retention_runs": {"run_key": "daily:<date> / manual:<time>", "counts": "numbers per kind"},
    "privacy_audit": {"action": "an action word"},
    "signin_tokens": {"token_hash": "the SHA-256 of a random token"},
    "schedule_starts": {"name": "report:<name> / digest:<name> of the configuration"},
    "oauth_tokens": {
        "name": "a login's name of the configuration",
        "identity": "provider, flow and client of our own mailbox's app",
        "access_token": "our mailbox's credential (encrypted)",
        "refresh_token": "our mailbox's credential (encrypted)",
        "error_code": "a provider's error code",
        "last_error": "a provider's words about our own login",
        "lease_owner": "an instance's name",
    },
    "schedule_runs": {"name": "report:<name> / digest:<name> of the configuration", "outcome": "an outcome word"},
    "leases": {
        "name": "mailbox:<account>/<folder> of the configuration, leader, instance:<instance name>",
        "holder": "an instance name (host:pid:random or [cluster] instance)",
    },
}

_TEXTUAL = (String, Text, JSON, LargeBinary)


def textual_columns() -> list[tuple[str, str]]:
    """(table, column) of every column of the models that can hold text, JSON or bytes."""
    return [
        (t.name, c.name)
        for t in Base.metadata.sorted_tables
        for c in t.columns
        if isinstance(c.type, _TEXTUAL) or isinstance(getattr(c.type, "impl", None), _TEXTUAL)
    ]


# -- finding an address -----------------------------------------------------------------------------


def _like(address: str) -> list[str]:
    """LIKE patterns for the address as stored: plain, and as JSON writes it (non-ASCII escaped)."""
    forms = {address.lower(), json.dumps(address.lower())[1:-1]}
    esc = [f.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") for f in forms]
    return [f"%{e}%" for e in esc]


def _matches(col, address: str):
    as_text = func.lower(cast(col, Text))
    return or_(*(as_text.like(p, escape="\\") for p in _like(address)))


def replace_in(value, pattern: re.Pattern[str], by) -> object:
    """``value`` (a string, or JSON: lists, dicts, strings) with ``pattern`` replaced in every string."""
    if isinstance(value, str):
        return pattern.sub(by, value)
    if isinstance(value, list):
        return [replace_in(v, pattern, by) for v in value]
    if isinstance(value, dict):
        return {k: replace_in(v, pattern, by) for k, v in value.items()}
    return value


def address_pattern(addresses: Iterable[str]) -> re.Pattern[str]:
    return re.compile("|".join(re.escape(a) for a in sorted(addresses, key=len, reverse=True)), re.IGNORECASE)


def _of_tickets(table, ticket_ids) -> tuple | None:
    """(a condition: the row belongs to one of ``ticket_ids``, the nullable column it depends on or None);
    None when rows of ``table`` belong to no case. Index-friendly: no correlated subquery."""
    c, ids = table.c, list(ticket_ids)
    if table.name == "tickets":
        return c.id.in_(ids), None
    if table.name == "attachments":
        return c.message_id.in_(select(Message.id).where(Message.ticket_id.in_(ids))), None
    if table.name == "raw_messages":
        return c.id.in_(select(Message.raw_id).where(Message.ticket_id.in_(ids), Message.raw_id.is_not(None))), None
    col = c.get("ticket_id") if "ticket_id" in c else c.get("last_ticket_id")
    if col is None:
        return None
    return col.in_(ids), (col if col.nullable else None)


def sweep(
    session: Session, mapping: dict[str, str], *, skip_tickets: set[int] = frozenset(), only_ticket: int | None = None
) -> dict[str, int]:
    """Replace every address of ``mapping`` (any case) by its pseudonym in every column of
    :data:`PERSONAL_COLUMNS` except the mail bytes, leaving rows of the ``skip_tickets`` cases alone
    (``only_ticket``: only the rows of that case); rows changed per table."""
    pat = address_pattern(mapping)
    lowered = {k.lower(): v for k, v in mapping.items()}

    def by(m: re.Match[str]) -> str:
        return lowered[m.group(0).lower()]

    changed: dict[str, int] = {}
    conn = session.connection()
    for table in Base.metadata.sorted_tables:
        cols = [c for c, kind in PERSONAL_COLUMNS.get(table.name, {}).items() if kind != "mail"]
        if not cols:
            continue
        pk = list(table.primary_key.columns)
        scope = None
        if only_ticket is not None:
            owned = _of_tickets(table, [only_ticket])
            if owned is None:
                continue
            scope = owned[0]
        elif skip_tickets and (owned := _of_tickets(table, skip_tickets)) is not None:
            in_skipped, nullable = owned
            scope = ~in_skipped if nullable is None else or_(nullable.is_(None), ~in_skipped)
        # One statement per table: a case's rows (few) as they are, else the rows any column of which
        # names an address; the replacement is done here, one UPDATE per changed row.
        if only_ticket is not None:
            cond = scope
        else:
            cond = or_(*(_matches(table.c[c], a) for c in cols for a in mapping))
            if scope is not None:
                cond = cond & scope
        for row in conn.execute(select(*pk, *(table.c[c] for c in cols)).where(cond)).all():
            keys, values = row[: len(pk)], row[len(pk) :]
            new = {c: replace_in(v, pat, by) for c, v in zip(cols, values, strict=True) if v is not None}
            new = {c: v for c, v in new.items() if v != values[cols.index(c)]}
            if new:
                conn.execute(update(table).where(*(k == v for k, v in zip(pk, keys, strict=True))).values(new))
                changed[table.name] = changed.get(table.name, 0) + 1
    return changed


# -- a person's cases and rows ----------------------------------------------------------------------


@dataclass(frozen=True)
class CaseRef:
    id: int
    case_number: str
    own: bool  # the person opened it (requester or Reply-To)
    held: bool


def held_ticket_ids(session: Session) -> set[int]:
    return set(session.scalars(select(LegalHold.ticket_id)))


def person_cases(session: Session, address: str) -> list[CaseRef]:
    """The cases that hold ``address``: opened by it (requester or Reply-To), or naming it (participant,
    a message's sender or recipient, a mail we sent, the history)."""
    a = address.lower()
    own = set(
        session.scalars(
            select(Ticket.id).where(or_(func.lower(Ticket.requester_email) == a, func.lower(Ticket.reply_to) == a))
        )
    )
    other: set[int] = set()
    for stmt in (
        select(Participant.ticket_id).where(func.lower(Participant.email) == a),
        select(Message.ticket_id).where(
            Message.ticket_id.is_not(None),
            or_(func.lower(Message.sender_email) == a, _matches(Message.recipients, a), _matches(Message.body_text, a)),
        ),
        select(Outbox.ticket_id).where(Outbox.ticket_id.is_not(None), _matches(Outbox.envelope_to, a)),
        select(Event.ticket_id).where(_matches(Event.detail, a)),
        select(Ticket.id).where(_matches(Ticket.assignee, a)),
    ):
        other.update(session.scalars(stmt))
    held = held_ticket_ids(session)
    rows = session.execute(select(Ticket.id, Ticket.case_number).where(Ticket.id.in_(own | other)).order_by(Ticket.id))
    return [CaseRef(i, n, i in own, i in held) for i, n in rows]


def messages_from(session: Session, address: str, skip_tickets: set[int]) -> list[int]:
    """Ids of the messages ``address`` wrote (inbound, From), on any case or none, except ``skip_tickets``."""
    stmt = select(Message.id).where(func.lower(Message.sender_email) == address.lower())
    if skip_tickets:
        stmt = stmt.where(or_(Message.ticket_id.is_(None), Message.ticket_id.not_in(skip_tickets)))
    return list(session.scalars(stmt.order_by(Message.id)))


def case_message_ids(session: Session, ticket_id: int) -> list[int]:
    return list(session.scalars(select(Message.id).where(Message.ticket_id == ticket_id).order_by(Message.id)))


@dataclass
class Removed:
    """What removing text freed: raw rows (id, path) and attachment rows (id, sha256) now purged."""

    raws: list[tuple[int, str]]
    attachments: list[tuple[int, str]]
    messages: int = 0


def remove_message_text(session: Session, message_ids: list[int], now: datetime, *, names: bool = True) -> Removed:
    """Empty the text, subject (and with ``names`` the sender's name) of these messages; mark their raw
    mails and attachments purged (their files are the caller's, see :func:`attachment_files_unused`)."""
    out = Removed([], [])
    if not message_ids:
        return out
    values = {"body_text": "", "body_new": None, "subject": REMOVED, "text_removed_at": now}
    if names:
        values["sender_name"] = ""
    conn = session.connection()
    out.messages = conn.execute(
        update(Message).where(Message.id.in_(message_ids), Message.text_removed_at.is_(None)).values(values)
    ).rowcount
    raw_ids = set(
        session.scalars(select(Message.raw_id).where(Message.id.in_(message_ids), Message.raw_id.is_not(None)))
    )
    out.raws = purge_raws(session, raw_ids, now)
    out.attachments = purge_attachments(
        session, list(session.scalars(select(AttachmentRow.id).where(AttachmentRow.message_id.in_(message_ids)))), now
    )
    return out


def purge_raws(session: Session, raw_ids: Iterable[int], now: datetime) -> list[tuple[int, str]]:
    """Mark these raw mails purged; (id, path) of those that were not yet (their files may go)."""
    ids = list(raw_ids)
    if not ids:
        return []
    rows = session.execute(
        select(RawMessage.id, RawMessage.path).where(RawMessage.id.in_(ids), RawMessage.purged_at.is_(None))
    ).all()
    if rows:
        session.connection().execute(
            update(RawMessage).where(RawMessage.id.in_([r.id for r in rows])).values(purged_at=now)
        )
    return [(r.id, r.path) for r in rows]


def purge_attachments(session: Session, attachment_ids: list[int], now: datetime) -> list[tuple[int, str]]:
    if not attachment_ids:
        return []
    rows = session.execute(
        select(AttachmentRow.id, AttachmentRow.sha256).where(
            AttachmentRow.id.in_(attachment_ids), AttachmentRow.purged_at.is_(None)
        )
    ).all()
    if rows:
        session.connection().execute(
            update(AttachmentRow)
            .where(AttachmentRow.id.in_([r.id for r in rows]))
            .values(purged_at=now, filename=REMOVED)
        )
    return [(r.id, r.sha256) for r in rows]


def attachment_files_unused(session: Session, digests: Iterable[str]) -> set[str]:
    """Of these sha256 digests, those no attachment that is kept (not purged) has: their files may go.
    A file shared with another person's mail stays for that person."""
    ds = set(digests)
    if not ds:
        return set()
    kept = set(
        session.scalars(
            select(AttachmentRow.sha256).where(AttachmentRow.sha256.in_(ds), AttachmentRow.purged_at.is_(None))
        )
    )
    return ds - kept


# History fields that hold Message-IDs (events: ack_queued, information_given, notification_revoked).
_MESSAGE_ID_KEYS = frozenset({"message_id", "ids", "in_reply_to", "references"})


def case_addresses(session: Session, ticket_id: int, pattern: re.Pattern[str]) -> list[str]:
    """Every address (``pattern`` finds them in text) the case's rows hold, lower-cased, in the order
    found: the requester first, then the participants, the messages, the history, the mails sent."""
    t = session.get(Ticket, ticket_id)
    found: dict[str, None] = {}

    def scan(value) -> None:
        if isinstance(value, str):
            found.update((m.group(0).lower(), None) for m in pattern.finditer(value))
        elif isinstance(value, list | tuple):
            for v in value:
                scan(v)
        elif isinstance(value, dict):
            for k, v in value.items():
                if k not in _MESSAGE_ID_KEYS:  # a Message-ID looks like an address and is none
                    scan(v)

    if t is not None:
        scan([t.requester_email, t.reply_to, t.assignee, t.checklist])
    for row in session.execute(
        select(Participant.email).where(Participant.ticket_id == ticket_id).order_by(Participant.id)
    ):
        scan(row[0])
    for row in session.execute(
        select(Message.sender_email, Message.recipients, Message.routing, Message.body_text)
        .where(Message.ticket_id == ticket_id)
        .order_by(Message.id)
    ):
        scan(list(row))
    for row in session.execute(select(Event.detail).where(Event.ticket_id == ticket_id).order_by(Event.id)):
        scan(row[0])
    for row in session.execute(select(Outbox.envelope_to).where(Outbox.ticket_id == ticket_id).order_by(Outbox.id)):
        scan(row[0])
    return list(found)


def remove_case(session: Session, ticket_id: int, now: datetime) -> Removed:
    """A case's personal content: every message's text (and senders' names), raw mails, attachments,
    the mails we sent about it (bytes emptied; an unsent one fails), the subject, the requester's name,
    the checklist's evidence. Addresses are the caller's (:func:`map_case_addresses`). The skeleton stays:
    number, queue, status, dates, severity, organisation, contract, the SLA columns, the events."""
    removed = remove_message_text(session, case_message_ids(session, ticket_id), now)
    conn = session.connection()
    conn.execute(
        update(Outbox)
        .where(Outbox.ticket_id == ticket_id, Outbox.status.in_(UNSENT))
        .values(status="failed", last_error="personal data removed before sending")
    )
    conn.execute(update(Outbox).where(Outbox.ticket_id == ticket_id).values(raw=b""))
    t = session.get(Ticket, ticket_id)
    if t is not None:
        checklist = t.checklist
        if checklist:
            checklist = {k: {**v, "evidence": None} if isinstance(v, dict) else v for k, v in checklist.items()}
        conn.execute(
            update(Ticket)
            .where(Ticket.id == ticket_id)
            .values(subject=REMOVED, requester_name="", checklist=checklist, anonymised_at=now)
        )
    conn.execute(update(Participant).where(Participant.ticket_id == ticket_id).values(name=""))
    return removed


def map_case_addresses(session: Session, ticket_id: int, mapping: dict[str, str]) -> int:
    """Replace the addresses of ``mapping`` in every row of one case; rows changed."""
    return sum(sweep(session, mapping, only_ticket=ticket_id).values()) if mapping else 0


# -- the mails we sent, raw mails to rewrite ---------------------------------------------------------


def outbox_rows_for(session: Session, ticket_ids: set[int], address: str) -> list[tuple[int, bytes, list, str]]:
    """(id, raw, envelope_to, status) of the mails we sent or will send that may name ``address``: those of
    these cases, those to it, and those of no case (digests, alerts)."""
    cond = or_(Outbox.ticket_id.is_(None), _matches(Outbox.envelope_to, address))
    if ticket_ids:
        cond = or_(cond, Outbox.ticket_id.in_(ticket_ids))
    rows = session.execute(select(Outbox.id, Outbox.raw, Outbox.envelope_to, Outbox.status).where(cond))
    return [(r.id, r.raw, list(r.envelope_to or []), r.status) for r in rows]


def set_outbox(session: Session, outbox_id: int, **values) -> None:
    session.connection().execute(update(Outbox).where(Outbox.id == outbox_id).values(**values))


def raws_to_check(session: Session, address: str, skip_tickets: set[int]) -> list[tuple[int, str]]:
    """(id, path) of the raw mails that are kept and may name ``address``: those of messages whose
    columns name it, and every raw mail that is no message's (quarantined, duplicates), whose
    columns say too little."""
    named = (
        select(Message.raw_id)
        .where(
            Message.raw_id.is_not(None),
            or_(
                func.lower(Message.sender_email) == address.lower(),
                _matches(Message.recipients, address),
                _matches(Message.body_text, address),
                _matches(Message.references, address),
            ),
        )
        .scalar_subquery()
    )
    no_message = ~select(Message.id).where(Message.raw_id == RawMessage.id).exists()
    stmt = select(RawMessage.id, RawMessage.path).where(
        RawMessage.purged_at.is_(None), or_(RawMessage.id.in_(named), no_message)
    )
    if skip_tickets:
        in_skipped, _ = _of_tickets(RawMessage.__table__, skip_tickets)
        stmt = stmt.where(~in_skipped)
    return [(r.id, r.path) for r in session.execute(stmt)]


def replace_raw(session: Session, raw_id: int, path: str, size: int) -> str | None:
    """Point a raw row at rewritten bytes (``path`` in the raw store); its sha256 stays that of the mail
    as received, so the same mail fetched again is still a duplicate. The old path (its file may go
    when no other row points at it, :func:`raw_path_used`)."""
    old = session.scalar(select(RawMessage.path).where(RawMessage.id == raw_id))
    session.connection().execute(update(RawMessage).where(RawMessage.id == raw_id).values(path=path, size=size))
    return old


def raw_path_used(session: Session, path: str) -> bool:
    """Whether a raw row that is kept points at ``path``."""
    stmt = select(RawMessage.id).where(RawMessage.path == path, RawMessage.purged_at.is_(None)).limit(1)
    return session.scalar(stmt) is not None


def message_id_values(session: Session, message_ids: list[int]) -> set[str]:
    """The Message-ID header values (as stored) of these messages."""
    if not message_ids:
        return set()
    return {m for m in session.scalars(select(Message.message_id).where(Message.id.in_(message_ids))) if m}


def quarantine_message_ids(session: Session, address: str) -> set[str]:
    stmt = select(Quarantine.message_id).where(func.lower(Quarantine.sender) == address.lower())
    return {m for m in session.scalars(stmt) if m}


def quarantine_from(session: Session, address: str) -> list[tuple[int, int]]:
    """(quarantine id, raw id) of the quarantined mails ``address`` sent."""
    return [
        (r.id, r.raw_id)
        for r in session.execute(
            select(Quarantine.id, Quarantine.raw_id).where(func.lower(Quarantine.sender) == address.lower())
        )
    ]


def raw_used_by_message(session: Session, raw_id: int) -> bool:
    return session.scalar(select(Message.id).where(Message.raw_id == raw_id).limit(1)) is not None


def delete_quarantine(session: Session, ids: list[int]) -> int:
    if not ids:
        return 0
    return session.connection().execute(delete(Quarantine).where(Quarantine.id.in_(ids))).rowcount


def suppression_rows(session: Session, address: str) -> tuple[int, int]:
    a = address.lower()
    health = session.scalar(select(func.count()).where(func.lower(AddressHealth.email) == a)) or 0
    auto = session.scalar(select(func.count()).where(func.lower(AutoMail.recipient) == a)) or 0
    return health, auto


def retire_participant(session: Session, address: str, skip_tickets: set[int]) -> int:
    """The address's participant rows take the role ``erased``: no relay copies it any more (the sweep
    replaces the address itself)."""
    # The same address written in two cases of letters is two rows of one case; as one pseudonym they
    # would collide (uq_ticket_participants_email): the first stays.
    seen, extra = set(), []
    for pid, tid in session.execute(
        select(Participant.id, Participant.ticket_id)
        .where(func.lower(Participant.email) == address.lower())
        .order_by(Participant.id)
    ):
        if tid in skip_tickets:
            continue
        if tid in seen:
            extra.append(pid)
        seen.add(tid)
    if extra:
        session.connection().execute(delete(Participant).where(Participant.id.in_(extra)))
    stmt = update(Participant).where(func.lower(Participant.email) == address.lower())
    if skip_tickets:
        stmt = stmt.where(Participant.ticket_id.not_in(skip_tickets))
    return session.connection().execute(stmt.values(role=ERASED_ROLE, name="")).rowcount


def delete_suppression(session: Session, address: str) -> tuple[int, int]:
    """Delete the address's health row (a bounce, a suppression) and its automatic-mail counts."""
    a = address.lower()
    conn = session.connection()
    health = conn.execute(delete(AddressHealth).where(func.lower(AddressHealth.email) == a)).rowcount
    auto = conn.execute(delete(AutoMail).where(func.lower(AutoMail.recipient) == a)).rowcount
    return health, auto


def suppression_of(session: Session, address: str) -> tuple[list[dict], list[dict]]:
    """For an export: the address's health rows and automatic-mail counts, as dicts."""
    a = address.lower()
    health = [
        {c.name: getattr(r, c.name) for c in AddressHealth.__table__.columns}
        for r in session.scalars(select(AddressHealth).where(func.lower(AddressHealth.email) == a))
    ]
    auto = [
        {"kind": r.kind, "created_at": r.created_at, "ticket_id": r.ticket_id}
        for r in session.scalars(select(AutoMail).where(func.lower(AutoMail.recipient) == a).order_by(AutoMail.id))
    ]
    return health, auto


def quarantined_of(session: Session, address: str) -> list[Quarantine]:
    return list(
        session.scalars(
            select(Quarantine).where(func.lower(Quarantine.sender) == address.lower()).order_by(Quarantine.id)
        )
    )


def noise_of(session: Session, address: str) -> list[Message]:
    return list(
        session.scalars(
            select(Message)
            .where(Message.ticket_id.is_(None), func.lower(Message.sender_email) == address.lower())
            .order_by(Message.id)
        )
    )


# -- legal holds, the audit log ---------------------------------------------------------------------


def ticket_id_of(session: Session, case_number: str) -> int | None:
    return session.scalar(select(Ticket.id).where(func.upper(Ticket.case_number) == case_number.upper()))


def hold(session: Session, ticket_id: int, reason: str, by: str, now: datetime) -> bool:
    """Place a hold; False when the case is held already."""
    if session.get(LegalHold, ticket_id) is not None:
        return False
    session.add(LegalHold(ticket_id=ticket_id, reason=reason, held_by=by, held_at=now))
    session.flush()
    return True


def release(session: Session, ticket_id: int) -> bool:
    return session.connection().execute(delete(LegalHold).where(LegalHold.ticket_id == ticket_id)).rowcount > 0


def holds(session: Session) -> list[tuple[str, str, str, datetime]]:
    """(case number, reason, by, since) of every held case."""
    rows = session.execute(
        select(Ticket.case_number, LegalHold.reason, LegalHold.held_by, LegalHold.held_at)
        .join(Ticket, Ticket.id == LegalHold.ticket_id)
        .order_by(Ticket.case_number)
    )
    return [tuple(r) for r in rows]


def audit(session: Session, action: str, actor: str, now: datetime, **detail) -> None:
    session.add(PrivacyAudit(action=action, actor=actor, created_at=now, detail=detail))


def add_case_event(session: Session, ticket_id: int, kind: str, now: datetime, **detail) -> None:
    session.add(Event(ticket_id=ticket_id, kind=kind, detail=detail, created_at=now))


def tickets_for_export(session: Session, ids: list[int]) -> list[Ticket]:
    """The cases with their messages, attachments, events and participants loaded (no lazy loading)."""
    from sqlalchemy.orm import selectinload

    return list(
        session.scalars(
            select(Ticket)
            .where(Ticket.id.in_(ids))
            .options(
                selectinload(Ticket.messages).selectinload(Message.attachments),
                selectinload(Ticket.messages).selectinload(Message.raw),
                selectinload(Ticket.messages).selectinload(Message.outbox),
                selectinload(Ticket.events),
                selectinload(Ticket.participants),
            )
            .order_by(Ticket.id)
        )
    )


def forget_signins(session: Session, address: str) -> int:
    """Delete the case tracker's sign-in links and sign-in requests of ``address``; how many rows."""
    n = 0
    for model in (SigninToken, SigninRequest):
        n += session.execute(delete(model).where(func.lower(model.address) == address)).rowcount or 0
    return n
