"""What the CLI prints of stored mail cannot drive the terminal: rows written before the parser
cleaned such text (or by any other path) still show control and direction characters as "?"."""

from __future__ import annotations

from datetime import UTC, datetime

from mailbridge import views
from mailbridge.store.db import session_scope
from mailbridge.store.models import Message, Ticket

HOSTILE = "Rechnung \x1b[2J\x1b]0;pwned\x07 \u202egpj.exe\u202c\r"


def test_printable_replaces_controls_and_direction_marks_but_keeps_lines_and_tabs():
    assert views.printable("a\tb\nc") == "a\tb\nc"
    assert views.printable(HOSTILE) == "Rechnung ?[2J?]0;pwned? ?gpj.exe??"
    assert views.printable("Grüße 你好") == "Grüße 你好"


def test_tickets_show_and_list_print_stored_hostile_text_harmlessly(app):
    app.upgrade_db()
    now = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    with session_scope(app.session_factory) as s:
        t = Ticket(
            case_number="C1000002",
            serial=100000,
            queue="support",
            status="new",
            subject=HOSTILE,
            requester_email="kunde@kunde.example",
            requester_name=HOSTILE,
            language="de",
            created_at=now,
            updated_at=now,
        )
        s.add(t)
        s.flush()
        s.add(
            Message(
                ticket_id=t.id,
                direction="in",
                message_id="x@kunde.example",
                sender_email="kunde@kunde.example",
                subject=HOSTILE,
                body_text=HOSTILE,
                body_new=HOSTILE,
                kind="customer",
                created_at=now,
            )
        )
    for out in (views.ticket_detail(app, "C1000002", width=200), views.tickets_table(app, width=200)):
        assert out is not None and "Rechnung ?[2J" in out
        assert not any(ch in out for ch in "\x1b\x07\u202e\u202c\r")
