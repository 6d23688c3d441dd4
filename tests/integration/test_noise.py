"""Loop and noise protection through the whole pipeline: real IMAP (pymap), real SMTP (aiosmtpd), a
real database, real mail bytes. Out-of-office replies and bounces are recorded on their case and
change nothing; unmatched ones are kept for the operator, never a case; a hard bounce suppresses
automatic mail to the address; tiered limits stop an exchange with an autoresponder that does not
mark its mail; mail over the size limit is quarantined and its sender told."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from mailbridge.cli import cli
from mailbridge.ingest.parser import MAX_MIME_PARTS
from mailbridge.store.db import session_scope
from mailbridge.store.models import AddressHealth, Message, Outbox, Quarantine, RawMessage, Ticket
from tests.integration.conversation_support import CUSTOMER, TEAM, Desk, Sent, make_desk, to
from tests.support import HOTLINE_ADDRESS, SUPPORT_ADDRESS, make_mail

GARBAGE_FROM = ("Auto Bot", "bot@robot.example")


@pytest.fixture
def desk(tmp_path, imap_server, smtp_sink, db_url, imap_env) -> Desk:
    return make_desk(tmp_path, imap_server, smtp_sink, db_url)


def _open_case(desk: Desk, sender=CUSTOMER, subject="Lizenzserver startet nicht") -> tuple[Ticket, Sent]:
    sent = desk.deliver(make_mail(sender=sender, subject=subject))
    acks = to(sent, sender[1])
    assert len(acks) == 1, [m.header("Subject") for m in sent]
    return desk.tickets()[-1], acks[0]


def _dsn(original: Sent, *, status: str = "5.1.1", action: str = "failed", recipient: str | None = None) -> bytes:
    """A delivery-status notification (RFC 3464) as Postfix writes it, returning ``original``."""
    rcpt = recipient or original.rcpt_tos[0]
    failed = action == "failed"
    subject = "Undelivered Mail Returned to Sender" if failed else "Delayed Mail (still being retried)"
    code = status.replace(".", "")[0] + "50"
    returned = original.msg.as_bytes(policy=SMTP).decode("utf-8", "replace")
    text = (
        "Return-Path: <>\r\n"
        "From: MAILER-DAEMON@mx.kunde.example (Mail Delivery System)\r\n"
        f"To: {SUPPORT_ADDRESS}\r\n"
        f"Subject: {subject}\r\n"
        f"Date: {format_datetime(original.msg['Date'].datetime)}\r\n"
        f"Message-ID: {make_msgid(domain='mx.kunde.example')}\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="BOUNDARY"\r\n'
        "\r\n"
        "--BOUNDARY\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n\r\n"
        "This is the mail system at host mx.kunde.example.\r\n\r\n"
        f"I'm sorry to have to inform you that your message could not\r\nbe delivered to {rcpt}.\r\n\r\n"
        "--BOUNDARY\r\n"
        "Content-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.kunde.example\r\n\r\n"
        f"Final-Recipient: rfc822; {rcpt}\r\nOriginal-Recipient: rfc822;{rcpt}\r\n"
        f"Action: {action}\r\nStatus: {status}\r\n"
        f"Diagnostic-Code: smtp; {code} {status} <{rcpt}>: Recipient address rejected\r\n\r\n"
        "--BOUNDARY\r\n"
        "Content-Type: message/rfc822\r\n\r\n"
        f"{returned}\r\n"
        "--BOUNDARY--\r\n"
    )
    return text.encode("utf-8")


def _out_of_office(reply_to: Sent | None, sender=CUSTOMER) -> bytes:
    headers = {"Auto-Submitted": "auto-replied", "X-Auto-Response-Suppress": "All"}
    if reply_to is not None:
        mid = reply_to.header("Message-ID")
        headers |= {"In-Reply-To": mid, "References": mid}
    return make_mail(
        sender=sender,
        subject="Abwesenheitsnotiz: " + (reply_to.header("Subject") if reply_to else "Ihre Nachricht"),
        body="Ich bin bis zum 30.11. nicht im Büro und lese meine E-Mails nicht.\nIn dringenden Fällen: 0211 1234.",
        headers=headers,
    )


def _raw_rows(desk: Desk) -> list[RawMessage]:
    with session_scope(desk.app.session_factory) as s:
        rows = list(s.scalars(select(RawMessage).order_by(RawMessage.id)))
        s.expunge_all()
        return rows


def _noise_list(desk: Desk, monkeypatch) -> str:
    monkeypatch.setenv("MAILBRIDGE_CONFIG", str(desk.app.settings.source))
    result = CliRunner().invoke(cli, ["noise", "list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.output


def test_out_of_office_reply_is_recorded_without_changing_the_case(desk):
    t, ack = _open_case(desk)
    desk.clock.now += timedelta(minutes=5)
    sent = desk.deliver(_out_of_office(ack))
    # No acknowledgement, no notification, nothing at all goes out.
    assert sent == []
    assert len(desk.tickets()) == 1
    after = desk.ticket(t.case_number)
    assert after.status == t.status and after.updated_at is not None
    m = desk.messages(t.case_number)[-1]
    assert (m.direction, m.kind, m.mail_class) == ("in", "auto", "out_of_office")
    kinds = [k for k, _ in desk.events(t.case_number)]
    assert "auto_reply_received" in kinds and "status_changed" not in kinds


def test_out_of_office_on_a_solved_case_does_not_reopen_it(desk):
    t, ack = _open_case(desk)
    with session_scope(desk.app.session_factory) as s:
        s.get(Ticket, t.id).status = "solved"
        s.get(Ticket, t.id).solved_at = desk.clock.now
    desk.clock.now += timedelta(hours=1)
    assert desk.deliver(_out_of_office(ack)) == []
    assert desk.ticket(t.case_number).status == "solved"


def test_unmatched_auto_reply_is_kept_for_the_operator_not_a_case(desk, monkeypatch):
    sent = desk.deliver(_out_of_office(None, sender=GARBAGE_FROM))
    assert sent == []
    assert desk.tickets() == []
    (raw,) = _raw_rows(desk)
    assert (raw.disposition, raw.mail_class) == ("noise", "out_of_office")
    out = _noise_list(desk, monkeypatch)
    assert "1 automatic mail(s) that answered nothing of ours" in out
    header, row = out.splitlines()[1:3]
    assert header.split() == ["RAW", "RECEIVED", "CLASS", "FROM", "SUBJECT", "EVIDENCE"]
    assert f"#{raw.id} {desk.app.raw_store.root / raw.path}" in out  # the raw file, whole
    # (no calendar: times in UTC)
    received = f"{raw.received_at:%Y-%m-%d %H:%M} UTC".split()
    assert row.split()[:6] == [f"#{raw.id}", *received, "out_of_office", "bot@robot.example"]


def test_mail_without_markers_still_becomes_a_case(desk):
    """The control for the tests above: a mail about absence notes without any automatic marker
    (and no autoresponder prefix in the subject) is a request."""
    sent = desk.deliver(make_mail(sender=GARBAGE_FROM, subject="Frage zur Abwesenheitsnotiz im Portal"))
    assert len(to(sent, GARBAGE_FROM[1])) == 1
    assert len(desk.tickets()) == 1
    assert _raw_rows(desk)[0].mail_class == "human"


def test_hard_bounce_is_recorded_and_suppresses_automatic_mail_for_60_days(desk, monkeypatch):
    t, ack = _open_case(desk)
    desk.clock.now += timedelta(minutes=2)
    assert desk.deliver(_dsn(ack)) == []
    assert len(desk.tickets()) == 1
    m = desk.messages(t.case_number)[-1]
    assert (m.kind, m.mail_class) == ("bounce", "hard_bounce")
    (failed,) = [d for k, d in desk.events(t.case_number) if k == "delivery_failed"]
    assert failed["permanent"] is True and failed["status"] == "5.1.1"
    assert failed["addresses"][0]["address"] == CUSTOMER[1]
    with session_scope(desk.app.session_factory) as s:
        h = s.get(AddressHealth, CUSTOMER[1])
        assert h.state == "failing" and h.permanent
        assert h.suppressed_until == desk.clock.now + timedelta(days=60)
    failing = _noise_list(desk, monkeypatch).split("1 failing address(es):\n", 1)[1].splitlines()
    assert failing[0].split() == ["ADDRESS", "BOUNCE", "STATUS", "BOUNCES", "SINCE", "SUPPRESSED", "UNTIL"]
    assert failing[1].split()[:4] == [CUSTOMER[1], "hard", "5.1.1", "1"]

    # The next new request from that address is a case, but gets no acknowledgement.
    desk.clock.now += timedelta(days=1)
    sent = desk.deliver(make_mail(sender=CUSTOMER, subject="Noch ein Problem"))
    assert to(sent, CUSTOMER[1]) == []
    assert len(to(sent, TEAM)) == 1  # the agents still hear of it
    t2 = desk.tickets()[-1]
    (supp,) = [d for k, d in desk.events(t2.case_number) if k == "auto_mail_suppressed"]
    assert supp["reason"] == "address_failing"

    # After the 60 days, automatic mail goes out again.
    desk.clock.now += timedelta(days=60)
    sent = desk.deliver(make_mail(sender=CUSTOMER, subject="Drittes Problem"))
    assert len(to(sent, CUSTOMER[1])) == 1


def test_soft_bounce_is_recorded_but_does_not_suppress(desk):
    t, ack = _open_case(desk)
    assert desk.deliver(_dsn(ack, status="4.2.2", action="delayed")) == []
    m = desk.messages(t.case_number)[-1]
    assert m.mail_class == "soft_bounce"
    with session_scope(desk.app.session_factory) as s:
        h = s.get(AddressHealth, CUSTOMER[1])
        assert h.state == "failing" and not h.permanent and h.suppressed_until is None
    sent = desk.deliver(make_mail(sender=CUSTOMER, subject="Noch ein Problem"))
    assert len(to(sent, CUSTOMER[1])) == 1


def test_bounce_of_a_mail_we_never_sent_is_noise(desk):
    """Backscatter: a spammer forged our address; the bounce names no mail of ours."""
    fake = Sent(
        SUPPORT_ADDRESS,
        ["victim@elsewhere.example"],
        EmailMessage(),
    )
    fake.msg["From"] = SUPPORT_ADDRESS
    fake.msg["To"] = "victim@elsewhere.example"
    fake.msg["Subject"] = "Cheap watches"
    fake.msg["Date"] = format_datetime(desk.clock.now)
    fake.msg["Message-ID"] = make_msgid(domain="spam.example")
    fake.msg.set_content("buy now")
    assert desk.deliver(_dsn(fake)) == []
    assert desk.tickets() == []
    (raw,) = _raw_rows(desk)
    assert (raw.disposition, raw.mail_class) == ("noise", "hard_bounce")
    with session_scope(desk.app.session_factory) as s:
        # Only a bounce of our own mail says anything about an address.
        assert s.scalar(select(func.count()).select_from(AddressHealth)) == 0


def test_list_mail_opens_a_case_without_acknowledgement(desk):
    sent = desk.deliver(
        make_mail(
            sender=("Newsletter", "news@lists.kunde.example"),
            subject="Monatsbericht November",
            headers={"List-Id": "<bericht.lists.kunde.example>", "List-Unsubscribe": "<mailto:leave@kunde.example>"},
        )
    )
    assert to(sent, "news@lists.kunde.example") == []
    (t,) = desk.tickets()
    kinds = [k for k, _ in desk.events(t.case_number)]
    assert "ack_suppressed" in kinds
    assert _raw_rows(desk)[0].mail_class == "list"


def test_mail_forwarded_by_a_customers_exchange_rule_becomes_a_case_and_is_acknowledged(desk):
    """Exchange marks what an inbox rule forwards as auto-generated; it is still a person's request."""
    sent = desk.deliver(
        make_mail(
            sender=CUSTOMER,
            subject="WG: Fehlermeldung Lizenzserver",
            headers={
                "Auto-Submitted": "auto-generated",
                "X-MS-Exchange-Inbox-Rules-Loop": CUSTOMER[1],
                "X-MS-Exchange-Generated-Message-Source": "Mailbox Rules Agent",
            },
        )
    )
    assert len(to(sent, CUSTOMER[1])) == 1
    assert len(desk.tickets()) == 1
    assert _raw_rows(desk)[0].mail_class == "auto_forwarded"


