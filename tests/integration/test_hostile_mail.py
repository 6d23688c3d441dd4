"""Hostile mail end to end: through the real IMAP server, the pipeline, the database (SQLite and
PostgreSQL) and out through the real SMTP server, checked on the bytes the SMTP server received.

- header injection: CR/LF in a customer's subject and display name never creates a header in any
  mail we send (acknowledgement, notification, relayed agent reply, escalation);
- MIME bombs (10,000 attachments, 1,000 nesting levels), undecodable charsets, 8-bit headers and
  NUL bytes end as a ticket or in quarantine with a reason, never as a crash;
- hostile attachment file names are stored as safe base names, ``tickets show`` prints no terminal
  escape or direction override, and no file is written outside var/.
"""

from __future__ import annotations

import time
from email import message_from_bytes, policy

import pytest
from sqlalchemy import func, select

from mailbridge.store.db import session_scope
from mailbridge.store.models import AttachmentRow, Quarantine, RawMessage, Ticket
from mailbridge.views import ticket_detail
from tests.integration.conversation_support import CHIEF, TEAM, answer_note, berlin, sla_desk, to
from tests.support import SUPPORT_ADDRESS

VICTIM = "victim@evil.example"
CUSTOMER_ADDR = "juergen.mueller@kunde.example"
# Encoded words are where a CR/LF can hide in a header (RFC 2047 decodes "=0D=0A" to CR LF).
SUBJECT = "=?utf-8?q?Systemstillstand_Linie_3=0D=0ABcc:_victim@evil.example=0D=0AX-Injected:_yes?="
FROM_NAME = "=?utf-8?q?J=C3=BCrgen=0D=0ABcc:_victim@evil.example?="
# An encoded word that decodes to an address of its own, and a line break.
FROM_NAME_2 = "=?utf-8?q?J=C3=BCrgen_<victim@evil.example>=0D=0ABcc:_victim@evil.example?="
# Unicode that some software treats as a line break.
SUBJECT_2 = "Systemstillstand\u2028Bcc: victim@evil.example\u0085X-Injected: yes"
FORBIDDEN = ("\x1b", "\u202e", "\u2066", "\x00", "\x9b")


@pytest.fixture
def desk(tmp_path, imap_server, smtp_sink, db_url, imap_env):
    d = sla_desk(tmp_path, imap_server, smtp_sink, db_url)
    yield d
    d.app.close()


def _raw_mail(subject: str, from_name: str, mid: str, extra: bytes = b"") -> bytes:
    return (
        f"From: {from_name} <{CUSTOMER_ADDR}>\r\nTo: {SUPPORT_ADDRESS}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{mid}>\r\nDate: Mon, 23 Nov 2026 09:00:00 +0100\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        "Guten Tag,\r\n\r\nSystemstillstand an Linie 3, bitte dringend melden.\r\n\r\nGruß\r\n"
    ).encode() + extra


def _assert_no_injected_header(raw: bytes) -> None:
    """On the bytes as the SMTP server received them: every header line ends in CRLF and nothing
    else breaks a line, no Bcc or X-Injected field exists, and the header parses without defects."""
    head, sep, _ = raw.partition(b"\r\n\r\n")
    assert sep, "no end of header"
    for line in head.split(b"\r\n"):
        assert b"\r" not in line and b"\n" not in line, line
        assert line[:1] in (b" ", b"\t") or b":" in line, line
        name = line.split(b":", 1)[0].strip().lower()
        assert line[:1] in (b" ", b"\t") or name not in (b"bcc", b"x-injected"), line
    msg = message_from_bytes(raw, policy=policy.default)
    assert msg["Bcc"] is None and msg["X-Injected"] is None
    assert not [d for d in msg.defects if "Header" in type(d).__name__]
    decoded = " ".join(str(v) for _, v in msg.items())
    assert "\r" not in decoded and "\n" not in decoded


def _check_all(sent) -> None:
    for m in sent:
        assert VICTIM not in m.rcpt_tos
        _assert_no_injected_header(m.msg.as_bytes(policy=policy.SMTP))
    for r in sent:
        assert VICTIM not in r.rcpt_tos


