"""Runs the steps for one mail in one database transaction.

Outcomes: ``processed`` (ticket created or updated), ``duplicate``, ``ignored`` (our own mail) or
``quarantined`` (a step said so, or a step raised: the transaction is rolled back and a quarantine
row naming the stage and the error is committed instead, so one bad mail never stops the rest).
A database *connection* fault is not the mail's fault: it propagates as :class:`InfrastructureError`
and the poller retries the mail later. Either way the mailbox's last UID advances in the same
transaction that records the mail.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from datetime import datetime

import structlog

from mailbridge.ingest.steps import InboundMail, MailContext, Step
from mailbridge.store import repositories as repo
from mailbridge.store.db import is_integrity_error, is_transient_db_error, session_scope
from mailbridge.store.models import Event, Quarantine, RawMessage

log = structlog.get_logger(__name__)

# A unique-key race with another process (e.g. two instances, same mail) is retried this often.
INTEGRITY_RETRIES = 2


class InfrastructureError(Exception):
    """The database could not be reached or stayed locked; nothing was recorded for this mail."""


class Pipeline:
    def __init__(self, session_factory, steps: list[Step], clock: Callable[[], datetime]):
        self.factory = session_factory
        self.steps = steps
        self.clock = clock

    def process(self, mail: InboundMail) -> str:
        """Process one mail; return its disposition. Raises InfrastructureError only."""
        structlog.contextvars.bind_contextvars(account=mail.account, uid=mail.uid)
        try:
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
        finally:
            structlog.contextvars.unbind_contextvars("account", "uid", "message_id", "case", "stage")

    def _run(self, mail: InboundMail) -> str:
        now = self.clock()
        with session_scope(self.factory) as session:
            ctx = MailContext(mail=mail, session=session, now=now)
            for step in self.steps:
                ctx.stage = step.name
                try:
                    step(ctx)
                except Exception as e:
                    e.add_note(f"in pipeline step {step.name!r}")
                    e.stage = step.name  # type: ignore[attr-defined]
                    raise
                if ctx.done:
                    break
            repo.insert_rows(session, Event, ctx.events)
            if ctx.raw_id is not None and ctx.disposition != "processed":
                repo.update_row(session, RawMessage, ctx.raw_id, {"disposition": ctx.disposition})
            if ctx.quarantine is not None:
                stage, reason = ctx.quarantine
                self._add_quarantine(session, ctx.raw_id, stage, reason, ctx, now)
            repo.advance_last_uid(session, mail.account, mail.folder, mail.uidvalidity, mail.uid, now)
        return ctx.disposition

    def _add_quarantine(self, session, raw_id: int, stage: str, reason: str, ctx, now) -> None:
        p = (ctx.parsed or ctx.header_block) if ctx is not None else None
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

    def _quarantine_after_error(self, mail: InboundMail, error: Exception) -> str:
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
                raw_id = repo.insert_row(
                    session,
                    RawMessage,
                    {
                        "sha256": mail.sha256,
                        "size": len(mail.raw),
                        "path": mail.raw_path,
                        "account": mail.account,
                        "folder": mail.folder,
                        "uidvalidity": mail.uidvalidity,
                        "uid": mail.uid,
                        "disposition": "quarantined",
                        "received_at": now,
                    },
                )
                self._add_quarantine(session, raw_id, stage, reason, None, now)
                repo.advance_last_uid(session, mail.account, mail.folder, mail.uidvalidity, mail.uid, now)
        except Exception as e:
            if is_transient_db_error(e):
                raise InfrastructureError(str(e)) from e
            raise
        return "quarantined"