def test_mail_from_our_own_address_is_never_a_customer_mail(desk):
    assert desk.deliver(make_mail(sender=("Support", SUPPORT_ADDRESS), subject="Test")) == []
    assert desk.tickets() == []
    (raw,) = _raw_rows(desk)
    assert (raw.disposition, raw.mail_class) == ("ignored", "own")


# A smaller first per-recipient tier than the default (30 in 10 minutes, checked in
# tests/unit/test_auto_mail_guard.py), so the loop test reaches it in 6 rounds instead of 31.
LOOP_LIMIT = 5
LOOP_LIMIT_CONFIG = f"""
[auto_mail]
per_recipient = [{{ max = {LOOP_LIMIT}, minutes = 10 }}, {{ max = 120, minutes = 60 }}, {{ max = 360, minutes = 600 }}]
"""


def test_unmarked_autoresponder_is_stopped_by_the_per_recipient_limit(
    tmp_path, imap_server, smtp_sink, db_url, imap_env
):
    """Two autoresponders against each other: mailbridge, and a robot that answers every mail it
    gets with a new mail (new subject, no references, no markers), so every answer opens a case.
    The per-recipient limit (configured: 5 in 10 minutes) ends the exchange."""
    desk = make_desk(tmp_path, imap_server, smtp_sink, db_url, conversations=LOOP_LIMIT_CONFIG)
    robot = ("Ticket Robot", "robot@helpdesk.other.example")
    sent = desk.deliver(make_mail(sender=robot, subject="Request 1"))
    rounds, total_to_robot = 0, 0
    while to(sent, robot[1]) and rounds < 100:
        rounds += 1
        total_to_robot += len(to(sent, robot[1]))
        desk.clock.now += timedelta(seconds=5)
        # The robot answers each of our mails with a fresh mail.
        answers = [
            make_mail(sender=robot, subject=f"Request {rounds + 1}.{i}") for i, _ in enumerate(to(sent, robot[1]))
        ]
        sent = desk.deliver(*answers)
    assert not to(sent, robot[1]), "the exchange did not stop"
    assert total_to_robot == LOOP_LIMIT
    assert len(desk.tickets()) == LOOP_LIMIT + 1  # every robot mail opened a case; the last one got no answer
    last = desk.tickets()[-1]
    (supp,) = [d for k, d in desk.events(last.case_number) if k == "auto_mail_suppressed"]
    assert (supp["reason"], supp["scope"], supp["max"], supp["minutes"]) == ("limit", "recipient", LOOP_LIMIT, 10)


