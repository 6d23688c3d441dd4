"""Composition root: builds the engine, stores, pipeline, pollers and sender from Settings.

Nothing else wires parts together; tests build an :class:`App` from a Settings object exactly as
``mailbridge run`` does.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog

from mailbridge import importer
from mailbridge.alerts import Alerts
from mailbridge.cluster import Cluster, default_instance_name
from mailbridge.ingest.language import LanguageDetector
from mailbridge.ingest.mail import InboundMail
from mailbridge.ingest.matcher import Matcher
from mailbridge.ingest.pipeline import Pipeline
from mailbridge.ingest.poller import AccountPoller
from mailbridge.ingest.prepare import Ahead, Preparer
from mailbridge.ingest.steps import default_steps, import_steps
from mailbridge.metrics import Metrics
from mailbridge.oauth.source import TokenSource, build_token_sources
from mailbridge.outbound.guard import AutoMailGuard
from mailbridge.outbound.links import AttachmentLinks, CaseLinks
from mailbridge.outbound.messages import MailBuilder
from mailbridge.outbound.sender import OutboxSender
from mailbridge.outbound.templates import Templates
from mailbridge.scheduled import Outcome, ScheduledMail
from mailbridge.settings import Settings
from mailbridge.sla.deadlines import Deadlines
from mailbridge.sla.digest import Digests
from mailbridge.sla.escalation import Escalations
from mailbridge.sla.escalation import Report as EscalationReport
from mailbridge.store import migrate
from mailbridge.store import repositories as repo
from mailbridge.store.db import IntegrityError, is_postgres, make_engine, make_session_factory, session_scope
from mailbridge.store.rawstore import attachment_store, raw_store
from mailbridge.subjects import DEFAULT_REPLY_PREFIXES, SubjectNormalizer
from mailbridge.vocabulary import Disposition
from mailbridge.web import visibility

log = structlog.get_logger(__name__)

# Where the notification signing key is kept when the config does not give one.
NOTIFICATION_KEY_FILE = "notification.key"


def utc_now() -> datetime:
    return datetime.now(UTC)


def load_or_create_key(path: Path) -> bytes:
    """Read the key at ``path``, or create it (32 random bytes, hex, mode 0600) exactly once, also
    when several processes start at the same time (O_EXCL; the loser reads the winner's key)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):
            key = path.read_text(encoding="ascii").strip()
            if key:
                return key.encode()
            time.sleep(0.02)  # the creator is between open and write
        raise RuntimeError(f"{path} is empty; delete it to create a new key") from None
    key = secrets.token_hex(32)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(key + "\n")
    # Worth a line in the log: a var_dir that does not persist (a container without a volume) makes
    # a new key at every start, and replies to older notifications then prove nothing.
    log.warning("notification_key_created", path=str(path))
    return key.encode()


class App:
    def __init__(self, settings: Settings, clock: Callable[[], datetime] = utc_now, templates_root=None):
        self.settings = settings
        self.clock = clock
        self.engine = make_engine(settings.database_url)
        self.session_factory = make_session_factory(self.engine)
        self.raw_store = raw_store(settings.var_dir)
        self.attachment_store = attachment_store(settings.var_dir)
        self.templates = Templates(templates_root, fallback_language=settings.ingest.languages[-1])
        self.preparer = Preparer(
            settings.var_dir,
            settings.ingest.max_message_bytes,
            settings.ingest.workers,
            settings.ingest.languages,
            Ahead.from_settings(settings),
        )
        self._detector: LanguageDetector | None = None
        self._pipeline: Pipeline | None = None
        self._guard: AutoMailGuard | None = None
        self._secrets: list[bytes] | None = None
        self._links: AttachmentLinks | None = None
        self._case_links: CaseLinks | None = None
        self.deadlines = Deadlines(settings)
        conv = settings.conversations
        self.normalizer = SubjectNormalizer(
            conv.reply_prefixes if conv.reply_prefixes is not None else DEFAULT_REPLY_PREFIXES
        )
        self._builder: MailBuilder | None = None
        self._escalations: Escalations | None = None
        self._scheduled: ScheduledMail | None = None
        # The counters of this app (a registry of its own); `mailbridge run` serves them.
        self.metrics = Metrics(accounts=[a.name for a in settings.accounts])
        # One OAuth2 token source per login (settings.oauth_logins), shared by the account's poller
        # and SMTP when it names that account; empty without OAuth.
        self.token_sources: dict[str, TokenSource] = build_token_sources(settings, self.session_factory, clock)
        # This instance's name in the leases (``[cluster] instance``, else host:pid:random).
        self.instance = settings.cluster.instance or default_instance_name()

    # Built lazily: the language models take a moment to load and CLI queries do not need them.
    @property
    def detector(self) -> LanguageDetector:
        if self._detector is None:
            self._detector = LanguageDetector(self.settings.ingest.languages)
        return self._detector

    def _step_parts(self) -> dict:
        """The parts the pipeline's steps are built with (``ingest/steps.py``)."""
        return {
            "detector": self.detector,
            "attachments": self.attachment_store,
            "matcher": Matcher(
                self.settings.case_numbers.fmt,
                self.notification_secrets,
                frozenset(self.settings.conversations.public_domains),
            ),
            "normalizer": self.normalizer,
            "builder": self.builder,
            "guard": self.guard,
            "deadlines": self.deadlines,
            "escalations": self.escalations,
            "links": self.attachment_links,
            "case_links": self.case_links,
            # Who sees which case: the tracker's one rule (web/visibility.py), for status by mail.
            "viewer_for": visibility.viewer_for,
            "may_ask": visibility.may_sign_in,
        }

    @property
    def guard(self) -> AutoMailGuard:
        """The loop and rate guard of automatic mail (the pipeline's and the tracker's sign-in mail)."""
        if self._guard is None:
            self._guard = AutoMailGuard(self.settings.auto_mail)
        return self._guard

    @property
    def pipeline(self) -> Pipeline:
        if self._pipeline is None:
            ingest = self.settings.ingest
            self._pipeline = Pipeline(
                self.session_factory,
                default_steps(self.settings, **self._step_parts()),
                self.clock,
                self.metrics,
                batch_size=ingest.commit_batch,
                batch_seconds=ingest.commit_seconds,
            )
        return self._pipeline

    def import_pipeline(self, *, archive: bool, queue: str | None = None) -> Pipeline:
        """The pipeline for mail imported from files (``mailbridge/importer.py``): archived mail
        without the steps that send, or pending mail as if it had just arrived; to ``queue`` (a
        queue's name) or routed by recipient."""
        q = self.settings.queue(queue) if queue is not None else None
        steps = import_steps(self.settings, archive=archive, queue=q, **self._step_parts())
        return Pipeline(self.session_factory, steps, self.clock, self.metrics)

    @property
    def notification_secrets(self) -> list[bytes]:
        """The key that signs agent notifications: from the config, else var_dir/notification.key
        (created at the first start, readable by the owner only)."""
        if self._secrets is None:
            conf = self.settings.conversations.secret
            if conf is not None:
                self._secrets = [conf.get_secret_value().encode()]
            else:
                self._secrets = [load_or_create_key(self.settings.var_dir / NOTIFICATION_KEY_FILE)]
        return self._secrets

    @property
    def attachment_links(self) -> AttachmentLinks | None:
        """Signs and checks the download links of attachments too large for a notification; None
        without ``[web] base_url`` (no links then)."""
        web = self.settings.web
        if web.base_url is None or web.secret is None:
            return None
        if self._links is None:
            self._links = AttachmentLinks(web.secret.get_secret_value(), web.base_url, web.link_days, self.clock)
        return self._links

    @property
    def case_links(self) -> CaseLinks | None:
        """Signs and checks the links to a case that acknowledgements and relayed answers carry;
        None without ``[web] base_url`` (the mails carry no link then)."""
        web = self.settings.web
        if web.base_url is None or web.secret is None:
            return None
        if self._case_links is None:
            self._case_links = CaseLinks(web.secret.get_secret_value(), web.base_url, web.case_link_days, self.clock)
        return self._case_links

    @property
    def builder(self) -> MailBuilder:
        """Composes every mail we send (the pipeline's and the escalation job's)."""
        if self._builder is None:
            self._builder = MailBuilder(
                self.templates, self.settings.case_numbers.fmt, self.normalizer, self.notification_secrets
            )
        return self._builder

    @property
    def escalations(self) -> Escalations:
        """Builds and queues escalation mails (the job and the pipeline share the rules)."""
        if self._escalations is None:
            self._escalations = Escalations(self.settings, self.deadlines, self.builder, self.metrics)
        return self._escalations

    def escalate(self) -> EscalationReport:
        """One run of the escalation job at the app's clock: every stage whose time has come."""
        return self.escalations.run_once(self.session_factory, self.clock(), skip_locked=is_postgres(self.engine))

    def send_digest(self, name: str) -> int | None:
        """Build and queue the digest ``name`` due at this minute of the app's clock, whether or not
        its schedule names this minute (see ``sla/digest.py``; the scheduled runs: ``run_schedule``)."""
        now = self.clock()
        item = self.scheduled.item(f"digest:{name}")
        return self.scheduled.send(self.session_factory, item, now.replace(second=0, microsecond=0), now).outbox_id

    @property
    def scheduled(self) -> ScheduledMail:
        """The scheduled reports and digests on their durable schedule (``scheduled.py``)."""
        if self._scheduled is None:
            self._scheduled = ScheduledMail(
                self.settings, Digests(self.settings, self.deadlines, self.templates), self.builder, self.render_report
            )
        return self._scheduled

    def render_report(self, name: str, params: dict, fmt: str, now: datetime):
        """A report as a scheduled mail carries it (``mailbridge/reports``: charts as cid images)."""
        from mailbridge import reports  # the reports load matplotlib; only what renders one pays for it

        return reports.render(self, name, params, fmt, now=now, for_mail=True)

    def run_schedule(self, run: str) -> Outcome | None:
        """Send the owed due time of the scheduled report or digest ``run`` (``report:<name>``,
        ``digest:<name>``) at the app's clock; None when nothing is owed."""
        return self.scheduled.run(self.session_factory, self.scheduled.item(run), self.clock())

    def check_alerts(self) -> int:
        """One run of the alert job at the app's clock (``alerts.py``); the number of mails queued."""
        return len(Alerts(self.settings, self.templates).run_once(self.session_factory, self.clock()))

    def close_solved(self) -> list[str]:
        """Close solved cases whose reopen window has passed; return their case numbers."""
        now = self.clock()
        window = timedelta(days=self.settings.conversations.reopen_window_days)
        with session_scope(self.session_factory) as s:
            closed = repo.close_solved(s, now - window, now)
            for ticket_id, _case in closed:
                repo.add_event(
                    s, ticket_id, "status_changed", now, old="solved", new="closed", reason="reopen window over"
                )
        for _, case in closed:
            log.info("ticket_closed", case=case, reason="reopen window over")
        return [case for _, case in closed]

    def requeue(self, quarantine_id: int) -> Disposition:
        """Run a quarantined mail through the pipeline again (after its cause was fixed): from its
        stored raw bytes, as the mail it is, so deduplication lets it through. Its quarantine row
        records the outcome in the same transaction; a mail that fails again stays quarantined with
        the new reason. Raises LookupError (no such row) or ValueError (not open)."""
        with session_scope(self.session_factory) as s:
            q = repo.quarantine_row(s, quarantine_id)
            if q is None:
                raise LookupError(f"no quarantined mail #{quarantine_id}")
            if q.status != "open":
                raise ValueError(f"quarantined mail #{quarantine_id} is {q.status} ({q.outcome or '-'})")
            r = q.raw
            mail = InboundMail(r.account, r.folder, r.uidvalidity, r.uid, self.raw_store.get(r.path), requeue_of=r.id)
        pipeline = self.pipeline
        if mail.account == importer.ACCOUNT:
            # A mail imported from a file is requeued as archived mail: it may be years old, so it
            # sends nothing, keeps its own time, and is routed as imported mail is.
            pipeline = self.import_pipeline(archive=True)
            mail.occurred_at = importer.mail_time(importer.date_header(mail.raw), lambda: None, self.clock())
        (mail,) = self.preparer.prepare([mail])
        disposition = pipeline.process(mail)
        log.info("quarantine_requeued", quarantine_id=quarantine_id, disposition=disposition.value)
        return disposition

    def discard(self, quarantine_id: int) -> None:
        """Mark a quarantined mail as dealt with, without processing it (its raw bytes stay)."""
        with session_scope(self.session_factory) as s:
            q = repo.quarantine_row(s, quarantine_id)
            if q is None:
                raise LookupError(f"no quarantined mail #{quarantine_id}")
            if q.status != "open":
                raise ValueError(f"quarantined mail #{quarantine_id} is {q.status} ({q.outcome or '-'})")
            repo.resolve_quarantine(s, q.raw_id, "discarded", "discarded", self.clock())
        log.info("quarantine_discarded", quarantine_id=quarantine_id)

    def warm_up(self) -> None:
        """What a long-running service loads before its first mail (``mailbridge run``): with parse
        workers, the pool, whose workers hold the language models and prepare every mail from now
        on, a single new one too (so the models are not held once more in this process); without,
        the language models here. And the pipeline."""
        if self.settings.ingest.workers > 0:
            self.preparer.start()
        else:
            self.detector.preload()
        _ = self.pipeline

    def upgrade_db(self) -> None:
        """The schema to the newest revision (serialised across instances: ``store/migrate.py``
        ``upgrade``) and the case-number sequence row."""
        migrate.upgrade(self.engine)
        try:
            with session_scope(self.session_factory) as s:
                repo.ensure_case_sequence(s, self.settings.case_numbers.fmt, self.settings.case_numbers.first_serial)
        except IntegrityError:
            # Another instance starting at the same moment on the same database created it first.
            log.info("case_sequence_created_by_another_instance")

    def cluster(self, mailboxes, **callbacks) -> Cluster:
        """This instance's leases on the database (``cluster.py``): the mailbox leases ``mailboxes``
        (``store/leases.py`` ``mailbox_lease``) and the leader's; ``callbacks``: ``busy``,
        ``on_gained``, ``on_lost``."""
        return Cluster(self.session_factory, self.instance, self.settings.cluster.lease_seconds, mailboxes, **callbacks)

    def poller(self, account_name: str, on_progress: Callable[[], None] = lambda: None) -> AccountPoller:
        return AccountPoller(
            self.settings.account(account_name),
            self.pipeline,
            self.session_factory,
            self.preparer,
            self.clock,
            on_progress,
            progress_interval=self.settings.logging.progress_interval,
            tokens=self.token_sources.get(account_name),
        )

    def sender(self, should_stop: Callable[[], bool] = lambda: False) -> OutboxSender:
        return OutboxSender(
            self.session_factory,
            self.settings.smtp,
            self.settings.outbox,
            skip_locked=is_postgres(self.engine),
            clock=self.clock,
            metrics=self.metrics,
            should_stop=should_stop,
            tokens=self.smtp_tokens,
        )

    def eraser(self):
        """``mailbridge privacy erase`` (``privacy/erase.py``)."""
        from mailbridge.privacy.erase import Eraser

        return Eraser(
            self.settings,
            self.session_factory,
            self.raw_store,
            self.attachment_store,
            self.clock,
            self.token_sources,
        )

    def exporter(self):
        """``mailbridge privacy export`` (``privacy/export.py``)."""
        from mailbridge.privacy.export import Exporter

        return Exporter(self.session_factory, self.raw_store, self.attachment_store, self.templates, self.clock)

    def retention(self, should_stop: Callable[[], bool] = lambda: False):
        """The retention rules of ``[retention]`` (``privacy/retention.py``): the daily job and the CLI;
        ``should_stop``: the service is stopping (the run ends after its current batch)."""
        from mailbridge.privacy.retention import Retention

        return Retention(
            self.settings,
            self.session_factory,
            self.raw_store,
            self.attachment_store,
            self.clock,
            skip_locked=is_postgres(self.engine),
            should_stop=should_stop,
            tokens=self.token_sources,
        )

    @property
    def smtp_tokens(self) -> TokenSource | None:
        """The token source SMTP logs in with (smtp.auth = "oauth2"), else None."""
        name = self.settings.smtp_token_name
        return self.token_sources[name] if name is not None else None

    def close(self) -> None:
        self.preparer.close()
        self.engine.dispose()
