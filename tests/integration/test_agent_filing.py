"""Agents file cases for customers by mail (issue 19, parts 2–4): a proven agent's forward of a
customer's mail becomes the customer's case, ``#new`` opens a case for a caller counted from the
call, ``#help`` returns the cheat sheet. Mail in through IMAP (pymap), mail out read back from the
SMTP server (aiosmtpd), rows checked — on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime

import pytest

from mailbridge.outbound.templates import Templates
from mailbridge.resources import templates_dir
from mailbridge.views import ticket_detail
from tests.integration.conversation_support import (
    AGENT,
    AUTHSERV,
    CUSTOMER,
    CUSTOMER2,
    QUEUE_EXTRA,
    TEAM,
    berlin,
    make_desk,
    sla_desk,
    to,
)
from tests.support import SUPPORT_ADDRESS, make_mail

DKIM = {"Authentication-Results": f"{AUTHSERV}; dkim=pass header.d=vendor.example"}
# What a forger can add: a DKIM pass that our own server did not write.
FORGED = {"Authentication-Results": "mx.evil.example; dkim=pass header.d=vendor.example"}

REQUEST = (
    "Guten Tag Frau Agent,\n\nseit dem Update auf Version 4.2 startet unser Lizenzserver nicht mehr;\n"
    'im Protokoll steht "license store locked".\n\nViele Grüße\nJürgen Müller'
)
AGENT_WORDS = "Hallo Team,\n\nHerr Müller hat mir direkt geschrieben, bitte übernehmt den Fall.\n\nAnna"
LOG = ("lizenz.log", "text/plain", b"2026-11-23 08:10:01 ERROR license store locked\n")


def outlook_forward(*, headers=None, subject="WG: Lizenzserver startet nicht", forwarded_subject=None) -> bytes:
    """An agent's Outlook (German) inline forward of a customer's mail, with the customer's log."""
    body = (
        f"{AGENT_WORDS}\n\n-----Ursprüngliche Nachricht-----\n"
        f"Von: {CUSTOMER[0]} <{CUSTOMER[1]}>\n"
        "Gesendet: Montag, 23. November 2026 08:12\n"
        f"An: {AGENT[0]} <{AGENT[1]}>\n"
        f"Betreff: {forwarded_subject or 'Lizenzserver startet nicht'}\n\n{REQUEST}\n"
    )
    return make_mail(
        subject=subject,
        body=body,
        sender=AGENT,
        headers={"X-Mailer": "Microsoft Outlook 16.0", **(headers if headers is not None else DKIM)},
        attachments=[LOG],
        date=datetime(2026, 11, 23, 8, 55, tzinfo=UTC),
    )


def customer_original(message_id="<orig-4711@kunde.example>", subject="Lizenzserver startet nicht") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = f"{CUSTOMER[0]} <{CUSTOMER[1]}>"
    msg["To"] = f"{AGENT[0]} <{AGENT[1]}>"
    msg["Subject"] = subject
    msg["Date"] = format_datetime(datetime(2026, 11, 23, 7, 40, tzinfo=UTC))
    msg["Message-ID"] = message_id
    msg.set_content(REQUEST)
    msg.add_attachment(LOG[2], maintype="text", subtype="plain", filename=LOG[0])
    return msg


def thunderbird_attached_forward(original: EmailMessage, *, headers=None) -> bytes:
    """Thunderbird's "Forward As Attachment": the agent's words, the customer's mail as message/rfc822."""
    msg = EmailMessage()
    msg["From"] = f"{AGENT[0]} <{AGENT[1]}>"
    msg["To"] = SUPPORT_ADDRESS
    msg["Subject"] = f"Fwd: {original['Subject']}"
    msg["Date"] = format_datetime(datetime(2026, 11, 23, 8, 50, tzinfo=UTC))
    msg["Message-ID"] = "<fwd-1@vendor.example>"
    msg["User-Agent"] = "Mozilla Thunderbird"
    for k, v in (headers if headers is not None else DKIM).items():
        msg[k] = v
    msg.set_content("Bitte übernehmen, der Kunde hat mir direkt geschrieben.\n\nAnna")
    msg.add_attachment(original, filename=f"{original['Subject']}.eml")
    return msg.as_bytes(policy=SMTP)


def _case(sent) -> str:
    return sent.header("Subject").split("]", 1)[0].lstrip("[")


