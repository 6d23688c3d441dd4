"""Business calendars: when a queue is open, and business-time arithmetic over it. Pure functions:
nothing here reads a clock, the configuration or the database.

A calendar has a time zone, opening hours per weekday (several intervals a day for split days;
``00:00-24:00`` for the whole day), public holidays from the ``holidays`` package for a country and
subdivision (seed 000: the holidays at the seat of the contract partner), extra closed dates, and
special hours for single dates or every year on a month and day (half days such as 24 and 31
December; on a weekend or holiday such a day stays closed) — or it is open always (24/7).

Opening hours are local wall-clock times; each local date's intervals are turned into UTC instants
with ``zoneinfo``, so a day on which the clocks change has its real length (a 24-hour day is 23 or 25
hours long). A boundary inside the spring-forward gap (02:00–03:00 in Europe/Berlin) moves forward
by the gap; boundaries inside the repeated autumn hour mean the first pass. Support hours do not
start or end in the small hours, so neither case arises in practice.

Durations come in three kinds:

- **business time** (``add_business_time``): only open time counts; a start outside the hours
  counts from the next opening ("4 business hours" from Friday 16:30 with 08:00–17:00 is Monday 11:30);
- **business days** (``add_business_days``): the same local time of day on the n-th following
  business day (a day with any opening). A start outside the hours is first moved to the next
  opening. When the target day opens later than that time of day, the deadline is its opening;
  when it is closed at that time of day, its latest close before it (close of business; the
  morning's close on a split day's lunch break). "2 business days" from Monday 18:00 is Thursday
  08:00 (Tuesday 08:00 plus two business days);
- **calendar time** (``add_calendar_time``): wall-clock arithmetic in the calendar's zone ("one week"
  is the same local time seven days later, also across a clock change).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import holidays as holidays_lib

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# "08:00-17:00"; the end may be 24:00 (midnight at the end of the day).
_INTERVAL_RE = re.compile(r"^\s*([01]\d|2[0-3]):([0-5]\d)\s*-\s*([01]\d|2[0-3]|24):([0-5]\d)\s*$")
# How far the arithmetic searches for the next opening before it gives up: a calendar closed for a
# whole year is a configuration mistake, not a deadline.
MAX_SEARCH_DAYS = 400
MINUTES_PER_DAY = 24 * 60

Interval = tuple[int, int]  # minutes after local midnight, [start, end)


def parse_intervals(specs: Iterable[str]) -> tuple[Interval, ...]:
    """``["08:00-12:00", "13:00-17:00"]`` → ((480, 720), (780, 1020)), sorted, non-overlapping.

    Raises:
        ValueError: a malformed interval, an end not after its start, or overlapping intervals.
    """
    out: list[Interval] = []
    for spec in specs:
        m = _INTERVAL_RE.match(spec)
        if not m:
            raise ValueError(f"{spec!r} is not an interval like '08:00-17:00'")
        start = int(m.group(1)) * 60 + int(m.group(2))
        end = int(m.group(3)) * 60 + int(m.group(4))
        if end > MINUTES_PER_DAY or end <= start:
            raise ValueError(f"{spec!r}: the end must be after the start (24:00 at the latest)")
        out.append((start, end))
    out.sort()
    for (_, e1), (s2, _) in itertools.pairwise(out):
        if s2 < e1:
            raise ValueError(f"opening hours overlap: {specs!r}")
    return tuple(out)


@dataclass(frozen=True)
class BusinessCalendar:
    tz: ZoneInfo
    # Index 0 = Monday.
    weekly: tuple[tuple[Interval, ...], ...]
    country: str | None = None
    subdivision: str | None = None
    closed_dates: frozenset[date] = frozenset()
    # (date, intervals) pairs: a tuple, so that a calendar is hashable (its intervals are cached).
    special: tuple[tuple[date, tuple[Interval, ...]], ...] = ()
    always_open: bool = False
    # Every year: special hours by (month, day) (24 and 31 December as half days), closed days.
    special_yearly: tuple[tuple[tuple[int, int], tuple[Interval, ...]], ...] = ()
    closed_yearly: frozenset[tuple[int, int]] = frozenset()
    _special_map: dict[date, tuple[Interval, ...]] = field(default_factory=dict, compare=False, hash=False, repr=False)
    _yearly_map: dict[tuple[int, int], tuple[Interval, ...]] = field(
        default_factory=dict, compare=False, hash=False, repr=False
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "_special_map", dict(self.special))
        object.__setattr__(self, "_yearly_map", dict(self.special_yearly))

    @classmethod
    def build(
        cls,
        *,
        timezone: str,
        hours: Mapping[str, Iterable[str]] | None = None,
        country: str | None = None,
        subdivision: str | None = None,
        closed_dates: Iterable[date] = (),
        special_hours: Mapping[date | tuple[int, int], Iterable[str]] | None = None,
        always_open: bool = False,
    ) -> BusinessCalendar:
        """A calendar from configuration values (see the module docstring).

        Raises:
            ValueError: an unknown zone, weekday, country or subdivision, or malformed hours.
        """
        try:
            tz = ZoneInfo(timezone)
        except Exception as e:
            raise ValueError(f"unknown time zone {timezone!r}") from e
        hours = hours or {}
        unknown = set(hours) - set(WEEKDAYS)
        if unknown:
            raise ValueError(f"unknown weekday {sorted(unknown)[0]!r} (use {', '.join(WEEKDAYS)})")
        weekly = tuple(parse_intervals(hours.get(d, ())) for d in WEEKDAYS)
        if country is not None:
            supported = holidays_lib.list_supported_countries()
            if country not in supported:
                raise ValueError(f"the holidays package knows no country {country!r}")
            if subdivision is not None and subdivision not in supported[country]:
                raise ValueError(
                    f"country {country} has no subdivision {subdivision!r} "
                    f"(the holidays package knows {', '.join(supported[country]) or 'none'})"
                )
        special, yearly = [], []
        for d, v in (special_hours or {}).items():
            (special if isinstance(d, date) else yearly).append((d, parse_intervals(v)))
        closed = [d for d in closed_dates if isinstance(d, date)]
        closed_yearly = [d for d in closed_dates if not isinstance(d, date)]
        for month, day in [*closed_yearly, *(d for d, _ in yearly)]:
            date(2024, month, day)  # ValueError for 02-30 and the like (2024: 29 February exists)
        return cls(
            tz,
            weekly,
            country,
            subdivision,
            frozenset(closed),
            tuple(sorted(special)),
            always_open,
            special_yearly=tuple(sorted(yearly)),
            closed_yearly=frozenset(closed_yearly),
        )

    # -- which days and hours are open ---------------------------------------------------------

    def holiday_name(self, day: date) -> str | None:
        if self.country is None:
            return None
        return _holidays(self.country, self.subdivision, day.year).get(day)

    def hours_on(self, day: date) -> tuple[Interval, ...]:
        """The local opening intervals of ``day`` (special hours beat closed dates beat holidays)."""
        if self.always_open:
            return ((0, MINUTES_PER_DAY),)
        if day in self._special_map:
            return self._special_map[day]
        if day in self.closed_dates or (day.month, day.day) in self.closed_yearly:
            return ()
        if (day.month, day.day) in self._yearly_map:
            # A yearly half day replaces a working day's hours; on a weekend or holiday it stays shut.
            if self.weekly[day.weekday()] and self.holiday_name(day) is None:
                return self._yearly_map[(day.month, day.day)]
            return ()
        if self.holiday_name(day) is not None:
            return ()
        return self.weekly[day.weekday()]

    def is_open(self, at: datetime) -> bool:
        at = _check(at)
        return any(s <= at < e for s, e in open_intervals(self, at.astimezone(self.tz).date()))


@lru_cache(maxsize=256)
def _holidays(country: str, subdivision: str | None, year: int):
    return holidays_lib.country_holidays(country, subdiv=subdivision, years=year)


def _utc(cal: BusinessCalendar, day: date, minute: int) -> datetime:
    """Local ``day`` + ``minute`` (0..1440) as an aware UTC instant (see the module docstring)."""
    if minute >= MINUTES_PER_DAY:
        day, minute = day + timedelta(days=1), minute - MINUTES_PER_DAY
    local = datetime.combine(day, time(minute // 60, minute % 60), tzinfo=cal.tz)  # fold=0: first pass
    return local.astimezone(UTC)


@lru_cache(maxsize=4096)
def _intervals_cached(cal: BusinessCalendar, day: date) -> tuple[tuple[datetime, datetime], ...]:
    out = []
    for s, e in cal.hours_on(day):
        a, b = _utc(cal, day, s), _utc(cal, day, e)
        if b > a:
            out.append((a, b))
    return tuple(out)


def open_intervals(cal: BusinessCalendar, day: date) -> list[tuple[datetime, datetime]]:
    """The opening intervals of the local date ``day`` as aware UTC instants, in order."""
    return list(_intervals_cached(cal, day))


def _intervals_from(cal: BusinessCalendar, start: datetime) -> Iterator[tuple[datetime, datetime]]:
    """Opening intervals that end after ``start``, clipped to begin no earlier than it, in order."""
    day = start.astimezone(cal.tz).date() - timedelta(days=1)  # yesterday's may run past midnight
    for _ in range(MAX_SEARCH_DAYS + 2):
        for a, b in _intervals_cached(cal, day):
            if b > start:
                yield max(a, start), b
        day += timedelta(days=1)
    raise ValueError(f"the calendar has no opening within {MAX_SEARCH_DAYS} days of {start.isoformat()}")


def _check(at: datetime) -> datetime:
    if at.tzinfo is None:
        raise ValueError("naive datetime: pass an aware time")
    return at.astimezone(UTC)


# -- the arithmetic ------------------------------------------------------------------------------


def add_business_time(cal: BusinessCalendar, start: datetime, duration: timedelta) -> datetime:
    """The instant at which ``duration`` of open time has passed since ``start``."""
    start = _check(start)
    if duration < timedelta(0):
        raise ValueError("duration must not be negative")
    if duration == timedelta(0):
        return start
    left = duration
    for a, b in _intervals_from(cal, start):
        if b - a >= left:
            return a + left
        left -= b - a
    raise AssertionError("unreachable")  # _intervals_from raises when it runs out


def business_time_between(cal: BusinessCalendar, a: datetime, b: datetime) -> timedelta:
    """Open time in [a, b); negative when b is before a."""
    a, b = _check(a), _check(b)
    if b < a:
        return -business_time_between(cal, b, a)
    total = timedelta(0)
    day = a.astimezone(cal.tz).date() - timedelta(days=1)
    last = b.astimezone(cal.tz).date()
    while day <= last:
        for s, e in _intervals_cached(cal, day):
            lo, hi = max(s, a), min(e, b)
            if hi > lo:
                total += hi - lo
        day += timedelta(days=1)
    return total


def next_opening(cal: BusinessCalendar, at: datetime) -> datetime:
    """``at`` when open, else the next instant the calendar opens."""
    a, _ = next(_intervals_from(cal, _check(at)))
    return a


def add_business_days(cal: BusinessCalendar, start: datetime, days: int) -> datetime:
    """The same local time of day on the ``days``-th following business day (module docstring)."""
    if days < 0:
        raise ValueError("days must not be negative")
    begin = next_opening(cal, start).astimezone(cal.tz)
    minute = begin.hour * 60 + begin.minute
    day = begin.date()
    for _ in range(days):
        day += timedelta(days=1)
        for _ in range(MAX_SEARCH_DAYS):
            if cal.hours_on(day):
                break
            day += timedelta(days=1)
        else:
            raise ValueError(f"the calendar has no business day within {MAX_SEARCH_DAYS} days of {day}")
    if not days:
        return begin.astimezone(UTC)
    hours = cal.hours_on(day)
    # Within an interval: that moment. Before the day opens: its opening. Otherwise the latest
    # close at or before that time of day (its close of business; on a split day the lunch break
    # counts back to the morning's close).
    target = hours[0][0] if minute < hours[0][0] else None
    for s, e in hours:
        if s <= minute < e:
            target = minute
        elif e <= minute:
            target = e
    assert target is not None
    at = _utc(cal, day, target)
    return at + timedelta(seconds=begin.second, microseconds=begin.microsecond) if target == minute else at


def add_calendar_time(cal: BusinessCalendar, start: datetime, duration: timedelta) -> datetime:
    """Wall-clock arithmetic in the calendar's zone: the same local time ``duration`` later."""
    local = _check(start).astimezone(cal.tz)
    # Keep the fold: a start in the second pass of the repeated autumn hour must not come out an
    # hour earlier (before the start itself).
    wall = local.replace(tzinfo=None) + duration
    return wall.replace(tzinfo=cal.tz, fold=local.fold).astimezone(UTC)


