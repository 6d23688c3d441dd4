"""Composition root: builds the engine, stores, pipeline, pollers and sender from Settings.

Nothing else wires parts together; tests build an :class:`App` from a Settings object exactly as
``mailbridge run`` does.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from mailbridge.ingest.classify import LanguageDetector
from mailbridge.ingest.pipeline import Pipeline
from mailbridge.ingest.poller import AccountPoller
from mailbridge.ingest.prepare import Preparer
from mailbridge.ingest.steps import default_steps
from mailbridge.outbound.sender import OutboxSender
from mailbridge.outbound.templates import Templates
from mailbridge.settings import Settings
from mailbridge.store import migrate
from mailbridge.store import repositories as repo
from mailbridge.store.db import is_postgres, make_engine, make_session_factory, session_scope
from mailbridge.store.rawstore import attachment_store, raw_store


def utc_now() -> datetime:
    return datetime.now(UTC)


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
            settings.var_dir, settings.ingest.max_message_bytes, settings.ingest.workers, settings.ingest.languages
        )
        self._detector: LanguageDetector | None = None
        self._pipeline: Pipeline | None = None

    # Built lazily: the language models take a moment to load and CLI queries do not need them.
    @property
    def detector(self) -> LanguageDetector:
        if self._detector is None:
            self._detector = LanguageDetector(self.settings.ingest.languages)
        return self._detector

    @property
    def pipeline(self) -> Pipeline:
        if self._pipeline is None:
            steps = default_steps(self.settings, self.templates, self.detector, self.attachment_store)
            self._pipeline = Pipeline(self.session_factory, steps, self.clock)
        return self._pipeline

    def upgrade_db(self) -> None:
        migrate.upgrade(self.engine)
        with session_scope(self.session_factory) as s:
            repo.ensure_case_sequence(s, self.settings.case_numbers.fmt, self.settings.case_numbers.first_serial)

    def poller(self, account_name: str, on_progress: Callable[[], None] = lambda: None) -> AccountPoller:
        return AccountPoller(
            self.settings.account(account_name),
            self.pipeline,
            self.session_factory,
            self.preparer,
            self.clock,
            on_progress,
        )

    def sender(self, should_stop: Callable[[], bool] = lambda: False) -> OutboxSender:
        return OutboxSender(
            self.session_factory,
            self.settings.smtp,
            self.settings.outbox,
            skip_locked=is_postgres(self.engine),
            clock=self.clock,
            should_stop=should_stop,
        )

    def close(self) -> None:
        self.preparer.close()
        self.engine.dispose()
