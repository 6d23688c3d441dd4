"""What the reports read (``mailbridge/reports/``): the open cases with their clocks and last
activity, the history of events and mails, the cases of a period with their SLA columns, and what
the backlog and volume figures count.

Callers own the transaction. These functions know columns and indexes, not rules: what "met",
"at risk" or "backlog" means is decided in ``mailbridge/reports/``. Rows are SQLAlchemy ``Row``
tuples with attribute access by column name.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import and_, case, exists, func, or_, select
from sqlalchemy.engine import Row
from sqlalchemy.orm import Session

from mailbridge.store.models import Event, Message, Ticket, UtcDateTime

ACTIVE = ("new", "open", "pending")

# Inbound message kinds that are the customer's, and those that are an agent's work on the case.
CUSTOMER_KINDS = ("customer",)
AGENT_KINDS = ("agent", "note")


def _filters(queue: str | None, organisation: str | None, severity: str | None) -> list:
    out = []
    if queue:
        out.append(Ticket.queue == queue)
    if organisation:
        out.append(Ticket.organisation == organisation)
    if severity:
        out.append(Ticket.severity == severity)
    return out


OPEN_COLUMNS = (
    Ticket.id,
    Ticket.case_number,
    Ticket.queue,
    Ticket.status,
    Ticket.subject,
    Ticket.severity,
    Ticket.assignee,
    Ticket.organisation,
    Ticket.contract,
    Ticket.created_at,
    Ticket.first_response_at,
    Ticket.first_response_due,
    Ticket.update_due,
    Ticket.update_started_at,
    Ticket.resolution_due,
    Ticket.paused_at,
    Ticket.paused_seconds,
)


def open_cases(
    session: Session, queue: str | None = None, organisation: str | None = None, severity: str | None = None
) -> Sequence[Row]:
    """Every case still to be worked on (new, open, pending) with :data:`OPEN_COLUMNS`, oldest first
    (the report sorts them into working order)."""
    stmt = (
        select(*OPEN_COLUMNS)
        .where(Ticket.status.in_(ACTIVE), *_filters(queue, organisation, severity))
        .order_by(Ticket.created_at, Ticket.id)
    )
    return session.connection().execute(stmt).all()


def last_activity(
    session: Session, queue: str | None = None, organisation: str | None = None, severity: str | None = None
) -> dict[int, tuple[datetime | None, datetime | None]]:
    """{ticket id: (last customer mail, last agent mail)} of the open cases (the same filters as
    :func:`open_cases`)."""
    cust = func.max(case((Message.kind.in_(CUSTOMER_KINDS), Message.created_at)), type_=UtcDateTime)
    agent = func.max(case((Message.kind.in_(AGENT_KINDS), Message.created_at)), type_=UtcDateTime)
    stmt = (
        select(Message.ticket_id, cust, agent)
        .join(Ticket, Ticket.id == Message.ticket_id)
        .where(
            Ticket.status.in_(ACTIVE),
            Message.direction == "in",
            Message.kind.in_(CUSTOMER_KINDS + AGENT_KINDS),
            *_filters(queue, organisation, severity),
        )
        .group_by(Message.ticket_id)
    )
    return {tid: (c, a) for tid, c, a in session.connection().execute(stmt)}


def history_events(
    session: Session,
    *,
    case_number: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    queue: str | None = None,
    organisation: str | None = None,
) -> Sequence[Row]:
    """(created_at, id, case_number, queue, kind, detail) of the events of one case, or of every
    case in [start, end), in order."""
    stmt = select(Event.created_at, Event.id, Ticket.case_number, Ticket.queue, Event.kind, Event.detail).join(
        Ticket, Ticket.id == Event.ticket_id
    )
    if case_number:
        stmt = stmt.where(Ticket.case_number == case_number.upper())
    if start is not None:
        stmt = stmt.where(Event.created_at >= start)
    if end is not None:
        stmt = stmt.where(Event.created_at < end)
    stmt = stmt.where(*_filters(queue, organisation, None)).order_by(Event.created_at, Event.id)
    return session.connection().execute(stmt).all()


def history_messages(
    session: Session,
    *,
    case_number: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    queue: str | None = None,
    organisation: str | None = None,
) -> Sequence[Row]:
    """(created_at, id, case_number, direction, kind, sender_email, recipients, subject, message_id)
    of the mails of one case, or of every case in [start, end), in order."""
    stmt = select(
        Message.created_at,
        Message.id,
        Ticket.case_number,
        Message.direction,
        Message.kind,
        Message.sender_email,
        Message.recipients,
        Message.subject,
        Message.message_id,
    ).join(Ticket, Ticket.id == Message.ticket_id)
    if case_number:
        stmt = stmt.where(Ticket.case_number == case_number.upper())
    if start is not None:
        stmt = stmt.where(Message.created_at >= start)
    if end is not None:
        stmt = stmt.where(Message.created_at < end)
    stmt = stmt.where(*_filters(queue, organisation, None)).order_by(Message.created_at, Message.id)
    return session.connection().execute(stmt).all()


def case_exists(session: Session, case_number: str) -> bool:
    return session.connection().execute(select(exists().where(Ticket.case_number == case_number.upper()))).scalar_one()


SLA_COLUMNS = (
    Ticket.id,
    Ticket.queue,
    Ticket.severity,
    Ticket.organisation,
    Ticket.assignee,
    Ticket.created_at,
    Ticket.first_response_at,
    Ticket.first_response_due,
    Ticket.solved_at,
    Ticket.closed_at,
    Ticket.resolution_due,
    Ticket.paused_seconds,
)


def cases_created(
    session: Session,
    start: datetime,
    end: datetime,
    queue: str | None = None,
    organisation: str | None = None,
    severity: str | None = None,
) -> Sequence[Row]:
    """:data:`SLA_COLUMNS` of the cases created in [start, end) (the ``created_at`` index)."""
    stmt = select(*SLA_COLUMNS).where(
        Ticket.created_at >= start, Ticket.created_at < end, *_filters(queue, organisation, severity)
    )
    return session.connection().execute(stmt).all()


def backlog_cases(
    session: Session,
    start: datetime,
    end: datetime,
    queue: str | None = None,
    organisation: str | None = None,
    severity: str | None = None,
) -> Sequence[Row]:
    """(created_at, solved_at, closed_at, queue, severity, organisation, assignee) of every case
    that could be in the backlog at some instant of [start, end): created before ``end`` and not
    solved or closed before ``start``."""
    resolved = func.coalesce(Ticket.solved_at, Ticket.closed_at)
    stmt = select(
        Ticket.created_at,
        Ticket.solved_at,
        Ticket.closed_at,
        Ticket.queue,
        Ticket.severity,
        Ticket.organisation,
        Ticket.assignee,
    ).where(
        Ticket.created_at < end,
        or_(Ticket.status.in_(ACTIVE), resolved.is_(None), resolved >= start),
        *_filters(queue, organisation, severity),
    )
    return session.connection().execute(stmt).all()


def volume_cases(
    session: Session,
    start: datetime,
    end: datetime,
    queue: str | None = None,
    organisation: str | None = None,
    severity: str | None = None,
) -> Sequence[Row]:
    """(created_at, queue, linked, reopened) of the cases created in [start, end): ``linked`` when
    the case follows up a closed one, ``reopened`` when it has a ``reopened`` event."""
    reopened = exists().where(and_(Event.ticket_id == Ticket.id, Event.kind == "reopened"))
    stmt = select(
        Ticket.created_at,
        Ticket.queue,
        Ticket.linked_ticket_id.is_not(None).label("linked"),
        reopened.label("reopened"),
    ).where(Ticket.created_at >= start, Ticket.created_at < end, *_filters(queue, organisation, severity))
    return session.connection().execute(stmt).all()
