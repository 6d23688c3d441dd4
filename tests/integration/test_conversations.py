"""Conversations end to end: replies land on the right case, agents answer from their mail client
(notification → reply → relay; direct replies), commands change cases only when the agent is proven,
the lifecycle reopens or links cases. Mail in through IMAP, mail out read back from the SMTP server,
database rows checked — on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
from datetime import timedelta

import pytest

from mailbridge.outbound.threadindex import parse_thread_index
from mailbridge.outbound.tokens import case_for_notification_id
from mailbridge.views import ticket_detail
from tests.integration.conversation_support import (
    AGENT,
    AGENT2,
    AUTHSERV,
    COLLEAGUE,
    CUSTOMER,
    STRANGER,
    TEAM,
    make_desk,
    to,
)
from tests.support import SUPPORT_ADDRESS, make_mail

FIRST = "Guten Tag,\n\nder Export nach PDF bricht mit Fehler 0x80004005 ab.\n\nViele Grüße\nJürgen Müller"


@pytest.fixture
def desk(tmp_path, imap_server, smtp_sink, db_url, imap_env):
    d = make_desk(tmp_path, imap_server, smtp_sink, db_url)
    yield d
    d.app.close()


def _mid(header: str) -> str:
    return header.strip().strip("<>")


def _open_case(desk, mid="<first@kunde.example>", subject="PDF-Export bricht ab", sender=CUSTOMER, cc=None):
    sent = desk.deliver(make_mail(subject=subject, body=FIRST, sender=sender, message_id=mid, cc=cc))
    ack = to(sent, sender[1])
    assert len(ack) == 1, [m.rcpt_tos for m in sent]
    notes = to(sent, TEAM)
    case = ack[0].header("Subject").split("]", 1)[0].lstrip("[")
    assert desk.ticket(case).status == "new"
    return case, ack[0], (notes[0] if notes else None)


def _agent_reply(notification, body, *, sender=AGENT, extra_headers=None, subject=None, quote=True, to_=None):
    nid = notification.header("Message-ID")
    quoted = ""
    if quote:
        quoted = (
            "\n\n-----Ursprüngliche Nachricht-----\n"
            f"Von: Vendor Support <{SUPPORT_ADDRESS}>\nGesendet: Montag, 23. November 2026 09:00\n"
            f"An: {TEAM}\nBetreff: {notification.header('Subject')}\n\n" + notification.text
        )
    headers = {"In-Reply-To": nid, "References": nid, **(extra_headers or {})}
    return make_mail(
        subject=subject or f"AW: {notification.header('Subject')}",
        body=body + quoted,
        sender=sender,
        to=to_ or SUPPORT_ADDRESS,
        headers=headers,
    )


def test_notification_reply_is_relayed_to_the_customer_in_their_thread(desk):
    """A new case notifies the agents with a signed Message-ID; the agent's reply to it is recorded,
    relayed to the customer from the support address (new text only, agent's name, the customer's
    thread continued, Outlook conversation headers), and sets the first-response time."""
    case, ack, note = _open_case(desk)
    assert note is not None and f"[{case}]" in note.header("Subject") and "New case" in note.header("Subject")
    assert case_for_notification_id(_mid(note.header("Message-ID")), desk.app.notification_secrets) == case
    assert note.header("Auto-Submitted") == "auto-generated"
    assert "der Export nach PDF bricht" in note.text
    for m in (ack, note):
        assert m.header("Thread-Topic") == "PDF-Export bricht ab"
        assert parse_thread_index(m.header("Thread-Index")) is not None

    sent = desk.deliver(_agent_reply(note, "Hallo Herr Müller,\n\nbitte starten Sie den Dienst neu.\n\nGruß\nAnna"))
    relay = to(sent, CUSTOMER[1])
    assert len(sent) == 1 and len(relay) == 1
    r = relay[0]
    assert r.mail_from == SUPPORT_ADDRESS and "Anna Agent" in r.header("From")
    assert r.header("Subject") == f"[{case}] PDF-Export bricht ab"
    assert "bitte starten Sie den Dienst neu" in r.text and "Anna Agent" in r.text
    for leaked in ("Ursprüngliche Nachricht", "0x80004005", "Commands", "##-", TEAM):
        assert leaked not in r.text, leaked
    # The customer's conversation continues: our acknowledgement is the parent, their mail is in it.
    assert _mid(r.header("In-Reply-To")) == _mid(ack.header("Message-ID"))
    assert "first@kunde.example" in r.header("References")
    root = base64.b64decode(ack.header("Thread-Index"))[:22]
    assert base64.b64decode(r.header("Thread-Index"))[:22] == root
    assert not r.header("Auto-Submitted")

    t = desk.ticket(case)
    assert t.status == "open" and t.first_response_at == desk.clock.now
    kinds = [m.kind for m in desk.messages(case)]
    assert kinds == ["customer", "ack", "notification", "agent", "relay"]
    assert [k for k, _ in desk.events(case)].count("first_response") == 1

    # The customer answers the relay: it lands by thread headers, agents hear of it, no new ack.
    sent = desk.deliver(
        make_mail(
            subject=f"Re: [{case}] PDF-Export bricht ab",
            body="Danke, jetzt geht es wieder.\n\nAm 23.11.2026 schrieb Support:\n> bitte starten Sie den Dienst neu",
            headers={
                "In-Reply-To": r.header("Message-ID"),
                "References": r.header("References") + " " + r.header("Message-ID"),
            },
        )
    )
    assert [m.rcpt_tos for m in sent] == [[TEAM]] and "Customer reply" in sent[0].header("Subject")
    reply = desk.messages(case)[-2]
    assert reply.kind == "customer" and reply.routing["rule"] == "thread-header"
    assert reply.body_new == "Danke, jetzt geht es wieder."


def test_commands_change_the_case_in_order_and_are_not_relayed(desk):
    """#severity, #assign, #pending change the case and stay out of the relayed text; a customer
    reply makes a pending case open again; #note relays nothing; #solve and #close set the status."""
    case, _, note = _open_case(desk)
    sent = desk.deliver(
        _agent_reply(note, f"#severity 2\n#assign {AGENT2[1]}\n#pending\n\nBitte senden Sie uns die Logdatei.")
    )
    (relay,) = to(sent, CUSTOMER[1])
    assert "Bitte senden Sie uns die Logdatei." in relay.text and "#" not in relay.text.split("--")[0]
    t = desk.ticket(case)
    assert (t.severity, t.assignee, t.status) == ("2", AGENT2[1], "pending")
    assert [e for e in desk.events(case) if e[0] == "command"] == [
        ("command", {"name": "severity", "arg": "2", "by": AGENT[1]}),
        ("command", {"name": "assign", "arg": AGENT2[1], "by": AGENT[1]}),
        ("command", {"name": "pending", "arg": None, "by": AGENT[1]}),
    ]

    desk.deliver(make_mail(subject=f"AW: [{case}] PDF-Export bricht ab", body="Anbei die Logdatei."))
    assert desk.ticket(case).status == "open"

    sent = desk.deliver(_agent_reply(note, "#note\nKunde nutzt noch Version 7.2, intern prüfen."))
    assert sent == []
    assert desk.messages(case)[-1].kind == "note"

    desk.deliver(_agent_reply(note, "#pending"))
    assert desk.ticket(case).status == "pending"
    sent = desk.deliver(_agent_reply(note, "#open\nWir sehen uns das selbst an."))
    assert desk.ticket(case).status == "open" and len(to(sent, CUSTOMER[1])) == 1

    sent = desk.deliver(_agent_reply(note, "#solve\n\nDas Update 7.3 behebt den Fehler."))
    assert len(to(sent, CUSTOMER[1])) == 1
    t = desk.ticket(case)
    assert t.status == "solved" and t.solved_at == desk.clock.now

    sent = desk.deliver(_agent_reply(note, "#close"))
    assert sent == [] and desk.ticket(case).status == "closed"


