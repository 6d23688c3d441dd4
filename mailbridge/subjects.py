"""Subjects as mail clients mangle them: reply and forward prefixes and mail gateways' tags.

``SubjectNormalizer`` reduces a subject to its topic by removing the stack of reply and forward
prefixes mail clients put in front of it (``AW: WG: Re[2]: …`` in many languages) and the tags mail
gateways add (``[EXT]``, ``[SPAM]``); ``topic`` also removes our own case tag. Both sides use it:
ingest to recognise a conversation, outbound to write the subject of a mail it answers. Pure and
linear in time: subjects come from strangers, so no input may make a regular expression backtrack.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

# Reply and forward prefixes of mail clients, by the language of the client. Sources: the table
# "Abbreviations in other languages" of Wikipedia's "List of email subject abbreviations", and the
# reply/forward sets of Stalwart's mail-parser (src/parsers/fields/thread.rs), which follow it. Added
# from client practice, not in either source: "Antwort" and "Antwoord" (the spelled-out German and
# Dutch words), "Réf" (French REF with its accent), "ATS" (Lithuanian), "תגובה" (Hebrew), "答复"/"答覆"
# (Chinese), "Отв", "Ответ" and "Пересл" (Russian clients), "返信" and "転送" (Japanese). A prefix only
# counts with its colon, so a word such as "Reparatur" or "Rechnung" is never one.
DEFAULT_REPLY_PREFIXES: tuple[str, ...] = (
    # English (and the default of most clients in every language)
    "Re",
    "Fw",
    "Fwd",
    # German
    "AW",
    "Antwort",
    "WG",
    # Dutch
    "Antw",
    "Antwoord",
    "Doorst",
    # Danish, Norwegian, Swedish, Icelandic, Finnish
    "SV",
    "VS",
    "VB",
    "FS",
    "VL",
    # French
    "TR",
    "REF",
    "Réf",
    # Italian: "R:" and "RIF:" reply, "I:" (inoltro) forwards
    "R",
    "RIF",
    "I",
    # Spanish and Portuguese
    "RV",
    "RES",
    "ENC",
    # Polish (and Czech "Odp")
    "Odp",
    "PD",
    # Turkish
    "YNT",
    "İLT",
    # Hungarian
    "VÁ",
    "Továbbítás",
    # Lithuanian, Indonesian, Welsh
    "ATS",
    "BLS",
    "TRS",
    "ATB",
    "YML",
    # Greek
    "ΑΠ",
    "ΣΧΕΤ",
    "ΠΡΘ",
    # Russian
    "Отв",
    "Ответ",
    "Пересл",
    # Hebrew
    "השב",
    "תגובה",
    "הועבר",
    # Arabic
    "رد",
    "إعادة توجيه",
    # Chinese (simplified, traditional), Japanese
    "回复",
    "答复",
    "转发",
    "回覆",
    "答覆",
    "轉寄",
    "返信",
    "転送",
)

# The forward prefixes among them ("WG: Drucker" was forwarded, "AW: Drucker" answered): a mail whose
# quoted original follows an Outlook "-----Ursprüngliche Nachricht-----" is a forward only under one.
FORWARD_PREFIXES: tuple[str, ...] = (
    "Fw",
    "Fwd",
    "WG",
    "Doorst",
    "VS",
    "VB",
    "FS",
    "VL",
    "TR",
    "I",
    "RV",
    "ENC",
    "PD",
    "İLT",
    "Továbbítás",
    "TRS",
    "YML",
    "ΠΡΘ",
    "Пересл",
    "הועבר",
    "إعادة توجيه",
    "转发",
    "轉寄",
    "転送",
)
_FORWARD_RE = re.compile(
    r"\s{0,8}(?:\[[^\]]{0,40}\]\s{0,8})?(?:" + "|".join(re.escape(p) for p in FORWARD_PREFIXES) + r")\s{0,3}[:：]",
    re.IGNORECASE,
)


def is_forward_subject(subject: str) -> bool:
    """Whether ``subject`` starts with a forward prefix (a gateway tag such as "[EXT]" before it allowed)."""
    return _FORWARD_RE.match(subject or "") is not None


# Tags mail gateways and spam filters put in front of a subject. Compared by their letters only, case
# folded, so "[EXT]", "[ext]", "[*** SPAM ***]" and "[Externe E-Mail]" need one entry each at most. A
# tag with anything else in it (a list name, another system's ticket id, our own case number) stays.
DEFAULT_GATEWAY_TAGS: tuple[str, ...] = (
    "EXT",
    "EXTERN",
    "EXTERNE",
    "EXTERNAL",
    "EXT SENDER",
    "EXTERNAL SENDER",
    "EXTERNAL EMAIL",
    "EXTERNAL MAIL",
    "EXTERNE E-MAIL",
    "EXTERNE MAIL",
    "EXTERN E-MAIL",
    "CAUTION",
    "SUSPICIOUS",
    "SPAM",
    "POSSIBLE SPAM",
    "SUSPECTED SPAM",
    "SPAM VERDACHT",
    "SPAMVERDACHT",
    "BULK",
    "NEWSLETTER",
    "WERBUNG",
)

# Longest word of a prefix ("Továbbítás" has 10 letters): bounds the work of one failed attempt.
MAX_PREFIX_WORD_CHARS = 30
# Longest gateway tag looked at, brackets excluded: bounds the work per tag.
MAX_TAG_CHARS = 40
# One prefix: one or two words (Arabic "إعادة توجيه" has two), an optional counter ("Re[2]:", "Re(3):",
# "RE^2:") and a colon, ASCII or full-width. Every quantifier is bounded and the input has its
# whitespace collapsed to single spaces, so one attempt costs a constant amount of work.
_WORD = rf"[^\s:：\[\]()^0-9]{{1,{MAX_PREFIX_WORD_CHARS}}}"
_PREFIX_RE = re.compile(
    rf"(?P<word>{_WORD}(?: {_WORD})?) ?(?:\[ ?[0-9]{{1,6}} ?\]|\( ?[0-9]{{1,6}} ?\)|\^ ?[0-9]{{1,6}})? ?[:：]"
)
_PREFIX_SHAPE_RE = re.compile(rf"{_WORD}(?: {_WORD})?")


def _fold(word: str) -> str:
    """Compare prefixes case- and width-insensitively, with Turkish dotted and dotless i as plain i.

    NFKC makes full-width "ＲＥ" plain "RE"; casefold turns "İ" into "i" plus a combining dot, which is
    dropped, and the dotless "ı" is mapped, so "İLT", "ILT" and "ilt" are the same prefix.
    """
    return unicodedata.normalize("NFKC", word).casefold().replace("\u0307", "").replace("ı", "i")


def _fold_tag(tag: str) -> str:
    """A gateway tag by its letters only: "*** SPAM ***", "Spam" and "SPAM" are one tag."""
    return "".join(ch for ch in _fold(tag) if ch.isalpha())


def _collapse(text: str) -> str:
    """Every run of whitespace (tabs, folded header lines, no-break spaces) as one space, trimmed."""
    return " ".join(text.split())


def _bracket_pairs(text: str) -> dict[int, int]:
    """The position of the matching ``]`` for each ``[`` that has one, found in one pass."""
    pairs: dict[int, int] = {}
    stack: list[int] = []
    for pos, ch in enumerate(text):
        if ch == "[":
            stack.append(pos)
        elif ch == "]" and stack:
            pairs[stack.pop()] = pos
    return pairs


class SubjectNormalizer:
    """Removes reply/forward prefixes and gateway tags from the front of a subject.

    What is removed, repeatedly and in any order, from the start of the subject:

    - a prefix from ``prefixes``, case-insensitive, optionally with a counter (``Re[2]:``, ``Re(3):``,
      ``RE^2:``), always with a colon (``:`` or ``：``), with optional spaces around both;
    - a gateway tag from ``tags`` in square brackets (``[EXT]``, ``[SPAM]``), when more text follows;
    - square brackets around the whole rest of the subject when the first thing inside them is a prefix
      (``[Fwd: Drucker]``, the forward style of old Netscape and Mozilla clients, RFC 5256's
      ``subj-fwd``). A bracket that does not wrap the whole rest (``[Fwd: a] b``) stays.

    Anything else ends the run: an unknown word before a colon, a bracket with other content (a case
    tag, a list name, another system's ticket id: those may matter to a person), or text. Whitespace
    is collapsed to single spaces.
    """

    def __init__(self, prefixes: Iterable[str] = DEFAULT_REPLY_PREFIXES, *, tags: Iterable[str] = DEFAULT_GATEWAY_TAGS):
        """Build a normalizer.

        Args:
            prefixes: reply and forward prefixes, without or with their colon ("AW" or "AW:").
            tags: gateway tags, without or with their brackets ("EXT" or "[EXT]").

        Raises:
            ValueError: a prefix is empty, contains a digit or bracket, or has more than two words:
                such a prefix could never match, so the configuration is wrong.
        """
        folded: set[str] = set()
        for prefix in prefixes:
            text = _collapse(prefix).rstrip(":：").strip()
            if not _PREFIX_SHAPE_RE.fullmatch(text):
                raise ValueError(f"reply prefix {prefix!r} is not one or two words of letters")
            folded.add(_fold(text))
        self._prefixes = frozenset(folded)
        self._tags = frozenset(t for t in (_fold_tag(tag) for tag in tags) if t)

    def strip_prefixes(self, subject: str) -> str:
        """Return ``subject`` without its leading reply/forward prefixes and gateway tags.

        Args:
            subject: a decoded subject; anything that is not a string counts as empty.

        Returns:
            The rest of the subject with whitespace collapsed; "" when there is nothing else.
        """
        if not isinstance(subject, str):
            return ""
        text = _collapse(subject)
        start, end = self._strip_span(text, 0, len(text), _bracket_pairs(text))
        return text[start:end].strip()

    def topic(self, subject: str, case_tag_pattern: re.Pattern[str] | None = None) -> str:
        """Return the topic: ``strip_prefixes``, then also case tags at the start and the end.

        Prefixes behind a leading case tag are removed too: ``AW: [C1000009] AW: Drucker`` is
        ``Drucker``.

        Args:
            subject: a decoded subject; anything that is not a string counts as empty.
            case_tag_pattern: matches one case tag (e.g. ``[C1000009]``); None: no case tags removed.

        Returns:
            The topic with whitespace collapsed; "" when the subject has nothing else.
        """
        if not isinstance(subject, str):
            return ""
        text = _collapse(subject)
        pairs = _bracket_pairs(text)
        start, end = self._strip_span(text, 0, len(text), pairs)
        if case_tag_pattern is None:
            return text[start:end].strip()
        while start < end:
            m = case_tag_pattern.match(text, start, end)
            if m is None or m.end() == start:
                break
            start, end = self._strip_span(text, m.end(), end, pairs)
        # One pass finds every tag; peeling them off the end is then linear however many there are.
        tags = [m for m in case_tag_pattern.finditer(text, start, end) if m.end() > m.start()]
        for m in reversed(tags):
            while end > start and text[end - 1] == " ":
                end -= 1
            if m.end() < end:
                break
            end = m.start()
        return text[start:end].strip()

    def _strip_span(self, text: str, start: int, end: int, pairs: dict[int, int]) -> tuple[int, int]:
        """Advance ``start`` (and pull in ``end`` for a wrapping bracket) past prefixes and tags."""
        while start < end:
            if text[start] == " ":
                start += 1
                continue
            m = _PREFIX_RE.match(text, start, end)
            if m is not None and _fold(m.group("word")) in self._prefixes:
                start = m.end()
                continue
            if text[start] != "[" or start not in pairs:
                break
            close = pairs[start]
            last = end - 1
            while last > start and text[last] == " ":
                last -= 1
            if close == last:
                inner = _PREFIX_RE.match(text, start + 1, close)
                if inner is not None and _fold(inner.group("word")) in self._prefixes:
                    start, end = start + 1, close
                    continue
            tag_len = close - start - 1
            if 0 < tag_len <= MAX_TAG_CHARS and close < last and _fold_tag(text[start + 1 : close]) in self._tags:
                start = close + 1
                continue
            break
        return start, end


def may_carry_tag(subject: str, case_number: str) -> bool:
    """False when ``subject`` cannot hold the tag of ``case_number`` (its digits are not in it): the
    caller then skips :func:`case_tag_pattern`, whose compile is most of the cost of a new case's
    topic (every case number is a new pattern, never in ``re``'s cache)."""
    m = re.fullmatch(r"\D*(\d+)", case_number.strip())
    needle = m.group(1) if m else case_number.strip().lower()
    return needle in (subject if m else subject.lower())


def case_tag_pattern(case_number: str) -> re.Pattern[str]:
    """The tag of one case as subjects carry it (``[C1000002]``, ``[c-1000002]``, ``[ C1000002 ]``).

    For the topic of a case's own mails: only *its* tag is ours to remove. A number the customer
    typed ("Frage zu C1000005", a mistyped or another system's number) is part of the topic.
    """
    m = re.fullmatch(r"(\D*)(\d+)", case_number.strip())
    prefix, digits = (m.group(1), m.group(2)) if m else (case_number.strip(), "")
    return re.compile(rf"\[ ?{re.escape(prefix)}[ -]?{re.escape(digits)} ?\]", re.IGNORECASE | re.ASCII)
