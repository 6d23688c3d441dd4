"""Plain types shared by every layer: case numbers, ticket status, a parsed mail.

Nothing here does I/O or knows about SQLAlchemy; ``ingest``, ``sla`` and ``outbound`` build on these.
"""

from __future__ import annotations

import enum
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime

from stdnum import damm

# Default case-number shape: "C" + 6 serial digits + 1 Damm check digit (e.g. C1234566).
DEFAULT_PREFIX = "C"
DEFAULT_DIGITS = 7

#: The first line of every notification mail to agents (outbound writes it). Everything from the line
#: that contains its core text on is cut from a reply (``ingest/quoting.py``), so a notification is
#: never relayed even if quote detection fails.
REPLY_MARKER = "##- Bitte oberhalb dieser Zeile antworten / Please type your reply above this line -##"


class TicketStatus(enum.StrEnum):
    """Lifecycle of a ticket: new → open → pending (waiting for the customer) → solved → closed.

    The transitions are in :mod:`mailbridge.lifecycle`.
    """

    NEW = "new"
    OPEN = "open"
    PENDING = "pending"
    SOLVED = "solved"
    CLOSED = "closed"


@dataclass(frozen=True)
class CaseNumberFormat:
    """How case numbers look: a prefix and a digit count that includes the check digit.

    The Damm check digit catches every single-digit error and every adjacent transposition, so a
    mistyped number is recognised as invalid instead of landing on someone else's case.
    """

    prefix: str = DEFAULT_PREFIX
    digits: int = DEFAULT_DIGITS

    @property
    def serial_digits(self) -> int:
        return self.digits - 1

    @property
    def max_serial(self) -> int:
        return 10**self.serial_digits - 1

    def format(self, serial: int) -> str:
        """Return the case number for ``serial`` (zero-padded, check digit appended)."""
        if not 0 < serial <= self.max_serial:
            raise ValueError(f"serial {serial} does not fit in {self.serial_digits} digits")
        body = f"{serial:0{self.serial_digits}d}"
        return f"{self.prefix}{body}{damm.calc_check_digit(body)}"

    def parse(self, text: str) -> int | None:
        """Return the serial of a well-formed case number with a valid check digit, else None.

        Accepts upper or lower case prefixes; the caller has already isolated the token.
        """
        # re.ASCII: only 0-9 count as digits, and IGNORECASE must not fold the Kelvin sign into "k".
        m = re.fullmatch(rf"{re.escape(self.prefix)}(\d{{{self.digits}}})", text.strip(), re.IGNORECASE | re.ASCII)
        if not m or not damm.is_valid(m.group(1)):
            return None
        return int(m.group(1)[:-1])

    def is_valid(self, text: str) -> bool:
        return self.parse(text) is not None

    def tag_pattern(self) -> re.Pattern[str]:
        """A case tag as subjects carry it (``[C1000002]``, ``C-1000002``): for removing tags from a
        subject, not for finding case numbers (``ingest/references.py`` does that)."""
        return re.compile(rf"\[?\s*{re.escape(self.prefix)}[\s-]?\d{{{self.digits}}}\s*\]?", re.IGNORECASE | re.ASCII)


@dataclass(frozen=True)
class Address:
    """A mailbox: display name and lower-cased address."""

    name: str
    email: str

    def __str__(self) -> str:  # pragma: no cover - debugging aid
        return f"{self.name} <{self.email}>" if self.name else self.email


# POSIX NAME_MAX and most file systems: 255 bytes per file name.
MAX_FILENAME_BYTES = 255
# Unicode categories removed from file names: controls (Cc), format characters (Cf: the direction
# overrides U+202A-202E and isolates U+2066-2069 that make "gpj.exe" look like "exe.jpg", zero-width
# characters), surrogates (Cs: undecodable bytes), line and paragraph separators (Zl, Zp).
_FILENAME_DROP = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
# Characters Windows refuses in a file name (an agent saves the attachment there); "/" and "\\" are
# separators and handled before.
_FILENAME_RESERVED_RE = re.compile(r'[<>:"|?*]')
# Device names Windows opens instead of a file, whatever the extension (CON.txt is the console).
_WINDOWS_DEVICES = frozenset(
    {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}
)
# An extension kept when a long name is cut: up to this many characters after the last dot.
_MAX_EXTENSION_CHARS = 16


