"""The reports' subtle parts, one function at a time: business time counted as a running total equals
the calendar's own arithmetic (also across DST, holidays, split days and 24-hour days); the fast
terminal table is the rich table line for line; "at risk" is the ladder's stage time; p90; the CSV
dialects. (Met/missed is SQL: ``store/report_queries.py`` ``_met``, checked by the integration test.)"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from mailbridge.business_calendar import BusinessCalendar
from mailbridge.reports.common import OpenTime
from mailbridge.reports.formats import to_csv
from mailbridge.reports.model import Field, Report, Table
from mailbridge.reports.open_items import warning_reached
from mailbridge.reports.sla import _p90
from mailbridge.sla.calendar import business_time_between
from mailbridge.sla.clock import ClockName, Running, stage_time
from mailbridge.views import Column, Screen

BERLIN = ZoneInfo("Europe/Berlin")


def _calendars() -> list[BusinessCalendar]:
    weekdays = ("mon", "tue", "wed", "thu", "fri")
    return [
        BusinessCalendar.build(
            timezone="Europe/Berlin",
            hours={d: ["08:00-17:00"] for d in weekdays},
            country="DE",
            subdivision="NW",
        ),
        BusinessCalendar.build(
            timezone="Europe/Berlin",
            hours={**{d: ["07:30-12:00", "13:00-16:30"] for d in weekdays}, "sat": ["00:00-24:00"]},
        ),
        BusinessCalendar.build(timezone="America/New_York", always_open=True),
    ]


CALENDARS = _calendars()
START = datetime(2026, 1, 1, tzinfo=UTC)
instants = st.integers(min_value=0, max_value=400 * 24 * 60).map(lambda m: START + timedelta(minutes=m))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(range(len(CALENDARS))), st.lists(st.tuples(instants, instants), min_size=1, max_size=8))
def test_open_time_equals_the_calendars_arithmetic(which, pairs):
    """One counter asked many spans in any order (its totals move their origin back as needed)."""
    cal = CALENDARS[which]
    ot = OpenTime(cal)
    for a, b in pairs:
        assert ot.between(a, b) == business_time_between(cal, a, b), (which, a, b)


def test_open_time_by_hand():
    """Friday 16:30 to Monday 09:00 on Mon-Fri 08-17: 0.5 h + 1 h; across the spring change (Friday
    27 March to Monday 30 March 2026) the same; over Christmas 2026 (Thu 24 to Mon 28: 25 and 26 are
    holidays, the 27th a Sunday): only Thursday 24 counts, 9 h, then Monday 08-09."""
    ot = OpenTime(CALENDARS[0])

    def b(*a):
        return datetime(*a, tzinfo=BERLIN)

    assert ot.between(b(2026, 11, 20, 16, 30), b(2026, 11, 23, 9, 0)) == timedelta(hours=1.5)
    assert ot.between(b(2026, 3, 27, 16, 30), b(2026, 3, 30, 9, 0)) == timedelta(hours=1.5)
    assert ot.between(b(2026, 12, 24, 0, 0), b(2026, 12, 28, 9, 0)) == timedelta(hours=10)


def test_the_long_table_is_the_rich_table():
    columns = [
        Column("CASE"),
        Column("SUBJECT", ratio=3, min_width=8),
        Column("HOURS", justify="right"),
        Column("ASSIGNEE", ratio=1, min_width=6, optional=1),
        Column("ORG", ratio=1, min_width=6, optional=2),
    ]
    rows = [
        ("C1000002", "Systemstillstand Linie 3 – bitte sofort", "24.0 h", "anna.agent@vendor.example", "Kunde GmbH"),
        ("C1000015", "Frage", "3.5 h", "-", "Stadtwerke Musterstadt"),
        ("C1000028", "Ümläut ünd 日本語 im Betreff, ziemlich lang", "121.5 h", "bert@vendor.example", "-"),
    ]
    for width in (40, 60, 80, 120, 200):
        a, b = Screen(width), Screen(width)
        a.table(columns, rows)
        b.long_table(columns, rows)
        assert b.text() == a.text(), width


def test_p90_interpolates():
    # [0.5, 1.5, 5]: position 0.9 × 2 = 1.8, between 1.5 and 5: 1.5 + 0.8 × 3.5 = 4.3.
    assert abs(_p90([5.0, 0.5, 1.5]) - 4.3) < 1e-9
    assert _p90([2.0]) == 2.0 and _p90([]) is None


def test_csv_dialects():
    report = Report(
        "x",
        "X",
        BERLIN,
        tables=[
            Table(
                "X",
                [Field("WHEN", "time"), Field("H", "hours"), Field("SHARE", "pct"), Field("NAME")],
                [(datetime(2026, 7, 1, 10, 0, tzinfo=UTC), 1.25, 0.5, "Müller; Sohn")],
            )
        ],
    )
    assert to_csv(report) == (
        b"WHEN (Europe/Berlin),H,SHARE %,NAME\r\n2026-07-01T12:00:00+02:00,1.25,50.0,M\xc3\xbcller; Sohn\r\n"
    )
    de = to_csv(report, delimiter=";", bom=True)
    assert de.startswith(b"\xef\xbb\xbf")
    assert de.decode("utf-8-sig").splitlines()[1] == '2026-07-01T12:00:00+02:00;1,25;50,0;"Müller; Sohn"'


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(range(len(CALENDARS))),
    instants,
    st.integers(min_value=-2 * 24 * 60, max_value=20 * 24 * 60),
    st.integers(min_value=0, max_value=3 * 9 * 60),
    st.integers(min_value=-24 * 60, max_value=30 * 24 * 60),
    st.sampled_from([0, 25, 50, 75, 80, 99]),
)
def test_warning_reached_is_the_escalation_ladders_stage_time(which, start, due_min, shift_min, now_min, percent):
    """The open-items report's "at risk" asks the same question as the escalation job's ladder."""
    cal = CALENDARS[which]
    run = Running(ClockName.FIRST_RESPONSE, start, start + timedelta(minutes=due_min), timedelta(minutes=shift_min))
    now = start + timedelta(minutes=now_min)
    assert warning_reached(OpenTime(cal), run, percent, now) == (stage_time(cal, run, percent) <= now)
