"""The service's health as rows: accounts, scheduled jobs, alert conditions; and the summaries of the
outbox and the quarantine that ``mailbridge status`` and the alert job read.

Written cheaply by the running service: an account's row once per fetch cycle and once per failure,
a job's row once per run, the outbox's row when its state changes. Several instances on one database
write the same rows (keyed by account / job / condition); the last writer wins, except that the
start of a failure streak is kept (the earliest one). Alert rows change by compare-and-set on their
``sent`` counter, so two instances never both send the same alert mail.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update

from mailbridge.store.db import Session
from mailbridge.store.models import AccountHealth, AlertState, JobHealth, Outbox, Quarantine

# The outbox rows that are still to go out (claimed and sending rows are being sent right now).
PENDING_STATUSES = ("queued", "claimed", "sending")


def _upsert(
    session: Session,
    model,
    key: dict[str, Any],
    values: dict[str, Any],
    *,
    keep_first: tuple[str, ...] = (),
    insert_only: dict[str, Any] | None = None,
) -> None:
    """INSERT … ON CONFLICT (key) DO UPDATE: ``values`` overwrite, ``keep_first`` columns keep an
    existing non-null value (the start of a streak), ``insert_only`` fill a new row only."""
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    stmt = insert(model).values(**key, **values, **(insert_only or {}))
    set_ = {k: stmt.excluded[k] for k in values if k not in keep_first}
    for k in keep_first:
        set_[k] = func.coalesce(getattr(model, k), stmt.excluded[k])
    session.execute(stmt.on_conflict_do_update(index_elements=list(key), set_=set_))


# ---------------------------------------------------------------- accounts


def account_ok(session: Session, account: str, now: datetime, *, mode: str, waiting: int) -> None:
    """A cycle of ``account`` succeeded: connected, its mode, fetched now, no failure streak."""
    _upsert(
        session,
        AccountHealth,
        {"account": account},
        {
            "connected": True,
            "mode": mode,
            "last_fetch_at": now,
            "last_error": None,
            "error_kind": None,
            "failing_since": None,
            "waiting": waiting,
            "updated_at": now,
        },
    )


def account_failed(session: Session, account: str, now: datetime, *, error: str, kind: str) -> None:
    """A cycle of ``account`` failed: disconnected, the error and its kind; the streak's start is
    kept when it is already failing (also across restarts)."""
    _upsert(
        session,
        AccountHealth,
        {"account": account},
        {"connected": False, "last_error": error, "error_kind": kind, "failing_since": now, "updated_at": now},
        keep_first=("failing_since",),
        insert_only={"waiting": 0},
    )


def account_rows(session: Session) -> list[AccountHealth]:
    return list(session.scalars(select(AccountHealth).order_by(AccountHealth.account)))


# ---------------------------------------------------------------- jobs


def job_ran(session: Session, job: str, now: datetime, error: str | None = None) -> None:
    """One run of ``job``: a success clears its error; a failure keeps the streak's first time."""
    if error is None:
        values = {"last_run_at": now, "last_success_at": now, "last_error": None, "failing_since": None}
        _upsert(session, JobHealth, {"job": job}, values)
    else:
        values = {"last_run_at": now, "last_error": error, "failing_since": now}
        _upsert(session, JobHealth, {"job": job}, values, keep_first=("failing_since",))


def job_rows(session: Session) -> list[JobHealth]:
    return list(session.scalars(select(JobHealth).order_by(JobHealth.job)))


# ---------------------------------------------------------------- outbox and quarantine


@dataclass(frozen=True)
class OutboxSummary:
    pending: int  # queued, claimed or sending
    retrying: int  # pending after a failed attempt (4xx, connection lost)
    failed: int  # given up (5xx, or max_attempts)
    failed_since: int  # failed among those created since the ``since`` asked for
    oldest_pending_at: datetime | None
    oldest_retrying_at: datetime | None
    last_error: str | None  # of the newest row that has one, pending or failed


def outbox_summary(session: Session, since: datetime) -> OutboxSummary:
    pending = Outbox.status.in_(PENDING_STATUSES)
    counts = session.execute(
        select(
            func.count().filter(pending),
            func.count().filter(pending, Outbox.attempts > 0),
            func.count().filter(Outbox.status == "failed"),
            func.count().filter(Outbox.status == "failed", Outbox.created_at >= since),
            func.min(Outbox.created_at).filter(pending),
            func.min(Outbox.created_at).filter(pending, Outbox.attempts > 0),
        )
    ).one()
    last_error = session.scalar(
        select(Outbox.last_error)
        .where(Outbox.last_error.is_not(None), Outbox.status.in_((*PENDING_STATUSES, "failed")))
        .order_by(Outbox.id.desc())
        .limit(1)
    )
    return OutboxSummary(*counts, last_error)


def open_quarantine(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(Quarantine).where(Quarantine.status == "open")) or 0


def quarantined_since(session: Session, since: datetime) -> int:
    """Mails quarantined at or after ``since`` (whatever became of them since)."""
    return session.scalar(select(func.count()).select_from(Quarantine).where(Quarantine.created_at >= since)) or 0


# ---------------------------------------------------------------- alert conditions


def alert_states(session: Session) -> dict[str, AlertState]:
    return {a.condition: a for a in session.scalars(select(AlertState))}


def alert_fire(session: Session, condition: str, now: datetime, detail: dict) -> bool:
    """The condition starts firing and its first mail is sent now; False when another instance
    started it first (the caller rolls back its mail)."""
    existing = session.get(AlertState, condition)
    if existing is None:
        session.add(AlertState(condition=condition, firing_since=now, last_sent_at=now, sent=1, detail=detail))
        session.flush()  # a second instance's insert fails here with IntegrityError
        return True
    res = session.execute(
        update(AlertState)
        .where(AlertState.condition == condition, AlertState.firing_since.is_(None))
        .values(firing_since=now, last_sent_at=now, sent=1, detail=detail)
    )
    return res.rowcount == 1


def alert_repeat(session: Session, condition: str, sent: int, now: datetime, detail: dict) -> bool:
    """Another mail of a condition still firing (its ``sent`` count was ``sent``)."""
    res = session.execute(
        update(AlertState)
        .where(AlertState.condition == condition, AlertState.sent == sent, AlertState.firing_since.is_not(None))
        .values(last_sent_at=now, sent=sent + 1, detail=detail)
    )
    return res.rowcount == 1


def alert_clear(session: Session, condition: str, sent: int, now: datetime) -> bool:
    """The condition is back to normal (its ``sent`` count was ``sent``)."""
    res = session.execute(
        update(AlertState)
        .where(AlertState.condition == condition, AlertState.sent == sent, AlertState.firing_since.is_not(None))
        .values(firing_since=None, last_sent_at=now)
    )
    return res.rowcount == 1
