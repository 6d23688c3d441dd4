"""Builds the bytes of the mails we send: Message-ID, threading, subject tag, RFC 3834.

No I/O. Every header value that can carry customer text goes through :func:`header_safe`, so a CR or
LF in a subject or display name can never start a header of its own (header injection).

Mails are built with the stdlib's ``email.mime`` classes and the ``email.header.Header`` encoder
(the compat32 API), not ``EmailMessage``:

- Python 3.11's ``EmailMessage`` folder drops or doubles the blank between words when it folds a long
  non-ASCII subject (CPython gh-144156), so the customer would see "schlägtnicht"; the legacy
  encoder keeps the blanks inside adjacent encoded words (RFC 2047 6.2) and round-trips exactly;
- ``EmailMessage`` parses and refolds every header it is given, ~3.7 ms per acknowledgement against
  ~0.8 ms here, and the acknowledgement is composed inside the ingest transaction.

Only a recipient with a non-ASCII local part (RFC 6532, which needs SMTPUTF8) goes through
``EmailMessage`` with the SMTPUTF8 policy, which can write raw UTF-8 headers.
"""

from __future__ import annotations

import io
import re
import secrets
from dataclasses import dataclass
from email import encoders
from email.charset import BASE64, QP, Charset
from email.generator import BytesGenerator
from email.header import Header
from email.message import EmailMessage
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import SMTPUTF8, compat32
from email.utils import format_datetime, formataddr, make_msgid, quote

from mailbridge.domain import safe_filename

# RFC 5322 2.1: lines end in CRLF on the wire.
_WIRE = compat32.clone(linesep="\r\n")
# RFC 5322 3.6.4 lets References grow without bound; long threads are cut to the first and the
# newest ids, as most MUAs do.
MAX_REFERENCES = 20
# C0 controls, DEL, NEL and the Unicode line/paragraph separators: anything a mail library or client
# may treat as a line break.
_CTRL_RE = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]+")


def header_safe(value: str, limit: int = 900) -> str:
    """One line of printable text: control characters (CR, LF, NUL, …) become spaces."""
    return _CTRL_RE.sub(" ", value or "").strip()[:limit]


# White space and controls (C0, DEL, C1, Unicode line breaks) never belong in an address or a
# msg-id; "<", ">" and "," would end one early.
_ADDR_BAD_RE = re.compile(r"[\x00-\x20\x7f-\x9f\u2028\u2029<>,;]")


def address_safe(addr: str) -> str:
    """``addr`` if it can stand in a header and an SMTP command as it is; else ValueError.

    The parser never hands out such an address; this is the last line against header (and SMTP
    command) injection through a recipient.
    """
    if not addr or _ADDR_BAD_RE.search(addr) or "@" not in addr:
        raise ValueError(f"unusable mail address {addr!r}")
    return addr


def _msg_id_safe(value: str) -> str:
    """A msg-id (without brackets) with anything that could break its header removed."""
    return _ADDR_BAD_RE.sub("", value or "")


def new_message_id(domain: str) -> str:
    """A fresh Message-ID under our own domain, without angle brackets."""
    return make_msgid(idstring="mb", domain=domain).strip("<>")


def tagged_subject(case_number: str, subject: str) -> str:
    """``[C1234567] subject``, without stacking the tag when the subject already carries it."""
    subject = header_safe(subject)
    tag = f"[{case_number}]"
    if tag.lower() in subject.lower():
        return subject
    return f"{tag} {subject}".strip()


def references_for(parent_message_id: str | None, parent_references: list[str]) -> list[str]:
    """References of a reply: the parent's References, then the parent's own id last (RFC 5322 3.6.4).

    Duplicates are dropped; a long chain keeps its first id and the newest ones.
    """
    refs = list(dict.fromkeys(r for r in parent_references if r and r != parent_message_id))
    if parent_message_id:
        refs.append(parent_message_id)
    if len(refs) > MAX_REFERENCES:
        refs = refs[:1] + refs[-(MAX_REFERENCES - 1) :]
    return refs


