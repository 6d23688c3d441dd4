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
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
from datetime import datetime
from email import policy as email_policy

import html2text
import mailparser

from mailbridge.domain import Address, Attachment, ParsedMail
from mailbridge.ingest.quoting import extract_new_text

# email.errors defect classes after which the body cannot be trusted.
FATAL_MIME_DEFECTS = frozenset(
    {"NoBoundaryInMultipartDefect", "StartBoundaryNotFoundDefect", "MultipartInvariantViolationDefect"}
)
# mail-parser's wording when a charset failed and UTF-8 needed replacement characters.
_UNDECODABLE_MARK = "replacement characters"
# RFC 5322 3.6.4: msg-id = "<" id-left "@" id-right ">"; we keep whatever is between the brackets.
_MSG_ID_RE = re.compile(r"<([^<>\s]+)>")


class ParseError(Exception):
    """The bytes could not be parsed at all (the parser library itself gave up)."""


def normalize_message_id(value: str | None) -> str | None:
    """``<a@b>`` → ``a@b``; a bare or half-bracketed id is cleaned of brackets and white space.

    Returns None when nothing usable is left (``<>``, blanks).
    """
    if not value:
        return None
    m = _MSG_ID_RE.search(value)
    if m:
        return m.group(1)
    value = re.sub(r"[<>\s]+", "", value)
    return value or None


def message_id_list(value: str | None) -> list[str]:
    """All msg-ids in an In-Reply-To or References header, in order (RFC 5322 3.6.4).

    Some senders (Python's ``email`` package among them) fold a long id list into RFC 2047 encoded
    words, which RFC 2047 section 5 forbids in these headers; they are decoded first, or the reply
    would not be recognised as one.
    """
    if value and "=?" in value:
        value = decode_unstructured(value)
    return _MSG_ID_RE.findall(value or "")


def _addresses(pairs) -> list[Address]:
    out = []
    for pair in pairs or []:
        name, email = (pair[0] or "", pair[1] or "") if len(pair) == 2 else ("", str(pair))
        email = email.strip().lower()
        if "@" in email:
            out.append(Address(name=name.strip(), email=email))
    return out


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
    return str(email_policy.default.header_factory("subject", value)).strip()


def decode_text(payload: bytes, label: str | None) -> tuple[str | None, str | None]:
    """Decode a text part: (text, note). text is None when it cannot be decoded at all.

    Order: the declared charset; its superset; UTF-8; for a *known* label, windows-1252 as the last
    resort (it maps every byte). An unknown label whose bytes are not UTF-8 is undecodable.
    """
    label = (label or "us-ascii").strip().strip('"').lower()
    try:
        canonical: str | None = codecs.lookup(label).name
    except LookupError:
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


def html_to_text(html: str) -> str:
    """Readable plain text from an HTML-only mail (links kept inline, no line wrapping)."""
    h = html2text.HTML2Text()
    h.body_width = 0
    h.ignore_images = True
    h.ignore_emphasis = True
    h.unicode_snob = True
    return h.handle(html).strip()


def _decode_attachment(att: dict) -> bytes:
    payload = att.get("payload") or ""
    if att.get("binary"):
        try:
            return base64.b64decode(payload)
        except (binascii.Error, ValueError):
            return payload.encode("utf-8", "surrogateescape")
    return payload.encode("utf-8", "surrogateescape")


def parse_mail(raw: bytes) -> ParsedMail:
    """Parse one raw RFC 5322 message.

    Raises:
        ParseError: only when mail-parser cannot build a message at all (e.g. nesting too deep).
    """
    try:
        m = mailparser.parse_from_bytes(raw)
    except Exception as e:  # the library's own hierarchy and stdlib errors alike
        raise ParseError(f"{type(e).__name__}: {e}") from e

    msg = m.message
    headers: dict[str, str] = {}
    for k, v in msg.items():
        headers.setdefault(k.lower(), str(v))

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
    text = plain if plain.strip() else (html_to_text(html) if html else "")

    from_ = _addresses(m.from_)
    date = m.date if isinstance(m.date, datetime) else None
    if date is not None and date.tzinfo is None:
        date = None  # mail-parser returns aware UTC when the header had a zone; drop guesses

    attachments = [
        Attachment(
            filename=a.get("filename") or "",
            content_type=a.get("mail_content_type") or "application/octet-stream",
            data=_decode_attachment(a),
            content_id=normalize_message_id(a.get("content-id")) if a.get("content-id") else None,
        )
        for a in m.attachments
    ]

    return ParsedMail(
        message_id=normalize_message_id(headers.get("message-id")),
        subject=decode_unstructured(_raw_header(msg, "subject")),
        from_=from_[0] if from_ else None,
        reply_to=_addresses(m.reply_to),
        to=_addresses(m.to),
        cc=_addresses(m.cc),
        delivered_to=[a.email for a in _addresses(m.delivered_to)] + [a.email for a in _addresses(_x_original_to(msg))],
        date=date,
        in_reply_to=message_id_list(headers.get("in-reply-to")),
        references=message_id_list(" ".join(str(v) for v in msg.get_all("references") or [])),
        text=text,
        html=html,
        attachments=attachments,
        headers=headers,
        defects=defects,
        fatal_defects=fatal,
        new_text=extract_new_text(text),
        auth_results=[str(v) for v in msg.get_all("authentication-results") or []],
    )


def _x_original_to(msg) -> list[tuple[str, str]]:
    # Postfix records the envelope recipient in X-Original-To; Dovecot/others in Delivered-To.
    return [("", str(v).strip()) for v in msg.get_all("x-original-to") or []]
