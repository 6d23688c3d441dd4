"""Business calendars: opening hours, holidays, special days, DST, and the SLA arithmetic on them.

The property tests compare ``mailbridge.sla.calendar`` with a brute-force oracle written only from
the same configuration values (``zoneinfo`` and the ``holidays`` package), which decides minute by
minute (UTC) whether the desk is open. The named tests pin deadlines computed by hand; their
expected instants are written out in UTC, with the local time in the docstring.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import holidays
import pytest
from hypothesis import assume, given, note, settings
from hypothesis import strategies as st

from mailbridge.sla.calendar import (
    BusinessCalendar,
    add_business_days,
    add_business_time,
    add_calendar_time,
    business_time_between,
    open_intervals,
)

MINUTE = timedelta(minutes=1)
DAY_MINUTES = 24 * 60
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


# -- configuration values, shared by the module and the oracle -------------------------------------


@dataclass(frozen=True)
class Config:
    """The keyword arguments of ``BusinessCalendar.build``, kept as plain data for the oracle."""

    timezone: str
    hours: dict[str, list[str]] = field(default_factory=dict)
    country: str | None = None
    subdivision: str | None = None
    closed_dates: tuple[date, ...] = ()
    special_hours: dict[date, list[str]] = field(default_factory=dict)
    always_open: bool = False

    def build(self) -> BusinessCalendar:
        # Copies: the module must not be able to change the oracle's data.
        return BusinessCalendar.build(
            timezone=self.timezone,
            hours={day: list(specs) for day, specs in self.hours.items()},
            country=self.country,
            subdivision=self.subdivision,
            closed_dates=list(self.closed_dates),
            special_hours={day: list(specs) for day, specs in self.special_hours.items()},
            always_open=self.always_open,
        )


# -- the oracle ---------------------------------------------------------------------------------


def _minute_of_day(hhmm: str) -> int:
    hh, mm = hhmm.strip().split(":")
    return int(hh) * 60 + int(mm)


def _spans(specs: list[str]) -> list[tuple[int, int]]:
    """``["08:00-12:00"]`` → ``[(480, 720)]``: minutes after local midnight, [start, end)."""
    out = []
    for spec in specs:
        start, end = spec.split("-")
        out.append((_minute_of_day(start), _minute_of_day(end)))
    return sorted(out)


@functools.cache
def _public_holidays(country: str, subdivision: str | None, year: int) -> frozenset[date]:
    return frozenset(holidays.country_holidays(country, subdiv=subdivision, years=year))


class Oracle:
    """Minute-by-minute reference: a UTC minute is open when its local time of day lies in one of
    the local date's intervals (special hours first; closed dates and public holidays closed;
    otherwise the weekday's hours)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.tz = ZoneInfo(config.timezone)
        self._masks: dict[date, tuple[bytearray, int]] = {}

    def spans(self, day: date) -> list[tuple[int, int]]:
        c = self.config
        if c.always_open:
            return [(0, DAY_MINUTES)]
        if day in c.special_hours:
            return _spans(c.special_hours[day])
        if day in c.closed_dates:
            return []
        if c.country is not None and day in _public_holidays(c.country, c.subdivision, day.year):
            return []
        return _spans(c.hours.get(WEEKDAYS[day.weekday()], []))

    def _mask(self, day: date) -> tuple[bytearray, int]:
        """One flag per local minute of ``day``, and the last open minute (-1 when closed)."""
        if day not in self._masks:
            mask = bytearray(DAY_MINUTES)
            for start, end in self.spans(day):
                mask[start:end] = b"\x01" * (end - start)
            last = max((m for m in range(DAY_MINUTES) if mask[m]), default=-1)
            self._masks[day] = (mask, last)
        return self._masks[day]

    def utc(self, day: date, minute: int) -> datetime:
        """Local ``day`` at ``minute`` after midnight (1440 = the next midnight) as a UTC instant."""
        day += timedelta(days=minute // DAY_MINUTES)
        minute %= DAY_MINUTES
        return datetime.combine(day, time(minute // 60, minute % 60), tzinfo=self.tz).astimezone(UTC)

    def is_open(self, at: datetime) -> bool:
        local = at.astimezone(self.tz)
        return bool(self._mask(local.date())[0][local.hour * 60 + local.minute])

    def open_minutes(self, start: datetime, stop: datetime | None = None) -> Iterator[datetime]:
        """The UTC starts of the open minutes in [start, stop), in order (unbounded without stop)."""
        t = start.astimezone(UTC)
        limit = t + timedelta(days=3 * 366) if stop is None else stop
        while t < limit:
            local = t.astimezone(self.tz)
            mask, last = self._mask(local.date())
            minute = local.hour * 60 + local.minute
            if minute > last:  # nothing opens any more on this local date: on to its midnight
                t = self.utc(local.date(), DAY_MINUTES)
                continue
            if mask[minute]:
                yield t
            t += MINUTE
        if stop is None:
            raise AssertionError("oracle: no opening within three years")

    def add(self, start: datetime, minutes: int) -> datetime:
        if minutes == 0:
            return start
        for counted, t in enumerate(self.open_minutes(start), start=1):
            if counted == minutes:
                return t + MINUTE
        raise AssertionError("unreachable")

    def between(self, a: datetime, b: datetime) -> timedelta:
        if b < a:
            return -self.between(b, a)
        return timedelta(minutes=sum(1 for _ in self.open_minutes(a, b)))

    def next_opening(self, at: datetime) -> datetime:
        return next(self.open_minutes(at))

    def add_days(self, start: datetime, days: int) -> datetime:
        """The documented rule: move a closed start to the next opening; then the same local time of
        day on the n-th following day with any opening; before its opening → the opening; inside an
        interval → that time; otherwise the latest close at or before that time of day."""
        begin = self.next_opening(start).astimezone(self.tz)
        minute = begin.hour * 60 + begin.minute
        day = begin.date()
        found = 0
        while found < days:
            day += timedelta(days=1)
            if self.spans(day):
                found += 1
        spans = self.spans(day)
        if minute < spans[0][0]:
            target = spans[0][0]
        elif any(s <= minute < e for s, e in spans):
            target = minute
        else:
            target = max(e for _, e in spans if e <= minute)
        return self.utc(day, target)

    def intervals(self, day: date) -> list[tuple[datetime, datetime]]:
        return [(self.utc(day, s), self.utc(day, e)) for s, e in _merge(self.spans(day))]


def _merge(spans):
    """Sorted spans with touching ones joined (``08-12`` + ``12-17`` = ``08-17``)."""
    out: list[tuple] = []
    for s, e in sorted(spans):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


# -- strategies ---------------------------------------------------------------------------------

REGIONS = [
    ("Europe/Berlin", "DE", "BY"),
    ("Europe/Berlin", "DE", "NW"),
    ("Europe/Berlin", "DE", "RP"),
    ("Europe/Berlin", "DE", "NI"),
    ("Europe/Vienna", "AT", None),
    ("Europe/Zurich", "CH", "ZH"),
    ("America/New_York", "US", "NY"),
    ("Australia/Sydney", "AU", "NSW"),
    ("Europe/Berlin", None, None),
    ("UTC", None, None),
]
_EU = [date(2026, 3, 29), date(2026, 10, 25), date(2027, 3, 28), date(2027, 10, 31)]
DST_DAYS = {
    "Europe/Berlin": _EU,
    "Europe/Vienna": _EU,
    "Europe/Zurich": _EU,
    "America/New_York": [date(2026, 3, 8), date(2026, 11, 1), date(2027, 3, 14), date(2027, 11, 7)],
    "Australia/Sydney": [date(2026, 4, 5), date(2026, 10, 4), date(2027, 4, 4), date(2027, 10, 3)],
    "UTC": _EU,
}
# Around Easter, Christmas, Ascension, Thanksgiving, New Year: holidays next to weekends.
HOLIDAY_SEASONS = [date(2026, 4, 2), date(2026, 12, 23), date(2026, 12, 31), date(2027, 3, 25), date(2026, 5, 13)]
HOLIDAY_SEASONS += [date(2026, 11, 25), date(2027, 12, 23)]
FIRST = datetime(2026, 1, 1, tzinfo=UTC)
SPAN_MINUTES = int((datetime(2028, 1, 1, tzinfo=UTC) - FIRST) / MINUTE) - 1
# Opening boundaries from 05:00 to 23:00 (the clocks change between 01:00 and 04:00).
# Mostly on the quarter hour, like real opening hours, so that deadlines land exactly on boundaries.
BOUNDARY = st.one_of(st.integers(20, 92).map(lambda q: q * 15), st.integers(5 * 60, 23 * 60))
DURATIONS = st.one_of(st.integers(0, 50).map(lambda h: h * 60), st.integers(0, 3000))  # business minutes
MIN_WEEKLY_MINUTES = 15 * 60  # keeps the oracle's walk short


def _hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def _interval(start: int, end: int) -> str:
    return f"{_hhmm(start)}-{_hhmm(end)}"


@st.composite
def day_hours(draw, *, allow_closed: bool = True) -> list[str]:
    kinds = ["one", "split", "whole", "midnight"]
    kind = draw(st.sampled_from([*kinds, "closed"] if allow_closed else kinds))
    if kind == "closed":
        return []
    if kind == "whole":
        return ["00:00-24:00"]
    if kind == "one":
        a, b = sorted(draw(st.lists(BOUNDARY, min_size=2, max_size=2, unique=True)))
        return [_interval(a, b)]
    if kind == "split":
        a, b, c, d = sorted(draw(st.lists(BOUNDARY, min_size=4, max_size=4, unique=True)))
        if draw(st.booleans()):
            c = b  # touching intervals: 08:00-12:00 and 12:00-17:00
        return [_interval(a, b), _interval(c, d)]
    # Open across midnight: the evening until 24:00 and/or the early morning from 00:00.
    a, b = sorted(draw(st.lists(BOUNDARY, min_size=2, max_size=2, unique=True)))
    shape = draw(st.sampled_from(["both", "evening", "morning"]))
    morning, evening = f"00:00-{_hhmm(a)}", f"{_hhmm(b)}-24:00"
    return {"both": [morning, evening], "evening": [evening], "morning": [morning]}[shape]


@st.composite
def week_hours(draw) -> dict[str, list[str]]:
    style = draw(st.sampled_from(["office", "random", "whole_week"]))
    if style == "office":
        weekday = draw(day_hours(allow_closed=False))
        hours = {d: list(weekday) for d in WEEKDAYS[:5]}
        hours["sat"] = draw(st.one_of(st.just([]), day_hours()))
        hours["sun"] = []
    elif style == "random":
        hours = {d: draw(day_hours()) for d in WEEKDAYS}
    else:
        hours = {d: ["00:00-24:00"] for d in WEEKDAYS}
    for d in WEEKDAYS:  # a missing weekday is closed, like an empty one
        if not hours[d] and draw(st.booleans()):
            del hours[d]
    return hours


def _weekly_minutes(hours: dict[str, list[str]]) -> int:
    return sum(e - s for specs in hours.values() for s, e in _spans(specs))


@st.composite
def starts(draw, timezone: str) -> datetime:
    """A whole UTC minute in 2026–2027, often within a week of a clock change or a holiday season."""
    where = draw(st.sampled_from(["dst", "anywhere", "holidays"]))
    if where == "anywhere":
        start = FIRST + draw(st.integers(0, SPAN_MINUTES)) * MINUTE
    else:
        anchor = draw(st.sampled_from(DST_DAYS[timezone] if where == "dst" else HOLIDAY_SEASONS))
        noon = datetime.combine(anchor, time(12), tzinfo=UTC)
        start = noon + draw(st.integers(-7 * DAY_MINUTES, 7 * DAY_MINUTES)) * MINUTE
    step = draw(st.sampled_from([60, 15, 1]))  # often on the hour or the quarter hour
    return start - (start.minute % step) * MINUTE


@st.composite
def scenarios(draw) -> tuple[Config, datetime]:
    timezone, country, subdivision = draw(st.sampled_from(REGIONS))
    start = draw(starts(timezone))
    if draw(st.integers(0, 9)) == 0:  # 24/7, holidays ignored
        return Config(timezone, {}, country, subdivision, always_open=True), start
    hours = draw(week_hours())
    assume(_weekly_minutes(hours) >= MIN_WEEKLY_MINUTES)
    local_day = start.astimezone(ZoneInfo(timezone)).date()
    nearby = st.integers(-2, 20).map(lambda k: local_day + timedelta(days=k))
    closed = tuple(draw(st.lists(nearby, max_size=3, unique=True)))
    special = draw(st.dictionaries(nearby, day_hours(), max_size=3))
    return Config(timezone, hours, country, subdivision, closed, special), start


def _local(config: Config, at: datetime) -> str:
    return at.astimezone(ZoneInfo(config.timezone)).strftime("%a %Y-%m-%d %H:%M %Z")


# -- properties ---------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(scenarios(), DURATIONS)
def test_add_business_time_matches_the_oracle_and_round_trips(scenario, minutes):
    """add_business_time counts open minutes like the oracle; business_time_between undoes it."""
    config, start = scenario
    cal = config.build()
    duration = timedelta(minutes=minutes)
    got = add_business_time(cal, start, duration)
    expected = Oracle(config).add(start, minutes)
    note(f"start {_local(config, start)}, expected {_local(config, expected)}, got {_local(config, got)}")
    assert got == expected
    assert got.utcoffset() == timedelta(0)
    # The round trip holds also for a closed start with d == 0 (the start comes back unchanged).
    assert business_time_between(cal, start, got) == duration


@settings(max_examples=150, deadline=None)
@given(scenarios(), st.integers(0, 14))
def test_a_deadline_on_a_closing_time_stays_there(scenario, day_offset):
    """Business time that runs out exactly at a close ends at that close, not at the next opening."""
    config, start = scenario
    oracle = Oracle(config)
    day = start.astimezone(oracle.tz).date() + timedelta(days=day_offset)
    for _, close in oracle.intervals(day):
        minutes = oracle.between(start, close) // MINUTE
        if minutes > 0:
            note(f"start {_local(config, start)}, {minutes} min, close {_local(config, close)}")
            assert add_business_time(config.build(), start, timedelta(minutes=minutes)) == close


@settings(max_examples=200, deadline=None)
@given(scenarios(), st.integers(-10 * DAY_MINUTES, 10 * DAY_MINUTES))
def test_business_time_between_matches_the_oracle(scenario, offset):
    """business_time_between counts the open minutes of [a, b) like the oracle, negated for b < a."""
    config, a = scenario
    b = a + offset * MINUTE
    got = business_time_between(config.build(), a, b)
    note(f"a {_local(config, a)}, b {_local(config, b)}")
    assert got == Oracle(config).between(a, b)


@settings(max_examples=200, deadline=None)
@given(scenarios(), DURATIONS, DURATIONS, st.integers(0, 3 * DAY_MINUTES), st.integers(0, 3 * DAY_MINUTES))
def test_arithmetic_is_monotonic_and_additive(scenario, d1, d2, shift, later):
    """Later starts and longer durations never give earlier deadlines; open time adds up over spans."""
    config, start = scenario
    cal = config.build()
    d1, d2 = sorted((d1, d2))
    t1 = add_business_time(cal, start, timedelta(minutes=d1))
    t2 = add_business_time(cal, start, timedelta(minutes=d2))
    assert t1 <= t2
    assert add_business_time(cal, start + shift * MINUTE, timedelta(minutes=d1)) >= t1
    b, c = start + shift * MINUTE, start + (shift + later) * MINUTE
    ab, bc, ac = (business_time_between(cal, x, y) for x, y in ((start, b), (b, c), (start, c)))
    assert timedelta(0) <= ab <= ac
    assert ab + bc == ac
    assert ac <= c - start


def _edges(oracle: Oracle, at: datetime) -> list[datetime]:
    """The openings and closes of the local date of ``at``, as UTC instants."""
    return [edge for span in oracle.intervals(at.astimezone(oracle.tz).date()) for edge in span]


@settings(max_examples=250, deadline=None)
@given(scenarios(), st.integers(1, 8), st.data())
def test_add_business_days_matches_the_oracle(scenario, days, data):
    """add_business_days: same local time on the n-th following business day, clamped to its hours."""
    config, start = scenario
    oracle = Oracle(config)
    edges = _edges(oracle, start)
    if edges and data.draw(st.booleans(), label="near an edge"):  # before opening, in a lunch break, …
        start = data.draw(st.sampled_from(edges)) + data.draw(st.integers(-90, 90)) * MINUTE
    begin = oracle.next_opening(start).astimezone(oracle.tz)
    assume(not 1 <= begin.hour < 4)  # no time of day inside the clock-change hours
    got = add_business_days(config.build(), start, days)
    expected = oracle.add_days(start, days)
    note(f"start {_local(config, start)}, expected {_local(config, expected)}, got {_local(config, got)}")
    assert got == expected
    assert got.utcoffset() == timedelta(0)


@settings(max_examples=150, deadline=None)
@given(scenarios(), st.lists(st.integers(-2 * DAY_MINUTES, 9 * DAY_MINUTES), min_size=1, max_size=30))
def test_is_open_matches_the_oracle(scenario, offsets):
    """is_open agrees with the oracle at random minutes and next to the day's edges, in UTC or local time."""
    config, start = scenario
    cal, oracle = config.build(), Oracle(config)
    edges = [edge + shift for edge in _edges(oracle, start) for shift in (-MINUTE, timedelta(0))]
    for at in [start + offset * MINUTE for offset in offsets] + edges:
        note(f"at {_local(config, at)}")
        assert cal.is_open(at) == oracle.is_open(at)
        assert cal.is_open(at.astimezone(oracle.tz)) == oracle.is_open(at)


@settings(max_examples=150, deadline=None)
@given(scenarios(), st.integers(-2, 20))
def test_open_intervals_match_the_oracle(scenario, day_offset):
    """open_intervals lists the local date's hours as UTC instants, in order (touching ones may join)."""
    config, start = scenario
    day = start.astimezone(ZoneInfo(config.timezone)).date() + timedelta(days=day_offset)
    got = open_intervals(config.build(), day)
    assert all(a.utcoffset() == timedelta(0) and a < b for a, b in got)
    assert got == sorted(got)
    assert _merge(got) == Oracle(config).intervals(day)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(REGIONS), st.integers(0, SPAN_MINUTES), st.integers(0, 60 * DAY_MINUTES))
def test_add_calendar_time_is_wall_clock_arithmetic(region, first, minutes):
    """add_calendar_time adds to the local wall clock: local result = local start + duration."""
    timezone = region[0]
    tz = ZoneInfo(timezone)
    start = FIRST + first * MINUTE
    wall = start.astimezone(tz).replace(tzinfo=None) + timedelta(minutes=minutes)
    assume(not 1 <= start.astimezone(tz).hour < 4 and not 1 <= wall.hour < 4)  # no gap, no fold
    got = add_calendar_time(Config(timezone).build(), start, timedelta(minutes=minutes))
    assert got.utcoffset() == timedelta(0)
    assert got.astimezone(tz).replace(tzinfo=None) == wall


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(REGIONS),
    st.data(),
    st.integers(60, 3 * 60 - 1),
    st.booleans(),
    st.one_of(st.integers(0, 60), st.integers(0, 3 * DAY_MINUTES)),
)
def test_add_calendar_time_never_goes_backwards(region, data, wall_minute, fold, minutes):
    """A calendar-time deadline is never before its start, also from inside the repeated autumn hour."""
    timezone = region[0]
    anchor = data.draw(st.sampled_from(DST_DAYS[timezone]), label="clock change")
    # A local time between 01:00 and 03:00 of a clock-change day; fold=1 picks the repeated hour's second pass.
    wall = time(wall_minute // 60, wall_minute % 60, fold=int(fold))
    start = datetime.combine(anchor, wall, tzinfo=ZoneInfo(timezone)).astimezone(UTC)
    got = add_calendar_time(Config(timezone).build(), start, timedelta(minutes=minutes))
    note(f"start {_local(Config(timezone), start)} + {minutes} min → {_local(Config(timezone), got)}")
    assert got >= start


# -- named cases ----------------------------------------------------------------------------------

OFFICE = {d: ["08:00-17:00"] for d in WEEKDAYS[:5]}
BAVARIA = Config("Europe/Berlin", OFFICE, "DE", "BY")
SPLIT = Config("Europe/Berlin", {**OFFICE, "tue": ["08:00-12:00", "13:00-17:00"]}, "DE", "BY")
SHORT_FRIDAY = Config("Europe/Berlin", {**OFFICE, "fri": ["08:00-14:00"]}, "DE", "BY")
LATE_WEDNESDAY = Config("Europe/Berlin", {**OFFICE, "wed": ["10:00-17:00"]}, "DE", "BY")
CHRISTMAS = Config("Europe/Berlin", OFFICE, "DE", "BY", special_hours={date(2026, 12, 24): ["08:00-12:00"]})
ALWAYS = Config("Europe/Berlin", country="DE", subdivision="BY", always_open=True)
WHOLE_DAYS = Config("Europe/Berlin", {d: ["00:00-24:00"] for d in WEEKDAYS})


def berlin(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_friday_afternoon_plus_four_business_hours_is_monday_late_morning():
    """Fri 2026-11-20 16:30 + 4 business hours (Mon–Fri 08–17) → Mon 2026-11-23 11:30 CET."""
    got = add_business_time(BAVARIA.build(), berlin(2026, 11, 20, 16, 30), timedelta(hours=4))
    assert got == utc(2026, 11, 23, 10, 30)
    assert got.utcoffset() == timedelta(0)


def test_bavaria_closes_on_good_friday_and_easter_monday():
    """The holidays package lists Good Friday (04-03) and Easter Monday (04-06) 2026 for DE-BY."""
    by = holidays.country_holidays("DE", subdiv="BY", years=2026)
    assert date(2026, 4, 3) in by and date(2026, 4, 6) in by
    assert date(2026, 4, 2) not in by and date(2026, 4, 7) not in by


def test_maundy_thursday_eight_hours_from_nine_end_that_evening():
    """Thu 2026-04-02 09:00 + 8 business hours → Thu 17:00 CEST: exactly the day's remaining hours."""
    got = add_business_time(BAVARIA.build(), berlin(2026, 4, 2, 9, 0), timedelta(hours=8))
    assert got == utc(2026, 4, 2, 15, 0)


def test_maundy_thursday_eight_hours_from_ten_skip_easter():
    """Thu 2026-04-02 10:00 + 8 h: 7 h Thursday, Good Friday to Easter Monday closed → Tue 04-07 09:00 CEST."""
    got = add_business_time(BAVARIA.build(), berlin(2026, 4, 2, 10, 0), timedelta(hours=8))
    assert got == utc(2026, 4, 7, 7, 0)


def test_christmas_eve_half_day_then_two_holidays_and_the_weekend():
    """Thu 2026-12-24 11:00 + 2 h, 24th 08–12, 25th/26th holidays → 1 h Thu, 1 h Mon → Mon 12-28 09:00 CET."""
    got = add_business_time(CHRISTMAS.build(), berlin(2026, 12, 24, 11, 0), timedelta(hours=2))
    assert got == utc(2026, 12, 28, 8, 0)


def test_christmas_eve_with_the_28th_closed_ends_on_the_29th():
    """As before with 2026-12-28 a closed date → Tue 2026-12-29 09:00 CET."""
    config = Config("Europe/Berlin", OFFICE, "DE", "BY", (date(2026, 12, 28),), CHRISTMAS.special_hours)
    got = add_business_time(config.build(), berlin(2026, 12, 24, 11, 0), timedelta(hours=2))
    assert got == utc(2026, 12, 29, 8, 0)


@pytest.mark.parametrize("config", [ALWAYS, WHOLE_DAYS], ids=["always_open", "00-24"])
def test_spring_forward_night_four_hours_is_three_on_the_clock(config):
    """24/7: Sat 2026-03-28 23:00 CET + 4 h → Sun 2026-03-29 04:00 CEST (the clock skips 02:00–03:00)."""
    got = add_business_time(config.build(), berlin(2026, 3, 28, 23, 0), timedelta(hours=4))
    assert got == utc(2026, 3, 29, 2, 0)
    assert got.astimezone(BERLIN).hour == 4


@pytest.mark.parametrize("config", [ALWAYS, WHOLE_DAYS], ids=["always_open", "00-24"])
def test_fall_back_night_four_hours_end_at_three(config):
    """24/7: Sun 2026-10-25 00:00 CEST + 4 h → 03:00 CET (02:00–03:00 happens twice)."""
    got = add_business_time(config.build(), berlin(2026, 10, 25, 0, 0), timedelta(hours=4))
    assert got == utc(2026, 10, 25, 2, 0)
    assert got.astimezone(BERLIN).hour == 3


def test_new_york_thanksgiving_is_skipped():
    """US-NY, Mon–Fri 09–17: Wed 2026-11-25 16:00 EST + 2 h → Fri 11-27 10:00 EST (Thanksgiving closed)."""
    config = Config("America/New_York", {d: ["09:00-17:00"] for d in WEEKDAYS[:5]}, "US", "NY")
    got = add_business_time(config.build(), datetime(2026, 11, 25, 16, 0, tzinfo=NEW_YORK), timedelta(hours=2))
    assert got == utc(2026, 11, 27, 15, 0)


def test_zero_duration_returns_the_start_even_when_closed():
    """Sat 2026-11-21 10:00 CET (closed) + 0 → Sat 10:00 CET unchanged, not Monday's opening."""
    start = utc(2026, 11, 21, 9, 0)
    assert add_business_time(BAVARIA.build(), start, timedelta(0)) == start


def test_closed_start_counts_from_the_next_opening():
    """Sun 2026-11-22 15:00 + 30 min → Mon 2026-11-23 08:30 CET."""
    got = add_business_time(BAVARIA.build(), berlin(2026, 11, 22, 15, 0), timedelta(minutes=30))
    assert got == utc(2026, 11, 23, 7, 30)


def test_split_day_skips_the_lunch_break():
    """Tue 08–12 + 13–17: Tue 2026-11-24 11:30 + 1 h → Tue 13:30 CET."""
    got = add_business_time(SPLIT.build(), berlin(2026, 11, 24, 11, 30), timedelta(hours=1))
    assert got == utc(2026, 11, 24, 12, 30)


def test_negative_duration_is_rejected():
    """A negative business duration is an error (ValueError), not a deadline in the past."""
    with pytest.raises(ValueError):
        add_business_time(BAVARIA.build(), utc(2026, 11, 23, 9, 0), timedelta(minutes=-1))


# business days


def test_two_business_days_after_close_start_at_next_opening():
    """Mon 2026-11-23 18:00 + 2 business days → Tue 08:00 plus two days → Thu 2026-11-26 08:00 CET."""
    got = add_business_days(BAVARIA.build(), berlin(2026, 11, 23, 18, 0), 2)
    assert got == utc(2026, 11, 26, 7, 0)


def test_two_business_days_inside_hours_keep_the_time_of_day():
    """Mon 2026-11-23 10:00 + 2 business days → Wed 2026-11-25 10:00 CET."""
    got = add_business_days(BAVARIA.build(), berlin(2026, 11, 23, 10, 0), 2)
    assert got == utc(2026, 11, 25, 9, 0)


def test_business_day_landing_after_an_early_close_is_close_of_business():
    """Fri closes 14:00: Thu 2026-11-19 16:00 + 1 business day → Fri 2026-11-20 14:00 CET."""
    got = add_business_days(SHORT_FRIDAY.build(), berlin(2026, 11, 19, 16, 0), 1)
    assert got == utc(2026, 11, 20, 13, 0)


def test_business_day_after_friday_close_starts_monday_morning():
    """Fri closes 14:00: Fri 2026-11-20 16:00 → Mon 08:00 → + 1 business day → Tue 2026-11-24 08:00 CET."""
    got = add_business_days(SHORT_FRIDAY.build(), berlin(2026, 11, 20, 16, 0), 1)
    assert got == utc(2026, 11, 24, 7, 0)


def test_business_day_landing_before_a_late_opening_is_the_opening():
    """Wed opens 10:00: Tue 2026-11-24 09:00 + 1 business day → Wed 2026-11-25 10:00 CET."""
    got = add_business_days(LATE_WEDNESDAY.build(), berlin(2026, 11, 24, 9, 0), 1)
    assert got == utc(2026, 11, 25, 9, 0)


def test_business_day_landing_in_the_lunch_break_is_the_morning_close():
    """Tue 08–12 + 13–17 (documented: latest close before): Mon 2026-11-23 12:30 + 1 → Tue 12:00 CET."""
    got = add_business_days(SPLIT.build(), berlin(2026, 11, 23, 12, 30), 1)
    assert got == utc(2026, 11, 24, 11, 0)


def test_business_day_skips_easter_holidays():
    """DE-BY: Thu 2026-04-02 10:00 + 1 business day → Tue 2026-04-07 10:00 CEST (Fri and Mon holidays)."""
    got = add_business_days(BAVARIA.build(), berlin(2026, 4, 2, 10, 0), 1)
    assert got == utc(2026, 4, 7, 8, 0)


def test_business_day_across_the_autumn_clock_change_keeps_local_time():
    """Fri 2026-10-23 10:00 CEST + 1 business day → Mon 2026-10-26 10:00 CET (09:00 UTC)."""
    got = add_business_days(BAVARIA.build(), berlin(2026, 10, 23, 10, 0), 1)
    assert got == utc(2026, 10, 26, 9, 0)


# calendar time


def test_one_calendar_week_across_october_dst_keeps_nine_o_clock():
    """Mon 2026-10-19 09:00 CEST + 7 days → Mon 2026-10-26 09:00 CET (169 real hours)."""
    got = add_calendar_time(BAVARIA.build(), berlin(2026, 10, 19, 9, 0), timedelta(days=7))
    assert got == utc(2026, 10, 26, 8, 0)
    assert got.utcoffset() == timedelta(0)


def test_one_calendar_week_across_march_dst_keeps_nine_o_clock():
    """Mon 2026-03-23 09:00 CET + 7 days → Mon 2026-03-30 09:00 CEST (167 real hours)."""
    got = add_calendar_time(BAVARIA.build(), berlin(2026, 3, 23, 9, 0), timedelta(days=7))
    assert got == utc(2026, 3, 30, 7, 0)


def test_one_calendar_day_on_the_fall_back_weekend_is_twenty_five_hours():
    """Sat 2026-10-24 12:00 CEST + 1 day → Sun 2026-10-25 12:00 CET, also outside the opening hours."""
    got = add_calendar_time(BAVARIA.build(), berlin(2026, 10, 24, 12, 0), timedelta(days=1))
    assert got == utc(2026, 10, 25, 11, 0)


def test_calendar_time_from_the_repeated_hour_stays_in_the_second_pass():
    """Sun 2026-10-25 02:15 CET (second pass, 01:15 UTC) + 30 min → 02:45 CET (01:45 UTC), not 02:45 CEST."""
    start = utc(2026, 10, 25, 1, 15)
    got = add_calendar_time(ALWAYS.build(), start, timedelta(minutes=30))
    assert got == utc(2026, 10, 25, 1, 45)


# business_time_between


def test_between_equal_instants_is_zero():
    """between(t, t) = 0, inside and outside the hours (Mon 2026-11-23 10:00 and Sat 11-21 10:00)."""
    cal = BAVARIA.build()
    for t in (berlin(2026, 11, 23, 10, 0), berlin(2026, 11, 21, 10, 0)):
        assert business_time_between(cal, t, t) == timedelta(0)


def test_between_in_reverse_order_is_negative():
    """Mon 2026-11-23 11:30 back to Fri 11-20 16:30 → −4 h (forwards +4 h)."""
    cal = BAVARIA.build()
    fri, mon = berlin(2026, 11, 20, 16, 30), berlin(2026, 11, 23, 11, 30)
    assert business_time_between(cal, fri, mon) == timedelta(hours=4)
    assert business_time_between(cal, mon, fri) == -timedelta(hours=4)


def test_between_from_before_opening_counts_from_eight():
    """Mon 2026-11-23 06:00 → 10:00 CET counts 08:00–10:00 = 2 h."""
    assert business_time_between(BAVARIA.build(), berlin(2026, 11, 23, 6, 0), berlin(2026, 11, 23, 10, 0)) == (
        timedelta(hours=2)
    )


def test_between_from_after_close_counts_the_next_morning():
    """Mon 2026-11-23 18:00 → Tue 09:00 CET counts Tue 08:00–09:00 = 1 h."""
    assert business_time_between(BAVARIA.build(), berlin(2026, 11, 23, 18, 0), berlin(2026, 11, 24, 9, 0)) == (
        timedelta(hours=1)
    )


def test_between_across_easter_counts_no_holiday():
    """DE-BY: Thu 2026-04-02 16:00 → Tue 04-07 09:00 CEST = 1 h Thursday + 1 h Tuesday."""
    assert business_time_between(BAVARIA.build(), berlin(2026, 4, 2, 16, 0), berlin(2026, 4, 7, 9, 0)) == (
        timedelta(hours=2)
    )


def test_between_a_whole_week():
    """Mon 2026-11-23 00:00 → Mon 11-30 00:00 CET = 5 × 9 h = 45 h."""
    assert business_time_between(BAVARIA.build(), berlin(2026, 11, 23, 0, 0), berlin(2026, 11, 30, 0, 0)) == (
        timedelta(hours=45)
    )


# open_intervals and is_open


def test_open_intervals_of_a_split_day():
    """Tue 2026-11-24 08–12 + 13–17 CET → [07:00–11:00 UTC, 12:00–16:00 UTC]."""
    assert open_intervals(SPLIT.build(), date(2026, 11, 24)) == [
        (utc(2026, 11, 24, 7, 0), utc(2026, 11, 24, 11, 0)),
        (utc(2026, 11, 24, 12, 0), utc(2026, 11, 24, 16, 0)),
    ]


def test_open_intervals_of_a_holiday_and_a_weekend_are_empty():
    """Good Friday 2026-04-03 (DE-BY) and Sat 2026-11-21 → no intervals."""
    cal = BAVARIA.build()
    assert open_intervals(cal, date(2026, 4, 3)) == []
    assert open_intervals(cal, date(2026, 11, 21)) == []


def test_open_intervals_of_a_half_day():
    """Christmas Eve 2026-12-24 special 08–12 CET → [07:00–11:00 UTC]."""
    assert open_intervals(CHRISTMAS.build(), date(2026, 12, 24)) == [
        (utc(2026, 12, 24, 7, 0), utc(2026, 12, 24, 11, 0))
    ]


@pytest.mark.parametrize("config", [ALWAYS, WHOLE_DAYS], ids=["always_open", "00-24"])
def test_open_intervals_on_clock_change_days_are_23_and_25_hours(config):
    """24/7: 2026-03-29 is 00:00 CET–24:00 CEST (23 h); 2026-10-25 is 00:00 CEST–24:00 CET (25 h)."""
    cal = config.build()
    assert open_intervals(cal, date(2026, 3, 29)) == [(utc(2026, 3, 28, 23, 0), utc(2026, 3, 29, 22, 0))]
    assert open_intervals(cal, date(2026, 10, 25)) == [(utc(2026, 10, 24, 22, 0), utc(2026, 10, 25, 23, 0))]


def test_is_open_at_the_boundaries():
    """Mon 2026-11-23: 07:59 closed, 08:00 open, 16:59 open, 17:00 closed (hours are [start, end))."""
    cal = BAVARIA.build()
    assert not cal.is_open(berlin(2026, 11, 23, 7, 59))
    assert cal.is_open(berlin(2026, 11, 23, 8, 0))
    assert cal.is_open(utc(2026, 11, 23, 15, 59))
    assert not cal.is_open(utc(2026, 11, 23, 16, 0))


def test_always_open_ignores_holidays():
    """always_open with DE-BY: Christmas Day 2026-12-25 03:00 CET is open."""
    assert ALWAYS.build().is_open(berlin(2026, 12, 25, 3, 0))


def test_special_hours_beat_holidays_and_closed_dates_beat_weekdays():
    """Special 10–12 on Good Friday 2026-04-03 → open at 11:00 CEST; closed Mon 2026-11-23 → shut at 11:00."""
    config = Config("Europe/Berlin", OFFICE, "DE", "BY", (date(2026, 11, 23),), {date(2026, 4, 3): ["10:00-12:00"]})
    cal = config.build()
    assert cal.is_open(berlin(2026, 4, 3, 11, 0))
    assert not cal.is_open(berlin(2026, 4, 3, 9, 0))
    assert not cal.is_open(berlin(2026, 11, 23, 11, 0))