# UTF-8 header text as base64 encoded words: the stdlib's default for UTF-8 ("shortest") measures
# the quoted-printable length of every prefix of every line it folds, ~3x the cost, for a header
# that only mail programs read.
_UTF8_B64 = Charset("utf-8")
_UTF8_B64.header_encoding = BASE64


def encode_subject(subject: str) -> str:
    """The Subject header's value as RFC 2047 encoded, folded ASCII (see module docstring)."""
    return encode_header(subject, "Subject")


def encode_header(value: str, name: str) -> str:
    """An unstructured header value as folded ASCII: as it is when ASCII, else RFC 2047 encoded words."""
    return Header(value, "us-ascii" if value.isascii() else _UTF8_B64, header_name=name).encode(linesep="\r\n")


@dataclass(frozen=True)
class Outgoing:
    """A composed mail: the bytes to send and what we store about it."""

    message_id: str
    envelope_from: str
    envelope_to: list[str]
    subject: str
    text: str
    raw: bytes


def compose(
    *,
    from_name: str,
    from_addr: str,
    to: list[tuple[str, str]],
    subject: str,
    text: str,
    html: str | None,
    date,
    in_reply_to: str | None = None,
    references: list[str] | None = None,
    auto_submitted: str | None = None,
    language: str | None = None,
    extra_headers: dict[str, str] | None = None,
    cc: list[tuple[str, str]] | None = None,
    reply_to: str | None = None,
    thread_topic: str | None = None,
    thread_index: str | None = None,
    attachments: list[OutgoingAttachment] | None = None,
    message_id: str | None = None,
) -> Outgoing:
    """Compose a text mail with an optional HTML alternative and optional attachments.

    Args:
        to: (display name, address) pairs; ``cc`` likewise.
        auto_submitted: RFC 3834 value, e.g. ``auto-replied`` for acknowledgements.
        date: an aware datetime for the Date header.
        thread_topic, thread_index: Outlook's conversation headers (see ``outbound/threadindex.py``).
        message_id: a Message-ID chosen by the caller (a signed one for notifications), else a new one.
    """
    address_safe(from_addr)
    for _, a in [*to, *(cc or [])]:
        address_safe(a)
    if reply_to:
        address_safe(reply_to)
    domain = from_addr.rsplit("@", 1)[-1]
    message_id = _msg_id_safe(message_id) if message_id else new_message_id(domain)
    subject = header_safe(subject)
    cc = cc or []
    in_reply_to = _msg_id_safe(in_reply_to) if in_reply_to else None
    references = [r for r in (_msg_id_safe(r) for r in references or []) if r]
    headers: list[tuple[str, str | Header]] = [("Date", format_datetime(date))]
    if cc:
        headers.append(("Cc", ", ".join(formataddr((header_safe(n, 200), a), charset="utf-8") for n, a in cc)))
    if reply_to:
        headers.append(("Reply-To", reply_to))
    if in_reply_to:
        headers.append(("In-Reply-To", f"<{in_reply_to}>"))
    if references:
        headers.append(("References", " ".join(f"<{r}>" for r in references)))
    if auto_submitted:
        headers.append(("Auto-Submitted", auto_submitted))
        # Ask Exchange not to answer our automatic mail with its own automatic replies.
        headers.append(("X-Auto-Response-Suppress", "All"))
    if language:
        headers.append(("Content-Language", language))
    if thread_topic is not None:
        topic = header_safe(thread_topic, 255)
        headers.append(
            ("Thread-Topic", topic if topic.isascii() else Header(topic, _UTF8_B64, header_name="Thread-Topic"))
        )
    if thread_index:
        headers.append(("Thread-Index", thread_index))
    for k, v in (extra_headers or {}).items():
        if not _HEADER_NAME_RE.fullmatch(k):
            raise ValueError(f"not a header name: {k!r}")
        v = header_safe(v)
        headers.append((k, v if v.isascii() else Header(v, _UTF8_B64, header_name=k)))

    # RFC 6532: an address with a non-ASCII local part can only travel as UTF-8 (SMTPUTF8).
    if all(a.isascii() for a in [from_addr, *(a for _, a in to), *(a for _, a in cc)]):
        headers[:0] = [
            ("From", formataddr((header_safe(from_name, 200), from_addr), charset="utf-8")),
            ("To", ", ".join(formataddr((header_safe(n, 200), a), charset="utf-8") for n, a in to)),
        ]
        # Our headers are written here; the generator writes the MIME part (its Content-* headers
        # and body). A short ASCII value is written as it is; anything else goes through the
        # Header encoder, which RFC 2047-encodes and folds (the generator would do the same, for
        # every header, at several times the cost).
        lines = [_header_line(k, v) for k, v in headers]
        buf = io.BytesIO()
        BytesGenerator(buf, mangle_from_=False, policy=_WIRE).flatten(_legacy_message(text, html, attachments))
        raw = "".join(lines).encode("ascii") + buf.getvalue()
    else:
        raw = _utf8_message(from_name, from_addr, to, cc, text, html, headers, attachments)
    # Subject and Message-ID come first, written by hand: the Subject with the legacy encoder (module
    # docstring), the Message-ID never folded (some clients do not thread on a folded one).
    head = f"Subject: {encode_subject(subject)}\r\nMessage-ID: <{message_id}>\r\n".encode("ascii")
    return Outgoing(
        message_id=message_id,
        envelope_from=from_addr,
        envelope_to=list(dict.fromkeys(a for _, a in [*to, *cc])),
        subject=subject,
        text=text,
        raw=head + raw,
    )


