"""Fixtures: real servers (pymap, aiosmtpd), real databases (SQLite, PostgreSQL), config files.

``db_url`` is parametrised over SQLite and PostgreSQL; the PostgreSQL case runs when
``MAILBRIDGE_TEST_POSTGRES_URL`` is set (``.ci/run`` sets it) and is skipped with that reason
otherwise. Every test gets its own database, mailbox and SMTP server.
"""

from __future__ import annotations

import os

import pytest

from mailbridge.app import App
from mailbridge.embedded import PymapServer, SmtpSink
from mailbridge.settings import load_settings
from tests.support import IMAP_PASSWORD_ENV, PG_ENV, postgres_database, write_config

IMAP_PASSWORD = "s3cret-imap"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'mailbridge.db'}"
        return
    if not os.environ.get(PG_ENV):
        pytest.skip(f"PostgreSQL tests need {PG_ENV} (e.g. postgresql://postgres@127.0.0.1:5432/test)")
    with postgres_database() as url:
        yield url


@pytest.fixture
def imap_server():
    server = PymapServer(user="support", password=IMAP_PASSWORD)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def smtp_sink():
    sink = SmtpSink()
    sink.start()
    yield sink
    sink.stop()


@pytest.fixture
def imap_env(monkeypatch):
    monkeypatch.setenv(IMAP_PASSWORD_ENV, IMAP_PASSWORD)
    return {**os.environ, IMAP_PASSWORD_ENV: IMAP_PASSWORD}


@pytest.fixture
def config_path(tmp_path, imap_server, smtp_sink, db_url, imap_env):
    """A config file pointing at this test's IMAP server, SMTP server and database."""
    return write_config(
        tmp_path / "mailbridge.toml",
        imap_port=imap_server.port,
        smtp_port=smtp_sink.port,
        db_url=db_url,
        var_dir=tmp_path / "var",
    )


@pytest.fixture
def settings(config_path):
    return load_settings(config_path)


@pytest.fixture
def app(settings):
    a = App(settings)
    a.upgrade_db()
    yield a
    a.close()
