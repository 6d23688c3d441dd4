"""Builds the mails we send as ``EmailMessage`` bytes: Message-ID, threading, subject tag, RFC 3834.

No I/O. Every header value that can carry customer text goes through :func:`header_safe`, so a CR or
LF in a subject or display name can never start a header of its own (header injection).

The Subject is encoded with the stdlib's legacy ``email.header.Header`` encoder, not the
``EmailMessage`` folder: Python 3.11's folder drops or doubles the blank between words when it folds
a long non-ASCII subject (CPython gh-144156), so the customer would see "schlägtnicht". The legacy
encoder keeps the blanks inside adjacent encoded words (RFC 2047 6.2) and round-trips exactly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.header import Header
from email.headerregistry import Address as HAddress
from email.message import EmailMessage
from email.policy import SMTP, SMTPUTF8
from email.utils import format_datetime, make_msgid, quote

# RFC 5322 3.6.4 lets References grow without bound; long threads are cut to the first and the
# newest ids, as most MUAs do.
MAX_REFERENCES = 20
# C0 controls, DEL, NEL and the Unicode line/paragraph separators: anything a mail library or client
# may treat as a line break.
_CTRL_RE = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]+")


def header_safe(value: str, limit: int = 900) -> str:
    """One line of printable text: control characters (CR, LF, NUL, …) become spaces."""
    return _CTRL_RE.sub(" ", value or "").strip()[:limit]


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


def encode_subject(subject: str) -> str:
    """The Subject header's value as RFC 2047 encoded, folded ASCII (see module docstring)."""
    charset = "us-ascii" if subject.isascii() else "utf-8"
    return Header(subject, charset, header_name="Subject").encode(linesep="\r\n")


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
) -> Outgoing:
    """Compose a text mail with an optional HTML alternative.

    Args:
        to: (display name, address) pairs.
        auto_submitted: RFC 3834 value, e.g. ``auto-replied`` for acknowledgements.
        date: an aware datetime for the Date header.
    """
    domain = from_addr.rsplit("@", 1)[-1]
    message_id = new_message_id(domain)
    subject = header_safe(subject)
    # RFC 6532: an address with a non-ASCII local part can only travel as UTF-8 (SMTPUTF8).
    utf8 = not all(a.isascii() for a in [from_addr, *(a for _, a in to)])
    msg = EmailMessage(policy=SMTPUTF8 if utf8 else SMTP)
    msg["From"] = HAddress(display_name=header_safe(from_name, 200), addr_spec=from_addr)
    if utf8:
        # headerregistry.Address refuses a non-ASCII local part even under SMTPUTF8; a formatted
        # string is accepted and written as UTF-8.
        msg["To"] = ", ".join(f'"{quote(header_safe(n, 200))}" <{a}>' if n else a for n, a in to)
    else:
        msg["To"] = [HAddress(display_name=header_safe(n, 200), addr_spec=a) for n, a in to]
    msg["Date"] = format_datetime(date)
    if in_reply_to:
        msg["In-Reply-To"] = f"<{in_reply_to}>"
    if references:
        msg["References"] = " ".join(f"<{r}>" for r in references)
    if auto_submitted:
        msg["Auto-Submitted"] = auto_submitted
        # Ask Exchange not to answer our automatic mail with its own automatic replies.
        msg["X-Auto-Response-Suppress"] = "All"
    msg.set_content(text, subtype="plain", charset="utf-8", cte="quoted-printable")
    if html is not None:
        msg.add_alternative(html, subtype="html", charset="utf-8", cte="quoted-printable")
    # After set_content, which replaces every Content-* header of the message.
    if language:
        msg["Content-Language"] = language
    for k, v in (extra_headers or {}).items():
        msg[k] = header_safe(v)
    # Subject and Message-ID are written by hand: the Subject for the folding bug (module docstring),
    # the Message-ID because the policy would fold a long one onto a continuation line, which some
    # mail clients do not thread on.
    head = f"Subject: {encode_subject(subject)}\r\nMessage-ID: <{message_id}>\r\n".encode("ascii")
    raw = head + msg.as_bytes()
    return Outgoing(
        message_id=message_id,
        envelope_from=from_addr,
        envelope_to=[a for _, a in to],
        subject=subject,
        text=text,
        raw=raw,
    )
