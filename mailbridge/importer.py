"""Bringing existing support mail in: ``mailbridge import mbox|maildir PATH [--queue Q] [--archive]``.

The files are read with the standard library's ``mailbox`` (``mbox``, ``Maildir``); every mail runs
through the same preparation (``ingest/prepare.py``: raw store first, parse, language; the process
pool on batches) and the same pipeline as fetched mail, as an :class:`InboundMail` whose source is
account ``import``, folder = the source's absolute path, UID = its position in the import order.

- **Order**: by the time of each mail (:func:`mail_time`), then by position in the file: a reply
  comes after the mail it answers, so it joins that case. The time is decided once, here, from the
  headers alone (a first quick pass), and sorting and the archived mail's times use that one value.
- **Archive mode** (``--archive``, ``ingest/steps.py`` ``archive_steps``): each mail keeps its own
  time (``InboundMail.occurred_at``: the case's created/updated times, the message's, the history's);
  nothing is sent (the pipeline runs without its sending steps); a case opened from the archive has
  no SLA clocks (``ingest/clocks.py`` ``ArchiveClocks``); at the end, the cases whose last message is
  older than ``close_older_than`` days are closed (:meth:`Importer.close_quiet`). Without it the
  mails are processed as if they had just arrived (acknowledgements go out through the outbox).
- **Resume**: the pipeline advances the source's mailbox state (its last UID) in each mail's own
  transaction, so after Ctrl-C or a kill the same command skips what is committed and goes on;
  deduplication (sha256, Message-ID) catches a mail in flight. The UIDVALIDITY is a checksum of the
  import order: a source that changed in between starts from the beginning, and deduplication
  skips what is there.
- **Ctrl-C** stops after the mail being processed (SIGINT is held while the import runs, so the
  parse workers, which inherit that, are not killed mid-batch by it either).
"""

from __future__ import annotations

import contextlib
import mailbox
import signal
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import structlog
from mailparser.utils import convert_mail_date

from mailbridge.ingest.mail import InboundMail
from mailbridge.store import imports as sq
from mailbridge.store import repositories as repo
from mailbridge.store.db import session_scope
from mailbridge.vocabulary import Disposition

if TYPE_CHECKING:
    from mailbridge.app import App

log = structlog.get_logger(__name__)

# The source identity of imported mail (raw rows and mailbox state): this account, the source's path.
ACCOUNT = "import"
KINDS = ("mbox", "maildir")
# The mailbox state's folder column holds at most this many characters.
MAX_PATH = 255
# Mails read and prepared at a time (the pool parses them while the pipeline commits those before).
BATCH = 400
# How much of a mail the ordering pass reads for its headers (more only when they go on).
HEADER_BYTES = 64 * 1024
# Without a terminal: a progress line at most this often.
PROGRESS_LOG_SECONDS = 10.0
# A Date before this is a client's broken clock (the epoch), not when the mail was written.
EARLIEST_PLAUSIBLE = datetime(1990, 1, 1, tzinfo=UTC)
# A Date this far ahead of now is a broken clock too (a little is clock skew).
FUTURE_SLACK = timedelta(days=1)
# Archive mode: cases whose last message is older than this many days are closed (--close-older-than).
DEFAULT_CLOSE_OLDER_THAN = 30


class SourceError(Exception):
    """The path is missing, or is not what it was said to be (an mbox file, a Maildir)."""


def _plausible(at: datetime | None, now: datetime) -> datetime | None:
    if at is None:
        return None
    at = at.astimezone(UTC)
    return at if EARLIEST_PLAUSIBLE <= at <= now + FUTURE_SLACK else None


def _date_value(value: str | None) -> datetime | None:
    """A Date header's time, read as the parser reads it (mail-parser's reading: the same time as
    the message's ``date``); None when it has none we can trust (no zone is a guess)."""
    if not value:
        return None
    try:
        at, _ = convert_mail_date(str(value))
    except (TypeError, ValueError, OverflowError):
        return None
    return at if at.tzinfo is not None else None


