"""Engine and sessions: SQLite (WAL) and PostgreSQL behind one ``session_scope()``.

On SQLite every transaction starts with ``BEGIN IMMEDIATE`` so that a transaction that reads and
then writes never fails half-way with "database is locked" (a deferred transaction cannot upgrade
its lock while another process writes); ``busy_timeout`` makes waiting writers queue instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

# For the layers above the store, which import nothing from SQLAlchemy: ``Session`` for annotations,
# ``IntegrityError`` for the unique-key races they settle (two instances queueing the same mail).
__all__ = [
    "IntegrityError",
    "Session",
    "is_integrity_error",
    "is_postgres",
    "is_transient_db_error",
    "make_engine",
    "make_session_factory",
    "session_scope",
]

# How long a SQLite writer waits for the lock before giving up (milliseconds).
SQLITE_BUSY_TIMEOUT_MS = 30_000


def make_engine(url: str) -> Engine:
    """Create the engine for ``url``; SQLite files get WAL, NORMAL sync and immediate transactions."""
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        if u.database and u.database != ":memory:":
            Path(u.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):  # pragma: no cover - exercised by every sqlite test
            # Let SQLAlchemy, not pysqlite, decide when a transaction starts (see module docstring).
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn):  # pragma: no cover - exercised by every sqlite test
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    if u.get_backend_name() == "postgresql" and u.drivername == "postgresql":
        # Plain postgresql:// means psycopg 3 here (the driver we install), not psycopg2.
        u = u.set(drivername="postgresql+psycopg")
    return create_engine(u, pool_pre_ping=True)


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One transaction: commit on success, roll back on any exception."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def is_transient_db_error(exc: BaseException) -> bool:
    """True for faults of the database *connection* (locked, unreachable), which are retried
    later, as opposed to errors caused by one mail's data."""
    from sqlalchemy.exc import DBAPIError, OperationalError
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    if isinstance(exc, OperationalError | PoolTimeout):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def is_integrity_error(exc: BaseException) -> bool:
    return isinstance(exc, IntegrityError)
