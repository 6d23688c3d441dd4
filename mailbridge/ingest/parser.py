"""Raw bytes → :class:`ParsedMail` through mail-parser; never raises on bad MIME, reports defects.

Which defects are *fatal* (the mail goes to quarantine, raw bytes kept) is decided here, because
only the parser knows what it had to guess:

- the multipart structure is unreadable (no boundary, start boundary never found, a multipart that
  is not one): the text we would file could be a fragment or MIME noise;
- a text part's charset could not be applied and even UTF-8 needed replacement characters: the
  customer's words would be filed as "�".

Everything else the parser tolerates (a missing close boundary, a recovered charset, odd headers)
is recorded on the message as a non-fatal defect.
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import datetime

import html2text
import mailparser

from mailbridge.domain import Address, Attachment, ParsedMail

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
    """``<a@b>`` → ``a@b``; a bare id without brackets is kept as it is (some MUAs send those)."""
    if not value:
        return None
    m = _MSG_ID_RE.search(value)
    if m:
        return m.group(1)
    value = value.strip()
    return value or None


def message_id_list(value: str | None) -> list[str]:
    """All msg-ids in an In-Reply-To or References header, in order (RFC 5322 3.6.4)."""
    return _MSG_ID_RE.findall(value or "")


def _addresses(pairs) -> list[Address]:
    out = []
    for pair in pairs or []:
        name, email = (pair[0] or "", pair[1] or "") if len(pair) == 2 else ("", str(pair))
        email = email.strip().lower()
        if "@" in email:
            out.append(Address(name=name.strip(), email=email))
    return out


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
    for entry in m.defects:
        for ctype, items in entry.items():
            for item in items:
                text = f"{ctype}: {item}"
                defects.append(text)
                name = item.split(":", 1)[0]
                if name in FATAL_MIME_DEFECTS:
                    fatal.append(f"broken MIME structure ({name}) in {ctype}")
                elif name == "CharsetDecodeDefect" and _UNDECODABLE_MARK in item:
                    fatal.append(f"undecodable text ({item.split(';')[0].removeprefix('CharsetDecodeDefect: ')})")

    plain = "\n\n".join(t for t in m.text_plain if t.strip())
    html = "\n".join(m.text_html) or None
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
        subject=(m.subject or "").strip(),
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
    )


def _x_original_to(msg) -> list[tuple[str, str]]:
    # Postfix records the envelope recipient in X-Original-To; Dovecot/others in Delivered-To.
    return [("", str(v).strip()) for v in msg.get_all("x-original-to") or []]
