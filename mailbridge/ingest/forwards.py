"""The customer's mail inside an agent's forward: who wrote it, when, its subject, text and files.

Three shapes, found by the one quote detection of ``ingest/quoting.py`` (:func:`forward_block`) or
by the parser (``ingest/parser.py``), never by a second reading of our own:

- forward as attachment: a ``message/rfc822`` part, parsed by :func:`parse_mail` like any mail;
- an inline forward under a forward separator ("-------- Forwarded message --------",
  "-------- Weitergeleitete Nachricht --------", Apple Mail's "Begin forwarded message:");
- Outlook's inline forward: "-----Ursprüngliche Nachricht-----" / "-----Original Message-----" or a
  bare "Von: / Gesendet: / An: / Betreff:" block. Outlook writes the same above a *reply*, so it
  counts as a forward only when the subject carries a forward prefix ("WG:", "FW:", …).

A block whose sender line names no address ("Von: Mustermann, Max") is no forward we can use.
Dates are read by :func:`email.utils.parsedate_to_datetime` (RFC 5322, as Thunderbird and Gmail
write them) or by dateparser (Outlook's "Freitag, 20. November 2026 10:15", Apple's "20. November
2026 um 09:02:11 MEZ"), a date without a zone in the queue calendar's zone.

Whether a forward makes the forwarded mail a case of its own sender is decided elsewhere
(``ingest/conversation.py`` ``AgentFiling``): only a proven agent's does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from email.utils import parsedate_to_datetime

import dateparser
import structlog

from mailbridge.domain import Address, Attachment, ParsedMail
from mailbridge.ingest.parser import ParseError, address_from, one_line, parse_mail
from mailbridge.ingest.quoting import forward_block
from mailbridge.subjects import is_forward_subject

log = structlog.get_logger(__name__)

RFC822 = "message/rfc822"
# The languages of the forwarded blocks' dates dateparser is asked to read (it tries each).
DATE_LANGUAGES = ["de", "en", "fr", "it", "es", "nl"]


@dataclass(frozen=True)
class Forwarded:
    """The forwarded original: its sender, date (UTC, None when unreadable), subject, plain text,
    files and Message-ID (only a forwarded attachment has one); ``note``: the forwarder's own words
    above it; ``form``: "attachment", "forward", "original" or "header" (see the module docstring)."""

    sender: Address
    date: datetime | None
    subject: str
    text: str
    note: str
    form: str
    attachments: list[Attachment] = field(default_factory=list)
    message_id: str | None = None
    references: list[str] = field(default_factory=list)


def read_date(value: str | None, zone: tzinfo) -> datetime | None:
    """A forwarded block's date line as an aware UTC time, or None; without a zone: in ``zone``."""
    value = one_line(value, 200)
    if not value:
        return None
    try:
        at = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        key = getattr(zone, "key", None) or "UTC"
        at = dateparser.parse(
            value,
            languages=DATE_LANGUAGES,
            settings={"TIMEZONE": key, "RETURN_AS_TIMEZONE_AWARE": True, "DATE_ORDER": "DMY"},
        )
        if at is None:
            return None
    if at.tzinfo is None:
        at = at.replace(tzinfo=zone)
    return at.astimezone(UTC)


def _attached(p: ParsedMail) -> Forwarded | None:
    for a in p.attachments:
        if a.content_type.lower() != RFC822:
            continue
        try:
            inner = parse_mail(a.data)
        except ParseError as e:
            log.info("forwarded_attachment_unreadable", error=str(e))
            continue
        if inner.from_ is None or inner.fatal_defects:
            continue
        # mail-parser also puts the attached mail's text below the outer one: what is above it is
        # the forwarder's.
        at = p.text.find(inner.text.strip()) if inner.text.strip() else -1
        note = p.text[:at] if at >= 0 else p.text
        return Forwarded(
            sender=inner.from_,
            date=inner.date,
            subject=inner.subject,
            text=inner.text,
            note=note.strip(),
            form="attachment",
            attachments=list(inner.attachments),
            message_id=inner.message_id,
            references=inner.references,
        )
    return None


def find_forward(p: ParsedMail, zone: tzinfo) -> Forwarded | None:
    """The mail ``p`` forwards (see the module docstring), or None."""
    found = _attached(p)
    if found is not None:
        return found
    block = forward_block(p.text)
    if block is None or (block.introduced_by != "forward" and not is_forward_subject(p.subject)):
        return None
    sender = address_from(block.headers.get("from"))
    if sender is None:
        return None
    # An inline forward carries the original's files as its own attachments (inline images of the
    # forwarder's signature excepted).
    files = [a for a in p.attachments if not (a.content_id and a.content_type.startswith("image/"))]
    return Forwarded(
        sender=sender,
        date=read_date(block.headers.get("date"), zone),
        subject=one_line(block.headers.get("subject"), 2000),
        text=block.body,
        note=block.above,
        form=block.introduced_by,
        attachments=files,
    )