def mail_time(date_header: str | None, envelope: Callable[[], datetime | None], now: datetime) -> datetime:
    """The time of an imported mail (the one place this is decided): its Date header when that is
    a plausible time with a zone; else the time its mailbox recorded when it was delivered (the
    mbox ``From_`` line, the Maildir file's time: ``envelope``, asked only then); else ``now``."""
    return _plausible(_date_value(date_header), now) or _plausible(envelope(), now) or now


def date_header(head: bytes) -> str | None:
    """The Date header of a mail's header block (or of the whole mail), as text; None without one."""
    value = BytesHeaderParser(policy=compat32).parsebytes(head, headersonly=True).get("Date")
    return str(value) if value is not None else None


@dataclass(frozen=True)
class Entry:
    """One mail of the source: its key in the mailbox and its time."""

    key: str | int
    at: datetime


class Source:
    """An mbox file or a Maildir, its mails in import order (by time, then by position)."""

    def __init__(self, kind: str, path: str | Path):
        self.kind = kind
        self.path = str(Path(path).expanduser().absolute())
        self.box = self._open()
        self.entries: list[Entry] = []

    def _open(self) -> mailbox.Mailbox:
        p = Path(self.path)
        if len(self.path) > MAX_PATH:
            raise SourceError(f"{self.path}: the path is longer than {MAX_PATH} characters; move or link it")
        if not p.exists():
            raise SourceError(f"{self.path}: no such file or directory")
        if self.kind == "mbox":
            if p.is_dir():
                hint = " (a Maildir? use 'import maildir')" if (p / "cur").is_dir() else ""
                raise SourceError(f"{self.path}: is a directory, not an mbox file{hint}")
            with p.open("rb") as f:
                start = f.read(5)
            if start and start != b"From ":
                raise SourceError(f"{self.path}: not an mbox file (it does not begin with a 'From ' line)")
            return mailbox.mbox(self.path, create=False)
        if self.kind == "maildir":
            missing = [d for d in ("cur", "new") if not (p / d).is_dir()]
            if not p.is_dir() or missing:
                raise SourceError(f"{self.path}: not a Maildir (no {' and no '.join(missing) or 'directory'}/)")
            return mailbox.Maildir(self.path, factory=None, create=False)
        raise SourceError(f"unknown kind of source {self.kind!r} (one of {', '.join(KINDS)})")

    def _envelope_time(self, key) -> datetime | None:
        """The time the mailbox recorded at delivery (read only for a mail without a usable Date)."""
        msg = self.box.get_message(key)
        if isinstance(msg, mailbox.mboxMessage):
            _, _, when = (msg.get_from() or "").partition(" ")
            try:
                at = parsedate_to_datetime(when.strip())
            except (TypeError, ValueError, IndexError, OverflowError):
                return None
            return at.replace(tzinfo=UTC) if at.tzinfo is None else at  # a From_ line's time is UTC
        if isinstance(msg, mailbox.MaildirMessage):
            return datetime.fromtimestamp(msg.get_date(), UTC)
        return None

    def _date_header(self, key) -> str | None:
        with contextlib.closing(self.box.get_file(key)) as f:
            head = f.read(HEADER_BYTES)
            if len(head) == HEADER_BYTES and b"\n\n" not in head and b"\r\n\r\n" not in head:
                head += f.read()  # a header block longer than that (rare): all of it
        return date_header(head)

    def order(self, now: datetime) -> list[Entry]:
        """Read every mail's headers once and put the mails in import order (by time, then position)."""
        keys = sorted(self.box.keys())  # mbox: positions; Maildir: unique names (listing order is arbitrary)
        timed = []
        for pos, key in enumerate(keys):
            at = mail_time(self._date_header(key), lambda key=key: self._envelope_time(key), now)
            timed.append((at, pos, key))
        timed.sort()
        self.entries = [Entry(key, at) for at, _, key in timed]
        return self.entries

    @property
    def uidvalidity(self) -> int:
        """A checksum of the import order: it changes when the source changed (then: from the start)."""
        return zlib.crc32("\n".join(str(e.key) for e in self.entries).encode())

    def raw(self, key) -> bytes:
        return self.box.get_bytes(key)

    def close(self) -> None:
        self.box.close()


