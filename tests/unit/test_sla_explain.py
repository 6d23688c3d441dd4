"""``explain``: the per-day account of a span that ``mailbridge sla explain`` prints."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from mailbridge.sla.calendar import BusinessCalendar, DayCount, business_time_between, explain, parse_intervals

BERLIN = ZoneInfo("Europe/Berlin")
WEEKDAYS = {d: ["08:00-17:00"] for d in ("mon", "tue", "wed", "thu", "fri")}


def test_explain_names_holidays_weekends_and_special_hours_and_sums_to_the_total():
    """Easter in Bavaria: Good Friday and Easter Monday are named holidays, the weekend has no hours,
    24 December shows its special hours; the days add up to business_time_between."""
    cal = BusinessCalendar.build(
        timezone="Europe/Berlin",
        hours=WEEKDAYS,
        country="DE",
        subdivision="BY",
        special_hours={date(2026, 12, 24): ["08:00-12:00"]},
    )
    a, b = datetime(2026, 4, 2, 10, tzinfo=BERLIN), datetime(2026, 4, 7, 9, tzinfo=BERLIN)
    days = explain(cal, a, b)
    assert days == [
        DayCount(date(2026, 4, 2), timedelta(hours=7), ""),
        DayCount(date(2026, 4, 3), timedelta(0), "holiday: Good Friday"),
        DayCount(date(2026, 4, 4), timedelta(0), "no hours on sat"),
        DayCount(date(2026, 4, 5), timedelta(0), "no hours on sun"),
        DayCount(date(2026, 4, 6), timedelta(0), "holiday: Easter Monday"),
        DayCount(date(2026, 4, 7), timedelta(hours=1), ""),
    ]
    assert sum((d.counted for d in days), timedelta(0)) == business_time_between(cal, a, b)
    xmas = explain(cal, datetime(2026, 12, 24, 0, tzinfo=BERLIN), datetime(2026, 12, 25, 0, tzinfo=BERLIN))
    assert xmas == [DayCount(date(2026, 12, 24), timedelta(hours=4), "special hours 08:00-12:00")]


@pytest.mark.parametrize(
    ("specs", "problem"),
    [
        (["8:00-17:00"], "not an interval"),
        (["17:00-08:00"], "end must be after the start"),
        (["08:00-12:00", "11:00-13:00"], "overlap"),
        (["08:00-24:30"], "24:00 at the latest"),
    ],
)
def test_malformed_hours_are_refused(specs, problem):
    """Opening hours are HH:MM-HH:MM, ascending, non-overlapping, ending at 24:00 at the latest."""
    with pytest.raises(ValueError, match=problem):
        parse_intervals(specs)


def test_unknown_zone_weekday_country_are_refused():
    """A calendar that names an unknown zone, weekday, country or subdivision is a config error."""
    with pytest.raises(ValueError, match="time zone"):
        BusinessCalendar.build(timezone="Europe/Bärlin")
    with pytest.raises(ValueError, match="weekday"):
        BusinessCalendar.build(timezone="Europe/Berlin", hours={"monday": ["08:00-17:00"]})
    with pytest.raises(ValueError, match="country"):
        BusinessCalendar.build(timezone="Europe/Berlin", country="XX")
    with pytest.raises(ValueError, match="country DE has no subdivision 'ZZ'"):
        BusinessCalendar.build(timezone="Europe/Berlin", country="DE", subdivision="ZZ")


def test_yearly_half_days_and_closed_days_repeat_and_stay_closed_on_weekends():
    """ "12-24" half day and "12-31" closed apply every year; a yearly half day on a Sunday or a
    public holiday does not open the office."""
    cal = BusinessCalendar.build(
        timezone="Europe/Berlin",
        hours=WEEKDAYS,
        country="DE",
        subdivision="BY",
        closed_dates=[(12, 31)],
        special_hours={(12, 24): ["08:00-12:00"], (1, 6): ["08:00-10:00"]},
    )
    assert cal.hours_on(date(2026, 12, 24)) == ((480, 720),)  # Thursday
    assert cal.hours_on(date(2027, 12, 24)) == ((480, 720),)  # Friday
    assert cal.hours_on(date(2028, 12, 24)) == ()  # Sunday
    assert cal.hours_on(date(2026, 12, 31)) == () and cal.hours_on(date(2027, 12, 31)) == ()
    assert cal.hours_on(date(2027, 1, 6)) == ()  # Epiphany is a holiday in Bavaria
    assert explain(cal, datetime(2027, 12, 24, tzinfo=BERLIN), datetime(2027, 12, 25, tzinfo=BERLIN)) == [
        DayCount(date(2027, 12, 24), timedelta(hours=4), "special hours 08:00-12:00")
    ]
    with pytest.raises(ValueError):
        BusinessCalendar.build(timezone="Europe/Berlin", closed_dates=[(2, 30)])
