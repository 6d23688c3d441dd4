"""Mails to agents and managers say only what holds for their reader, in one language (issue 16,
item 9): a command-error mail on a German desk is German through and through, reasons included; an
escalation to a manager who is not an agent does not invite them to answer the customer. Mail in
through the real IMAP server, mail out read back from the real SMTP server."""

from __future__ import annotations

import pytest

from tests.integration.conversation_support import (
    AGENT,
    CHIEF,
    CUSTOMER,
    TEAM,
    berlin,
    make_desk,
    sla_desk,
    to,
)
from tests.support import make_mail

GERMAN_DESK = "kundendienst@vendor.example"
# A third queue whose agents work in German (the queue's language is the agents' language).
GERMAN_QUEUE = f"""
[[queues]]
name = "kundendienst"
addresses = ["{GERMAN_DESK}"]
language = "de"
account = "main"
display_name = "Kundendienst"
agents = ["{AGENT[1]}"]
notify = ["{TEAM}"]
"""


def _reply(note, body: str) -> bytes:
    nid = note.header("Message-ID")
    quoted = f"\n\n-----Ursprüngliche Nachricht-----\nBetreff: {note.header('Subject')}\n\n{note.text}"
    return make_mail(
        subject=f"AW: {note.header('Subject')}",
        body=body + quoted,
        sender=AGENT,
        to=GERMAN_DESK,
        headers={"In-Reply-To": nid, "References": nid},
    )


@pytest.fixture
def german(tmp_path, imap_server, smtp_sink, db_url, imap_env):
    d = make_desk(tmp_path, imap_server, smtp_sink, db_url, conversations=GERMAN_QUEUE)
    yield d
    d.app.close()


def _german_case(desk):
    sent = desk.deliver(
        make_mail(
            subject="PDF-Export bricht ab",
            body="Guten Tag,\n\nder Export nach PDF bricht mit einem Fehler ab.\n\nViele Grüße\nJürgen Müller",
            to=GERMAN_DESK,
        )
    )
    (ack,) = to(sent, CUSTOMER[1])
    (note,) = to(sent, TEAM)
    case = ack.header("Subject").split("]", 1)[0].lstrip("[")
    assert desk.ticket(case).language == "de"
    return case, note


def test_an_invalid_command_on_a_german_case_gets_one_german_error_mail(german):
    case, note = _german_case(german)
    sent = german.deliver(_reply(note, "#slove\n#schwere 9\n\nSehr geehrter Herr Müller, erledigt."))
    assert to(sent, CUSTOMER[1]) == []  # all or nothing: nothing relayed
    (error,) = sent
    assert error.rcpt_tos == [AGENT[1]] and error.header("Content-Language") in ("", "de")
    assert "Ihre Befehle wurden nicht ausgeführt" in error.header("Subject")
    text = error.text
    assert f"Aus Ihrer Mail zu Fall {case} wurde nichts ausgeführt" in text
    assert 'Zeile "#slove": unbekannter Befehl #slove, meinten Sie #solve?' in text
    assert "Zeile \"#schwere 9\": unbekannte Schwere '9'" in text
    for english in ("line ", "unknown", "did you mean", "known:", "Your commands", "Please"):
        assert english not in text, english
    # The case's history keeps the reasons in English, as the log does.
    (rejected,) = [d for k, d in german.events(case) if k == "commands_rejected"]
    assert rejected["errors"][0].startswith('line "#slove": unknown command #slove')


def test_a_notice_of_another_step_is_german_too(tmp_path, imap_server, smtp_sink, db_url, imap_env):
    """A reply with nothing above the quote sends nothing; the agent is told so in German."""
    desk = make_desk(tmp_path, imap_server, smtp_sink, db_url, conversations=GERMAN_QUEUE)
    try:
        _, note = _german_case(desk)
        (notice,) = desk.deliver(_reply(note, ""))
        assert notice.rcpt_tos == [AGENT[1]]
        assert "an den Kunden wurde nichts gesendet: über der zitierten Benachrichtigung" in notice.text
        assert "nothing was sent" not in notice.text
    finally:
        desk.app.close()


def test_the_managers_escalation_does_not_offer_to_answer_the_customer(
    tmp_path, imap_server, smtp_sink, db_url, imap_env
):
    """The agents' warning is signed and says a reply answers the customer; the manager's breach is
    not signed, so it must not say so (a manager's reply reaches no customer)."""
    desk = sla_desk(tmp_path, imap_server, smtp_sink, db_url)
    try:
        desk.clock.now = berlin(2026, 11, 23, 9, 0)
        desk.deliver(make_mail(subject="Systemstillstand Linie 3", body="Alles steht."))
        desk.clock.now = berlin(2026, 11, 23, 11, 0)
        (warning,) = desk.escalate()
        assert CHIEF not in warning.rcpt_tos and warning.header("Message-ID").startswith("<mbn.")
        assert "Reply to this mail to answer the customer" in warning.text
        assert warning.text.startswith("##-")

        desk.clock.now = berlin(2026, 11, 23, 14, 0)
        (breach,) = to(desk.escalate(), CHIEF)
        assert not breach.header("Message-ID").startswith("<mbn.")
        text = breach.text
        assert "answer the customer" not in text and "##-" not in text and "#assign" not in text
        assert "does not reach the customer" in text
        assert "mailbridge tickets show" in text
    finally:
        desk.app.close()