def _backlog(desk: Desk, sender: tuple[str, str], arrived: list[datetime]) -> list[Sent]:
    """Mails from ``sender`` that arrived in the mailbox at ``arrived`` (APPENDed with those
    INTERNALDATEs, as an MTA delivered them while mailbridge was down), then one cycle over them."""
    c = desk.imap.client()
    try:
        for i, at in enumerate(arrived):
            c.append("INBOX", make_mail(sender=sender, subject=f"Anfrage {i + 1}"), msg_time=at)
    finally:
        c.logout()
    return desk.deliver()


def test_a_backlog_after_downtime_is_limited_as_its_mails_arrived_not_as_a_storm(
    tmp_path, imap_server, smtp_sink, db_url, imap_env
):
    """The per-recipient limit (here 5 in 10 minutes) counts a mail at the time it arrived in the
    mailbox (its INTERNALDATE), not when mailbridge works through a backlog: eight requests written
    15 minutes apart while the service was down are all acknowledged when it comes back, while
    eight that arrived within a minute are limited as they would have been live."""
    desk = make_desk(tmp_path, imap_server, smtp_sink, db_url, conversations=LOOP_LIMIT_CONFIG)
    real_now = datetime.now(UTC)
    patient = ("Geduldige Kundin", "geduldig@kunde.example")
    sent = _backlog(desk, patient, [real_now - timedelta(hours=3) + timedelta(minutes=15 * i) for i in range(8)])
    assert len(to(sent, patient[1])) == 8

    burst = ("Eilige Kundin", "eilig@kunde.example")
    sent = _backlog(desk, burst, [real_now - timedelta(hours=1) + timedelta(seconds=5 * i) for i in range(8)])
    assert len(to(sent, burst[1])) == LOOP_LIMIT
    held = [
        d
        for t in desk.tickets()
        for k, d in desk.events(t.case_number)
        if k == "auto_mail_suppressed" and d.get("address") == burst[1]
    ]
    assert len(held) == 8 - LOOP_LIMIT
    assert {(d["reason"], d["scope"], d["max"]) for d in held} == {("limit", "recipient", LOOP_LIMIT)}


