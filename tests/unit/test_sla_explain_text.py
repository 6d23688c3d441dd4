"""The text of ``mailbridge sla explain`` and the rules of ``mailbridge sla recompute``, from plain
data: no database, no mail."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from mailbridge.settings import Settings
from mailbridge.sla.calendar import BusinessCalendar, add_business_time
from mailbridge.sla.deadlines import Deadlines
from mailbridge.sla.explain import CaseFacts, Terms, explain_case, fmt_wall
from mailbridge.sla.policy import SeverityLevel, Target, TargetKind, due
from mailbridge.sla.recompute import CaseClocks, Dues, Pause, dues_for, move_by_pauses, pauses_from_events

BERLIN = ZoneInfo("Europe/Berlin")
WEEKDAYS = {d: ["08:00-17:00"] for d in ("mon", "tue", "wed", "thu", "fri")}
CAL = BusinessCalendar.build(timezone="Europe/Berlin", hours=WEEKDAYS, country="DE", subdivision="NW")
HOURS4 = Target(TargetKind.BUSINESS_HOURS, 4)
LEVEL = SeverityLevel("1", "Fehlerklasse 1", "Severity 1", first_response=HOURS4)
DAY_ROW = re.compile(r"^    (Mon|Tue|Wed|Thu|Fri|Sat|Sun) \d{4}-\d\d-\d\d ")


def _rows(text: str) -> list[str]:
    return [" ".join(line.split()) for line in text.splitlines() if DAY_ROW.match(line)]


def _b(*args) -> datetime:
    return datetime(*args, tzinfo=BERLIN)


def test_days_weekend_and_due_of_a_friday_afternoon_case():
    """4 business hours from Friday 15:00: 2:00 on Friday, the weekend skipped, 2:00 on Monday;
    due Monday 10:00; answered at 11:00 it was missed by one business hour."""
    created = _b(2026, 11, 20, 15)
    fr = due(CAL, created, HOURS4)
    assert fr == _b(2026, 11, 23, 10)
    case = CaseFacts(
        "C1000002", "Stillstand", "support", "open", created, "1", "Kunde GmbH", "Wartung", fr, _b(2026, 11, 23, 11)
    )
    text = explain_case(case, Terms(LEVEL, CAL, "nrw", "queue support"), [], _b(2026, 11, 24, 9))
    assert _rows(text) == [
        "Fri 2026-11-20 15:00-17:00 2:00",
        "Sat 2026-11-21 - 0:00 weekend",
        "Sun 2026-11-22 - 0:00 weekend",
        "Mon 2026-11-23 08:00-10:00 2:00",
    ]
    assert "  due Mon 2026-11-23 10:00 CET (as stored)" in text.splitlines()
    assert "missed: answered Mon 2026-11-23 11:00 CET, late by 1:00 business time (1:00 on the clock)" in text
    assert "customer:  organisation Kunde GmbH, contract Wartung" in text


def test_a_case_without_contract_has_no_promise_and_no_clock_lines():
    """No contract where the queue requires one: the text says so and lists no clocks."""
    case = CaseFacts("C1000002", "Frage", "support", "new", _b(2026, 11, 20, 15), "1", "Other AG")
    text = explain_case(case, Terms(LEVEL, CAL, "nrw", "queue support", promised=False), [], _b(2026, 11, 20, 16))
    assert "organisation Other AG, no contract: no promise (the queue requires a contract)" in text
    assert text.endswith("no deadlines: no contract, no promise") and "first response" not in text


def test_days_before_opening_special_hours_and_closed_dates_are_named():
    """A case on Wednesday 23 December 20:00 (after hours) counts from Thursday's half day; 25 and
    26 December are named holidays, 28 December is a closed date."""
    cal = BusinessCalendar.build(
        timezone="Europe/Berlin",
        hours=WEEKDAYS,
        country="DE",
        subdivision="NW",
        closed_dates=[datetime(2026, 12, 28).date()],
        special_hours={(12, 24): ["08:00-12:00"]},
    )
    created = _b(2026, 12, 23, 20)
    target = Target(TargetKind.BUSINESS_HOURS, 6)
    level = SeverityLevel("1", "A", "A", first_response=target)
    fr = due(cal, created, target)
    case = CaseFacts("C1000002", "x", "support", "new", created, "1", first_response_due=fr)
    text = explain_case(case, Terms(level, cal, "nrw", "queue support"), [], created)
    assert _rows(text) == [
        "Wed 2026-12-23 - 0:00 after hours",
        "Thu 2026-12-24 08:00-12:00 4:00 special hours 08:00-12:00",
        "Fri 2026-12-25 - 0:00 public holiday: Christmas Day",
        "Sat 2026-12-26 - 0:00 public holiday: Second Day of Christmas",
        "Sun 2026-12-27 - 0:00 weekend",
        "Mon 2026-12-28 - 0:00 closed date",
        "Tue 2026-12-29 08:00-10:00 2:00",
    ]
    assert "6:00 counted = 6 business hours" in text
    assert "special hours every 12-24 08:00-12:00" in text and "closed 2026-12-28" in text


def _pause(since, until, seconds, *moved) -> Pause:
    return Pause(since.astimezone(UTC), until.astimezone(UTC) if until else None, seconds, frozenset(moved))


def test_pause_replay_follows_the_pipelines_rules():
    """A pause moves a due time still ahead when it began; not one already passed; not the first
    response once answered; the follow-up only for pauses that ended after the last answer; a pause
    that still lasts moves nothing yet."""
    nine = 9 * 3600
    p = _pause(_b(2026, 11, 23, 10), _b(2026, 11, 24, 10), nine)
    ahead = _b(2026, 11, 23, 13)
    assert move_by_pauses(CAL, ahead, [p]) == _b(2026, 11, 24, 13)
    assert move_by_pauses(CAL, _b(2026, 11, 23, 9, 30), [p]) == _b(2026, 11, 23, 9, 30)  # passed before
    assert move_by_pauses(CAL, ahead, [p], answered_at=_b(2026, 11, 23, 9, 45)) == ahead
    assert move_by_pauses(CAL, ahead, [p], answered_at=_b(2026, 11, 24, 12)) == _b(2026, 11, 24, 13)
    assert move_by_pauses(CAL, ahead, [p], after=_b(2026, 11, 24, 10)) == ahead
    assert move_by_pauses(CAL, ahead, [_pause(_b(2026, 11, 23, 10), None, 0)]) == ahead
    assert move_by_pauses(CAL, None, [p]) is None


def test_pauses_are_read_from_the_history():
    """clock_resumed events give the ended pauses (with the dues they moved); paused_at the one that
    lasts; other events and malformed details are skipped."""
    at = _b(2026, 11, 24, 10).astimezone(UTC)
    events = [
        ("clock_paused", {}, _b(2026, 11, 23, 10)),
        (
            "clock_resumed",
            {
                "paused_since": _b(2026, 11, 23, 10).astimezone(UTC).isoformat(),
                "paused_business_seconds": 32400,
                "resolution_due": "2026-11-30T12:00:00+00:00",
            },
            at,
        ),
        ("clock_resumed", {"paused_since": "not a time"}, at),
        ("severity_set", {"new": "1"}, at),
    ]
    now_paused = _b(2026, 11, 25, 9).astimezone(UTC)
    assert pauses_from_events(events, now_paused) == [
        Pause(_b(2026, 11, 23, 10), at, 32400, frozenset({"resolution_due"})),
        Pause(now_paused, None),
    ]


SETTINGS = {
    "accounts": [{"name": "main", "host": "127.0.0.1", "tls": "none", "user": "u"}],
    "queues": [
        {
            "name": "support",
            "addresses": ["support@vendor.example"],
            "account": "main",
            "calendar": "nrw",
            "severity_scheme": "std",
            "contract_required": True,
        }
    ],
    "smtp": {"host": "127.0.0.1", "tls": "none"},
    "calendars": [{"name": "nrw", "country": "DE", "subdivision": "NW", "hours": WEEKDAYS}],
    "severity_schemes": [
        {
            "name": "std",
            "default": "1",
            "levels": [
                {
                    "key": "1",
                    "label_de": "1",
                    "label_en": "1",
                    "first_response": {"business_hours": 4},
                    "resolution": {"business_days": 5},
                    "follow_up": {"business_hours": 8},
                }
            ],
        }
    ],
    "organisations": [
        {"name": "Kunde GmbH", "domains": ["kunde.example"], "contract": "Wartung"},
        {"name": "Other AG", "domains": ["other.example"]},
    ],
}


@pytest.fixture(scope="module")
def deadlines() -> Deadlines:
    return Deadlines(Settings.model_validate(SETTINGS))


def test_dues_for_recounts_from_creation_and_last_answer(deadlines):
    """The organisation comes from the answer address; first response and resolution count from
    the creation, the follow-up from the last answer, each moved by the pauses that moved it."""
    created = _b(2026, 11, 23, 9)
    answered = _b(2026, 11, 25, 9)
    pause = _pause(_b(2026, 11, 23, 10), _b(2026, 11, 24, 10), 9 * 3600)
    case = CaseClocks("support", "1", "jm@kunde.example", created, answered, answered, paused_seconds=9 * 3600)
    got = dues_for(deadlines, case, [pause])
    assert got == Dues(
        "Kunde GmbH",
        "Wartung",
        _b(2026, 11, 24, 13),  # 13:00 + 9 paused hours
        add_business_time(CAL, _b(2026, 11, 30, 9), timedelta(hours=9)),  # 5 business days + 9 h
        _b(2026, 11, 25, 17),  # 8 business hours after Wednesday 09:00 (no pause after the answer)
    )
    # Unaccounted paused seconds (no events): every due time moves on by them, as #severity does.
    legacy = dues_for(deadlines, case, [])
    assert legacy.first_response_due == _b(2026, 11, 24, 13) and legacy.update_due == _b(2026, 11, 25, 17)
    # No contract in a queue that requires one: no promise, no due times; unknown level: none.
    other = CaseClocks("support", "1", "x@other.example", created)
    assert dues_for(deadlines, other, []) == Dues("Other AG", None, None, None, None)
    assert dues_for(deadlines, CaseClocks("support", "9", "jm@kunde.example", created), []).first_response_due is None


def test_wall_durations():
    assert fmt_wall(timedelta(hours=3)) == "3:00"
    assert fmt_wall(timedelta(days=1, minutes=5)) == "1 day 0:05"
    assert fmt_wall(timedelta(days=3, hours=23)) == "3 days 23:00"