def test_invalid_commands_apply_nothing_and_the_agent_gets_an_error_mail(desk):
    """A block with a mistyped command applies none of its commands and relays nothing; the agent
    gets a mail naming the line."""
    case, _, note = _open_case(desk)
    sent = desk.deliver(_agent_reply(note, "#solve\n#nte\nInterne Notiz, die nie beim Kunden landen darf."))
    assert to(sent, CUSTOMER[1]) == []
    (err,) = to(sent, AGENT[1])
    assert "#nte" in err.text and f"[{case}]" in err.header("Subject")
    t = desk.ticket(case)
    assert t.status == "new" and t.first_response_at is None
    assert desk.messages(case)[-2].kind == "agent_rejected"


@pytest.mark.parametrize(
    "forgery",
    ["no-reference", "tampered-signature", "foreign-dkim-header", "signature-of-another-case"],
)
def test_a_forged_agent_from_never_changes_a_case(desk, forgery):
    """A mail that only claims an agent's address (no valid signed notification for this case, no
    trusted DKIM pass) is stored and flagged, relays nothing and applies no command; the real agent
    is told and the agents are notified with a flag."""
    case, _, note = _open_case(desk)
    other_case, _, other_note = _open_case(desk, mid="<other@kunde.example>", subject="Lizenzfrage")
    nid = _mid(note.header("Message-ID"))
    headers = {}
    if forgery == "tampered-signature":
        local, domain = nid.split("@")
        bad = f"{local[:-1]}{'b' if local[-1] == 'a' else 'a'}@{domain}"  # one character of the MAC changed
        headers = {"In-Reply-To": f"<{bad}>", "References": f"<{bad}>"}
    elif forgery == "foreign-dkim-header":
        headers = {"Authentication-Results": "mx.evil.example; dkim=pass header.d=vendor.example"}
    elif forgery == "signature-of-another-case":
        # A valid signature, but for another case: the mail lands on this case (its newest
        # reference), and the signature proves nothing here.
        headers = {"References": f"{other_note.header('Message-ID')} <first@kunde.example>"}
    sent = desk.deliver(
        make_mail(
            subject=f"[{case}] erledigt",
            body="#close\n#severity 1\nIst erledigt, Sie können den Fall schließen.",
            sender=AGENT,
            headers=headers,
        )
    )
    t = desk.ticket(case)
    assert (t.status, t.severity, t.first_response_at) == ("new", None, None)
    assert to(sent, CUSTOMER[1]) == []
    m = desk.messages(case)
    forged = next(x for x in m if x.direction == "in" and x.sender_email == AGENT[1])
    assert forged.kind == "agent_unverified" and forged.flags and "unverified" in forged.flags[0]
    (warn,) = to(sent, AGENT[1])
    assert "not proven" in warn.text or "nicht" in warn.text
    (flagged,) = to(sent, TEAM)
    assert "Unverified" in flagged.header("Subject")
    assert desk.ticket(other_case).status == "new"


