"""Business calendars: when a queue is open, and business-time arithmetic over it. Pure functions:
nothing here reads a clock, the configuration or the database. The calendar value itself
(``BusinessCalendar``: building it from configuration, which hours of a day are open) is in
``mailbridge/business_calendar.py``, below the settings that build it; its names are re-exported here.

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

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from mailbridge.business_calendar import (
    MINUTES_PER_DAY,
    WEEKDAYS,
    BusinessCalendar,
    Interval,
    as_utc,
    day_intervals,
    local_instant,
    open_intervals,
    parse_intervals,
)

__all__ = [
    "MAX_SEARCH_DAYS",
    "MINUTES_PER_DAY",
    "WEEKDAYS",
    "BusinessCalendar",
    "DayCount",
    "Interval",
    "add_business_days",
    "add_business_time",
    "add_calendar_time",
    "business_time_between",
    "explain",
    "next_opening",
    "open_intervals",
    "parse_intervals",
]

# How far the arithmetic searches for the next opening before it gives up: a calendar closed for a
# whole year is a configuration mistake, not a deadline.
MAX_SEARCH_DAYS = 400


def _intervals_from(cal: BusinessCalendar, start: datetime) -> Iterator[tuple[datetime, datetime]]:
    """Opening intervals that end after ``start``, clipped to begin no earlier than it, in order."""
    day = start.astimezone(cal.tz).date() - timedelta(days=1)  # yesterday's may run past midnight
    for _ in range(MAX_SEARCH_DAYS + 2):
        for a, b in day_intervals(cal, day):
            if b > start:
                yield max(a, start), b
        day += timedelta(days=1)
    raise ValueError(f"the calendar has no opening within {MAX_SEARCH_DAYS} days of {start.isoformat()}")


# -- the arithmetic ------------------------------------------------------------------------------


def add_business_time(cal: BusinessCalendar, start: datetime, duration: timedelta) -> datetime:
    """The instant at which ``duration`` of open time has passed since ``start``."""
    start = as_utc(start)
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
    a, b = as_utc(a), as_utc(b)
    if b < a:
        return -business_time_between(cal, b, a)
    total = timedelta(0)
    day = a.astimezone(cal.tz).date() - timedelta(days=1)
    last = b.astimezone(cal.tz).date()
    while day <= last:
        for s, e in day_intervals(cal, day):
            lo, hi = max(s, a), min(e, b)
            if hi > lo:
                total += hi - lo
        day += timedelta(days=1)
    return total


def next_opening(cal: BusinessCalendar, at: datetime) -> datetime:
    """``at`` when open, else the next instant the calendar opens."""
    a, _ = next(_intervals_from(cal, as_utc(at)))
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
    at = local_instant(cal, day, target)
    return at + timedelta(seconds=begin.second, microseconds=begin.microsecond) if target == minute else at


def add_calendar_time(cal: BusinessCalendar, start: datetime, duration: timedelta) -> datetime:
    """Wall-clock arithmetic in the calendar's zone: the same local time ``duration`` later."""
    local = as_utc(start).astimezone(cal.tz)
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
    a, b = as_utc(a), as_utc(b)
    out: list[DayCount] = []
    day, last = a.astimezone(cal.tz).date(), (b - timedelta(microseconds=1)).astimezone(cal.tz).date()
    while day <= last and b > a:
        counted = timedelta(0)
        for s, e in day_intervals(cal, day):
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
