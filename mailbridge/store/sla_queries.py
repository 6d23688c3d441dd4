"""What the SLA jobs read and write: the escalation job's clocks and due cases, the recompute's batches
of active cases and their pause history, the manager digest's lists and counts.

Callers own the transaction (nothing here commits). The rules (which stage is due, what a deadline
is) stay in ``mailbridge/sla/``; these functions only know columns and indexes. Rows are returned as
SQLAlchemy ``Row`` tuples (attribute access by column name), the way the jobs used them before the
queries moved here: no ORM objects, no lazy loading.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, exists, func, select, update
from sqlalchemy.engine import Row
from sqlalchemy.orm import Session

from mailbridge.store.models import Event, Outbox, Ticket
from mailbridge.store.repositories import TICKET_REF_COLS

# -- the escalation job --------------------------------------------------------------------------

# A TicketRef's columns, then what the clocks need besides (sla.escalation splits a row in two).
CLOCK_COLUMNS = (
    *TICKET_REF_COLS,
    Ticket.first_response_due,
    Ticket.update_due,
    Ticket.update_started_at,  # the start of the follow-up period (ClockFacts.last_answer_at)
    Ticket.resolution_due,
    Ticket.paused_at,
)


# Built once: the pipeline reads a case's clocks for every mail on a case (``TrackClocks``), and
# building the 23-column select per call costs more than running it.
_CLOCK_ROW = select(*CLOCK_COLUMNS).where(Ticket.id == bindparam("tid"))
_CLOCK_ROW_LOCKED = _CLOCK_ROW.with_for_update()


def clock_row(session: Session, ticket_id: int, *, lock: bool = False) -> Row | None:
    """The case's :data:`CLOCK_COLUMNS`; ``lock``: hold its row until the transaction ends."""
    return session.connection().execute(_CLOCK_ROW_LOCKED if lock else _CLOCK_ROW, {"tid": ticket_id}).first()


def due_clock_rows(session: Session, now: datetime, limit: int, *, skip_locked: bool = False) -> Sequence[Row]:
    """The :data:`CLOCK_COLUMNS` of the cases whose next escalation time has come, oldest first (the
    ``next_escalation_at`` index); ``skip_locked``: claim them, leaving cases another instance holds
    (PostgreSQL ``FOR UPDATE SKIP LOCKED``)."""
    stmt = (
        select(*CLOCK_COLUMNS)
        .where(Ticket.next_escalation_at <= now)
        .order_by(Ticket.next_escalation_at, Ticket.id)
        .limit(limit)
    )
    if skip_locked:
        stmt = stmt.with_for_update(skip_locked=True)
    return session.connection().execute(stmt).all()


def set_next_escalation(session: Session, ticket_id: int, at: datetime | None) -> None:
    session.connection().execute(update(Ticket).where(Ticket.id == ticket_id).values(next_escalation_at=at))


# Built once: executed with a list of parameter dicts (one executemany per batch).
_SET_NEXT_ESCALATIONS = (
    update(Ticket).where(Ticket.id == bindparam("_id")).values(next_escalation_at=bindparam("_next"))
)


def set_next_escalations(session: Session, next_at: list[tuple[int, datetime | None]]) -> None:
    """:func:`set_next_escalation` for many cases in one executemany (the job's batches)."""
    if next_at:
        session.connection().execute(_SET_NEXT_ESCALATIONS, [{"_id": i, "_next": at} for i, at in next_at])


def outbox_key_exists(session: Session, dedup_key: str) -> bool:
    """Whether a mail with this key was queued (or sent) already."""
    return bool(session.connection().execute(select(exists().where(Outbox.dedup_key == dedup_key))).scalar())


# -- sla recompute -------------------------------------------------------------------------------

# What the recompute needs of a case to compute its deadlines again and compare them.
RECOMPUTE_COLUMNS = (
    Ticket.id,
    Ticket.case_number,
    Ticket.queue,
    Ticket.severity,
    Ticket.reply_to,
    Ticket.requester_email,
    Ticket.created_at,
    Ticket.first_response_at,
    Ticket.update_started_at,  # the start of the follow-up period (ClockFacts.last_answer_at)
    Ticket.paused_at,
    Ticket.paused_seconds,
    Ticket.organisation,
    Ticket.contract,
    Ticket.first_response_due,
    Ticket.resolution_due,
    Ticket.update_due,
)


