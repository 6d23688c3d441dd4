"""Hostile and malformed mail: file names, header injection, template injection, MIME bombs, HTML
bombs, control characters. Each test names the protection it proves; removing that protection
makes the test fail. Measured times are printed (run with ``-s``)."""

from __future__ import annotations

import base64
import email
import email.policy
import time
import unicodedata
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jinja2.sandbox import SandboxedEnvironment, SecurityError

from mailbridge.domain import MAX_FILENAME_BYTES, safe_filename
from mailbridge.ingest import parser
from mailbridge.ingest.parser import (
    MAX_HTML_CHARS,
    MAX_HTML_TEXT_CHARS,
    MAX_MIME_CONTAINERS,
    MAX_MIME_PARTS,
    ParseError,
    html_to_text,
    mime_limits_exceeded,
    parse_mail,
)
from mailbridge.outbound.compose import OutgoingAttachment, compose
from mailbridge.outbound.templates import Templates
from tests.support import python_steps

DATE = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
# Characters that must never survive in a file name, a subject or a display name: they break lines,
# end strings (NUL), start terminal escapes (ESC, CSI) or reorder what is shown (bidi controls).
FORBIDDEN_IN_NAMES = "\x00\r\n\x1b\x9b\u2028\u2029\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f"


def _mail(headers: str, body: bytes = b"Hallo\r\n") -> bytes:
    head = "From: Kunde <kunde@kunde.example>\r\nTo: support@vendor.example\r\nMessage-ID: <h@kunde.example>\r\n"
    return (head + headers).encode("utf-8") + b"\r\n" + body


def _timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


# Work bound for a refusal (Python steps, see tests.support.python_steps; a count, not a clock):
# refusing a bomb costs ~15,000 steps, parsing the 998 attachments just under the part limit ~1.6
# million; a refusal that parsed what it refuses would cross this bound many times over.
REFUSAL_STEPS = 100_000


# --- attachment file names ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("..\\..\\windows\\system32\\config\\sam", "sam"),
        ("/etc/shadow", "shadow"),
        ("C:\\x", "x"),
        ("C:evil.exe", "evil.exe"),
        ("\\\\server\\share\\payload.dll", "payload.dll"),
        ("..", ""),
        (".", ""),
        ("", ""),
        ("/", ""),
        (".bashrc", "bashrc"),
        ("report.pdf. . ", "report.pdf"),
        ("evil\x00.txt", "evil.txt"),
        ("line\r\nbreak.txt", "line break.txt"),
        ("\x1b[31mred\x1b[0m.txt", "[31mred[0m.txt"),
        ("invoice\u202egpj.exe", "invoicegpj.exe"),
        ("\u2066photo\u2069\u200f.jpg", "photo.jpg"),
        ("zero\u200bwidth.txt", "zerowidth.txt"),
        ('a<b>c:d|e?f*"g.txt', "a_b_c_d_e_f__g.txt"),
        ("CON.txt", "_CON.txt"),
        ("lpt1", "_lpt1"),
        ("Prüfbericht März 2026.pdf", "Prüfbericht März 2026.pdf"),
        ("見積書 2026.xlsx", "見積書 2026.xlsx"),
        ("Pru\u0308fung.txt", "Prüfung.txt"),  # NFC
    ],
)
def test_safe_filename_reduces_hostile_names_to_a_base_name(name, expected):
    """Paths, drives, controls, direction overrides, Windows specials: a plain base name is left."""
    assert safe_filename(name) == expected


def test_safe_filename_cuts_long_names_and_keeps_the_extension():
    """Over-long names are cut to 255 bytes of valid UTF-8, the extension kept."""
    long_ascii = safe_filename("a" * 1000 + ".pdf")
    assert long_ascii.endswith(".pdf") and len(long_ascii.encode()) == MAX_FILENAME_BYTES
    long_utf8 = safe_filename("ä" * 1000 + ".txt")
    assert long_utf8.endswith(".txt") and len(long_utf8.encode()) <= MAX_FILENAME_BYTES
    assert set(long_utf8[:-4]) == {"ä"}
    no_ext = safe_filename("x" * 5000)
    assert no_ext == "x" * MAX_FILENAME_BYTES
    name, steps = python_steps(safe_filename, "y" * 2_000_000 + ".log")
    assert name.endswith(".log")
    assert steps < REFUSAL_STEPS  # no Python loop over the 2 MB


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_safe_filename_invariants(name):
    """For any input: no separator, no control or format character, no leading dot, at most 255
    bytes, and applying it again changes nothing."""
    out = safe_filename(name)
    assert "/" not in out and "\\" not in out
    assert not any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp") for c in out)
    assert not out.startswith(".") and not out.endswith((".", " "))
    assert len(out.encode("utf-8")) <= MAX_FILENAME_BYTES
    assert safe_filename(out) == out


