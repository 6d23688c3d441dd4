"""What the retention job reads and writes: its run rows (one ``daily:<date>`` run per day, claimed by
a unique key, so several instances do the work once) and the rows whose time has come, in id order,
claimed with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL (two runs at once never take the same row).

The rules (which periods, what goes) are in ``mailbridge/privacy/retention.py``; callers own the
transaction.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailbridge.store.models import (
    AttachmentRow,
    LegalHold,
    Message,
    Outbox,
    Quarantine,
    RawMessage,
    RetentionRun,
    Ticket,
)

_HELD = select(LegalHold.ticket_id)


def claim_run(session: Session, key: str, now: datetime, dry_run: bool) -> int | None:
    """Insert the run row ``key``; None when another instance (or an earlier run) has it."""
    try:
        with session.begin_nested():
            run = RetentionRun(run_key=key, started_at=now, dry_run=dry_run)
            session.add(run)
            session.flush()
    except IntegrityError:
        return None
    return run.id


def finish_run(session: Session, run_id: int, now: datetime, counts: dict[str, int], error: str | None) -> None:
    session.execute(
        update(RetentionRun).where(RetentionRun.id == run_id).values(finished_at=now, counts=counts, error=error)
    )


def runs(session: Session, limit: int = 10) -> list[RetentionRun]:
    return list(session.scalars(select(RetentionRun).order_by(RetentionRun.id.desc()).limit(limit)))


def _closed_before(cutoff: datetime):
    return (Ticket.status == "closed") & (Ticket.closed_at <= cutoff) & Ticket.id.not_in(_HELD)


def _claim(stmt, skip_locked: bool):
    return stmt.with_for_update(skip_locked=True) if skip_locked else stmt


def raws_due(session: Session, cutoff: datetime, after: int, limit: int, skip_locked: bool) -> list[int]:
    """Ids of raw mails not yet purged of the messages of cases closed before ``cutoff``."""
    of_closed = select(Message.raw_id).join(Ticket, Ticket.id == Message.ticket_id).where(_closed_before(cutoff))
    stmt = (
        select(RawMessage.id)
        .where(RawMessage.id > after, RawMessage.purged_at.is_(None), RawMessage.id.in_(of_closed))
        .order_by(RawMessage.id)
        .limit(limit)
    )
    return list(session.scalars(_claim(stmt, skip_locked)))


def attachments_due(session: Session, cutoff: datetime, after: int, limit: int, skip_locked: bool) -> list[int]:
    of_closed = select(Message.id).join(Ticket, Ticket.id == Message.ticket_id).where(_closed_before(cutoff))
    stmt = (
        select(AttachmentRow.id)
        .where(AttachmentRow.id > after, AttachmentRow.purged_at.is_(None), AttachmentRow.message_id.in_(of_closed))
        .order_by(AttachmentRow.id)
        .limit(limit)
    )
    return list(session.scalars(_claim(stmt, skip_locked)))


def cases_due(session: Session, cutoff: datetime, after: int, limit: int, skip_locked: bool) -> list[int]:
    """Ids of the cases closed before ``cutoff`` whose personal data is still there (not held)."""
    stmt = (
        select(Ticket.id)
        .where(Ticket.id > after, _closed_before(cutoff), Ticket.anonymised_at.is_(None))
        .order_by(Ticket.id)
        .limit(limit)
    )
    return list(session.scalars(_claim(stmt, skip_locked)))


def noise_due(session: Session, cutoff: datetime, after: int, limit: int, skip_locked: bool) -> list[int]:
    """Ids of messages of no case received before ``cutoff``: auto-replies, bounces, our own mail seen
    again, status requests, agents' ``#help`` and rejected command mails, and what we sent about no
    case (status lists, cheat sheets, sign-in mails)."""
    stmt = (
        select(Message.id)
        .where(Message.id > after, Message.ticket_id.is_(None), Message.created_at <= cutoff)
        .order_by(Message.id)
        .limit(limit)
    )
    return list(session.scalars(_claim(stmt, skip_locked)))


def quarantine_due(session: Session, cutoff: datetime, after: int, limit: int, skip_locked: bool) -> list[int]:
    stmt = (
        select(Quarantine.id)
        .where(Quarantine.id > after, Quarantine.created_at <= cutoff)
        .order_by(Quarantine.id)
        .limit(limit)
    )
    return list(session.scalars(_claim(stmt, skip_locked)))


def delete_messages(session: Session, ids: list[int]) -> tuple[list[int], list[str], int]:
    """Delete messages of no case and their attachment rows: (their raw ids, attachment digests, count)."""
    if not ids:
        return [], [], 0
    raw_ids = [r for r in session.scalars(select(Message.raw_id).where(Message.id.in_(ids))) if r is not None]
    digests = list(session.scalars(select(AttachmentRow.sha256).where(AttachmentRow.message_id.in_(ids))))
    conn = session.connection()
    conn.execute(delete(AttachmentRow).where(AttachmentRow.message_id.in_(ids)))
    n = conn.execute(delete(Message).where(Message.id.in_(ids))).rowcount
    return raw_ids, digests, n


def delete_quarantined(session: Session, ids: list[int]) -> tuple[list[int], int]:
    """Delete quarantine rows: (the raw ids no message uses, count)."""
    if not ids:
        return [], 0
    raw_ids = list(session.scalars(select(Quarantine.raw_id).where(Quarantine.id.in_(ids))))
    used = set(session.scalars(select(Message.raw_id).where(Message.raw_id.in_(raw_ids))))
    n = session.connection().execute(delete(Quarantine).where(Quarantine.id.in_(ids))).rowcount
    return [r for r in raw_ids if r not in used], n


def empty_sent_of_no_case(session: Session, cutoff: datetime, unsent: tuple[str, ...]) -> int:
    """Empty the bytes of the mails we sent about no case (oversize notices, digests, alerts) queued
    before ``cutoff`` and no longer waiting to go; how many."""
    return (
        session.connection()
        .execute(
            update(Outbox)
            .where(
                Outbox.ticket_id.is_(None),
                Outbox.created_at <= cutoff,
                Outbox.status.not_in(unsent),
                func.length(Outbox.raw) > 0,
            )
            .values(raw=b"")
        )
        .rowcount
    )
