"""The operator's commands over a database filled by a real ingest: db upgrade, tickets list/show,
quarantine list."""

from __future__ import annotations

import asyncio

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from mailbridge.cli import cli
from mailbridge.store.db import session_scope
from mailbridge.store.models import Ticket
from tests.support import make_mail


def _run(config_path, *args):
    # A wide terminal: these tests read what is shown, test_cli_views.py how it fits.
    result = CliRunner().invoke(
        cli, ["--config", str(config_path), *args], catch_exceptions=False, env={"COLUMNS": "200"}
    )
    return result.exit_code, result.output


@pytest.mark.empty_database
def test_db_upgrade_is_idempotent(config_path):
    """`db upgrade` creates the schema and can run again on an up-to-date database."""
    for _ in range(2):
        code, out = _run(config_path, "db", "upgrade")
        assert code == 0 and "revision 0014" in out  # the newest migration


def test_tickets_list_show_and_quarantine(config_path, app, imap_server, smtp_sink):
    """An operator sees the tickets, one ticket with its messages, routing and history, and the
    quarantined mail with its reason."""
    imap_server.append(
        [
            make_mail(
                message_id="<a@kunde.example>",
                subject="Steuerung meldet E42",
                attachments=[("fehler.png", "image/png", b"\x89PNG\r\n\x1a\n" + b"0" * 100)],
            ),
            make_mail(
                message_id="<b@customer.example>",
                subject="Cannot log in",
                body="Hello, I cannot log in.",
                sender=("Jane Roe", "jane@customer.example"),
            ),
            b"From: x@kunde.example\r\nSubject: defekt\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed\r\n\r\nx\r\n",
        ]
    )
    app.poller("main").cycle()
    asyncio.run(app.sender().run_once())
    with session_scope(app.session_factory) as s:
        case = s.scalars(select(Ticket).where(Ticket.subject == "Steuerung meldet E42")).one().case_number

    code, out = _run(config_path, "tickets", "list")
    assert code == 0
    assert case in out and "Cannot log in" in out and "jane@customer.example" in out

    code, out = _run(config_path, "tickets", "show", case.lower())
    assert code == 0
    assert f"{case}  Steuerung meldet E42" in out
    assert "attachment: fehler.png (image/png, 108 bytes" in out
    assert "routed: to support@vendor.example (queue support, by its recipient address); a new case" in out
    assert "-> " in out and f"[{case}] Steuerung meldet E42" in out  # the acknowledgement
    assert "created" in out and "ack_queued" in out and "mail_sent" in out

    code, out = _run(config_path, "tickets", "show", "C9999999")
    assert code == 1

    code, out = _run(config_path, "quarantine", "list")
    assert code == 0
    header, row, total = out.splitlines()
    assert header.split()[:4] == ["ID", "QUARANTINED", "STAGE", "FROM"]
    assert row.split()[4:6] == ["validate", "x@kunde.example"] and "broken MIME structure" in row
    assert total.startswith("1 quarantined; the whole of each")
