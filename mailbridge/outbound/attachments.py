"""Which of a customer's attachments travel with the agents' notification (the budget rule), and
how a file's size is said to agents. No I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from babel.numbers import format_decimal


@dataclass(frozen=True)
class CustomerFile:
    """One attachment of an inbound mail as stored (``AttachmentRow``): its row id (for a download
    link), the stored (safe) name, type, size, the sha256 its bytes are stored under, and the
    Content-ID of an inline image of the HTML."""

    id: int
    filename: str
    content_type: str
    size: int
    sha256: str = ""
    content_id: str | None = None


# What a file's MIME part adds besides its base64 body: boundary, Content-Type, -Disposition
# (an RFC 2231 name of up to 255 bytes, percent-encoded), -Transfer-Encoding, -ID.
PART_OVERHEAD = 2048
# What a notification holds besides its files: our headers and template text (a few KB), kept
# generous.
FRAME_BYTES = 64 * 1024


def encoded_size(n: int) -> int:
    """The bytes a file of ``n`` bytes takes in a mail: base64 in lines of 76 characters and CRLF
    (57 bytes a line), plus its part's headers."""
    return -(-n // 57) * 78 + PART_OVERHEAD


def text_reserve(text: str) -> int:
    """The room a notification keeps for its text (``text``: the customer's, which it quotes):
    quoted-printable writes a byte as up to 3 characters, plus the frame."""
    return 3 * len(text.encode("utf-8")) + FRAME_BYTES


def plan(
    files: list[CustomerFile], budget: int, room: int | None = None
) -> tuple[list[CustomerFile], list[CustomerFile]]:
    """(attached, listed): in the mail's order, each file travels while the running total of the
    files' own sizes stays within ``budget`` bytes and their encoded parts (:func:`encoded_size`)
    within ``room`` bytes (what the SMTP server's size limit leaves beside the text); a file that
    would pass either is listed instead, and a later, smaller file may still travel."""
    attached: list[CustomerFile] = []
    listed: list[CustomerFile] = []
    total = used = 0
    for f in files:
        enc = encoded_size(f.size)
        if total + f.size <= budget and (room is None or used + enc <= room):
            attached.append(f)
            total += f.size
            used += enc
        else:
            listed.append(f)
    return attached, listed


def capacity(budget: int, room: int) -> int:
    """How many bytes of files a notification can carry, for telling agents: the budget, or less
    when the SMTP server's limit (``room`` for encoded parts) allows less (one part's overhead off)."""
    return max(0, min(budget, (room - PART_OVERHEAD) * 57 // 78))


def human_size(n: int, language: str) -> str:
    """A size for people, in ``language``'s number format: "30,2 MB" (de), "30.2 MB" (en), "812 KB",
    "17 bytes"/"17 Bytes". MB and KB are 1,024-based, as the size limits are."""
    if n < 1024:
        return f"{format_decimal(n, locale=language)} {'Bytes' if language == 'de' else 'bytes'}"
    if n < 1024 * 1024:
        return f"{format_decimal(n / 1024, format='#,##0', locale=language)} KB"
    return f"{format_decimal(n / 1024 / 1024, format='#,##0.0', locale=language)} MB"
