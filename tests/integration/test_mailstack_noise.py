"""Loop and bounce protection against the real mail stack (tests/mailstack.py): what
tests/integration/test_noise.py shows with hand-made bounces and autoresponders, here with the real
thing — Postfix's own delivery-status notification for an acknowledgement it could not deliver, and
Dovecot/Pigeonhole's Sieve ``vacation`` on the customer's mailbox answering mailbridge's mail.

The bounce: the customer's address does not exist (Dovecot's LMTP answers 550 5.1.1 for it) or its
domain takes no mail (the stack's ``error:`` transport, 5.7.1). mailbridge's acknowledgement leaves
with the support address as envelope sender, Postfix bounces it, and its DSN lands in the support
mailbox, where mailbridge fetches it, matches it to the case by the returned copy of the ack and
stops automatic mail to the address for 60 days.

The autoresponder: a real RFC 5230 vacation (``:seconds 0``: it would answer every mail it may).
Pigeonhole never answers a mail that carries ``Auto-Submitted`` (RFC 3834 5, RFC 5230 4.5), so it never
answers mailbridge's acknowledgement — an autoresponder war between Sieve and mailbridge cannot even
start from the ack, and a vacation that "answers automatic mail too" cannot be built with Sieve (no
setting of Pigeonhole turns that check off). What a vacation does answer is a person's mail: the
agent's answer relayed to the customer. That reply comes back to the support address, and mailbridge
records it on the case as an out-of-office reply, changes nothing and sends nothing: the exchange ends
there. Both directions of the protection are visible in Pigeonhole's log.
"""

from __future__ import annotations

import time
from datetime import timedelta
from email.message import EmailMessage

import pytest
from sqlalchemy import func, select

from mailbridge.store.db import session_scope
from mailbridge.store.models import AddressHealth, Outbox, RawMessage
from tests.integration.conversation_support import AGENT, AGENT2, COLLEAGUE, CUSTOMER, TEAM, to
from tests.mailstack import (  # noqa: F401  (fixtures: mailstack, mailstack_session, mailstack_sieve, …)
    Delivered,
    MailStack,
    mailstack_fixture,
    mailstack_session_fixture,
    mailstack_sieve_fixture,
    mailstack_sieve_session_fixture,
    stack_desk,
)
from tests.support import SUPPORT_ADDRESS, make_mail

pytestmark = pytest.mark.mailstack

# Everyone who gets mail in these tests has a Dovecot mailbox; anyone else bounces.
PEOPLE = (CUSTOMER[1], TEAM, AGENT[1], AGENT2[1])
VACATION = "Ich bin bis zum 30.11. nicht im Büro und lese meine E-Mails nicht.\nIn dringenden Fällen: 0211 1234."
# How long "nothing more happens" is watched for: Postfix retries every second here, and Dovecot
# delivers (and runs Sieve) within milliseconds.
QUIET_SECONDS = 2.0


def _mid(header: str) -> str:
    return header.strip().strip("<>")


def _outbox_count(desk) -> int:
    with session_scope(desk.app.session_factory) as s:
        return s.scalar(select(func.count()).select_from(Outbox)) or 0


def _ack_id(desk, case: str) -> str:
    (ack,) = [m for m in desk.messages(case) if m.kind == "ack"]
    return ack.message_id


def _parts(msg: EmailMessage) -> list[str]:
    return [p.get_content_type() for p in msg.iter_parts()]


def _delivery_status(dsn: Delivered) -> list[dict[str, str]]:
    """The field blocks of the DSN's message/delivery-status part (per-message, then per-recipient)."""
    (part,) = [p for p in dsn.message.walk() if p.get_content_type() == "message/delivery-status"]
    return [{k.lower(): str(v) for k, v in block.items()} for block in part.get_payload()]


def _returned(dsn: Delivered) -> EmailMessage:
    (part,) = [p for p in dsn.message.walk() if p.get_content_type() == "message/rfc822"]
    return part.get_payload()[0]


