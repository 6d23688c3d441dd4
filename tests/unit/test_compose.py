"""Composed mails: no header injection, subject tag, References, Message-ID, RFC 3834, parse-back."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailbridge.ingest.parser import parse_mail
from mailbridge.outbound.compose import (
    MAX_REFERENCES,
    OutgoingAttachment,
    compose,
    header_safe,
    new_message_id,
    references_for,
    tagged_subject,
)

DATE = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
CASE = "C1234566"
BASE_HEADERS = {"from", "to", "subject", "date", "message-id", "mime-version", "content-type"}


def _compose(**over):
    args = {
        "from_name": "Vendor Support",
        "from_addr": "support@vendor.example",
        "to": [("Jürgen Müller", "juergen.mueller@kunde.example")],
        "subject": f"[{CASE}] Lizenzserver startet nicht",
        "text": "Guten Tag,\n\nwir haben Ihre Anfrage erhalten.\n",
        "html": "<p>Guten Tag,</p><p>wir haben Ihre Anfrage erhalten.</p>",
        "date": DATE,
    }
    args.update(over)
    return compose(**args)


def _header_block(raw: bytes) -> list[bytes]:
    return raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")


def _top_level_header_names(raw: bytes) -> list[str]:
    """Names of the top-level header fields, read from the bytes as an MTA would (unfolded)."""
    names = []
    for line in _header_block(raw):
        if line[:1] in (b" ", b"\t"):
            continue  # continuation of the previous field
        assert b":" in line, line
        names.append(line.split(b":", 1)[0].decode("ascii").lower())
    return names


def _parse_std(raw: bytes):
    return email.message_from_bytes(raw, policy=email.policy.default)


INJECTIONS = [
    "Hallo\r\nBcc: victim@evil.example",
    "Hallo\nBcc: victim@evil.example",
    "Hallo\rBcc: victim@evil.example",
    "Hallo\r\n\r\n<html>body injected</html>",
    "Hallo\x00Bcc: victim@evil.example",
    "Hallo\r\n Bcc: folded-looking@evil.example",
    "Hallo\x0bBcc: victim@evil.example\x0c",
]


@pytest.mark.parametrize("payload", INJECTIONS)
def test_no_header_injection_through_subject(payload):
    """CR, LF, NUL and other controls in the subject cannot start a header or end the header block."""
    out = _compose(subject=payload)
    names = _top_level_header_names(out.raw)
    assert sorted(names) == sorted(BASE_HEADERS)
    msg = _parse_std(out.raw)
    assert msg["Bcc"] is None
    assert not msg.defects
    assert str(msg["Subject"]) == header_safe(payload)
    assert b"\x00" not in out.raw


@pytest.mark.parametrize("payload", INJECTIONS)
def test_no_header_injection_through_display_names(payload):
    """Display names of sender and recipient with controls stay inside their own address header."""
    out = _compose(from_name=payload, to=[(payload, "kunde@kunde.example")])
    names = _top_level_header_names(out.raw)
    assert sorted(names) == sorted(BASE_HEADERS)
    msg = _parse_std(out.raw)
    assert msg["Bcc"] is None
    assert [a.addr_spec for a in msg["To"].addresses] == ["kunde@kunde.example"]
    assert [a.addr_spec for a in msg["From"].addresses] == ["support@vendor.example"]
    assert msg["To"].addresses[0].display_name == header_safe(payload)
    assert out.envelope_to == ["kunde@kunde.example"]


@pytest.mark.parametrize("payload", INJECTIONS)
def test_no_header_injection_through_extra_headers(payload):
    """Values of extra headers are cleaned the same way."""
    out = _compose(extra_headers={"X-Mailbridge-Case": payload})
    names = _top_level_header_names(out.raw)
    assert sorted(names) == sorted(BASE_HEADERS | {"x-mailbridge-case"})


@pytest.mark.parametrize("payload", ["Evil\u2028Bcc: victim@evil.example", "Evil\x85Bcc: victim@evil.example"])
def test_unicode_line_breaks_in_display_name_stay_encoded(payload):
    """Unicode line separators in a display name are RFC 2047-encoded and start no header."""
    out = _compose(to=[(payload, "kunde@kunde.example")])
    assert sorted(_top_level_header_names(out.raw)) == sorted(BASE_HEADERS)


@pytest.mark.parametrize("sep", ["\u2028", "\u2029", "\x85"])
def test_unicode_line_breaks_in_subject_do_not_break_compose(sep):
    """A subject with a Unicode line separator (pasted from Word or a web form) still composes."""
    out = _compose(subject=f"Drucker{sep}Bcc: victim@evil.example")
    assert sorted(_top_level_header_names(out.raw)) == sorted(BASE_HEADERS)


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("Lizenzserver startet nicht", f"[{CASE}] Lizenzserver startet nicht"),
        (f"[{CASE}] Lizenzserver startet nicht", f"[{CASE}] Lizenzserver startet nicht"),
        (f"Re: [{CASE}] Lizenzserver", f"Re: [{CASE}] Lizenzserver"),
        (f"AW: WG: [{CASE.lower()}] Lizenzserver", f"AW: WG: [{CASE.lower()}] Lizenzserver"),
        (f"Lizenzserver [{CASE}]", f"Lizenzserver [{CASE}]"),
        ("", f"[{CASE}]"),
        ("  ", f"[{CASE}]"),
        ("Zeile 1\r\nBcc: x@evil.example", f"[{CASE}] Zeile 1 Bcc: x@evil.example"),
        ("Bezug [C7654321]", f"[{CASE}] Bezug [C7654321]"),  # another case's tag is not ours
        (f"Nummer {CASE} ohne Klammern", f"[{CASE}] Nummer {CASE} ohne Klammern"),
    ],
)
def test_tagged_subject(subject, expected):
    """The ``[case]`` tag is prepended once; a subject already carrying it (any case) is kept."""
    assert tagged_subject(CASE, subject) == expected


@given(st.text(max_size=200))
def test_tagged_subject_is_idempotent(subject):
    """Tagging twice (a reply to our own acknowledgement) never stacks the tag."""
    once = tagged_subject(CASE, subject)
    assert tagged_subject(CASE, once) == once
    assert f"[{CASE}]".lower() in once.lower()
    assert not any(c in once for c in "\r\n\x00")


def test_references_append_parent_in_order():
    """References are the parent's References followed by the parent's Message-ID."""
    assert references_for("p@x", ["a@x", "b@x"]) == ["a@x", "b@x", "p@x"]
    assert references_for("p@x", []) == ["p@x"]
    assert references_for(None, ["a@x", "b@x"]) == ["a@x", "b@x"]
    assert references_for(None, []) == []


def test_references_dedup_keeps_first_occurrence_and_drops_empty():
    """Duplicates and empty ids are removed, the first occurrence keeps its position."""
    assert references_for("p@x", ["a@x", "", "b@x", "a@x", "b@x"]) == ["a@x", "b@x", "p@x"]


def test_references_cap_keeps_root_and_newest():
    """A long thread is cut to MAX_REFERENCES: the root id plus the newest ones, parent last."""
    refs = [f"m{i}@x" for i in range(50)]
    out = references_for("parent@x", refs)
    assert len(out) == MAX_REFERENCES
    assert out[0] == "m0@x"
    assert out[-1] == "parent@x"
    assert out[1:-1] == refs[-(MAX_REFERENCES - 2) :]


def test_references_exactly_at_cap_are_untouched():
    """At exactly MAX_REFERENCES ids nothing is cut."""
    refs = [f"m{i}@x" for i in range(MAX_REFERENCES - 1)]
    assert references_for("parent@x", refs) == [*refs, "parent@x"]


def test_parent_id_is_always_last_even_if_already_referenced():
    """The parent's own Message-ID ends the References list, whatever the parent's References held."""
    refs = [f"m{i}@x" for i in range(30)]
    assert references_for("m5@x", refs)[-1] == "m5@x"


def test_message_id_is_under_our_domain():
    """The Message-ID is fresh, bracket-free in the result, and under the sender's domain."""
    out = _compose(from_addr="hotline@support.vendor.example")
    assert out.message_id.endswith("@support.vendor.example")
    assert "<" not in out.message_id
    assert ">" not in out.message_id
    assert str(_parse_std(out.raw)["Message-ID"]) == f"<{out.message_id}>"
    assert _compose().message_id != _compose().message_id
    assert new_message_id("vendor.example").endswith("@vendor.example")


