"""Helpers shared by the tests: config files, realistic mail bytes, database URLs."""

from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid
from pathlib import Path

from sqlalchemy.engine import make_url

PG_ENV = "MAILBRIDGE_TEST_POSTGRES_URL"
IMAP_PASSWORD_ENV = "MB_TEST_IMAP_PASSWORD"
IMAP_PASSWORD = "s3cret-imap"
# Users of the shared pymap (conftest's imap_server) are created at their first login.
IMAP_USER_PREFIX = "t-"
SUPPORT_ADDRESS = "support@vendor.example"
HOTLINE_ADDRESS = "hotline@vendor.example"


def write_config(
    path: Path,
    *,
    imap_port: int,
    smtp_port: int,
    db_url: str,
    var_dir: Path,
    extra: str = "",
    account_extra: str = "",
    outbox_extra: str = "",
    imap_user: str = "support",
    queue_extra: str = "",
) -> Path:
    """A complete mailbridge config for servers on loopback: two queues fed by one account."""
    path.write_text(
        f"""
var_dir = "{var_dir}"

[database]
url = "{db_url}"

[[accounts]]
name = "main"
host = "127.0.0.1"
port = {imap_port}
tls = "none"
user = "{imap_user}"
password_env = "{IMAP_PASSWORD_ENV}"
poll_interval = 2
fetch_batch = 50
{account_extra}

[[queues]]
name = "support"
addresses = ["{SUPPORT_ADDRESS}"]
language = "en"
account = "main"
display_name = "Vendor Support"
{queue_extra}

[[queues]]
name = "hotline"
addresses = ["{HOTLINE_ADDRESS}"]
language = "de"
account = "main"
display_name = "Vendor Hotline"

[smtp]
host = "127.0.0.1"
port = {smtp_port}
tls = "none"
timeout = 10

[outbox]
interval = 1
backoff_seconds = 1
max_backoff_seconds = 4
lease_seconds = 5
{outbox_extra}

[logging]
format = "json"
{extra}
""",
        encoding="utf-8",
    )
    return path


def make_mail(
    *,
    subject: str = "Lizenzserver startet nicht",
    body: str = "Guten Tag,\n\nseit dem Update startet unser Lizenzserver nicht mehr.\n\nViele Grüße\nJürgen Müller",
    sender: tuple[str, str] = ("Jürgen Müller", "juergen.mueller@kunde.example"),
    to: str = SUPPORT_ADDRESS,
    cc: str | None = None,
    message_id: str | None = None,
    html: str | None = None,
    html_only: bool = False,
    attachments: list[tuple[str, str, bytes]] | None = None,
    headers: dict[str, str] | None = None,
    date: datetime | None = None,
) -> bytes:
    """Real mail bytes as a mail client would produce them (the stdlib email package composes)."""
    msg = EmailMessage()
    msg["From"] = f"{sender[0]} <{sender[1]}>" if sender[0] else sender[1]
    msg["To"] = to
    if cc:
        msg["Cc"] = cc
    msg["Subject"] = subject
    msg["Date"] = format_datetime(date or datetime(2026, 11, 20, 9, 30, tzinfo=UTC))
    msg["Message-ID"] = message_id or make_msgid(domain=sender[1].split("@")[1])
    for k, v in (headers or {}).items():
        msg[k] = v
    if html_only:
        msg.set_content(html or f"<p>{body}</p>", subtype="html")
    else:
        msg.set_content(body)
        if html:
            msg.add_alternative(html, subtype="html")
    for name, ctype, data in attachments or []:
        maintype, subtype = ctype.split("/", 1)
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return msg.as_bytes(policy=SMTP)  # CRLF line ends, as mail is on the wire (RFC 5322 2.1)


def _pg_admin() -> tuple[str, object]:
    url = make_url(os.environ[PG_ENV])
    return url.set(drivername="postgresql").render_as_string(hide_password=False), url


def _drop_database(dsn: str, name: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


@contextmanager
def postgres_database(template: str | None = None):
    """A fresh PostgreSQL database for one test (empty, or a copy of ``template``); dropped afterwards."""
    import psycopg

    dsn, url = _pg_admin()
    name = f"mb_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    try:
        yield url.set(drivername="postgresql+psycopg", database=name).render_as_string(hide_password=False)
    finally:
        _drop_database(dsn, name)


@contextmanager
def postgres_template():
    """A PostgreSQL database migrated to the newest revision (Alembic, as ``db upgrade`` does), to copy
    with ``CREATE DATABASE … TEMPLATE``; its name. Nothing may stay connected to it."""
    from mailbridge.store.db import make_engine
    from mailbridge.store.migrate import upgrade

    with postgres_database() as url:
        engine = make_engine(url)
        try:
            upgrade(engine)
        finally:
            engine.dispose()
        yield make_url(url).database


def migrated_sqlite_file(path: Path) -> Path:
    """``path``, a SQLite database migrated to the newest revision (Alembic, as ``db upgrade`` does)."""
    from mailbridge.store.db import make_engine
    from mailbridge.store.migrate import upgrade

    engine = make_engine(f"sqlite:///{path}")
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    return path


def python_steps(fn, *args):
    """``(fn(*args), steps)``: the Python steps (calls, lines, returns, exceptions, as ``sys.settrace``
    counts them) the call took. A measure of work that, unlike a clock, does not depend on the machine
    or its load; C code (the regex engine, ``bytes.split``) counts as one step per call into it."""
    import sys

    steps = 0

    def tracer(frame, event, arg):
        nonlocal steps
        steps += 1
        return tracer

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        result = fn(*args)
    finally:
        sys.settrace(previous)
    return result, steps