def _sent_lines(stack: MailStack) -> int:
    return len(stack.postfix_events("sent"))


def _quiet(stack: MailStack, desk, mailboxes: list[str]) -> None:
    """Nothing more moves: wait, then one more fetch cycle and outbox run send nothing, Postfix's
    queue is empty and no mailbox got anything new meanwhile."""
    before = {m: len(stack.messages(m)) for m in mailboxes}
    sent_before, outbox_before = _sent_lines(stack), _outbox_count(desk)
    time.sleep(QUIET_SECONDS)
    stack.wait_idle()
    assert desk.deliver() == []
    time.sleep(QUIET_SECONDS / 2)
    stack.wait_idle()
    assert stack.queued() == []
    assert {m: len(stack.messages(m)) for m in mailboxes} == before
    assert stack.messages(SUPPORT_ADDRESS) == []  # nothing waiting for mailbridge either
    assert _sent_lines(stack) == sent_before and _outbox_count(desk) == outbox_before


# -- a real bounce --------------------------------------------------------------------------------


@pytest.fixture
def desk(mailstack, tmp_path, db_url, monkeypatch):
    d = stack_desk(mailstack, tmp_path, db_url, users=PEOPLE, monkeypatch=monkeypatch)
    yield d
    d.app.close()


@pytest.mark.parametrize(
    ("address", "status", "diagnostic"),
    [
        # A mailbox that does not exist: Dovecot's LMTP refuses the recipient, Postfix bounces.
        # (Postfix's lmtp client reports the server's answer with the diagnostic type "smtp".)
        ("ex.mitarbeiter@kunde.example", "5.1.1", "smtp; 550 5.1.1"),
        # A domain that takes no mail: the stack's error transport (as a dead MX would, permanently).
        ("j.mueller@kunde-alt.example", "5.7.1", "X-Postfix; no outside world"),
    ],
    ids=["unknown-user-at-lmtp", "domain-without-mail"],
)
def test_postfix_bounces_the_ack_and_mailbridge_records_it_on_the_case(desk, mailstack, address, status, diagnostic):
    """The customer's address takes no mail. mailbridge acknowledges the request; Postfix accepts the
    ack, cannot deliver it and returns it to the envelope sender — the support address — as a real
    RFC 3464 DSN. mailbridge fetches that DSN, matches it to the case by the returned ack, records a
    hard bounce (delivery_failed, address_health suppressed for 60 days), opens no case and sends
    nothing. The next request from that address is a case, but gets no acknowledgement.

    A colleague with a working mailbox opened a case with the same subject just before: the DSN
    must find the bounced ack's case, not the newest or a look-alike."""
    subject = "PDF-Export bricht ab"
    sent = desk.deliver(make_mail(subject=subject, message_id="<export-fehler-0@kunde.example>"))
    assert len(to(sent, CUSTOMER[1])) == 1
    (other,) = desk.tickets()

    sender = ("Ex Mitarbeiter", address)
    mid = "<export-fehler-1@kunde.example>"
    sent = desk.deliver(make_mail(sender=sender, subject=subject, message_id=mid))
    ticket = desk.tickets()[-1]
    case = ticket.case_number
    assert ticket.id != other.id and ticket.requester_email == address
    # The agents heard of it; the ack went out (Postfix took it) but reached no mailbox of the stack.
    assert [m.rcpt_tos for m in sent] == [[TEAM]]
    with session_scope(desk.app.session_factory) as s:
        acks = [
            (o.status, o.envelope_from, o.envelope_to)
            for o in s.scalars(select(Outbox).where(Outbox.ticket_id == ticket.id))
            if o.kind == "ack"
        ]
    assert acks == [("sent", SUPPORT_ADDRESS, [address])]
    (bounced,) = mailstack.postfix_events("bounced")
    assert f"to=<{address}>" in bounced and f"dsn={status}" in bounced

    # Postfix's DSN, waiting in the support mailbox for the next fetch.
    (dsn,) = mailstack.messages(SUPPORT_ADDRESS)
    assert dsn.mail_from == ""  # null reverse-path (RFC 5321 4.5.5)
    assert dsn.header("From") == "Mail Delivery System <MAILER-DAEMON@vendor.example>"
    assert dsn.header("Subject") == "Undelivered Mail Returned to Sender"
    assert dsn.header("Auto-Submitted") == "auto-replied"
    assert dsn.message.get_content_type() == "multipart/report"
    assert dsn.message.get_param("report-type") == "delivery-status"
    # Notification text, the machine-readable report, and the whole ack back (not only its headers).
    assert _parts(dsn.message) == ["text/plain", "message/delivery-status", "message/rfc822"]
    per_message, per_recipient = _delivery_status(dsn)
    assert per_message["reporting-mta"] == "dns; mx.vendor.example"
    assert per_message["x-postfix-sender"] == f"rfc822; {SUPPORT_ADDRESS}"
    assert per_recipient["final-recipient"] == f"rfc822; {address}"
    assert (per_recipient["action"], per_recipient["status"]) == ("failed", status)
    assert per_recipient["diagnostic-code"].startswith(diagnostic), per_recipient["diagnostic-code"]
    returned = _returned(dsn)
    assert _mid(returned["Message-ID"]) == _ack_id(desk, case)
    assert str(returned["Subject"]).startswith(f"[{case}]")
    assert str(returned["Auto-Submitted"]) == "auto-replied"

    # mailbridge fetches it: recorded on the case, nothing else happens.
    desk.clock.now += timedelta(minutes=2)
    outbox_before = _outbox_count(desk)
    assert desk.deliver() == []
    assert [t.case_number for t in desk.tickets()] == [other.case_number, case]
    assert _outbox_count(desk) == outbox_before
    m = desk.inbound(_mid(dsn.message_id))
    assert m.ticket_id == ticket.id
    assert (m.kind, m.mail_class) == ("bounce", "hard_bounce")
    assert desk.ticket(case).status == ticket.status
    (failed,) = [d for k, d in desk.events(case) if k == "delivery_failed"]
    assert failed["permanent"] is True and failed["status"] == status
    assert [a["address"] for a in failed["addresses"]] == [address]
    assert "delivery_failed" not in [k for k, _ in desk.events(other.case_number)]
    assert desk.ticket(other.case_number).status == other.status
    assert failed["bounced"] == [_ack_id(desk, case)]
    assert failed["reason"] == f"multipart/report; {status}"
    with session_scope(desk.app.session_factory) as s:
        h = s.get(AddressHealth, address)
        assert h is not None and (h.state, h.permanent, h.last_status) == ("failing", True, status)
        assert h.suppressed_until == desk.clock.now + timedelta(days=60)
        assert h.last_ticket_id == ticket.id
        assert s.get(AddressHealth, CUSTOMER[1]) is None
        raw = s.scalars(select(RawMessage).where(RawMessage.mail_class == "hard_bounce")).one()
        assert raw.disposition == "processed"
    # Filed away in Dovecot like any processed mail.
    assert mailstack.messages(SUPPORT_ADDRESS) == []
    assert [d.message_id for d in mailstack.messages(SUPPORT_ADDRESS, "Processed")][-1] == dsn.message_id

    # A day later the same address writes again: a new case, the agents are told, no acknowledgement
    # (so no second bounce).
    desk.clock.now += timedelta(days=1)
    sent = desk.deliver(
        make_mail(sender=sender, subject="Noch ein Problem", message_id="<export-fehler-2@kunde.example>")
    )
    assert [m.rcpt_tos for m in sent] == [[TEAM]]
    second = desk.tickets()[-1]
    assert second.case_number != case and second.requester_email == address
    (supp,) = [d for k, d in desk.events(second.case_number) if k == "auto_mail_suppressed"]
    assert supp["reason"] == "address_failing"
    assert [m.kind for m in desk.messages(second.case_number)].count("ack") == 0
    mailstack.wait_idle()
    assert len(mailstack.postfix_events("bounced")) == 1
    assert mailstack.messages(SUPPORT_ADDRESS) == []


