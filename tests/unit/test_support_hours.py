"""Support hours as the acknowledgement states them: the calendar that applies to the customer, in
German and English, and the closure days before the promised first response.

Calendars are built as settings build them (``CalendarSettings(...).calendar()``, the values of the seed
example configs); the due times come from ``Deadlines`` itself. Times are written as local Berlin times.
"""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest

from mailbridge.settings import CalendarSettings, Settings
from mailbridge.sla.deadlines import Customer, Deadlines
from mailbridge.sla.hours import describe

BERLIN = ZoneInfo("Europe/Berlin")
MON_FRI = ("mon", "tue", "wed", "thu", "fri")
NINE_TO_FIVE = {d: ["09:00-17:00"] for d in MON_FRI}


def berlin(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN)


def calendar(**values):
    return CalendarSettings(name="c", **values).calendar()


# Seed 000: the contract partner's seat decides the holidays (Bavaria or North Rhine-Westphalia).
SETTINGS = {
    "accounts": [{"name": "main", "host": "127.0.0.1", "tls": "none", "user": "u"}],
    "queues": [
        {
            "name": "support",
            "addresses": ["support@vendor.example"],
            "account": "main",
            "calendar": "sitz-nrw",
            "severity_scheme": "std",
        },
        {"name": "nocal", "addresses": ["info@vendor.example"], "account": "main"},
    ],
    "smtp": {"host": "127.0.0.1", "tls": "none"},
    "calendars": [
        {"name": "sitz-bayern", "country": "DE", "subdivision": "BY", "hours": NINE_TO_FIVE},
        {"name": "sitz-nrw", "country": "DE", "subdivision": "NW", "hours": NINE_TO_FIVE},
    ],
    "severity_schemes": [
        {
            "name": "std",
            "default": "2",
            "levels": [
                {"key": "2", "label_de": "2", "label_en": "2", "first_response": {"business_hours": 4}},
            ],
        }
    ],
    "organisations": [
        {"name": "Pfronten GmbH", "domains": ["pfronten.example"], "contract": "W", "calendar": "sitz-bayern"},
        {"name": "Bielefeld AG", "domains": ["bielefeld.example"], "contract": "W"},
    ],
}


@pytest.fixture(scope="module")
def deadlines() -> Deadlines:
    return Deadlines(Settings.model_validate(SETTINGS))


def _due(deadlines: Deadlines, organisation: str, start: datetime) -> datetime:
    due = deadlines.for_level("support", "2", start, Customer(organisation, "W")).first_response_due
    assert due is not None
    return due


def test_epiphany_closes_the_bavarian_desk_but_not_the_one_in_nrw(deadlines):
    """Tuesday 5 January 2027, 16:00, four business hours: Bavaria answers by Thursday 12:00 and says
    why (Wednesday is Heilige Drei Könige); NRW answers by Wednesday 12:00 with no closure."""
    now = berlin(2027, 1, 5, 16, 0)
    by_due, nw_due = _due(deadlines, "Pfronten GmbH", now), _due(deadlines, "Bielefeld AG", now)
    assert by_due == berlin(2027, 1, 7, 12, 0)
    assert nw_due == berlin(2027, 1, 6, 12, 0)

    by = deadlines.support_hours("support", "Pfronten GmbH", "de", now, by_due)
    assert by is not None
    assert by.text == "Mo–Fr 09:00–17:00 Uhr (MEZ), an gesetzlichen Feiertagen in Bayern geschlossen"
    assert [c.text for c in by.closures] == ["Mittwoch, 6. Januar 2027 (Heilige Drei Könige)"]
    assert by.closures[0].day == date(2027, 1, 6) and by.closures[0].name == "Heilige Drei Könige"

    by_en = deadlines.support_hours("support", "Pfronten GmbH", "en", now, by_due)
    assert by_en is not None
    assert by_en.text == "Mon–Fri 9:00 am–5:00 pm (CET), closed on public holidays in Bavaria"
    assert [c.text for c in by_en.closures] == ["Wednesday, 6 January 2027 (Epiphany)"]

    nw = deadlines.support_hours("support", "Bielefeld AG", "de", now, nw_due)
    assert nw is not None
    assert nw.text == "Mo–Fr 09:00–17:00 Uhr (MEZ), an gesetzlichen Feiertagen in Nordrhein-Westfalen geschlossen"
    assert nw.closures == ()
    # The queue's calendar (NRW) for a customer of no organisation.
    assert deadlines.support_hours("support", None, "en", now, nw_due).text.endswith("in North Rhine-Westphalia")


def test_no_calendar_no_support_hours(deadlines):
    assert deadlines.support_hours("nocal", None, "de", berlin(2027, 1, 5, 16, 0), None) is None


def test_without_a_promised_time_there_are_no_closures(deadlines):
    hours = deadlines.support_hours("support", "Pfronten GmbH", "de", berlin(2027, 1, 5, 16, 0), None)
    assert hours is not None and hours.closures == ()


