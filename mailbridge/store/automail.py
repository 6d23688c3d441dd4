"""What the automatic-mail guard (``outbound/guard.py``) reads and writes: the health of the addresses
our mail bounced from (``address_health``) and the automatic mails counted per recipient
(``auto_mails``). Callers own the transaction; the rules (how long to suppress, which limits) stay in
the guard.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from mailbridge.store.models import AddressHealth, AutoMail, Ticket
from mailbridge.store.repositories import insert_rows

# address_health.state: a bounce was recorded and nothing lifted it since; "lifted": an operator
# ended its suppression by hand (``mailbridge suppressions lift``). A new bounce makes it failing again.
FAILING = "failing"
LIFTED = "lifted"


@dataclass(frozen=True)
class Suppression:
    """An address automatic mail must not go to until ``until`` (it hard-bounced)."""

    address: str
    status: str | None
    since: datetime
    until: datetime


# Built once, Core columns (no ORM object is loaded): the guard asks both for every automatic mail.
_SUPPRESSION = select(AddressHealth.last_status, AddressHealth.last_failed_at, AddressHealth.suppressed_until).where(
    AddressHealth.email == bindparam("address"), AddressHealth.suppressed_until > bindparam("now")
)
_AUTO_MAILS_SINCE = select(AutoMail.created_at, AutoMail.ticket_id).where(
    AutoMail.recipient == bindparam("recipient"), AutoMail.created_at > bindparam("since")
)


def suppression(session: Session, address: str, now: datetime) -> Suppression | None:
    """Why automatic mail to ``address`` is suppressed at ``now``; None: it is not."""
    row = session.connection().execute(_SUPPRESSION, {"address": address, "now": now}).first()
    if row is None:
        return None
    return Suppression(address, row.last_status, row.last_failed_at, row.suppressed_until)


@dataclass(frozen=True)
class Health:
    """One address our mail bounced from, as the operator sees it; ``last_case`` is the case number
    of the mail that bounced last (None: it belonged to no case)."""

    address: str
    state: str
    permanent: bool
    bounces: int
    last_status: str | None
    last_reason: str | None
    since: datetime
    last_failed_at: datetime
    suppressed_until: datetime | None
    last_ticket_id: int | None
    last_case: str | None

    def suppressed(self, now: datetime) -> bool:
        return self.suppressed_until is not None and self.suppressed_until > now


def _health(row: AddressHealth, case: str | None) -> Health:
    return Health(
        row.email,
        row.state,
        row.permanent,
        row.bounces,
        row.last_status,
        row.last_reason,
        row.first_failed_at,
        row.last_failed_at,
        row.suppressed_until,
        row.last_ticket_id,
        case,
    )


def failing(session: Session) -> list[Health]:
    """Every address still failing (suppressed or not; not the lifted ones), the latest bounce first."""
    stmt = (
        select(AddressHealth, Ticket.case_number)
        .outerjoin(Ticket, Ticket.id == AddressHealth.last_ticket_id)
        .where(AddressHealth.state == FAILING)
        .order_by(AddressHealth.last_failed_at.desc(), AddressHealth.email)
    )
    return [_health(row, case) for row, case in session.execute(stmt).all()]


def health(session: Session, address: str, *, lock: bool = False) -> Health | None:
    """The health of ``address`` (None: our mail never bounced from it)."""
    row = session.get(AddressHealth, address, with_for_update=lock)
    if row is None:
        return None
    case = session.get(Ticket, row.last_ticket_id).case_number if row.last_ticket_id is not None else None
    return _health(row, case)


def lift(session: Session, address: str, now: datetime) -> None:
    """End the suppression of ``address`` at ``now``; the row and its counts stay as history."""
    row = session.get(AddressHealth, address, with_for_update=True)
    assert row is not None
    row.state = LIFTED
    row.suppressed_until = now
    session.flush()


def auto_mails_since(session: Session, recipient: str, since: datetime) -> list[tuple[datetime, int | None]]:
    """(created_at, ticket_id) of the automatic mails to ``recipient`` after ``since``."""
    rows = session.connection().execute(_AUTO_MAILS_SINCE, {"recipient": recipient, "since": since})
    return [(at, tid) for at, tid in rows]


def add_auto_mail(session: Session, recipient: str, ticket_id: int | None, kind: str, now: datetime) -> None:
    # No id wanted: a plain INSERT (no RETURNING).
    insert_rows(session, AutoMail, [{"recipient": recipient, "ticket_id": ticket_id, "kind": kind, "created_at": now}])


def mark_failing(
    session: Session,
    address: str,
    *,
    permanent: bool,
    status: str | None,
    reason: str,
    ticket_id: int | None,
    now: datetime,
    suppress_until: datetime | None,
) -> datetime | None:
    """Record a bounce from ``address`` (its row locked, created on the first one); automatic mail
    to it stays suppressed until the later of ``suppress_until`` and what an earlier bounce set.
    Returns until when it is suppressed now (None: not)."""
    row = session.get(AddressHealth, address, with_for_update=True)
    until = suppress_until
    if row is None:
        session.add(
            AddressHealth(
                email=address,
                state=FAILING,
                permanent=permanent,
                bounces=1,
                last_status=status,
                last_reason=reason[:2000],
                first_failed_at=now,
                last_failed_at=now,
                suppressed_until=until,
                last_ticket_id=ticket_id,
            )
        )
    else:
        row.state = FAILING
        row.permanent = row.permanent or permanent
        row.bounces += 1
        row.last_status = status
        row.last_reason = reason[:2000]
        row.last_failed_at = now
        row.last_ticket_id = ticket_id
        if until is not None:
            row.suppressed_until = max(until, row.suppressed_until or until)
        until = row.suppressed_until
    session.flush()
    return until