@dataclass(frozen=True)
class DayCount:
    """One local day of a span, for ``mailbridge sla explain``: how much open time it counted, or
    why it counted none."""

    day: date
    counted: timedelta
    note: str  # "" | "holiday: <name>" | "closed date" | "special hours 08:00-12:00" | "no hours on <weekday>"


def explain(cal: BusinessCalendar, a: datetime, b: datetime) -> list[DayCount]:
    """The open time each local day contributes to [a, b), with the reason for days that count none
    or count differently (holidays, closed dates, special hours)."""
    a, b = _check(a), _check(b)
    out: list[DayCount] = []
    day, last = a.astimezone(cal.tz).date(), (b - timedelta(microseconds=1)).astimezone(cal.tz).date()
    while day <= last and b > a:
        counted = timedelta(0)
        for s, e in _intervals_cached(cal, day):
            lo, hi = max(s, a), min(e, b)
            if hi > lo:
                counted += hi - lo
        out.append(DayCount(day, counted, _day_note(cal, day)))
        day += timedelta(days=1)
    return out


def _fmt(intervals: tuple[Interval, ...]) -> str:
    return ", ".join(f"{s // 60:02d}:{s % 60:02d}-{e // 60:02d}:{e % 60:02d}" for s, e in intervals) or "closed"


def _day_note(cal: BusinessCalendar, day: date) -> str:
    if cal.always_open:
        return ""
    if day in cal._special_map:
        return f"special hours {_fmt(cal._special_map[day])}"
    if day in cal.closed_dates or (day.month, day.day) in cal.closed_yearly:
        return "closed date"
    if (day.month, day.day) in cal._yearly_map and cal.hours_on(day):
        return f"special hours {_fmt(cal._yearly_map[(day.month, day.day)])}"
    name = cal.holiday_name(day)
    if name is not None:
        return f"holiday: {name}"
    if not cal.weekly[day.weekday()]:
        return f"no hours on {WEEKDAYS[day.weekday()]}"
    return ""
