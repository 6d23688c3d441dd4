"""Outlook's conversation headers: ``Thread-Index`` (PidTagConversationIndex) and ``Thread-Topic``.

Owns the binary layout of MS-OXOMSG 2.2.1.3 and nothing else: a 22-byte header block (reserved
``0x01``, the 40 most significant bits of a FILETIME, a 16-byte GUID) followed by one 5-byte response
level per reply, base64-encoded in the ``Thread-Index`` header. The GUID is derived from the case, so
every mail of a case lands in one Outlook/Exchange conversation without storing anything (with
conversation index tracking, Exchange computes the conversation id from those 16 bytes, MS-OXOMSG
2.2.1.2 and 2.2.1.4). No I/O; "now" is a parameter.
Malformed input never raises: a broken parent index makes the reply start again from the case's root.
"""

from __future__ import annotations

import base64
import re
import secrets
import uuid
from datetime import UTC, datetime, timedelta

# MS-OXOMSG 2.2.1.3: header block = 1 reserved byte (0x01) + 5 time bytes + 16 GUID bytes.
HEADER_LEN = 22
CHILD_LEN = 5
_RESERVED = 0x01
# A chain is capped at this many response levels (1,022 bytes, 1,364 base64 characters): a longer
# parent is treated as malformed. Real threads stay far below; the cap bounds what we store and send.
MAX_CHILD_BLOCKS = 200
MAX_LEN = HEADER_LEN + CHILD_LEN * MAX_CHILD_BLOCKS
# base64 characters of the longest index we accept, checked before decoding anything.
_MAX_B64 = (MAX_LEN + 2) // 3 * 4
# FILETIME (MS-DTYP 2.3.3): 100-nanosecond intervals since 1601-01-01 UTC.
_FILETIME_EPOCH = datetime(1601, 1, 1, tzinfo=UTC)
# MS-OXOMSG 2.2.1.3, header block: the 24 least significant bits of the FILETIME are dropped.
_HEADER_SHIFT = 24
# MS-OXOMSG 2.2.1.3, response level: DeltaCode 0 stores bits 48..18 of the time difference (units of
# 2**18 * 100 ns = 26.2 ms, differences below 2**49 * 100 ns, about 1.78 years); DeltaCode 1 stores
# bits 53..23 (units of 0.84 s, up to about 57 years; larger differences are clamped).
_FINE_SHIFT = 18
_COARSE_SHIFT = 23
_FINE_LIMIT = 1 << 49
_DELTA_MASK = 0x7FFF_FFFF
# Namespace of the uuid5 conversation GUIDs. Never change it: every open case would start a new
# conversation in the customers' mail clients.
_CONVERSATION_NS = uuid.UUID("890b3a4c-616f-439d-b577-6e6d98517c06")
# RFC 6532 / Outlook topic: one line. C0 and C1 controls, DEL and the Unicode line/paragraph
# separators are what a mail library or client may treat as a line break.
_TOPIC_CTRL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
# PidTagConversationTopic has no length limit of its own; 255 keeps the header short and matches
# what Outlook writes.
MAX_TOPIC = 255