def test_threading_headers():
    """In-Reply-To and References carry bracketed ids in order."""
    out = _compose(in_reply_to="cust-1@kunde.example", references=["root@kunde.example", "cust-1@kunde.example"])
    msg = _parse_std(out.raw)
    assert str(msg["In-Reply-To"]) == "<cust-1@kunde.example>"
    assert str(msg["References"]).split() == ["<root@kunde.example>", "<cust-1@kunde.example>"]


def test_auto_submitted_present_when_asked():
    """An acknowledgement carries Auto-Submitted (RFC 3834) and asks Exchange to suppress auto-replies."""
    msg = _parse_std(_compose(auto_submitted="auto-replied").raw)
    assert str(msg["Auto-Submitted"]) == "auto-replied"
    assert str(msg["X-Auto-Response-Suppress"]) == "All"


def test_no_auto_submitted_unless_asked():
    """A mail written on behalf of a person (no ``auto_submitted``) has neither header."""
    msg = _parse_std(_compose().raw)
    assert msg["Auto-Submitted"] is None
    assert msg["X-Auto-Response-Suppress"] is None


def test_content_language():
    """The language, when given, is announced in Content-Language."""
    assert str(_parse_std(_compose(language="de").raw)["Content-Language"]) == "de"


def test_lines_are_crlf_and_short():
    """The bytes are SMTP-ready: CRLF line ends and no line over 998 octets (RFC 5322 2.1.1)."""
    raw = _compose(subject="Größe " * 150, text="x" * 5000 + "\n").raw
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998


