"""mailbridge against a mainstream mail stack (issue 5): a private Postfix and Dovecot on loopback
(tests/mailstack.py). Customer mail goes in through Postfix's SMTP and Dovecot's LMTP into the support
mailbox, mailbridge fetches it from Dovecot over IMAP, and whatever it sends goes out through Postfix
into the recipients' Dovecot mailboxes, where the tests read it back over IMAP — on SQLite and
PostgreSQL. The clock is injected, as in the conversation tests."""

from __future__ import annotations

import re
import subprocess
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from mailbridge.store.db import session_scope
from mailbridge.store.models import Outbox, RawMessage
from tests.integration.conversation_support import AGENT, AGENT2, CUSTOMER, NRW_CALENDAR, QUEUE_EXTRA, TEAM, to
from tests.mailstack import (  # noqa: F401  (fixtures: mailstack, mailstack_session)
    MailStack,
    MailStackUnavailable,
    mailstack_fixture,
    mailstack_session_fixture,
    missing,
    session_members,
    stack_desk,
    unavailable,
)
from tests.support import SUPPORT_ADDRESS, make_mail

pytestmark = pytest.mark.mailstack

BERLIN = ZoneInfo("Europe/Berlin")
CHIEF = "leitung@vendor.example"
FIRST = "Guten Tag,\n\nder Export nach PDF bricht mit Fehler 0x80004005 ab.\n\nViele Grüße\nJürgen Müller"
# Everyone who gets mail in these tests has a Dovecot mailbox; anyone else would bounce.
PEOPLE = (CUSTOMER[1], TEAM, AGENT[1], AGENT2[1], CHIEF)

SLA = f"""
{NRW_CALENDAR}
[[severity_schemes]]
name = "std"
default = "3"
[[severity_schemes.stages]]
at = 50
to = "assignee"
[[severity_schemes.stages]]
at = 100
to = "escalation"
urgent = true
[[severity_schemes.levels]]
key = "1"
label_de = "Fehlerklasse 1"
label_en = "Severity 1"
words = ["Systemstillstand"]
first_response = {{ business_hours = 4 }}
[[severity_schemes.levels]]
key = "3"
label_de = "Fehlerklasse 3"
label_en = "Severity 3"
first_response = {{ business_days = 2 }}
"""


def berlin(*args) -> datetime:
    return datetime(*args, tzinfo=BERLIN).astimezone(UTC)


@pytest.fixture
def desk(mailstack, tmp_path, db_url, monkeypatch):
    d = stack_desk(mailstack, tmp_path, db_url, users=PEOPLE, monkeypatch=monkeypatch)
    yield d
    d.app.close()


@pytest.fixture
def sla_desk(mailstack, tmp_path, db_url, monkeypatch):
    d = stack_desk(
        mailstack,
        tmp_path,
        db_url,
        users=PEOPLE,
        monkeypatch=monkeypatch,
        queue_extra=QUEUE_EXTRA + f'calendar = "nrw"\nseverity_scheme = "std"\nescalation = ["{CHIEF}"]\n',
        conversations=SLA,
    )
    yield d
    d.app.close()


def _mid(header: str) -> str:
    return header.strip().strip("<>")


def _case(subject: str) -> str:
    m = re.match(r"\[([^\]]+)\]", subject)
    assert m, subject
    return m.group(1)


def _outbox(desk) -> list[tuple[str, str, list[str]]]:
    with session_scope(desk.app.session_factory) as s:
        return [(o.kind, o.status, o.envelope_to) for o in s.scalars(select(Outbox).order_by(Outbox.id))]


