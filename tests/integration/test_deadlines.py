"""Deadlines on the ticket (issue 4, first part): a new case gets the severity its mail asks for and
its first-response deadline on the queue's calendar; the acknowledgement states both in the
customer's language and the queue's time zone; #severity recomputes the deadline."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from tests.integration.conversation_support import NRW_CALENDAR, QUEUE_EXTRA, TEAM, make_desk, to
from tests.support import make_mail

BERLIN = ZoneInfo("Europe/Berlin")
SLA = (
    NRW_CALENDAR
    + """
[[severity_schemes]]
name = "std"
default = "3"
[[severity_schemes.levels]]
key = "1"
label_de = "Fehlerklasse 1"
label_en = "Severity 1"
words = ["Systemstillstand", "production down"]
first_response = { business_hours = 4 }
[[severity_schemes.levels]]
key = "3"
label_de = "Fehlerklasse 3"
label_en = "Severity 3"
first_response = { business_days = 2 }
"""
)


@pytest.fixture
def desk(tmp_path, imap_server, smtp_sink, db_url, imap_env):
    d = make_desk(
        tmp_path,
        imap_server,
        smtp_sink,
        db_url,
        queue_extra=QUEUE_EXTRA + 'calendar = "nrw"\nseverity_scheme = "std"\n',
        conversations=SLA,
    )
    d.clock.now = datetime(2026, 11, 20, 15, 0, tzinfo=BERLIN).astimezone(UTC)  # a Friday afternoon
    yield d
    d.app.close()


def test_severity_and_deadline_are_set_stated_and_recomputed(desk):
    """ "Systemstillstand" on Friday 15:00 is severity 1, first response due Monday 10:00 (2 h on
    Friday, 2 h on Monday from 08:00 — 4 business hours); the German acknowledgement says so with
    the weekday and zone; #severity 3 moves the deadline to 2 business days after creation."""
    sent = desk.deliver(
        make_mail(subject="Systemstillstand Linie 3", body="Guten Tag,\n\nseit 14 Uhr steht die komplette Linie.\n")
    )
    (ack,) = [m for m in sent if TEAM not in m.rcpt_tos]
    case = ack.header("Subject").split("]")[0].lstrip("[")
    t = desk.ticket(case)
    assert t.severity == "1"
    assert t.first_response_due == datetime(2026, 11, 23, 10, 0, tzinfo=BERLIN)
    assert "eingestuft als: Fehlerklasse 1" in ack.text
    assert "bis spätestens Montag, 23.11.2026, 10:00 Uhr MEZ" in ack.text
    assert ("severity_set", "detection") in [(k, d.get("by")) for k, d in desk.events(case)]

    (note,) = to(sent, TEAM)
    nid = note.header("Message-ID")
    desk.deliver(
        make_mail(
            subject=f"AW: {note.header('Subject')}",
            body="#severity 3\nNur eine Linie, Ausweichanlage läuft.",
            sender=("Anna Agent", "anna.agent@vendor.example"),
            headers={"In-Reply-To": nid, "References": nid},
        )
    )
    t = desk.ticket(case)
    assert t.severity == "3"
    # Two business days after Friday 15:00 is Tuesday 15:00.
    assert t.first_response_due == datetime(2026, 11, 24, 15, 0, tzinfo=BERLIN)


def test_a_mail_without_severity_words_gets_the_default_level(desk):
    """No word of the scheme: the default level and its target (2 business days)."""
    sent = desk.deliver(make_mail(subject="Frage zur Lizenz", body="Wie verlängere ich die Lizenz?"))
    (ack,) = [m for m in sent if TEAM not in m.rcpt_tos]
    t = desk.ticket(ack.header("Subject").split("]")[0].lstrip("["))
    assert t.severity == "3" and t.first_response_due == datetime(2026, 11, 24, 15, 0, tzinfo=BERLIN)
    assert "Dienstag, 24.11.2026, 15:00 Uhr MEZ" in ack.text