# RFC 5322 2.1.1: lines SHOULD stay within 78 characters.
_MAX_LINE = 78
# RFC 5322 3.6.8: a field name is printable ASCII but ":".
_HEADER_NAME_RE = re.compile(r"[\x21-\x39\x3b-\x7e]{1,76}")
# RFC 2045 5.1: type "/" subtype, both tokens.
_CONTENT_TYPE_RE = re.compile(r"[A-Za-z0-9!#$&^_.+-]{1,127}/[A-Za-z0-9!#$&^_.+-]{1,127}")


def _content_type(value: str | None) -> tuple[str, str]:
    """(maintype, subtype) of an attachment; application/octet-stream when it is not two tokens."""
    value = (value or "").strip()
    if not _CONTENT_TYPE_RE.fullmatch(value):
        return "application", "octet-stream"
    maintype, _, subtype = value.lower().partition("/")
    return maintype, subtype


def _header_line(name: str, value: str | Header) -> str:
    if isinstance(value, str) and value.isascii() and len(name) + 2 + len(value) <= _MAX_LINE:
        return f"{name}: {value}\r\n"
    if isinstance(value, str):
        value = Header(value, "us-ascii" if value.isascii() else _UTF8_B64, header_name=name)
    return f"{name}: {value.encode(linesep=chr(13) + chr(10))}\r\n"


@dataclass(frozen=True)
class OutgoingAttachment:
    """A file to send along (e.g. what an agent attached to a reply that we relay). With a
    ``content_id`` it is an inline image the HTML refers to as ``cid:``: sent with its Content-ID and
    ``Content-Disposition: inline``, so a mail client can show it in place or offer it as a file."""

    filename: str
    content_type: str
    data: bytes
    content_id: str | None = None


def stored_filename(a) -> str:
    """The name an inbound attachment is stored and shown under (``AttachmentRow.filename``): the
    parser's safe name (``domain.safe_filename``) as one header-safe line, "unnamed" when it has none."""
    return header_safe(a.filename, 255) or "unnamed"


def _safe_filename(name: str) -> str:
    # A base name without controls or direction overrides: a file name is never a path on the
    # recipient's side, and never spoofs its extension.
    return safe_filename(name) or "attachment"


def _attachment_part(a: OutgoingAttachment) -> MIMEBase:
    maintype, subtype = _content_type(a.content_type)
    part = MIMEBase(maintype, subtype)
    part.set_payload(a.data)
    encoders.encode_base64(part)
    name = _safe_filename(a.filename)
    cid = _msg_id_safe(a.content_id or "")
    if cid:
        part.add_header("Content-ID", f"<{cid}>")
    # RFC 2231 for a non-ASCII file name.
    part.add_header(
        "Content-Disposition",
        "inline" if cid else "attachment",
        filename=name if name.isascii() else ("utf-8", "", name),
    )
    return part