def test_customer_mail_through_postfix_opens_a_case_and_the_ack_arrives_in_the_customers_mailbox(desk, mailstack):
    """A customer's mail, submitted to Postfix, reaches the support mailbox through Dovecot's LMTP;
    mailbridge fetches it over IMAP, opens one case (database rows), files the mail away in Dovecot,
    and its acknowledgement goes out through Postfix into the customer's Dovecot mailbox: the case
    number in the subject, In-Reply-To the customer's Message-ID, the support address as sender."""
    mid = "<pdf-export-1@kunde.example>"
    sent = desk.deliver(make_mail(subject="PDF-Export bricht ab", body=FIRST, message_id=mid))

    (ticket,) = desk.tickets()
    case = ticket.case_number
    assert (ticket.status, ticket.queue, ticket.requester_email) == ("new", "support", CUSTOMER[1])
    assert [m.kind for m in desk.messages(case)] == ["customer", "ack", "notification"]
    assert desk.inbound(_mid(mid)).ticket_id == ticket.id
    with session_scope(desk.app.session_factory) as s:
        (raw,) = s.scalars(select(RawMessage)).all()
        assert (raw.account, raw.folder, raw.disposition) == ("main", "INBOX", "processed")
        # The UIDVALIDITY and UID Dovecot gave the mail.
        assert raw.uidvalidity == mailstack.uidvalidity(SUPPORT_ADDRESS) and raw.uid == 1
    assert sorted(_outbox(desk)) == [("ack", "sent", [CUSTOMER[1]]), ("notification", "sent", [TEAM])]

    # In Dovecot: the customer's mail left the INBOX for Processed, with Postfix's trace on it.
    assert mailstack.messages(SUPPORT_ADDRESS) == []
    (filed,) = mailstack.messages(SUPPORT_ADDRESS, "Processed")
    assert filed.message_id == mid and "(Postfix) with ESMTP" in str(filed.message.get_all("Received"))
    assert filed.header("Delivered-To") == SUPPORT_ADDRESS

    # The acknowledgement, read back from the customer's Dovecot mailbox over IMAP.
    (ack,) = mailstack.wait_for_mail(CUSTOMER[1])
    assert ack.subject == f"[{case}] PDF-Export bricht ab"
    assert _mid(ack.header("In-Reply-To")) == _mid(mid)
    assert _mid(mid) in ack.header("References")
    assert ack.mail_from == SUPPORT_ADDRESS and SUPPORT_ADDRESS in ack.header("From")
    assert ack.header("Auto-Submitted") == "auto-replied"
    assert case in ack.text
    assert "by mx.vendor.example (Postfix)" in str(ack.message.get_all("Received"))
    # What the desk saw arriving is exactly that: the ack to the customer, the notification to the team.
    assert sorted(m.rcpt_tos for m in sent) == [[CUSTOMER[1]], [TEAM]]
    assert _mid(to(sent, CUSTOMER[1])[0].header("Message-ID")) == _mid(ack.message_id)
    (note,) = mailstack.wait_for_mail(TEAM)
    assert note.subject.startswith(f"[{case}] New case")
    assert mailstack.postfix_events("bounced") == []


def test_customer_reply_lands_on_the_same_case_and_the_agent_answer_is_relayed_through_postfix(desk, mailstack):
    """The customer answers the acknowledgement from their mailbox (through Postfix): the reply lands
    on the same case, no new case, no second acknowledgement; the agents are told. Anna answers the
    notification from her mail client (through Postfix): the answer is relayed to the customer's
    Dovecot mailbox in the customer's thread."""
    mid = "<pdf-export-2@kunde.example>"
    desk.deliver(make_mail(subject="PDF-Export bricht ab", body=FIRST, message_id=mid))
    (ack,) = mailstack.wait_for_mail(CUSTOMER[1])
    case = _case(ack.subject)

    # The customer's reply, as their client writes it from the ack in their mailbox.
    reply_id = "<pdf-export-2-reply@kunde.example>"
    sent = desk.deliver(
        make_mail(
            subject=f"Re: {ack.subject}",
            body=f"Hier die Logdatei-Auszüge.\n\n> {ack.text.splitlines()[0]}",
            message_id=reply_id,
            headers={"In-Reply-To": ack.message_id, "References": f"{mid} {ack.message_id}"},
        )
    )
    assert len(desk.tickets()) == 1
    reply = desk.inbound(_mid(reply_id))
    assert reply.ticket_id == desk.ticket(case).id and reply.routing["rule"] == "thread-header"
    assert [m.rcpt_tos for m in sent] == [[TEAM]] and "Customer reply" in sent[0].header("Subject")
    assert len(mailstack.messages(CUSTOMER[1])) == 1  # no second acknowledgement
    notes = mailstack.wait_for_mail(TEAM, count=2)
    note = next(n for n in notes if "Customer reply" in n.subject)

    # Anna answers that notification from her mail client.
    nid = note.message_id
    sent = desk.deliver(
        make_mail(
            subject=f"AW: {note.subject}",
            body="Hallo Herr Müller,\n\ndanke, wir sehen den Fehler und melden uns heute.\n\nGruß\nAnna",
            sender=AGENT,
            headers={"In-Reply-To": nid, "References": nid},
        )
    )
    assert [m.rcpt_tos for m in sent] == [[CUSTOMER[1]]]
    assert len(desk.tickets()) == 1
    kinds = [m.kind for m in desk.messages(case)]
    assert kinds == ["customer", "ack", "notification", "customer", "notification", "agent", "relay"]
    assert desk.ticket(case).status == "open"

    relay = mailstack.wait_for_mail(CUSTOMER[1], count=2)[-1]
    assert relay.subject == f"[{case}] PDF-Export bricht ab"
    assert "wir sehen den Fehler" in relay.text and "Anna Agent" in relay.header("From")
    assert relay.mail_from == SUPPORT_ADDRESS
    assert _mid(relay.header("In-Reply-To")) in {_mid(reply_id), _mid(ack.message_id)}
    assert _mid(mid) in relay.header("References")
    assert mailstack.postfix_events("bounced") == []