def _reply_to(ack, body="Hier noch der Screenshot-Text: Fehler 0x17.") -> bytes:
    mid = ack.header("Message-ID")
    return make_mail(subject=f"AW: {ack.header('Subject')}", body=body, headers={"In-Reply-To": mid, "References": mid})


@pytest.fixture
def desk(tmp_path, imap_server, smtp_sink, db_url, imap_env):
    d = make_desk(tmp_path, imap_server, smtp_sink, db_url)
    yield d
    d.app.close()


def test_outlook_inline_forward_opens_the_customers_case(desk):
    """A proven agent's Outlook forward: the case is the customer's (requester, original subject and
    date, the log), the agent's words are an internal note, the customer gets one acknowledgement
    naming the agent, and the customer's reply to it threads onto the case."""
    sent = desk.deliver(outlook_forward())
    acks = to(sent, CUSTOMER[1])
    assert len(acks) == 1, [m.rcpt_tos for m in sent]
    assert to(sent, AGENT[1]) == []  # the agent is not acknowledged as a requester
    ack = acks[0]
    print(ack.msg.as_string())
    assert "Anna Agent hat Ihre Nachricht an uns weitergeleitet und diesen Fall für Sie angelegt." in ack.text
    assert "Lizenzserver startet nicht" in ack.text and "lizenz.log" in ack.text
    case = _case(ack)
    t = desk.ticket(case)
    assert (t.requester_email, t.requester_name, t.subject) == (CUSTOMER[1], CUSTOMER[0], "Lizenzserver startet nicht")
    # "Montag, 23. November 2026 08:12" in the queue's zone (no calendar: UTC).
    assert t.created_at.replace(tzinfo=UTC) == datetime(2026, 11, 23, 8, 12, tzinfo=UTC)
    request, note = desk.messages(case)[:2]
    assert (request.kind, request.sender_email, request.body_text) == ("customer", CUSTOMER[1], REQUEST)
    assert (note.kind, note.sender_email, note.body_new) == ("note", AGENT[1], AGENT_WORDS)
    kinds = [k for k, _ in desk.events(case)]
    assert "filed_by_agent" in kinds and "ack_queued" in kinds
    detail = ticket_detail(desk.app, case, width=200)
    assert "filed_by_agent" in detail
    assert f"filed by {AGENT[1]} for {CUSTOMER[1]} (from their forwarded mail)" in " ".join(detail.split())

    later = desk.deliver(_reply_to(ack))
    assert len(desk.tickets()) == 1
    assert [m.sender_email for m in desk.messages(case) if m.direction == "in"][-1] == CUSTOMER[1]
    assert [m.rcpt_tos for m in later] == [[TEAM]]  # the agents hear of it; nobody else gets mail


def test_thunderbird_forward_as_attachment_opens_the_customers_case(desk):
    """Forwarded as an attachment: the attached mail is parsed like any other; the acknowledgement
    continues the customer's own thread (their Message-ID), their reply threads onto the case."""
    sent = desk.deliver(thunderbird_attached_forward(customer_original()))
    acks = to(sent, CUSTOMER[1])
    assert len(acks) == 1, [m.rcpt_tos for m in sent]
    ack = acks[0]
    assert ack.header("In-Reply-To") == "<orig-4711@kunde.example>"
    assert "Anna Agent hat Ihre Nachricht" in ack.text
    # The agents' notification shows the customer's request under the customer's name, with the file.
    (note_mail,) = to(sent, TEAM)
    assert f"<{CUSTOMER[1]}> (requester)" in note_mail.text and REQUEST.splitlines()[0] in note_mail.text
    assert "Bitte übernehmen" not in note_mail.text
    assert [p.get_filename() for p in note_mail.msg.iter_attachments()] == ["lizenz.log"]
    case = _case(ack)
    t = desk.ticket(case)
    assert t.requester_email == CUSTOMER[1]
    assert t.created_at.replace(tzinfo=UTC) == datetime(2026, 11, 23, 7, 40, tzinfo=UTC)
    request, note = desk.messages(case)[:2]
    assert request.message_id == "orig-4711@kunde.example" and request.kind == "customer"
    assert note.kind == "note" and note.body_new.startswith("Bitte übernehmen")
    with desk.app.session_factory() as s:
        from mailbridge.store.models import AttachmentRow

        names = [a.filename for a in s.query(AttachmentRow).filter(AttachmentRow.message_id == request.id)]
    assert names == ["lizenz.log"]

    desk.deliver(_reply_to(ack))
    assert len(desk.tickets()) == 1
    assert [m.sender_email for m in desk.messages(case) if m.direction == "in"][-1] == CUSTOMER[1]