def test_direct_agent_reply_with_trusted_dkim_is_recorded_and_not_relayed(desk):
    """An agent who answers the customer directly (support in Cc) is recorded as the agent's reply
    when our own server's Authentication-Results says DKIM pass; nothing is sent again."""
    case, _, _ = _open_case(desk)
    sent = desk.deliver(
        make_mail(
            subject=f"AW: [{case}] PDF-Export bricht ab",
            body="Hallo Herr Müller,\n\nich rufe Sie gleich an.\n\nAnna",
            sender=AGENT,
            to=f"{CUSTOMER[0]} <{CUSTOMER[1]}>",
            cc=SUPPORT_ADDRESS,
            headers={
                "Authentication-Results": f"{AUTHSERV}; dkim=pass (2048-bit key) header.d=vendor.example",
                "In-Reply-To": "<first@kunde.example>",
            },
        )
    )
    assert sent == []
    t = desk.ticket(case)
    assert t.first_response_at == desk.clock.now and t.status == "open"
    last = desk.messages(case)[-1]
    assert last.kind == "agent" and last.routing["author"]["proof"] == "dkim"
    assert ("agent_replied_directly", {"by": AGENT[1]}) in desk.events(case)


def test_agent_out_of_office_to_a_notification_is_stored_and_does_nothing(desk):
    """An agent's auto-reply to a notification is not relayed and changes nothing."""
    case, _, note = _open_case(desk)
    sent = desk.deliver(
        _agent_reply(note, "Ich bin bis 30.11. nicht im Büro.", extra_headers={"Auto-Submitted": "auto-replied"})
    )
    assert sent == []
    assert desk.messages(case)[-1].kind == "auto" and desk.ticket(case).status == "new"


