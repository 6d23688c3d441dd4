"""One account's fetch cycle: fetch → raw store → pipeline (a batch of mails per transaction) →
(after the commits) move the fetched batch's mails away.

Invariants (see :class:`~mailbridge.store.models.MailboxState`):

- a mail is moved out of the watched folder only after the transaction that recorded it committed;
- the last UID advances in that same transaction (once per batch, to the batch's highest UID), so
  a mail at or below it is never processed again; mails at or below it still in the folder (a
  crash between commit and MOVE) are moved at the start of the next cycle to where their recorded
  disposition says;
- a new UIDVALIDITY resets the last UID to 0, and deduplication on Message-ID and on the hash of
  the raw bytes keeps the mails of the recreated folder from being processed twice.

A fetch error or an unreachable database ends the cycle; the account backs off and retries
while other accounts keep working. A permanent fault (the login refused, the server's certificate
not trusted; ``fetcher.classify_fault``) is logged as an error and retried only every
``permanent_fault_retry`` seconds: a person has to act, and once they have the account heals
without a restart.

The account's health (connected, IDLE or polling, last fetch, the failure streak, mails waiting) is
written at each failure and at each change of state, else at most every HEALTH_RECORD_SECONDS
(``store/health.py``), for ``mailbridge status`` and the alert job. A cycle that works a backlog
logs ``backlog_progress`` every ``progress_interval`` seconds.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import structlog

from mailbridge.ingest.fetcher import FaultKind, FetchError, ImapMailbox
from mailbridge.ingest.mail import InboundMail
from mailbridge.ingest.pipeline import InfrastructureError, Pipeline
from mailbridge.ingest.prepare import Preparer
from mailbridge.oauth.source import TokenSource
from mailbridge.settings import AccountSettings
from mailbridge.store import health
from mailbridge.store import repositories as repo
from mailbridge.store.db import is_transient_db_error, session_scope
from mailbridge.vocabulary import Disposition

log = structlog.get_logger(__name__)

# Backoff after a failure: 1 s, 2 s, 4 s … capped, with jitter so accounts do not retry in step.
BACKOFF_FIRST_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 300.0
# A working account's health row is rewritten at most this often (seconds) unless its state changes.
HEALTH_RECORD_SECONDS = 15.0


@dataclass
class CycleReport:
    fetched: int = 0
    dispositions: dict[str, int] = field(default_factory=dict)
    leftovers_moved: int = 0
    # New mails in the watched folder when the cycle began.
    waiting: int = 0

    def count(self, disposition: str) -> None:
        self.dispositions[disposition] = self.dispositions.get(disposition, 0) + 1


class AccountPoller:
    """Keeps one account's connection, runs cycles, and backs off after failures."""

    def __init__(
        self,
        account: AccountSettings,
        pipeline: Pipeline,
        session_factory,
        preparer: Preparer,
        clock: Callable[[], datetime],
        on_progress: Callable[[], None] = lambda: None,
        progress_interval: float = 30.0,
        tokens: TokenSource | None = None,
    ):
        self.account = account
        self.tokens = tokens
        self.progress_interval = progress_interval
        self.pipeline = pipeline
        self.factory = session_factory
        self.preparer = preparer
        self.clock = clock
        self.on_progress = on_progress
        self.mailbox = ImapMailbox(account, tokens)
        self.failures = 0
        self.retry_at = 0.0  # time.monotonic() before which we do not reconnect
        # When the health row was last written as working, and with which mode (see _healthy).
        self._recorded_at = float("-inf")
        self._recorded_mode: str | None = None

    def _folder_for(self, disposition: str) -> str:
        if disposition == Disposition.QUARANTINED:
            return self.account.quarantine_folder
        return self.account.processed_folder

    def _move(self, by_folder: dict[str, list[int]]) -> None:
        for folder, uids in by_folder.items():
            if uids:
                self.mailbox.move(uids, folder)

    def cycle(self, stop: threading.Event | None = None) -> CycleReport:
        """Process everything new in the watched folder once. Raises FetchError/InfrastructureError."""
        acc = self.account
        report = CycleReport()
        if self.mailbox.client is not None and self._token_seconds_left() <= 0:
            # The token this connection logged in with is about to expire (servers such as Exchange
            # Online end the session then): log in again with a fresh one from the token source.
            log.info("imap_token_renewal_reconnect", account=acc.name)
            self.mailbox.close()
        if self.mailbox.client is None:
            self.mailbox.connect()
            log.info(
                "imap_connected",
                account=acc.name,
                host=acc.host,
                folder=acc.folder,
                uidvalidity=self.mailbox.uidvalidity,
                idle=self.mailbox.has("IDLE"),
                move=self.mailbox.has("MOVE"),
            )
        else:
            self.mailbox.reselect()  # a recreated folder shows its new UIDVALIDITY (see reselect)
        uidvalidity = self.mailbox.uidvalidity
        assert uidvalidity is not None
        try:
            with session_scope(self.factory) as s:
                before = repo.mailbox_state(s, acc.name, acc.folder)
                # Read now: set_uidvalidity updates this very (identity-mapped) object.
                old_validity = before.uidvalidity if before is not None else None
                last_uid = repo.set_uidvalidity(s, acc.name, acc.folder, uidvalidity, self.clock())
            if old_validity is not None and old_validity != uidvalidity:
                log.warning(
                    "imap_uidvalidity_changed",
                    account=acc.name,
                    folder=acc.folder,
                    old=old_validity,
                    new=uidvalidity,
                )
            # Committed before, not yet moved (the process died between commit and MOVE).
            left = self.mailbox.uids_upto(last_uid)
            if left:
                with session_scope(self.factory) as s:
                    disp = repo.dispositions_for_uids(s, acc.name, acc.folder, uidvalidity, left)
                moves: dict[str, list[int]] = {}
                for uid in left:
                    # A UID at or below last_uid was committed; a duplicate leaves no raw row of its
                    # own, so "no record" means "duplicate" here.
                    moves.setdefault(self._folder_for(disp.get(uid, Disposition.DUPLICATE)), []).append(uid)
                self._move(moves)
                report.leftovers_moved = sum(len(v) for v in moves.values())
                if report.leftovers_moved:
                    log.info("imap_leftovers_moved", account=acc.name, count=report.leftovers_moved)
        except Exception as e:
            if is_transient_db_error(e):
                raise InfrastructureError(str(e)) from e
            raise

        uids = self.mailbox.uids_after(last_uid)
        report.waiting = len(uids)
        if not uids:
            return report
        moves = {}
        progress = _Progress(acc.name, len(uids), self.progress_interval) if len(uids) > acc.fetch_batch else None
        try:
            for batch in self.mailbox.fetch_batches(uids):
                fetched = (
                    InboundMail(acc.name, acc.folder, uidvalidity, uid, raw, waited=self.mailbox.waited(uid))
                    for uid, raw in batch
                )
                # Group commit: many mails per transaction (``ingest.commit_batch``/``commit_seconds``).
                for committed in self.pipeline.batches(self.preparer.prepare(fetched), stop):
                    for mail, disposition in committed:
                        report.fetched += 1
                        report.count(disposition)
                        moves.setdefault(self._folder_for(disposition), []).append(mail.uid)
                    if progress is not None:
                        progress.update(report.fetched)
                    self.on_progress()  # the sender wakes for the acknowledgements the batch queued
                # One MOVE per fetched batch, after the commits of all its mails: what they recorded
                # leaves the folder (a commit batch is never larger than a fetch batch).
                self._move(moves)
                moves = {}
                self._healthy(report)  # a long backlog keeps the account's health row fresh
                if stop is not None and stop.is_set():
                    break
        finally:
            # Whatever was committed is moved, even when the cycle ends early; a failed MOVE
            # leaves the mail as a leftover for the next cycle.
            try:
                self._move(moves)
            finally:
                if report.fetched:
                    self.on_progress()
        log.info("imap_cycle_done", account=acc.name, fetched=report.fetched, **report.dispositions)
        return report

    def tick(self, window: float, stop: threading.Event) -> None:
        """Run cycles for about ``window`` seconds: a cycle, then IDLE (or sleep) until new mail or
        the window ends. A failure closes the connection and waits out a growing backoff: inside
        this window when it is short enough, else the next run checks ``retry_at``."""
        end = time.monotonic() + window
        while not stop.is_set():
            now = time.monotonic()
            if now < self.retry_at:
                if self.retry_at >= end:
                    return
                stop.wait(self.retry_at - now)
                continue
            try:
                report = self.cycle(stop)
                self._healthy(report)
                left = end - time.monotonic()
                if left <= 0 or stop.is_set():
                    return
                # An OAuth token due before the window ends: wait until then, and the next cycle
                # logs in again with a fresh token at once (not at the next run, poll_interval later).
                token_left = self._token_seconds_left()
                if token_left < left:
                    self.mailbox.wait_for_mail(max(token_left, 0.0), stop)
                    continue
                if not self.mailbox.wait_for_mail(left, stop):
                    return
            except (FetchError, InfrastructureError) as e:
                self._failed(e)
            except Exception as e:  # a bug: keep the service alive, but say so loudly
                log.exception("account_cycle_crashed", account=self.account.name)
                self._failed(e)

    def _token_seconds_left(self) -> float:
        """Seconds until this connection's OAuth token is due for renewal (``AccessToken.renew_at``);
        infinite for a password login. An IDLE ends then, and the next cycle logs in again with a
        fresh token."""
        renew_at = self.mailbox.token_renew_at
        if renew_at is None:
            return float("inf")
        return (renew_at - self.clock()).total_seconds()

    @property
    def mode(self) -> str:
        """How new mail is noticed: IMAP IDLE when configured and offered, else polling."""
        return "idle" if self.account.idle and self.mailbox.has("IDLE") else "polling"

    def _healthy(self, report: CycleReport) -> None:
        recovered = self.failures > 0
        if recovered:
            log.info("account_recovered", account=self.account.name, failures=self.failures)
        self.failures = 0
        mode, name = self.mode, self.account.name
        # With IDLE a trickle of mail makes a cycle per mail: the row is written when the state
        # changes (first cycle, recovered, mode) and otherwise at most every HEALTH_RECORD_SECONDS.
        now = time.monotonic()
        if not recovered and mode == self._recorded_mode and now - self._recorded_at < HEALTH_RECORD_SECONDS:
            return
        self._recorded_mode, self._recorded_at = mode, now
        self._record(lambda s, at: health.account_ok(s, name, at, mode=mode, waiting=report.waiting))

    def _failed(self, e: Exception) -> None:
        self.mailbox.close()
        self.failures += 1
        kind = e.kind if isinstance(e, FetchError) else FaultKind.TRANSIENT
        acc = self.account
        if kind.permanent:
            delay = acc.permanent_fault_retry
            said = e.server_says if isinstance(e, FetchError) else str(e)
            log.error(
                kind.log_event,
                account=acc.name,
                host=acc.host,
                port=acc.port,
                user=acc.user,
                error=said[:300],
                failures=self.failures,
                retry_in=round(delay, 1),
            )
        else:
            delay = min(BACKOFF_MAX_SECONDS, BACKOFF_FIRST_SECONDS * 2 ** (self.failures - 1))
            delay *= random.uniform(0.8, 1.2)
            log.warning(
                "account_backoff",
                account=acc.name,
                error=str(e)[:300],
                failures=self.failures,
                retry_in=round(delay, 1),
            )
        self.retry_at = time.monotonic() + delay
        # A permanent fault is shown in the server's own words (status, the alert mail).
        text = e.server_says if kind.permanent and isinstance(e, FetchError) else str(e)
        error = text.splitlines()[0][:500] if text else type(e).__name__
        self._record(lambda s, now: health.account_failed(s, acc.name, now, error=error, kind=kind.value))

    def _record(self, write: Callable) -> None:
        """Write the account's health row; the database being away costs only this row."""
        try:
            with session_scope(self.factory) as s:
                write(s, self.clock())
        except Exception as e:
            log.warning("account_health_not_recorded", account=self.account.name, error=str(e).splitlines()[0][:200])

    def close(self) -> None:
        self.mailbox.close()


class _Progress:
    """``backlog_progress`` lines while one cycle works through more than one fetch batch."""

    def __init__(self, account: str, total: int, interval: float):
        self.account, self.total, self.interval = account, total, interval
        self.started = self.last = time.monotonic()

    def update(self, done: int) -> None:
        now = time.monotonic()
        if now - self.last < self.interval or done >= self.total:
            return
        self.last = now
        rate = done / (now - self.started) if now > self.started else 0.0
        remaining = self.total - done
        log.info(
            "backlog_progress",
            account=self.account,
            done=done,
            remaining=remaining,
            rate=round(rate, 1),
            eta_seconds=round(remaining / rate) if rate > 0 else None,
        )


__all__ = ["AccountPoller", "CycleReport"]