def test_forged_agent_forward_changes_no_requester(desk):
    """Without our own server's DKIM pass, a mail from an agent's address is anyone's: it files
    nothing; its sender is the requester, as for any mail, and the customer hears nothing."""
    sent = desk.deliver(outlook_forward(headers=FORGED))
    assert to(sent, CUSTOMER[1]) == []
    (t,) = desk.tickets()
    assert t.requester_email == AGENT[1]
    assert "filed_by_agent" not in [k for k, _ in desk.events(t.case_number)]
    (message,) = [m for m in desk.messages(t.case_number) if m.direction == "in"]
    assert any("not proven" in f for f in message.flags)


def test_forward_of_a_mail_already_on_a_case_lands_there(desk):
    """The customer wrote to support and to the agent; the agent forwards it: the forward is the
    agent's note on that case, nothing is duplicated or sent to the customer."""
    original = customer_original(message_id="<both@kunde.example>")
    original.replace_header("To", f"{SUPPORT_ADDRESS}, {AGENT[1]}")
    first = desk.deliver(original.as_bytes(policy=SMTP))
    case = _case(to(first, CUSTOMER[1])[0])
    sent = desk.deliver(thunderbird_attached_forward(original))
    assert to(sent, CUSTOMER[1]) == []
    assert len(desk.tickets()) == 1
    kinds = [m.kind for m in desk.messages(case) if m.direction == "in"]
    assert kinds == ["customer", "note"]
    assert ("forward_noted", "the forwarded mail is on this case") in [(k, d.get("why")) for k, d in desk.events(case)]


@pytest.mark.parametrize("outer", ["WG: AW: [{case}] Lizenzserver", "WG: Lizenzserver"])
def test_forward_naming_a_case_is_a_note_on_it(desk, outer):
    """The customer answered the agent about an open case; the agent forwards it: it is matched by
    the case number (in the forward's own subject, or only in the forwarded one) and lands on that
    case as the agent's note, not relayed to the customer."""
    first = desk.deliver(make_mail(subject="Lizenzserver startet nicht", body=REQUEST, headers={}))
    case = _case(to(first, CUSTOMER[1])[0])
    sent = desk.deliver(outlook_forward(subject=outer.format(case=case), forwarded_subject=f"AW: [{case}] Lizenz"))
    assert to(sent, CUSTOMER[1]) == []
    assert len(desk.tickets()) == 1
    assert [m.kind for m in desk.messages(case) if m.direction == "in"][-1] == "note"


@pytest.fixture
def sla(tmp_path, imap_server, smtp_sink, db_url, imap_env):
    d = sla_desk(tmp_path, imap_server, smtp_sink, db_url)
    d.clock.now = berlin(2026, 11, 23, 10, 0)  # Monday 10:00 in Berlin
    yield d
    d.app.close()


CALL = (
    f"#new {CUSTOMER2[1]}\n#severity 1\n#received 2026-11-23 08:30\n\n"
    "Frau Kunde rief an: Systemstillstand, die Leitwarte zeigt keine Messwerte mehr.\n\nAnna"
)


def test_new_with_received_counts_from_the_call(sla):
    """``#new`` + ``#severity 1`` + ``#received``: the case is the caller's, taken by phone, and its
    first-response deadline is 4 business hours from the call (08:30 Berlin → 12:30), not from the
    mail (10:00 → 14:00). The caller gets the acknowledgement."""
    sent = sla.deliver(make_mail(subject="Leitwarte ohne Messwerte", body=CALL, sender=AGENT, headers=DKIM))
    acks = to(sent, CUSTOMER2[1])
    assert len(acks) == 1, [m.rcpt_tos for m in sent]
    print(acks[0].text)
    assert "Anna Agent hat diesen Fall nach Ihrem Anruf für Sie angelegt." in acks[0].text
    assert "#new" not in acks[0].text
    # The agents read the call's notes as the agent's, not as the caller's own words.
    (note_mail,) = to(sent, TEAM)
    assert f"<{AGENT[1]}> (agent)" in note_mail.text and "Frau Kunde rief an" in note_mail.text
    case = _case(acks[0])
    t = sla.ticket(case)
    assert t.requester_email == CUSTOMER2[1] and t.severity == "1"
    assert t.created_at.replace(tzinfo=UTC) == berlin(2026, 11, 23, 8, 30)
    assert t.first_response_due.replace(tzinfo=UTC) == berlin(2026, 11, 23, 12, 30)
    (first,) = [m for m in sla.messages(case) if m.direction == "in"]
    assert first.body_text.startswith("Frau Kunde rief an") and "#severity" not in first.body_text
    assert "taken by phone by anna.agent@vendor.example" in first.flags
    detail = ticket_detail(sla.app, case, width=200)
    assert "FLAG: taken by phone by anna.agent@vendor.example" in detail
    assert f"filed by anna.agent@vendor.example for {CUSTOMER2[1]} (taken by phone)" in " ".join(detail.split())