def test_reopen_within_the_window_and_a_linked_new_case_after_it(desk):
    """A reply to a solved case reopens it within the window; after the window (or once closed) a
    new case linked to the old one is opened and its acknowledgement says so; solved cases close
    by themselves after the window."""
    case, _, note = _open_case(desk)
    desk.deliver(_agent_reply(note, "#solve\nBehoben in 7.3."))
    desk.clock.now += timedelta(days=2)
    sent = desk.deliver(make_mail(subject=f"AW: [{case}] PDF-Export bricht ab", body="Leider wieder da."))
    assert desk.ticket(case).status == "open" and to(sent, CUSTOMER[1]) == []
    assert "Reopened" in to(sent, TEAM)[0].header("Subject")
    assert "reopened" in [k for k, _ in desk.events(case)]

    desk.deliver(_agent_reply(note, "#solve\nJetzt aber."))
    desk.clock.now += timedelta(days=8)
    sent = desk.deliver(
        make_mail(
            subject=f"AW: [{case}] PDF-Export bricht ab",
            body="Der Fehler ist zurück.",
            headers={"In-Reply-To": "<first@kunde.example>"},
        )
    )
    new = desk.tickets()[-1]
    assert new.case_number != case and new.linked_ticket_id == desk.ticket(case).id
    assert new.subject == "PDF-Export bricht ab"
    (ack,) = to(sent, CUSTOMER[1])
    assert new.case_number in ack.header("Subject") and case in ack.text and "abgeschlossen" in ack.text
    assert desk.ticket(case).status == "solved"
    assert ("follow_up_case", {"case": new.case_number, "reason": "closed-case"}) in desk.events(case)

    assert desk.app.close_solved() == [case]
    assert desk.ticket(case).status == "closed"
    sent = desk.deliver(make_mail(subject=f"[{case}] noch eine Frage", body="Noch eine Frage dazu."))
    assert desk.tickets()[-1].linked_ticket_id == desk.ticket(case).id
    assert len(to(sent, CUSTOMER[1])) == 1