class Progress(Protocol):
    def start(self, total: int, done: int) -> None: ...
    def advance(self) -> None: ...
    def stop(self) -> None: ...


class LogProgress:
    """Without a terminal: a log line (done, total, rate, eta) at most every ``every`` seconds."""

    def __init__(self, every: float = PROGRESS_LOG_SECONDS):
        self.every = every

    def start(self, total: int, done: int) -> None:
        self.total, self.done, self.first = total, done, done
        self.began = self.last = time.monotonic()
        log.info("import_started", total=total, done_before=done)

    def advance(self) -> None:
        self.done += 1
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            rate = (self.done - self.first) / max(now - self.began, 1e-9)
            eta = (self.total - self.done) / rate if rate else None
            log.info(
                "import_progress",
                done=self.done,
                total=self.total,
                rate=round(rate, 1),
                eta_seconds=round(eta) if eta is not None else None,
            )

    def stop(self) -> None:
        pass


class RichProgress:
    """On a terminal: a progress bar with count, rate and time remaining (``rich.progress``)."""

    def __init__(self, console):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        class Rate(TextColumn):
            def render(self, task):
                from rich.text import Text

                return Text(f"{task.speed or 0:,.0f} mails/s")

        self.bar = Progress(
            TextColumn("importing"),
            BarColumn(),
            MofNCompleteColumn(),
            Rate(""),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )

    def start(self, total: int, done: int) -> None:
        self.task = self.bar.add_task("import", total=total, completed=done)
        self.bar.start()

    def advance(self) -> None:
        self.bar.advance(self.task)

    def stop(self) -> None:
        self.bar.stop()


def progress_for_output() -> Progress:
    """A progress bar on a terminal (stderr), log lines otherwise."""
    from rich.console import Console

    console = Console(stderr=True)
    return RichProgress(console) if console.is_terminal else LogProgress()


@contextlib.contextmanager
def held_interrupts() -> Iterator[Callable[[], bool]]:
    """Hold SIGINT while the import runs; yields "was Ctrl-C pressed?", asked between mails.

    Blocked rather than handled: processes started meanwhile (the parse workers) inherit the block,
    so Ctrl-C on the terminal (sent to all of them) does not kill a worker mid-batch. A handler is
    set too, for a signal delivered to a thread that does not block it."""
    pressed = False

    def on_interrupt(signum, frame):
        nonlocal pressed
        pressed = True

    old_handler = signal.signal(signal.SIGINT, on_interrupt)
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield lambda: pressed or signal.SIGINT in signal.sigpending()
    finally:
        if signal.SIGINT in signal.sigpending():
            signal.sigtimedwait({signal.SIGINT}, 0)  # consumed: the import stopped for it
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        signal.signal(signal.SIGINT, old_handler)


@dataclass
class Report:
    """What an import run did."""

    path: str
    kind: str
    archive: bool
    total: int = 0
    skipped: int = 0  # committed by an earlier run of the same import
    dispositions: Counter = field(default_factory=Counter)
    tickets_created: int = 0
    closed: int = 0
    close_older_than: int | None = None
    elapsed: float = 0.0
    # Ctrl-C: the last position committed (of ``total``), else None.
    stopped_after: int | None = None

    @property
    def processed(self) -> int:
        return sum(self.dispositions.values())

    @property
    def rate(self) -> float:
        return self.processed / self.elapsed if self.elapsed > 0 else 0.0

    def lines(self) -> list[str]:
        mode = "archive" if self.archive else "as new mail"
        d = self.dispositions
        out = [
            f"{self.path} ({self.kind}, {mode}): {self.processed} mails in {self.elapsed:.1f} s"
            f" ({self.rate:.1f} mails/s); {self.skipped} of {self.total} done before",
            "  "
            + ", ".join(f"{k.value} {d.get(k, 0)}" for k in Disposition)
            + f"; tickets created {self.tickets_created}",
        ]
        if self.archive and self.stopped_after is None:
            out.append(f"  closed {self.closed} (last message older than {self.close_older_than} days)")
        if self.stopped_after is not None:
            out.append(
                f"  stopped by Ctrl-C after mail {self.stopped_after} of {self.total}:"
                " run the same command again to continue"
            )
        return out