def test_parser_applies_safe_filename_to_every_attachment():
    """File names from Content-Disposition (RFC 2231 too) and Content-Type name= are reduced at parse."""
    b = "B"
    names = [
        "filename*=utf-8''..%2F..%2Fetc%2Fpasswd",
        'filename="/etc/x"',
        "filename*=utf-8''C%3A%5Cx",
        "filename*=utf-8''evil%00%1B%5B2J.txt",
        "filename*=utf-8''invoice%E2%80%AEfdp.exe",
        'filename="' + "n" * 400 + '.bin"',
    ]
    parts = [f"--{b}\r\nContent-Type: text/plain\r\n\r\nsiehe Anhang\r\n"]
    for n in names:
        parts.append(
            f"--{b}\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; {n}\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\nQUJD\r\n"
        )
    raw = _mail(
        f"Subject: Anhang\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary={b}\r\n",
        ("".join(parts) + f"--{b}--\r\n").encode(),
    )
    m = parse_mail(raw)
    got = [a.filename for a in m.attachments]
    assert got[:5] == ["passwd", "x", "x", "evil[2J.txt", "invoicefdp.exe"]
    assert got[5].endswith(".bin") and len(got[5].encode()) <= MAX_FILENAME_BYTES
    assert all(a.data == b"ABC" for a in m.attachments)
    for name in got:
        assert not set(name) & set(FORBIDDEN_IN_NAMES + "/\\")


# --- header injection: the parser hands out one-line subjects, names and clean addresses ----------


CRLF_SUBJECT = "=?utf-8?q?Drucker_defekt=0D=0ABcc:_victim@evil.example=0D=0A=0D=0Abody?="


def test_parsed_subject_and_display_name_are_one_line():
    """CR/LF (and ESC, NUL, U+2028) hidden in RFC 2047 encoded words never reach the subject or a name."""
    name = "=?utf-8?b?" + base64.b64encode("Eve\r\nBcc: victim@evil.example\x1b[2J\u2028".encode()).decode() + "?="
    raw = (
        f"From: {name} <eve@kunde.example>\r\nTo: support@vendor.example\r\nMessage-ID: <i@kunde.example>\r\n"
        f"Subject: {CRLF_SUBJECT}\r\n\r\nHallo\r\n"
    ).encode()
    m = parse_mail(raw)
    assert m.subject == "Drucker defekt Bcc: victim@evil.example body"
    assert m.from_ is not None and m.from_.email == "eve@kunde.example"
    # mail-parser leaves an encoded word that decodes to a line break undecoded; either way one line.
    assert m.from_.name.startswith(("Eve Bcc: victim@evil.example", "=?utf-8?b?"))
    for value in (m.subject, m.from_.name):
        assert not set(value) & set(FORBIDDEN_IN_NAMES)


def test_from_header_mail_parser_gives_up_on_keeps_the_real_address():
    """An encoded word hiding CR/LF and a ``<victim@…>`` in the display name: the sender is still
    the angle-addr outside the encoded word, the name one line."""
    name = "=?utf-8?q?J=C3=BCrgen_<victim@evil.example>=0D=0ABcc:_victim@evil.example?="
    m = parse_mail(f"From: {name} <j@kunde.example>\r\nSubject: x\r\n\r\nHallo\r\n".encode())
    assert m.from_ is not None and m.from_.email == "j@kunde.example"
    assert m.from_.name == "Jürgen <victim@evil.example> Bcc: victim@evil.example"


