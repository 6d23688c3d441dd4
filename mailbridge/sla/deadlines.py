"""Deadlines of a case from the queue's severity scheme and calendar: the severity a new mail asks
for, and when its first response and resolution are due. Built once from the settings; pure (no
clock, no database): callers pass the start.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from babel.dates import format_datetime

from mailbridge.settings import Settings
from mailbridge.sla.calendar import BusinessCalendar
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


class Deadlines:
    def __init__(self, settings: Settings):
        self.calendars: dict[str, BusinessCalendar] = {c.name: c.calendar() for c in settings.calendars}
        self.schemes: dict[str, SeverityScheme] = {s.name: s.scheme() for s in settings.severity_schemes}
        self.queues = {q.name: q for q in settings.queues}

    def _parts(self, queue: str) -> tuple[SeverityScheme | None, BusinessCalendar | None]:
        q = self.queues[queue]
        scheme = self.schemes.get(q.severity_scheme) if q.severity_scheme else None
        cal = self.calendars.get(q.calendar) if q.calendar else None
        return scheme, cal

    def assess(self, queue: str, subject: str, text: str, start: datetime) -> Assessment:
        """The severity a new case's mail asks for, and its deadlines counted from ``start``."""
        scheme, _ = self._parts(queue)
        if scheme is None:
            return NO_PROMISE
        level, words = scheme.detect(subject, text)
        return self._for(queue, level, words, start)

    def for_level(self, queue: str, key: str, start: datetime) -> Assessment:
        """Deadlines for level ``key`` (an agent's #severity), counted from ``start`` (the case's creation)."""
        scheme, _ = self._parts(queue)
        if scheme is None:
            return NO_PROMISE
        return self._for(queue, scheme.level(key), None, start)

    def _for(self, queue: str, level: SeverityLevel, words: str | None, start: datetime) -> Assessment:
        _, cal = self._parts(queue)
        if cal is None:
            return Assessment(level, words, None, None)
        return Assessment(
            level,
            words,
            due(cal, start, level.first_response) if level.first_response else None,
            due(cal, start, level.resolution) if level.resolution else None,
        )

    def format(self, queue: str, at: datetime, language: str) -> str:
        """``at`` as a customer reads it: in the queue calendar's zone and the customer's language."""
        _, cal = self._parts(queue)
        tz = cal.tz if cal is not None else None
        lang = language if language in DEADLINE_FORMATS else "en"
        return format_datetime(at, DEADLINE_FORMATS[lang], locale=lang, tzinfo=tz)
