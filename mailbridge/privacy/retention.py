"""The retention rules (``[retention]``): what goes when, applied by a daily job and by
``mailbridge privacy retention``.

Counted from a case's closing (``closed_at``) for its mails:

- ``raw_days``: the raw mails (var/raw) of the case's messages;
- ``attachment_days``: the attachments' bytes (var/attachments; a file another kept mail also has stays);
- ``case_days``: everything personal — message text, subjects, names, the mails we sent, raw mails,
  attachments; every address in the case's rows becomes ``removed-<n>@removed.invalid`` except the
  desk's own configured ones (support addresses, agents, notification and escalation recipients), so
  the history still says which agent acted. The skeleton stays: number, queue, status, dates, severity, organisation,
  contract, due and response times, pauses, and the events (their addresses replaced), so the SLA
  figures and reports are the same afterwards.

From receipt for noise (``noise_days``: auto-replies and bounces of no case are deleted, and the
mails we sent about no case — oversize notices, digests, alerts — lose their bytes), from
quarantining for quarantined mail (``quarantine_days``: the row and its raw mail), from the IMAP
server's arrival date for the Processed folder (``processed_folder_days``: deleted and expunged).

A case under legal hold is skipped. One daily run per day over all instances (``daily:<date>``, a
unique run row); rows are claimed ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so also two manual runs
at once remove each thing once. Each run is a row of ``retention_runs`` with its counts.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import structlog

from mailbridge.ingest.fetcher import FetchError, ImapMailbox
from mailbridge.oauth.source import TokenSource
from mailbridge.settings import Settings
from mailbridge.store import privacy_queries as pq
from mailbridge.store import retention as rq
from mailbridge.store.db import session_scope
from mailbridge.store.rawstore import ContentStore

log = structlog.get_logger(__name__)

BATCH = 200
# An address in a case's text, to be replaced (a scan for the placeholders, not a parser of mail).
_ADDRESS = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+", re.UNICODE)
REMOVED_DOMAIN = "removed.invalid"


@dataclass
class RetentionReport:
    run_key: str
    dry_run: bool
    skipped: bool = False  # another instance has (or had) this run
    counts: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def add(self, key: str, n: int) -> None:
        self.counts[key] = self.counts.get(key, 0) + n

    def lines(self) -> list[str]:
        if self.skipped:
            return [f"retention run {self.run_key}: done by another instance"]
        verb = "would remove" if self.dry_run else "removed"
        out = [f"retention run {self.run_key}: {verb}"]
        out += [f"  {k}: {v}" for k, v in sorted(self.counts.items())]
        out += [f"  error: {e}" for e in self.errors]
        return out


class Retention:
    def __init__(
        self,
        settings: Settings,
        session_factory,
        raw_store: ContentStore,
        attachments: ContentStore,
        clock: Callable[[], datetime],
        *,
        skip_locked: bool,
        should_stop: Callable[[], bool] = lambda: False,
        tokens: Mapping[str, TokenSource] | None = None,
    ):
        # The OAuth2 token sources of the accounts that log in with auth = "oauth2" (App.token_sources).
        self.tokens = tokens or {}
        self.settings = settings
        self.conf = settings.retention
        self.session_factory = session_factory
        self.raw_store = raw_store
        self.attachments = attachments
        self.clock = clock
        self.skip_locked = skip_locked
        # The service stopping: the run ends after the batch it is on (the rest waits for the next run).
        self.should_stop = should_stop
        # The desk's own addresses from the configuration (support addresses, notification and
        # escalation recipients): a case's skeleton keeps them, so its history still says who acted.
        self.keep = {a.lower() for a in settings.own_addresses} | {
            a.lower() for q in settings.queues for a in (*q.notify_addresses, *q.escalation_addresses)
        }
        # A dry run's one transaction (rolled back at its end).
        self._dry = None
        self._stopped = False

    def run(self, key: str | None = None, *, dry_run: bool = False) -> RetentionReport:
        """One run at the clock: ``key`` ``daily:<date>`` from the job, else a manual one."""
        now = self.clock()
        key = key or f"{'dry-run' if dry_run else 'manual'}:{now.isoformat()}:{secrets.token_hex(3)}"
        report = RetentionReport(key, dry_run)
        with session_scope(self.session_factory) as s:
            run_id = rq.claim_run(s, key, now, dry_run)
        if run_id is None:
            report.skipped = True
            return report
        error = None
        try:
            if dry_run:
                self._dry = self.session_factory()
                try:
                    self._apply(now, report, dry_run)
                finally:
                    self._dry.rollback()
                    self._dry.close()
            else:
                self._apply(now, report, dry_run)
        except Exception as e:  # recorded on the run; the job's health row says so too
            error = str(e).splitlines()[0][:500] if str(e) else type(e).__name__
            raise
        finally:
            if self._stopped:
                report.errors.append("stopped with the service; the next run goes on")
            with session_scope(self.session_factory) as s:
                rq.finish_run(s, run_id, self.clock(), report.counts, error or "; ".join(report.errors) or None)
            log.info("retention_run", run=key, dry_run=dry_run, error=error, **report.counts)
        return report

    def daily(self) -> RetentionReport:
        return self.run(f"daily:{self.clock().date().isoformat()}")

    # -- the stages ---------------------------------------------------------------------------------

    def _batches(self, query, cutoff, dry_run, apply) -> None:
        """Claim rows of ``query`` in id order, BATCH at a time, one transaction each; ``apply(session,
        ids)`` returns the files to delete after the commit. A dry run works in the one transaction
        of :attr:`_dry` (later stages see what earlier ones would have done; it is rolled back)."""
        after = 0
        while True:
            if self.should_stop():
                self._stopped = True
                return
            if dry_run:
                ids = query(self._dry, cutoff, after, BATCH, False)
                if not ids:
                    return
                after = ids[-1]
                apply(self._dry, ids)
                continue
            doomed: list[Path] = []
            with session_scope(self.session_factory) as s:
                ids = query(s, cutoff, after, BATCH, self.skip_locked)
                if not ids:
                    return
                after = ids[-1]
                doomed = apply(s, ids)
            for p in doomed:
                p.unlink(missing_ok=True)

    def _raw_files(self, raws: list[tuple[int, str]]) -> list[Path]:
        return [self.raw_store.root / path for _i, path in raws]

    def _attachment_files(self, s, digests) -> tuple[list[Path], int]:
        gone = pq.attachment_files_unused(s, digests)
        return [self.attachments.root / self.attachments.relpath(d) for d in gone], len(gone)

    def _apply(self, now: datetime, report: RetentionReport, dry_run: bool) -> None:
        c = self.conf

        def days(n: float) -> datetime:
            return now - timedelta(days=n)

        if c.case_days is not None:
            self._batches(rq.cases_due, days(c.case_days), dry_run, lambda s, ids: self._cases(s, ids, now, report))
        if c.raw_days is not None:

            def raws(s, ids):
                gone = pq.purge_raws(s, ids, now)
                report.add("raw_files", len(gone))
                return self._raw_files(gone)

            self._batches(rq.raws_due, days(c.raw_days), dry_run, raws)
        if c.attachment_days is not None:

            def attachments(s, ids):
                purged = pq.purge_attachments(s, ids, now)
                report.add("attachments", len(purged))
                files, n = self._attachment_files(s, {d for _i, d in purged})
                report.add("attachment_files", n)
                return files

            self._batches(rq.attachments_due, days(c.attachment_days), dry_run, attachments)
        if c.noise_days is not None:

            def noise(s, ids):
                raw_ids, digests, n = rq.delete_messages(s, ids)
                report.add("noise_messages", n)
                gone = pq.purge_raws(s, raw_ids, now)
                report.add("raw_files", len(gone))
                files, k = self._attachment_files(s, digests)
                report.add("attachment_files", k)
                return self._raw_files(gone) + files

            self._batches(rq.noise_due, days(c.noise_days), dry_run, noise)
            if self._stopped:
                pass
            elif dry_run:
                report.add("sent_mails_of_no_case", rq.empty_sent_of_no_case(self._dry, days(c.noise_days), pq.UNSENT))
            else:
                with session_scope(self.session_factory) as s:
                    report.add("sent_mails_of_no_case", rq.empty_sent_of_no_case(s, days(c.noise_days), pq.UNSENT))
        if c.quarantine_days is not None:

            def quarantined(s, ids):
                raw_ids, n = rq.delete_quarantined(s, ids)
                report.add("quarantined_mails", n)
                gone = pq.purge_raws(s, raw_ids, now)
                report.add("raw_files", len(gone))
                return self._raw_files(gone)

            self._batches(rq.quarantine_due, days(c.quarantine_days), dry_run, quarantined)
        if c.processed_folder_days is not None and not self.should_stop():
            self._expunge(days(c.processed_folder_days), report, dry_run)

    def _staff(self, address: str) -> bool:
        """An address of the desk itself (configured: support, agents, notification recipients)."""
        return address in self.keep or any(q.is_agent(address) for q in self.settings.queues)

    def _cases(self, s, ids: list[int], now: datetime, report: RetentionReport) -> list[Path]:
        files: list[Path] = []
        for tid in ids:
            found = [a for a in pq.case_addresses(s, tid, _ADDRESS) if not self._staff(a)]
            removed = pq.remove_case(s, tid, now)
            pq.map_case_addresses(s, tid, {a: f"removed-{i + 1}@{REMOVED_DOMAIN}" for i, a in enumerate(found)})
            pq.add_case_event(s, tid, "personal_data_removed", now, reason="retention", days=self.conf.case_days)
            report.add("cases", 1)
            report.add("message_texts", removed.messages)
            report.add("raw_files", len(removed.raws))
            report.add("attachments", len(removed.attachments))
            more, n = self._attachment_files(s, {d for _i, d in removed.attachments})
            report.add("attachment_files", n)
            files += self._raw_files(removed.raws) + more
        return files

    def _expunge(self, before: datetime, report: RetentionReport, dry_run: bool) -> None:
        for acc in self.settings.accounts:
            box = ImapMailbox(acc, self.tokens.get(acc.name))
            try:
                box.connect()
                old = box.folder_messages(acc.processed_folder, ["BEFORE", before.date()], bodies=False)
                report.add("imap_expunged", len(old))
                if old and not dry_run:
                    box.replace_in_folder(acc.processed_folder, sorted(old), [])
            except FetchError as e:
                report.errors.append(f"account {acc.name}: {e}")
                log.warning("retention_imap_failed", account=acc.name, error=str(e).splitlines()[0][:200])
            finally:
                box.close()
