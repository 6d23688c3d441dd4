"""The schema comes only from Alembic: the migrated database matches the models exactly, and the
migration can be taken back down, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from mailbridge.store.db import make_engine
from mailbridge.store.migrate import alembic_config, current_revision, upgrade
from mailbridge.store.models import Base

# These tests run the migrations themselves, on an empty database.
pytestmark = pytest.mark.empty_database


def test_migrated_schema_matches_the_models_and_downgrades_cleanly(db_url):
    """Alembic's own comparison finds no difference between the migrated schema and the models;
    downgrading to base removes every table again."""
    engine = make_engine(db_url)
    try:
        upgrade(engine)
        assert current_revision(engine) is not None
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == []
        command.downgrade(alembic_config(engine), "base")
        assert current_revision(engine) is None
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        upgrade(engine)  # and up again from empty
        assert set(Base.metadata.tables) <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
