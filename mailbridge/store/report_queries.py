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

from sqlalchemy import Float, case, exists, func, literal_column, or_, select
from sqlalchemy.engine import Row
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.functions import FunctionElement

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


class epoch(FunctionElement):
    """A time column as POSIX seconds (a float) computed by the database: 100,000 rows come back as
    numbers, without a datetime object per cell."""

    type = Float()
    inherit_cache = True


@compiles(epoch, "sqlite")
def _epoch_sqlite(element, compiler, **kw):
    # Stored as UTC text "YYYY-MM-DD HH:MM:SS.ffffff"; julianday 2440587.5 is 1970-01-01.
    return f"((julianday({compiler.process(element.clauses, **kw)}) - 2440587.5) * 86400.0)"


@compiles(epoch, "postgresql")
def _epoch_postgresql(element, compiler, **kw):
    return f"CAST(extract(epoch FROM {compiler.process(element.clauses, **kw)}) AS DOUBLE PRECISION)"


def _met(done, due, now: datetime):
    """The SLA rule of one clock of a case, in SQL: 1 met (done at or before due), 0 missed (done
    later, or not done and due passed), NULL neither (no due time, or not yet due)."""
    return case(
        (due.is_(None), None),
        (done.is_not(None), case((done <= due, 1), else_=0)),
        (due <= now, 0),
        else_=None,
    )


def sla_rows(
    session: Session,
    start: datetime,
    end: datetime,
    now: datetime,
    by: str | None,
    queue: str | None = None,
    organisation: str | None = None,
    severity: str | None = None,
) -> Sequence[Row]:
    """Per case created in [start, end): (queue, organisation, grp, created, first_response,
    resolved — POSIX seconds —, fr_met, res_met — 1/0/NULL by :func:`_met` at ``now`` —,
    paused_seconds). The resolution is ``solved_at``, else ``closed_at``."""
    resolved = func.coalesce(Ticket.solved_at, Ticket.closed_at)
    grp = GROUP_COLUMNS[by] if by else literal_column("''")
    stmt = select(
        Ticket.queue,
        Ticket.organisation,
        grp.label("grp"),
        epoch(Ticket.created_at).label("created"),
        epoch(Ticket.first_response_at).label("first_response"),
        epoch(resolved).label("resolved"),
        _met(Ticket.first_response_at, Ticket.first_response_due, now).label("fr_met"),
        _met(resolved, Ticket.resolution_due, now).label("res_met"),
        Ticket.paused_seconds,
    ).where(Ticket.created_at >= start, Ticket.created_at < end, *_filters(queue, organisation, severity))
    return session.connection().execute(stmt).all()


GROUP_COLUMNS = {
    "queue": Ticket.queue,
    "severity": Ticket.severity,
    "organisation": Ticket.organisation,
    "agent": Ticket.assignee,
}


def _bucket(col, ends: list[datetime]):
    """0 for ``col`` before ends[0], i for ends[i-1] <= col < ends[i]."""
    return case(*((col < e, i) for i, e in enumerate(ends)), else_=len(ends))


def backlog_counts(
    session: Session,
    ends: list[datetime],
    by: str | None,
    queue: str | None = None,
    organisation: str | None = None,
    severity: str | None = None,
) -> tuple[list[tuple], list[tuple]]:
    """(group, bucket, cases created) and (group, bucket, cases solved or closed) of every case
    created before ``ends[-1]``, by bucket of ``ends`` (:func:`_bucket`): two GROUP BYs, whatever
    the number of cases. ``by``: the group's column (queue, severity, organisation, agent) or None."""
    grp = GROUP_COLUMNS[by] if by else literal_column("''")
    # Grouped by the output columns' names: PostgreSQL refuses a constant in GROUP BY.
    keys = (literal_column("g"), literal_column("b")) if by else (literal_column("b"),)
    resolved = func.coalesce(Ticket.solved_at, Ticket.closed_at)
    where = (Ticket.created_at < ends[-1], *_filters(queue, organisation, severity))
    made_b = _bucket(Ticket.created_at, ends).label("b")
    made = select(grp.label("g"), made_b, func.count()).where(*where).group_by(*keys)
    done_b = _bucket(resolved, ends).label("b")
    done = select(grp.label("g"), done_b, func.count()).where(*where, resolved < ends[-1]).group_by(*keys)
    conn = session.connection()
    return [tuple(r) for r in conn.execute(made)], [tuple(r) for r in conn.execute(done)]


def open_at(
    session: Session,
    at: datetime,
    queue: str | None = None,
    organisation: str | None = None,
    severity: str | None = None,
) -> list[datetime]:
    """The creation times of the cases neither solved nor closed at ``at`` (created before it)."""
    resolved = func.coalesce(Ticket.solved_at, Ticket.closed_at)
    stmt = select(Ticket.created_at).where(
        Ticket.created_at < at, or_(resolved.is_(None), resolved >= at), *_filters(queue, organisation, severity)
    )
    return list(session.connection().execute(stmt).scalars().all())


def volume_cases(
    session: Session,
    start: datetime,
    end: datetime,
    queue: str | None = None,
    organisation: str | None = None,
    severity: str | None = None,
) -> tuple[Sequence[Row], set[int]]:
    """(id, created_at, queue, linked) of the cases created in [start, end) — ``linked`` when the case
    follows up a closed one — and the ids of those of them with a ``reopened`` event (the
    ``ix_events_kind_ticket`` index)."""
    where = (Ticket.created_at >= start, Ticket.created_at < end, *_filters(queue, organisation, severity))
    stmt = select(Ticket.id, Ticket.created_at, Ticket.queue, Ticket.linked_ticket_id.is_not(None).label("linked"))
    conn = session.connection()
    rows = conn.execute(stmt.where(*where)).all()
    reopened = (
        select(Event.ticket_id).join(Ticket, Ticket.id == Event.ticket_id).where(Event.kind == "reopened", *where)
    )
    return rows, set(conn.execute(reopened.distinct()).scalars())
