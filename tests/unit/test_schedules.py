"""Schedules in words become APScheduler cron fields; the latest due time at or before a moment is
found in the schedule's zone, across daylight saving time and month ends."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from mailbridge.schedules import ScheduleError, parse

BERLIN = ZoneInfo("Europe/Berlin")


def at(*args) -> datetime:
    return datetime(*args, tzinfo=BERLIN)


@pytest.mark.parametrize(
    ("text", "now", "due"),
    [
        ("mon 08:00", at(2026, 11, 23, 8, 0), at(2026, 11, 23, 8, 0)),  # exactly at the due time
        ("mon 08:00", at(2026, 11, 23, 7, 59), at(2026, 11, 16, 8, 0)),  # before it: last week's
        ("mon,wed 08:00", at(2026, 11, 24, 12, 0), at(2026, 11, 23, 8, 0)),
        ("mon,wed 08:00", at(2026, 11, 26, 12, 0), at(2026, 11, 25, 8, 0)),
        ("weekdays 07:30", at(2026, 11, 29, 12, 0), at(2026, 11, 27, 7, 30)),  # Sunday: Friday's
        ("daily 07:30", at(2026, 11, 29, 7, 29), at(2026, 11, 28, 7, 30)),
        ("first of month 08:00", at(2026, 12, 31, 23, 0), at(2026, 12, 1, 8, 0)),
        ("first of month 08:00", at(2027, 3, 1, 8, 0), at(2027, 3, 1, 8, 0)),
        ("mon-fri 06:00", at(2026, 11, 28, 6, 0), at(2026, 11, 27, 6, 0)),
        ("weekends 10:00", at(2026, 11, 30, 9, 0), at(2026, 11, 29, 10, 0)),
        # Summer time starts on Sunday 29.03.2026: 08:00 is 08:00 local time on both sides.
        ("daily 08:00", at(2026, 3, 30, 9, 0), at(2026, 3, 30, 8, 0)),
        ("daily 08:00", at(2026, 3, 29, 7, 0), at(2026, 3, 28, 8, 0)),
    ],
)
def test_the_latest_due_time_at_or_before_now(text, now, due):
    got = parse(text, "Europe/Berlin").last_due(now)
    assert got == due and got.utcoffset() == due.utcoffset()


def test_the_fields_and_the_zone():
    s = parse("  Mon,Wed  08:05 ", "America/New_York")
    assert (s.text, s.day_of_week, s.day, s.hour, s.minute) == ("Mon,Wed  08:05", "mon,wed", "*", 8, 5)
    assert str(s.trigger.timezone) == "America/New_York"
    assert parse("first of month 00:00", "UTC").day == "1"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty"),
        ("08:00", "not a schedule"),
        ("mon", "'mon' is not a time of day"),
        ("mon 8:00", "'8:00' is not a time of day"),
        ("mon 08:00:30", "give the time as HH:MM"),
        ("montag 08:00", "'montag' is not a day"),
        ("mon-fri-sat 08:00", "'mon-fri-sat' is not a day"),
        ("first of week 08:00", "not a schedule"),
    ],
)
def test_a_bad_schedule_says_what_is_wrong(text, problem):
    with pytest.raises(ScheduleError, match=problem):
        parse(text, "Europe/Berlin")


def test_a_yearly_crontab_line_of_a_digest_finds_last_years_due_time():
    from mailbridge.schedules import from_crontab, last_fire

    trigger = from_crontab("0 8 2 1 *", "Europe/Berlin")
    assert last_fire(trigger, at(2027, 1, 1, 12, 0)) == at(2026, 1, 2, 8, 0)