def test_crlf_in_subject_and_name_never_creates_a_header_in_any_mail_we_send(desk, smtp_sink):
    """Acknowledgement, agent notification, relayed agent reply and escalation, built from a
    customer mail whose subject and display name carry CR/LF (and Unicode line breaks), arrive at
    the SMTP server with exactly the headers we wrote."""
    desk.clock.now = berlin(2026, 11, 23, 9, 0)
    sent = desk.deliver(
        _raw_mail(SUBJECT, FROM_NAME, "inj-1@kunde.example"),
        _raw_mail(SUBJECT_2, FROM_NAME_2, "inj-2@kunde.example"),
    )
    acks, notes = to(sent, CUSTOMER_ADDR), to(sent, TEAM)
    assert len(acks) == 2 and len(notes) == 2
    for t in desk.tickets():
        assert "\r" not in t.subject and "\n" not in t.subject and "\u2028" not in t.subject
        assert "\r" not in t.requester_name and "\n" not in t.requester_name

    # The agent answers: the relay goes to the customer with their (hostile) name in To.
    relayed = answer_note(desk, notes[0], "Guten Tag,\n\nwir kümmern uns.\n\nAnna")
    assert to(relayed, CUSTOMER_ADDR)
    # 13:00: the other case's first response is overdue: the breach goes to the managers.
    desk.clock.now = berlin(2026, 11, 23, 13, 0)
    escalated = desk.escalate()
    assert to(escalated, CHIEF) or to(escalated, TEAM)

    everything = [*sent, *relayed, *escalated]
    kinds = {m.header("Auto-Submitted") or "relay" for m in everything}
    assert kinds == {"auto-replied", "auto-generated", "relay"}
    _check_all(everything)
    # Also on the exact bytes the server received (not re-serialised).
    for r in smtp_sink.received:
        assert VICTIM not in r.rcpt_tos
        _assert_no_injected_header(r.data)
    print(f"\nchecked {len(smtp_sink.received)} mails (ack, notification, relay, escalation) byte for byte")


def _many_attachments(n: int) -> bytes:
    parts = ["--B\r\nContent-Type: text/plain\r\n\r\nsiehe Anhang\r\n"]
    parts += [
        f'--B\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename="f{i}.bin"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\nQUJD\r\n"
        for i in range(n)
    ]
    return (
        "From: bomber@kunde.example\r\nTo: support@vendor.example\r\nSubject: 10000 attachments\r\n"
        "Message-ID: <bomb@kunde.example>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n"
        + "".join(parts)
        + "--B--\r\n"
    ).encode()


def _nested(depth: int) -> bytes:
    s = "From: nest@kunde.example\r\nTo: support@vendor.example\r\nSubject: deep\r\n"
    s += "Message-ID: <nest@kunde.example>\r\nMIME-Version: 1.0\r\n"
    s += "".join(f"Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n" for i in range(depth))
    s += "Content-Type: text/plain\r\n\r\ndeep\r\n" + "".join(f"--b{i}--\r\n" for i in reversed(range(depth)))
    return s.encode()


def test_mime_bombs_and_broken_encodings_end_as_ticket_or_quarantine_with_a_reason(app, imap_server, smtp_sink):
    """10,000 attachments and 200 nested multiparts are quarantined with the limit as the reason
    (in bounded time, measured; pymap itself refuses to APPEND 1,000 levels, so that depth is
    tested on the parser in tests/unit/test_hostile_input.py); undecodable charsets, 8-bit headers and NUL bytes in the
    Message-ID, subject and body (which PostgreSQL refuses in text) become tickets — none crashes a
    pipeline step."""
    bomb, nested = _many_attachments(10_000), _nested(200)
    eight_bit = (
        b"From: J\xfcrgen M\xfcller <j8@kunde.example>\r\nTo: support@vendor.example\r\nSubject: Gr\xfc\xdfe \xff\r\n"
        b"Message-ID: <8bit@kunde.example>\r\n\r\nHallo aus M\xfcnchen\r\n"
    )
    nul = (
        b"From: nul@kunde.example\r\nTo: support@vendor.example\r\nSubject: Null\x00Byte \x1b[2J\r\n"
        b"Message-ID: <nul\x00@kunde.example>\r\nIn-Reply-To: <x\x00y@kunde.example>\r\n"
        b'Content-Type: text/plain; charset="utf\x00-8"\r\n\r\nText mit \x00 NUL und \x1b[31mFarbe\r\n'
    )
    undecodable = (
        b"From: cs@kunde.example\r\nTo: support@vendor.example\r\nSubject: charset\r\n"
        b"Message-ID: <cs@kunde.example>\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=x-no-such-charset\r\n\r\n\xff\xfe\xfd M\xfcnchen\r\n"
    )
    imap_server.append([bomb, nested, eight_bit, nul, undecodable])
    t0 = time.perf_counter()
    report = app.poller("main").cycle()
    seconds = time.perf_counter() - t0
    print(
        f"\nfive hostile mails (10,000 attachments: {len(bomb) / 1e6:.1f} MB) fetched and processed in {seconds:.2f} s"
    )
    assert report.dispositions == {"quarantined": 3, "processed": 2}
    with session_scope(app.session_factory) as s:
        rows = {q.message_id: q for q in s.scalars(select(Quarantine))}
        # Refused before parsing (stage "size", like an oversized mail); the sender is told why.
        bomb = rows["bomb@kunde.example"]
        assert bomb.reason.startswith("too many MIME parts (over 1000); the sender bomber@kunde.example was told")
        assert "nested" in rows["nest@kunde.example"].reason
        stages = {mid: q.stage for mid, q in rows.items()}  # limits, not crashes
        assert stages == {"bomb@kunde.example": "size", "nest@kunde.example": "size", "cs@kunde.example": "validate"}
        assert "undecodable text" in rows["cs@kunde.example"].reason
        subjects = {t.requester_email: t.subject for t in s.scalars(select(Ticket))}
        assert subjects == {"j8@kunde.example": "Grüße ÿ", "nul@kunde.example": "Null Byte  [2J"}
        assert s.scalar(select(func.count()).select_from(AttachmentRow)) == 0
        # The raw bytes of every mail are kept, the bomb included.
        assert s.scalar(select(func.count()).select_from(RawMessage)) == 5
    assert seconds < 30