def test_parses_back_with_text_and_html():
    """Our own parser reads the composed mail back: addresses, ids, text and HTML parts."""
    text = "Guten Tag Jürgen Müller,\n\nIhre Fallnummer ist C1234566.\n\nGrüße\n"
    html = "<p>Guten Tag J&uuml;rgen M&uuml;ller,</p><p>Ihre Fallnummer ist <strong>C1234566</strong>.</p>"
    out = _compose(
        subject="[C1234566] Drucker im 2. OG",
        text=text,
        html=html,
        in_reply_to="cust-1@kunde.example",
        references=["root@kunde.example", "cust-1@kunde.example"],
        auto_submitted="auto-replied",
    )
    parsed = parse_mail(out.raw)
    assert parsed.message_id == out.message_id
    assert parsed.subject == "[C1234566] Drucker im 2. OG"
    assert parsed.from_ is not None
    assert (parsed.from_.name, parsed.from_.email) == ("Vendor Support", "support@vendor.example")
    assert [(a.name, a.email) for a in parsed.to] == [("Jürgen Müller", "juergen.mueller@kunde.example")]
    assert parsed.in_reply_to == ["cust-1@kunde.example"]
    assert parsed.references == ["root@kunde.example", "cust-1@kunde.example"]
    assert parsed.text.replace("\r\n", "\n") == text
    assert parsed.html is not None
    assert parsed.html.strip() == html
    assert parsed.date == DATE
    assert parsed.header("auto-submitted") == "auto-replied"
    assert not parsed.defects
    assert not parsed.attachments
    std = _parse_std(out.raw)
    assert std.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in std.iter_parts()] == ["text/plain", "text/html"]


def test_text_only_when_no_html():
    """Without HTML the mail is a single text/plain part."""
    std = _parse_std(_compose(html=None).raw)
    assert std.get_content_type() == "text/plain"
    assert "wir haben Ihre Anfrage erhalten." in std.get_content()


@pytest.mark.parametrize(
    "subject",
    [
        "Lizenzserver Fehlermeldung AW: [C1234566] error Drucker Lizenzserver \u2013",
        "0x80070005 Fehlermeldung Überprüfung テスト schlägt nicht Lizenzserver fehl \u2013 nicht fehl",
    ],
)
def test_non_ascii_subject_survives_folding(subject):
    """A long non-ASCII subject decodes to exactly the text we put in (checked with the stdlib parser)."""
    assert str(_parse_std(_compose(subject=subject).raw)["Subject"]) == subject


def test_internationalised_recipient_does_not_crash():
    """An RFC 6532 recipient (non-ASCII local part) either gets a mail or a clean refusal, not a crash."""
    out = _compose(to=[("Jöhn Doe", "jdöe@mächine.example")])
    assert "jdöe@mächine.example" in out.envelope_to


