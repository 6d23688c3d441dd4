"""An agent's forward becomes the customer's case through a mainstream mail stack (issue 19): the
forward goes in through Postfix and Dovecot, mailbridge fetches it over IMAP, and the acknowledgement
goes out through Postfix into the customer's Dovecot mailbox, where it is read back; the customer's
reply to it goes the same way and threads onto the case — on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mailbridge.outbound.templates import Templates
from mailbridge.resources import templates_dir
from tests.integration.conversation_support import (
    AGENT,
    AGENT2,
    CHIEF,
    CUSTOMER,
    CUSTOMER2,
    QUEUE_EXTRA,
    SLA,
    TEAM,
    berlin,
    to,
)
from tests.integration.test_agent_filing import (
    AGENT_WORDS,
    CALL,
    DKIM,
    FORGED,
    REQUEST,
    _case,
    _reply_to,
    customer_original,
    outlook_forward,
    thunderbird_attached_forward,
)
from tests.mailstack import (  # noqa: F401  (fixtures: mailstack, mailstack_session)
    mailstack_fixture,
    mailstack_session_fixture,
    stack_desk,
)
from tests.support import make_mail

pytestmark = pytest.mark.mailstack

PEOPLE = (CUSTOMER[1], CUSTOMER2[1], TEAM, AGENT[1], AGENT2[1], CHIEF)


@pytest.fixture
def desk(mailstack, tmp_path, db_url, monkeypatch):
    d = stack_desk(mailstack, tmp_path, db_url, users=PEOPLE, monkeypatch=monkeypatch)
    yield d
    d.app.close()


def _inbound(desk, case):
    return [m for m in desk.messages(case) if m.direction == "in"]


def test_outlook_forward_through_postfix_is_the_customers_case(desk, mailstack):
    sent = desk.deliver(outlook_forward())
    (ack,) = to(sent, CUSTOMER[1])
    assert len(mailstack.messages(CUSTOMER[1])) == 1
    assert to(sent, AGENT[1]) == []
    print(ack.text)
    assert "Anna Agent hat Ihre Nachricht an uns weitergeleitet und diesen Fall für Sie angelegt." in ack.text
    case = _case(ack)
    t = desk.ticket(case)
    assert t.requester_email == CUSTOMER[1]
    assert t.created_at.replace(tzinfo=UTC) == datetime(2026, 11, 23, 8, 12, tzinfo=UTC)
    request, note = _inbound(desk, case)
    assert (request.sender_email, request.body_text) == (CUSTOMER[1], REQUEST)
    assert (note.kind, note.body_new) == ("note", AGENT_WORDS)

    desk.deliver(_reply_to(ack))
    assert len(desk.tickets()) == 1
    assert _inbound(desk, case)[-1].sender_email == CUSTOMER[1]
    assert len(mailstack.messages(CUSTOMER[1])) == 1  # still one acknowledgement
    assert mailstack.postfix_events("bounced") == []


def test_thunderbird_forward_as_attachment_through_postfix(desk, mailstack):
    sent = desk.deliver(thunderbird_attached_forward(customer_original()))
    (ack,) = to(sent, CUSTOMER[1])
    assert ack.header("In-Reply-To") == "<orig-4711@kunde.example>"
    case = _case(ack)
    assert desk.ticket(case).requester_email == CUSTOMER[1]
    desk.deliver(_reply_to(ack))
    assert len(desk.tickets()) == 1
    assert [m.sender_email for m in _inbound(desk, case)] == [CUSTOMER[1], AGENT[1], CUSTOMER[1]]


def test_forged_forward_through_postfix_changes_nothing(desk, mailstack):
    sent = desk.deliver(outlook_forward(headers=FORGED))
    assert to(sent, CUSTOMER[1]) == [] and mailstack.messages(CUSTOMER[1]) == []
    (t,) = desk.tickets()
    assert t.requester_email == AGENT[1]


@pytest.fixture
def sla_desk(mailstack, tmp_path, db_url, monkeypatch):
    """The queue counts in the nrw calendar with the std scheme (conversation_support.sla_desk)."""
    d = stack_desk(
        mailstack,
        tmp_path,
        db_url,
        users=PEOPLE,
        monkeypatch=monkeypatch,
        queue_extra=QUEUE_EXTRA + f'calendar = "nrw"\nseverity_scheme = "std"\nescalation = ["{CHIEF}"]\n',
        conversations=SLA,
    )
    d.clock.now = berlin(2026, 11, 23, 10, 0)  # Monday 10:00 in Berlin
    yield d
    d.app.close()


def test_new_for_a_caller_through_postfix_counts_from_the_call(sla_desk, mailstack):
    """``#new`` with ``#received 08:30``: the caller's acknowledgement arrives in their Dovecot
    mailbox and the first-response deadline is 4 business hours from the call, not from the mail."""
    sent = sla_desk.deliver(make_mail(subject="Leitwarte ohne Messwerte", body=CALL, sender=AGENT, headers=DKIM))
    (ack,) = to(sent, CUSTOMER2[1])
    assert len(mailstack.messages(CUSTOMER2[1])) == 1
    assert "Anna Agent hat diesen Fall nach Ihrem Anruf für Sie angelegt." in ack.text
    t = sla_desk.ticket(_case(ack))
    assert t.requester_email == CUSTOMER2[1]
    assert t.first_response_due.replace(tzinfo=UTC) == berlin(2026, 11, 23, 12, 30)


def test_help_through_postfix_returns_the_cheat_sheet(desk, mailstack):
    sent = desk.deliver(make_mail(subject="Hilfe", body="#help", sender=AGENT, headers=DKIM))
    (mail,) = sent
    assert mail.rcpt_tos == [AGENT[1]] and desk.tickets() == []
    expected = Templates(templates_dir()).render("en", "help.txt.j2")
    assert mail.text.strip().splitlines() == expected.strip().splitlines()
    assert len(mailstack.messages(AGENT[1])) == 1
