"""The pipeline step that keeps a case's SLA clocks right after everything a mail did to it.

It runs last, when the mail's status changes, answers and commands are applied, and then:

- **pauses** the clocks when the case went pending and the queue pauses (``pause_while_pending``),
  and **resumes** them when it became active again: every due time still ahead at the pause moves
  on by the business time the case waited (stored in ``paused_seconds`` for recomputing);
- **restarts the follow-up clock** when an agent's answer reached the customer (or the severity
  changed): the next answer is due ``follow_up`` after this one;
- **escalates on creation** a new case whose level asks for it (seed 001: class A goes straight to
  the head of development), in this mail's transaction;
- stores when the escalation job has to look at the case next.

A case without a response promise (no calendar, no scheme, no contract where one is required) has
no clocks; nothing here does anything for it.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from types import MappingProxyType

import structlog

from mailbridge.domain import TicketStatus
from mailbridge.ingest.mail import InboundMail
from mailbridge.settings import Settings
from mailbridge.sla.calendar import add_business_time, add_calendar_time, business_time_between
from mailbridge.sla.deadlines import Deadlines
from mailbridge.sla.escalation import Escalations, clock_state
from mailbridge.sla.policy import Recipients, Stage, Target, TargetKind, due
from mailbridge.sla.recompute import move_by_pauses, pauses_from_events
from mailbridge.store import repositories as repo
from mailbridge.store.models import Ticket
from mailbridge.vocabulary import CLOCKS_NOT_STARTED

log = structlog.get_logger(__name__)

# A case someone is working on, and one that rests (waiting for the customer, or finished).
ACTIVE = (TicketStatus.NEW, TicketStatus.OPEN)
RESTING = (TicketStatus.PENDING, TicketStatus.SOLVED, TicketStatus.CLOSED)

# Ticket columns this step sets → ClockFacts fields (the follow-up period's start is what the
# clocks call last_answer_at).
FACT_OF_COLUMN = {"update_started_at": "last_answer_at"}
# The clock columns of a case without clocks (an archived case: ArchiveClocks).
NO_CLOCKS = MappingProxyType(
    {"first_response_due": None, "resolution_due": None, "update_due": None, "next_escalation_at": None}
)
# The stage an escalation on creation is sent as.
ON_CREATE = Stage(0, Recipients.ESCALATION, urgent=True)


class TrackClocks:
    """Pauses and resumes a case's clocks, restarts the follow-up clock, escalates on creation and
    stores the escalation job's next check (see the module docstring)."""

    name = "track_clocks"

    def __init__(self, settings: Settings, deadlines: Deadlines, escalations: Escalations):
        self.settings = settings
        self.deadlines = deadlines
        self.escalations = escalations

    def __call__(self, mail: InboundMail) -> None:
        if mail.ticket is None:
            return
        state = clock_state(mail.session, mail.ticket.id)
        assert state is not None
        ref, f = state
        cal = self.deadlines.calendar(ref.queue, ref.organisation)
        level = self.deadlines.level(ref.queue, ref.severity)
        if (
            cal is None
            or level is None
            or not self.deadlines.customer_of(ref.queue, ref.organisation, ref.contract).promised
        ):
            return
        values = self._pause_or_resume(mail, ref, f, cal, level)
        values.update(self._follow_up(mail, ref, f, cal, level))
        # When the escalation job has to look next, from the clocks as this mail left them (one
        # UPDATE with the rest).
        after = replace(
            f,
            **{FACT_OF_COLUMN.get(k, k): v for k, v in values.items() if k != "last_answer_at"},
        )
        values["next_escalation_at"] = self.escalations.next_check(ref, after, mail.now)
        repo.update_row(mail.session, Ticket, ref.id, values)
        if mail.new_ticket and level.escalate_on_create:
            mail.write_events()  # "created" and the rest come before the escalation in the history
            self.escalations.send(
                mail.session, ref, kind="created", stage=ON_CREATE, dedup_key=f"esc:{ref.id}:created", now=mail.now
            )

    def _pause_or_resume(self, mail: InboundMail, ref, f, cal, level) -> dict:
        """Pause the clocks of a case that went pending (where the queue pauses), or resume them: every
        due time still ahead at the pause moves on by the time the case waited."""
        q = self.settings.queue(ref.queue)
        now = mail.now
        values: dict = {}
        if ref.status == TicketStatus.PENDING and q.pause_while_pending and f.paused_at is None:
            values["paused_at"] = now
            mail.event("clock_paused")
        elif ref.status != TicketStatus.PENDING and f.paused_at is not None:
            paused = business_time_between(cal, f.paused_at, now)
            wall = now - f.paused_at

            def moved(at: datetime, target: Target | None) -> datetime:
                # A wall-clock target ("24 hours") waits for wall-clock time, the others for open time.
                if target is not None and target.kind == TargetKind.CALENDAR_HOURS:
                    return add_calendar_time(cal, at, wall)
                return add_business_time(cal, at, paused)

            for col, at, target in (
                (
                    "first_response_due",
                    f.first_response_due if f.first_response_at is None else None,
                    level.first_response,
                ),
                ("resolution_due", f.resolution_due, level.resolution),
            ):
                # A deadline that had passed before the pause stays passed.
                if at is not None and at > f.paused_at:
                    values[col] = moved(at, target)
            values["paused_at"] = None
            values["paused_seconds"] = ref.paused_seconds + int(paused.total_seconds())
            mail.event(
                "clock_resumed",
                paused_since=f.paused_at.isoformat(),
                paused_business_seconds=int(paused.total_seconds()),
                paused_wall_seconds=int(wall.total_seconds()),
                **{k: v.isoformat() for k, v in values.items() if k.endswith("_due") and v is not None},
            )
        return values

    def _follow_up(self, mail: InboundMail, ref, f, cal, level) -> dict:
        """Restart the follow-up clock after an answer reached the customer, or a case became active
        again; follow a severity change."""
        now = mail.now
        values: dict = {}
        # A case that became active again (reopened, or back from pending) owes its customer a new
        # follow-up from now on: the time it rested is nobody's delay.
        reactivated = any(
            e["kind"] == "status_changed"
            and e["ticket_id"] == ref.id
            and e["detail"].get("old") in RESTING
            and e["detail"].get("new") in ACTIVE
            for e in mail.events
        )
        if mail.answered or (reactivated and ref.status in ACTIVE and f.first_response_at is not None):
            if mail.answered:
                values["last_answer_at"] = now
            values["update_started_at"] = now
            values["update_due"] = due(cal, now, level.follow_up) if level.follow_up else None
        elif mail.severity_changed and f.last_answer_at is not None:
            start = f.last_answer_at  # the start of the follow-up period (update_started_at)
            if level.follow_up:
                # Moved by the pauses since that start, as they moved the old one.
                pauses = pauses_from_events(repo.events_of(mail.session, ref.id, ("clock_resumed",)))
                values["update_due"] = move_by_pauses(cal, due(cal, start, level.follow_up), pauses, after=start)
            else:
                values["update_due"] = None
        if "update_due" in values and values["update_due"] != f.update_due:
            mail.event("follow_up_due", due=values["update_due"].isoformat() if values["update_due"] else None)
        return values


class ArchiveClocks:
    """In place of :class:`TrackClocks` for archived mail (``mailbridge import --archive``): a case
    opened from an archive has no SLA clocks. Its deadlines were counted from its original date and
    passed long ago; no promise of ours was broken, so nothing is due and the escalation job never
    looks at it (``next_escalation_at`` stays empty). A later archived mail that changes its severity
    (which counts due times again) leaves it without clocks too. Clocks start with the first live
    mail that starts one (an agent's answer starts the follow-up clock, see :class:`TrackClocks`).
    An archived mail on a case that lives in mailbridge leaves that case's clocks alone."""

    name = "track_clocks"
    EVENT = CLOCKS_NOT_STARTED

    def __call__(self, mail: InboundMail) -> None:
        if mail.ticket is None:
            return
        if mail.new_ticket:
            mail.change_ticket(dict(NO_CLOCKS))
            mail.event(self.EVENT, reason="imported from an archive")
        elif (mail.severity_changed or mail.customer_raised) and repo.events_of(
            mail.session, mail.ticket.id, (self.EVENT,)
        ):
            mail.change_ticket(dict(NO_CLOCKS))
