"""A business calendar as a value: its time zone, opening hours per weekday, public holidays, closed
dates and special hours (or open around the clock), built and checked from configuration values by
``BusinessCalendar.build``, and which hours of a given day are open (as UTC instants).

Settings build these while they validate the configuration; the business-time arithmetic over them
(deadlines, time between two instants) is in ``mailbridge/sla/calendar.py``. Pure: nothing here reads a
clock, the configuration or the database. How opening hours map to instants on days on which the
clocks change: see ``mailbridge/sla/calendar.py``.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import holidays as holidays_lib

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# "08:00-17:00"; the end may be 24:00 (midnight at the end of the day).
_INTERVAL_RE = re.compile(r"^\s*([01]\d|2[0-3]):([0-5]\d)\s*-\s*([01]\d|2[0-3]|24):([0-5]\d)\s*$")
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
        at = as_utc(at)
        return any(s <= at < e for s, e in open_intervals(self, at.astimezone(self.tz).date()))


@lru_cache(maxsize=256)
def _holidays(country: str, subdivision: str | None, year: int):
    return holidays_lib.country_holidays(country, subdiv=subdivision, years=year)


def local_instant(cal: BusinessCalendar, day: date, minute: int) -> datetime:
    """Local ``day`` + ``minute`` (0..1440) as an aware UTC instant (see the module docstring)."""
    if minute >= MINUTES_PER_DAY:
        day, minute = day + timedelta(days=1), minute - MINUTES_PER_DAY
    local = datetime.combine(day, time(minute // 60, minute % 60), tzinfo=cal.tz)  # fold=0: first pass
    return local.astimezone(UTC)


@lru_cache(maxsize=4096)
def day_intervals(cal: BusinessCalendar, day: date) -> tuple[tuple[datetime, datetime], ...]:
    out = []
    for s, e in cal.hours_on(day):
        a, b = local_instant(cal, day, s), local_instant(cal, day, e)
        if b > a:
            out.append((a, b))
    return tuple(out)


def open_intervals(cal: BusinessCalendar, day: date) -> list[tuple[datetime, datetime]]:
    """The opening intervals of the local date ``day`` as aware UTC instants, in order."""
    return list(day_intervals(cal, day))


def as_utc(at: datetime) -> datetime:
    if at.tzinfo is None:
        raise ValueError("naive datetime: pass an aware time")
    return at.astimezone(UTC)