# -- a real Sieve vacation ------------------------------------------------------------------------


@pytest.fixture
def sieve_desk(mailstack_sieve, tmp_path, db_url, monkeypatch):
    d = stack_desk(mailstack_sieve, tmp_path, db_url, users=(*PEOPLE, COLLEAGUE[1]), monkeypatch=monkeypatch)
    yield d
    d.app.close()


def _vacation_lines(stack: MailStack, what: str, message_id: str) -> list[str]:
    """Pigeonhole's log lines about the delivery of ``message_id`` that contain ``what`` (waiting a
    moment for them: Dovecot's log process writes them just after the delivery)."""
    return stack.wait_for_sieve_log(f"msgid=<{_mid(message_id)}>", what)


def _vacation_replies(stack: MailStack) -> list[str]:
    return [line for line in stack.sieve_log() if "sent vacation response" in line]


def test_sieve_vacation_and_mailbridge_do_not_start_an_autoresponder_war(sieve_desk, mailstack_sieve):
    """The customer is on vacation (a real Sieve vacation, answering every mail it may). Their request
    is acknowledged; the ack says Auto-Submitted, so the vacation stays silent. The agent's answer,
    relayed to the customer, is a person's mail: the vacation answers it (Auto-Submitted:
    auto-replied (vacation)) to the support address. mailbridge records that reply on the case as an
    out-of-office reply, leaves the case as it was and sends nothing — and then nothing moves any
    more, in either direction."""
    desk, stack = sieve_desk, mailstack_sieve
    stack.set_vacation(CUSTOMER[1], VACATION, seconds=0)

    mid = "<lizenz-1@kunde.example>"
    sent = desk.deliver(make_mail(subject="Lizenzserver startet nicht", message_id=mid))
    (ticket,) = desk.tickets()
    case = ticket.case_number
    (ack,) = stack.wait_for_mail(CUSTOMER[1])
    assert ack.header("Auto-Submitted") == "auto-replied"
    assert _vacation_lines(stack, "discarding vacation response to auto-submitted message", ack.message_id)
    assert _vacation_replies(stack) == []
    assert stack.messages(SUPPORT_ADDRESS) == []  # no answer to the ack

    # Anna answers the new-case notification from her mail client; mailbridge relays it.
    (note,) = to(sent, TEAM)
    sent = desk.deliver(
        make_mail(
            subject=f"AW: {note.header('Subject')}",
            body="Hallo Herr Müller,\n\nbitte starten Sie den Dienst mit -clean neu.\n\nGruß\nAnna",
            sender=AGENT,
            headers={"In-Reply-To": note.header("Message-ID"), "References": note.header("Message-ID")},
        )
    )
    assert [m.rcpt_tos for m in sent] == [[CUSTOMER[1]]]
    relay = stack.wait_for_mail(CUSTOMER[1], count=2)[-1]
    assert "mit -clean neu" in relay.text and relay.header("Auto-Submitted") == ""
    assert _vacation_lines(stack, f"sent vacation response to <{SUPPORT_ADDRESS}>", relay.message_id)

    # The vacation reply, as Pigeonhole wrote it, in the support mailbox.
    (reply,) = stack.messages(SUPPORT_ADDRESS)
    assert reply.mail_from == ""  # Pigeonhole sends vacation replies with a null reverse-path
    assert reply.header("Auto-Submitted") == "auto-replied (vacation)"
    assert reply.header("Precedence") == "bulk" and reply.header("X-Auto-Response-Suppress") == "All"
    assert reply.header("Subject") == f"Auto: {relay.subject}"
    assert _mid(reply.header("In-Reply-To")) == _mid(relay.message_id)
    assert CUSTOMER[1] in reply.header("From") and SUPPORT_ADDRESS in reply.header("To")
    assert reply.header("X-Sieve").startswith("Pigeonhole Sieve")
    assert "nicht im Büro" in reply.text

    # mailbridge: recorded on the case as out-of-office, the case unchanged, nothing sent.
    state = desk.ticket(case)
    events_before = [k for k, _ in desk.events(case)]
    outbox_before = _outbox_count(desk)
    desk.clock.now += timedelta(minutes=5)
    assert desk.deliver() == []
    assert [t.case_number for t in desk.tickets()] == [case]
    m = desk.inbound(_mid(reply.message_id))
    assert m.ticket_id == ticket.id
    assert (m.direction, m.kind, m.mail_class) == ("in", "auto", "out_of_office")
    after = desk.ticket(case)
    assert (after.status, after.assignee) == (state.status, state.assignee)
    new_events = [k for k, _ in desk.events(case)][len(events_before) :]
    assert "auto_reply_received" in new_events and "status_changed" not in new_events
    (noted,) = [d for k, d in desk.events(case) if k == "auto_reply_received"]
    assert noted["mail_class"] == "out_of_office"
    assert noted["reason"] == "Auto-Submitted: auto-replied; out-of-office wording"
    assert _outbox_count(desk) == outbox_before

    # The exchange has stopped: the vacation got nothing more to answer, mailbridge nothing to fetch.
    _quiet(stack, desk, [CUSTOMER[1], TEAM, AGENT[1]])
    assert len(stack.messages(CUSTOMER[1])) == 2  # the ack and the relay
    assert len(_vacation_replies(stack)) == 1
    assert stack.postfix_events("bounced") == []


