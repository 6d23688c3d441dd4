"""The database-free part of ingesting a mail, done ahead of its transaction: hash, raw store, the
limits a mail must keep to be parsed at all, parse, and in the parse workers the pure work of the
pipeline's steps (:class:`Ahead`): the language, the mail's class, the checklist findings, the
customer's HTML sanitised for the agents' notification.

On a backlog this runs in a pool of worker processes while the poller's thread runs the
transactions of the mails before, so parsing (the most expensive step) overlaps the database work
on another core. A single new mail (the IDLE case) is prepared inline: starting work in another
process would only add latency.

The raw bytes reach the raw store here, before any transaction: a mail whose bytes are not safely
stored is never recorded as processed.

What a step would compute from the mail's bytes and the static config alone is computed here, in
the workers, so that the one transaction thread spends its time on the database: each step still
decides its rule with its own function and computes the value itself when the mail carries none (a
mail prepared inline, a requeue). The workers call the same functions earlier, nothing more.
"""

from __future__ import annotations

import multiprocessing
import signal
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from mailbridge.checklist import ChecklistItem, ItemResult, evaluate
from mailbridge.domain import ParsedMail
from mailbridge.ingest.language import LanguageDetector
from mailbridge.ingest.noise import Classification, classify_mail
from mailbridge.ingest.parser import ParseError, mime_limits_exceeded, parse_mail, parse_within_limits
from mailbridge.outbound.customer_html import MAX_SHOWN_CHARS, CleanHtml, sanitise
from mailbridge.processes import die_with_parent
from mailbridge.store.rawstore import raw_store

if TYPE_CHECKING:
    from mailbridge.settings import Settings

if TYPE_CHECKING:  # the workers need not import the pipeline
    from mailbridge.ingest.mail import InboundMail

log = structlog.get_logger(__name__)

# Batches smaller than this are prepared inline: the pool pays off on backlogs, not single mails.
POOL_MIN_BATCH = 8
# Mails handed to a worker at once (fewer round trips between the processes).
POOL_CHUNKSIZE = 4


# Set in each worker process by _init_worker.
_worker_var_dir: Path | None = None
_worker_max_bytes: int = 0
_worker_detector: LanguageDetector | None = None
_worker_ahead: Ahead | None = None


# How far into a mail not parsed whole we look for the end of its header block (the rest is not read).
MAX_HEADER_BLOCK = 256 * 1024

# Why a mail was refused before parsing (``InboundMail.refused``; the notice to its sender says it in
# words): over ``ingest.max_message_bytes``, or over the parser's MIME limits (too many parts, too
# deeply nested: ``ingest/parser.py`` ``mime_limits_exceeded``).
REFUSED_SIZE = "size"
REFUSED_PARTS = "parts"


def classify(head: ParsedMail, raw: bytes, refused: bool, own: frozenset[str]) -> Classification:
    """The class of a mail (``ingest/noise.py``), as ``ingest/steps.py`` ``Classify`` asks for it and
    the parse workers ahead of it: by its parse or, not parsed whole, its header block. The bounce
    rule reads the raw bytes again; those of a mail refused before parsing are never read whole."""
    return classify_mail(head, b"" if refused else raw, own)


@dataclass(frozen=True)
class Ahead:
    """The static config the parse workers need for the steps' pure work (picklable: it is handed
    to each worker process once, by :func:`_init_worker`)."""

    # Our own addresses (``Settings.own_addresses``): the class ``Classify`` gives a mail.
    own: frozenset[str]
    # Each queue's checklist (queues without one left out): ``CheckInformation``'s findings.
    checklists: dict[str, tuple[ChecklistItem, ...]]

    @classmethod
    def from_settings(cls, settings: Settings) -> Ahead:
        return cls(
            own=settings.own_addresses,
            checklists={q.name: tuple(q.checklist) for q in settings.queues if q.checklist},
        )

    def classify(self, head: ParsedMail, raw: bytes, refused: bool) -> Classification:
        return classify(head, raw, refused, self.own)

    def checklist_findings(self, parsed: ParsedMail) -> dict[str, tuple[ItemResult, ...]]:
        """``ingest/information.py`` ``CheckInformation``'s call for a new case, for every queue's
        whole checklist: the mail's subject, text and attachments (``evaluate`` is pure). Queues
        with the same checklist share one evaluation."""
        attachments = [(a.filename, a.content_type) for a in parsed.attachments]
        out: dict[str, tuple[ItemResult, ...]] = {}
        done: list[tuple[tuple[ChecklistItem, ...], tuple[ItemResult, ...]]] = []
        for queue, items in self.checklists.items():
            found = next((r for i, r in done if i == items), None)
            if found is None:
                found = tuple(evaluate(items, parsed.subject, parsed.text, attachments))
                done.append((items, found))
            out[queue] = found
        return out

    @staticmethod
    def customer_html(parsed: ParsedMail) -> tuple[frozenset[str], CleanHtml] | None:
        """``ingest/outgoing.py`` ``NotifyAgents``' first call: the customer's HTML sanitised with every
        inline part of the mail (its Content-IDs, returned with it), when the notification shows it."""
        if not parsed.html or len(parsed.html) > MAX_SHOWN_CHARS:
            return None
        inline = frozenset(a.content_id for a in parsed.attachments if a.content_id)
        return inline, sanitise(parsed.html, inline)


