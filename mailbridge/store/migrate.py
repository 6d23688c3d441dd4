"""Schema migrations through Alembic, the only way the schema is created.

On PostgreSQL an upgrade holds a session-level advisory lock (``pg_advisory_lock``) on a connection
of its own for its whole run: instances starting together on one database upgrade one after the
other, and every one after the first finds the schema at the newest revision (without the lock two
of them created ``alembic_version`` at once and one died of a unique violation). SQLite needs no
lock: Alembic's transaction starts with ``BEGIN IMMEDIATE`` there (``store/db.py``), which already
lets one writer in at a time.
"""

from __future__ import annotations

import contextlib

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, text

from mailbridge.resources import alembic_dir

# The advisory lock's key (any 64-bit number no other user of the database takes): "mbschema".
UPGRADE_LOCK_KEY = 0x6D62736368656D61


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(alembic_dir()))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the database at ``engine`` to ``revision``; safe to run on every start, also by several
    instances at once."""
    if engine.dialect.name != "postgresql":
        command.upgrade(alembic_config(engine), revision)
        return
    with engine.connect() as lock:
        lock.execute(text("SELECT pg_advisory_lock(:key)"), {"key": UPGRADE_LOCK_KEY})
        lock.commit()
        try:
            command.upgrade(alembic_config(engine), revision)
        finally:
            # A broken connection has lost the lock with its session already.
            with contextlib.suppress(Exception):
                lock.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": UPGRADE_LOCK_KEY})
                lock.commit()


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
