"""The durable schedule's rows (``scheduled.py``): when a scheduled thing was first seen, and one
row per due time, claimed once.

``claim`` inserts the (name, due time) row inside the caller's transaction, the one that queues the
mail: the unique key makes a second claim (another instance, a restart) fail with IntegrityError, and
that transaction rolls back with its outbox row. So a due time is acted on exactly once.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from mailbridge.store import repositories as repo
from mailbridge.store.db import Session
from mailbridge.store.models import ScheduleRun, ScheduleStart


def first_seen(session: Session, name: str) -> datetime | None:
    """When ``name`` was first seen by a running service (None: not yet)."""
    return session.scalar(select(ScheduleStart.since).where(ScheduleStart.name == name))


def record_start(session: Session, name: str, now: datetime) -> None:
    """Record that ``name`` is seen from ``now`` on; raises IntegrityError if another instance did."""
    session.add(ScheduleStart(name=name, since=now))
    session.flush()


def done(session: Session, name: str, due_at: datetime) -> bool:
    """Whether the due time ``due_at`` of ``name`` has been claimed."""
    q = select(ScheduleRun.id).where(ScheduleRun.name == name, ScheduleRun.due_at == due_at)
    return session.scalar(q) is not None


def claim(
    session: Session, name: str, due_at: datetime, now: datetime, outcome: str, outbox_id: int | None = None
) -> int:
    """Record what came of ``due_at``; raises IntegrityError if it was claimed already."""
    return repo.insert_row(
        session,
        ScheduleRun,
        {"name": name, "due_at": due_at, "ran_at": now, "outcome": outcome, "outbox_id": outbox_id},
    )


def runs(session: Session, name: str | None = None, limit: int = 50) -> list[ScheduleRun]:
    """The latest runs (of ``name``, or of all), newest due time first."""
    q = select(ScheduleRun).order_by(ScheduleRun.due_at.desc(), ScheduleRun.id.desc()).limit(limit)
    if name is not None:
        q = q.where(ScheduleRun.name == name)
    return list(session.scalars(q))