@dataclass(frozen=True)
class Preparation:
    """What preparing one mail found (returned across the process boundary, then put on the mail)."""

    sha256: str
    raw_path: str
    # REFUSED_SIZE / REFUSED_PARTS: not parsed (parse_error says why, header_block who sent it).
    refused: str | None
    parsed: ParsedMail | None
    parse_error: str | None
    header_block: ParsedMail | None
    # The steps' pure work (prepared with an :class:`Ahead`; else None and the steps compute it).
    mail_class: Classification | None = None
    checklist: dict[str, tuple[ItemResult, ...]] | None = None
    customer_html: tuple[frozenset[str], CleanHtml] | None = None

    def apply(self, mail: InboundMail) -> InboundMail:
        mail.sha256, mail.raw_path = self.sha256, self.raw_path
        mail.refused, mail.oversize = self.refused, self.refused is not None
        mail.parsed, mail.parse_error, mail.header_block = self.parsed, self.parse_error, self.header_block
        mail.classified, mail.checklist_found = self.mail_class, self.checklist
        mail.customer_html = self.customer_html
        return mail


def prepare_one(
    raw: bytes, var_dir: Path, max_bytes: int, detector: LanguageDetector | None, ahead: Ahead | None = None
) -> Preparation:
    """Store the raw bytes, then parse them and detect the language, unless the mail is refused
    before parsing: over the size limit, or over the MIME limits (the one place a mail is refused
    for them: it is never parsed whole, and its sender hears why, ``ingest/outgoing.py``
    ``OversizeNotice``). With ``ahead`` (the parse workers), also the mail's class and, for a
    person's mail, the checklist findings and the sanitised HTML."""
    digest, rel = raw_store(var_dir).put(raw)
    if len(raw) > max_bytes:
        error = f"mail is {len(raw)} bytes, over the limit of {max_bytes}"
        return _unparsed(digest, rel, REFUSED_SIZE, error, raw, ahead)
    too_complex = mime_limits_exceeded(raw)
    if too_complex is not None:
        return _unparsed(digest, rel, REFUSED_PARTS, too_complex, raw, ahead)
    try:
        parsed = parse_within_limits(raw)
    except ParseError as e:
        return _unparsed(digest, rel, None, f"unparseable: {e}", raw, ahead)
    except Exception as e:  # a parser bug must not cost the mail: it is quarantined with the reason
        return _unparsed(digest, rel, None, f"parser crashed: {type(e).__name__}: {e}", raw, ahead)
    if detector is not None:
        parsed.language = detector.guess_mail(parsed)
        parsed.language_detected = True
    if ahead is None:
        return Preparation(digest, rel, None, parsed, None, None)
    mail_class = ahead.classify(parsed, raw, refused=False)
    # Machine-made mail changes no checklist (CheckInformation), and neither it nor a mail that will
    # be refused notifies anyone with its HTML.
    wanted = mail_class.personal and not parsed.fatal_defects
    checks = ahead.checklist_findings(parsed) if wanted else None
    html = ahead.customer_html(parsed) if wanted else None
    return Preparation(digest, rel, None, parsed, None, None, mail_class, checks, html)


def _unparsed(digest: str, rel: str, refused: str | None, error: str, raw: bytes, ahead: Ahead | None) -> Preparation:
    """A mail not parsed whole: its header block, and with ``ahead`` the class read from it."""
    head = _header_block(raw)
    mail_class = ahead.classify(head, raw, refused is not None) if ahead is not None and head is not None else None
    return Preparation(digest, rel, refused, None, error, head, mail_class)