@pytest.mark.parametrize(
    "from_header",
    [
        "=?utf-8?q?x=0D=0ABcc=3A_v=40evil=2Eexample?=@kunde.example",
        "<a\x00b@kunde.example>",
        "<" + "a" * 300 + "@kunde.example>",
    ],
)
def test_addresses_with_controls_or_over_length_are_dropped(from_header):
    """An addr-spec with CR/LF, NUL or over RFC 5321's length is no address (the mail then has no
    usable sender and is quarantined), so it never reaches To or RCPT TO of an acknowledgement."""
    raw = f"From: {from_header}\r\nTo: support@vendor.example\r\nSubject: x\r\n\r\nHallo\r\n".encode()
    m = parse_mail(raw)
    assert m.from_ is None or not set(m.from_.email) & set("\x00\r\n <>")
    assert m.from_ is None or len(m.from_.email) <= 254


def test_message_ids_with_controls_or_over_length_are_not_kept():
    """A NUL (which PostgreSQL refuses in text) or an id over 998 characters never reaches the
    database; a References list of 10,000 ids is cut to the root and the newest."""
    refs = " ".join(f"<r{i}@x.example>" for i in range(10_000))
    raw = (
        "From: a@kunde.example\r\nTo: support@vendor.example\r\nSubject: x\r\n"
        f"Message-ID: <nul\x00id@kunde.example>\r\nIn-Reply-To: <{'p' * 2000}@x.example>\r\n"
        f"References: {refs}\r\n\r\nHallo\r\n"
    ).encode()
    m = parse_mail(raw)
    assert m.message_id is None or "\x00" not in m.message_id
    assert m.in_reply_to == []
    assert len(m.references) == parser.MAX_REFERENCES
    assert m.references[0] == "r0@x.example" and m.references[-1] == "r9999@x.example"


def test_text_loses_terminal_escapes_and_nul_and_c1_becomes_cp1252():
    """ESC sequences and NUL are removed from the body; C1 code points (cp1252 read as Latin-1)
    become the characters the sender typed."""
    body = "Hallo\x1b[2J\x1b]0;pwned\x07 Welt\x00!\r\nPreis: 10 \x80, \x93zitiert\x94\r\n\ttab bleibt\r\n"
    raw = _mail(
        "Subject: x\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n",
        body.encode("utf-8"),
    )
    m = parse_mail(raw)
    assert "\x1b" not in m.text and "\x00" not in m.text and "\x07" not in m.text
    assert "Hallo[2J]0;pwned Welt!" in m.text
    assert "Preis: 10 €, “zitiert”" in m.text
    assert "\ttab bleibt" in m.text


def test_attachment_content_type_is_two_tokens():
    """A Content-Type that is not ``type/subtype`` is stored as application/octet-stream."""
    assert parser.safe_content_type("text/plain") == "text/plain"
    assert parser.safe_content_type("Image/PNG") == "image/png"
    for bad in ("text/plain\r\nBcc: x", "text", "", None, "a/b/c", "x" * 300 + "/y"):
        assert parser.safe_content_type(bad) == "application/octet-stream"


# --- header injection: compose never writes a header it was not asked to ---------------------------


def _compose(**over):
    args = {
        "from_name": "Vendor Support",
        "from_addr": "support@vendor.example",
        "to": [("Kunde", "kunde@kunde.example")],
        "subject": "[C1234566] x",
        "text": "Hallo",
        "html": None,
        "date": DATE,
    }
    return compose(**{**args, **over})


def _top_level_names(raw: bytes) -> list[str]:
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert b"\n" not in head.replace(b"\r\n", b"") and b"\r" not in head.replace(b"\r\n", b"")
    return [ln.split(b":", 1)[0].decode().lower() for ln in head.split(b"\r\n") if ln[:1] not in (b" ", b"\t")]


@pytest.mark.parametrize("addr", ["kunde@kunde.example\r\nBcc: v@evil.example", "a b@kunde.example", "x\x00@y.example"])
def test_compose_refuses_a_recipient_address_that_could_inject(addr):
    """An address with CR/LF, blanks or NUL is refused: it would start a header and an SMTP command."""
    with pytest.raises(ValueError, match="unusable mail address"):
        _compose(to=[("Kunde", addr)])
    with pytest.raises(ValueError, match="unusable mail address"):
        _compose(cc=[("", addr)])


def test_compose_cleans_thread_ids():
    """In-Reply-To and References ids with CR/LF cannot add a header."""
    out = _compose(in_reply_to="p@x.example\r\nBcc: v@evil.example", references=["r@x\r\nX-Evil: 1", "s@x"])
    names = _top_level_names(out.raw)
    assert "bcc" not in names and "x-evil" not in names
    msg = email.message_from_bytes(out.raw, policy=email.policy.default)
    assert msg["In-Reply-To"] == "<p@x.exampleBcc:v@evil.example>"


