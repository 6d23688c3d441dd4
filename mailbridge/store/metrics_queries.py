"""What ``/metrics`` and ``/readyz`` read from the database at scrape time (``mailbridge/metrics.py``),
and the hook that lets counters count only what a transaction committed.

Every query here is one cheap statement on an indexed column or a small set of rows (the outbox's
unsent rows, open quarantine rows, active cases); nothing commits. The facts they count are decided
elsewhere: which outbox rows are still to be sent (``Outbox.status``), which quarantine rows are open,
and when an SLA clock runs (:data:`~mailbridge.store.sla_queries._RUNNING_CLOCKS`, the digest's
definition).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from alembic.script import ScriptDirectory
from sqlalchemy import Engine, event, func, select, text
from sqlalchemy.orm import Session

from mailbridge.store.migrate import alembic_config, current_revision
from mailbridge.store.models import Outbox, Quarantine, Ticket
from mailbridge.store.sla_queries import _RUNNING_CLOCKS, ACTIVE

# Outbox rows that have not gone out yet (models.Outbox: queued → claimed → sending → sent | failed).
UNSENT = ("queued", "claimed", "sending")


def outbox_unsent(session: Session) -> tuple[int, datetime | None]:
    """How many outbox rows are waiting to be sent, and when the oldest of them was queued."""
    n, oldest = (
        session.connection()
        .execute(select(func.count(), func.min(Outbox.created_at)).where(Outbox.status.in_(UNSENT)))
        .one()
    )
    return n, oldest


def quarantine_open(session: Session) -> int:
    """Quarantined mails nobody has requeued or discarded yet."""
    return session.connection().execute(select(func.count()).where(Quarantine.status == "open")).scalar_one()


def breaches_open(session: Session, now: datetime) -> dict[tuple[str, str], int]:
    """(queue, clock) → active cases whose running ``clock`` was due before ``now``; one statement
    over the active cases. Only pairs with at least one breach are returned."""
    counts = [
        func.count().filter(cond, due_col.is_not(None), due_col < now).label(clock)
        for clock, (due_col, cond) in _RUNNING_CLOCKS.items()
    ]
    rows = session.connection().execute(
        select(Ticket.queue, *counts).where(Ticket.status.in_(ACTIVE)).group_by(Ticket.queue)
    )
    out: dict[tuple[str, str], int] = {}
    for queue, *ns in rows:
        for clock, n in zip(_RUNNING_CLOCKS, ns, strict=True):
            if n:
                out[(queue, clock)] = n
    return out


def database_answers(engine: Engine) -> None:
    """``SELECT 1`` on a connection of ``engine``; raises when the database does not answer."""
    with engine.connect() as conn:
        conn.execute(text("SELECT 1")).scalar_one()


def newest_revision(engine: Engine) -> str | None:
    """The newest migration this mailbridge ships (what ``db upgrade`` brings a database to)."""
    return ScriptDirectory.from_config(alembic_config(engine)).get_current_head()


def schema_revision(engine: Engine) -> str | None:
    """The migration the database is at (None: no schema)."""
    return current_revision(engine)


def after_commit(session: Session, fn: Callable[[], None]) -> None:
    """Call ``fn`` once the session's transaction has committed; never, when it rolls back (a
    unique-key race, a failed step). Counters of things written in a transaction count with this."""
    # Registered inside a savepoint (one mail of a group-committed batch): a rollback of that
    # savepoint (or of one around it) takes the thing counted back, so ``fn`` is dropped.
    nested = session.get_nested_transaction()
    live = [True]
    if nested is not None:

        def _rolled_back(_session, previous) -> None:
            t = nested
            while t is not None:
                if t is previous:
                    live[0] = False
                    return
                t = t.parent

        event.listen(session, "after_soft_rollback", _rolled_back)

    fired = [False]

    def _committed(s) -> None:
        # SQLAlchemy sends after_commit for a released savepoint too: only the outermost commit counts.
        if fired[0] or s.in_nested_transaction():
            return
        fired[0] = True
        if live[0]:
            fn()

    event.listen(session, "after_commit", _committed)
