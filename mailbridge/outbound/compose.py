"""Builds the mails we send as ``EmailMessage`` bytes: Message-ID, threading, subject tag, RFC 3834.

No I/O. Every header value that can carry customer text goes through :func:`header_safe`, so a CR or
LF in a subject or display name can never start a header of its own (header injection).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.headerregistry import Address as HAddress
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid

# RFC 5322 3.6.4 lets References grow without bound; long threads are cut to the first and the
# newest ids, as most MUAs do.
MAX_REFERENCES = 20
_CTRL_RE = re.compile(r"[\x00-\x1f\x7f]+")


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
    """References of a reply: the parent's References plus the parent's own id (RFC 5322 3.6.4)."""
    refs = [r for r in parent_references if r]
    if parent_message_id:
        refs.append(parent_message_id)
    seen: dict[str, None] = {}
    for r in refs:
        seen.setdefault(r, None)
    refs = list(seen)
    if len(refs) > MAX_REFERENCES:
        refs = refs[:1] + refs[-(MAX_REFERENCES - 1) :]
    return refs


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
    msg = EmailMessage(policy=SMTP)
    msg["From"] = HAddress(display_name=header_safe(from_name, 200), addr_spec=from_addr)
    msg["To"] = [HAddress(display_name=header_safe(n, 200), addr_spec=a) for n, a in to]
    msg["Subject"] = header_safe(subject)
    msg["Date"] = format_datetime(date)
    msg["Message-ID"] = f"<{message_id}>"
    if in_reply_to:
        msg["In-Reply-To"] = f"<{in_reply_to}>"
    if references:
        msg["References"] = " ".join(f"<{r}>" for r in references)
    if auto_submitted:
        msg["Auto-Submitted"] = auto_submitted
        # Ask Exchange not to answer our automatic mail with its own automatic replies.
        msg["X-Auto-Response-Suppress"] = "All"
    if language:
        msg["Content-Language"] = language
    for k, v in (extra_headers or {}).items():
        msg[k] = header_safe(v)
    msg.set_content(text, subtype="plain", charset="utf-8", cte="quoted-printable")
    if html is not None:
        msg.add_alternative(html, subtype="html", charset="utf-8", cte="quoted-printable")
    return Outgoing(
        message_id=message_id,
        envelope_from=from_addr,
        envelope_to=[a for _, a in to],
        subject=str(msg["Subject"]),
        text=text,
        raw=msg.as_bytes(),
    )