def test_relay_shape_cc_reply_to_thread_headers_and_attachments():
    """A relayed reply: Cc recipients are in the envelope, Reply-To and Outlook's Thread-Topic /
    Thread-Index are set, attachments keep their bytes and lose any path in their names."""
    out = _compose(
        cc=[("Erika Muster", "erika@kunde.example")],
        reply_to="support@vendor.example",
        thread_topic="PDF-Export bricht ab",
        thread_index="AQHZ",
        attachments=[
            OutgoingAttachment("../../etc/passwd", "text/plain", b"root:x:0:0\n"),
            OutgoingAttachment("C:\\Users\\anna\\Bericht März.pdf", "application/pdf", b"%PDF-1.7 fake"),
            OutgoingAttachment("weird", "not a type\r\nX-Evil: 1", b"\x00\x01"),
        ],
    )
    assert out.envelope_to == ["juergen.mueller@kunde.example", "erika@kunde.example"]
    msg = email.message_from_bytes(out.raw, policy=email.policy.default)
    assert msg["Reply-To"] == "support@vendor.example" and msg["Thread-Index"] == "AQHZ"
    assert msg["Thread-Topic"] == "PDF-Export bricht ab" and "erika@kunde.example" in msg["Cc"]
    assert "X-Evil" not in msg
    files = {p.get_filename(): p.get_content() for p in msg.iter_attachments()}
    assert files == {"passwd": "root:x:0:0\n", "Bericht März.pdf": b"%PDF-1.7 fake", "weird": b"\x00\x01"}
    parsed = parse_mail(out.raw)
    assert {a.filename for a in parsed.attachments} == {"passwd", "Bericht März.pdf", "weird"}


@pytest.mark.parametrize(
    "to", [[("Anna", "anna@vendor.example")], [("Jöhn", "jdöe@mächine.example")]], ids=["legacy", "smtputf8"]
)
def test_inline_image_keeps_its_content_id_and_a_hostile_one_cannot_break_out(to):
    """A customer's inline image sent on to agents: Content-ID and disposition inline on both
    composition paths; a Content-ID with CR/LF or brackets is cleaned, never a header of its own."""
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    out = _compose(
        to=to,
        html=None,
        attachments=[
            OutgoingAttachment("bild.png", "image/png", png, "shot1@kunde.example"),
            OutgoingAttachment("x.png", "image/png", b"\x89PNG", "evil>\r\nBcc: v@evil.example"),
            OutgoingAttachment("log.txt", "text/plain", b"a\n"),
        ],
    )
    msg = _parse_std(out.raw)
    parts = list(msg.iter_attachments())
    assert [p.get_content_disposition() for p in parts] == ["inline", "inline", "attachment"]
    assert parts[0]["Content-ID"] == "<shot1@kunde.example>" and parts[0].get_content() == png
    assert parts[1]["Content-ID"] == "<evilBcc:v@evil.example>"
    assert "Bcc" not in msg and parts[2]["Content-ID"] is None
    parsed = parse_mail(out.raw)
    assert [a.content_id for a in parsed.attachments] == ["shot1@kunde.example", "evilBcc:v@evil.example", None]


@pytest.mark.parametrize(
    "to", [[("Anna", "anna@vendor.example")], [("Jöhn", "jdöe@mächine.example")]], ids=["legacy", "smtputf8"]
)
def test_with_html_the_inline_images_are_related_to_it_and_files_stay_files(to):
    """RFC 2387: multipart/mixed [multipart/alternative [text/plain, multipart/related [text/html,
    image]], file] on both composition paths; the image byte-identical with its Content-ID."""
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    out = _compose(
        to=to,
        html='<p>Bild:</p><img src="cid:shot1@kunde.example" alt="Bild">',
        attachments=[
            OutgoingAttachment("bild.png", "image/png", png, "shot1@kunde.example"),
            OutgoingAttachment("log.txt", "text/plain", b"a\n"),
        ],
    )
    msg = _parse_std(out.raw)
    shape = [(p.get_content_type(), p.get_content_disposition()) for p in msg.walk()]
    assert shape == [
        ("multipart/mixed", None),
        ("multipart/alternative", None),
        ("text/plain", None),
        ("multipart/related", None),
        ("text/html", None),
        ("image/png", "inline"),
        ("text/plain", "attachment"),
    ]
    related = msg.get_payload()[0].get_payload()[1]
    assert related.get_param("type") == "text/html"
    html, img = related.get_payload()
    assert 'src="cid:shot1@kunde.example"' in html.get_content()
    assert img["Content-ID"] == "<shot1@kunde.example>" and img.get_content() == png
    assert msg.get_body(("plain",)).get_content().startswith("Guten Tag")
    # Without inline images: text/plain and text/html side by side, the file after them.
    plain = _parse_std(_compose(to=to, attachments=[OutgoingAttachment("log.txt", "text/plain", b"a\n")]).raw)
    assert [p.get_content_type() for p in plain.walk()] == [
        "multipart/mixed",
        "multipart/alternative",
        "text/plain",
        "text/html",
        "text/plain",
    ]