def test_matching_rules_subject_body_conflict_and_unknown_numbers(desk):
    """Subject tags in many shapes and body references land on their case; headers beat the subject
    (recorded as a conflict); a mistyped number gets a suggestion only for the sender's own case;
    a support address Cc'd into an unknown thread opens a case."""
    case, ack, _ = _open_case(desk)
    other, _, _ = _open_case(desk, mid="<second@kunde.example>", subject="Lizenzserver")
    digits = case[1:]
    for n, subject in enumerate(
        [f"AW: WG: Re: [{case}] x", f"Fall-Nr. {case.lower()}", f"RE: Case C-{digits}", f"SV: C {digits} Frage"]
    ):
        desk.deliver(make_mail(subject=subject, body=f"Nachtrag {n}.", message_id=f"<subj-{n}@kunde.example>"))
        assert desk.inbound(f"subj-{n}@kunde.example").routing["rule"] == "subject", subject

    desk.deliver(
        make_mail(
            subject="Nachtrag", body=f"Bezug: Fall-Nr. {case}\n\nNoch ein Detail.", message_id="<body@kunde.example>"
        )
    )
    m = desk.inbound("body@kunde.example")
    assert m.routing["rule"] == "body" and m.ticket_id == desk.ticket(case).id

    desk.deliver(
        make_mail(
            subject=f"Re: [{other}] falsch",
            body="Antwort auf die Bestätigung.",
            message_id="<conflict@kunde.example>",
            headers={"In-Reply-To": ack.header("Message-ID")},
        )
    )
    m = desk.inbound("conflict@kunde.example")
    assert m.ticket_id == desk.ticket(case).id and m.routing["rule"] == "thread-header"
    assert m.routing["conflicts"][0]["case"] == other and m.flags

    typo = case[:-2] + case[-1] + case[-2] if case[-1] != case[-2] else case[:-1] + str((int(case[-1]) + 1) % 10)
    sent = desk.deliver(
        make_mail(subject=f"Frage zu {typo}", body="Wie ist der Stand?", message_id="<typo@kunde.example>")
    )
    (ack2,) = to(sent, CUSTOMER[1])
    assert typo in ack2.text and case in ack2.text  # "did you mean <case>?"
    sent = desk.deliver(
        make_mail(
            subject=f"Frage zu {typo}", body="Wie ist der Stand?", sender=STRANGER, message_id="<typo2@o.example>"
        )
    )
    (ack3,) = to(sent, STRANGER[1])
    assert typo in ack3.text and case not in ack3.text  # never another organisation's case

    before = len(desk.tickets())
    desk.deliver(
        make_mail(
            subject="Re: Angebot Wartungsvertrag",
            body="Ich nehme den Support mit in Kopie.",
            sender=COLLEAGUE,
            cc=SUPPORT_ADDRESS,
            to="einkauf@kunde.example",
            headers={"In-Reply-To": "<unknown-thread@kunde.example>", "References": "<unknown-thread@kunde.example>"},
        )
    )
    assert len(desk.tickets()) == before + 1


def test_participants_colleagues_and_third_parties(desk):
    """Cc'd customers of the first mail take part; a colleague from the requester's domain is a
    customer; an unknown third party's reply is attached and flagged, nothing is sent back to it."""
    case, _, _ = _open_case(desk, cc=f"{COLLEAGUE[0]} <{COLLEAGUE[1]}>, {AGENT[1]}")
    t = desk.ticket(case)
    desk.deliver(make_mail(subject=f"AW: [{case}] x", body="Ergänzung der Kollegin.", sender=COLLEAGUE))
    assert desk.messages(case)[-2].kind == "customer"
    sent = desk.deliver(
        make_mail(subject=f"AW: [{case}] PDF-Export bricht ab", body="Ich habe das gleiche Problem.", sender=STRANGER)
    )
    assert to(sent, STRANGER[1]) == []
    (flagged,) = to(sent, TEAM)
    assert "Third party" in flagged.header("Subject") and "mallory@other.example" in flagged.text
    m = next(x for x in desk.messages(case) if x.sender_email == STRANGER[1])
    assert m.kind == "third_party" and m.flags
    assert desk.ticket(case).status == t.status
    detail = ticket_detail(desk.app, case, width=200)
    assert f"{COLLEAGUE[1]} (customer)" in detail and AGENT[1] + " (" not in detail
    assert "FLAG: unknown third party" in detail and "onto this case by the case number in its subject" in detail