def test_rfc3834_autoresponder_exchange_stops_after_one_round(desk):
    """The other kind of autoresponder marks its replies (Auto-Submitted: auto-replied): its first
    answer is recognised and nothing more goes back."""
    robot = ("Vacation", "vacation@kunde.example")
    sent = desk.deliver(make_mail(sender=robot, subject="Frage"))
    (ack,) = to(sent, robot[1])
    # The robot answers our acknowledgement the way Sieve vacation does (the ack's Auto-Submitted
    # would already stop a compliant one; this robot ignores it).
    reply = make_mail(
        sender=robot,
        subject="Auto: " + ack.header("Subject"),
        headers={"Auto-Submitted": "auto-replied (vacation)", "In-Reply-To": ack.header("Message-ID")},
    )
    assert desk.deliver(reply) == []
    assert len(desk.tickets()) == 1


def test_oversize_mail_is_quarantined_and_its_sender_told(tmp_path, imap_server, smtp_sink, db_url, imap_env):
    desk = make_desk(tmp_path, imap_server, smtp_sink, db_url, conversations="\n[ingest]\nmax_message_bytes = 200000\n")
    big = make_mail(
        sender=CUSTOMER,
        to=HOTLINE_ADDRESS,  # the German queue
        subject="Logdateien",
        attachments=[("server.log", "text/plain", b"x" * 300_000)],
    )
    sent = desk.deliver(big)
    assert desk.tickets() == []
    (notice,) = to(sent, CUSTOMER[1])
    assert "zu groß" in notice.header("Subject")
    assert "0,4 MB groß" in notice.text and "bis 0,2 MB" in notice.text
    assert notice.header("Auto-Submitted") == "auto-replied"
    with session_scope(desk.app.session_factory) as s:
        (q,) = s.scalars(select(Quarantine)).all()
        assert q.stage == "size" and "was told" in q.reason
        raw = s.scalars(select(RawMessage)).one()
        assert raw.disposition == "quarantined" and raw.mail_class == "human"
    assert notice.header("In-Reply-To").strip("<>") in big.decode("ascii", "replace")

    # An automatic mail over the limit gets no notice.
    auto = make_mail(
        sender=CUSTOMER,
        subject="Report",
        headers={"Auto-Submitted": "auto-generated"},
        attachments=[("r.log", "text/plain", b"y" * 300_000)],
    )
    assert desk.deliver(auto) == []
    with session_scope(desk.app.session_factory) as s:
        reasons = [q.reason for q in s.scalars(select(Quarantine).order_by(Quarantine.id))]
        assert "no notice: auto_reply" in reasons[1]
        assert s.scalar(select(func.count()).select_from(Outbox)) == 1
        assert s.scalar(select(func.count()).select_from(Message).where(Message.kind == "ack")) == 0


