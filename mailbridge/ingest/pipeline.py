"""Runs the steps for each mail, many mails in one database transaction (group commit).

A batch is one transaction: up to ``ingest.commit_batch`` mails, and no longer than
``ingest.commit_seconds`` (on SQLite the batch holds the write lock; the sender and the scheduler's
jobs wait for it). Its mails are taken (prepared: parsed in the pool or inline) before the
transaction begins, so no lock is held while a mail is parsed; a single new mail (IDLE) commits
alone at once. Each mail runs in its own SAVEPOINT:

- it ends in one :class:`~mailbridge.vocabulary.Disposition`: ``processed`` unless a step finished
  the run early (``InboundMail.finish``: duplicate, ignored, noise; ``to_quarantine``);
- a step that raises rolls back only that mail's savepoint; the mail is quarantined (raw row and
  quarantine row naming the stage and the error, its raw bytes kept) in the batch's transaction,
  and the rest of the batch goes on, so one bad mail never stops the rest;
- a unique-key conflict (another instance recorded the same mail first) rolls back the savepoint and
  the mail runs again in a fresh one (each statement sees what the other instance committed, so it
  ends as a duplicate);
- a database *connection* fault is not the mail's fault: the whole batch rolls back, nothing of it
  is committed, and :class:`InfrastructureError` tells the poller to retry the batch later.

The mailbox's last UID advances once per batch, to its highest UID, in the batch's transaction.
Counters and the caller's after-commit work (the MOVE, the sender's wake-up) see a batch only once
it committed.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from threading import Event
from typing import Protocol

import structlog

from mailbridge.domain import ParsedMail
from mailbridge.ingest.mail import InboundMail
from mailbridge.metrics import Metrics
from mailbridge.store import repositories as repo
from mailbridge.store.db import Session, is_integrity_error, is_transient_db_error, session_scope
from mailbridge.store.models import Quarantine, RawMessage
from mailbridge.vocabulary import Disposition

log = structlog.get_logger(__name__)

# A unique-key race with another process (e.g. two instances, same mail) is retried this often.
INTEGRITY_RETRIES = 2
# The event ``outgoing.Acknowledge`` records when it queued a new case's acknowledgement.
ACK_QUEUED_EVENT = "ack_queued"


# A batch's mails are awaited at most ``batch_seconds / TAKE_SHARE`` before its transaction begins.
TAKE_SHARE = 10


class InfrastructureError(Exception):
    """The database could not be reached or stayed locked; nothing of the batch was recorded."""


class Step(Protocol):
    """One stage: a ``name`` (in logs and quarantine reasons) and ``__call__(mail)``.

    A step that sets ``records_kept = True`` also runs for a mail whose run was finished as one we
    keep without a case (our own mail, unmatched noise): it records the message."""

    name: str

    def __call__(self, mail: InboundMail) -> None: ...


# What one committed batch hands back: each mail with how it ended, in the order run.
Batch = list[tuple[InboundMail, Disposition]]


def _transient(error: BaseException | None) -> bool:
    """A connection fault, also one that surfaced while a savepoint was rolled back (the
    rollback's own error then carries the fault as its context)."""
    seen = 0
    while error is not None and seen < 5:
        if is_transient_db_error(error):
            return True
        error, seen = error.__cause__ or error.__context__, seen + 1
    return False


class Pipeline:
    """Runs the steps over mails, ``batch_size`` mails (at most ``batch_seconds``) per transaction.

    The defaults (one mail per transaction) are what requeue, the importer and the tracker's
    comments use; ``App.pipeline`` takes the ``[ingest]`` commit settings for the pollers."""

    def __init__(
        self,
        session_factory,
        steps: list[Step],
        clock: Callable[[], datetime],
        metrics: Metrics,
        *,
        batch_size: int = 1,
        batch_seconds: float = 0.0,
    ):
        self.factory = session_factory
        self.steps = steps
        self.clock = clock
        self.metrics = metrics
        self.batch_size = max(1, batch_size)
        self.batch_seconds = batch_seconds

    def process(self, mail: InboundMail) -> Disposition:
        """Process one (prepared) mail in a transaction of its own; return its disposition.
        Raises InfrastructureError only."""
        for batch in self.batches([mail], batch_size=1):
            return batch[0][1]
        raise AssertionError("unreachable")

    def batches(
        self, mails: Iterable[InboundMail], stop: Event | None = None, *, batch_size: int | None = None
    ) -> Iterator[Batch]:
        """Run ``mails`` (prepared, in UID order) in group-committed batches and yield each batch once
        it committed. A batch is the mails prepared by then, up to ``batch_size``; its transaction
        ends after ``batch_seconds`` (the rest of what was taken goes into the next one), and the run
        ends when ``mails`` is exhausted or ``stop`` is set (after the mail it is on). Raises
        InfrastructureError: the batch being run rolled back whole; those yielded stay committed.

        The mails of a batch are taken from ``mails`` *before* its transaction begins: taking one
        may wait for the parse pool or parse inline, and no transaction (on SQLite: the write lock
        the sender, the cluster heartbeat and the jobs need too) is held while that happens."""
        size = batch_size or self.batch_size
        pending = iter(mails)
        carried: list[InboundMail] = []
        while True:
            todo = carried + self._take(pending, size - len(carried), stop)
            if not todo:
                return
            batch = self._batch(todo, stop)
            carried = todo[len(batch) :]
            self._count(batch)
            yield batch
            if stop is not None and stop.is_set():
                return

    def _take(self, pending: Iterator[InboundMail], n: int, stop: Event | None) -> list[InboundMail]:
        """Up to ``n`` mails from ``pending`` (a single new mail: at once), outside any transaction,
        waiting for them at most a tenth of ``batch_seconds`` once one is taken: on a backlog the
        pool prepares ahead, so a short wait takes a full batch when the pool keeps up and a part of
        one when it does not (the mails run while the pool prepares the next)."""
        taken: list[InboundMail] = []
        began = time.monotonic()
        while len(taken) < n:
            waited = time.monotonic() - began
            if taken and (waited >= self.batch_seconds / TAKE_SHARE or (stop is not None and stop.is_set())):
                break
            mail = next(pending, None)
            if mail is None:
                break
            taken.append(mail)
        return taken

    def _batch(self, todo: list[InboundMail], stop: Event | None) -> Batch:
        """One transaction over the mails of ``todo`` in order, until ``batch_seconds`` have passed or
        ``stop`` is set (after at least one mail); returns those it recorded."""
        done: Batch = []
        try:
            with session_scope(self.factory) as session:
                began = time.monotonic()
                for mail in todo:
                    done.append((mail, self._one(session, mail)))
                    if time.monotonic() - began >= self.batch_seconds:
                        break
                    if stop is not None and stop.is_set():
                        break
                self._advance_last_uids(session, [m for m, _ in done], self.clock())
        except InfrastructureError:
            raise
        except Exception as e:
            if _transient(e):
                log.warning("database_unavailable", error=str(e).splitlines()[0], batch=len(done))
                raise InfrastructureError(str(e)) from e
            raise
        return done

    def _one(self, session: Session, mail: InboundMail) -> Disposition:
        """One mail of the batch in its own savepoint; a failed step quarantines it (see module)."""
        head = mail.head
        structlog.contextvars.bind_contextvars(
            account=mail.account, uid=mail.uid, message_id=head.message_id if head else None
        )
        try:
            for attempt in range(INTEGRITY_RETRIES + 1):
                now = self.clock()
                try:
                    with session.begin_nested():
                        return self._run(session, mail, now)
                except Exception as e:
                    if _transient(e):
                        raise InfrastructureError(str(e)) from e
                    if is_integrity_error(e) and attempt < INTEGRITY_RETRIES:
                        log.info("pipeline_retry_after_conflict", error=str(e).splitlines()[0])
                        continue
                    error = e
                    break
            with session.begin_nested():
                return self._quarantine_after_error(session, mail, error, self.clock())
        finally:
            structlog.contextvars.unbind_contextvars("account", "uid", "message_id", "case")

    def _run(self, session: Session, mail: InboundMail, now: datetime) -> Disposition:
        mail.begin(session, now)
        for step in self.steps:
            ended = mail.outcome
            if ended is not None and not (ended.keeps_message and getattr(step, "records_kept", False)):
                continue
            mail.stage = step.name
            try:
                step(mail)
            except Exception as e:
                e.add_note(f"in pipeline step {step.name!r}")
                e.stage = step.name  # type: ignore[attr-defined]
                raise
        mail.write_events()
        if mail.raw_id is not None and mail.disposition != Disposition.PROCESSED:
            repo.update_row(session, RawMessage, mail.raw_id, {"disposition": mail.disposition.value})
        if mail.outcome is not None and mail.outcome.disposition == Disposition.QUARANTINED:
            assert mail.raw_id is not None and mail.outcome.stage is not None
            self._add_quarantine(session, mail.raw_id, mail.outcome.stage, mail.outcome.reason, mail.head, now)
        elif mail.requeue_of is not None:
            # In the same transaction as what the mail did: a requeue is never applied twice.
            repo.resolve_quarantine(session, mail.requeue_of, "requeued", mail.disposition.value, now)
        return mail.disposition

    @staticmethod
    def _advance_last_uids(session: Session, mails: list[InboundMail], now: datetime) -> None:
        """Once per batch: each mailbox's last UID to the batch's highest (a requeue has none)."""
        highest: dict[tuple[str, str, int], int] = {}
        for m in mails:
            if m.requeue_of is None:
                key = (m.account, m.folder, m.uidvalidity)
                highest[key] = max(highest.get(key, 0), m.uid)
        for (account, folder, uidvalidity), uid in highest.items():
            repo.advance_last_uid(session, account, folder, uidvalidity, uid, now)

    def _count(self, batch: Batch) -> None:
        """Committed: counted now, never for a batch that was rolled back."""
        for mail, disposition in batch:
            if mail.requeue_of is None:  # a requeue runs a stored mail again
                self.metrics.mail_fetched(mail.account)
            self.metrics.mail_done(mail.account, disposition)
            if (
                mail.requeue_of is None
                and disposition == Disposition.PROCESSED
                and any(e["kind"] == ACK_QUEUED_EVENT for e in mail.events)
            ):
                self.metrics.ack_queued(mail.fetched_at)

    def _add_quarantine(self, session, raw_id: int, stage: str, reason: str, p: ParsedMail | None, now) -> None:
        if repo.quarantine_of_raw(session, raw_id):
            repo.requarantine(session, raw_id, stage, reason, now)  # a requeued mail failed again
            log.warning("mail_quarantined", stage=stage, reason=reason[:500], again=True)
            return
        repo.insert_row(
            session,
            Quarantine,
            {
                "raw_id": raw_id,
                "stage": stage,
                "reason": reason[:4000],
                "created_at": now,
                "status": "open",
                "message_id": p.message_id if p else None,
                "sender": p.from_.email if p and p.from_ else None,
                "subject": p.subject[:2000] if p else None,
            },
        )
        log.warning("mail_quarantined", stage=stage, reason=reason[:500])

    def _quarantine_after_error(self, session: Session, mail: InboundMail, error: Exception, now) -> Disposition:
        """A step raised (its savepoint is rolled back): keep the raw mail, park it with the stage and
        the error, in the batch's transaction, and go on with the next mail."""
        stage = getattr(error, "stage", "pipeline")
        reason = f"{type(error).__name__} in step {stage}: {error}"
        log.error(
            "pipeline_step_failed",
            stage=stage,
            error=str(error)[:500],
            traceback="".join(traceback.format_exception(error, limit=-3))[-2000:],
        )
        # The class, when the failed attempt got that far (it depends on the bytes alone).
        row = mail.raw_row(Disposition.QUARANTINED, now)
        # Nothing the failed attempt decided stands (its rows are rolled back with the savepoint).
        mail.begin(session, now)
        if mail.requeue_of is not None:
            raw_id = mail.requeue_of
            repo.update_row(session, RawMessage, raw_id, {"disposition": row["disposition"]})
        else:
            raw_id = repo.insert_row(session, RawMessage, row)
        mail.raw_id = raw_id
        mail.to_quarantine(stage, reason)
        self._add_quarantine(session, raw_id, stage, reason, mail.head, now)
        return Disposition.QUARANTINED