def cases_after(
    session: Session, after_id: int, limit: int, *, except_status: Sequence[str], lock: bool
) -> Sequence[Row]:
    """The next ``limit`` cases with an id above ``after_id`` whose status is not one of
    ``except_status``, by id, as :data:`RECOMPUTE_COLUMNS`; ``lock``: hold their rows (the pipeline
    locks a case's row while a mail changes it, on PostgreSQL: neither overwrites the other)."""
    stmt = (
        select(*RECOMPUTE_COLUMNS)
        .where(Ticket.status.not_in(except_status), Ticket.id > after_id)
        .order_by(Ticket.id)
        .limit(limit)
    )
    if lock:
        stmt = stmt.with_for_update()
    return session.connection().execute(stmt).all()


def events_by_ticket(
    session: Session, ticket_ids: list[int], kinds: Sequence[str]
) -> dict[int, list[tuple[str, dict, datetime]]]:
    """(kind, detail, created_at) of the tickets' events of ``kinds``, oldest first, per ticket (every
    ticket of ``ticket_ids`` has an entry); one statement."""
    history: dict[int, list[tuple[str, dict, datetime]]] = {tid: [] for tid in ticket_ids}
    for tid, kind, detail, at in session.connection().execute(
        select(Event.ticket_id, Event.kind, Event.detail, Event.created_at)
        .where(Event.ticket_id.in_(list(history)), Event.kind.in_(kinds))
        .order_by(Event.id)
    ):
        history[tid].append((kind, detail, at))
    return history


# -- manager digests -----------------------------------------------------------------------------

ACTIVE = ("new", "open", "pending")
# (case number, subject, organisation, severity, status, created) of a digest line.
_LINE_COLUMNS = (
    Ticket.case_number,
    Ticket.subject,
    Ticket.organisation,
    Ticket.severity,
    Ticket.status,
    Ticket.created_at,
)


_RUNNING = and_(Ticket.status.in_(ACTIVE), Ticket.paused_at.is_(None))
# Running clocks as SQL: clock name (a ``sla.clock.ClockName`` value) → (due column, condition).
# Paused cases are not counted.
_RUNNING_CLOCKS: dict[str, tuple[Any, Any]] = {
    "first_response": (Ticket.first_response_due, and_(_RUNNING, Ticket.first_response_at.is_(None))),
    "update": (Ticket.update_due, and_(_RUNNING, Ticket.status.in_(("new", "open")))),
    "resolution": (Ticket.resolution_due, _RUNNING),
}


def running_clock_due(session: Session, queue: str, clock: str, until: datetime) -> Sequence[Row]:
    """The queue's cases whose ``clock`` (a ``ClockName`` value) runs and is due by ``until``, soonest
    first: (case number, subject, organisation, severity, status, created, due)."""
    due_col, cond = _RUNNING_CLOCKS[clock]
    return (
        session.connection()
        .execute(
            select(*_LINE_COLUMNS, due_col)
            .where(Ticket.queue == queue, cond, due_col.is_not(None), due_col <= until)
            .order_by(due_col)
        )
        .all()
    )


def _active(queue: str):
    return and_(Ticket.queue == queue, Ticket.status.in_(ACTIVE))


def active_count(session: Session, queue: str) -> int:
    return session.connection().execute(select(func.count()).where(_active(queue))).scalar_one()


def active_by_severity(session: Session, queue: str) -> list[tuple[str | None, int]]:
    rows = session.connection().execute(
        select(Ticket.severity, func.count()).where(_active(queue)).group_by(Ticket.severity)
    )
    return [(k, n) for k, n in rows]


def active_by_organisation(session: Session, queue: str) -> list[tuple[str | None, int]]:
    rows = session.connection().execute(
        select(Ticket.organisation, func.count()).where(_active(queue)).group_by(Ticket.organisation)
    )
    return [(o, n) for o, n in rows]


def oldest_active(session: Session, queue: str, limit: int) -> Sequence[Row]:
    """The queue's ``limit`` oldest active cases: (case number, subject, organisation, severity,
    status, created)."""
    return (
        session.connection()
        .execute(select(*_LINE_COLUMNS).where(_active(queue)).order_by(Ticket.created_at, Ticket.id).limit(limit))
        .all()
    )
