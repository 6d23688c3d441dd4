"""Manager digests: per queue, what is breached, what is at risk in the next business hours, counts
per severity and organisation, and the oldest open cases; as text and HTML, through the outbox.

Built from indexed queries over the active cases of the digest's queues: the breached and at-risk
lists read only cases with a running clock due before the horizon; the counts are GROUP BYs; the
oldest cases are one ORDER BY … LIMIT. "At risk" uses each case's own calendar (an organisation's
seat may differ from the queue's): the horizon is ``at_risk_hours`` business hours from now on it.

Sending is exactly once per digest and due time, also with several instances: the due time's
``schedule_runs`` row is claimed in the transaction that queues the mail (``store/schedule_runs.py``;
the outbox key ``digest:<name>:<due>`` besides). Which due time is owed — also one that fell due while
the service was down, then marked "sent late" — and that a closed day of the digest's calendar sends
nothing is decided by ``scheduled.py``. Nothing is sent when nothing is breached or at risk unless
``send_empty``; the run row records that too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import structlog
from babel.dates import format_datetime, format_timedelta

from mailbridge.outbound import compose as comp
from mailbridge.outbound.outbox import enqueue
from mailbridge.settings import DigestSettings, Settings
from mailbridge.sla.calendar import add_business_time
from mailbridge.sla.clock import ClockName
from mailbridge.sla.deadlines import Deadlines
from mailbridge.store import schedule_runs
from mailbridge.store import sla_queries as sq
from mailbridge.store.db import IntegrityError, Session, session_scope

log = structlog.get_logger(__name__)

TIME_FORMAT = {"de": "EEE dd.MM. HH:mm zzz", "en": "EEE d MMM HH:mm zzz"}
# At most this many cases per list and queue; the totals are always given.
MAX_LINES = 50


@dataclass(frozen=True)
class Line:
    case_number: str
    subject: str
    organisation: str | None
    severity: str
    status: str
    clock: str  # which clock is breached / at risk (empty for the oldest list)
    due: str  # formatted
    delta: str  # "overdue by 3 hours" / "due in 2 hours" / "open for 5 days"


@dataclass
class QueueDigest:
    queue: str
    display_name: str
    active: int = 0
    breached: list[Line] = field(default_factory=list)
    at_risk: list[Line] = field(default_factory=list)
    # How many there are in all (the lists show the first MAX_LINES, most urgent first).
    breached_total: int = 0
    at_risk_total: int = 0
    by_severity: list[tuple[str, int]] = field(default_factory=list)
    by_organisation: list[tuple[str, int]] = field(default_factory=list)
    oldest: list[Line] = field(default_factory=list)


@dataclass
class Digest:
    name: str
    language: str
    generated: str
    queues: list[QueueDigest]
    # The due time, formatted ("Mo 08:00"), when the digest goes out late (the service was down).
    late: str | None = None

    @property
    def empty(self) -> bool:
        return not any(q.breached_total or q.at_risk_total for q in self.queues)

    @property
    def breached_total(self) -> int:
        return sum(q.breached_total for q in self.queues)

    @property
    def at_risk_total(self) -> int:
        return sum(q.at_risk_total for q in self.queues)


class Digests:
    def __init__(self, settings: Settings, deadlines: Deadlines, templates):
        self.settings = settings
        self.deadlines = deadlines
        self.templates = templates

    def _fmt(self, at: datetime, lang: str, tz) -> str:
        return format_datetime(at, TIME_FORMAT.get(lang, TIME_FORMAT["en"]), locale=lang, tzinfo=tz)

    def build(self, session: Session, d: DigestSettings, now: datetime) -> Digest:
        lang = d.language
        queues = [q for q in self.settings.queues if d.queues is None or q.name in d.queues]
        out = []
        for q in queues:
            qd = QueueDigest(q.name, q.display_name)
            scheme = self.deadlines.scheme(q.name)
            order = {lv.key: i for i, lv in enumerate(scheme.levels)} if scheme else {}

            def label(key: str | None, _q=q) -> str:
                lv = self.deadlines.level(_q.name, key)
                return lv.label(lang) if lv else (key or "–")

            # The horizon per calendar the queue's cases count in (queue's and organisations').
            cal_names = {self.deadlines.calendar_name(q.name, None)} | {
                o.calendar for o in self.settings.organisations if o.calendar
            }
            horizons = {
                name: add_business_time(self.deadlines.calendars[name], now, timedelta(hours=d.at_risk_hours))
                for name in cal_names
                if name in self.deadlines.calendars
            }
            far = max(horizons.values(), default=now)
            breached: list[tuple[datetime, str, Line]] = []
            at_risk: list[tuple[datetime, str, Line]] = []
            # The running clocks (paused cases are not counted).
            for clock in (ClockName.FIRST_RESPONSE, ClockName.UPDATE, ClockName.RESOLUTION):
                for case, subject, org, sev, status, _created, due in sq.running_clock_due(
                    session, q.name, clock.value, far
                ):
                    cal = self.deadlines.calendar(q.name, org)
                    tz = cal.tz if cal else None
                    name = self.deadlines.calendar_name(q.name, org)
                    if due < now:
                        delta = format_timedelta(now - due, locale=lang, threshold=1.1)
                        target = breached
                    elif due <= horizons.get(name or "", now):
                        delta = format_timedelta(due - now, locale=lang, threshold=1.1)
                        target = at_risk
                    else:
                        continue
                    line = Line(
                        case, subject, org, label(sev), status, clock.label(lang), self._fmt(due, lang, tz), delta
                    )
                    target.append((due, case, line))
            qd.breached = [line for *_, line in sorted(breached)][:MAX_LINES]
            qd.at_risk = [line for *_, line in sorted(at_risk)][:MAX_LINES]
            qd.breached_total, qd.at_risk_total = len(breached), len(at_risk)
            qd.active = sq.active_count(session, q.name)
            sev_rows = sq.active_by_severity(session, q.name)
            qd.by_severity = [
                (label(k), n) for k, n in sorted(sev_rows, key=lambda r: (order.get(r[0], len(order)), r[0] or ""))
            ]
            org_rows = sq.active_by_organisation(session, q.name)
            qd.by_organisation = sorted(
                ((o or ("(ohne Zuordnung)" if lang == "de" else "(none)"), n) for o, n in org_rows),
                key=lambda r: (-r[1], r[0]),
            )
            if d.oldest:
                for case, subject, org, sev, status, created in sq.oldest_active(session, q.name, d.oldest):
                    cal = self.deadlines.calendar(q.name, org)
                    qd.oldest.append(
                        Line(
                            case,
                            subject,
                            org,
                            label(sev),
                            status,
                            "",
                            self._fmt(created, lang, cal.tz if cal else None),
                            format_timedelta(now - created, locale=lang, threshold=1.1),
                        )
                    )
            out.append(qd)
        return Digest(d.name, lang, self._fmt(now, lang, ZoneInfo(d.timezone)), out)

    def render(self, digest: Digest) -> tuple[str, str, str]:
        """Subject, text and HTML of a digest."""
        ctx = {"digest": digest, "queues": digest.queues}
        lang = digest.language
        subject = self.templates.render(lang, "digest.subject.j2", **ctx).strip()
        return (
            subject,
            self.templates.render(lang, "digest.txt.j2", **ctx),
            self.templates.render(lang, "digest.html.j2", **ctx),
        )

    def send(
        self, session_factory, d: DigestSettings, now: datetime, due_at: datetime | None = None, late: str | None = None
    ) -> int | None:
        """Build the digest due at ``due_at`` (default: this minute) and queue it, claiming the due
        time in the same transaction; None when there was nothing to report (and ``send_empty`` is
        off), or when another instance (or an earlier run) claimed the due time already. Whether a
        due time is owed, and closed days of the digest's calendar: ``scheduled.py``. ``late``: the due time as the
        mail says it ("Mo 08:00") when it goes out late."""
        due_at = due_at or now.replace(second=0, microsecond=0)
        run = f"digest:{d.name}"
        try:
            with session_scope(session_factory) as s:
                digest = self.build(s, d, now)
                if digest.empty and not d.send_empty:
                    schedule_runs.claim(s, run, due_at, now, "nothing_to_report")
                    log.info("digest_skipped", digest=d.name, reason="nothing to report")
                    return None
                digest.late = late
                subject, text, html = self.render(digest)
                q = next(q for q in self.settings.queues if d.queues is None or q.name in d.queues)
                out = comp.compose(
                    from_name=q.display_name,
                    from_addr=q.address,
                    to=[("", a) for a in d.recipients],
                    subject=subject,
                    text=text,
                    html=html,
                    date=now,
                    auto_submitted="auto-generated",
                    language=d.language,
                )
                key = f"{run}:{due_at.astimezone(UTC).isoformat()}"
                outbox_id = enqueue(s, out, kind="digest", dedup_key=key, now=now, ticket_id=None)
                schedule_runs.claim(s, run, due_at, now, "late" if late else "sent", outbox_id)
        except IntegrityError:
            log.info("digest_already_queued", digest=d.name, due=due_at.isoformat())
            return None
        log.info(
            "digest_queued",
            digest=d.name,
            due=due_at.isoformat(),
            late=bool(late),
            breached=digest.breached_total,
            at_risk=digest.at_risk_total,
        )
        return outbox_id
