"""What the reports share: their parameters (checked, with errors that name the parameter), the
zone their times are shown in, the period's local bounds, and business time counted quickly."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo

from mailbridge.reports import ReportError
from mailbridge.sla.calendar import BusinessCalendar, day_intervals

# Without --from/--to: the last four weeks up to today.
DEFAULT_DAYS = 28


def check_filters(app, params: dict) -> None:
    """Unknown queues, organisations or severity keys are errors, not empty reports."""
    q = params.get("queue")
    queues = [x.name for x in app.settings.queues]
    if q and q not in queues:
        raise ReportError(f"queue: no queue {q!r} (queues: {', '.join(queues)})")
    o = params.get("organisation")
    orgs = [x.name for x in app.settings.organisations]
    if o and o not in orgs:
        raise ReportError(f"organisation: no organisation {o!r} (organisations: {', '.join(orgs) or 'none'})")
    sev = params.get("severity")
    if sev:
        keys = {lv.key for s in app.deadlines.schemes.values() for lv in s.levels}
        if sev not in keys:
            raise ReportError(f"severity: no severity level {sev!r} (levels: {', '.join(sorted(keys)) or 'none'})")


def report_zone(app, params: dict) -> tzinfo:
    """The zone of the business calendar the report's cases count in (views.zone_of): the queue's
    when one is chosen, else the calendars' zone when they all share one, else UTC."""
    from mailbridge.views import zone_of

    return zone_of(app, params.get("queue"), params.get("organisation"))


def _as_date(value, key: str) -> date | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise ReportError(f"{key}: {value!r} is not a date (YYYY-MM-DD)") from None


@dataclass(frozen=True)
class Span:
    """[start, end) in UTC from the local dates --from and --to (both included) in ``tz``."""

    first: date
    last: date
    start: datetime
    end: datetime

    def describe(self, tz: tzinfo) -> str:
        return f"{self.first.isoformat()} to {self.last.isoformat()} (both included, {getattr(tz, 'key', tz)})"


def local_midnight(day: date, tz: tzinfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)


def span(params: dict, tz: tzinfo, now: datetime) -> Span:
    today = now.astimezone(tz).date()
    last = _as_date(params.get("to"), "to") or today
    first = _as_date(params.get("from"), "from") or (last - timedelta(days=DEFAULT_DAYS - 1))
    if first > last:
        raise ReportError(f"from: {first} is after to: {last}")
    return Span(first, last, local_midnight(first, tz), local_midnight(last + timedelta(days=1), tz))


def period_start(day: date, period: str) -> date:
    """The first local date of the period (day, ISO week from Monday, month) ``day`` lies in."""
    if period == "day":
        return day
    if period == "week":
        return day - timedelta(days=day.weekday())
    if period == "month":
        return day.replace(day=1)
    raise ReportError(f"period: {period!r} is not one of day, week, month")


def next_period(day: date, period: str) -> date:
    if period == "day":
        return day + timedelta(days=1)
    if period == "week":
        return day + timedelta(days=7)
    return (day.replace(day=28) + timedelta(days=4)).replace(day=1)


def period_label(day: date, period: str) -> str:
    if period == "week":
        y, w, _ = day.isocalendar()
        return f"{y}-W{w:02d}"
    if period == "month":
        return day.strftime("%Y-%m")
    return day.isoformat()


def periods(s: Span, period: str) -> list[date]:
    """The starts of the periods that meet the span, in order."""
    out, d = [], period_start(s.first, period)
    while d <= s.last:
        out.append(d)
        d = next_period(d, period)
    return out


class OpenTime:
    """Business time of one calendar, counted as a difference of a running total: ``between(a, b)``
    equals ``sla.calendar.business_time_between`` (tested), but costs two lookups instead of a walk
    over every day between, which matters for 100,000 cases. The totals per local date are filled in
    as they are asked for."""

    def __init__(self, cal: BusinessCalendar):
        self.cal = cal
        self.tz = cal.tz
        self._origin: date | None = None
        self._cum: list[float] = [0.0]  # open seconds of the days origin .. origin+i-1 (whole)
        self._days: dict[date, tuple[tuple[datetime, datetime], ...]] = {}

    def _intervals(self, day: date) -> tuple[tuple[datetime, datetime], ...]:
        got = self._days.get(day)
        if got is None:
            got = self._days[day] = day_intervals(self.cal, day)
        return got

    def _whole_before(self, day: date) -> float:
        """Open seconds of every interval of the days from the origin up to (not including) ``day``."""
        assert self._origin is not None
        if day < self._origin:
            self._rebase(day)
        i = (day - self._origin).days
        while len(self._cum) <= i:
            d = self._origin + timedelta(days=len(self._cum) - 1)
            self._cum.append(self._cum[-1] + sum((b - a).total_seconds() for a, b in self._intervals(d)))
        return self._cum[i]

    def _rebase(self, day: date) -> None:
        self._origin = day - timedelta(days=400)
        self._cum = [0.0]

    def _upto(self, t: datetime) -> float:
        """Open seconds of all intervals (of days from the origin) before the instant ``t``."""
        day = t.astimezone(self.tz).date()
        if self._origin is None:
            self._rebase(day)
        # An interval of a day may run past its midnight (a 24-hour day), not past the next one:
        # the days before yesterday count whole.
        total = self._whole_before(day - timedelta(days=1))
        for d in (day - timedelta(days=1), day):
            for a, b in self._intervals(d):
                if t > a:
                    total += (min(b, t) - a).total_seconds()
        return total

    def between(self, a: datetime, b: datetime) -> timedelta:
        """Open time in [a, b); negative when b is before a."""
        if b < a:
            return -self.between(b, a)
        lo = self._upto(a)  # may move the origin back; b is not earlier, so counting it does not
        hi = self._upto(b)
        return timedelta(seconds=hi - lo)


class Clocks:
    """The business-time counters of the app's calendars, built once per report."""

    def __init__(self, app):
        self.app = app
        self._by_name: dict[str, OpenTime] = {}

    def of(self, queue: str, organisation: str | None) -> OpenTime | None:
        name = self.app.deadlines.calendar_name(queue, organisation)
        if name is None or name not in self.app.deadlines.calendars:
            return None
        ot = self._by_name.get(name)
        if ot is None:
            ot = self._by_name[name] = OpenTime(self.app.deadlines.calendars[name])
        return ot

    def hours(self, queue: str, organisation: str | None, a: datetime, b: datetime) -> float | None:
        """Business hours from a to b on the case's calendar (None: the case has no calendar)."""
        ot = self.of(queue, organisation)
        return None if ot is None else ot.between(a, b).total_seconds() / 3600
