"""Mail in through a real IMAP server (pymap), tickets in a real database, acknowledgements out
through a real SMTP server (aiosmtpd) — read back as the SMTP server received them."""

from __future__ import annotations

import asyncio
import gzip
from email import message_from_bytes, policy

from sqlalchemy import func, select

from mailbridge.domain import CaseNumberFormat
from mailbridge.store.db import session_scope
from mailbridge.store.models import AttachmentRow, Event, Message, Outbox, Quarantine, RawMessage, Ticket
from tests.support import HOTLINE_ADDRESS, SUPPORT_ADDRESS, make_mail

GERMAN = "Guten Tag,\n\nunsere Maschine 4711 steht seit heute früh still, die Steuerung zeigt Fehler E42.\n\nGruß"
ENGLISH = "Hello,\n\nsince this morning the license server refuses every checkout with error -15.\n\nRegards"


def _folder_counts(imap):
    c = imap.client()
    try:
        return {f: c.select_folder(f)[b"EXISTS"] for f in ("INBOX", "Processed", "Quarantine")}
    finally:
        c.logout()


def _drain(app):
    """Run the outbox sender until nothing is due."""
    sender = app.sender()
    total = 0
    while True:
        r = asyncio.run(sender.run_once())
        total += r.sent
        if not (r.sent or r.retry or r.failed):
            return total


def test_each_mail_becomes_one_ticket_with_an_acknowledgement(app, imap_server, smtp_sink):
    """Three customer mails → three tickets with valid, distinct case numbers; each customer gets an
    acknowledgement in their language that threads onto their mail; the mails move to Processed."""
    mails = [
        make_mail(subject="Maschine steht", body=GERMAN, to=HOTLINE_ADDRESS, message_id="<de-1@kunde.example>"),
        make_mail(
            subject="License server down",
            body=ENGLISH,
            sender=("Jane Roe", "jane@customer.example"),
            message_id="<en-1@customer.example>",
            attachments=[("server.log", "text/plain", b"ERROR -15 checkout refused\n" * 50)],
        ),
        make_mail(
            subject="Frage zur Rechnung",
            html_only=True,
            html="<html><body><p>Guten Tag,</p><p>bitte senden Sie uns die <b>Rechnung</b> erneut zu.</p>"
            "<p>Vielen Dank und freundliche Grüße</p></body></html>",
            sender=("Eva Beispiel", "eva@firma.example"),
            message_id="<html-1@firma.example>",
        ),
    ]
    imap_server.append(mails)

    report = app.poller("main").cycle()
    assert report.fetched == 3 and report.dispositions == {"processed": 3}
    assert _drain(app) == 3

    fmt = CaseNumberFormat()
    with session_scope(app.session_factory) as s:
        tickets = {t.requester_email: t for t in s.scalars(select(Ticket))}
        assert len(tickets) == 3
        numbers = [t.case_number for t in tickets.values()]
        assert len(set(numbers)) == 3 and all(fmt.is_valid(n) for n in numbers)
        de, en, html = (
            tickets[a] for a in ("juergen.mueller@kunde.example", "jane@customer.example", "eva@firma.example")
        )
        assert (de.queue, de.language, de.status) == ("hotline", "de", "new")
        assert (en.queue, en.language) == ("support", "en")
        assert html.language == "de"
        html_msg = s.scalars(select(Message).where(Message.ticket_id == html.id, Message.direction == "in")).one()
        assert "Rechnung" in html_msg.body_text and "<b>" not in html_msg.body_text
        att = s.scalars(select(AttachmentRow)).one()
        assert (att.filename, att.size) == ("server.log", 27 * 50)
        assert (app.attachment_store.root / app.attachment_store.relpath(att.sha256)).read_bytes().startswith(b"ERROR")
        # Every raw mail is kept, byte for byte.
        for raw in s.scalars(select(RawMessage)):
            assert gzip.decompress((app.raw_store.root / raw.path).read_bytes()) in mails
        kinds = {
            t.case_number: [e.kind for e in s.scalars(select(Event).where(Event.ticket_id == t.id))]
            for t in tickets.values()
        }
        assert all(k == ["created", "ack_queued", "mail_sent"] for k in kinds.values())

    received = {r.rcpt_tos[0]: r for r in smtp_sink.received}
    assert set(received) == set(tickets)
    for addr, ticket in tickets.items():
        r = received[addr]
        msg = message_from_bytes(r.data, policy=policy.default)
        assert r.mail_from == (HOTLINE_ADDRESS if ticket.queue == "hotline" else SUPPORT_ADDRESS)
        assert msg["Subject"] == f"[{ticket.case_number}] {ticket.subject}"
        assert msg["Auto-Submitted"] == "auto-replied"
        assert msg["From"].addresses[0].addr_spec == r.mail_from
        text = msg.get_body(("plain",)).get_content()
        assert ticket.case_number in text
        assert ("vielen Dank" in text) == (ticket.language == "de")
        assert ("thank you" in text) == (ticket.language == "en")
        assert msg.get_body(("html",)) is not None
        with session_scope(app.session_factory) as s:
            inbound = s.scalars(select(Message).where(Message.ticket_id == ticket.id, Message.direction == "in")).one()
            outbound = s.scalars(
                select(Message).where(Message.ticket_id == ticket.id, Message.direction == "out")
            ).one()
        assert msg["In-Reply-To"] == f"<{inbound.message_id}>"
        assert f"<{inbound.message_id}>" in msg["References"]
        assert msg["Message-ID"] == f"<{outbound.message_id}>"

    assert _folder_counts(imap_server) == {"INBOX": 0, "Processed": 3, "Quarantine": 0}


