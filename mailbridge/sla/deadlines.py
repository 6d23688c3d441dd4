"""Deadlines of a case from the queue's severity scheme and calendar: the severity a new mail asks
for, and when its first response and resolution are due. Built once from the settings; pure (no
clock, no database): callers pass the start.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from babel.dates import format_datetime

from mailbridge.settings import Settings
from mailbridge.sla.calendar import BusinessCalendar, add_business_time
from mailbridge.sla.hours import SupportHours, describe
from mailbridge.sla.policy import SeverityLevel, SeverityScheme, due

# How a deadline reads in an acknowledgement ("bis spätestens Montag, 23.11.2026, 13:00 Uhr MEZ").
DEADLINE_FORMATS = {
    "de": "EEEE, dd.MM.yyyy, HH:mm 'Uhr' zzz",
    "en": "EEEE, d MMMM yyyy, HH:mm zzzz",
}


@dataclass(frozen=True)
class Assessment:
    """What the scheme makes of a case: its level, the words that chose it, and the due times."""

    level: SeverityLevel | None
    words: str | None
    first_response_due: datetime | None
    resolution_due: datetime | None


NO_PROMISE = Assessment(None, None, None, None)


@dataclass(frozen=True)
class Customer:
    """The organisation a case's requester belongs to and whether it is promised a response time."""

    organisation: str | None
    contract: str | None
    # False: the queue requires a contract and there is none (seed 003): no deadlines.
    promised: bool = True


class Deadlines:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.calendars: dict[str, BusinessCalendar] = {c.name: c.calendar() for c in settings.calendars}
        self.schemes: dict[str, SeverityScheme] = {s.name: s.scheme() for s in settings.severity_schemes}
        self.queues = {q.name: q for q in settings.queues}

    def scheme(self, queue: str) -> SeverityScheme | None:
        q = self.queues.get(queue)
        return self.schemes.get(q.severity_scheme) if q is not None and q.severity_scheme else None

    def level(self, queue: str, key: str | None) -> SeverityLevel | None:
        scheme = self.scheme(queue)
        if scheme is None or key is None:
            return None
        return next((lv for lv in scheme.levels if lv.key == key), None)

    def calendar_name(self, queue: str, organisation: str | None = None) -> str | None:
        """The calendar a case counts in: its organisation's (the contract partner's seat, seed
        000), else its queue's."""
        org = self.settings.organisation(organisation)
        if org is not None and org.calendar is not None:
            return org.calendar
        q = self.queues.get(queue)
        return q.calendar if q is not None else None

    def calendar(self, queue: str, organisation: str | None = None) -> BusinessCalendar | None:
        name = self.calendar_name(queue, organisation)
        return self.calendars.get(name) if name else None

    def customer(self, queue: str, email: str) -> Customer:
        """Who ``email`` belongs to, and whether the queue promises them a response time."""
        org = self.settings.organisation_for(email)
        return self.customer_of(queue, org.name if org else None, org.contract if org else None)

    def customer_of(self, queue: str, organisation: str | None, contract: str | None) -> Customer:
        """A case's stored organisation and contract, and whether the queue promises it anything."""
        q = self.queues.get(queue)
        promised = contract is not None or q is None or not q.contract_required
        return Customer(organisation, contract, promised)

    def assess(
        self, queue: str, subject: str, text: str, start: datetime, customer: Customer | None = None
    ) -> Assessment:
        """The severity a new case's mail asks for, and its deadlines counted from ``start``."""
        scheme = self.scheme(queue)
        if scheme is None:
            return NO_PROMISE
        level, words = scheme.detect(subject, text)
        return self._for(queue, level, words, start, customer or Customer(None, None), 0)

    def for_level(
        self, queue: str, key: str, start: datetime, customer: Customer | None = None, paused_seconds: int = 0
    ) -> Assessment:
        """Deadlines for level ``key`` (an agent's #severity, a recompute), counted from ``start``
        (the case's creation) and moved on by the business time the case has been paused."""
        level = self.level(queue, key)
        if level is None:
            return NO_PROMISE
        return self._for(queue, level, None, start, customer or Customer(None, None), paused_seconds)

    def _for(
        self, queue: str, level: SeverityLevel, words: str | None, start: datetime, customer: Customer, paused: int
    ) -> Assessment:
        cal = self.calendar(queue, customer.organisation)
        if cal is None or not customer.promised:
            return Assessment(level, words, None, None)

        def at(target) -> datetime | None:
            if target is None:
                return None
            d = due(cal, start, target)
            return add_business_time(cal, d, timedelta(seconds=paused)) if paused else d

        return Assessment(level, words, at(level.first_response), at(level.resolution))

    def format(self, queue: str, at: datetime, language: str, organisation: str | None = None) -> str:
        """``at`` as a customer reads it: in the calendar's zone and the customer's language."""
        cal = self.calendar(queue, organisation)
        tz = cal.tz if cal is not None else None
        lang = language if language in DEADLINE_FORMATS else "en"
        return format_datetime(at, DEADLINE_FORMATS[lang], locale=lang, tzinfo=tz)

    def support_hours(
        self, queue: str, organisation: str | None, language: str, now: datetime, until: datetime | None
    ) -> SupportHours | None:
        """The support hours of the calendar that applies to this customer (its organisation's, else the
        queue's) in ``language``, as valid at ``now`` (MEZ or MESZ), with the closure days up to
        ``until`` (the promised first response; None: no closures). None when there is no calendar."""
        cal = self.calendar(queue, organisation)
        return describe(cal, language, now, until) if cal is not None else None