def test_urgency_request_is_recorded_and_shown_to_agents(desk):
    """A customer asking for more urgency is recorded as a request and shown in the notification."""
    case, _, _ = _open_case(desk)
    sent = desk.deliver(
        make_mail(
            subject=f"AW: [{case}] PDF-Export bricht ab", body="Bitte Dringlichkeit erhöhen, die Produktion steht!"
        )
    )
    (n,) = to(sent, TEAM)
    assert "URGENCY REQUESTED" in n.text
    assert (
        "urgency_requested",
        {"words": ["dringlichkeit erhöhen", "produktion steht"], "by": CUSTOMER[1]},
    ) in desk.events(case)


def test_third_party_new_ticket_policy(tmp_path, imap_server, smtp_sink, db_url, imap_env):
    """With third_party = "new-ticket" a stranger's reply opens its own case, whose acknowledgement
    reveals nothing of the referenced case."""
    desk = make_desk(tmp_path, imap_server, smtp_sink, db_url, conversations='third_party = "new-ticket"\n')
    try:
        case, _, _ = _open_case(desk, subject="Vertraulich: Lizenzserver ACME")
        sent = desk.deliver(make_mail(subject=f"[{case}] Hallo", body="Worum geht es in diesem Fall?", sender=STRANGER))
        (ack,) = to(sent, STRANGER[1])
        new = desk.tickets()[-1]
        assert new.requester_email == STRANGER[1] and new.case_number in ack.header("Subject")
        assert case not in ack.msg.as_string()
        assert "Vertraulich" not in ack.msg.as_string() and CUSTOMER[1] not in ack.msg.as_string()
    finally:
        desk.app.close()


DKIM = {"Authentication-Results": f"{AUTHSERV}; dkim=pass header.d=vendor.example"}


def test_where_an_agent_mail_went_decides_what_it_is(desk):
    """An agent's proven mail to a colleague with support in Cc is an internal note; one to an
    outsider is recorded, never relayed; a bottom-posted reply with nothing above the quote sends
    nothing and the agent is told."""
    case, _, note = _open_case(desk)
    sent = desk.deliver(
        make_mail(
            subject=f"[{case}] intern",
            body="Kunde ist schwierig, bitte keinen Rabatt anbieten.",
            sender=AGENT,
            to=AGENT2[1],
            cc=SUPPORT_ADDRESS,
            headers=DKIM,
        )
    )
    assert to(sent, CUSTOMER[1]) == [] and desk.messages(case)[-1].kind == "note"
    sent = desk.deliver(
        make_mail(
            subject=f"[{case}] Frage an den Hersteller",
            body="Kennen Sie den Fehler 0x80004005?",
            sender=AGENT,
            to="partner@hersteller.example",
            cc=SUPPORT_ADDRESS,
            headers=DKIM,
        )
    )
    assert to(sent, CUSTOMER[1]) == [] and desk.ticket(case).first_response_at is None
    assert "agent_wrote_elsewhere" in [k for k, _ in desk.events(case)]

    # Bottom-posted: the quoted notification first, the answer below it.
    sent = desk.deliver(
        make_mail(
            subject=f"AW: {note.header('Subject')}",
            body=note.text + "\n\nBitte starten Sie den Dienst neu.\n",
            sender=AGENT,
            headers={"In-Reply-To": note.header("Message-ID"), "References": note.header("Message-ID")},
        )
    )
    assert to(sent, CUSTOMER[1]) == []
    (notice,) = to(sent, AGENT[1])
    assert "nothing was sent" in notice.text


def test_a_notification_that_reached_the_customer_is_revoked(desk):
    """An agent who replies to a notification and adds the customer leaks its signed id: the mail
    applies nothing, the agent is told, and a forged mail quoting that id later proves nothing."""
    case, _, note = _open_case(desk)
    leak = _agent_reply(
        note, "#solve\nHallo Herr Müller, erledigt.", to_=f"{SUPPORT_ADDRESS}, {CUSTOMER[1]}", quote=True
    )
    sent = desk.deliver(leak)
    assert desk.ticket(case).status == "new"
    (warn,) = to(sent, AGENT[1])
    assert "no longer proves anything" in warn.text
    assert "notification_revoked" in [k for k, _ in desk.events(case)]
    forged = _agent_reply(note, "#close\nBitte überweisen Sie 500 EUR an DE00 1234.", quote=False)
    sent = desk.deliver(forged)
    assert desk.ticket(case).status == "new" and to(sent, CUSTOMER[1]) == []
    forged_row = next(m for m in desk.messages(case) if "500 EUR" in (m.body_text or "") and m.direction == "in")
    assert forged_row.kind == "agent_unverified"


