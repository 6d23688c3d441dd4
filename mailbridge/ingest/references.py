"""What a subject or body says about an earlier conversation: case numbers (and, re-exported from
``mailbridge.subjects``, the reply-prefix normaliser ``SubjectNormalizer``). ``case_number_candidates``
finds every token shaped like a case number in a text, and ``near_misses`` lists the valid numbers one
typo away from one of them, for "did you mean …?". Everything here is pure and runs in linear time:
subjects and bodies come from strangers, so no input may make a regular expression backtrack.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass

from stdnum import damm

from mailbridge.domain import CaseNumberFormat

# The subject normaliser lives in mailbridge/subjects.py (outbound uses it too); the names stay
# importable from here.
from mailbridge.subjects import DEFAULT_GATEWAY_TAGS, DEFAULT_REPLY_PREFIXES, SubjectNormalizer

__all__ = [
    "DEFAULT_GATEWAY_TAGS",
    "DEFAULT_REPLY_PREFIXES",
    "Candidate",
    "SubjectNormalizer",
    "case_number_candidates",
    "near_misses",
]

# Characters allowed between a case-number prefix and its digits (at most one): space, hyphen,
# no-break space, non-breaking hyphen, en dash, narrow no-break space. Mail clients and word
# processors turn "C-1000009" and "C 1000009" into the typographic variants on their own.
CASE_NUMBER_SEPARATORS = " -\u00a0\u2011\u2013\u202f"
# A candidate glued to one of these is part of a path or query ("/cases/C1000009", "?case=C1000009")
# or of an address, not a reference someone wrote.
_JOINED_BEFORE = "/=@"

# Where an address, a Message-ID or a URL may be: each hit is widened by hand (see _masked_spans).
_ANCHOR_RE = re.compile(r"@|://|(?i:www\.)")
# The characters of an address's local part (RFC 5322 atext and the dot) and of a domain.
_LOCAL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+/=?^_`{|}~.-")
_SCHEME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+.-")
# What ends a URL or a domain: whitespace is checked separately.
_URL_END = frozenset("<>\"'")


@dataclass(frozen=True)
class Candidate:
    """A token shaped like a case number.

    Attributes:
        written: the token as it appears in the text (prefix, separator and digits, no brackets).
        number: normalised: the configured prefix and the digits (``c-1000009`` → ``C1000009``).
        valid: whether the check digit is right (the case may still not exist).
        start: the position of ``written`` in the text.
    """

    written: str
    number: str
    valid: bool
    start: int


@functools.lru_cache(maxsize=16)
def _candidate_re(prefix: str, digits: int) -> re.Pattern[str]:
    """Prefix, at most one separator, exactly ``digits`` ASCII digits; boundaries are checked by hand.

    re.ASCII: only 0-9 are digits, and IGNORECASE must not fold the Kelvin sign into "k" (see domain).
    """
    seps = re.escape(CASE_NUMBER_SEPARATORS)
    return re.compile(rf"{re.escape(prefix)}[{seps}]?(?P<digits>[0-9]{{{digits}}})", re.IGNORECASE | re.ASCII)


def _joins(ch: str) -> bool:
    """Whether ``ch`` next to a candidate makes it part of a longer token (``ABC1000009``, ``C10000091``).

    Digits of any script and ``_`` always join. Letters join too, except those of scripts written
    without spaces between words (Chinese, Japanese, Korean: East Asian wide): "关于C1000009的问题" is a
    reference in running text.
    """
    if ch == "_" or ch.isdigit():
        return True
    return ch.isalnum() and unicodedata.east_asian_width(ch) not in ("W", "F")


def _masked_spans(text: str) -> list[tuple[int, int]]:
    """Spans of e-mail addresses, Message-IDs and URLs, in order; a case number inside them is not one.

    Our own Message-IDs and reply addresses (``support+C1000009@…``) and links to the portal carry case
    numbers that nobody wrote as a reference. Each anchor (``@``, ``://``, ``www.``) is widened over the
    characters such a token can hold; anchors inside the previous span are skipped, so every character
    is looked at a bounded number of times.
    """
    spans: list[tuple[int, int]] = []
    covered = 0
    n = len(text)
    for m in _ANCHOR_RE.finditer(text):
        if m.start() < covered:
            continue
        left, right = m.start(), m.end()
        if m.group() == "@":
            while left > 0 and text[left - 1] in _LOCAL_CHARS:
                left -= 1
            while right < n and (text[right].isalnum() or text[right] in ".-"):
                right += 1
            if left == m.start() or right == m.end():
                continue  # a lone "@" ("meet @ 10"): not an address
        else:
            if m.group() == "://":
                while left > 0 and text[left - 1] in _SCHEME_CHARS:
                    left -= 1
            elif left > 0 and text[left - 1].isalnum():
                continue  # "awww." is not a host name
            while right < n and not text[right].isspace() and text[right] not in _URL_END:
                right += 1
        spans.append((left, right))
        covered = right
    return spans


def case_number_candidates(text: str, fmt: CaseNumberFormat) -> list[Candidate]:
    """Every token shaped like a case number in ``text``, in order, the first of each number only.

    Found case-insensitively in any position: ``[C1000009]``, ``Case #C1000009``, ``Fall-Nr. c-1000009``,
    ``C 1000009`` (one space, hyphen, en dash or no-break space after the prefix). Not found:

    - a token that is part of a longer run of letters, digits or ``_`` (``ABC1000009``, ``C10000091``,
      ``C1000009X``);
    - a token right after ``/``, ``=`` or ``@`` (a path, a query, a domain);
    - a token inside an e-mail address, a Message-ID (``<C1000009.x@host>``) or a URL.

    Args:
        text: a subject or a body; anything that is not a string counts as empty.
        fmt: the configured prefix and digit count.

    Returns:
        The candidates; ``valid`` tells whether the check digit is right.
    """
    if not isinstance(text, str) or not text:
        return []
    masked = _masked_spans(text)
    k = 0
    seen: set[str] = set()
    out: list[Candidate] = []
    for m in _candidate_re(fmt.prefix, fmt.digits).finditer(text):
        start, end = m.span()
        before = text[start - 1] if start > 0 else " "
        after = text[end] if end < len(text) else " "
        if _joins(before) or before in _JOINED_BEFORE or _joins(after):
            continue
        while k < len(masked) and masked[k][1] <= start:
            k += 1
        if k < len(masked) and masked[k][0] < end:
            continue
        number = f"{fmt.prefix}{m.group('digits')}"
        if number in seen:
            continue
        seen.add(number)
        out.append(Candidate(written=m.group(), number=number, valid=fmt.is_valid(number), start=start))
    return out


def near_misses(number: str, fmt: CaseNumberFormat) -> list[str]:
    """Valid case numbers one typo away: one digit changed or two adjacent digits swapped.

    The check digit counts as a digit. Damm's check digit catches every such typo, so when a valid
    number was mistyped once, it is among the near misses of the typo.

    Args:
        number: a candidate's number (valid or not); a separator and a lower-case prefix are accepted.
        fmt: the configured prefix and digit count.

    Returns:
        The different, well-formed numbers with a valid check digit, sorted; [] when ``number`` is not
        shaped like a case number.
    """
    if not isinstance(number, str):
        return []
    m = _candidate_re(fmt.prefix, fmt.digits).fullmatch(number.strip())
    if m is None:
        return []
    digits = m.group("digits")
    variants: set[str] = set()
    for i, old in enumerate(digits):
        for new in "0123456789":
            if new != old:
                variants.add(f"{digits[:i]}{new}{digits[i + 1 :]}")
    for i in range(len(digits) - 1):
        if digits[i] != digits[i + 1]:
            variants.add(f"{digits[:i]}{digits[i + 1]}{digits[i]}{digits[i + 2 :]}")
    return sorted(f"{fmt.prefix}{v}" for v in variants if damm.is_valid(v))
