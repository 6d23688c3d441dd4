"""The forwarded original inside a forward (``ingest/quoting.py`` ``forward_block``,
``ingest/forwards.py``), on real mail: the reply fixtures of tests/data/replies and forwards from the
shared corpus (Outlook's forward as attachment from RT, Gmail forwards from mikel/mail)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from mailbridge.ingest.forwards import find_forward, read_date
from mailbridge.ingest.parser import address_from, parse_mail
from mailbridge.ingest.quoting import forward_block

REPLIES = Path(__file__).resolve().parents[1] / "data" / "replies"
CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus"
BERLIN = ZoneInfo("Europe/Berlin")


def _fixture(name: str):
    raw = (REPLIES / name).read_bytes()
    for k, v in {b"@@REQUESTER@@": b"max@acme.example", b"@@SUPPORT@@": b"support@vendor.example"}.items():
        raw = raw.replace(k, v)
    return parse_mail(raw.replace(b"@@CASE@@", b"C1000002"))


def test_gmail_forward_with_comment():
    fw = find_forward(_fixture("gmail_forward_with_comment.eml"), BERLIN)
    assert fw is not None and fw.form == "forward"
    assert (fw.sender.name, fw.sender.email) == ("Max Mustermann", "max@acme.example")
    assert fw.subject == "[C1000002] Export nach PDF bricht ab"
    # "Fri, Nov 20, 2026 at 9:02 AM": no zone written, so the queue calendar's (Berlin).
    assert fw.date == datetime(2026, 11, 20, 8, 2, tzinfo=UTC)
    assert fw.text.startswith("Hallo zusammen,") and fw.text.endswith("Max Mustermann")
    assert fw.note.startswith("Hallo Support,") and fw.note.endswith("Erika")


def test_apple_mail_forward_is_unquoted():
    """Apple Mail quotes the forwarded mail with ">" under "Anfang der weitergeleiteten Nachricht:"."""
    fw = find_forward(_fixture("apple_mail_forward_de.eml"), BERLIN)
    assert fw is not None
    assert fw.sender.email == "max@acme.example"
    assert fw.date == datetime(2026, 11, 20, 8, 2, 11, tzinfo=UTC)  # "20. November 2026 um 09:02:11 MEZ"
    assert fw.text.startswith("Hallo zusammen,") and ">" not in fw.text
    assert fw.note == "Zur Info, siehe unten."


def test_thunderbird_forward_without_comment():
    block = forward_block(_fixture("thunderbird_forward_no_comment.eml").text)
    assert block is not None and block.introduced_by == "forward" and block.above == ""
    assert block.headers["date"] == "Fri, 20 Nov 2026 10:15:00 +0100"
    assert block.headers["from"] == "Vendor Support <support@vendor.example>"


@pytest.mark.parametrize("name", ["outlook2010_de_urspruengliche_nachricht.eml", "outlook365_en_from_sent_block.eml"])
def test_outlook_reply_is_no_forward(name):
    """Outlook writes the same block above a reply: under "AW:"/"RE:" it is the quoted original of
    a reply, found by forward_block but not a forward."""
    p = _fixture(name)
    assert forward_block(p.text) is not None
    assert find_forward(p, BERLIN) is None


def test_outlook_inline_forward_under_wg():
    p = _fixture("outlook2010_de_urspruengliche_nachricht.eml")
    p.subject = "WG: Export nach PDF bricht ab"
    fw = find_forward(p, BERLIN)
    assert fw is not None and fw.form == "original"
    # "Von: Vendor Support [mailto:support@vendor.example]", "Gesendet: Freitag, 20. November 2026 10:15"
    assert fw.sender.email == "support@vendor.example"
    assert fw.date == datetime(2026, 11, 20, 9, 15, tzinfo=UTC)
    assert fw.note.startswith("Hallo,") and "Protokolldatei" in fw.note


def test_outlook_header_block_without_separator():
    p = _fixture("outlook365_en_from_sent_block.eml")
    p.subject = "FW: Export"
    fw = find_forward(p, BERLIN)
    assert fw is not None and fw.form == "header"
    assert fw.date == datetime(2026, 11, 20, 9, 15, tzinfo=UTC)  # "Friday, November 20, 2026 10:15 AM"
    assert fw.text.startswith("Dear Max Mustermann,")
    assert "_____" not in fw.note


def test_sender_without_address_is_no_forward():
    text = (
        "Bitte übernehmen.\n\n-----Ursprüngliche Nachricht-----\n"
        "Von: Mustermann, Max\nGesendet: heute\nAn: Anna\nBetreff: x\n\nText"
    )
    p = _fixture("thunderbird_de_inline.eml")
    p.text, p.subject = text, "WG: x"
    assert forward_block(text) is not None
    assert find_forward(p, BERLIN) is None


def test_address_as_people_write_it():
    assert address_from("Vendor Support [mailto:Support@Vendor.example]").email == "support@vendor.example"
    assert address_from('"Müller, Jürgen" <j.mueller@kunde.example>').name == "Müller, Jürgen"
    assert address_from("Mustermann, Max") is None


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("Montag, 5. Januar 2027 09:12", datetime(2027, 1, 5, 8, 12, tzinfo=UTC)),
        ("Mo., 5. Jan. 2027 um 09:12 Uhr", datetime(2027, 1, 5, 8, 12, tzinfo=UTC)),
        ("05.01.2027 09:12", datetime(2027, 1, 5, 8, 12, tzinfo=UTC)),
        ("Tue, 05 Jan 2027 09:12:00 +0000", datetime(2027, 1, 5, 9, 12, tzinfo=UTC)),
        ("Tuesday, January 5, 2027 9:12 AM", datetime(2027, 1, 5, 8, 12, tzinfo=UTC)),
    ],
)
def test_dates_in_the_forms_clients_write(written, expected):
    assert read_date(written, BERLIN) == expected


def test_unreadable_date_is_none():
    assert read_date("irgendwann letzte Woche vielleicht", BERLIN) is None
    assert read_date("", BERLIN) is None


corpus = pytest.mark.skipif(not CORPUS.is_dir(), reason=f"shared corpus not found at {CORPUS}")


@corpus
def test_outlook_forward_as_attachment_from_rt():
    """Outlook 365's forward as attachment (RT's fixture): the attached mail is parsed by the parser."""
    fw = find_forward(parse_mail((CORPUS / "rt" / "outlook-rfc822").read_bytes()), BERLIN)
    assert fw is not None and fw.form == "attachment"
    assert fw.sender.email == "foo@example.com"
    assert fw.subject == "Updates to our terms of use"
    assert fw.date == datetime(2023, 8, 31, 15, 51, 33, tzinfo=UTC)
    assert fw.message_id and fw.message_id.endswith("@microsoft.com]")


@corpus
def test_gmail_forward_keeps_the_attachments():
    p = parse_mail((CORPUS / "mikel-mail" / "plain_emails" / "raw_email8.eml").read_bytes())
    fw = find_forward(p, BERLIN)
    assert fw is not None and fw.form == "forward"
    assert fw.subject == "Signed email causes file attachments"
    assert len(fw.attachments) == len(p.attachments) >= 1


@corpus
def test_inline_message_part_is_not_read_as_a_forward():
    """Gnus forwards as an *inline* message/rfc822 part; mail-parser makes no attachment of it, so
    it is not taken for a forward (a known limit: such a forward opens a case as before)."""
    p = parse_mail((CORPUS / "rt" / "nested-rfc-822").read_bytes())
    assert find_forward(p, BERLIN) is None
