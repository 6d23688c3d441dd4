"""Status by mail (issue 13, item 8): a known customer who mails the support address with only
"Status" / "Übersicht" in the subject gets back the list of their open cases (or their
organisation's, where it allows it), with status, severity, next due time and case links; no case
is opened. Mail in through IMAP (pymap), the list read back from the SMTP server (aiosmtpd), rows
checked in SQLite and PostgreSQL; once through Postfix and Dovecot (``tests/mailstack.py``)."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from mailbridge.store.db import session_scope
from mailbridge.store.models import Message, Outbox, RawMessage
from tests.integration.attachment_support import BASE_URL, web_config
from tests.integration.conversation_support import (
    AGENT,
    AGENT2,
    CHIEF,
    COLLEAGUE,
    CUSTOMER,
    QUEUE_EXTRA,
    SLA,
    STRANGER,
    TEAM,
    answer_note,
    make_desk,
    to,
)
from tests.mailstack import (  # noqa: F401  (fixtures: mailstack, mailstack_session)
    mailstack_fixture,
    mailstack_session_fixture,
    stack_desk,
)
from tests.support import make_mail

# Two people of an organisation that lets its people see all of its cases, and one that does not.
LEAD = ("Lena Leiter", "lena.leiter@acme.example")
ENGINEER = ("Otto Technik", "otto.technik@acme.example")
OTHER_ORG = ("Gerd Fremd", "gerd@fremdfirma.example")
ORGS = """
[[organisations]]
name = "Acme AG"
domains = ["acme.example"]
contract = "Wartungsvertrag"
tracker = "organisation"

[[organisations]]
name = "Fremdfirma GmbH"
domains = ["fremdfirma.example"]
contract = "Wartungsvertrag"
"""
CASE_RE = re.compile(r"^(C\d{7})  ", re.MULTILINE)
LINK_RE = re.compile(re.escape(BASE_URL) + r"c/[A-Za-z0-9_.\-]+")
QUEUE = QUEUE_EXTRA + 'calendar = "nrw"\nseverity_scheme = "std"\n' + f'escalation = ["{CHIEF}"]\n'


def _config(tmp_path, web=True):
    return SLA + ORGS + web_config(tmp_path, base_url=BASE_URL if web else None)


@pytest.fixture
def desk(tmp_path, imap_server, smtp_sink, db_url, imap_env):
    d = make_desk(tmp_path, imap_server, smtp_sink, db_url, queue_extra=QUEUE, conversations=_config(tmp_path))
    yield d
    d.app.close()


def _open(desk, sender, subject, body=None):
    body = body or f"Guten Tag,\n\n{subject}: bitte um Hilfe, das System meldet einen Fehler.\n\nGrüße"
    sent = desk.deliver(make_mail(subject=subject, body=body, sender=sender))
    (ack,) = to(sent, sender[1])
    return ack.header("Subject").split("]", 1)[0].lstrip("["), next(m for m in sent if TEAM in m.rcpt_tos)


def _ask(desk, sender, subject="Status", **kw):
    return desk.deliver(make_mail(subject=subject, body="", sender=sender, **kw))


def _raw_outcome(desk, message_id: str) -> tuple[str, dict]:
    """The disposition of a mail kept without a case, and its routing (rule, evidence)."""
    with session_scope(desk.app.session_factory) as s:
        m = s.scalars(select(Message).where(Message.message_id == message_id, Message.direction == "in")).one()
        assert m.ticket_id is None
        raw = s.get(RawMessage, m.raw_id)
        return raw.disposition, m.routing


def test_a_known_customer_gets_their_three_open_cases_and_no_new_case(desk):
    """Four cases of the customer, one of them closed by the agent, and a colleague's case of the
    same domain (no organisation): "AW: status" lists exactly the customer's three open cases, in
    German (their language), with status, severity label, due time in Berlin time and a link each."""
    urgent, note = _open(desk, CUSTOMER, "Systemstillstand im Werk 2")
    second, _ = _open(desk, CUSTOMER, "Störung beim Export")
    third, _ = _open(desk, CUSTOMER, "Frage zur Lizenz")
    closed, closed_note = _open(desk, CUSTOMER, "Drucker druckt nicht")
    colleagues, _ = _open(desk, COLLEAGUE, "Passwort vergessen")
    answer_note(desk, closed_note, "#close\n\nGuten Tag,\n\ndas ist behoben.")
    assert desk.ticket(closed).status == "closed"
    answer_note(desk, note, "#pending\n\nGuten Tag,\n\nbitte senden Sie uns das Protokoll.")
    before = len(desk.tickets())

    sent = _ask(desk, CUSTOMER, subject="AW: status", message_id="<status-1@kunde.example>")

    assert len(desk.tickets()) == before  # no case opened
    (answer,) = sent
    assert answer.rcpt_tos == [CUSTOMER[1]]
    assert answer.header("Subject") == "Ihre offenen Fälle (3)"
    assert answer.header("In-Reply-To") == "<status-1@kunde.example>"
    assert answer.header("Auto-Submitted") == "auto-replied"
    text = answer.text.replace("\r\n", "\n")
    print(text)
    listed = CASE_RE.findall(text)
    assert sorted(listed) == sorted([urgent, second, third])
    assert closed not in text and colleagues not in text and "Passwort" not in text
    # The severity's label, the status in words, the due time in the calendar's zone (Berlin).
    block = text[text.index(urgent) :].split("\n\n", 1)[0]
    assert "Status: wartet auf Ihre Antwort · Fehlerklasse 1" in block
    second_block = text[text.index(second) :].split("\n\n", 1)[0]
    assert "Status: neu · Fehlerklasse 2" in second_block
    # Opened Monday 23.11. 10:00 Berlin time; Fehlerklasse 2 promises a first response in 24 hours.
    assert "Erste Antwort bis: Dienstag, 24.11.2026, 10:00 Uhr MEZ" in second_block
    # The pending case was answered and its level has no resolution target: no due line.
    assert "bis:" not in block
    # A link each, signed for the customer and the case.
    links = LINK_RE.findall(text)
    assert len(links) == 3
    loaded = sorted(desk.app.case_links.load(u.removeprefix(f"{BASE_URL}c/")) for u in links)
    assert loaded == sorted((CUSTOMER[1], c) for c in (urgent, second, third))
    # The request is kept without a case, the run ended "ignored" with the reason.
    disposition, routing = _raw_outcome(desk, "status-1@kunde.example")
    assert disposition == "ignored" and routing["rule"] == "status_request"
    assert f"status request from {CUSTOMER[1]}: 3 open cases listed" in routing["evidence"]
    with session_scope(desk.app.session_factory) as s:
        row = s.scalars(select(Outbox).where(Outbox.kind == "status_list")).one()
        assert row.ticket_id is None and row.envelope_to == [CUSTOMER[1]]


def test_an_organisation_wide_customer_sees_colleagues_cases_in_english(desk):
    """Acme lets its people see all of its cases: Otto's "Overview" lists Lena's case and his own,
    never another organisation's; Fremdfirma does not, so Gerd sees only his own."""
    lenas, _ = _open(desk, LEAD, "Export fails", body="Hello,\n\nthe export fails with an error.\n\nLena")
    ottos, _ = _open(desk, ENGINEER, "Licence question", body="Hello,\n\nhow do I renew the licence?\n\nOtto")
    foreign, _ = _open(desk, OTHER_ORG, "Drucker defekt")
    foreign2, _ = _open(desk, ("Hans Fremd", "hans@fremdfirma.example"), "Anmeldung geht nicht")

    (answer,) = _ask(desk, ENGINEER, subject="Overview")
    text = answer.text.replace("\r\n", "\n")
    print(text)
    assert answer.header("Subject") == "Open cases of Acme AG (2)"
    assert "here are the open cases of Acme AG with us" in text
    assert sorted(CASE_RE.findall(text)) == sorted([lenas, ottos])
    assert foreign not in text and foreign2 not in text
    assert "Status: new" in text
    urls = LINK_RE.findall(text)
    assert sorted(desk.app.case_links.load(u.removeprefix(f"{BASE_URL}c/"))[1] for u in urls) == sorted([lenas, ottos])

    (answer,) = _ask(desk, OTHER_ORG, subject="Übersicht")
    assert CASE_RE.findall(answer.text.replace("\r\n", "\n")) == [foreign]
    assert answer.header("Subject") == "Ihre offenen Fälle (1)"