def test_compose_attachment_metadata_cannot_inject_part_headers():
    """An attachment's content type and file name (an agent's attachment we relay) stay inside
    their own part header: a CR in the type, a path or a direction override in the name."""
    out = _compose(
        attachments=[
            OutgoingAttachment("..\\..\\invoice\u202efdp.exe\r\nX-Evil: 1", "text/plain\rX-Evil: 2", b"data"),
        ]
    )
    assert b"X-Evil" not in out.raw.replace(b"X-Evil_ 1", b"")
    msg = email.message_from_bytes(out.raw, policy=email.policy.default)
    (att,) = list(msg.iter_attachments())
    assert att.get_content_type() == "application/octet-stream"
    assert att.get_filename() == "invoicefdp.exe X-Evil_ 1"


def test_compose_refuses_a_bad_extra_header_name():
    """Extra header names are RFC 5322 field names; ``X: 1\\r\\nBcc`` is refused."""
    with pytest.raises(ValueError):
        _compose(extra_headers={"X-Case\r\nBcc": "v@evil.example"})


# --- customer text is data, never a template ---------------------------------------------------------


def test_template_environment_is_sandboxed_and_html_autoescaped():
    """Every shipped ``.html.j2`` template autoescapes; the environment is a SandboxedEnvironment."""
    t = Templates()
    assert isinstance(t.env, SandboxedEnvironment)
    html = sorted(p.relative_to(t.root).as_posix() for p in t.root.glob("*/*.html.j2"))
    assert html, "no HTML templates found"
    for name in html:
        assert t.env.autoescape(name) is True, name
    for name in sorted(p.relative_to(t.root).as_posix() for p in t.root.glob("*/*.txt.j2")):
        assert t.env.autoescape(name) is False, name


def test_sandbox_refuses_python_internals():
    """A template (or a string someone might one day render) cannot reach Python internals."""
    env = Templates().env
    with pytest.raises(SecurityError):
        env.from_string("{{ ''.__class__.__mro__[1].__subclasses__() }}").render()


ACK = {
    "case_number": "C1234566",
    "requester_email": "kunde@kunde.example",
    "queue_name": "Vendor Support",
    "support_address": "support@vendor.example",
    "previous_case": None,
    "unknown_references": [],
    "severity": None,
    "first_response_due": None,
    "no_contract": False,
}


@pytest.mark.parametrize("lang", ["de", "en"])
def test_customer_text_renders_literally_and_html_is_escaped(lang):
    """``{{ 7*7 }}`` and ``{% for %}`` in subject, name and file name print as typed; customer HTML
    comes out escaped in the HTML mail."""
    t = Templates()
    evil = "{{ 7*7 }} {% for x in range(3) %}X{% endfor %} {% for %} <img src=x onerror=alert(1)><script>"
    ctx = {**ACK, "subject": evil, "requester_name": evil, "attachments": [evil]}
    text = t.render(lang, "ack.txt.j2", **ctx)
    html = t.render(lang, "ack.html.j2", **ctx)
    assert evil in text and "49" not in text and "XXX" not in text
    assert "<img" not in html and "<script>" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;&lt;script&gt;" in html
    assert "{{ 7*7 }}" in html and "49" not in html


# --- MIME bombs ----------------------------------------------------------------------------------


def many_attachments(
    n: int, boundary_param: str = "boundary=BOUND", boundary: str = "BOUND", nl: str = "\r\n"
) -> bytes:
    head = (
        f"From: a@kunde.example{nl}To: support@vendor.example{nl}Subject: many{nl}Message-ID: <many@kunde.example>{nl}"
        f"MIME-Version: 1.0{nl}Content-Type: multipart/mixed; {boundary_param}{nl}{nl}"
    )
    body = [f"--{boundary}{nl}Content-Type: text/plain{nl}{nl}hello{nl}"]
    part = (
        f'Content-Type: application/octet-stream{nl}Content-Disposition: attachment; filename="f{{i}}.bin"{nl}'
        f"Content-Transfer-Encoding: base64{nl}{nl}QUJD{nl}"
    )
    body += [f"--{boundary}{nl}" + part.format(i=i) for i in range(n)]
    body.append(f"--{boundary}--{nl}")
    return (head + "".join(body)).encode()