def test_new_with_a_typo_opens_nothing_and_says_why(sla):
    body = CALL.replace("#severity 1", "#severty 1")
    sent = sla.deliver(make_mail(subject="Leitwarte ohne Messwerte", body=body, sender=AGENT, headers=DKIM))
    assert sla.tickets() == []
    assert to(sent, CUSTOMER2[1]) == []
    (err,) = to(sent, AGENT[1])
    print(err.text)
    # In the queue's language (the agents'): English.
    assert "no case was opened" in err.text and "#severty" in err.text and "did you mean #severity" in err.text


def test_received_in_the_future_is_an_error(sla):
    body = CALL.replace("2026-11-23 08:30", "2026-11-23 11:30")
    sent = sla.deliver(make_mail(subject="Leitwarte", body=body, sender=AGENT, headers=DKIM))
    assert sla.tickets() == []
    (err,) = to(sent, AGENT[1])
    assert "the time is in the future" in err.text


def test_help_returns_the_cheat_sheet_and_opens_no_case(desk):
    sent = desk.deliver(make_mail(subject="Hilfe", body="#help", sender=AGENT, headers=DKIM))
    assert desk.tickets() == []
    (mail,) = sent
    assert mail.rcpt_tos == [AGENT[1]]
    expected = Templates(templates_dir()).render("en", "help.txt.j2")
    assert mail.text.strip().splitlines() == expected.strip().splitlines()
    assert "#new kunde@firma.example" in mail.text and mail.header("Subject") == "mailbridge: the agents' cheat sheet"


def test_queue_can_switch_off_the_acknowledgement_of_forwards(tmp_path, imap_server, smtp_sink, db_url, imap_env):
    desk = make_desk(
        tmp_path, imap_server, smtp_sink, db_url, queue_extra=QUEUE_EXTRA + "acknowledge_forwards = false\n"
    )
    try:
        sent = desk.deliver(outlook_forward())
        assert to(sent, CUSTOMER[1]) == []
        (t,) = desk.tickets()
        assert t.requester_email == CUSTOMER[1]
        assert ("ack_suppressed", "the queue does not acknowledge forwarded mail (acknowledge_forwards)") in [
            (k, d.get("reason")) for k, d in desk.events(t.case_number)
        ]
    finally:
        desk.app.close()


def test_an_old_forwarded_mail_counts_from_the_forward(desk):
    """A mail from weeks ago forwarded now: the case counts from now (not overdue at once), flagged."""
    old = customer_original()
    old.replace_header("Date", format_datetime(datetime(2026, 10, 1, 9, 0, tzinfo=UTC)))
    sent = desk.deliver(thunderbird_attached_forward(old))
    case = _case(to(sent, CUSTOMER[1])[0])
    assert desk.ticket(case).created_at.replace(tzinfo=UTC) == desk.clock.now
    request = next(m for m in desk.messages(case) if m.direction == "in")
    assert any("was not used" in f for f in request.flags)


def test_unproven_new_opens_no_case_for_the_customer(desk):
    sent = desk.deliver(make_mail(subject="Anruf", body=CALL, sender=AGENT, headers=FORGED))
    assert to(sent, CUSTOMER2[1]) == []
    (t,) = desk.tickets()
    assert t.requester_email == AGENT[1]
    (message,) = [m for m in desk.messages(t.case_number) if m.direction == "in"]
    assert any("not proven" in f for f in message.flags)