def test_a_breached_case_escalates_through_postfix_into_the_managers_mailbox(sla_desk, mailstack):
    """Monday 09:00 a production-down case comes in (4 business hours); at 11:00 the agents get the
    warning, at 13:00 the manager the breach — each through Postfix into their Dovecot mailbox, once."""
    desk = sla_desk
    desk.clock.now = berlin(2026, 11, 23, 9, 0)
    desk.deliver(make_mail(subject="Systemstillstand Linie 3", body="Alles steht.", message_id="<down@kunde.example>"))
    (ack,) = mailstack.wait_for_mail(CUSTOMER[1])
    case = _case(ack.subject)
    assert desk.ticket(case).severity == "1"
    assert desk.ticket(case).first_response_due == berlin(2026, 11, 23, 13, 0)

    desk.clock.now = berlin(2026, 11, 23, 10, 59)
    assert desk.escalate() == []

    desk.clock.now = berlin(2026, 11, 23, 11, 0)
    warn = desk.escalate()
    assert [m.rcpt_tos for m in warn] == [[TEAM]]
    (warning,) = mailstack.wait_for_mail(TEAM, subject="50%")
    assert f"[{case}]" in warning.subject and warning.header("Auto-Submitted") == "auto-generated"

    desk.clock.now = berlin(2026, 11, 23, 13, 0)
    breach = desk.escalate()
    assert [m.rcpt_tos for m in breach] == [[CHIEF]]
    (mail,) = mailstack.wait_for_mail(CHIEF)
    assert f"[{case}]" in mail.subject and "first response overdue" in mail.subject
    assert mail.mail_from == SUPPORT_ADDRESS and mail.header("Auto-Submitted") == "auto-generated"
    assert "(Postfix)" in str(mail.message.get_all("Received"))
    assert [k for k, _ in desk.events(case)].count("escalated") == 2

    # Once: the job running again sends nothing more.
    desk.clock.now = berlin(2026, 11, 23, 13, 1)
    assert desk.escalate() == []
    assert len(mailstack.messages(CHIEF)) == 1
    assert mailstack.postfix_events("bounced") == []


def test_dovecot_restart_keeps_mail_and_uidvalidity_and_a_deleted_mailbox_gets_a_new_one(mailstack):
    """The fault helpers: Dovecot restarts on its ports with its Maildirs; mail Postfix accepts
    while Dovecot is down is deferred and delivered once it is back; a deleted mailbox comes back
    empty with a new UIDVALIDITY."""
    user = "kasse@kunde.example"
    mailstack.add_user(user)
    mailstack.send(make_mail(to=user, message_id="<one@kunde.example>"))
    mailstack.wait_for_mail(user, message_id="<one@kunde.example>")
    before = mailstack.uidvalidity(user)

    mailstack.stop_dovecot()
    mailstack.send(make_mail(to=user, message_id="<two@kunde.example>"))
    mailstack.start_dovecot()
    mailstack.flush()
    mailstack.wait_idle()
    assert [m.message_id for m in mailstack.messages(user)] == ["<one@kunde.example>", "<two@kunde.example>"]
    assert mailstack.uidvalidity(user) == before
    assert mailstack.postfix_events("deferred")  # it was deferred, not lost

    mailstack.restart_dovecot()
    assert len(mailstack.messages(user)) == 2

    mailstack.recreate_mailbox(user)
    assert mailstack.messages(user) == []
    assert mailstack.uidvalidity(user) != before

    mailstack.recreate_folder(user, "Archiv")
    assert mailstack.messages(user, "Archiv") == []