def test_an_address_of_an_organisation_without_cases_gets_an_empty_list(desk):
    """Known by its domain only: answered, with nothing to list (and nothing of anyone else's)."""
    _open(desk, CUSTOMER, "Störung beim Export")
    (answer,) = _ask(desk, ("Neu Hier", "neu@fremdfirma.example"), subject="Status")
    assert answer.header("Subject") in ("Your open cases (0)", "Ihre offenen Fälle (0)")
    assert CASE_RE.findall(answer.text) == []
    assert "keine offenen Fälle" in answer.text or "no open cases" in answer.text
    assert len(desk.tickets()) == 1


def test_a_strangers_status_mail_opens_a_case_and_lists_nothing(desk):
    case, _ = _open(desk, CUSTOMER, "Störung beim Export")
    sent = _ask(desk, STRANGER, subject="Status")
    (ack,) = to(sent, STRANGER[1])
    assert ack.header("Subject").startswith("[C")
    assert case not in ack.text and "Störung" not in ack.text
    assert len(desk.tickets()) == 2
    assert desk.tickets()[-1].requester_email == STRANGER[1]


def test_an_auto_reply_titled_status_gets_nothing(desk):
    """An out-of-office with the subject "Status" from a known customer: no list, no case."""
    _open(desk, CUSTOMER, "Störung beim Export")
    sent = _ask(
        desk,
        CUSTOMER,
        subject="Status",
        message_id="<ooo@kunde.example>",
        headers={"Auto-Submitted": "auto-replied", "X-Autoreply": "yes"},
    )
    assert sent == []
    assert len(desk.tickets()) == 1
    disposition, routing = _raw_outcome(desk, "ooo@kunde.example")
    assert disposition == "noise" and routing["rule"] == "noise", routing