def test_the_vacation_answers_people_but_never_mailbridges_automatic_mail(sieve_desk, mailstack_sieve):
    """Both directions, side by side. A vacation that would also answer automatic mail cannot be
    configured in Pigeonhole (it discards every response to Auto-Submitted, list, bulk, null-sender
    and MAILER-DAEMON mail, whatever the script says), so the other half of the loop protection is
    mailbridge's: its automatic mails are marked. The customer's and an agent's vacation both stay
    silent on mailbridge's ack and new-case notification; the same vacation answers a colleague's
    ordinary mail at once."""
    desk, stack = sieve_desk, mailstack_sieve
    stack.set_vacation(CUSTOMER[1], VACATION, seconds=0)
    stack.set_vacation(TEAM, "Das Team ist heute auf Schulung.", seconds=0, subject="Abwesend")

    sent = desk.deliver(make_mail(subject="Zweite Lizenz", message_id="<lizenz-2@kunde.example>"))
    (ack,) = to(sent, CUSTOMER[1])
    (note,) = to(sent, TEAM)
    assert ack.header("Auto-Submitted") == "auto-replied"
    assert note.header("Auto-Submitted") == "auto-generated"
    for rcpt, mail in ((CUSTOMER[1], ack), (TEAM, note)):
        (line,) = _vacation_lines(stack, "discarding vacation response", mail.header("Message-ID"))
        assert f"lmtp({rcpt})" in line and "auto-submitted message" in line
    assert _vacation_replies(stack) == []
    stack.wait_idle()
    assert stack.messages(SUPPORT_ADDRESS) == []

    # The control: a person writes to the customer, the vacation answers at once.
    colleague_mid = stack.send(
        make_mail(sender=COLLEAGUE, to=f"{CUSTOMER[0]} <{CUSTOMER[1]}>", subject="Mittagessen?", message_id=None)
    )
    stack.wait_idle()
    (answer,) = stack.wait_for_mail(COLLEAGUE[1])
    assert answer.header("Auto-Submitted") == "auto-replied (vacation)"
    assert answer.subject == "Auto: Mittagessen?" and _mid(answer.header("In-Reply-To")) == _mid(colleague_mid)
    assert "nicht im Büro" in answer.text
    assert _vacation_lines(stack, f"sent vacation response to <{COLLEAGUE[1]}>", colleague_mid)

    # mailbridge saw nothing of that, and nothing more of its own case.
    _quiet(stack, desk, [CUSTOMER[1], TEAM, COLLEAGUE[1]])
    assert len(desk.tickets()) == 1
