"""Language detection among the configured languages (ingest/language.py)."""

from __future__ import annotations

import pytest

from mailbridge.ingest.language import DETECTION_SAMPLE_CHARS, MIN_LETTERS_FOR_DETECTION, LanguageDetector


@pytest.fixture(scope="module")
def detector():
    return LanguageDetector(["de", "en"])


@pytest.mark.parametrize(
    ("subject", "text", "expected"),
    [
        ("Maschine steht", "", "de"),
        ("Drucker", "geht nicht", "de"),
        (
            "Lizenzserver startet nicht",
            "Guten Tag,\n\nseit dem Update startet unser Lizenzserver nicht mehr. Können Sie uns helfen?\n\n"
            "Mit freundlichen Grüßen\nJürgen Müller",
            "de",
        ),
        ("Printer broken", "it does not print anymore", "en"),
        (
            "License server does not start",
            "Hello,\n\nsince the update our license server no longer starts. Could you please help us?\n\n"
            "Kind regards\nJane Doe",
            "en",
        ),
        ("Re: Lizenzserver", "The license server is running again, thank you very much for your help!", "en"),
    ],
)
def test_language_detected_short_and_long(detector, subject, text, expected):
    """Short and long German and English mails are recognised among the configured languages."""
    assert (detector.guess(subject, text) or "xx") == expected


@pytest.mark.parametrize(
    ("subject", "text"),
    [
        ("", ""),
        ("Hallo", ""),
        ("Re: [C1234566]", "ok"),
        ("", "12345 67890 !!!! .... 2026-11-20"),
        ("a" * (MIN_LETTERS_FOR_DETECTION - 1), ""),
    ],
)
def test_too_short_gives_default(detector, subject, text):
    """Below the minimum number of letters there is no guess (the queue's language is used)."""
    assert (detector.guess(subject, text) or "fr") == "fr"


def test_minimum_letters_boundary(detector):
    """Exactly the minimum number of letters is enough to try detection."""
    german = "Maschine steht"
    assert sum(c.isalpha() for c in german) >= MIN_LETTERS_FOR_DETECTION
    short = "Masch steht"
    assert sum(c.isalpha() for c in short) < MIN_LETTERS_FOR_DETECTION
    assert (detector.guess(short, "") or "xx") == "xx"
    assert (detector.guess(german, "") or "xx") == "de"


def test_only_the_opening_is_read(detector):
    """The opening (first DETECTION_SAMPLE_CHARS) decides the language, not a longer tail in another one."""
    opening = "Vielen Dank, jetzt funktioniert der Export wieder einwandfrei. Schönes Wochenende!\n" * 30
    assert len(opening) > DETECTION_SAMPLE_CHARS
    tail = "> The export failed because the service account had no write permission on the share.\n" * 300
    assert (detector.guess("Re: Export", opening + tail) or "xx") == "de"
    assert (detector.guess("Re: Export", tail + opening) or "xx") == "en"


def test_single_language_always_gives_default():
    """With one configured language there is nothing to choose: no guess (the queue's language is used)."""
    only_de = LanguageDetector(["de"])
    assert only_de.guess("License server", "The license server does not start after the update.") is None
