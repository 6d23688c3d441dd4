"""The queries of ``mailbridge import`` (``mailbridge/importer.py``) beyond the pipeline's own: the
cases a source's mails made or joined and that are old enough to close, and closing them.

A source's mails are the raw rows with its identity (account ``import``, folder = the source's
absolute path); its progress is the mailbox state of that identity (``repositories.set_uidvalidity``
and ``advance_last_uid``, written by the pipeline in each mail's transaction).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select

from mailbridge.domain import TicketStatus
from mailbridge.lifecycle import status_times
from mailbridge.store import repositories as repo
from mailbridge.store.db import Session
from mailbridge.store.models import Message, RawMessage, Ticket


def quiet_cases(session: Session, account: str, folder: str, before: datetime) -> list[tuple[int, str, str]]:
    """(id, case number, status) of every case that is not closed, that a mail of the source
    ``account``/``folder`` made or joined, and whose last message (of any source) is older than
    ``before``."""
    of_source = (
        select(Message.ticket_id)
        .join(RawMessage, RawMessage.id == Message.raw_id)
        .where(RawMessage.account == account, RawMessage.folder == folder, Message.ticket_id.is_not(None))
        .distinct()
    )
    last = (
        select(Message.ticket_id, func.max(Message.created_at).label("last_at"))
        .where(Message.ticket_id.in_(of_source))
        .group_by(Message.ticket_id)
        .subquery()
    )
    rows = session.execute(
        select(Ticket.id, Ticket.case_number, Ticket.status)
        .join(last, last.c.ticket_id == Ticket.id)
        .where(last.c.last_at < before, Ticket.status != TicketStatus.CLOSED.value)
        .order_by(Ticket.id)
    )
    return [(r[0], r[1], r[2]) for r in rows]


def close_case(session: Session, ticket_id: int, old_status: str, now: datetime, reason: str) -> None:
    """Close one case now, with its history entry (the timestamps as every status change sets them;
    its ``updated_at`` stays the time of its last mail)."""
    repo.update_row(
        session,
        Ticket,
        ticket_id,
        {"status": TicketStatus.CLOSED.value, **status_times(TicketStatus.CLOSED, now)},
    )
    repo.add_event(session, ticket_id, "status_changed", now, old=old_status, new="closed", reason=reason)
