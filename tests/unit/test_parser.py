"""parse_mail over handcrafted real-client mails (tests/data/eml) and Message-ID helpers.

Fatal defects are exactly the two cases parser.py defines: an unreadable multipart structure, and
text whose charset failed so that even UTF-8 needed replacement characters. Everything else the
parser tolerates must stay non-fatal.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mailbridge.domain import Address
from mailbridge.ingest.parser import message_id_list, normalize_message_id, parse_mail

EML = Path(__file__).resolve().parents[1] / "data" / "eml"
TAG_RE = re.compile(r"<\s*/?\s*[a-zA-Z!][^>]*>")

FATAL_FIXTURES = {"multipart_no_boundary.eml", "start_boundary_not_found.eml", "unknown_charset_8bit.eml"}
BENIGN_FIXTURES = {
    "outlook_de_umlauts.eml",
    "thunderbird_alternative.eml",
    "html_only_newsletter.eml",
    "attachment_path_traversal.eml",
    "rfc2231_filename.eml",
    "latin1_8bit.eml",
    "no_message_id.eml",
    "unknown_charset_utf8.eml",
    "forward_rfc822.eml",
    "missing_close_boundary.eml",
}


def _parse(name: str):
    return parse_mail((EML / name).read_bytes())


def _nl(text: str) -> str:
    return text.replace("\r\n", "\n")


def test_fixture_lists_cover_the_directory():
    """Every fixture is classified as fatal or benign below (plus the known-bug fixture)."""
    on_disk = {p.name for p in EML.glob("*.eml")}
    assert on_disk == FATAL_FIXTURES | BENIGN_FIXTURES | {"duplicate_subject.eml"}


# --- Outlook / Exchange, German, RFC 2047 ------------------------------------------------------


def test_outlook_german_headers_decoded_and_addresses_lower_cased():
    """RFC 2047 iso-8859-1 names and subject are decoded; addresses are lower-cased, names kept."""
    m = _parse("outlook_de_umlauts.eml")
    assert m.subject == "AW: Lizenzserver startet nach Update nicht mehr - dringend (Größe der Logdatei)"
    assert m.from_ == Address("Jürgen Müller", "juergen.mueller@kunde-gmbh.example")
    assert m.to == [Address("Vendor Support", "support@vendor.example")]
    assert m.cc == [
        Address("Bärbel Schön", "baerbel.schoen@kunde-gmbh.example"),
        Address("IT Leitstelle", "it-leitstelle@kunde-gmbh.example"),
    ]
    assert m.reply_to == []


def test_outlook_envelope_recipients_from_delivered_to_and_x_original_to():
    """Delivered-To and X-Original-To are read and lower-cased; recipient_emails de-duplicates."""
    m = _parse("outlook_de_umlauts.eml")
    assert m.delivered_to
    assert set(m.delivered_to) == {"support@vendor.example"}
    assert m.recipient_emails == [
        "support@vendor.example",
        "baerbel.schoen@kunde-gmbh.example",
        "it-leitstelle@kunde-gmbh.example",
    ]


def test_outlook_threading_ids_normalised_case_preserved():
    """Message-ID, In-Reply-To and References lose their brackets but keep their case (ids are opaque)."""
    m = _parse("outlook_de_umlauts.eml")
    assert m.message_id == "AM6PR07MB5432A1B2C3D4E5F6A7B8C9D0E1F2A3B4@AM6PR07MB5432.eurprd07.prod.outlook.com"
    assert m.in_reply_to == ["mb.179527.1.vendor@vendor.example"]
    assert m.references == [
        "mb.179527.1.vendor@vendor.example",
        "AM6PR07MB5432FEDCBA9876543210@AM6PR07MB5432.eurprd07.prod.outlook.com",
    ]


def test_outlook_body_is_the_plain_part_decoded():
    """The quoted-printable iso-8859-1 text part is the text; the HTML part is kept separately."""
    m = _parse("outlook_de_umlauts.eml")
    text = _nl(m.text)
    assert "Die Logdatei ist inzwischen mehrere GB groß." in text  # soft line break joined
    assert "Mit freundlichen Grüßen\nJürgen Müller" in text
    assert "Straße 1 | 12345 München" in text
    assert "=DF" not in text
    assert not TAG_RE.search(text)
    assert m.html is not None
    assert "WordSection1" in m.html
    assert "groß" in m.html
    assert m.attachments == []
    assert m.date == datetime(2026, 11, 16, 7, 14, 1, tzinfo=UTC)
    assert m.header("Content-Language") == "de-DE"
    assert m.header("thread-index") == "AdkXq1i2Zx0fG3bNQ0mZbN5pW0dDkAAB3kPw"
    assert m.defects == []
    assert m.fatal_defects == []


# --- Thunderbird ---------------------------------------------------------------------------------


def test_thunderbird_alternative_prefers_plain_text():
    """multipart/alternative: text is the UTF-8 plain part (LF line ends), html the HTML part."""
    m = _parse("thunderbird_alternative.eml")
    assert m.subject == "Re: [C1234566] Export fails with error 0x80070005"
    assert m.from_ == Address("Anna Schmidt", "anna.schmidt@posteo.example")
    assert m.cc == [Address("Ops Team", "ops@posteo.example")]
    assert m.delivered_to == ["support@vendor.example"]
    assert "the export still fails \u2013 the log says" in m.text
    assert "C:\\Users\\Müller\\Export." in m.text
    assert "> We have logged your request" in m.text
    assert not TAG_RE.search(m.text)
    assert m.html is not None
    assert '<blockquote type="cite">' in m.html
    assert m.date == datetime(2026, 11, 17, 13, 2, 33, tzinfo=UTC)
    assert m.fatal_defects == []


def test_thunderbird_reference_chain_in_order():
    """A folded References header gives every id, oldest first; In-Reply-To names the parent."""
    m = _parse("thunderbird_alternative.eml")
    assert m.message_id == "7f3e2c1a-9b8d-4e6f-a1b2-c3d4e5f6a7b8@posteo.example"
    assert m.references == [
        "mb.179527.2.vendor@vendor.example",
        "4c2d1e0f-aaaa-bbbb-cccc-000011112222@posteo.example",
        "mb.179527.3.vendor@vendor.example",
    ]
    assert m.in_reply_to == ["mb.179527.3.vendor@vendor.example"]


# --- HTML only ------------------------------------------------------------------------------------


def test_html_only_mail_is_converted_to_text_without_tags():
    """An HTML-only mail yields readable text: no tags, no CSS, no script, entities decoded, links kept."""
    m = _parse("html_only_newsletter.eml")
    assert m.subject == "Neu: Version 5.0 \u2013 jetzt verfügbar"
    assert m.html is not None
    assert "<table" in m.html
    text = m.text
    assert not TAG_RE.search(text)
    assert "Version 5.0 ist da" in text
    assert "Größere Projekte, schnellere Exporte & ein neues Dashboard für Ihr Team." in text
    assert "https://tool-vendor.example/release/5.0" in text
    assert "should-not-appear" not in text
    assert "font-family" not in text
    assert "&amp;" not in text
    assert "&uuml;" not in text
    assert "pixel.gif" not in text  # images are ignored
    assert m.header("precedence") == "bulk"
    assert m.fatal_defects == []


# --- Attachments ----------------------------------------------------------------------------------

PASSWD_BYTES = b"root:x:0:0:root:/root:/bin/bash\n\x00\xff\xfe binary tail \x80\n"
PDF_BYTES = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
REPORT_BYTES = "Prüfbericht Kläranlage\r\nMesswert: 7,3 µS/cm\r\n".encode()


def test_path_traversal_file_name_is_inert_metadata():
    """A ``../../etc/passwd`` name is reduced to its base name (storage is by content hash); bytes are exact."""
    m = _parse("attachment_path_traversal.eml")
    assert len(m.attachments) == 1
    att = m.attachments[0]
    assert att.filename == "passwd"
    assert att.content_type == "application/octet-stream"
    assert att.data == PASSWD_BYTES
    assert _nl(m.text).strip() == "Please see the attached log."
    assert "root:x" not in m.text
    assert m.fatal_defects == []


def test_rfc2231_file_names_decoded_and_bytes_exact():
    """RFC 2231 ``filename*=`` (single and continued) names are decoded; payloads are byte-exact."""
    m = _parse("rfc2231_filename.eml")
    assert m.subject == "Rechnung März und Prüfbericht"
    assert m.from_ == Address("Björn Köhler", "bjoern.koehler@stadtwerke.example")
    assert [(a.filename, a.content_type) for a in m.attachments] == [
        ("Rechnung März 2026.pdf", "application/pdf"),
        ("Prüfbericht Kläranlage.txt", "text/plain"),
    ]
    assert m.attachments[0].data == PDF_BYTES
    assert m.attachments[1].data == REPORT_BYTES
    assert _nl(m.text).strip() == "Anbei die Rechnung und der Prüfbericht."
    assert "Messwert" not in m.text  # a text/plain *attachment* is not body text
    assert m.defects == []


def test_forwarded_message_rfc822_does_not_leak_threading_headers():
    """A forward-as-attachment keeps the outer ids; the inner message is an attachment with its bytes."""
    m = _parse("forward_rfc822.eml")
    assert m.message_id == "forward-outer-1@kunde-gmbh.example"
    assert m.subject == "WG: Lieferung 4711 fehlt"
    assert m.in_reply_to == []
    assert m.references == []
    assert m.from_ == Address("Petra Wagner", "petra.wagner@kunde-gmbh.example")
    assert _nl(m.text).startswith("Bitte klären, siehe weitergeleitete Nachricht.")
    assert [(a.filename, a.content_type) for a in m.attachments] == [("Lieferung 4711 fehlt.eml", "message/rfc822")]
    inner = m.attachments[0].data
    assert b"Message-ID: <forward-inner-1@spedition.example>" in inner
    assert b"Die Lieferung 4711 konnte nicht zugestellt werden." in inner
    assert m.fatal_defects == []


# --- Charsets -------------------------------------------------------------------------------------


def test_latin1_8bit_body_decoded():
    """A raw 8-bit ISO-8859-1 body is decoded with its declared charset, without defects."""
    m = _parse("latin1_8bit.eml")
    text = _nl(m.text)
    assert text.startswith("Grüß Gott,\n")
    assert "»Seite 1 von 1«" in text
    assert "Schöne Grüße aus Österreich" in text
    assert "\ufffd" not in text
    assert m.message_id == "Pine.LNX.4.64.2611210729410.1234@alpen-it.example"
    assert m.defects == []
    assert m.fatal_defects == []


def test_unknown_charset_with_undecodable_bytes_is_fatal():
    """Unknown charset and bytes that are not UTF-8 either: the words are lost, so the mail is fatal."""
    m = _parse("unknown_charset_8bit.eml")
    assert "\ufffd" in m.text
    assert len(m.fatal_defects) == 1
    assert m.fatal_defects[0].startswith("undecodable text")
    assert "x-alt-ebcdic-de" in m.fatal_defects[0]
    assert any("CharsetDecodeDefect" in d for d in m.defects)


def test_unknown_charset_recovered_as_utf8_is_benign():
    """Unknown charset label but valid UTF-8 bytes: recovered, recorded as a non-fatal defect."""
    m = _parse("unknown_charset_utf8.eml")
    assert _nl(m.text).strip() == "Fehler beim Öffnen der Datei »Stammdaten«: Zugriff verweigert."
    assert any("CharsetDecodeDefect" in d and "decoded with utf-8" in d for d in m.defects)
    assert m.fatal_defects == []


# --- Structure ------------------------------------------------------------------------------------


def test_no_message_id():
    """A mail without Message-ID parses with ``message_id`` None and no threading ids."""
    m = _parse("no_message_id.eml")
    assert m.message_id is None
    assert m.in_reply_to == []
    assert m.references == []
    assert m.from_ == Address("", "scanner@kunde-gmbh.example")
    assert "Scanned document" in m.text
    assert m.fatal_defects == []


@pytest.mark.parametrize(
    ("name", "defect"),
    [
        ("multipart_no_boundary.eml", "NoBoundaryInMultipartDefect"),
        ("start_boundary_not_found.eml", "StartBoundaryNotFoundDefect"),
    ],
)
def test_unreadable_multipart_is_fatal(name, defect):
    """A multipart without boundary, or whose boundary never occurs, is fatal and named as such."""
    m = _parse(name)
    assert any(defect in f and f.startswith("broken MIME structure") for f in m.fatal_defects)
    assert any(defect in d for d in m.defects)
    assert m.message_id is not None  # the headers are still usable for the quarantine entry
    assert m.from_ is not None


def test_missing_close_boundary_is_benign():
    """A missing closing boundary (truncated by a gateway) is recorded but not fatal; text survives."""
    m = _parse("missing_close_boundary.eml")
    assert any("CloseBoundaryNotFoundDefect" in d for d in m.defects)
    assert m.fatal_defects == []
    assert "The VPN connection drops every hour on the hour." in m.text


@pytest.mark.parametrize("name", sorted(BENIGN_FIXTURES))
def test_benign_fixtures_have_no_fatal_defects(name):
    """Real-client mails and tolerated oddities never produce fatal defects."""
    assert _parse(name).fatal_defects == []


@pytest.mark.parametrize("name", sorted(FATAL_FIXTURES))
def test_fatal_fixtures_are_fatal(name):
    """Each of the three fatal fixtures produces at least one fatal defect (and no exception)."""
    assert _parse(name).fatal_defects


def test_duplicate_subject_header_does_not_raise():
    """Two Subject headers (invalid but seen in the wild) give the first one, like ``headers``."""
    m = _parse("duplicate_subject.eml")
    assert m.subject == "Testing outlook"
    assert m.header("subject") == "Testing outlook"


# --- Header decoding edge cases -----------------------------------------------------------------


def _raw(subject_field: bytes) -> bytes:
    return (
        b"From: Kim <kim@example.org>\r\nTo: support@vendor.example\r\n"
        + subject_field
        + b"\r\nDate: Mon, 23 Nov 2026 12:00:00 +0000\r\nMessage-ID: <x@example.org>\r\n\r\nbody\r\n"
    )


def test_adjacent_encoded_words_are_joined():
    """Whitespace between two encoded-words is not part of the text (RFC 2047 6.2)."""
    m = parse_mail(_raw(b"Subject: =?utf-8?q?Gr=C3=B6=C3=9Fe?=\r\n =?utf-8?q?_der_Datei?="))
    assert m.subject == "Größe der Datei"


def test_blank_between_encoded_word_and_text_kept_on_one_line():
    """On one line, the blank between an encoded-word and plain text is kept."""
    m = parse_mail(_raw(b"Subject: =?utf-8?q?schl=C3=A4gt?= fehl"))
    assert m.subject == "schlägt fehl"


def test_folding_after_encoded_word_keeps_the_blank():
    """A fold between an encoded-word and plain text unfolds to one blank (RFC 5322 2.2.3)."""
    m = parse_mail(
        _raw(
            b"Subject: =?utf-8?q?Gr=C3=B6=C3=9Fen=C3=A4nderung_der_Datenbank_schl=C3=A4gt?=\r\n"
            b" fehl =?utf-8?q?=E2=80=93_Fehlermeldung_=C2=BBORA-01653=C2=AB?="
        )
    )
    assert m.subject == "Größenänderung der Datenbank schlägt fehl \u2013 Fehlermeldung »ORA-01653«"


@pytest.mark.parametrize(
    ("date_field", "expected"),
    [
        (b"Mon, 23 Nov 2026 13:00:00 +0100", datetime(2026, 11, 23, 12, 0, tzinfo=UTC)),
        (b"23 Nov 2026 13:00:00 +0100 (CET)", datetime(2026, 11, 23, 12, 0, tzinfo=UTC)),
        (b"Mon, 23 Nov 2026 12:00:00", None),  # no zone: not guessed
        (b"gestern", None),
    ],
)
def test_date_is_aware_utc_or_none(date_field, expected):
    """A Date with a zone becomes aware UTC; a date without zone or unparsable is None, not a guess."""
    raw = b"From: kim@example.org\r\nTo: support@vendor.example\r\nSubject: x\r\nDate: " + date_field + b"\r\n\r\nb\r\n"
    assert parse_mail(raw).date == expected


def test_address_list_with_quoted_comma_and_folded_encoded_name():
    """A quoted display name with a comma is one address; a folded RFC 2047 From name is decoded."""
    raw = (
        b"From: =?utf-8?q?J=C3=BCrgen?=\r\n <J.Mueller@Kunde.Example>\r\n"
        b'To: support@vendor.example, "Doe, Jane" <JANE@X.example>\r\nSubject: x\r\n\r\nbody\r\n'
    )
    m = parse_mail(raw)
    assert m.from_ == Address("Jürgen", "j.mueller@kunde.example")
    assert m.to == [Address("", "support@vendor.example"), Address("Doe, Jane", "jane@x.example")]


def test_garbage_bytes_do_not_raise():
    """Arbitrary non-mail bytes give a ParsedMail (or ParseError), never another exception."""
    from mailbridge.ingest.parser import ParseError

    for raw in [b"", b"\x00\xff\xfe", b"not a mail at all", b"\r\n\r\n\r\n", b":\r\n:\r\n", bytes(range(256))]:
        try:
            m = parse_mail(raw)
        except ParseError:
            continue
        assert isinstance(m.text, str)


# --- normalize_message_id / message_id_list ---------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("<a@b.example>", "a@b.example"),
        ("  <a@b.example>  ", "a@b.example"),
        ("\r\n <a@b.example>", "a@b.example"),
        ("<AbC.123@Host.Example>", "AbC.123@Host.Example"),  # case is preserved
        ("a@b.example", "a@b.example"),  # bare id kept (some MUAs send those)
        ("  a@b.example ", "a@b.example"),
        ("<a@b.example> (added by gateway)", "a@b.example"),
        ("<first@x.example> <second@x.example>", "first@x.example"),
        ("<$3a.b%c@[192.0.2.1]>", "$3a.b%c@[192.0.2.1]"),
        (None, None),
        ("", None),
        ("   ", None),
    ],
)
def test_normalize_message_id(value, expected):
    """Brackets, surrounding space and comments go; the id itself is kept verbatim."""
    assert normalize_message_id(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "<>",
        "<2defef63984344cf41fdd06f7dbeqazx@example.com",
        "\r\n foo\r\n bar@x.example",
        "<a b@x.example>",
    ],
)
def test_normalize_message_id_never_returns_brackets_or_whitespace(value):
    """Whatever the header held, the result is None or an id without ``<``, ``>`` or whitespace."""
    result = normalize_message_id(value)
    assert result is None or re.fullmatch(r"[^<>\s]+", result)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("<a@x> <b@x>", ["a@x", "b@x"]),
        ("<a@x>,<b@x>", ["a@x", "b@x"]),
        ("<a@x>\r\n\t<b@x>\r\n <c@x>", ["a@x", "b@x", "c@x"]),
        ("<a@x><b@x>", ["a@x", "b@x"]),
        ('"Jane\'s message of Mon" <a@x>', ["a@x"]),  # obsolete phrase around the id (RFC 5322 4.5.4)
        ("<a@x> (comment) <b@x>", ["a@x", "b@x"]),
        ("<c@x> <a@x> <b@x>", ["c@x", "a@x", "b@x"]),  # order as written, not sorted
        ("<a@x", []),  # unclosed
        ("bare@x", []),
        ("", []),
        (None, []),
    ],
)
def test_message_id_list(value, expected):
    """All bracketed ids, in header order; text without a complete ``<…>`` yields nothing."""
    assert message_id_list(value) == expected


def test_encoded_words_in_thread_headers_are_decoded():
    """A References header folded into RFC 2047 encoded words (Python's email package does this to
    long ids) still yields its Message-IDs, so the reply is recognised as one."""
    from email.header import Header

    encoded = Header("<mbn.C1000002.08f24ba10e8558cf.46vly7g4clcbimhtn67ssve2fy@vendor.example> <a@b.example>", "utf-8")
    raw = (
        "From: a@b.example\r\nTo: support@vendor.example\r\nSubject: Re: x\r\nMessage-ID: <r@b.example>\r\n"
        f"In-Reply-To: {encoded.encode()}\r\nReferences: {encoded.encode()}\r\n\r\nDanke.\r\n"
    ).encode()
    p = parse_mail(raw)
    expected = ["mbn.C1000002.08f24ba10e8558cf.46vly7g4clcbimhtn67ssve2fy@vendor.example", "a@b.example"]
    assert p.references == expected and p.in_reply_to == expected
