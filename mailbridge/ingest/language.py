"""The language of a customer's mail, among the configured languages (lingua).

Whether a mail is automatic, a bounce or our own is decided in ``ingest/noise.py``.
"""

from __future__ import annotations

from lingua import IsoCode639_1, LanguageDetectorBuilder

from mailbridge.domain import ParsedMail

# Below this many letters a language guess is noise; the queue's language is used instead.
MIN_LETTERS_FOR_DETECTION = 12
# How much of the text the detector reads: the opening of a mail decides its language. lingua's time
# grows with the sample; on the generated corpus and the shared real-world corpus 1,000 characters
# decide as 2,000 did (tests/unit/test_language.py), at about half the cost.
DETECTION_SAMPLE_CHARS = 1000


class LanguageDetector:
    """Detects the language of customer text among the configured languages only (lingua).

    Restricting the candidates is what makes short support mails reliable: "Maschine steht" cannot
    be mistaken for Dutch when only German and English are possible.
    """

    def __init__(self, languages: list[str]):
        self._codes = [IsoCode639_1.from_str(code) for code in languages]
        self._languages = list(languages)
        if len(self._codes) >= 2:
            self._detector = LanguageDetectorBuilder.from_iso_codes_639_1(*self._codes).build()
        else:
            self._detector = None

    def preload(self) -> None:
        """Load the language models now. lingua loads them lazily, at the first detection: without
        this the first customer after a start waits seconds longer for the acknowledgement. For a
        long-running process (the service, a parse worker); a CLI command does not need it."""
        if self._detector is not None:
            self._detector = (
                LanguageDetectorBuilder.from_iso_codes_639_1(*self._codes).with_preloaded_language_models().build()
            )

    def guess_mail(self, mail: ParsedMail) -> str | None:
        """The language of a customer's mail: its subject and the opening of the words it adds (the
        quoted history below may be in another language, ours); the whole text when the parser found
        nothing new. The parse workers (``ingest/prepare.py``) and ``MatchCase`` both ask this."""
        return self.guess(mail.subject, mail.new_text or mail.text)

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
