"""Escalations: the job that walks the SLA clocks' ladders (``sla/clock.py``) and queues the mails.

Every case stores when the job has to look at it next (``tickets.next_escalation_at``, indexed);
the pipeline sets it whenever something that moves a clock happens (a new case, an answer, a status
change, a severity change), and the job sets it after each visit. One run therefore reads only the
cases whose time has come, oldest first, however many cases are open, and catches up after
downtime in the order the stages fell due.

Exactly once: each stage has an outbox key (case, clock, due time, stage); the job checks it before
building the mail and the unique index on the key settles a race between two instances (the loser's
batch rolls back and runs again). On PostgreSQL due cases are claimed with ``FOR UPDATE SKIP
LOCKED``, so instances share the work; on SQLite writers are serialised anyway.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

import structlog
from babel.dates import format_datetime

from mailbridge.metrics import Metrics
from mailbridge.outbound.messages import MailBuilder
from mailbridge.outbound.outbox import enqueue
from mailbridge.settings import Settings
from mailbridge.sla.clock import ClockFacts, ClockName, Firing, next_escalation
from mailbridge.sla.deadlines import Deadlines
from mailbridge.sla.policy import Recipients, Stage
from mailbridge.store import repositories as repo
from mailbridge.store import sla_queries as sq
from mailbridge.store.db import IntegrityError, Session, session_scope
from mailbridge.store.metrics_queries import after_commit
from mailbridge.store.models import Event
from mailbridge.store.repositories import ThreadParent, TicketRef
from mailbridge.store.sla_queries import CLOCK_COLUMNS  # noqa: F401 - re-exported (bench/escalation.py)

log = structlog.get_logger(__name__)


class _Unset:
    pass


UNSET = _Unset()

# The agent-side conversation of a case: escalations continue it.
AGENT_THREAD_KINDS = ("notification", "escalation")
# How the job and agents read times ("Mo., 23.11.2026, 10:00 MEZ").
INTERNAL_FORMATS = {"de": "EEE, dd.MM.yyyy, HH:mm zzz", "en": "EEE, d MMM yyyy, HH:mm zzzz"}

# A row of sq.CLOCK_COLUMNS: a TicketRef's columns, then what the clocks need besides.
_REF_FIELDS = len(repo.TICKET_REF_COLS)


def _split(row) -> tuple[TicketRef, ClockFacts]:
    ref = TicketRef(*row[:_REF_FIELDS])
    fr_due, upd_due, last_answer, res_due, paused_at = row[_REF_FIELDS:]
    facts = ClockFacts(
        status=ref.status,
        created_at=ref.created_at,
        first_response_at=ref.first_response_at,
        first_response_due=fr_due,
        update_due=upd_due,
        last_answer_at=last_answer,
        resolution_due=res_due,
        paused_at=paused_at,
        paused_seconds=ref.paused_seconds or 0,
    )
    return ref, facts


def clock_state(session: Session, ticket_id: int, *, lock: bool = False) -> tuple[TicketRef, ClockFacts] | None:
    row = sq.clock_row(session, ticket_id, lock=lock)
    return _split(row) if row is not None else None


@dataclass
class Report:
    visited: int = 0
    sent: list[tuple[str, str, str]] = field(default_factory=list)  # (case, clock, stage)
    unaddressed: int = 0


class Escalations:
    """Builds and queues escalation mails; computes when a case needs the job next."""

    def __init__(self, settings: Settings, deadlines: Deadlines, builder: MailBuilder, metrics: Metrics):
        self.settings = settings
        self.deadlines = deadlines
        self.builder = builder
        self.metrics = metrics

    # -- the plan of one case -------------------------------------------------------------------

    def next_at(self, ref: TicketRef, facts: ClockFacts, now: datetime):
        cal = self.deadlines.calendar(ref.queue, ref.organisation)
        level = self.deadlines.level(ref.queue, ref.severity)
        # Deadlines count in the case's calendar (the contract partner's seat); routine stages wait
        # for the recipients' working hours: the queue's calendar.
        return next_escalation(cal, facts, level, now, hold=self.deadlines.calendar(ref.queue))

    def next_check(self, ref: TicketRef, facts: ClockFacts, now: datetime) -> datetime | None:
        """When the job has to look at a case with these clocks next. A stage whose time has
        already come is the job's (it knows whether it went out): now."""
        plans, next_at = self.next_at(ref, facts, now)
        return now if any(p.send is not None for p in plans) else next_at

    def refresh(self, session: Session, ticket_id: int, now: datetime) -> datetime | None:
        """Store when the job has to look at the case next (after its clocks changed)."""
        state = clock_state(session, ticket_id)
        if state is None:
            return None
        next_at = self.next_check(*state, now)
        sq.set_next_escalation(session, ticket_id, next_at)
        return next_at

    # -- mails ----------------------------------------------------------------------------------

    def recipients(self, ref: TicketRef, to: Recipients | str) -> list[str]:
        q = self.settings.queue(ref.queue)
        if to == Recipients.ASSIGNEE:
            return [ref.assignee] if ref.assignee else q.notify_addresses
        if to == Recipients.AGENTS:
            return q.notify_addresses
        if to == Recipients.ESCALATION:
            return q.escalation_addresses
        return [str(to)]

    def fmt(self, ref: TicketRef, at: datetime | None) -> str | None:
        if at is None:
            return None
        lang = self.settings.queue(ref.queue).language
        cal = self.deadlines.calendar(ref.queue, ref.organisation)
        return format_datetime(
            at,
            INTERNAL_FORMATS.get(lang, INTERNAL_FORMATS["en"]),
            locale=lang,
            tzinfo=cal.tz if cal is not None else None,
        )

    def send(
        self,
        session: Session,
        ref: TicketRef,
        *,
        kind: str,
        stage: Stage,
        dedup_key: str,
        now: datetime,
        clock: ClockName | None = None,
        due: datetime | None = None,
        repeat: int = 0,
        queued: set[str] | None = None,
        previous: ThreadParent | _Unset | None = UNSET,
    ) -> int | None:
        """Queue one escalation mail unless its key was queued before; record it on the case.

        ``queued``: the keys already in the outbox, when the caller looked them up for a whole
        batch (else one query); ``previous``: the agent-side thread parent, likewise."""
        if queued is not None:
            if dedup_key in queued:
                return None
        elif sq.outbox_key_exists(session, dedup_key):
            return None
        q = self.settings.queue(ref.queue)
        to = self.recipients(ref, stage.to)
        detail = {
            "kind": kind,
            "clock": clock.value if clock else None,
            "stage": stage.name if not repeat else f"re-escalation {repeat}",
            "due": due.isoformat() if due else None,
        }
        if not to:
            repo.insert_row(
                session,
                Event,
                {"ticket_id": ref.id, "kind": "escalation_unaddressed", "detail": detail, "created_at": now},
            )
            log.warning("escalation_unaddressed", case=ref.case_number, **detail)
            return None
        lang = q.language
        level = self.deadlines.level(ref.queue, ref.severity)
        facts = {
            "kind": kind,
            "clock": clock.label(lang) if clock else "",
            "stage": stage.name,
            "repeat": repeat,
            "due": self.fmt(ref, due),
            "created": self.fmt(ref, ref.created_at),
            "severity": level.label(lang) if level else ref.severity,
            "organisation": ref.organisation,
            "contract": ref.contract,
        }
        built = self.builder.escalation(
            ref,
            q,
            to=to,
            facts=facts,
            previous=repo.last_message(session, ref.id, AGENT_THREAD_KINDS)
            if isinstance(previous, _Unset)
            else previous,
            now=now,
            # Signed (a reply proves the agent) only when every recipient is one of the queue's.
            signed=all(q.is_agent(a) or a in q.notify_addresses for a in to),
        )
        outbox_id = enqueue(
            session,
            built.out,
            kind="escalation",
            dedup_key=dedup_key,
            now=now,
            ticket_id=ref.id,
            in_reply_to=built.in_reply_to,
            references=built.references,
            language=lang,
            thread_index=built.thread_index,
        )
        repo.insert_row(
            session,
            Event,
            {
                "ticket_id": ref.id,
                "kind": "escalated",
                "detail": {**detail, "to": to, "outbox_id": outbox_id, "urgent": stage.urgent},
                "created_at": now,
            },
        )
        # One line per pass at info level (run_once); each mail is in the case's history.
        log.debug("escalation_queued", case=ref.case_number, to=to, **detail)
        # The job's batch or the new case's mail may still roll back: counted once it committed.
        after_commit(session, lambda: self.metrics.escalation_sent(kind))
        return outbox_id

    def send_firing(
        self,
        session: Session,
        ref: TicketRef,
        f: Firing,
        now: datetime,
        queued: set[str] | None = None,
        previous: ThreadParent | _Unset | None = UNSET,
    ) -> int | None:
        kind = "repeat" if f.repeat else ("breach" if f.stage.is_breach else "warning")
        return self.send(
            session,
            ref,
            kind=kind,
            stage=f.stage,
            dedup_key=f.key(ref.id),
            now=now,
            clock=f.clock,
            due=f.due,
            repeat=f.repeat,
            queued=queued,
            previous=previous,
        )

    # -- the job --------------------------------------------------------------------------------

    def run_once(self, session_factory, now: datetime, *, skip_locked: bool = False) -> Report:
        """One pass: every case whose next escalation time has come, oldest first, in batches of
        ``sla.batch`` (one transaction each)."""
        report = Report()
        batch = self.settings.sla.batch
        races = 0
        while True:
            part = Report()
            try:
                with session_scope(session_factory) as s:
                    n = self._batch(s, now, batch, skip_locked, part)
            except IntegrityError as e:
                # Another instance queued the same stage between our check and our insert: its
                # row stands; our batch rolled back and runs again without it. Anything else, or
                # a race that keeps coming back, is an error for the next run.
                races += 1
                if ("dedup_key" not in str(e) and "outbox" not in str(e)) or races > 5:
                    raise
                log.info("escalation_race_retry", attempt=races)
                continue
            report.visited += part.visited
            report.sent += part.sent
            report.unaddressed += part.unaddressed
            if n < batch:
                if report.sent:
                    log.info("escalations_queued", mails=len(report.sent), cases=report.visited)
                return report

    def _batch(self, s: Session, now: datetime, batch: int, skip_locked: bool, report: Report) -> int:
        rows = sq.due_clock_rows(s, now, batch, skip_locked=skip_locked)
        updates = []
        todo: list[tuple[TicketRef, Firing]] = []
        for row in rows:
            ref, facts = _split(row)
            plans, next_at = self.next_at(ref, facts, now)
            for p in sorted((p for p in plans if p.send is not None), key=lambda p: p.send.at):
                assert p.send is not None
                todo.append((ref, p.send))
            updates.append((ref.id, next_at))
        # What the mails need, looked up for the whole batch at once.
        queued = repo.existing_outbox_keys(s, [f.key(ref.id) for ref, f in todo])
        todo = [(ref, f) for ref, f in todo if f.key(ref.id) not in queued]
        parents = repo.last_messages(s, list({ref.id for ref, _ in todo}), AGENT_THREAD_KINDS)
        left = Counter(ref.id for ref, _ in todo)
        for ref, f in todo:
            left[ref.id] -= 1
            if self.send_firing(s, ref, f, now, queued=queued, previous=parents.get(ref.id)) is not None:
                report.sent.append((ref.case_number, f.clock.value, f.name))
                if left[ref.id]:
                    # Another stage of this case follows in the batch: it threads under this one.
                    parents[ref.id] = repo.last_message(s, ref.id, AGENT_THREAD_KINDS)
        sq.set_next_escalations(s, updates)
        report.visited += len(rows)
        return len(rows)