def nested_multiparts(depth: int) -> bytes:
    s = "From: a@kunde.example\r\nTo: support@vendor.example\r\nSubject: nest\r\nMessage-ID: <nest@kunde.example>\r\n"
    s += "MIME-Version: 1.0\r\n"
    for i in range(depth):
        s += f"Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n"
    s += "Content-Type: text/plain\r\n\r\ndeep\r\n"
    for i in reversed(range(depth)):
        s += f"--b{i}--\r\n"
    return s.encode()


def nested_messages(depth: int) -> bytes:
    s = "From: a@kunde.example\r\nTo: support@vendor.example\r\nSubject: nest\r\nMessage-ID: <msg@kunde.example>\r\n"
    s += "Content-Type: message/rfc822\r\n\r\n" * depth
    return (s + "Subject: inner\r\n\r\ndeep\r\n").encode()


def test_ten_thousand_attachments_are_refused_quickly_with_a_reason():
    """10,000 attachments: the header is read (for the quarantine row), the parts are not; the
    fatal defect names the limit. Bounded time, measured."""
    raw = many_attachments(10_000)
    m, seconds = _timed(parse_mail, raw)
    print(f"\n10,000 attachments ({len(raw) / 1e6:.1f} MB): refused in {seconds * 1000:.0f} ms")
    _, steps = python_steps(parse_mail, raw)
    assert m.fatal_defects == [f"too many MIME parts (over {MAX_MIME_PARTS})"]
    assert m.attachments == [] and m.text == ""
    assert (m.message_id, m.subject, m.from_.email) == ("many@kunde.example", "many", "a@kunde.example")
    assert steps < REFUSAL_STEPS, f"{steps} Python steps to refuse it"


@pytest.mark.parametrize(
    ("param", "boundary", "nl"),
    [
        ('boundary="BOUND"', "BOUND", "\r\n"),
        ("boundary*0=BO; boundary*1=UND", "BOUND", "\r\n"),  # RFC 2231 continuation
        ("boundary*=utf-8''BOUND", "BOUND", "\r\n"),
        ('boundary=""', "", "\r\n"),  # empty boundary: every "--" line is a delimiter
        ("boundary=BOUND", "BOUND", "\n"),
        ("boundary=BOUND", "BOUND", "\r"),  # bare CR line ends (the stdlib splits at them too)
    ],
)
def test_part_count_cannot_be_dodged_by_boundary_spelling_or_line_ends(param, boundary, nl):
    """The part count sees RFC 2231 boundaries, an empty boundary and every line-end convention."""
    assert mime_limits_exceeded(many_attachments(MAX_MIME_PARTS + 5, param, boundary, nl)) is not None


def test_a_mail_at_the_part_limit_is_parsed():
    """Just under the limit every attachment is there: the limit refuses bombs, not big mails."""
    m = parse_mail(many_attachments(MAX_MIME_PARTS - 2))
    assert m.fatal_defects == [] and len(m.attachments) == MAX_MIME_PARTS - 2


@pytest.mark.parametrize("build", [nested_multiparts, nested_messages])
def test_deep_nesting_is_refused_without_recursion(build):
    """1,000 nested multiparts or message/rfc822 parts: refused by the container count before the
    stdlib parser recurses; measured."""
    raw = build(1000)
    m, seconds = _timed(parse_mail, raw)
    print(f"\n1,000 nested ({build.__name__}): refused in {seconds * 1000:.1f} ms")
    assert m.fatal_defects and "nested" in m.fatal_defects[0]
    _, steps = python_steps(parse_mail, raw)
    assert steps < REFUSAL_STEPS, f"{steps} Python steps to refuse it"


def test_nesting_under_the_limit_parses():
    """Nesting below the container limit parses normally and finds the innermost text."""
    m = parse_mail(nested_multiparts(MAX_MIME_CONTAINERS - 5))
    assert m.fatal_defects == [] and m.text.strip() == "deep"


def test_recursion_in_the_parser_becomes_a_parse_error(monkeypatch):
    """Without the structure limits, 1,000 levels make the stdlib recurse too deep: that surfaces as
    ParseError (→ quarantine), never as a RecursionError."""
    monkeypatch.setattr(parser, "mime_limits_exceeded", lambda *a, **k: None)
    with pytest.raises(ParseError):
        parse_mail(nested_multiparts(1000))