def _many_parts(*, to: str, subject: str, headers: str = "") -> bytes:
    """A mail from CUSTOMER with one CSV file more than the parser's MIME-part limit allows."""
    files = "".join(
        f"--B\r\nContent-Type: text/csv\r\nContent-Disposition: attachment; filename=messwert-{i:04}.csv\r\n\r\n1;2\r\n"
        for i in range(MAX_MIME_PARTS + 1)
    )
    return (
        f"From: {CUSTOMER[0]} <{CUSTOMER[1]}>\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Message-ID: {make_msgid(domain='kunde.example')}\r\nDate: Fri, 20 Nov 2026 09:30:00 +0000\r\n{headers}"
        "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n"
        f"--B\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nDie Messwerte von gestern.\r\n{files}--B--\r\n"
    ).encode()


def test_mail_with_too_many_parts_is_quarantined_and_its_sender_told(desk):
    """A mail over the MIME-part limit is refused before parsing like an oversized one: quarantined
    (stage "size", the limit as the reason), its sender told why in words, in the queue's language;
    an automatic one gets no notice."""
    parts = _many_parts(to=HOTLINE_ADDRESS, subject="Messwerte")
    sent = desk.deliver(parts)
    assert desk.tickets() == []
    (notice,) = to(sent, CUSTOMER[1])
    assert notice.header("Subject") == "Ihre Nachricht hat zu viele Teile und wurde nicht zugestellt"
    text = " ".join(notice.text.split())
    assert "besteht aus zu vielen Teilen (Anhänge oder ineinander verschachtelte Nachrichtenteile)" in text
    assert "Nachrichten mit bis zu 1.000 Teilen an" in text and "ZIP-Archiv" in text
    assert "groß" not in text  # the reason is the parts, not the size
    assert "\r\n\r\nMit freundlichen Grüßen" in notice.text
    assert notice.header("Auto-Submitted") == "auto-replied"
    assert notice.header("In-Reply-To").strip("<>") in parts.decode("ascii", "replace")
    with session_scope(desk.app.session_factory) as s:
        (q,) = s.scalars(select(Quarantine)).all()
        assert q.stage == "size" and q.reason.startswith(f"too many MIME parts (over {MAX_MIME_PARTS})")
        assert f"the sender {CUSTOMER[1]} was told" in q.reason
        raw = s.scalars(select(RawMessage)).one()
        assert raw.disposition == "quarantined" and raw.mail_class == "human"
    # The operator's list, on a terminal 80 columns wide: the stage, the reason cut with "…".
    listed = CliRunner().invoke(
        cli, ["--config", str(desk.app.settings.source), "quarantine", "list"], env={"COLUMNS": "80"}
    )
    print(listed.stdout)
    header, row, *total = listed.stdout.splitlines()
    assert header.split() == ["ID", "QUARANTINED", "STAGE", "FROM", "SUBJECT", "REASON"]
    assert row.split()[4] == "size" and row.endswith("…") and len(row) <= 80
    assert row[header.index("REASON") :].startswith("too many MIME")
    assert total[0].startswith("1 quarantined; the whole of each")

    # An automatic mail with as many parts gets no notice.
    report = _many_parts(to=SUPPORT_ADDRESS, subject="Report", headers="Auto-Submitted: auto-generated\r\n")
    assert desk.deliver(report) == []
    with session_scope(desk.app.session_factory) as s:
        reasons = [q.reason for q in s.scalars(select(Quarantine).order_by(Quarantine.id))]
        assert "no notice: auto_reply" in reasons[1] and reasons[1].startswith("too many MIME parts")
        assert s.scalar(select(func.count()).select_from(Outbox)) == 1
