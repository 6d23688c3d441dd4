"""Raw bytes → :class:`ParsedMail` through mail-parser; never raises on bad MIME, reports defects.

Which defects are *fatal* (the mail goes to quarantine, raw bytes kept) is decided here, because
only the parser knows what it had to guess:

- the multipart structure is unreadable (no boundary, start boundary never found, a multipart that
  is not one): the text we would file could be a fragment or MIME noise;
- a text part declares a charset nobody knows and its bytes are not UTF-8 either: the customer's
  words would be filed as "�".

A *known* charset that the bytes do not fit is the everyday mislabel (Latin-1 sent as us-ascii or
utf-8, GBK sent as gb2312); like every mail client (and the WHATWG encoding standard) we decode it
with the label's superset or windows-1252 and record a non-fatal defect.

Everything else the parser tolerates (a missing close boundary, a recovered charset, odd headers)
is recorded on the message as a non-fatal defect.

Hostile input is bounded here, before it reaches the database, a template or a terminal:

- a mail with more than :data:`MAX_MIME_PARTS` MIME parts or :data:`MAX_MIME_CONTAINERS` multipart
  or message parts (which bound the nesting depth) is not parsed beyond its header: it is
  quarantined with the reason. The count is a linear scan of the bytes, so 10,000 attachments or
  1,000 nested multiparts cost milliseconds instead of the stdlib parser's time (seconds) and
  recursion (``RecursionError`` at ~1,000 levels);
- an HTML body is reduced to text from its first :data:`MAX_HTML_CHARS` characters and the result is
  cut at :data:`MAX_HTML_TEXT_CHARS` (html2text is pure Python, ~0.7 MB/s); it is never rendered;
- attachment file names become a safe base name (:func:`safe_filename`); subject and display names
  are one line of text; control characters (terminal escapes, NUL, which PostgreSQL refuses in
  text) are removed from the text; addresses and Message-IDs with controls or over their RFC
  length are dropped, and an over-long References list is cut.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
from datetime import datetime
from email import policy as email_policy
from email.errors import HeaderParseError
from email.header import decode_header
from email.utils import getaddresses

import html2text
import mailparser

from mailbridge.domain import Address, Attachment, ParsedMail, safe_filename
from mailbridge.ingest.quoting import extract_new_text

# email.errors defect classes after which the body cannot be trusted.
FATAL_MIME_DEFECTS = frozenset(
    {"NoBoundaryInMultipartDefect", "StartBoundaryNotFoundDefect", "MultipartInvariantViolationDefect"}
)
# mail-parser's wording when a charset failed and UTF-8 needed replacement characters.
_UNDECODABLE_MARK = "replacement characters"
# RFC 5322 3.6.4: msg-id = "<" id-left "@" id-right ">"; we keep whatever is between the brackets,
# unless it holds white space or control characters (NUL, which PostgreSQL refuses in text, escapes).
_MSG_ID_RE = re.compile(r"<([^<>\s\x00-\x1f\x7f-\x9f]+)>")
_MSG_ID_JUNK_RE = re.compile(r"[<>\s\x00-\x1f\x7f-\x9f]+")
# RFC 5322 2.1.1: no line is longer than 998 characters, so no msg-id is either (and the column is
# String(998)).
MAX_MSG_ID_CHARS = 998
# References kept from one mail: the first (the thread's root) and the newest. Matching asks the
# database for each id, so a header listing 100,000 ids must not become 100,000 query parameters.
MAX_REFERENCES = 100

# Limits on the MIME structure (see the module docstring). The shared corpus of ~1,900 real and
# torture-test mails peaks at 28 multipart/message parts and 330 parts.
MAX_MIME_PARTS = 1000
MAX_MIME_CONTAINERS = 100
# HTML-only mails: characters of markup converted to text, and characters of text kept from it.
MAX_HTML_CHARS = 500_000
MAX_HTML_TEXT_CHARS = 200_000
# RFC 5321 4.5.3.1: a path is at most 256 octets, so an address is at most 254 characters.
MAX_ADDRESS_CHARS = 254
# Display names are shown and sent back in To (compose keeps 200 characters too).
MAX_NAME_CHARS = 200


class ParseError(Exception):
    """The bytes could not be parsed at all (the parser library itself gave up)."""


def normalize_message_id(value: str | None) -> str | None:
    """``<a@b>`` → ``a@b``; a bare or half-bracketed id is cleaned of brackets and white space.

    Returns None when nothing usable is left (``<>``, blanks).
    """
    if not value:
        return None
    m = _MSG_ID_RE.search(value)
    value = m.group(1) if m else _MSG_ID_JUNK_RE.sub("", value)
    if len(value) > MAX_MSG_ID_CHARS:
        return None
    return value or None


def message_id_list(value: str | None) -> list[str]:
    """All msg-ids in an In-Reply-To or References header, in order (RFC 5322 3.6.4).

    Some senders (Python's ``email`` package among them) fold a long id list into RFC 2047 encoded
    words, which RFC 2047 section 5 forbids in these headers; they are decoded first, or the reply
    would not be recognised as one.
    """
    if value and "=?" in value:
        value = decode_unstructured(value)
    return [i for i in _MSG_ID_RE.findall(value or "") if len(i) <= MAX_MSG_ID_CHARS]


# C0 and C1 controls, DEL, and the Unicode line and paragraph separators: what a terminal, a mail
# library or a mail client may take as a line break or an escape sequence.
_LINE_BREAKING_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
# Characters an address never contains unquoted, and which would break a header or an SMTP command.
_BAD_ADDRESS_RE = re.compile(r"[\x00-\x20\x7f-\x9f\u2028\u2029<>,;]")


def one_line(value: str | None, limit: int | None = None) -> str:
    """``value`` as one line of text: every run of control characters (CR, LF, NUL, ESC, …) is one space."""
    value = _LINE_BREAKING_RE.sub(" ", value or "").strip()
    return value[:limit].rstrip() if limit is not None else value


def _addresses(pairs) -> list[Address]:
    """Addresses with a usable addr-spec, lower-cased; display names as one line.

    An address with white space or control characters in it is dropped: sent back to (in an
    acknowledgement's To or an SMTP ``RCPT TO``) it could start a header or a command of its own.
    """
    out = []
    for pair in pairs or []:
        name, email = (pair[0] or "", pair[1] or "") if len(pair) == 2 else ("", str(pair))
        email = email.strip().lower()
        if "@" in email and len(email) <= MAX_ADDRESS_CHARS and not _BAD_ADDRESS_RE.search(email):
            out.append(Address(name=display_name(name), email=email))
    return out


def address_from(value: str | None) -> Address | None:
    """The first usable address of a header value as a person wrote it (a forwarded block's "Von:"
    line; Outlook's ``Name [mailto:x@y]`` too), read by :func:`email.utils.getaddresses`; or None."""
    value = one_line(value, 2000)
    value = re.sub(r"\[mailto:([^\]\s]{1,400})\]", r"<\1>", value, flags=re.IGNORECASE)
    found = _addresses(getaddresses([value]))
    return found[0] if found else None


# RFC 2047 section 2: an encoded word (no white space inside); section 6.2: white space between
# two adjacent encoded words is not part of the text. A run is matched as a whole, every quantifier
# stops at "?" or white space, so the scan is linear.
_ENCODED_WORD = r"=\?[^?\s]{1,75}\?[bBqQ]\?[^?\s]*\?="
_ENCODED_RUN_RE = re.compile(rf"{_ENCODED_WORD}(?:[ \t]+{_ENCODED_WORD})*")
_ENCODED_WORD_RE = re.compile(_ENCODED_WORD)


def _decode_word(word: str) -> str:
    """One encoded word as text (its charset's superset when the bytes do not fit), else as it is."""
    try:
        [(data, charset)] = decode_header(word)
    except (ValueError, HeaderParseError, LookupError, UnicodeError):
        return word
    if isinstance(data, str):
        return data
    text, _ = decode_text(data, (charset or "utf-8").split("*", 1)[0])
    return word if text is None else text


def _decode_run(run: re.Match[str]) -> str:
    return "".join(_decode_word(word) for word in _ENCODED_WORD_RE.findall(run.group()))


def display_name(name: str | None) -> str:
    """A display name as one line of text, its encoded words decoded.

    mail-parser leaves an encoded word undecoded when its text holds a control character (CR/LF:
    ``=?utf-8?b?RXZlDQpFeGFtcGxl?=`` is "Eve\\r\\nExample"), when it is quoted or when it touches
    the ``<``; the address was already taken apart, so decoding the name here cannot change which
    mailbox it is. Control characters become spaces, runs of white space one space, trimmed.
    """
    name = name or ""
    if "=?" in name:
        name = _ENCODED_RUN_RE.sub(_decode_run, name)
    return " ".join(one_line(name).split())[:MAX_NAME_CHARS].rstrip()


# Text controls that have no place in a mail's text: C0 (but TAB, LF, CR), DEL, and the C1 range,
# which in decoded text is almost always windows-1252 read as ISO-8859-1 (WHATWG: the iso-8859-1
# label *is* windows-1252), so C1 characters become what the sender typed ("\x80" → "€").
_TEXT_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x0c\x0e-\x1f\x7f-\x9f]")
_TEXT_CONTROLS = {c: None for c in [*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F]} | {
    c: (bytes([c]).decode("cp1252", "ignore") or None) for c in range(0x80, 0xA0)
}


def clean_text(text: str) -> str:
    """Body text without control characters (a terminal escape, NUL); C1 read as windows-1252."""
    return text.translate(_TEXT_CONTROLS) if _TEXT_CONTROL_RE.search(text) else text


_CONTENT_TYPE_RE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")


def safe_content_type(value: str | None) -> str:
    """``type/subtype`` as RFC 2045 tokens, lower-cased; anything else is application/octet-stream."""
    value = (value or "").strip().lower()
    return value if _CONTENT_TYPE_RE.fullmatch(value) else "application/octet-stream"


# --- MIME structure limits --------------------------------------------------------------------------

# A line start: the stdlib parser splits lines at CR, LF and CRLF alike.
_LINE_START = rb"(?:\A|(?<=[\r\n]))"
# A Content-Type header of a part that contains parts: every nesting level needs one (a message
# part's inner message needs no header of its own, but then it is not a container either).
_CONTAINER_RE = re.compile(
    _LINE_START + rb"content-type:[ \t]*(?:(?:\r\n|\r|\n)[ \t]+)*(?:multipart|message)/", re.IGNORECASE
)
# boundary="x", boundary=x, RFC 2231 boundary*=utf-8''x and boundary*0="x" (a prefix of the whole).
_BOUNDARY_RE = re.compile(rb'boundary\*?[0-9]*\*?[ \t]*=[ \t]*"?([^"\r\n;]{0,200})', re.IGNORECASE)
# Distinct boundaries looked at: more than this is no mail, it is an attack on this scan.
_MAX_BOUNDARIES = 1000


def mime_limits_exceeded(
    raw: bytes, max_parts: int = MAX_MIME_PARTS, max_containers: int = MAX_MIME_CONTAINERS
) -> str | None:
    """Why ``raw`` has too many MIME parts to parse, or None. Linear in ``len(raw)``, no parsing; for
    an ordinary mail a few ``bytes.count`` calls, the regular expressions only run where the counts
    come near a limit.

    Both counts are upper bounds of what the stdlib parser would build: containers are counted by
    their Content-Type header wherever it stands, parts by the lines that start with ``--`` and a
    declared boundary (``--`` alone when a boundary is empty).
    """
    # Every container header names "multipart/" or "message/": while those words are rare enough
    # (all but hostile mail), their count bounds the containers and the regex scan is not needed.
    low = raw.lower()
    if low.count(b"multipart/") + low.count(b"message/") > max_containers and (
        sum(1 for _ in zip(_CONTAINER_RE.finditer(raw), range(max_containers + 1), strict=False)) > max_containers
    ):
        return f"too deeply nested or too many multipart/message parts (over {max_containers})"
    # "\r\n--" counts once (as "\n--"); "\r--" only where a bare CR ends a line.
    dash_lines = raw.count(b"\n--") + raw.count(b"\r--") + raw.startswith(b"--")
    if dash_lines <= max_parts:
        return None
    bounds: set[bytes] = set()
    for m in _BOUNDARY_RE.finditer(raw):
        b = m.group(1).rstrip()
        bounds.add(b.split(b"''", 1)[1] if b"''" in b else b)
        if len(bounds) > _MAX_BOUNDARIES:
            return f"too many MIME boundaries (over {_MAX_BOUNDARIES})"
    if not bounds:
        return None
    if b"" in bounds:
        parts = dash_lines
    else:
        delim = re.compile(_LINE_START + b"--(?:" + b"|".join(re.escape(b) for b in bounds) + b")")
        parts = sum(1 for _ in zip(delim.finditer(raw), range(max_parts + 1), strict=False))
    if parts > max_parts:
        return f"too many MIME parts (over {max_parts})"
    return None


# RFC 5322 2.2.3: unfolding removes a CRLF that is immediately followed by white space.
_FOLD_RE = re.compile(r"\r?\n(?=[ \t])")
# What a mislabelled charset really is, by the WHATWG encoding standard's label mapping: mail
# clients decode these labels with the superset, so customers' mail "works" everywhere else.
_CHARSET_SUPERSETS = {
    "ascii": "cp1252",
    "latin-1": "cp1252",
    "iso8859-1": "cp1252",
    "iso8859-9": "cp1254",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "euc_kr": "cp949",
    "shift_jis": "cp932",
    "tis-620": "cp874",
    "iso8859-11": "cp874",
}


def _raw_header(msg, name: str) -> str | None:
    """The first raw value of header ``name`` (as on the wire, still folded), or None."""
    for k, v in msg.raw_items():
        if k.lower() == name:
            return v if isinstance(v, str) else str(v)
    return None


def decode_unstructured(raw: str | None) -> str:
    """Decode an unstructured header (Subject) per RFC 5322 2.2.3 and RFC 2047.

    Unfold first, then decode encoded words with the stdlib's lenient header parser, so the space
    between an encoded word and the next folded line survives. 8-bit bytes in a header (RFC 6532,
    or a mailer that ignored RFC 2047) are read as UTF-8, else windows-1252.
    """
    if not raw:
        return ""
    if any("\udc80" <= ch <= "\udcff" for ch in raw):
        b = raw.encode("ascii", "surrogateescape")
        try:
            raw = b.decode("utf-8")
        except UnicodeDecodeError:
            raw = b.decode("cp1252", "replace")
    value = _FOLD_RE.sub("", raw)
    return one_line(str(email_policy.default.header_factory("subject", value)))


def decode_text(payload: bytes, label: str | None) -> tuple[str | None, str | None]:
    """Decode a text part: (text, note). text is None when it cannot be decoded at all.

    Order: the declared charset; its superset; UTF-8; for a *known* label, windows-1252 as the last
    resort (it maps every byte). An unknown label whose bytes are not UTF-8 is undecodable.
    """
    label = (label or "us-ascii").strip().strip('"').lower()
    try:
        canonical: str | None = codecs.lookup(label).name
    except (LookupError, ValueError):  # ValueError: a NUL in the label (found by tests/unit/test_fuzz.py)
        canonical = None
    candidates = []
    if canonical:
        candidates += [canonical, _CHARSET_SUPERSETS.get(canonical)]
    candidates += ["utf-8"]
    if canonical:
        candidates += ["cp1252"]
    for i, cs in enumerate(c for c in candidates if c):
        try:
            text = payload.decode(cs)
        except (UnicodeDecodeError, LookupError):
            continue
        return text, None if i == 0 else f"charset {label!r} did not fit; decoded as {cs}"
    return None, f"charset {label!r} is unknown and the bytes are not UTF-8"


def _redecode_text_parts(msg) -> tuple[list[str], list[str], list[str], list[str]]:
    """Body text of the inline text parts decoded with :func:`decode_text`.

    Used only when mail-parser had to put replacement characters into the text: it reads the same
    MIME parts mail-parser isolated, but decodes their bytes with the fallback chain above.
    Returns (plain parts, html parts, notes, fatal reasons).
    """
    plain, html, notes, fatal = [], [], [], []
    for part in msg.walk():
        if part.is_multipart() or part.get_filename() or part.get_content_disposition() == "attachment":
            continue
        if part.get_content_maintype() != "text" or part.get_content_subtype() not in ("plain", "html"):
            continue
        payload = part.get_payload(decode=True) or b""
        text, note = decode_text(payload, part.get_content_charset())
        if text is None:
            fatal.append(f"undecodable text ({note})")
            # Kept for whoever looks at the quarantine; the mail never becomes a ticket like this.
            text = payload.decode("utf-8", "replace")
        if note:
            notes.append(f"{part.get_content_type()}: {note}")
        (html if part.get_content_subtype() == "html" else plain).append(text)
    return plain, html, notes, fatal


def html_to_text(html: str, max_chars: int = MAX_HTML_CHARS, max_text: int = MAX_HTML_TEXT_CHARS) -> str:
    """Readable plain text from an HTML-only mail (links kept inline, no line wrapping).

    The markup is converted, never rendered (no resource is fetched); only its first ``max_chars``
    characters (cut before a tag that would be split), and the text is cut at ``max_text``.
    """
    if len(html) > max_chars:
        cut = html.rfind("<", 0, max_chars)
        html = html[: cut if cut > 0 else max_chars]
    h = html2text.HTML2Text()
    h.body_width = 0
    h.ignore_images = True
    h.ignore_emphasis = True
    h.unicode_snob = True
    return h.handle(html).strip()[:max_text]


def _decode_attachment(att: dict) -> bytes:
    payload = att.get("payload") or ""
    if att.get("binary"):
        try:
            return base64.b64decode(payload)
        except (binascii.Error, ValueError):
            return payload.encode("utf-8", "surrogateescape")
    return payload.encode("utf-8", "surrogateescape")


def parse_mail(raw: bytes, *, max_parts: int = MAX_MIME_PARTS, max_containers: int = MAX_MIME_CONTAINERS) -> ParsedMail:
    """Parse one raw RFC 5322 message.

    A mail over the MIME limits (see the module docstring) is parsed up to its header only and
    comes back with the limit as its fatal defect.

    Raises:
        ParseError: only when mail-parser cannot build a message at all (e.g. nesting too deep).
    """
    too_complex = mime_limits_exceeded(raw, max_parts, max_containers)
    if too_complex is not None:
        return _header_only(raw, too_complex)
    return parse_within_limits(raw)


def parse_within_limits(raw: bytes) -> ParsedMail:
    """:func:`parse_mail` for a mail whose caller found it within the MIME limits already
    (:func:`mime_limits_exceeded` returned None: ``ingest/prepare.py``), so that the scan, most of
    the time a large mail takes, runs once.

    Raises:
        ParseError: as :func:`parse_mail`.
    """
    try:
        return _parse(raw)
    except RecursionError as e:  # defence in depth: the limits keep the nesting far lower
        raise ParseError("MIME structure nested too deeply") from e


def _mailparser(raw: bytes):
    try:
        return mailparser.parse_from_bytes(raw)
    except Exception as e:  # the library's own hierarchy and stdlib errors alike
        raise ParseError(f"{type(e).__name__}: {e}") from e


def _header_fields(m) -> dict:
    """The ParsedMail fields read from the header (everything but text, html and attachments)."""
    msg = m.message
    headers: dict[str, str] = {}
    for k, v in msg.items():
        headers.setdefault(k.lower(), str(v))
    from_ = _addresses(m.from_) or _fallback_addresses(_raw_header(msg, "from"))
    date = m.date if isinstance(m.date, datetime) else None
    if date is not None and date.tzinfo is None:
        date = None  # mail-parser returns aware UTC when the header had a zone; drop guesses
    references = message_id_list(" ".join(str(v) for v in msg.get_all("references") or []))
    if len(references) > MAX_REFERENCES:
        references = references[:1] + references[-(MAX_REFERENCES - 1) :]
    return {
        "message_id": normalize_message_id(headers.get("message-id")),
        "subject": decode_unstructured(_raw_header(msg, "subject")),
        "from_": from_[0] if from_ else None,
        "reply_to": _addresses(m.reply_to),
        "to": _addresses(m.to),
        "cc": _addresses(m.cc),
        "delivered_to": [a.email for a in _addresses(m.delivered_to)]
        + [a.email for a in _addresses(_x_original_to(msg))],
        "date": date,
        "in_reply_to": message_id_list(headers.get("in-reply-to"))[-MAX_REFERENCES:],
        "references": references,
        "headers": headers,
        "auth_results": [str(v) for v in msg.get_all("authentication-results") or []],
    }


_ANGLE_ADDR_RE = re.compile(r"<\s*([^<>\s]+@[^<>\s]+)\s*>")
_BARE_ADDR_RE = re.compile(r"[^<>\s@]+@[^<>\s@]+")


def _fallback_addresses(raw: str | None) -> list[Address]:
    """The mailbox of a From header mail-parser gave up on: one whose encoded words decode to a
    line break (``=?utf-8?q?Eve=0D=0ABcc:_x?= <eve@example>``; the stdlib refuses it too), so that
    such a customer still gets a ticket, with the name on one line.

    The address is the header's *last* angle-addr, read before anything is decoded (RFC 2047
    section 5: an encoded word is a phrase, never part of an addr-spec), so a ``<victim@…>`` or a
    ``:`` inside an encoded word can neither choose the address nor pose as a group; the phrase
    before it is then decoded as the display name.
    """
    value = one_line(_FOLD_RE.sub("", raw or ""))
    angle = next(iter(reversed(list(_ANGLE_ADDR_RE.finditer(value)))), None)
    if angle is None:
        return _addresses([("", value)]) if _BARE_ADDR_RE.fullmatch(value) else []
    # The phrase is decoded by _addresses (display_name), once.
    return _addresses([(value[: angle.start()].strip().strip('"'), angle.group(1))])


_HEADER_END_RE = re.compile(rb"\r?\n\r?\n|\r\r")


def _header_only(raw: bytes, reason: str) -> ParsedMail:
    """A mail we refuse to parse: its header (for the quarantine row and de-duplication), no body."""
    end = _HEADER_END_RE.search(raw)
    head = raw[: end.start()] if end else raw
    fields = _header_fields(_mailparser(head + b"\r\n\r\n"))
    return ParsedMail(**fields, text="", html=None, attachments=[], defects=[reason], fatal_defects=[reason])


def _parse(raw: bytes) -> ParsedMail:
    m = _mailparser(raw)
    msg = m.message

    defects: list[str] = []
    fatal: list[str] = []
    garbled = False
    for entry in m.defects:
        for ctype, items in entry.items():
            for item in items:
                text = f"{ctype}: {item}"
                defects.append(text)
                name = item.split(":", 1)[0]
                if name in FATAL_MIME_DEFECTS:
                    fatal.append(f"broken MIME structure ({name}) in {ctype}")
                elif name == "CharsetDecodeDefect" and _UNDECODABLE_MARK in item:
                    garbled = True

    plain_parts, html_parts = list(m.text_plain), list(m.text_html)
    if garbled:
        plain_parts, html_parts, notes, undecodable = _redecode_text_parts(msg)
        defects += notes
        fatal += undecodable
    plain = "\n\n".join(t for t in plain_parts if t.strip())
    html = "\n".join(html_parts) or None
    if plain.strip():
        text = plain
    elif html:
        if len(html) > MAX_HTML_CHARS:
            defects.append(f"HTML body of {len(html)} characters: only the first {MAX_HTML_CHARS} made into text")
        text = html_to_text(html)
    else:
        text = ""
    text = clean_text(text)

    attachments = [
        Attachment(
            filename=safe_filename(a.get("filename")),
            content_type=safe_content_type(a.get("mail_content_type")),
            data=_decode_attachment(a),
            content_id=normalize_message_id(a.get("content-id")) if a.get("content-id") else None,
        )
        for a in m.attachments
    ]

    return ParsedMail(
        **_header_fields(m),
        text=text,
        html=html,
        attachments=attachments,
        defects=defects,
        fatal_defects=fatal,
        new_text=extract_new_text(text),
    )


def _x_original_to(msg) -> list[tuple[str, str]]:
    # Postfix records the envelope recipient in X-Original-To; Dovecot/others in Delivered-To.
    return [("", str(v).strip()) for v in msg.get_all("x-original-to") or []]