def safe_filename(name: str | None, max_bytes: int = MAX_FILENAME_BYTES) -> str:
    """A sender's attachment file name reduced to a safe base name; "" when nothing is left.

    Directory parts are dropped (``../../etc/passwd`` → ``passwd``, ``C:\\x\\y.exe`` → ``y.exe``),
    so are control and format characters (NUL, CR/LF, ESC, the Unicode direction overrides),
    leading and trailing dots and blanks (``..``, ``.bashrc``, Windows' trailing dot), and characters
    Windows refuses (``<>:"|?*`` become ``_``); a Windows device name gets a leading ``_``. The
    result is at most ``max_bytes`` of UTF-8, the extension kept. Pure: the name is only ever
    displayed and offered for download; stored files are named by their sha256.
    """
    if not name:
        return ""
    # The tail holds the base name and its extension; a megabyte of name is not read char by char.
    name = unicodedata.normalize("NFC", str(name)[-8 * max_bytes :])
    name = "".join(
        " " if ch in "\t\r\n" else ch for ch in name if ch in "\t\r\n" or unicodedata.category(ch) not in _FILENAME_DROP
    )
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = re.sub(r"^[A-Za-z]:", "", name)  # a drive-relative Windows path (C:evil.exe)
    name = _FILENAME_RESERVED_RE.sub("_", name)
    name = " ".join(name.split()).strip(" .")
    if not name:
        return ""
    if name.split(".", 1)[0].rstrip().lower() in _WINDOWS_DEVICES:
        name = f"_{name}"
    if len(name.encode("utf-8")) > max_bytes:
        stem, dot, ext = name.rpartition(".")
        if not dot or not stem or len(ext) > _MAX_EXTENSION_CHARS:
            stem, ext = name, ""
        ext_bytes = len(ext.encode("utf-8")) + 1 if ext else 0
        stem = stem.encode("utf-8")[: max(1, max_bytes - ext_bytes)].decode("utf-8", "ignore").rstrip(" .")
        name = (f"{stem}.{ext}" if ext else stem).strip(" .")
    return name


@dataclass(frozen=True)
class Attachment:
    """One attachment as found in the mail; ``data`` is the decoded bytes, ``filename`` a safe base
    name (:func:`safe_filename`, applied by the parser) or "" when the sender gave none."""

    filename: str
    content_type: str
    data: bytes
    content_id: str | None = None


@dataclass
class ParsedMail:
    """What the pipeline needs from one inbound mail, independent of the parser library.

    ``defects`` are the MIME problems the parser found; ``fatal_defects`` the subset that makes the
    content unreliable (the mail then goes to quarantine instead of becoming a ticket).
    """

    message_id: str | None
    subject: str
    from_: Address | None
    reply_to: list[Address]
    to: list[Address]
    cc: list[Address]
    delivered_to: list[str]
    date: datetime | None
    in_reply_to: list[str]
    references: list[str]
    text: str
    html: str | None
    attachments: list[Attachment]
    headers: dict[str, str]
    defects: list[str] = field(default_factory=list)
    fatal_defects: list[str] = field(default_factory=list)
    # The new part of ``text``: quoted history and signature removed ("" when there is none).
    new_text: str = ""
    # Every Authentication-Results header value (RFC 8601), top (the newest) first.
    auth_results: list[str] = field(default_factory=list)
    # Set by the parse pool: the language detected among the configured ones (None: unsure). When
    # ``language_detected`` is False, the pipeline detects it itself.
    language: str | None = None
    language_detected: bool = False

    @property
    def recipient_emails(self) -> list[str]:
        """Every address the mail was sent to, as the MTA and the headers tell it."""
        seen: dict[str, None] = {}
        for a in [*self.delivered_to, *(x.email for x in self.to), *(x.email for x in self.cc)]:
            seen.setdefault(a.lower(), None)
        return list(seen)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())