def test_friday_afternoon_answered_monday_mentions_no_weekend(deadlines):
    """Friday 15 January 2027, 16:00 → Monday 12:00: Saturday and Sunday are not closures."""
    now = berlin(2027, 1, 15, 16, 0)
    due = _due(deadlines, "Pfronten GmbH", now)
    assert due == berlin(2027, 1, 18, 12, 0)
    hours = deadlines.support_hours("support", "Pfronten GmbH", "de", now, due)
    assert hours is not None and hours.closures == ()


def test_friday_afternoon_before_whit_monday_names_the_holiday(deadlines):
    """Friday 14 May 2027, 16:00 → Tuesday 18 May 12:00: Whit Monday lies between."""
    now = berlin(2027, 5, 14, 16, 0)
    due = _due(deadlines, "Bielefeld AG", now)
    assert due == berlin(2027, 5, 18, 12, 0)
    de = deadlines.support_hours("support", "Bielefeld AG", "de", now, due)
    en = deadlines.support_hours("support", "Bielefeld AG", "en", now, due)
    assert de is not None and en is not None
    assert [c.text for c in de.closures] == ["Montag, 17. Mai 2027 (Pfingstmontag)"]
    assert [c.text for c in en.closures] == ["Monday, 17 May 2027 (Pentecost Monday)"]


def test_a_request_on_a_holiday_names_that_day():
    cal = calendar(country="DE", subdivision="BY", hours=NINE_TO_FIVE)
    hours = describe(cal, "de", berlin(2027, 1, 6, 10, 0), berlin(2027, 1, 7, 13, 0))
    assert [c.day for c in hours.closures] == [date(2027, 1, 6)]


@pytest.mark.parametrize(
    ("now", "de", "en"),
    [
        (datetime(2027, 1, 6, 12, 0, tzinfo=BERLIN), "MEZ", "CET"),
        (datetime(2027, 7, 6, 12, 0, tzinfo=BERLIN), "MESZ", "CEST"),
        # The clocks go forward on 28 March 2027 at 01:00 UTC (02:00 MEZ → 03:00 MESZ).
        (datetime(2027, 3, 28, 0, 59, tzinfo=ZoneInfo("UTC")), "MEZ", "CET"),
        (datetime(2027, 3, 28, 1, 0, tzinfo=ZoneInfo("UTC")), "MESZ", "CEST"),
        # … and back on 31 October 2027 at 01:00 UTC.
        (datetime(2027, 10, 31, 0, 59, tzinfo=ZoneInfo("UTC")), "MESZ", "CEST"),
        (datetime(2027, 10, 31, 1, 0, tzinfo=ZoneInfo("UTC")), "MEZ", "CET"),
    ],
)
def test_the_zone_abbreviation_is_the_one_valid_now(now, de, en):
    cal = calendar(country="DE", subdivision="BY", hours=NINE_TO_FIVE)
    assert describe(cal, "de", now).zone == de
    assert describe(cal, "en", now).zone == en
    assert f"({de})" in describe(cal, "de", now).text


def test_a_zone_outside_europe_has_its_english_abbreviation():
    cal = calendar(timezone="America/New_York", hours=NINE_TO_FIVE)
    assert describe(cal, "en", datetime(2027, 1, 6, 12, tzinfo=ZoneInfo("America/New_York"))).text == (
        "Mon–Fri 9:00 am–5:00 pm (EST)"
    )


def test_split_hours_and_a_saturday_are_grouped():
    cal = calendar(
        country="DE",
        subdivision="NI",
        hours={**{d: ["08:00-12:00", "13:00-17:00"] for d in MON_FRI}, "sat": ["09:00-12:00"]},
    )
    now = berlin(2027, 1, 5, 12, 0)
    assert describe(cal, "de", now).text == (
        "Mo–Fr 08:00–12:00, 13:00–17:00 Uhr; Sa 09:00–12:00 Uhr (MEZ), "
        "an gesetzlichen Feiertagen in Niedersachsen geschlossen"
    )
    assert describe(cal, "en", now).text == (
        "Mon–Fri 8:00 am–noon, 1:00 pm–5:00 pm; Sat 9:00 am–noon (CET), closed on public holidays in Lower Saxony"
    )


def test_only_consecutive_days_with_equal_hours_form_a_group():
    """The example config's Friday closes early; a Wednesday with other hours splits the week."""
    cal = calendar(hours={**{d: ["08:00-17:00"] for d in MON_FRI}, "wed": ["10:00-17:00"], "fri": ["08:00-15:00"]})
    assert describe(cal, "de", berlin(2027, 1, 5, 12)).text == (
        "Mo–Di 08:00–17:00 Uhr; Mi 10:00–17:00 Uhr; Do 08:00–17:00 Uhr; Fr 08:00–15:00 Uhr (MEZ)"
    )