def test_a_subject_with_more_words_or_an_agent_is_not_a_status_request(desk):
    _open(desk, CUSTOMER, "Störung beim Export")
    sent = _ask(desk, CUSTOMER, subject="Status der Lieferung")
    assert len(to(sent, CUSTOMER[1])) == 1 and len(desk.tickets()) == 2  # a new case, acknowledged
    assert to(sent, CUSTOMER[1])[0].header("Subject").startswith("[C")


def test_the_guard_limits_status_lists_like_any_automatic_mail(tmp_path, imap_server, smtp_sink, db_url, imap_env):
    """The per-recipient limits of automatic mail (``[auto_mail]``) hold status lists back too: with
    two per ten minutes, the acknowledgement and one list go out, the next request gets nothing."""
    guard = "\n[auto_mail]\nper_recipient = [{ max = 2, minutes = 10 }]\n"
    d = make_desk(tmp_path, imap_server, smtp_sink, db_url, queue_extra=QUEUE, conversations=_config(tmp_path) + guard)
    try:
        _open(d, CUSTOMER, "Störung beim Export")
        assert len(_ask(d, CUSTOMER, message_id="<s1@kunde.example>")) == 1
        assert _ask(d, CUSTOMER, message_id="<s2@kunde.example>") == []
        disposition, routing = _raw_outcome(d, "s2@kunde.example")
        assert disposition == "ignored" and "not answered" in routing["evidence"]
        assert len(d.tickets()) == 1
    finally:
        d.app.close()


def test_without_status_words_the_request_opens_a_case(tmp_path, imap_server, smtp_sink, db_url, imap_env):
    d = make_desk(
        tmp_path,
        imap_server,
        smtp_sink,
        db_url,
        queue_extra=QUEUE + "status_words = []\n",
        conversations=_config(tmp_path, web=False),
    )
    try:
        _open(d, CUSTOMER, "Störung beim Export")
        sent = _ask(d, CUSTOMER, subject="Status")
        assert len(d.tickets()) == 2 and to(sent, CUSTOMER[1])[0].header("Subject").startswith("[C")
    finally:
        d.app.close()


def test_without_web_the_list_has_no_links(tmp_path, imap_server, smtp_sink, db_url, imap_env):
    d = make_desk(tmp_path, imap_server, smtp_sink, db_url, queue_extra=QUEUE, conversations=_config(tmp_path, False))
    try:
        case, _ = _open(d, CUSTOMER, "Störung beim Export")
        (answer,) = _ask(d, CUSTOMER, subject="Übersicht")
        assert CASE_RE.findall(answer.text) == [case]
        assert "online" not in answer.text and "http" not in answer.text
    finally:
        d.app.close()


# The mail stack delivers only its own domains (tests/mailstack.py): an organisation of one of them.
STACK_ORG = """
[[organisations]]
name = "Stadtwerke"
domains = ["stadtwerke.example"]
contract = "Wartungsvertrag"
tracker = "organisation"
"""
PETRA = ("Petra Kunde", "petra@stadtwerke.example")
MAX = ("Max Meister", "max.meister@stadtwerke.example")


@pytest.mark.mailstack
def test_status_by_mail_through_postfix_and_dovecot(mailstack, tmp_path, db_url, monkeypatch):
    """Petra's and Max's cases; Max's "AW: Übersicht" through Postfix lists both, read back from his
    Dovecot mailbox; a stranger's (other.example) "Status" is acknowledged as a new case."""
    people = (PETRA[1], MAX[1], STRANGER[1], TEAM, AGENT[1], AGENT2[1], CHIEF)
    config = SLA + STACK_ORG + web_config(tmp_path, base_url=BASE_URL)
    d = stack_desk(
        mailstack, tmp_path, db_url, queue_extra=QUEUE, conversations=config, users=people, monkeypatch=monkeypatch
    )
    try:
        petras, _ = _open(d, PETRA, "Zählerfernauslesung gestört")
        maxs, _ = _open(d, MAX, "Frage zur Schnittstelle")
        assert len(_ask(d, MAX, subject="AW: Übersicht")) == 1
        (delivered,) = [m for m in mailstack.messages(MAX[1]) if "Offene Fälle" in str(m.message["Subject"])]
        assert str(delivered.message["Subject"]) == "Offene Fälle von Stadtwerke (2)"
        text = delivered.message.get_body(("plain",)).get_content().replace("\r\n", "\n")
        print(text)
        assert sorted(CASE_RE.findall(text)) == sorted([petras, maxs])
        links = LINK_RE.findall(text)
        assert sorted(d.app.case_links.load(u.removeprefix(f"{BASE_URL}c/")) for u in links) == sorted(
            [(MAX[1], petras), (MAX[1], maxs)]
        )
        assert len(d.tickets()) == 2
        sent = _ask(d, STRANGER, subject="Status")
        assert to(sent, STRANGER[1])[0].header("Subject").startswith("[C")
        assert len(d.tickets()) == 3
        assert mailstack.postfix_events("bounced") == []
    finally:
        d.app.close()
