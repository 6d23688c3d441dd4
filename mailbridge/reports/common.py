"""What the reports share: their parameters (checked, with errors that name the parameter), the
zone their times are shown in, the period's local bounds, and business time counted quickly."""

from __future__ import annotations

from bisect import bisect_right
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
    equals ``sla.calendar.business_time_between`` (tested), but costs two binary searches over the
    opening intervals (as POSIX seconds) instead of a walk over every day between, which matters for
    100,000 cases. The intervals are laid out for the days asked about, and further as needed."""

    # How many days around a first question the intervals are laid out for.
    MARGIN_DAYS = 400

    def __init__(self, cal: BusinessCalendar):
        self.cal = cal
        self.tz = cal.tz
        self._first: date | None = None  # the first and last local day laid out
        self._last: date | None = None
        self._starts: list[float] = []
        self._ends: list[float] = []
        self._before: list[float] = []  # open seconds of all intervals before interval i
        self._lo = self._hi = 0.0  # the instants (POSIX seconds) safely inside the laid-out days

    def _lay_out(self, first: date, last: date) -> None:
        starts, ends, before, total = [], [], [], 0.0
        day = first
        while day <= last:
            for a, b in day_intervals(self.cal, day):
                sa, sb = a.timestamp(), b.timestamp()
                if starts and sa < ends[-1]:  # an interval running past midnight meets the next day's
                    sa = ends[-1]
                if sb <= sa:
                    continue
                starts.append(sa)
                ends.append(sb)
                before.append(total)
                total += sb - sa
            day += timedelta(days=1)
        self._first, self._last = first, last
        self._starts, self._ends, self._before = starts, ends, before

    def _covered(self, t: datetime) -> float:
        """``t`` as POSIX seconds, the intervals laid out around it."""
        ts = t.timestamp()
        if self._lo <= ts < self._hi:
            return ts
        day = t.astimezone(self.tz).date()
        first = day - timedelta(days=self.MARGIN_DAYS)
        last = day + timedelta(days=self.MARGIN_DAYS)
        if self._first is not None and self._last is not None:
            first, last = min(first, self._first), max(last, self._last)
        self._lay_out(first, last)
        # Safely inside: the days at either end may lack the neighbour's interval past midnight.
        self._lo = datetime.combine(first + timedelta(days=2), time(0), tzinfo=self.tz).timestamp()
        self._hi = datetime.combine(last - timedelta(days=1), time(0), tzinfo=self.tz).timestamp()
        return ts

    def seconds_ts(self, a: float, b: float) -> float:
        """Open seconds in [a, b) of two POSIX times (as ``store.report_queries.epoch`` gives them)."""
        for ts in (a, b):
            if not (self._lo <= ts < self._hi):
                self._covered(datetime.fromtimestamp(ts, UTC))
        return self._upto(b) - self._upto(a)

    def _upto(self, ts: float) -> float:
        """Open seconds of the laid-out intervals before the instant ``ts``."""
        i = bisect_right(self._starts, ts) - 1
        if i < 0:
            return 0.0
        return self._before[i] + min(ts, self._ends[i]) - self._starts[i]

    def seconds(self, a: datetime, b: datetime) -> float:
        """Open seconds in [a, b) (negative when b is before a)."""
        ta, tb = self._covered(a), self._covered(b)
        return self._upto(tb) - self._upto(ta)

    def between(self, a: datetime, b: datetime) -> timedelta:
        """Open time in [a, b); negative when b is before a."""
        return timedelta(seconds=self.seconds(a, b))


class Clocks:
    """The business-time counters of the app's calendars, built once per report."""

    def __init__(self, app):
        self.app = app
        self._by_name: dict[str, OpenTime] = {}
        self._by_case: dict[tuple[str, str | None], OpenTime | None] = {}

    def of(self, queue: str, organisation: str | None) -> OpenTime | None:
        key = (queue, organisation)
        if key in self._by_case:
            return self._by_case[key]
        self._by_case[key] = found = self._of(queue, organisation)
        return found

    def _of(self, queue: str, organisation: str | None) -> OpenTime | None:
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
        return None if ot is None else ot.seconds(a, b) / 3600
