"""The database-free part of ingesting a mail, done ahead of its transaction: hash, raw store, parse.

On a backlog this runs in a pool of worker processes while the poller's thread runs the
transactions of the mails before, so parsing (the most expensive step) overlaps the database work
on another core. A single new mail (the IDLE case) is prepared inline: starting work in another
process would only add latency.

The raw bytes reach the raw store here, before any transaction: a mail whose bytes are not safely
stored is never recorded as processed.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import structlog

from mailbridge.domain import ParsedMail
from mailbridge.ingest.language import LanguageDetector
from mailbridge.ingest.parser import ParseError, parse_mail
from mailbridge.processes import die_with_parent
from mailbridge.store.rawstore import raw_store

log = structlog.get_logger(__name__)

# Batches smaller than this are prepared inline: the pool pays off on backlogs, not single mails.
POOL_MIN_BATCH = 8
# Mails handed to a worker at once (fewer round trips between the processes).
POOL_CHUNKSIZE = 4


@dataclass
class Prepared:
    uid: int
    raw: bytes
    sha256: str
    raw_path: str
    parsed: ParsedMail | None
    parse_error: str | None


# Set in each worker process by _init_worker.
_worker_var_dir: Path | None = None
_worker_max_bytes: int = 0
_worker_detector: LanguageDetector | None = None


def prepare_one(
    raw: bytes, var_dir: Path, max_bytes: int, detector: LanguageDetector | None
) -> tuple[str, str, ParsedMail | None, str | None]:
    """Store the raw bytes, parse them and detect the language: (sha256, raw path, parsed, error)."""
    digest, rel = raw_store(var_dir).put(raw)
    if len(raw) > max_bytes:
        return digest, rel, None, f"mail is {len(raw)} bytes, over the limit of {max_bytes}"
    try:
        parsed = parse_mail(raw)
        if detector is not None:
            parsed.language = detector.guess(parsed.subject, parsed.text)
            parsed.language_detected = True
        return digest, rel, parsed, None
    except ParseError as e:
        return digest, rel, None, f"unparseable: {e}"
    except Exception as e:  # a parser bug must not cost the mail: it is quarantined with the reason
        return digest, rel, None, f"parser crashed: {type(e).__name__}: {e}"


def _init_worker(var_dir: Path, max_bytes: int, languages: list[str]) -> None:
    global _worker_var_dir, _worker_max_bytes, _worker_detector
    _worker_var_dir, _worker_max_bytes = var_dir, max_bytes
    _worker_detector = LanguageDetector(languages)
    die_with_parent()


def _prepare_in_worker(raw: bytes):
    assert _worker_var_dir is not None
    return prepare_one(raw, _worker_var_dir, _worker_max_bytes, _worker_detector)


class Preparer:
    """Prepares fetched mails, in order; a pool of ``workers`` processes for batches (0 = inline)."""

    def __init__(self, var_dir: Path, max_bytes: int, workers: int, languages: list[str]):
        self.var_dir = Path(var_dir)
        self.max_bytes = max_bytes
        self.workers = workers
        self.languages = list(languages)
        self._pool: ProcessPoolExecutor | None = None

    def _get_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # spawn, not fork: the service has threads (scheduler, IMAP) that fork would copy mid-flight.
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(self.var_dir, self.max_bytes, self.languages),
            )
            log.info("parse_pool_started", workers=self.workers)
        return self._pool

    def _inline(self, items: list[tuple[int, bytes]]) -> Iterator[Prepared]:
        for uid, raw in items:
            # Inline, the pipeline detects the language itself (with the detector it already has).
            yield Prepared(uid, raw, *prepare_one(raw, self.var_dir, self.max_bytes, None))

    def prepare(self, items: Iterable[tuple[int, bytes]]) -> Iterator[Prepared]:
        """Yield a :class:`Prepared` per (uid, raw), in the order given."""
        items = list(items)
        if self.workers <= 0 or len(items) < POOL_MIN_BATCH:
            yield from self._inline(items)
            return
        done = 0
        try:
            results = self._get_pool().map(_prepare_in_worker, [raw for _, raw in items], chunksize=POOL_CHUNKSIZE)
            for (uid, raw), result in zip(items, results, strict=True):
                yield Prepared(uid, raw, *result)
                done += 1
        except BrokenProcessPool as e:
            # A worker died (killed, out of memory): the rest of the batch is prepared inline and
            # the next batch gets a fresh pool.
            log.warning("parse_pool_broken", error=str(e), remaining=len(items) - done)
            self.close()
            yield from self._inline(items[done:])

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
