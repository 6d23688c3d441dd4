"""Which of a customer's attachments travel with the agents' notification (the budget rule), and
how a file's size is said to agents. No I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from babel.numbers import format_decimal


@dataclass(frozen=True)
class CustomerFile:
    """One attachment of an inbound mail as stored: its row id (for a download link), the stored
    (safe) name, type, Content-ID (an inline image of the HTML) and bytes."""

    id: int
    filename: str
    content_type: str
    data: bytes
    content_id: str | None = None

    @property
    def size(self) -> int:
        return len(self.data)


def plan(files: list[CustomerFile], budget: int) -> tuple[list[CustomerFile], list[CustomerFile]]:
    """(attached, listed): in the mail's order, each file travels while the running total of the
    files' own sizes stays within ``budget`` bytes; a file that would pass it is listed instead, and
    a later, smaller file may still travel. An empty file always travels."""
    attached: list[CustomerFile] = []
    listed: list[CustomerFile] = []
    total = 0
    for f in files:
        if total + f.size <= budget:
            attached.append(f)
            total += f.size
        else:
            listed.append(f)
    return attached, listed


def human_size(n: int, language: str) -> str:
    """A size for people, in ``language``'s number format: "30,2 MB" (de), "30.2 MB" (en), "812 KB",
    "17 bytes"/"17 Bytes". MB and KB are 1,024-based, as the size limits are."""
    if n < 1024:
        return f"{format_decimal(n, locale=language)} {'Bytes' if language == 'de' else 'bytes'}"
    if n < 1024 * 1024:
        return f"{format_decimal(n / 1024, format='#,##0', locale=language)} KB"
    return f"{format_decimal(n / 1024 / 1024, format='#,##0.0', locale=language)} MB"
