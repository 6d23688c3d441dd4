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


def test_the_bounded_sample_decides_as_the_longer_one_did(detector, monkeypatch):
    """The test mails (real clients' replies and the parser's cases) get the same language from the
    opening of their new text (DETECTION_SAMPLE_CHARS) as from twice as much of it."""
    from pathlib import Path

    from mailbridge.ingest import language
    from mailbridge.ingest.parser import parse_mail

    data = Path(__file__).resolve().parents[1] / "data"
    mails = [parse_mail(p.read_bytes()) for p in sorted([*data.glob("replies/*.eml"), *data.glob("eml/*.eml")])]
    assert len(mails) > 50
    now = [detector.guess_mail(m) for m in mails]
    monkeypatch.setattr(language, "DETECTION_SAMPLE_CHARS", 2 * DETECTION_SAMPLE_CHARS)
    assert [detector.guess_mail(m) for m in mails] == now
    assert now.count("de") > 20 and now.count("en") > 10


def test_a_mail_is_in_the_language_of_its_new_text(detector):
    """A short German answer above a long English history is German (the history is ours)."""
    from email.message import EmailMessage

    from mailbridge.ingest.parser import parse_mail

    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "kunde@kunde.example", "support@vendor.example", "Re: Export"
    history = ["Am 19.11.2026 um 10:00 schrieb Vendor Support <support@vendor.example>:"]
    history += ["> We have checked the export service and found the account has no write permission."] * 40
    msg.set_content("Danke, das hilft leider nicht.\n\n" + "\n".join(history))
    mail = parse_mail(msg.as_bytes())
    assert mail.new_text.strip() == "Danke, das hilft leider nicht."
    assert (detector.guess(mail.subject, mail.text) or "xx") == "en"
    assert detector.guess_mail(mail) == "de"