def test_answers_go_to_the_first_mails_reply_to_and_an_agent_reply_reopens_a_closed_case(desk):
    """A web form's mail (From noreply, Reply-To the customer) is answered at Reply-To, by the
    acknowledgement and by relays; an agent answering a closed case takes it up again, so the
    customer's answer lands on it."""
    sent = desk.deliver(
        make_mail(
            subject="Kontaktformular: Lizenz",
            body="Name: Max Muster\nNachricht: Unsere Lizenz ist abgelaufen.",
            sender=("Webformular", "noreply@kunde.example"),
            headers={"Reply-To": "Max Muster <max.muster@kunde.example>"},
        )
    )
    (ack,) = to(sent, "max.muster@kunde.example")
    case = ack.header("Subject").split("]")[0].lstrip("[")
    (note,) = to(sent, TEAM)
    desk.deliver(_agent_reply(note, "#close"))
    assert desk.ticket(case).status == "closed"
    sent = desk.deliver(_agent_reply(note, "Hallo Herr Muster, die neue Lizenz ist unterwegs."))
    (relay,) = to(sent, "max.muster@kunde.example")
    assert "unterwegs" in relay.text and to(sent, "noreply@kunde.example") == []
    assert desk.ticket(case).status == "open"
    before = len(desk.tickets())
    desk.deliver(
        make_mail(
            subject=f"Re: [{case}] Kontaktformular: Lizenz",
            body="Danke!",
            sender=("Max Muster", "max.muster@kunde.example"),
            headers={"In-Reply-To": relay.header("Message-ID")},
        )
    )
    assert len(desk.tickets()) == before
    reply = [m for m in desk.messages(case) if m.direction == "in"][-1]
    assert reply.routing["author"]["role"] == "requester"  # the Reply-To address is the requester


def test_unmarked_autoresponders_are_machine_made_and_mail_per_case_is_limited(
    tmp_path, imap_server, smtp_sink, db_url, imap_env
):
    """X-Autoreply / Precedence mark machine mail even without Auto-Submitted: an agent mailbox's
    autoresponder is never relayed; notifications per case and hour are capped (a loop breaker)."""
    desk = make_desk(tmp_path, imap_server, smtp_sink, db_url, conversations="max_mails_per_case_per_hour = 3\n")
    try:
        case, _, note = _open_case(desk)
        sent = desk.deliver(_agent_reply(note, "Ich bin nicht im Büro.", extra_headers={"X-Autoreply": "yes"}))
        assert sent == [] and desk.messages(case)[-1].kind == "auto"
        sent = desk.deliver(_agent_reply(note, "Abwesend.", sender=AGENT2, extra_headers={"Precedence": "auto_reply"}))
        assert sent == []
        notified = 1
        for n in range(4):
            sent = desk.deliver(make_mail(subject=f"AW: [{case}] x", body=f"Nachtrag {n}"))
            notified += len(to(sent, TEAM))
        assert notified == 3
        assert "mail_limit_reached" in [k for k, _ in desk.events(case)]
    finally:
        desk.app.close()


