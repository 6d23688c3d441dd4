"""Named predicates over a parsed mail: auto-submitted, from our own address, language.

Each predicate answers one question and says why; the loop-and-noise issue adds bounces, list
mail and out-of-office replies here as further predicates of the same shape.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lingua import IsoCode639_1, LanguageDetectorBuilder

from mailbridge.domain import ParsedMail

# Below this many letters a language guess is noise; the queue's language is used instead.
MIN_LETTERS_FOR_DETECTION = 12
# An RFC 5322 comment (not nested; nested comments in this header do not occur in practice).
_COMMENT_RE = re.compile(r"\([^()]*\)")
# How much of the text the detector reads: the opening of a mail decides its language.
DETECTION_SAMPLE_CHARS = 2000


@dataclass(frozen=True)
class Verdict:
    """A predicate's answer and the evidence for it."""

    hit: bool
    reason: str = ""


def auto_submitted(mail: ParsedMail) -> Verdict:
    """RFC 3834 section 5: any ``Auto-Submitted`` value other than ``no`` marks a machine-made mail."""
    value = mail.header("auto-submitted")
    if value is None:
        return Verdict(False)
    # RFC 3834 5.1: the keyword may be surrounded by RFC 5322 comments, e.g. "no (sent by a person)".
    token = _COMMENT_RE.sub(" ", value).split(";", 1)[0].strip().lower()
    if token and token != "no":
        return Verdict(True, f"Auto-Submitted: {token}")
    return Verdict(False)


# Precedence values of mail that no person wrote for us (RFC 2076 3.9; RFC 3834 2 lists bulk, junk
# and list as ones not to answer).
_MACHINE_PRECEDENCE = frozenset({"bulk", "junk", "list", "auto_reply"})


def machine_made(mail: ParsedMail) -> Verdict:
    """RFC 3834 ``Auto-Submitted``, and the older markers autoresponders still use instead of it:
    ``X-Autoreply``/``X-Autorespond`` and ``Precedence: bulk/junk/list/auto_reply``."""
    auto = auto_submitted(mail)
    if auto.hit:
        return auto
    for name in ("x-autoreply", "x-autorespond"):
        value = mail.header(name)
        if value is not None and value.strip().lower() not in ("no", "false", "0"):
            return Verdict(True, f"{name}: {value.strip()[:40]}")
    precedence = (mail.header("precedence") or "").strip().lower()
    if precedence in _MACHINE_PRECEDENCE:
        return Verdict(True, f"Precedence: {precedence}")
    return Verdict(False)


def from_own_address(mail: ParsedMail, own: frozenset[str]) -> Verdict:
    """A mail whose sender is one of our support addresses is ours (a loop), never a customer's."""
    if mail.from_ and mail.from_.email in own:
        return Verdict(True, f"From is our own address {mail.from_.email}")
    return Verdict(False)


class LanguageDetector:
    """Detects the language of customer text among the configured languages only (lingua).

    Restricting the candidates is what makes short support mails reliable: "Maschine steht" cannot
    be mistaken for Dutch when only German and English are possible.
    """

    def __init__(self, languages: list[str]):
        codes = [IsoCode639_1.from_str(code) for code in languages]
        self._languages = list(languages)
        if len(codes) >= 2:
            self._detector = LanguageDetectorBuilder.from_iso_codes_639_1(*codes).build()
        else:
            self._detector = None

    def guess(self, subject: str, text: str) -> str | None:
        """The language of ``subject`` + ``text`` among the configured ones; None when unsure."""
        sample = f"{subject}\n{text}"[:DETECTION_SAMPLE_CHARS]
        if self._detector is None or sum(ch.isalpha() for ch in sample) < MIN_LETTERS_FOR_DETECTION:
            return None
        lang = self._detector.detect_language_of(sample)
        if lang is None:
            return None
        code = lang.iso_code_639_1.name.lower()
        return code if code in self._languages else None

    def detect(self, subject: str, text: str, default: str) -> str:
        """The language of ``subject`` + ``text``, or ``default`` when too short or unsure."""
        return self.guess(subject, text) or default
