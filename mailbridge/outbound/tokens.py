"""Signed Message-IDs for agent notifications, and their verification.

A notification's Message-ID carries its case number, a nonce and an HMAC over both. An agent's reply
names that id in In-Reply-To/References (RFC 5322 3.6.4); only agents receive notifications, so a valid
MAC proves that the reply answers a real notification of that case, whatever its From header says.
The id is RFC 5322 dot-atom-text (``mbn.C1000009.<nonce>.<mac>@domain``) so no MTA needs to quote or
rewrite it. Keys rotate: the first secret signs, every secret verifies. No I/O.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets as _secrets
from collections.abc import Iterable, Sequence

# What the MAC covers starts with this label, so a MAC made with the same key for another purpose can
# never be replayed as a notification id (domain separation).
_PURPOSE = b"mailbridge/notification-message-id/v1"
# Local part prefix of our notification ids.
PREFIX = "mbn"
# 128 of HMAC-SHA256's 256 bits (NIST SP 800-107 allows truncated HMACs; 128 bits leave no room for
# guessing), written as 26 lower-case base32 characters without padding.
_MAC_BYTES = 16
# 8 random bytes as hex: two notifications of one case never share an id.
_NONCE_BYTES = 8
# A case number and a nonce are single dot-atom parts: letters and digits (nonce also "_" and "-").
_CASE_RE = re.compile(r"[A-Za-z0-9]{1,32}", re.ASCII)
_NONCE_RE = re.compile(r"[A-Za-z0-9_-]{1,64}", re.ASCII)
# RFC 5322 3.6.4: id-right as dot-atom-text (3.2.3), as new_message_id writes it.
_DOMAIN_RE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*", re.ASCII)
_ID_RE = re.compile(
    rf"{PREFIX}\.([A-Za-z0-9]{{1,32}})\.([A-Za-z0-9_-]{{1,64}})\.([A-Za-z2-7]{{26}})@[^@\s<>]+",
    re.ASCII | re.IGNORECASE,
)
# Anything longer than this is not one of ours; checked before any regular expression runs.
_MAX_ID = 512

Secrets = bytes | Sequence[bytes]


def _key(value: object) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    return b""  # not a key (bytes(5) would be five zero bytes, a key anyone knows)


def _keys(secret: Secrets) -> list[bytes]:
    """The secrets as a list, first one first; empty keys are dropped (an empty key proves nothing)."""
    single = isinstance(secret, bytes | bytearray | memoryview | str)
    items = [_key(secret)] if single else [_key(s) for s in secret]
    return [k for k in items if k]


def _mac(key: bytes, case_number: str, nonce: str) -> str:
    # NUL separators: no two (case, nonce) pairs give the same message.
    msg = b"\x00".join([_PURPOSE, case_number.encode("ascii"), nonce.encode("ascii")])
    digest = hmac.new(key, msg, hashlib.sha256).digest()[:_MAC_BYTES]
    return base64.b32encode(digest).decode("ascii").rstrip("=").lower()


def notification_message_id(case_number: str, domain: str, secret: Secrets, *, nonce: str | None = None) -> str:
    """A fresh Message-ID for a notification about ``case_number``, without angle brackets.

    Args:
        case_number: the case, e.g. ``C1000009``; written upper-case.
        domain: the right-hand side, our own mail domain.
        secret: the signing key, or a sequence of keys of which the first signs.
        nonce: a fixed nonce (tests); by default 16 random hex digits.

    Returns:
        ``mbn.<case>.<nonce>.<mac>@<domain>``, about 57 characters plus the domain.

    Raises:
        ValueError: a case number, nonce or domain that cannot be part of a dot-atom Message-ID, or no
            non-empty secret.
    """
    case = case_number.strip().upper()
    if not _CASE_RE.fullmatch(case):
        raise ValueError(f"case number {case_number!r} cannot be part of a Message-ID")
    nonce = _secrets.token_hex(_NONCE_BYTES) if nonce is None else nonce
    if not _NONCE_RE.fullmatch(nonce):
        raise ValueError(f"nonce {nonce!r} cannot be part of a Message-ID")
    if not _DOMAIN_RE.fullmatch(domain):
        raise ValueError(f"domain {domain!r} cannot be part of a Message-ID")
    keys = _keys(secret)
    if not keys:
        raise ValueError("no secret to sign the notification Message-ID with")
    return f"{PREFIX}.{case}.{nonce}.{_mac(keys[0], case, nonce)}@{domain}"


def case_for_notification_id(message_id: str, secret: Secrets) -> str | None:
    """The case number a notification Message-ID was signed for, or None.

    Accepts the id with or without angle brackets and surrounding blanks; the case number comes back
    upper-case. None for anything that is not one of ours, carries a wrong MAC for every secret, or is
    malformed; never raises.
    """
    if not isinstance(message_id, str) or len(message_id) > _MAX_ID:
        return None
    text = message_id.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip()
    m = _ID_RE.fullmatch(text)
    if not m:
        return None
    case, nonce, mac = m.group(1).upper(), m.group(2), m.group(3).lower()
    try:
        keys = _keys(secret)
    except (TypeError, ValueError):
        return None
    # Every key is tried (no early exit on the first mismatch); compare_digest keeps each comparison
    # constant-time, so the time taken says nothing about how much of a forged MAC was right.
    ok = False
    for key in keys:
        ok |= hmac.compare_digest(_mac(key, case, nonce), mac)
    return case if ok else None


def verified_cases(message_ids: Iterable[str], secret: Secrets) -> set[str]:
    """The case numbers of all validly signed notification ids among ``message_ids``."""
    found: set[str] = set()
    for mid in dict.fromkeys(message_ids):
        case = case_for_notification_id(mid, secret)
        if case is not None:
            found.add(case)
    return found
