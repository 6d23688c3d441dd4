"""Alembic environment: runs with the engine mailbridge hands over (``mailbridge db upgrade``), or
with ``sqlalchemy.url`` / ``MAILBRIDGE_DATABASE_URL`` when a developer runs ``alembic`` directly."""

import os

from alembic import context
from sqlalchemy import create_engine

from mailbridge.store.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    engine = config.attributes.get("engine")
    if engine is None:
        url = config.get_main_option("sqlalchemy.url") or os.environ["MAILBRIDGE_DATABASE_URL"]
        engine = create_engine(url)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


run_migrations_online()