def test_malformed_mail_is_kept_raw_and_quarantined_while_the_rest_flows(app, imap_server, smtp_sink):
    """Broken MIME and an undecodable charset go to quarantine with a reason; the mails before and
    after them become tickets."""
    broken_mime = (
        b"From: a@kunde.example\r\nTo: support@vendor.example\r\nSubject: kaputt\r\nMessage-ID: <bm@kunde.example>\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed\r\n\r\nthis multipart has no boundary at all\r\n"
    )
    bad_charset = (
        b"From: b@kunde.example\r\nTo: support@vendor.example\r\nSubject: charset\r\nMessage-ID: <cs@kunde.example>\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=x-no-such-charset\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n\r\nGr\xfc\xdfe \xff\xfe aus M\xfcnchen\r\n"
    )
    imap_server.append(
        [
            make_mail(message_id="<ok-1@kunde.example>"),
            broken_mime,
            bad_charset,
            make_mail(message_id="<ok-2@kunde.example>", subject="Zweite Anfrage"),
        ]
    )
    report = app.poller("main").cycle()
    assert report.dispositions == {"processed": 2, "quarantined": 2}
    _drain(app)
    with session_scope(app.session_factory) as s:
        assert s.scalar(select(func.count()).select_from(Ticket)) == 2
        rows = {q.message_id: q for q in s.scalars(select(Quarantine))}
        assert set(rows) == {"bm@kunde.example", "cs@kunde.example"}
        assert "broken MIME structure" in rows["bm@kunde.example"].reason
        assert "undecodable text" in rows["cs@kunde.example"].reason
        for q in rows.values():
            raw = s.get(RawMessage, q.raw_id)
            assert raw.disposition == "quarantined"
            assert gzip.decompress((app.raw_store.root / raw.path).read_bytes()) in (broken_mime, bad_charset)
    assert len(smtp_sink.received) == 2
    assert _folder_counts(imap_server) == {"INBOX": 0, "Processed": 2, "Quarantine": 2}


def test_auto_submitted_and_own_mail_get_no_acknowledgement(app, imap_server, smtp_sink):
    """RFC 3834: an auto-reply never gets an acknowledgement, and one that answers no case of ours is
    no case either (kept for the operator); mail from our own address is no customer's."""
    imap_server.append(
        [
            make_mail(
                message_id="<ooo@kunde.example>",
                subject="Abwesenheitsnotiz",
                headers={"Auto-Submitted": "auto-replied"},
            ),
            make_mail(
                message_id="<own@vendor.example>", sender=("Vendor Support", SUPPORT_ADDRESS), subject="[C1000002] loop"
            ),
            make_mail(message_id="<human@kunde.example>", headers={"Auto-Submitted": "no"}),
        ]
    )
    app.poller("main").cycle()
    assert _drain(app) == 1
    with session_scope(app.session_factory) as s:
        tickets = list(s.scalars(select(Ticket)))
        assert len(tickets) == 1
        ooo = s.scalars(select(Message).where(Message.message_id == "ooo@kunde.example")).one()
        assert ooo.ticket_id is None and ooo.routing["rule"] == "noise"
        assert s.get(RawMessage, ooo.raw_id).disposition == "noise"
        own = s.scalars(select(Message).where(Message.message_id == "own@vendor.example")).one()
        assert own.ticket_id is None and own.routing["rule"] == "ignored"
        assert s.scalar(select(func.count()).select_from(Outbox)) == 1
    assert [r.rcpt_tos for r in smtp_sink.received] == [["juergen.mueller@kunde.example"]]


