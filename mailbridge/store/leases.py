"""Leases shared by the instances on one database (the ``leases`` table): who fetches a mailbox, who
runs the scheduler's cluster-wide jobs, which instances are alive.

A lease is one row: ``name``, ``holder``, ``acquired_at`` (when this holder took it), ``expires_at``.
:func:`take` takes or renews it as one compare-and-set statement (``INSERT … ON CONFLICT DO UPDATE …
WHERE``): the row goes to ``holder`` only when it is the holder's already, or free (released or
expired) before ``free_before``. On PostgreSQL the row lock of that statement orders two instances
taking the same lease at once; on SQLite ``BEGIN IMMEDIATE`` does. :func:`release` frees a lease
(``holder`` NULL, ``expires_at`` the moment of release), so another instance may take it at once.

Whose clock counts: the database's. On PostgreSQL :func:`db_now` is ``now()`` of the transaction,
so instances on hosts whose clocks differ still agree when a lease expires; every statement of a
heartbeat uses that one value. SQLite is one file on one host: its clock is the host's
(``datetime.now(UTC)``), the clock every instance there reads. The application's clock (``App.clock``,
which tests may set to another day) is never used for leases.

Callers own the transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import case, delete, func, literal, select, update

from mailbridge.store.db import Session
from mailbridge.store.models import Lease, UtcDateTime

# Lease names: a mailbox (account and folder), the leader of the scheduler's jobs, an instance.
MAILBOX_PREFIX = "mailbox:"
LEADER = "leader"
INSTANCE_PREFIX = "instance:"


def mailbox_lease(account: str, folder: str) -> str:
    """The lease name of one watched mailbox."""
    return f"{MAILBOX_PREFIX}{account}/{folder}"


def instance_lease(instance: str) -> str:
    """The heartbeat row of one running instance."""
    return f"{INSTANCE_PREFIX}{instance}"


def db_now(session: Session) -> datetime:
    """The database's time (see the module docstring): PostgreSQL's ``now()``, else the host's."""
    if session.get_bind().dialect.name == "postgresql":
        return session.scalar(select(func.now())).astimezone(UTC)
    return datetime.now(UTC)


def _insert(session: Session):
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert


def take(
    session: Session,
    name: str,
    holder: str,
    now: datetime,
    seconds: float,
    *,
    free_before: datetime | None = None,
) -> bool:
    """Compare-and-set: ``holder`` holds ``name`` until ``now + seconds`` when it held it already, or
    when nobody holds an unexpired one (released or expired at or before ``free_before``, default
    ``now``; an earlier ``free_before`` takes only a lease left unheld that long). True when held."""
    free_before = now if free_before is None else free_before
    until = now + timedelta(seconds=seconds)
    table = Lease.__table__
    stmt = _insert(session)(Lease).values(name=name, holder=holder, acquired_at=now, expires_at=until)
    stmt = stmt.on_conflict_do_update(
        index_elements=["name"],
        set_={
            "holder": stmt.excluded.holder,
            "acquired_at": case(
                (table.c.holder == stmt.excluded.holder, table.c.acquired_at), else_=literal(now, UtcDateTime())
            ),
            "expires_at": stmt.excluded.expires_at,
        },
        where=(table.c.holder == stmt.excluded.holder) | (table.c.expires_at <= free_before),
    ).returning(table.c.name)
    return session.execute(stmt).first() is not None


def release(session: Session, name: str, holder: str, now: datetime) -> bool:
    """``holder`` gives ``name`` back (another instance may take it at once); True when it held it."""
    result = session.execute(
        update(Lease).where(Lease.name == name, Lease.holder == holder).values(holder=None, expires_at=now)
    )
    return result.rowcount == 1


def drop(session: Session, name: str, holder: str) -> None:
    """Remove ``holder``'s row ``name`` (an instance's heartbeat on a clean stop)."""
    session.execute(delete(Lease).where(Lease.name == name, Lease.holder == holder))


def live_instances(session: Session, now: datetime) -> int:
    """How many instances have a heartbeat row that has not expired (at least this one, once beating)."""
    q = select(func.count()).where(
        Lease.name.startswith(INSTANCE_PREFIX, autoescape=True), Lease.holder.is_not(None), Lease.expires_at > now
    )
    return session.scalar(q) or 0


def forget_instances(session: Session, expired_before: datetime) -> int:
    """Delete the heartbeat rows of instances gone since before ``expired_before`` (killed ones never
    remove their own row); the number removed."""
    result = session.execute(
        delete(Lease).where(Lease.name.startswith(INSTANCE_PREFIX, autoescape=True), Lease.expires_at < expired_before)
    )
    return result.rowcount


@dataclass(frozen=True)
class Held:
    """One lease as ``mailbridge status`` shows it."""

    name: str
    holder: str | None
    acquired_at: datetime | None
    expires_at: datetime
    live: bool


def all_leases(session: Session) -> list[Held]:
    """Every lease row, by name, with whether it is held now (the database's time)."""
    now = db_now(session)
    rows = session.scalars(select(Lease).order_by(Lease.name))
    return [
        Held(r.name, r.holder, r.acquired_at, r.expires_at, r.holder is not None and r.expires_at > now) for r in rows
    ]


__all__ = [
    "INSTANCE_PREFIX",
    "LEADER",
    "MAILBOX_PREFIX",
    "Held",
    "all_leases",
    "db_now",
    "drop",
    "forget_instances",
    "instance_lease",
    "live_instances",
    "mailbox_lease",
    "release",
    "take",
]