def test_the_stack_stops_exactly_what_it_started():
    """A stack of its own: after stop() none of its processes is left (checked with ps) and its
    directory is gone."""
    reason = missing()
    if reason:
        unavailable(reason)
    stack = MailStack()
    try:
        stack.start()
    except MailStackUnavailable as e:
        unavailable(f"the mail stack did not start: {e}")
    try:
        stack.add_user("x@vendor.example")
        stack.send(make_mail(to="x@vendor.example", message_id="<x@kunde.example>"))
        stack.wait_for_mail("x@vendor.example", message_id="<x@kunde.example>")
        pids = stack.processes()
        sessions = stack.sessions()
        root = stack.root
        names = subprocess.run(["ps", "-o", "comm=", "-p", ",".join(map(str, pids))], capture_output=True, text=True)
        assert "master" in names.stdout and "dovecot" in names.stdout
    finally:
        stack.stop()
    ps = subprocess.run(["ps", "-eo", "pid=,stat=,sid="], capture_output=True, text=True, check=True).stdout.split("\n")
    alive = {int(line.split()[0]) for line in ps if line.strip() and not line.split()[1].startswith("Z")}
    assert not alive & set(pids)
    assert all(not session_members(sid) for sid in sessions)
    assert root is not None and not root.exists()


def test_mail_to_an_aliased_queue_address_lands_on_that_queue(desk, mailstack):
    """hotline@ is a Postfix virtual alias delivered into the support mailbox (one mailbox, two
    addresses, as many sites run it); the mail is addressed To: hotline@, so it belongs to the hotline
    queue, although Dovecot's LMTP stamps Delivered-To: support@ on it."""
    desk.deliver(make_mail(to="hotline@vendor.example", subject="Lizenzserver startet nicht"))
    (filed,) = mailstack.messages(SUPPORT_ADDRESS, "Processed")
    assert filed.header("Delivered-To") == SUPPORT_ADDRESS and filed.header("To") == "hotline@vendor.example"
    (ticket,) = desk.tickets()
    assert ticket.queue == "hotline"


def test_erase_leaves_the_person_in_no_mail_of_dovecots_folders(desk, mailstack):
    """``privacy erase`` against Dovecot (issue 20): the person's own mail leaves the support mailbox's
    Processed folder, another customer's mail that had them in Cc stays there without their address
    (SEARCH, APPEND with the old flags and date, UID EXPUNGE on a mainstream server)."""
    from mailbridge.privacy.mailtext import decoded_text

    petra = ("Petra Kunde", "petra@stadtwerke.example")
    mailstack.add_users(petra[1])
    desk.deliver(make_mail(subject="PDF-Export bricht ab", body=FIRST, message_id="<own-1@kunde.example>"))
    desk.deliver(
        make_mail(
            subject="Zählerdaten fehlen",
            body="Hallo,\n\nseit gestern fehlen die Zählerdaten.\n\nPetra Kunde",
            sender=petra,
            cc=f"Jürgen Müller <{CUSTOMER[1]}>",
            message_id="<petra-1@stadtwerke.example>",
        )
    )
    before = mailstack.messages(SUPPORT_ADDRESS, "Processed")
    assert [m.message_id for m in before] == ["<own-1@kunde.example>", "<petra-1@stadtwerke.example>"]

    report = desk.app.eraser().erase(CUSTOMER[1])
    assert report.imap_errors == [] and report.counts["IMAP main/Processed: mails deleted"] == 1

    (kept,) = mailstack.messages(SUPPORT_ADDRESS, "Processed")
    text = decoded_text(kept.raw)
    assert kept.message_id == "<petra-1@stadtwerke.example>" and "seit gestern fehlen die Zählerdaten." in text
    assert CUSTOMER[1] not in text.lower() and report.pseudonym in text
    assert "(Postfix) with ESMTP" in str(kept.message.get_all("Received")), "the trace headers stay"