def _filetime(moment: datetime) -> int:
    """FILETIME of ``moment`` (a naive datetime counts as UTC); 0 for anything before 1601."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    d = moment - _FILETIME_EPOCH
    return max(0, (d.days * 86_400 + d.seconds) * 10_000_000 + d.microseconds * 10)


def _from_filetime(ticks: int) -> datetime:
    return _FILETIME_EPOCH + timedelta(microseconds=ticks // 10)


def _ticks(ticks: int) -> timedelta:
    return timedelta(microseconds=ticks // 10)


def _decode(value: str | None) -> bytes | None:
    """The bytes of a well-formed index (header block plus whole response levels, within the cap)."""
    if not value or not isinstance(value, str):
        return None
    # A folded header value carries whitespace; base64 itself has none.
    text = "".join(value.split())
    if len(text) > _MAX_B64:
        return None
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:  # binascii.Error (bad alphabet or padding) and non-ASCII text
        return None
    if len(raw) < HEADER_LEN or len(raw) > MAX_LEN or (len(raw) - HEADER_LEN) % CHILD_LEN:
        return None
    if raw[0] != _RESERVED:
        return None
    return raw


def conversation_guid(case_number: str, created_at: datetime) -> uuid.UUID:
    """The GUID of a case's conversation: uuid5 of the case number and the header's 40 time bits.

    The time bits are part of the name so that two installations that both have a case ``C0000017``
    do not merge their conversations in the mailbox of a customer who writes to both (Exchange may
    key conversations on this GUID, MS-OXOMSG 2.2.1.4); they are the same bits the header block
    carries, so the GUID is as stable as the header itself.
    """
    high = _filetime(created_at) >> _HEADER_SHIFT
    return uuid.uuid5(_CONVERSATION_NS, f"{case_number.strip().upper()}/{high:010x}")


def thread_index_root(case_number: str, created_at: datetime) -> str:
    """The ``Thread-Index`` of a case's first mail: the 22-byte header block, base64-encoded.

    Args:
        case_number: the case, e.g. ``C1000009`` (upper or lower case).
        created_at: when the case was created (aware; naive counts as UTC).

    Returns:
        30 base64 characters; the same for every call with the same case and creation time.
    """
    high = _filetime(created_at) >> _HEADER_SHIFT
    # MS-OXOMSG 2.2.1.3: the five time bytes are big-endian; the GUID's Data1..Data3 are big-endian
    # too, which is RFC 4122 byte order (UUID.bytes), not the little-endian in-memory GUID layout.
    block = (
        bytes([_RESERVED])
        + (high & 0xFF_FFFF_FFFF).to_bytes(5, "big")
        + conversation_guid(case_number, created_at).bytes
    )
    return base64.b64encode(block).decode("ascii")


def _child_block(header_ticks: int, now: datetime, random_byte: int) -> bytes:
    # MS-OXOMSG 2.2.1.3: the difference between now and the time in the header block. (Third-party
    # decoders report that Microsoft's own code chains each level to the one before; the order of
    # replies comes out the same either way, only a decoded absolute time would differ.) A clock
    # behind the header (skew between hosts) gives a difference of zero, never a negative one.
    delta = max(0, _filetime(now) - header_ticks)
    if delta < _FINE_LIMIT:
        code, stored = 0, delta >> _FINE_SHIFT
    else:
        code, stored = 1, min(delta >> _COARSE_SHIFT, _DELTA_MASK)
    value = (code << 39) | ((stored & _DELTA_MASK) << 8) | (random_byte & 0xFF)
    return value.to_bytes(CHILD_LEN, "big")


def thread_index_reply(
    parent: str | None,
    now: datetime,
    *,
    fallback_root: str,
    random_byte: int | None = None,
) -> str:
    """The ``Thread-Index`` of a reply: the parent's index plus one 5-byte response level.

    Never raises. When ``parent`` is missing or malformed (not base64, a length that is not
    22 + 5k bytes, a reserved byte other than 0x01, or already :data:`MAX_CHILD_BLOCKS` levels deep),
    the response level is appended to ``fallback_root`` instead, which keeps the mail in the case's
    conversation.

    Args:
        parent: the ``Thread-Index`` of the mail answered, as received or as we sent it.
        now: when the reply is made (aware; naive counts as UTC).
        fallback_root: the case's root index (:func:`thread_index_root`).
        random_byte: the response level's Random field (MS-OXOMSG 2.2.1.3); a random byte by default,
            fixed by tests.

    Returns:
        The new index, base64-encoded. ``fallback_root`` unchanged if even it is malformed.
    """
    rand = secrets.randbits(8) if random_byte is None else random_byte
    base = _decode(parent)
    if base is None or len(base) > MAX_LEN - CHILD_LEN:
        base = _decode(fallback_root)
        if base is None or len(base) > MAX_LEN - CHILD_LEN:
            return fallback_root
    header_ticks = int.from_bytes(base[1:6], "big") << _HEADER_SHIFT
    return base64.b64encode(base + _child_block(header_ticks, now, rand)).decode("ascii")


def thread_topic(subject: str) -> str:
    """The ``Thread-Topic`` value for a conversation topic: one line, no controls, at most 255 characters.

    The caller has already removed reply/forward prefixes and the case tag; this only makes the text
    safe for a header (runs of controls and whitespace become one space).
    """
    text = _TOPIC_CTRL_RE.sub(" ", subject or "")
    return " ".join(text.split())[:MAX_TOPIC].rstrip()


def parse_thread_index(value: str) -> tuple[datetime, uuid.UUID, list[timedelta]] | None:
    """Decode a ``Thread-Index`` (for tests and diagnostics).

    Returns:
        The header block's time (UTC, truncated to its 40 bits, i.e. to about 1.7 s), the conversation
        GUID, and each response level's time difference as stored (relative to the header time,
        MS-OXOMSG 2.2.1.3; resolution 26.2 ms or 0.84 s). None when the value is malformed.
    """
    raw = _decode(value)
    if raw is None:
        return None
    header_time = _from_filetime(int.from_bytes(raw[1:6], "big") << _HEADER_SHIFT)
    guid = uuid.UUID(bytes=raw[6:HEADER_LEN])
    deltas = []
    for off in range(HEADER_LEN, len(raw), CHILD_LEN):
        block = int.from_bytes(raw[off : off + CHILD_LEN], "big")
        stored = (block >> 8) & _DELTA_MASK
        shift = _COARSE_SHIFT if block >> 39 else _FINE_SHIFT
        deltas.append(_ticks(stored << shift))
    return header_time, guid, deltas
