"""An address in mail bytes: finding it (also where transfer encodings or RFC 2047 hide it) and
replacing it by a pseudonym (headers and text parts, re-encoded by the stdlib ``email`` package).

Used by the erasure for the raw mails of other people that named the erased person (Cc, To, a
quote), for the mails we sent, and for the copies in the IMAP Processed folder.
"""

from __future__ import annotations

import re
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import getaddresses

from mailbridge.ingest.parser import normalize_message_id

_PARSER = BytesParser(policy=policy.default)
_OUT = policy.SMTP


def _parse(raw: bytes) -> EmailMessage:
    return _PARSER.parsebytes(raw)  # type: ignore[return-value]


def _pattern(addresses) -> re.Pattern[str]:
    return re.compile("|".join(re.escape(a) for a in sorted(addresses, key=len, reverse=True)), re.IGNORECASE)


def decoded_text(raw: bytes) -> str:
    """The mail as a reader sees it: every header decoded and every text part's content, plus the raw
    bytes themselves (as latin-1, so nothing can hide), one string."""
    parts = [raw.decode("latin-1")]
    try:
        msg = _parse(raw)
        for part in msg.walk():
            parts.extend(f"{k}: {v}" for k, v in part.items())
            if part.is_multipart():
                continue
            try:
                if part.get_content_maintype() == "text":
                    parts.append(part.get_content())
                else:
                    payload = part.get_payload(decode=True)
                    if isinstance(payload, bytes):
                        parts.append(payload.decode("latin-1"))
            except (LookupError, ValueError, AssertionError):
                continue
    except Exception:  # noqa: S110 - a broken mail: the raw bytes above are all there is to search
        pass
    return "\n".join(parts)


def mentions(raw: bytes, address: str) -> bool:
    """Whether ``address`` appears anywhere in the mail (case-insensitively, decoded)."""
    return address.lower() in decoded_text(raw).lower()


def senders(raw: bytes) -> set[str]:
    """The addresses of From, Sender and Reply-To, lower-cased."""
    try:
        msg = _parse(raw)
        values = [str(v) for name in ("From", "Sender", "Reply-To") for v in msg.get_all(name) or []]
    except Exception:
        return set()
    return {a.lower() for _n, a in getaddresses(values) if a}


def message_id(raw: bytes) -> str | None:
    """The Message-ID without angle brackets, as the database keeps it; None when there is none."""
    try:
        value = _parse(raw).get("Message-ID")
    except Exception:
        return None
    return normalize_message_id(str(value)) if value is not None else None


def pseudonymise(raw: bytes, mapping: dict[str, str]) -> bytes:
    """``raw`` with every address of ``mapping`` (a key, any case) replaced by its value in the headers
    and text parts; unchanged when none occurs. A mail the email package cannot write again is
    replaced byte-wise (the address is ASCII in headers; a text part's transfer encoding is then
    left as it was)."""
    if not mapping:
        return raw
    lowered = {k.lower(): v for k, v in mapping.items()}
    pat = _pattern(lowered)

    def sub(text: str) -> str:
        return pat.sub(lambda m: lowered[m.group(0).lower()], text)

    if not pat.search(decoded_text(raw)):
        return raw
    try:
        msg = _parse(raw)
        for part in msg.walk():
            names = list(dict.fromkeys(part))
            for name in names:
                values = [str(v) for v in part.get_all(name) or []]
                if any(pat.search(v) for v in values):
                    del part[name]
                    for v in values:
                        part[name] = sub(v)
            if part.is_multipart() or part.get_content_maintype() != "text":
                continue
            text = part.get_content()
            if pat.search(text):
                part.set_content(
                    sub(text),
                    subtype=part.get_content_subtype(),
                    disposition=part.get_content_disposition(),
                    filename=part.get_filename(),
                )
        out = msg.as_bytes(policy=_OUT)
    except Exception:
        out = pat.sub(lambda m: lowered[m.group(0).lower()], raw.decode("latin-1")).encode("latin-1")
    return out