def test_a_weekend_open_desk_is_closed_on_a_saturday_holiday_a_weekday_desk_does_not_mention_it():
    """1 May 2027 (Tag der Arbeit) is a Saturday."""
    weekdays = calendar(country="DE", subdivision="BY", hours=NINE_TO_FIVE)
    all_week = calendar(
        country="DE",
        subdivision="BY",
        hours={**NINE_TO_FIVE, "sat": ["10:00-14:00"], "sun": ["10:00-14:00"]},
    )
    now, until = berlin(2027, 4, 30, 16, 0), berlin(2027, 5, 3, 12, 0)
    assert describe(weekdays, "de", now, until).closures == ()
    de = describe(all_week, "de", now, until)
    assert de.text == (
        "Mo–Fr 09:00–17:00 Uhr; Sa–So 10:00–14:00 Uhr (MESZ), an gesetzlichen Feiertagen in Bayern geschlossen"
    )
    assert [c.text for c in de.closures] == ["Samstag, 1. Mai 2027 (Erster Mai)"]
    en = describe(all_week, "en", now, until)
    assert en.text.startswith("Mon–Fri 9:00 am–5:00 pm; Sat–Sun 10:00 am–2:00 pm (CEST)")
    assert [c.text for c in en.closures] == ["Saturday, 1 May 2027 (Labor Day)"]


def test_around_the_clock():
    always = calendar(always_open=True)
    now, until = berlin(2027, 12, 24, 16), berlin(2027, 12, 27, 16)
    assert describe(always, "de", now, until).text == "rund um die Uhr"
    assert describe(always, "en", now, until).text == "around the clock"
    assert describe(always, "de", now, until).closures == ()
    # Whole days every day, but with public holidays.
    every_day = calendar(country="DE", subdivision="BY", hours={d: ["00:00-24:00"] for d in (*MON_FRI, "sat", "sun")})
    assert describe(every_day, "de", now).text == "rund um die Uhr, an gesetzlichen Feiertagen in Bayern geschlossen"
    assert describe(every_day, "en", now).text == "around the clock, closed on public holidays in Bavaria"


def test_whole_days_and_evening_hours():
    cal = calendar(hours={**NINE_TO_FIVE, "sat": ["00:00-24:00"], "sun": ["18:00-24:00"]})
    now = berlin(2027, 1, 5, 12)
    assert describe(cal, "de", now).text == "Mo–Fr 09:00–17:00 Uhr; Sa ganztägig; So 18:00–24:00 Uhr (MEZ)"
    assert describe(cal, "en", now).text == "Mon–Fri 9:00 am–5:00 pm; Sat all day; Sun 6:00 pm–midnight (CET)"


def test_configured_closed_days_are_closures_and_a_half_day_is_not():
    """The example config: Baden-Württemberg, closed on 31 December every year, 24 December a half day."""
    cal = calendar(
        country="DE",
        subdivision="BW",
        hours={**{d: ["08:00-17:00"] for d in MON_FRI}, "fri": ["08:00-15:00"]},
        closed_dates=["12-31", "2027-01-04"],
        special_hours={"12-24": ["08:00-12:00"]},
    )
    now, until = berlin(2026, 12, 23, 16), berlin(2027, 1, 5, 12)
    de = describe(cal, "de", now, until)
    assert de.text == (
        "Mo–Do 08:00–17:00 Uhr; Fr 08:00–15:00 Uhr (MEZ), an gesetzlichen Feiertagen in Baden-Württemberg geschlossen"
    )
    assert [c.text for c in de.closures] == [
        "Freitag, 25. Dezember 2026 (Erster Weihnachtstag)",
        "Donnerstag, 31. Dezember 2026 (Betriebsruhe)",
        "Freitag, 1. Januar 2027 (Neujahr)",
        "Montag, 4. Januar 2027 (Betriebsruhe)",
    ]
    en = describe(cal, "en", now, until)
    assert [c.name for c in en.closures] == ["Christmas Day", "office closed", "New Year's Day", "office closed"]


@pytest.mark.parametrize(("language", "expected"), [("de_AT", "de"), ("de-DE", "de"), ("fr", "en"), ("en_GB", "en")])
def test_other_languages_fall_back(language, expected):
    cal = calendar(country="DE", subdivision="BY", hours=NINE_TO_FIVE)
    assert describe(cal, language, berlin(2027, 1, 5, 12)).language == expected


def test_a_country_without_subdivision_is_named_by_babel():
    cal = calendar(timezone="Europe/Vienna", country="AT", hours=NINE_TO_FIVE)
    now = berlin(2027, 1, 5, 12)
    assert describe(cal, "de", now).holidays == "an gesetzlichen Feiertagen in Österreich geschlossen"
    assert describe(cal, "en", now).holidays == "closed on public holidays in Austria"