def test_a_mail_seen_twice_is_processed_once(app, imap_server, smtp_sink):
    """The same mail again (a resend with the same Message-ID, or the same bytes in a recreated
    folder) is recorded as a duplicate, not a second ticket."""
    first = make_mail(message_id="<same@kunde.example>")
    imap_server.append([first])
    app.poller("main").cycle()
    # Same Message-ID, different bytes (delivered again with another Received header).
    imap_server.append([b"Received: from mx2\r\n" + first, first])
    report = app.poller("main").cycle()
    assert report.dispositions == {"duplicate": 2}
    with session_scope(app.session_factory) as s:
        assert s.scalar(select(func.count()).select_from(Ticket)) == 1
        assert s.scalar(select(func.count()).select_from(Outbox)) == 1


def test_reply_with_thread_headers_or_case_number_lands_on_the_case(app, imap_server, smtp_sink):
    """A reply to our acknowledgement (In-Reply-To) and a new mail quoting the case number in the
    subject both land on the existing case and open no new one."""
    imap_server.append([make_mail(message_id="<orig@kunde.example>")])
    poller = app.poller("main")
    poller.cycle()
    _drain(app)
    ack = message_from_bytes(smtp_sink.received[0].data, policy=policy.default)
    case = ack["Subject"].split("]")[0].strip("[")
    imap_server.append(
        [
            make_mail(
                message_id="<reply@kunde.example>",
                subject=f"AW: {ack['Subject']}",
                headers={"In-Reply-To": ack["Message-ID"], "References": ack["Message-ID"]},
            ),
            make_mail(message_id="<new@kunde.example>", subject=f"Nachtrag zu {case.lower()}"),
            make_mail(
                message_id="<wrongdigit@kunde.example>", subject=f"Nachtrag zu {case[:-1]}{(int(case[-1]) + 1) % 10}"
            ),
        ]
    )
    poller.cycle()
    with session_scope(app.session_factory) as s:
        tickets = list(s.scalars(select(Ticket).order_by(Ticket.id)))
        assert len(tickets) == 2  # the mistyped number opened a new case
        msgs = {m.message_id: m for m in s.scalars(select(Message).where(Message.direction == "in"))}
        assert msgs["reply@kunde.example"].ticket_id == tickets[0].id
        assert msgs["reply@kunde.example"].routing["rule"] == "thread-header"
        assert msgs["new@kunde.example"].ticket_id == tickets[0].id
        assert msgs["new@kunde.example"].routing["rule"] == "subject"
        assert msgs["wrongdigit@kunde.example"].ticket_id == tickets[1].id


def test_a_backlog_is_parsed_by_worker_processes_with_the_same_outcome(app, imap_server, smtp_sink):
    """A backlog goes through the parse pool: same tickets, order and quarantine as inline parsing."""
    mails = [make_mail(message_id=f"<bulk-{i}@kunde.example>", subject=f"Anfrage {i}") for i in range(30)]
    mails.insert(
        10,
        b"From: a@kunde.example\r\nTo: support@vendor.example\r\nSubject: kaputt\r\n"
        b"Message-ID: <bulk-bad@k.example>\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed\r\n\r\nno boundary\r\n",
    )
    imap_server.append(mails)
    report = app.poller("main").cycle()
    assert app.preparer._pool is not None, "a 31-mail batch must use the parse pool"
    assert report.dispositions == {"processed": 30, "quarantined": 1}
    assert _drain(app) == 30
    with session_scope(app.session_factory) as s:
        subjects = [t.subject for t in s.scalars(select(Ticket).order_by(Ticket.serial))]
        assert subjects == [f"Anfrage {i}" for i in range(30)]  # case numbers follow mailbox order
        assert s.scalars(select(Quarantine)).one().message_id == "bulk-bad@k.example"
        for raw in s.scalars(select(RawMessage)):
            assert gzip.decompress((app.raw_store.root / raw.path).read_bytes()) in mails
    assert _folder_counts(imap_server) == {"INBOX": 0, "Processed": 30, "Quarantine": 1}