def _header_block(raw: bytes) -> ParsedMail | None:
    """The header block of a mail we did not parse whole, parsed alone: who sent it and whether it
    is automatic. None when there is none."""
    head = raw[:MAX_HEADER_BLOCK]
    ends = [i for i in (head.find(b"\r\n\r\n"), head.find(b"\n\n")) if i >= 0]
    if not ends:
        return None
    try:
        return parse_mail(head[: min(ends)] + b"\r\n\r\n")
    except Exception:  # the header block is a best effort; the mail is quarantined anyway
        return None


def _init_worker(var_dir: Path, max_bytes: int, languages: list[str], ahead: Ahead | None) -> None:
    global _worker_var_dir, _worker_max_bytes, _worker_detector, _worker_ahead
    # Ctrl-C on a terminal reaches the whole process group; the parent decides when to stop (after
    # the mail it is on) and shuts the pool down. A worker that died of it would break the pool.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker_var_dir, _worker_max_bytes = var_dir, max_bytes
    _worker_detector = LanguageDetector(languages)
    # A worker lives as long as the service: its language models load now, not at its first mail.
    _worker_detector.preload()
    _worker_ahead = ahead
    die_with_parent()


def _ready_after(seconds: float) -> bool:
    """Run in each worker by :meth:`Preparer.start`: the worker is initialised (models loaded);
    it then holds the task a moment so that the next one goes to another worker."""
    time.sleep(seconds)
    return _worker_detector is not None


def _prepare_in_worker(raw: bytes):
    assert _worker_var_dir is not None
    return prepare_one(raw, _worker_var_dir, _worker_max_bytes, _worker_detector, _worker_ahead)


class Preparer:
    """Prepares fetched mails, in order; a pool of ``workers`` processes for batches (0 = inline).

    The workers also do the steps' pure work (``ahead``); inline, the steps do it themselves, on the
    same thread either way."""

    def __init__(self, var_dir: Path, max_bytes: int, workers: int, languages: list[str], ahead: Ahead | None = None):
        self.var_dir = Path(var_dir)
        self.max_bytes = max_bytes
        self.workers = workers
        self.languages = list(languages)
        self.ahead = ahead
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        # Started for the service (``start``): every mail goes to the pool, however few.
        self._started = False

    def _get_pool(self) -> ProcessPoolExecutor:
        with self._lock:  # every account's poller thread shares the one pool
            return self._pool_locked()

    def _pool_locked(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # spawn, not fork: the service has threads (scheduler, IMAP) that fork would copy mid-flight.
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(self.var_dir, self.max_bytes, self.languages, self.ahead),
            )
            log.info("parse_pool_started", workers=self.workers)
        return self._pool

    def start(self) -> None:
        """Start the pool and wait until every worker is up, its language models loaded (the service
        at start, ``App.warm_up``). From then on every fetched mail is prepared in the pool, a single
        new mail too: the language models live only in the workers, not once more in the service's
        own process, and handing a mail to a running worker costs a millisecond. Without ``start``
        (a command that prepares a mail or two) a batch under :data:`POOL_MIN_BATCH` is prepared
        inline and the pool starts only for a backlog."""
        if self.workers <= 0:
            return
        pool = self._get_pool()
        # One task per worker, each long enough that no worker takes two: all have started.
        list(pool.map(_ready_after, [0.2] * self.workers))
        self._started = True
        log.info("parse_pool_ready", workers=self.workers)

    def _inline(self, mails: list[InboundMail]) -> Iterator[InboundMail]:
        for mail in mails:
            # Inline, the pipeline detects the language itself (with the detector it already has).
            yield prepare_one(mail.raw, self.var_dir, self.max_bytes, None).apply(mail)

    def prepare(self, mails: Iterable[InboundMail]) -> Iterator[InboundMail]:
        """Prepare each fetched mail and yield it, in the order given."""
        items = list(mails)
        if self.workers <= 0 or (len(items) < POOL_MIN_BATCH and not self._started):
            yield from self._inline(items)
            return
        done = 0
        pool = self._get_pool()
        try:
            results = pool.map(_prepare_in_worker, [m.raw for m in items], chunksize=POOL_CHUNKSIZE)
            for mail, result in zip(items, results, strict=True):
                yield result.apply(mail)
                done += 1
        except BrokenProcessPool as e:
            # A worker died (killed, out of memory): the rest of the batch is prepared inline and
            # the next batch gets a fresh pool.
            log.warning("parse_pool_broken", error=str(e), remaining=len(items) - done)
            self._discard(pool)
            yield from self._inline(items[done:])

    def _discard(self, broken: ProcessPoolExecutor) -> None:
        """Drop the pool that broke (not one another thread has started since) and shut it down."""
        with self._lock:
            if self._pool is broken:
                self._pool = None
        broken.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