def test_a_signed_id_in_a_customer_mail_is_revoked_and_never_sent_to_customers(desk):
    """A customer who got a signed notification id (a Bcc of the agent's reply) and answers with it
    revokes it: a forged agent mail quoting it proves nothing; no mail to a customer carries one."""
    case, _, note = _open_case(desk)
    nid = note.header("Message-ID")
    desk.deliver(
        make_mail(
            subject=f"AW: [{case}] PDF-Export bricht ab",
            body="Danke für die schnelle Antwort.",
            headers={"In-Reply-To": nid, "References": f"<first@kunde.example> {nid}"},
        )
    )
    assert "notification_revoked" in [k for k, _ in desk.events(case)]
    sent = desk.deliver(_agent_reply(note, "#close\nErledigt.", quote=False))
    assert desk.ticket(case).status == "new" and to(sent, CUSTOMER[1]) == []
    # A later legitimate relay (answering a fresh notification) does not carry any signed id.
    fresh = to(desk.deliver(make_mail(subject=f"AW: [{case}] x", body="Noch etwas.")), TEAM)[0]
    (relay,) = to(desk.deliver(_agent_reply(fresh, "Wir melden uns morgen.")), CUSTOMER[1])
    assert "mbn." not in relay.header("References") + relay.header("In-Reply-To")


def test_a_capped_relay_tells_the_agent_and_changes_nothing(tmp_path, imap_server, smtp_sink, db_url, imap_env):
    """When a case's hourly relay cap is reached, the agent is told nothing was sent, and the case
    keeps its status."""
    desk = make_desk(tmp_path, imap_server, smtp_sink, db_url, conversations="max_mails_per_case_per_hour = 1\n")
    try:
        case, _, note = _open_case(desk)
        assert len(to(desk.deliver(_agent_reply(note, "#solve\nAntwort eins.")), CUSTOMER[1])) == 1
        sent = desk.deliver(_agent_reply(note, "Antwort zwei."))
        assert to(sent, CUSTOMER[1]) == []
        (notice,) = to(sent, AGENT[1])
        assert "already sent 1 relayed replies" in notice.text
        assert desk.ticket(case).status == "solved"
    finally:
        desk.app.close()


def test_a_second_web_form_sender_is_not_the_requester(desk):
    """A case opened through a web form belongs to its Reply-To: another form submission from the
    same noreply address, answering to someone else, is a third party's mail."""
    sent = desk.deliver(
        make_mail(
            subject="Kontaktformular: Lizenz",
            body="Unsere Lizenz ist abgelaufen.",
            sender=("Webformular", "noreply@forms.example"),
            headers={"Reply-To": "max.muster@kunde.example"},
        )
    )
    case = to(sent, "max.muster@kunde.example")[0].header("Subject").split("]")[0].lstrip("[")
    desk.deliver(
        make_mail(
            subject=f"Kontaktformular: [{case}]",
            body="Wie ist der Stand?",
            sender=("Webformular", "noreply@forms.example"),
            headers={"Reply-To": "eve@evil.example"},
        )
    )
    last = [m for m in desk.messages(case) if m.direction == "in"][-1]
    assert last.kind == "third_party" and "eve@evil.example" in last.flags[0]


def test_relays_copy_customers_from_the_first_mail_but_not_colleagues_found_by_domain(desk):
    """A customer Cc'd on the first mail gets the relay in Cc; a colleague who wrote later from the
    same domain is recorded on the case but not copied on our answers."""
    other = ("Otto Kunde", "otto.kunde@kunde.example")
    case, _, note = _open_case(desk, cc=f"{other[0]} <{other[1]}>")
    desk.deliver(make_mail(subject=f"AW: [{case}] x", body="Ich bin die Kollegin.", sender=COLLEAGUE))
    assert desk.messages(case)[-2].routing["author"]["role"] == "colleague"
    (relay,) = to(desk.deliver(_agent_reply(note, "Wir kümmern uns darum.")), CUSTOMER[1])
    assert other[1] in relay.rcpt_tos and COLLEAGUE[1] not in relay.rcpt_tos
    assert other[1] in relay.header("Cc") and COLLEAGUE[1] not in relay.header("Cc")