class Importer:
    """One import run of one source through the app's preparer and its import pipeline."""

    def __init__(
        self,
        app: App,
        source: Source,
        *,
        archive: bool,
        queue: str | None = None,
        close_older_than: int | None = None,
        progress: Progress | None = None,
    ):
        self.app = app
        self.source = source
        self.archive = archive
        self.pipeline = app.import_pipeline(archive=archive, queue=queue)
        self.close_older_than = (
            (DEFAULT_CLOSE_OLDER_THAN if close_older_than is None else close_older_than) if archive else None
        )
        self.progress = progress or LogProgress()

    def _resume_point(self, uidvalidity: int) -> int:
        """The last position committed by an earlier run of this import (0: none, or the source changed)."""
        with session_scope(self.app.session_factory) as s:
            return repo.set_uidvalidity(s, ACCOUNT, self.source.path, uidvalidity, self.app.clock())

    def run(self, should_stop: Callable[[], bool] = lambda: False) -> Report:
        began = time.monotonic()
        src = self.source
        report = Report(src.path, src.kind, self.archive, close_older_than=self.close_older_than)
        entries = src.order(self.app.clock())
        uidvalidity = src.uidvalidity
        report.total = len(entries)
        report.skipped = done = self._resume_point(uidvalidity)
        log.info("import_ordered", path=src.path, mails=len(entries), resume_after=done)
        self.progress.start(len(entries), done)
        try:
            while done < len(entries) and report.stopped_after is None:
                batch = [
                    InboundMail(
                        ACCOUNT,
                        src.path,
                        uidvalidity,
                        uid,
                        src.raw(e.key),
                        occurred_at=e.at if self.archive else None,
                    )
                    for uid, e in enumerate(entries[done : done + BATCH], start=done + 1)
                ]
                with contextlib.closing(self.app.preparer.prepare(batch)) as prepared:
                    for mail in prepared:
                        report.dispositions[self.pipeline.process(mail)] += 1
                        report.tickets_created += mail.new_ticket
                        done = mail.uid
                        self.progress.advance()
                        if should_stop():
                            report.stopped_after = done
                            break
        finally:
            self.progress.stop()
        if report.stopped_after is None and self.close_older_than is not None:
            report.closed = len(self.close_quiet(self.close_older_than))
        report.elapsed = time.monotonic() - began
        log.info(
            "import_finished",
            path=src.path,
            mails=report.processed,
            skipped=report.skipped,
            stopped_after=report.stopped_after,
            rate=round(report.rate, 1),
            **{k.value: n for k, n in report.dispositions.items()},
        )
        return report

    def close_quiet(self, days: int) -> list[str]:
        """Close the source's cases whose last message is older than ``days`` days (archive mode, at
        the end of a complete run; a resumed run does it then). Returns their case numbers."""
        now = self.app.clock()
        reason = f"imported: last message older than {days} days"
        with session_scope(self.app.session_factory) as s:
            quiet = sq.quiet_cases(s, ACCOUNT, self.source.path, now - timedelta(days=days))
            for ticket_id, _case, status in quiet:
                sq.close_case(s, ticket_id, status, now, reason)
        for _, case, _ in quiet:
            log.info("ticket_closed", case=case, reason=reason)
        return [case for _, case, _ in quiet]