# --- HTML bombs -------------------------------------------------------------------------------------


def _html_mail(html: str) -> bytes:
    return _mail(
        "Subject: html\r\nMIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n",
        html.encode(),
    )


def test_a_megabyte_of_links_becomes_capped_text_in_bounded_time():
    """1 MB of markup with 25,000 links: only the first MAX_HTML_CHARS are converted (never rendered),
    the text is capped, a defect says so; measured."""
    links = "".join(f'<a href="https://x.example/{i}">link {i}</a> ' for i in range(25_000))
    html = f"<html><body>{links}<p>MARKER-AFTER-THE-CAP</p></body></html>"
    assert len(html) > 1_000_000
    m, seconds = _timed(parse_mail, _html_mail(html))
    print(f"\n1 MB HTML, 25,000 links: {seconds:.2f} s, {len(m.text)} characters of text")
    assert "MARKER-AFTER-THE-CAP" not in m.text
    assert 0 < len(m.text) <= MAX_HTML_TEXT_CHARS
    assert any("HTML body of" in d for d in m.defects)
    assert m.fatal_defects == []


def test_only_the_first_max_html_chars_of_markup_are_converted():
    """A megabyte of empty markup hides nothing and costs nothing after MAX_HTML_CHARS: the text
    after the cap is not converted."""
    html = "<span></span>" * (1_000_000 // 13) + "<p>MARKER-AFTER-THE-CAP</p>"
    out, seconds = _timed(html_to_text, html)
    print(f"\n1 MB of empty tags: {seconds:.2f} s")
    assert "MARKER-AFTER-THE-CAP" not in out


def test_html_text_output_is_capped():
    """Markup that is almost all text still yields at most MAX_HTML_TEXT_CHARS of text."""
    out = html_to_text("<p>" + "Wort " * (MAX_HTML_CHARS // 5 - 10) + "</p>")
    assert len(out) == MAX_HTML_TEXT_CHARS


def test_deep_and_broken_markup_is_text_in_bounded_time():
    """50,000 nested divs and unclosed tags: no recursion (html2text is event driven); measured."""
    html = "<div>" * 50_000 + "<table><tr><td>Inhalt" + "<b><i>" * 20_000 + "&amp;&#0;&#x110000;"
    out, seconds = _timed(html_to_text, html)
    print(f"\n50,000 nested divs + 40,000 unclosed tags: {seconds:.2f} s")
    assert "Inhalt" in out


# --- undecodable charsets and 8-bit headers ------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"From: J\xfcrgen <j@kunde.example>\r\nTo: support@vendor.example\r\n"
        b"Subject: Gr\xfc\xdfe \xff\xfe\r\n\r\nHallo\r\n",
        b"From: a@kunde.example\r\nSubject: =?x-unknown?q?=FF=FE?= =?utf-8?b?////?=\r\n\r\nHallo\r\n",
        b'From: a@kunde.example\r\nSubject: x\r\nContent-Type: text/plain; charset="utf-\xff"\r\n\r\n\xff\xfe\r\n',
        b"From: a@kunde.example\r\nSubject: x\r\nContent-Type: text/plain; charset=punycode\r\n\r\n\xff\xfe\r\n",
        b"From: a@kunde.example\r\nSubject: x\r\nContent-Type: text/html; charset=utf-16\r\n\r\n\xff\xfe<\x00p\x00",
        # A NUL in a charset label (codecs.lookup raises ValueError), read when another part is garbled.
        b"From: a@kunde.example\r\nSubject: x\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n"
        b"--B\r\nContent-Type: text/plain; charset=x-unknown\r\n\r\n\xff\xfe\r\n"
        b'--B\r\nContent-Type: text/plain; charset="\x00utf-8"\r\n\r\nok\r\n--B--\r\n',
        b"\xff\xfe\x00\x00garbage without any header\r\n",
        b"",
    ],
)
def test_undecodable_charsets_and_8bit_headers_never_crash(raw):
    """Mislabelled, unknown or absurd charsets and raw 8-bit headers: a ParsedMail (maybe with a
    fatal defect) or ParseError, never another exception; no control character in the subject."""
    try:
        m = parse_mail(raw)
    except ParseError:
        return
    assert not set(m.subject) & set(FORBIDDEN_IN_NAMES[:5])
    assert "\x00" not in m.text