PAYLOADS = ["QUJD", "REVG", "R0hJ", "SktM", "TU5P", "UFFS", "U1RV"]
HOSTILE_NAMES = [
    ("..%2F..%2F..%2Fetc%2Fpasswd", "passwd"),
    ("%2Ftmp%2Fabsolute.sh", "absolute.sh"),
    ("C%3A%5CWindows%5Cevil.dll", "evil.dll"),
    ("invoice%E2%80%AEfdp.exe", "invoicefdp.exe"),
    ("%1B%5B2J%1B%5D0%3Bpwned%07.txt", "[2J]0;pwned.txt"),
    ("a%00b.txt", "ab.txt"),
    ("x" * 600 + ".log", None),
]


def test_hostile_file_names_are_stored_and_shown_safely(app, imap_server, smtp_sink, tmp_path):
    """Attachment names with traversal, absolute paths, direction overrides, escapes, NUL and
    excess length are stored as safe base names; ``tickets show`` prints them without escapes;
    every file written lies below var/ and is named by its hash."""
    body = ["--B\r\nContent-Type: text/plain\r\n\r\nAnhänge anbei\r\n"]
    for i, (name, _) in enumerate(HOSTILE_NAMES):
        body.append(
            "--B\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Disposition: attachment; filename*=utf-8''{name}\r\n"
            f"Content-Transfer-Encoding: base64\r\n\r\n{PAYLOADS[i]}\r\n"
        )
    raw = (
        "From: Eve <eve@kunde.example>\r\nTo: support@vendor.example\r\nSubject: Anhang\r\n"
        "Message-ID: <names@kunde.example>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n"
        + "".join(body)
        + "--B--\r\n"
    ).encode()
    imap_server.append([raw])
    assert app.poller("main").cycle().dispositions == {"processed": 1}
    with session_scope(app.session_factory) as s:
        stored = [a.filename for a in s.scalars(select(AttachmentRow).order_by(AttachmentRow.id))]
        case = s.scalars(select(Ticket)).one().case_number
    assert stored[:-1] == [expected for _, expected in HOSTILE_NAMES[:-1]]
    assert stored[-1].endswith(".log") and len(stored[-1].encode()) <= 255
    shown = ticket_detail(app, case, width=200)
    for ch in FORBIDDEN:
        assert ch not in shown
    words = " ".join(shown.split())  # (a long name stands whole on a line of its own)
    for name in stored:
        assert f"attachment: {name} (" in words
    var = app.settings.var_dir.resolve()
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert not [p for p in written if p.name in ("passwd", "absolute.sh", "evil.dll")]
    for p in (app.attachment_store.root).rglob("*"):
        if p.is_file():
            assert p.resolve().is_relative_to(var) and len(p.stem) == 64
    assert not (tmp_path.parent / "etc").exists()
