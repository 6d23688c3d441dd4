"""Classify predicates: RFC 3834 Auto-Submitted, mail from our own address, language detection."""

from __future__ import annotations

import pytest

from mailbridge.ingest.classify import (
    DETECTION_SAMPLE_CHARS,
    MIN_LETTERS_FOR_DETECTION,
    LanguageDetector,
    auto_submitted,
    from_own_address,
)
from mailbridge.ingest.parser import parse_mail
from tests.support import SUPPORT_ADDRESS, make_mail

OWN = frozenset({SUPPORT_ADDRESS, "hotline@vendor.example"})


def _mail(**kw):
    return parse_mail(make_mail(**kw))


@pytest.mark.parametrize(
    ("value", "hit"),
    [
        ("no", False),
        ("No", False),
        ("NO", False),
        (" no ", False),
        ("no; reason=manual", False),
        ("auto-replied", True),
        ("Auto-Replied", True),
        ("auto-generated", True),
        ("auto-generated; foo=bar", True),
        ("auto-notified", True),  # an extension value (RFC 3834 5.1) is still automatic
    ],
)
def test_auto_submitted_values(value, hit):
    """Any Auto-Submitted value other than ``no`` (case-insensitive, parameters ignored) is automatic."""
    verdict = auto_submitted(_mail(headers={"Auto-Submitted": value}))
    assert verdict.hit is hit
    if hit:
        assert value.split(";")[0].strip().lower() in verdict.reason


def test_auto_submitted_absent():
    """Without the header a mail is not machine-made by this rule."""
    verdict = auto_submitted(_mail())
    assert verdict.hit is False
    assert verdict.reason == ""


def test_auto_submitted_no_with_comment():
    """``no`` followed by an RFC 5322 comment is still ``no``."""
    assert auto_submitted(_mail(headers={"Auto-Submitted": "no (sent by a person)"})).hit is False


@pytest.mark.parametrize(
    ("sender", "hit"),
    [
        (("Vendor Support", SUPPORT_ADDRESS), True),
        (("Vendor Support", "Support@Vendor.Example"), True),  # parser lower-cases, so case does not matter
        (("", "hotline@vendor.example"), True),
        (("Jürgen Müller", "juergen.mueller@kunde.example"), False),
        (("Spoof", "support@vendor.example.evil.example"), False),
        (("Spoof", "xsupport@vendor.example"), False),
    ],
)
def test_from_own_address(sender, hit):
    """Only an exact (case-insensitive) match of From against our addresses is a loop."""
    verdict = from_own_address(_mail(sender=sender), OWN)
    assert verdict.hit is hit
    if hit:
        assert sender[1].lower() in verdict.reason


def test_from_own_address_without_from():
    """A mail without a usable From is not ours."""
    raw = b"To: support@vendor.example\r\nSubject: x\r\n\r\nbody\r\n"
    assert from_own_address(parse_mail(raw), OWN).hit is False


def test_own_address_only_in_display_name_is_not_ours():
    """Our address in the display name of a foreign sender does not make the mail ours."""
    raw = (
        b'From: "support@vendor.example" <phish@evil.example>\r\nTo: support@vendor.example\r\nSubject: x\r\n\r\nb\r\n'
    )
    assert from_own_address(parse_mail(raw), OWN).hit is False


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
    assert detector.detect(subject, text, default="xx") == expected


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
    """Below the minimum number of letters the default (the queue's language) is returned."""
    assert detector.detect(subject, text, default="fr") == "fr"


def test_minimum_letters_boundary(detector):
    """Exactly the minimum number of letters is enough to try detection."""
    german = "Maschine steht"
    assert sum(c.isalpha() for c in german) >= MIN_LETTERS_FOR_DETECTION
    short = "Masch steht"
    assert sum(c.isalpha() for c in short) < MIN_LETTERS_FOR_DETECTION
    assert detector.detect(short, "", default="xx") == "xx"
    assert detector.detect(german, "", default="xx") == "de"


def test_only_the_opening_is_read(detector):
    """The opening (first DETECTION_SAMPLE_CHARS) decides the language, not a longer tail in another one."""
    opening = "Vielen Dank, jetzt funktioniert der Export wieder einwandfrei. Schönes Wochenende!\n" * 30
    assert len(opening) > DETECTION_SAMPLE_CHARS
    tail = "> The export failed because the service account had no write permission on the share.\n" * 300
    assert detector.detect("Re: Export", opening + tail, default="xx") == "de"
    assert detector.detect("Re: Export", tail + opening, default="xx") == "en"


def test_single_language_always_gives_default():
    """With one configured language there is nothing to choose: the default is returned."""
    only_de = LanguageDetector(["de"])
    assert only_de.detect("License server", "The license server does not start after the update.", "de") == "de"
    assert only_de.detect("License server", "The license server does not start after the update.", "en") == "en"