def _boundary() -> str:
    # Every part we write is quoted-printable or base64, and neither can contain "=_" ("=" is "=3D"
    # in QP, "_" is not in the base64 alphabet), so this boundary cannot occur in a body. Setting it
    # ourselves spares the generator its per-message regex compile and scan of the whole text.
    return f"=_mb_{secrets.token_hex(12)}"


def _split(html: str | None, attachments: list[OutgoingAttachment] | None):
    """(inline, files): with an HTML alternative, the parts with a Content-ID are its inline images
    (RFC 2387 multipart/related beside the HTML); the rest, and every part of a mail without HTML,
    are files of the multipart/mixed."""
    attachments = attachments or []
    if html is None:
        return [], attachments
    inline = [a for a in attachments if _msg_id_safe(a.content_id or "")]
    return inline, [a for a in attachments if a not in inline]


def _legacy_message(text: str, html: str | None, attachments: list[OutgoingAttachment] | None = None):
    """text/plain; with HTML multipart/alternative (text/plain, then text/html or, with inline
    images, multipart/related [text/html, images]); with files all that inside multipart/mixed."""
    cs = Charset("utf-8")
    cs.body_encoding = QP  # readable in any raw view; the body stays 7-bit (no 8BITMIME needed)
    inline, files = _split(html, attachments)
    plain = MIMEText(text, "plain", cs)
    if html is None:
        body = plain
    else:
        body = MIMEMultipart("alternative", boundary=_boundary())
        body.attach(plain)
        html_part = MIMEText(html, "html", cs)
        if inline:
            related = MIMEMultipart("related", boundary=_boundary(), type="text/html")
            related.attach(html_part)
            for a in inline:
                related.attach(_attachment_part(a))
            html_part = related
        body.attach(html_part)
    if not files:
        return body
    mixed = MIMEMultipart("mixed", boundary=_boundary())
    mixed.attach(body)
    for a in files:
        mixed.attach(_attachment_part(a))
    return mixed


def _utf8_message(from_name, from_addr, to, cc, text, html, headers, attachments=None) -> bytes:
    msg = EmailMessage(policy=SMTPUTF8)
    msg["From"] = formataddr((header_safe(from_name, 200), from_addr))
    # headerregistry.Address refuses a non-ASCII local part even under SMTPUTF8; a formatted string
    # is accepted and written as UTF-8.
    msg["To"] = ", ".join(f'"{quote(header_safe(n, 200))}" <{a}>' if n else a for n, a in to)
    if cc:
        msg["Cc"] = ", ".join(f'"{quote(header_safe(n, 200))}" <{a}>' if n else a for n, a in cc)
    inline, files = _split(html, attachments)
    msg.set_content(text, subtype="plain", charset="utf-8", cte="quoted-printable")
    if html is not None:
        msg.add_alternative(html, subtype="html", charset="utf-8", cte="quoted-printable")
    if inline:
        html_part = msg.get_payload()[1]
        for a in inline:
            maintype, subtype = _content_type(a.content_type)
            html_part.add_related(
                a.data,
                maintype=maintype,
                subtype=subtype,
                filename=_safe_filename(a.filename),
                disposition="inline",
                cid=f"<{_msg_id_safe(a.content_id or '')}>",
            )
        html_part.set_param("type", "text/html")  # RFC 2387 3.1: the root part's type
    for a in files:
        maintype, subtype = _content_type(a.content_type)
        cid = _msg_id_safe(a.content_id or "")
        msg.add_attachment(
            a.data,
            maintype=maintype,
            subtype=subtype,
            filename=_safe_filename(a.filename),
            disposition="inline" if cid else "attachment",
            cid=f"<{cid}>" if cid else None,
        )
    for k, v in headers:  # after set_content, which replaces every Content-* header
        if k != "Cc":
            msg[k] = str(v)
    return msg.as_bytes()
