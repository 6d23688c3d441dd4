"""Runs the steps for one mail in one database transaction.

Each mail ends in one :class:`~mailbridge.vocabulary.Disposition`: ``processed`` unless a step
finished the run early (``InboundMail.finish``: duplicate, ignored, noise; ``to_quarantine``), or a
step raised: then the transaction is rolled back and a quarantine row naming the stage and the
error is committed instead, so one bad mail never stops the rest.
A database *connection* fault is not the mail's fault: it propagates as :class:`InfrastructureError`
and the poller retries the mail later. Either way the mailbox's last UID advances in the same
transaction that records the mail.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

import structlog

from mailbridge.domain import ParsedMail
from mailbridge.ingest.mail import InboundMail
from mailbridge.metrics import Metrics
from mailbridge.store import repositories as repo
from mailbridge.store.db import is_integrity_error, is_transient_db_error, session_scope
from mailbridge.store.models import Quarantine, RawMessage
from mailbridge.vocabulary import Disposition

log = structlog.get_logger(__name__)

# A unique-key race with another process (e.g. two instances, same mail) is retried this often.
INTEGRITY_RETRIES = 2
# The event ``outgoing.Acknowledge`` records when it queued a new case's acknowledgement.
ACK_QUEUED_EVENT = "ack_queued"


class InfrastructureError(Exception):
    """The database could not be reached or stayed locked; nothing was recorded for this mail."""


class Step(Protocol):
    """One stage: a ``name`` (in logs and quarantine reasons) and ``__call__(mail)``.

    A step that sets ``records_kept = True`` also runs for a mail whose run was finished as one we
    keep without a case (our own mail, unmatched noise): it records the message."""

    name: str

    def __call__(self, mail: InboundMail) -> None: ...


class Pipeline:
    def __init__(self, session_factory, steps: list[Step], clock: Callable[[], datetime], metrics: Metrics):
        self.factory = session_factory
        self.steps = steps
        self.clock = clock
        self.metrics = metrics

    def process(self, mail: InboundMail) -> Disposition:
        """Process one (prepared) mail; return its disposition. Raises InfrastructureError only."""
        head = mail.head
        structlog.contextvars.bind_contextvars(
            account=mail.account, uid=mail.uid, message_id=head.message_id if head else None
        )
        fetched = mail.requeue_of is None  # a requeue runs a stored mail again
        if fetched:
            self.metrics.mail_fetched(mail.account)
        try:
            disposition = self._attempts(mail)
        finally:
            structlog.contextvars.unbind_contextvars("account", "uid", "message_id", "case")
        # Committed: counted now, never for an attempt that was rolled back.
        self.metrics.mail_done(mail.account, disposition)
        if fetched and disposition == Disposition.PROCESSED and any(e["kind"] == ACK_QUEUED_EVENT for e in mail.events):
            self.metrics.ack_queued(mail.fetched_at)
        return disposition

    def _attempts(self, mail: InboundMail) -> Disposition:
        for attempt in range(INTEGRITY_RETRIES + 1):
            try:
                return self._run(mail)
            except Exception as e:
                if is_transient_db_error(e):
                    log.warning("database_unavailable", error=str(e).splitlines()[0])
                    raise InfrastructureError(str(e)) from e
                if is_integrity_error(e) and attempt < INTEGRITY_RETRIES:
                    log.info("pipeline_retry_after_conflict", error=str(e).splitlines()[0])
                    continue
                return self._quarantine_after_error(mail, e)
        raise AssertionError("unreachable")

    def _run(self, mail: InboundMail) -> Disposition:
        now = self.clock()
        with session_scope(self.factory) as session:
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
            if mail.requeue_of is None:
                repo.advance_last_uid(session, mail.account, mail.folder, mail.uidvalidity, mail.uid, now)
        return mail.disposition

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

    def _quarantine_after_error(self, mail: InboundMail, error: Exception) -> Disposition:
        """A step raised: keep the raw mail, park it with the stage and error, move on."""
        stage = getattr(error, "stage", "pipeline")
        reason = f"{type(error).__name__} in step {stage}: {error}"
        log.error(
            "pipeline_step_failed",
            stage=stage,
            error=str(error)[:500],
            traceback="".join(traceback.format_exception(error, limit=-3))[-2000:],
        )
        now = self.clock()
        try:
            with session_scope(self.factory) as session:
                # The class, when the failed attempt got that far (it depends on the bytes alone).
                row = mail.raw_row(Disposition.QUARANTINED, now)
                if mail.requeue_of is not None:
                    raw_id = mail.requeue_of
                    repo.update_row(session, RawMessage, raw_id, {"disposition": row["disposition"]})
                else:
                    raw_id = repo.insert_row(session, RawMessage, row)
                self._add_quarantine(session, raw_id, stage, reason, mail.head, now)
                if mail.requeue_of is None:
                    repo.advance_last_uid(session, mail.account, mail.folder, mail.uidvalidity, mail.uid, now)
        except Exception as e:
            if is_transient_db_error(e):
                raise InfrastructureError(str(e)) from e
            raise
        return Disposition.QUARANTINED
