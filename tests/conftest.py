"""Fixtures: real servers (pymap, aiosmtpd), real databases (SQLite, PostgreSQL), config files.

``db_url`` is parametrised over SQLite and PostgreSQL; the PostgreSQL case runs when
``MAILBRIDGE_TEST_POSTGRES_URL`` is set (``.ci/run`` sets it) and is skipped with that reason
otherwise — decided at collection, so a skipped case starts no server at all.

Every test gets its own database, IMAP account and SMTP server:

- IMAP: one pymap per session (per xdist worker) serves every test, each test logged in as a user of
  its own (``imap_server`` is a :class:`~mailbridge.embedded.PymapAccount`): one test's mails are never
  seen by another. A test that stops or restarts IMAP asks for ``own_imap_server`` instead.
- Databases: the schema comes from a template migrated once per session (PostgreSQL: ``CREATE
  DATABASE … TEMPLATE``; SQLite: a copy of a migrated file). Tests marked ``empty_database`` (the
  migration tests, the service's first start) get an empty database and run the migrations themselves.
- SMTP: an aiosmtpd per test (it starts in ~40 ms, and tests set its replies and delays).
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from pathlib import Path

import pytest

from mailbridge.app import App
from mailbridge.embedded import PymapServer, SmtpSink
from mailbridge.settings import load_settings
from tests.support import (
    IMAP_PASSWORD,
    IMAP_PASSWORD_ENV,
    IMAP_USER_PREFIX,
    PG_ENV,
    migrated_sqlite_file,
    postgres_database,
    postgres_template,
    write_config,
)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "empty_database: db_url is an empty database (the test runs or tests the migrations itself)"
    )
    config.addinivalue_line(
        "markers", "own_imap_server: imap_server is a pymap of the test's own (the test stops or restarts it)"
    )


def pytest_xdist_auto_num_workers(config):
    """``-n auto``: two workers per core, the tests mostly wait on I/O (servers, subprocesses)."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return int(os.environ["PYTEST_XDIST_AUTO_NUM_WORKERS"])
    return min(8, 2 * (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def pytest_collection_modifyitems(config, items):
    """The long tests first, so that no worker starts one of them when the others are done; skip the
    PostgreSQL cases at collection when there is no PostgreSQL: no fixture runs for them."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
    if os.environ.get(PG_ENV):
        return
    skip = pytest.mark.skip(reason=f"PostgreSQL tests need {PG_ENV} (e.g. postgresql://postgres@127.0.0.1:5432/test)")
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("db_url") == "postgresql":
            item.add_marker(skip)


# Test files whose tests share something expensive per worker: a private Dovecot/Postfix stack, or a
# module-scoped fixture (the parsed corpus, a TLS pymap). Their tests go to one worker each.
_TESTS = Path(__file__).parent
_MAILSTACK_FILES = {
    "tests/integration/test_mailstack.py",
    "tests/integration/test_mailstack_noise.py",
    "tests/integration/test_mailstack_attachments.py",
}
_MODULE_FIXTURE_FILES = {
    path.relative_to(_TESTS.parent).as_posix()
    for path in _TESTS.rglob("test_*.py")
    if re.search(r"fixture\(\s*scope=\"(module|class)\"", path.read_text(encoding="utf-8"))
}
# A file with a stack of its own (Dovecot with the oauth2 passdb, tests/mailstack.py): one worker for it.
_MODULE_FIXTURE_FILES.add("tests/integration/test_oauth_mailstack.py")


def _xdist_scope(nodeid: str) -> str:
    path = nodeid.split("::", 1)[0]
    if path in _MAILSTACK_FILES:
        return "mailstack"
    if path in _MODULE_FIXTURE_FILES:
        return path
    return nodeid


def pytest_xdist_make_scheduler(config, log):
    """--dist loadgroup: like ``load`` (test by test to whichever worker is free), except that each
    file of _MAILSTACK_FILES / _MODULE_FIXTURE_FILES stays on one worker. (xdist's own xdist_group
    marks do nothing with pytest 9.2: they rename item._nodeid, which node ids no longer come from.)"""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class Scheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _xdist_scope(nodeid)

    return Scheduling(config, log)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory):
    """A SQLite file migrated to the newest revision once per session; tests get copies."""
    return migrated_sqlite_file(tmp_path_factory.mktemp("sqlite-template") / "template.db")


@pytest.fixture(scope="session")
def postgres_template_name():
    """A PostgreSQL database migrated once per session (per worker), the template of the tests' databases."""
    with postgres_template() as name:
        yield name


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    empty = request.node.get_closest_marker("empty_database") is not None
    if request.param == "sqlite":
        path = tmp_path / "mailbridge.db"
        if not empty:
            shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    if not os.environ.get(PG_ENV):  # also marked skipped at collection; kept for direct fixture use
        pytest.skip(f"PostgreSQL tests need {PG_ENV} (e.g. postgresql://postgres@127.0.0.1:5432/test)")
    template = None if empty else request.getfixturevalue("postgres_template_name")
    with postgres_database(template=template) as url:
        yield url


@pytest.fixture(scope="session")
def pymap_session():
    """One pymap for the session (per xdist worker); each test has a user of its own on it."""
    server = PymapServer(user="support", password=IMAP_PASSWORD, provision_prefix=IMAP_USER_PREFIX)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def imap_server(request):
    """This test's IMAP account on the shared pymap (host, port, user, password, client(), append());
    with the ``own_imap_server`` marker a pymap of the test's own, which it may stop and restart."""
    if request.node.get_closest_marker("own_imap_server") is not None:
        with PymapServer(user="support", password=IMAP_PASSWORD) as server:
            yield server
        return
    shared = request.getfixturevalue("pymap_session")
    account = shared.account(f"{IMAP_USER_PREFIX}{uuid.uuid4().hex[:12]}")
    yield account
    if shared.proc is not None and shared.proc.poll() is None:
        account.clear()


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
def config_path(tmp_path, db_url, imap_server, smtp_sink, imap_env):
    """A config file pointing at this test's IMAP account, SMTP server and database."""
    return write_config(
        tmp_path / "mailbridge.toml",
        imap_port=imap_server.port,
        imap_user=imap_server.user,
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


@pytest.fixture
def db(db_url):
    """An engine on this test's database, for tests that only read what a service wrote."""
    from sqlalchemy import create_engine

    engine = create_engine(db_url)
    yield engine
    engine.dispose()
