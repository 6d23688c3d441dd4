"""Schedules in words ("mon 08:00", "mon,wed 08:00", "weekdays 07:30", "daily 07:30",
"first of month 08:00") and their due times in a time zone.

A schedule is turned into APScheduler's ``CronTrigger`` fields; all date arithmetic (months, daylight
saving time) is the trigger's. ``last_due(now)`` is the latest due time at or before ``now``: the
one a scheduled report or digest owes when the service was down across it (``scheduled.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# Words for sets of days.
DAY_WORDS = {"daily": "*", "weekdays": "mon-fri", "weekends": "sat,sun"}
EXAMPLES = '"mon 08:00", "mon,wed 08:00", "weekdays 07:30", "daily 07:30", "first of month 08:00"'
# How far back a due time is looked for, widening: the schedules in words recur at least monthly, a
# digest's crontab line at least yearly.
_LOOKBACK = (timedelta(days=1), timedelta(days=8), timedelta(days=32), timedelta(days=367))


class ScheduleError(ValueError):
    """A schedule that is not one of the forms in ``EXAMPLES``; the text says what is wrong."""


@dataclass(frozen=True)
class Schedule:
    text: str
    timezone: str
    day_of_week: str  # CronTrigger's day_of_week
    day: str  # CronTrigger's day (of month)
    hour: int
    minute: int

    @property
    def trigger(self) -> CronTrigger:
        return CronTrigger(
            day_of_week=self.day_of_week, day=self.day, hour=self.hour, minute=self.minute, timezone=self.timezone
        )

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def last_due(self, now: datetime) -> datetime | None:
        """The latest due time at or before ``now``."""
        return last_fire(self.trigger, now)


def parse(text: str, timezone: str) -> Schedule:
    """The schedule ``text`` in ``timezone``; raises ScheduleError naming what is wrong."""
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"{timezone!r} is not a time zone (e.g. Europe/Berlin)") from None
    words = text.strip().lower().split()
    if not words:
        raise ScheduleError(f"empty; write e.g. {EXAMPLES}")
    *days, clock = words
    try:
        at = time.fromisoformat(clock)
    except ValueError:
        raise ScheduleError(f"{text!r}: {clock!r} is not a time of day (HH:MM); write e.g. {EXAMPLES}") from None
    if at.second or at.microsecond or at.tzinfo:
        raise ScheduleError(f"{text!r}: give the time as HH:MM")
    day, dow = "*", "*"
    if days == ["first", "of", "month"]:
        day = "1"
    elif len(days) == 1 and days[0] in DAY_WORDS:
        dow = DAY_WORDS[days[0]]
    elif len(days) == 1:
        names = days[0].split(",")
        for n in names:
            ends = n.split("-")
            if not (1 <= len(ends) <= 2 and all(e in DAY_NAMES for e in ends)):
                raise ScheduleError(
                    f"{text!r}: {n!r} is not a day ({', '.join(DAY_NAMES)}, a range mon-fri, "
                    f"or daily, weekdays, weekends, first of month)"
                )
        dow = ",".join(names)
    else:
        raise ScheduleError(f"{text!r}: not a schedule; write e.g. {EXAMPLES}")
    s = Schedule(text.strip(), timezone, dow, day, at.hour, at.minute)
    try:
        s.trigger  # noqa: B018 - APScheduler has the last word on the fields
    except ValueError as e:
        raise ScheduleError(f"{text!r}: {e}") from None
    return s


def from_crontab(cron: str, timezone: str) -> CronTrigger:
    """A digest's crontab line (``digests.cron``) as a trigger."""
    return CronTrigger.from_crontab(cron, timezone=timezone)


def last_fire(trigger: CronTrigger, now: datetime) -> datetime | None:
    """The latest fire time of ``trigger`` at or before ``now`` (within the last year)."""
    for back in _LOOKBACK:
        last = None
        t = trigger.get_next_fire_time(None, now - back)
        while t is not None and t <= now:
            last = t
            t = trigger.get_next_fire_time(t, t + timedelta(seconds=1))
        if last is not None:
            return last
    return None
