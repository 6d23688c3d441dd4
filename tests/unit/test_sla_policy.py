"""Severity detection and targets: the words of a scheme pick a level; targets fall due on the calendar."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from mailbridge.sla.calendar import BusinessCalendar
from mailbridge.sla.policy import SeverityLevel, SeverityScheme, Target, TargetKind, due

BERLIN = ZoneInfo("Europe/Berlin")
CAL = BusinessCalendar.build(
    timezone="Europe/Berlin",
    hours={d: ["08:00-17:00"] for d in ("mon", "tue", "wed", "thu", "fri")},
    country="DE",
    subdivision="NW",
)
# Seed 002's shape: class 1 "betriebsverhindernd", followed up daily; class 4 the default.
SCHEME = SeverityScheme(
    levels=(
        SeverityLevel(
            "1",
            "Fehlerklasse 1",
            "Severity 1",
            words=(
                "Fehlerklasse 1",
                "betriebsverhindernd",
                "Systemstillstand",
                "Äußerst kritisch",
                "production down",
                "P1",
            ),
            first_response=Target(TargetKind.BUSINESS_HOURS, 4),
            follow_up=Target(TargetKind.BUSINESS_DAYS, 1),
        ),
        SeverityLevel("2", "Fehlerklasse 2", "Severity 2", words=("Fehlerklasse 2", "kritisch", "P2")),
        SeverityLevel("4", "Fehlerklasse 4", "Severity 4", words=("nicht kritisch", "Frage")),
    ),
    default="4",
)


@pytest.mark.parametrize(
    ("subject", "text", "level", "words"),
    [
        ("Systemstillstand Linie 3", "", "1", "systemstillstand"),
        ("Frage", "ÄUSSERST KRITISCH: nichts geht", "1", "äusserst kritisch"),
        ("Anfrage", "Das ist nicht kritisch, nur eine Frage.", "4", "nicht kritisch"),
        ("Fehlerklasse 1", "laut Vertrag, aber nicht kritisch", "1", "fehlerklasse 1"),
        ("Kritisch", "", "2", "kritisch"),
        ("P10 Ticket", "unkritisch", "4", None),  # P1 inside P10 and kritisch inside unkritisch do not count
        ("Production\n down", "", "1", "production\n down"),
        ("Hallo", "bitte um Rückruf", "4", None),
    ],
)
def test_detect_picks_the_most_severe_level_whose_words_occur(subject, text, level, words):
    """Whole words, any case (ß = ss), phrases hide the words inside them, the most severe level wins;
    no word gives the default."""
    lv, found = SCHEME.detect(subject, text)
    assert lv.key == level and found == words


def test_targets_fall_due_on_the_calendar():
    """4 business hours from Friday 15:00 is Monday 10:00 (2 h on Friday, 2 h on Monday); 1 business
    day from Friday 15:00 is Monday 15:00; 168 calendar hours is the same local time a week later."""
    fri = datetime(2026, 11, 20, 15, 0, tzinfo=BERLIN)
    assert due(CAL, fri, Target(TargetKind.BUSINESS_HOURS, 4)) == datetime(2026, 11, 23, 10, tzinfo=BERLIN)
    assert due(CAL, fri, Target(TargetKind.BUSINESS_DAYS, 1)) == datetime(2026, 11, 23, 15, tzinfo=BERLIN)
    assert due(CAL, fri, Target(TargetKind.CALENDAR_HOURS, 168)) == datetime(2026, 11, 27, 15, tzinfo=BERLIN)
    assert Target(TargetKind.BUSINESS_DAYS, 2).describe("de") == "2 Geschäftstage"


def test_scheme_and_target_validation():
    """A scheme needs unique levels and a default among them; targets are not negative, days whole."""
    with pytest.raises(ValueError, match="default"):
        SeverityScheme(levels=(SeverityLevel("1", "a", "a"),), default="2")
    with pytest.raises(ValueError, match="duplicate"):
        SeverityScheme(levels=(SeverityLevel("1", "a", "a"), SeverityLevel("1", "b", "b")), default="1")
    with pytest.raises(ValueError, match="negative"):
        Target(TargetKind.BUSINESS_HOURS, -1)
    with pytest.raises(ValueError, match="whole"):
        Target(TargetKind.BUSINESS_DAYS, 1.5)
