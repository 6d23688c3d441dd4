"""Backlog benchmark: mailbridge's ingest against the limit of fetching and parsing the same mails.

One run generates ``--mails`` mails (``bench/mailgen.py``), fills the INBOX of a private Dovecot
(``tests/mailstack.py``; pymap when Dovecot is not installed) and measures, on that same mailbox:

1. **the limit**, with no mailbridge code at all: imapclient's ``UID FETCH BODY.PEEK[]`` in batches
   of ``--batch`` in this process, feeding plain ``mailparser.parse_from_bytes`` (mail-parser) in a
   pool of 2 worker processes (spawn); from the first FETCH to the last parse. Measured before and
   after the service phases (the mailbox is the same); the mean is the limit. For context, once:
   fetch alone, mail-parser in 1 process, mailbridge's ``parse_mail`` in 1 process;
2. **mailbridge ingest** on SQLite and on PostgreSQL (``--pg-url``; a fresh database, dropped
   after): a child process builds ``App(settings)`` and runs ``app.poller("main").cycle()`` until
   the backlog is done, exactly what ``mailbridge run`` does per cycle; the parent samples the peak
   RSS of the child and its parse workers every 0.2 s, and checks the rows and folders after;
3. **until every ack is accepted**: ``mailbridge run`` (SQLite, its sender working next to ingest)
   from its start to the moment the SMTP sink in this process accepted the last acknowledgement;
4. **per 10 % of the backlog** (issue 18): each decile's rate of the ingest runs and the time per
   mail of each part of the service path (``Breakdown``) in the first and the last decile;
5. **IDLE latency**: ``mailbridge run`` on an empty INBOX; ``--latency`` mails APPENDed one at a
   time, 0.5 s apart; from each APPEND's completion to the sink accepting its acknowledgement.

The last line is ``RESULT sqlite=… postgresql=… sent=… rss_mb=… flat=…`` (ratios to the limit).
The exit code is 0 when the run measured, whether or not the targets were met; non-zero when a
check does not hold or something failed.

    python bench/ingest.py [--mails 2000] [--batch 200] [--repeat 1] [--no-pg] [--no-sent]
                           [--latency 30] [--pg-url URL] [--imap dovecot|pymap] [--profile FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing
import os
import platform
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Iterator, Sized
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from email.policy import compat32
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The checkout this file is in is the one measured, not whatever mailbridge the venv points to.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

try:  # run as a script (bench/ on sys.path) or imported as bench.ingest
    import mailgen
except ImportError:  # pragma: no cover
    from bench import mailgen

SUPPORT_ADDRESS = "support@vendor.example"
HOTLINE_ADDRESS = "hotline@vendor.example"
# The Dovecot users: the backlog's mailbox and the IDLE latency's (an empty INBOX of its own).
MAILBOX_USER = "support@vendor.example"
LATENCY_USER = "idle-bench@vendor.example"
PASSWORD_ENV = "MB_BENCH_IMAP_PASSWORD"
PYMAP_PASSWORD = "bench-secret"
# Mails per MULTIAPPEND while filling the mailbox (not measured).
APPEND_CHUNK = 100
# The limit's parse pool, as the issue defines it.
LIMIT_WORKERS = 2
# FETCHed batches in flight to the limit's pool (bounds the bytes held).
LIMIT_PENDING = 4
# The context rows (fetch alone, parsing in one process) read at most this many mails.
CONTEXT_MAX = 5000
# A cycle that fetches nothing while mails are left means the service is stuck.
MAX_IDLE_CYCLES = 3
# Progress (and the RSS so far) is printed every this many mails (--progress).
PROGRESS_EVERY = 10_000
RSS_SAMPLE_SECONDS = 0.2
# The service of phases 3 and 5 is given up on after this long without progress.
STALL_SECONDS = 120.0
LATENCY_GAP_SECONDS = 0.5
PROFILE_ROWS = 35
CHILD_MARK = "@@bench "

TARGETS = {  # name: (comparison, bound)
    "sqlite": (">=", 0.5),
    "postgresql": (">=", 0.4),
    "sent": (">=", 0.4),
    "rss_mb": ("<=", 300.0),
    "flat": (">=", 0.9),
    "idle_p95_s": ("<=", 1.0),
}


class CheckFailed(RuntimeError):
    """A check of a phase did not hold: the run is not a measurement."""


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def _load() -> str:
    try:
        return "/".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:  # pragma: no cover
        return "n/a"


# -- the limit: imapclient + plain mail-parser, no mailbridge code ---------------------------------


def _limit_worker_init() -> None:
    import logging

    import mailparser  # noqa: F401  (imported here, before the clock runs)

    logging.getLogger("mailparser").setLevel(logging.CRITICAL)


def _limit_warm(_: int) -> int:
    time.sleep(0.05)  # long enough that every worker of the pool gets one
    return os.getpid()


def plain_parse(raw: bytes) -> int:
    """mail-parser's whole parse of one mail; a small result, so the pipe carries little back."""
    import mailparser

    m = mailparser.parse_from_bytes(raw)
    return len(m.body) + len(m.attachments)


def mailbridge_parse(raw: bytes) -> int:
    from mailbridge.ingest.parser import parse_mail

    return len(parse_mail(raw).subject or "")


@dataclass
class Login:
    host: str
    port: int
    user: str
    password: str

    def connect(self):
        from imapclient import IMAPClient

        c = IMAPClient(self.host, port=self.port, ssl=False, timeout=60)
        c.login(self.user, self.password)
        return c


def _uid_batches(c, batch: int, limit: int | None = None) -> list[list[int]]:
    c.select_folder("INBOX", readonly=True)
    uids = sorted(c.search("ALL"))[:limit]
    return [uids[i : i + batch] for i in range(0, len(uids), batch)]


def _fetch(c, uids: list[int]) -> list[bytes]:
    data = c.fetch(uids, ["BODY.PEEK[]"])
    return [data[u][b"BODY[]"] for u in uids]


def measure_limit(login: Login, batch: int, pool) -> tuple[int, float]:
    """The limit: batched FETCH here, mail-parser in the pool, overlapped; (mails, seconds)."""
    c = login.connect()
    try:
        batches = _uid_batches(c, batch)
        pending: deque = deque()
        n = 0
        t0 = time.perf_counter()
        for uids in batches:
            raws = _fetch(c, uids)
            n += len(raws)
            pending.append(pool.map_async(plain_parse, raws, chunksize=max(1, len(raws) // (4 * LIMIT_WORKERS))))
            while len(pending) > LIMIT_PENDING:
                pending.popleft().get()
        while pending:
            pending.popleft().get()
        return n, time.perf_counter() - t0
    finally:
        c.logout()


def measure_context(login: Login, batch: int, parse, limit: int) -> tuple[int, int, float]:
    """Fetch (and ``parse`` each mail, in this process) the first ``limit`` mails; (mails, bytes, s)."""
    c = login.connect()
    try:
        batches = _uid_batches(c, batch, limit)
        n = size = 0
        t0 = time.perf_counter()
        for uids in batches:
            for raw in _fetch(c, uids):
                if parse is not None:
                    parse(raw)
                n += 1
                size += len(raw)
        return n, size, time.perf_counter() - t0
    finally:
        c.logout()


# -- the service path, timed by parts (used in the child) ------------------------------------------


class Breakdown:
    """Wall time per part of the service path, taken with perf_counter around this run's objects.

    Wraps, on this run's instances only (nothing in mailbridge is changed), whichever of these the
    service has — attribute names change as the service does, and a missing one is skipped: the
    mailbox's ``fetch``/``fetch_batches`` and ``move``, the preparer's ``prepare``/``prepare_batch``
    (the parse pool, or the wait for it), the raw store's ``put``, the pipeline's ``process`` and
    ``process_batch``/``batches`` and each pipeline step. A wrapped call that returns an iterator is timed per
    item taken. Times are exclusive: a wrapped call inside another (a step inside ``process``) is
    counted once, under its own label, so within one thread the rows add up to the wall time. What
    ``process``/``process_batch`` spend outside the steps is the transaction itself. Each thread
    keeps its own stack, so parts working in parallel threads are each counted in full (their sum
    can then exceed the wall time). ``on_done`` hears of each mail committed (from the outermost
    ``process``/``process_batch``; without either, from ``move``).
    """

    TX = "transaction: session, flush, last UID, commit"
    FETCH = "IMAP fetch"
    MOVE = "IMAP move"
    PREPARE = "prepare: parse pool (or wait for it) / inline parse"
    RAW = "raw store put"

    def __init__(self, on_done=None) -> None:
        self.seconds: Counter = Counter()
        self.wrapped: list[str] = []
        self.on_done = on_done or (lambda k: None)
        self._lock = threading.Lock()
        self._local = threading.local()

    def _stack(self) -> list[list[float]]:
        stack = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        return stack

    def _enter(self) -> tuple[list[float], float]:
        frame = [0.0]
        self._stack().append(frame)
        return frame, time.perf_counter()

    def _exit(self, label: str, frame: list[float], t0: float) -> None:
        elapsed = time.perf_counter() - t0
        stack = self._stack()
        stack.pop()
        with self._lock:
            self.seconds[label] += elapsed - frame[0]
        if stack:
            stack[-1][0] += elapsed

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            return dict(self.seconds)

    def wrap(self, obj, attr: str, label: str, count=None, per_item=None) -> bool:
        """Time ``obj.attr`` (if it exists) under ``label``; ``count(args, result)``: mails it finished;
        for a call returning an iterator, ``per_item(item)``: mails each item finished (default 1)."""
        fn = getattr(obj, attr, None)
        if obj is None or not callable(fn) or getattr(fn, "_bench_timed", False):
            return False
        bd = self

        def timed(*args, **kwargs):
            outer = not getattr(bd._local, "in_count", False)
            if count is not None and outer:
                bd._local.in_count = True
            frame, t0 = bd._enter()
            try:
                result = fn(*args, **kwargs)
            finally:
                bd._exit(label, frame, t0)
                if count is not None and outer:
                    bd._local.in_count = False
            if isinstance(result, Iterator):  # a generator: timed per item; each item a mail done
                return bd._timed_iter(result, label, count is not None and outer, per_item)
            if count is not None and outer:
                bd.on_done(count(args, result))
            return result

        timed._bench_timed = True  # type: ignore[attr-defined]
        try:
            setattr(obj, attr, timed)
        except (AttributeError, TypeError):
            return False
        self.wrapped.append(f"{type(obj).__name__}.{attr}")
        return True

    def _timed_iter(self, it: Iterator, label: str, counts: bool = False, per_item=None) -> Iterator:
        while True:
            frame, t0 = self._enter()
            try:
                item = next(it)
            except StopIteration:
                return
            finally:
                self._exit(label, frame, t0)
            if counts:
                self.on_done(1 if per_item is None else per_item(item))
            yield item

    def instrument(self, app, poller) -> None:
        pipeline = getattr(poller, "pipeline", None) or getattr(app, "pipeline", None)
        steps = getattr(pipeline, "steps", None)
        if isinstance(steps, list):
            pipeline.steps = [_TimedStep(step, self) for step in steps]

        def one(args, result) -> int:
            return 1

        def many(args, result) -> int:
            for x in (args[0] if args else None, result):
                if isinstance(x, Sized) and not isinstance(x, (str, bytes)):
                    return len(x)
            return 1

        counted = self.wrap(pipeline, "process", self.TX, one)
        counted = self.wrap(pipeline, "process_batch", self.TX, many) or counted
        # Group commit: ``batches`` yields each committed batch, a list of (mail, disposition).
        counted = self.wrap(pipeline, "batches", self.TX, one, per_item=len) or counted
        mailbox = getattr(poller, "mailbox", None)
        self.wrap(mailbox, "fetch", self.FETCH)
        self.wrap(mailbox, "fetch_batches", self.FETCH)
        self.wrap(mailbox, "move", self.MOVE, None if counted else (lambda args, result: len(args[0])))
        preparer = getattr(poller, "preparer", None) or getattr(app, "preparer", None)
        self.wrap(preparer, "prepare", self.PREPARE)
        self.wrap(preparer, "prepare_batch", self.PREPARE)
        raw = getattr(poller, "raw", None) or getattr(app, "raw_store", None)
        self.wrap(raw, "put", self.RAW)


class _TimedStep:
    """A pipeline step with the same name and attributes, timed by a :class:`Breakdown`."""

    def __init__(self, step, breakdown: Breakdown):
        self._step = step
        self._label = f"step {getattr(step, 'name', type(step).__name__)}"
        self._breakdown = breakdown

    def __getattr__(self, name: str):  # name, records_kept, and whatever a step has besides
        return getattr(self._step, name)

    def __call__(self, *args, **kwargs):
        frame, t0 = self._breakdown._enter()
        try:
            return self._step(*args, **kwargs)
        finally:
            self._breakdown._exit(self._label, frame, t0)


class Deciles:
    """Marks the time and the breakdown at each tenth of the backlog committed.

    The first decile is timed from the first commit, not from the cycle's start: the start (the parse
    pool's spawn, the first FETCH, a first group commit) is a one-off that would make the first tenth
    look slow and the backlog look flatter than it is. The mails of that first commit are left out
    of the first decile's count accordingly."""

    def __init__(self, expected: int, emit, progress_every: int) -> None:
        self.expected = expected
        self.bounds = [math.ceil(expected * k / 10) for k in range(1, 11)]
        self.done = 0
        self.first: tuple[float, int, dict[str, float]] | None = None
        self.marks: list[tuple[float, int, dict[str, float]]] = []
        self.breakdown: Breakdown | None = None
        self.t0 = time.perf_counter()
        self._every = progress_every
        self._next_progress = progress_every
        self._emit = emit
        self._lock = threading.Lock()

    def _snapshot(self) -> dict[str, float]:
        return self.breakdown.snapshot() if self.breakdown else {}

    def add(self, k: int) -> None:
        with self._lock:
            self.done += k
            t = time.perf_counter()
            if self.first is None:
                self.first = (t, self.done, self._snapshot())
            while len(self.marks) < 10 and self.done >= self.bounds[len(self.marks)]:
                self.marks.append((t, self.done, self._snapshot()))
            if self.done >= self._next_progress:
                self._emit({"progress": self.done, "seconds": t - self.t0})
                while self._next_progress <= self.done:
                    self._next_progress += self._every

    def result(self) -> list[dict]:
        out: list[dict] = []
        if self.first is None:
            return out
        t_prev, n_prev, snap_prev = self.first
        for t, n, snap in self.marks:
            parts = {k: v - snap_prev.get(k, 0.0) for k, v in snap.items()}
            out.append({"mails": n - n_prev, "seconds": t - t_prev, "parts": parts})
            t_prev, n_prev, snap_prev = t, n, snap
        return out


# -- the child: one ingest run of the service ------------------------------------------------------


def _emit(obj: dict) -> None:
    print(CHILD_MARK + json.dumps(obj), flush=True)


def _count_rows(app) -> dict[str, int]:
    from sqlalchemy import func, select

    from mailbridge.store.db import session_scope
    from mailbridge.store.models import Event, Message, Outbox, Quarantine, RawMessage, Ticket

    def n(stmt) -> int:
        return int(s.scalar(stmt) or 0)

    with session_scope(app.session_factory) as s:
        counts = {
            "tickets": n(select(func.count()).select_from(Ticket)),
            "messages_in": n(select(func.count()).select_from(Message).where(Message.direction == "in")),
            "messages_out": n(select(func.count()).select_from(Message).where(Message.direction == "out")),
            "raw_messages": n(select(func.count()).select_from(RawMessage)),
            "acks_queued": n(select(func.count()).select_from(Outbox).where(Outbox.kind == "ack")),
            "outbox_rows": n(select(func.count()).select_from(Outbox)),
            "quarantined": n(select(func.count()).select_from(Quarantine)),
        }
        kinds = s.execute(select(Event.kind, func.count()).group_by(Event.kind)).all()
    events = {k: int(c) for k, c in kinds}
    counts["acks_held_by_limit"] = events.get("auto_mail_suppressed", 0)
    counts["ack_events"] = {k: c for k, c in events.items() if "ack" in k or "auto_mail" in k}  # type: ignore[assignment]
    return counts


def child_main(spec_path: Path) -> int:
    """``--child SPEC``: the service's ingest over the backlog, in this process (and its parse pool)."""
    spec = json.loads(spec_path.read_text())
    import cProfile
    import pstats

    from mailbridge.app import App
    from mailbridge.logging import configure_logging
    from mailbridge.settings import load_settings

    configure_logging(level="error", fmt="console")
    expected = spec["expected"]
    t = time.perf_counter()
    app = App(load_settings(spec["config"]))
    # Migrations and the language models load before the clock starts, as once at `mailbridge run`.
    app.upgrade_db()
    _ = app.pipeline
    if hasattr(app, "warm_up"):  # what `mailbridge run` loads before its first mail
        app.warm_up()
    else:  # mailbridge before App.warm_up: the language models in this process
        detector = getattr(app, "detector", None)
        with contextlib.suppress(Exception):
            detector.guess("Lizenzserver startet nicht", "Guten Tag, seit dem Update geht nichts.")
            detector.guess("Server does not start", "Hello, since the update nothing works.")
    startup = time.perf_counter() - t

    deciles = Deciles(expected, _emit, spec["progress_every"])
    breakdown = Breakdown(deciles.add)
    poller = app.poller("main")
    breakdown.instrument(app, poller)
    deciles.breakdown = breakdown if spec["breakdown"] else None
    profile = cProfile.Profile() if spec.get("profile") else None
    dispositions: Counter = Counter()
    done = cycles = idle = 0
    try:
        if profile is not None:
            profile.enable()
        deciles.t0 = t0 = time.perf_counter()
        while done < expected:
            report = poller.cycle()
            cycles += 1
            done += report.fetched
            dispositions.update(report.dispositions)
            if report.fetched == 0:
                idle += 1
                if idle >= MAX_IDLE_CYCLES:
                    raise CheckFailed(f"the service stopped after {done} of {expected} mails")
        elapsed = time.perf_counter() - t0
        if profile is not None:
            profile.disable()
    finally:
        poller.close()
    counts = _count_rows(app)
    app.close()
    result = {
        "seconds": elapsed,
        "startup": startup,
        "cycles": cycles,
        "fetched": done,
        "committed": deciles.done,
        "dispositions": dict(dispositions),
        "counts": counts,
        "breakdown": breakdown.snapshot() if spec["breakdown"] else {},
        "wrapped": breakdown.wrapped,
        "deciles": deciles.result(),
    }
    Path(spec["result"]).write_text(json.dumps(result))
    if profile is not None:
        stats = pstats.Stats(profile, stream=sys.stdout)
        if spec["profile"] != "-":
            stats.dump_stats(spec["profile"])
            print(f"profile written to {spec['profile']} (python -m pstats {spec['profile']})")
        stats.strip_dirs()
        print(f"\n--- SQLite ingest profile (main thread), top {PROFILE_ROWS} by cumulative time ---")
        stats.sort_stats("cumulative").print_stats(PROFILE_ROWS)
        print(f"--- top {PROFILE_ROWS} by own time ---")
        stats.sort_stats("tottime").print_stats(PROFILE_ROWS)
        sys.stdout.flush()
    return 0


# -- the parent: servers, phases, report -----------------------------------------------------------


class RssSampler:
    """The summed RSS of a process and all its descendants, sampled every 0.2 s in a thread."""

    def __init__(self, pid: int):
        import psutil

        self.proc = psutil.Process(pid)
        self.peak = 0
        self.now = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def sample(self) -> int:
        import psutil

        total = 0
        try:
            procs = [self.proc, *self.proc.children(recursive=True)]
        except psutil.Error:
            return 0
        for p in procs:
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
        self.now = total
        self.peak = max(self.peak, total)
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(RSS_SAMPLE_SECONDS)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_mb(self) -> float:
        return self.peak / 1024 / 1024


@dataclass
class Arrival:
    at: float
    in_reply_to: str


@dataclass
class _SinkHandler:
    arrivals: list[Arrival] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)

    async def handle_DATA(self, server, session, envelope):
        at = time.perf_counter()
        head = BytesHeaderParser(policy=compat32).parsebytes(bytes(envelope.content))
        irt = str(head.get("In-Reply-To") or "").strip().strip("<>")
        with self.cond:
            self.arrivals.append(Arrival(at, irt))
            self.cond.notify_all()
        return "250 2.0.0 OK: queued"


class Sink:
    """aiosmtpd on loopback, in a thread of this process; keeps each accepted mail's time and
    In-Reply-To (not its bytes: a long run accepts tens of thousands)."""

    def __init__(self):
        from mailbridge.embedded import free_port

        self.port = free_port()
        self.handler = _SinkHandler()
        self.controller = None

    def __enter__(self) -> Sink:
        import logging

        from aiosmtpd.controller import Controller

        logging.getLogger("mail.log").setLevel(logging.WARNING)
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port, data_size_limit=0)
        self.controller.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.controller is not None:
            self.controller.stop()

    def reset(self) -> None:
        with self.handler.cond:
            self.handler.arrivals = []

    def count(self) -> int:
        with self.handler.cond:
            return len(self.handler.arrivals)

    def arrivals(self) -> list[Arrival]:
        with self.handler.cond:
            return list(self.handler.arrivals)

    def wait_for(self, n: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.handler.cond:
            while len(self.handler.arrivals) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.handler.cond.wait(left)
            return True


@dataclass
class ImapServer:
    """The IMAP server of the run: the backlog's mailbox and the latency phase's."""

    kind: str
    backlog: Login
    latency: Login
    closers: list = field(default_factory=list)


@contextlib.contextmanager
def imap_server(force_pymap: bool = False) -> Iterator[ImapServer]:
    from tests import mailstack

    reason = "--imap pymap" if force_pymap else mailstack.missing()
    if reason is None:
        stack = mailstack.MailStack()
        stack.start()
        try:
            backlog = Login(stack.host, stack.imap_port, MAILBOX_USER, stack.add_user(MAILBOX_USER))
            latency = Login(stack.host, stack.imap_port, LATENCY_USER, stack.add_user(LATENCY_USER))
            version = subprocess.run(["dovecot", "--version"], capture_output=True, text=True, check=False)
            kind = f"Dovecot {version.stdout.strip() or '?'} (tests/mailstack.py, Maildir, loopback)"
            yield ImapServer(kind, backlog, latency)
        finally:
            stack.stop()
        return
    from mailbridge.embedded import PymapServer

    with (
        PymapServer(user="support", password=PYMAP_PASSWORD) as a,
        PymapServer(user="idle", password=PYMAP_PASSWORD) as b,
    ):
        yield ImapServer(
            f"pymap (in-memory; FALLBACK, not the issue's server: {reason})",
            Login(a.host, a.port, a.user, a.password),
            Login(b.host, b.port, b.user, b.password),
        )


def fill(login: Login, n: int, seed: int, keep: int) -> tuple[list, list[bytes], float, float]:
    """Generate ``n`` mails and APPEND them to INBOX chunk by chunk (MULTIAPPEND when offered), never
    holding the corpus; returns (shapes, the ``keep`` mails after the backlog for the latency
    phase, generation seconds, APPEND seconds)."""
    shapes, kept = [], []
    gen_s = app_s = 0.0
    c = login.connect()
    try:
        multi = c.has_capability("MULTIAPPEND")
        chunk: list[bytes] = []
        it = mailgen.stream(n + keep, seed=seed, support_addresses=(SUPPORT_ADDRESS, HOTLINE_ADDRESS))
        t = time.perf_counter()
        for i, m in enumerate(it):
            if i >= n:
                kept.append(m.raw)
                continue
            shapes.append(m.shape())
            chunk.append(m.raw)
            if len(chunk) == APPEND_CHUNK or i == n - 1:
                t1 = time.perf_counter()
                gen_s += t1 - t
                if multi:
                    c.multiappend("INBOX", chunk)
                else:
                    for raw in chunk:
                        c.append("INBOX", raw)
                chunk = []
                t = time.perf_counter()
                app_s += t - t1
                if (i + 1) % PROGRESS_EVERY == 0:
                    print(f"        {i + 1:,} mails generated and appended", flush=True)
        gen_s += time.perf_counter() - t
        exists = c.select_folder("INBOX", readonly=True)[b"EXISTS"]
    finally:
        c.logout()
    if exists != n:
        raise CheckFailed(f"INBOX holds {exists} mails after filling, expected {n}")
    return shapes, kept, gen_s, app_s


def folder_counts(login: Login) -> dict[str, int]:
    c = login.connect()
    try:
        out = {}
        for f in ("INBOX", "Processed", "Quarantine"):
            out[f] = c.folder_status(f, [b"MESSAGES"])[b"MESSAGES"] if c.folder_exists(f) else 0
        return out
    finally:
        c.logout()


def move_back(login: Login, n: int) -> None:
    """Processed → INBOX in one UID MOVE (new UIDs; the next phase has a new database)."""
    c = login.connect()
    try:
        c.select_folder("Processed")
        c.move("1:*", "INBOX")
        exists = c.select_folder("INBOX", readonly=True)[b"EXISTS"]
    finally:
        c.logout()
    if exists != n:
        raise CheckFailed(f"INBOX holds {exists} mails after moving them back, expected {n}")


def check_folders(login: Login, n: int, phase: str) -> dict[str, int]:
    folders = folder_counts(login)
    if folders["INBOX"] != 0 or folders["Processed"] != n or folders["Quarantine"] != 0:
        raise CheckFailed(f"{phase}: after the run the folders hold {folders}, expected every mail in Processed")
    return folders


def check_rows(counts: dict, n: int, phase: str) -> None:
    problems = [k for k in ("tickets", "messages_in", "raw_messages") if counts[k] != n]
    if counts["quarantined"]:
        problems.append("quarantined")
    acks, held = counts["acks_queued"], counts["acks_held_by_limit"]
    if acks + held != n or counts["messages_out"] != acks:
        problems.append("acks")
    if problems:
        raise CheckFailed(f"{phase}: {', '.join(problems)} wrong; expected {n} of each, no quarantine: {counts}")


def write_config(
    path: Path,
    *,
    login: Login,
    smtp_port: int,
    db_url: str,
    var_dir: Path,
    batch: int,
    parse_workers: int | None,
) -> Path:
    """One account feeding two queues (en, de), as the tests write it; only the service's own keys."""
    ingest = "" if parse_workers is None else f"\n[ingest]\nparse_workers = {parse_workers}\n"
    path.write_text(
        f"""
var_dir = "{var_dir}"

[database]
url = "{db_url}"

[[accounts]]
name = "main"
host = "{login.host}"
port = {login.port}
tls = "none"
user = "{login.user}"
password_env = "{PASSWORD_ENV}"
fetch_batch = {batch}

[[queues]]
name = "support"
addresses = ["{SUPPORT_ADDRESS}"]
language = "en"
account = "main"
display_name = "Vendor Support"

[[queues]]
name = "hotline"
addresses = ["{HOTLINE_ADDRESS}"]
language = "de"
account = "main"
display_name = "Vendor Hotline"

[smtp]
host = "127.0.0.1"
port = {smtp_port}
tls = "none"

[logging]
level = "error"
{ingest}""",
        encoding="utf-8",
    )
    return path


def _child_env(password: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env[PASSWORD_ENV] = password
    return env


@contextlib.contextmanager
def pg_database(pg_url: str) -> Iterator[str]:
    """A new PostgreSQL database on the server of ``pg_url``, dropped afterwards; yields its URL."""
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(pg_url)
    admin = url.set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"mb_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url.set(drivername="postgresql+psycopg", database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


def pg_reachable(pg_url: str) -> str | None:
    """The server's version, or None when nothing answers at ``pg_url``."""
    try:
        import psycopg
        from sqlalchemy.engine import make_url

        admin = make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(admin, autocommit=True, connect_timeout=3) as conn:
            return str(conn.execute("SHOW server_version").fetchone()[0])
    except Exception:
        return None


@dataclass
class Ingest:
    backend: str
    mails: int
    seconds: float
    rss_mb: float
    result: dict

    @property
    def rate(self) -> float:
        return rate(self.mails, self.seconds)

    def decile_rates(self) -> list[float | None]:
        return [rate(d["mails"], d["seconds"]) if d["mails"] else None for d in self.result["deciles"]]

    def flat(self) -> float | None:
        rates = [r for r in self.decile_rates() if r is not None]
        return rates[-1] / rates[0] if len(rates) >= 2 else None


def _progress_line(what: str, done: int, total: int, seconds: float, rss: RssSampler) -> str:
    return (
        f"        {what}: {done:,} of {total:,} mails, {seconds:.0f} s, {rate(done, seconds):.0f} mails/s; "
        f"RSS now {rss.now / 2**20:.0f} MB, peak {rss.peak_mb:.0f} MB"
    )


def run_ingest(
    backend: str, db_url: str, login: Login, args, work: Path, smtp_port: int, profile: str | None
) -> Ingest:
    """One ingest run of the service in a child process; the parent samples its tree's RSS."""
    n = args.mails
    phase_dir = work / f"ingest-{backend}"
    shutil.rmtree(phase_dir, ignore_errors=True)
    phase_dir.mkdir()
    cfg = write_config(
        phase_dir / "mailbridge.toml",
        login=login,
        smtp_port=smtp_port,
        db_url=db_url,
        var_dir=phase_dir / "var",
        batch=args.batch,
        parse_workers=args.parse_workers,
    )
    spec = {
        "config": str(cfg),
        "expected": n,
        "result": str(phase_dir / "result.json"),
        "breakdown": not args.no_breakdown,
        "profile": profile,
        "progress_every": args.progress,
    }
    (phase_dir / "spec.json").write_text(json.dumps(spec))
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--child", str(phase_dir / "spec.json")],
        env=_child_env(login.password),
        stdout=subprocess.PIPE,
        text=True,
    )
    with RssSampler(proc.pid) as rss:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(CHILD_MARK):
                msg = json.loads(line[len(CHILD_MARK) :])
                if "progress" in msg:
                    rss.sample()
                    print(_progress_line(backend, msg["progress"], n, msg["seconds"], rss), flush=True)
            else:
                print(f"        | {line.rstrip()}", flush=True)
        code = proc.wait()
    if code != 0:
        raise CheckFailed(f"the {backend} ingest child exited with {code}")
    result = json.loads((phase_dir / "result.json").read_text())
    check_rows(result["counts"], n, f"{backend} ingest")
    if result["committed"] != n:
        raise CheckFailed(f"{backend} ingest: {result['committed']} mails seen committed, expected {n}")
    result["folders"] = check_folders(login, n, f"{backend} ingest")
    shutil.rmtree(phase_dir / "var", ignore_errors=True)  # the raw store: gigabytes on long runs
    return Ingest(backend, n, result["seconds"], rss.peak_mb, result)


@contextlib.contextmanager
def service(cfg: Path, password: str, log_path: Path) -> Iterator[subprocess.Popen]:
    """``mailbridge run`` as a subprocess; SIGTERM and wait at the end."""
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mailbridge", "--config", str(cfg), "run"],
            env=_child_env(password),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cfg.parent,
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def _tail(path: Path, limit: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return ""


def _db_upgrade(cfg: Path, password: str) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "mailbridge", "--config", str(cfg), "db", "upgrade"],
        env=_child_env(password),
        capture_output=True,
        text=True,
        check=False,
    )
    if r.returncode != 0:
        raise CheckFailed(f"mailbridge db upgrade failed: {r.stdout[-1500:]} {r.stderr[-1500:]}")


def _outbox(db: Path) -> dict[tuple[str, str], int]:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)) as conn:
        return {(k, s): c for k, s, c in conn.execute("SELECT kind, status, count(*) FROM outbox GROUP BY 1, 2")}


@dataclass
class Sent:
    mails: int
    seconds: float
    first_ack: float
    acks: int
    rss_mb: float
    outbox: dict

    @property
    def rate(self) -> float:
        return rate(self.mails, self.seconds)


def run_sent(login: Login, args, work: Path, sink: Sink) -> Sent:
    """``mailbridge run`` over the backlog (SQLite) until the sink accepted every acknowledgement."""
    n = args.mails
    phase_dir = work / "sent"
    shutil.rmtree(phase_dir, ignore_errors=True)
    phase_dir.mkdir()
    db = phase_dir / "mailbridge.db"
    cfg = write_config(
        phase_dir / "mailbridge.toml",
        login=login,
        smtp_port=sink.port,
        db_url=f"sqlite:///{db}",
        var_dir=phase_dir / "var",
        batch=args.batch,
        parse_workers=args.parse_workers,
    )
    _db_upgrade(cfg, login.password)  # the schema of a deployed service exists before it starts
    sink.reset()
    log_path = phase_dir / "service.log"
    c = login.connect()
    try:
        t0 = time.perf_counter()
        with service(cfg, login.password, log_path) as proc, RssSampler(proc.pid) as rss:
            done, last_change, next_progress = 0, time.monotonic(), args.progress
            while True:  # ingest: until every mail left INBOX
                if proc.poll() is not None:
                    raise CheckFailed(f"mailbridge run exited with {proc.returncode}: {_tail(log_path)}")
                st = c.folder_status("INBOX", [b"MESSAGES"])[b"MESSAGES"]
                if n - st != done:
                    done, last_change = n - st, time.monotonic()
                    if done >= next_progress:
                        print(_progress_line("run", done, n, time.perf_counter() - t0, rss), flush=True)
                        next_progress += args.progress
                if st == 0:
                    break
                if time.monotonic() - last_change > STALL_SECONDS:
                    raise CheckFailed(f"mailbridge run: no progress for {STALL_SECONDS:.0f} s: {_tail(log_path)}")
                time.sleep(0.5)
            # Every mail is committed (it left INBOX after its commit): the outbox is complete.
            outbox = _outbox(db)
            expected = sum(outbox.values())
            seen, last_change = sink.count(), time.monotonic()
            while not sink.wait_for(expected, timeout=5):
                if proc.poll() is not None:
                    raise CheckFailed(f"mailbridge run exited with {proc.returncode}: {_tail(log_path)}")
                if sink.count() != seen:
                    seen, last_change = sink.count(), time.monotonic()
                elif time.monotonic() - last_change > STALL_SECONDS:
                    raise CheckFailed(f"the sink got {seen} of {expected} mails: {_outbox(db)} {_tail(log_path)}")
            arrivals = sink.arrivals()
            end = arrivals[expected - 1].at
            deadline = time.monotonic() + 30
            outbox = _outbox(db)
            while any(s != "sent" for _, s in outbox) and time.monotonic() < deadline:
                time.sleep(0.2)  # the sender records "sent" just after the server's answer
                outbox = _outbox(db)
            rss.sample()
    finally:
        c.logout()
    acks = outbox.get(("ack", "sent"), 0)
    if any(s != "sent" for _, s in outbox) or len(arrivals) != expected:
        raise CheckFailed(f"mailbridge run: outbox {outbox}, the sink accepted {len(arrivals)} of {expected}")
    check_folders(login, n, "mailbridge run")
    shutil.rmtree(phase_dir / "var", ignore_errors=True)
    return Sent(n, end - t0, arrivals[0].at - t0, acks, rss.peak_mb, {f"{k}/{s}": v for (k, s), v in outbox.items()})


@dataclass
class Latency:
    seconds: list[float]
    rss_mb: float

    def pct(self, q: float) -> float:
        s = sorted(self.seconds)
        return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


def _message_id(raw: bytes) -> str:
    return str(BytesHeaderParser(policy=compat32).parsebytes(raw).get("Message-ID") or "").strip().strip("<>")


def run_latency(login: Login, mails: list[bytes], args, work: Path, sink: Sink) -> Latency:
    """``mailbridge run`` with IDLE on an empty INBOX; one mail at a time; APPEND done → ack accepted."""
    phase_dir = work / "latency"
    shutil.rmtree(phase_dir, ignore_errors=True)
    phase_dir.mkdir()
    cfg = write_config(
        phase_dir / "mailbridge.toml",
        login=login,
        smtp_port=sink.port,
        db_url=f"sqlite:///{phase_dir / 'mailbridge.db'}",
        var_dir=phase_dir / "var",
        batch=args.batch,
        parse_workers=args.parse_workers,
    )
    _db_upgrade(cfg, login.password)
    sink.reset()
    log_path = phase_dir / "service.log"
    warm, measured = mails[0], mails[1:]
    ids = [_message_id(raw) for raw in measured]
    c = login.connect()
    try:
        with service(cfg, login.password, log_path) as proc, RssSampler(proc.pid) as rss:
            # One mail first: the service is up, connected and IDLE once its acknowledgement came.
            c.append("INBOX", warm)
            if not sink.wait_for(1, timeout=STALL_SECONDS):
                raise CheckFailed(f"latency: no acknowledgement of the first mail: {_tail(log_path)}")
            time.sleep(LATENCY_GAP_SECONDS)
            appended: dict[str, float] = {}
            for mid, raw in zip(ids, measured, strict=True):
                c.append("INBOX", raw)
                appended[mid] = time.perf_counter()
                time.sleep(LATENCY_GAP_SECONDS)
            ok = sink.wait_for(1 + len(measured), timeout=30)
            if proc.poll() is not None:
                raise CheckFailed(f"latency: mailbridge run exited with {proc.returncode}: {_tail(log_path)}")
    finally:
        c.logout()
    got = {a.in_reply_to: a.at for a in sink.arrivals()}
    missing = [m for m in ids if m not in got]
    if missing or not ok:
        raise CheckFailed(f"latency: no acknowledgement for {len(missing)} of {len(ids)} mails: {_tail(log_path)}")
    return Latency([got[m] - appended[m] for m in ids], rss.peak_mb)


@dataclass
class Repetition:
    limit_before: float  # mails/s
    limit_after: float = 0.0
    sqlite: Ingest | None = None
    pg: Ingest | None = None
    sent: Sent | None = None

    @property
    def limit(self) -> float:
        return (self.limit_before + self.limit_after) / 2

    def ratios(self) -> dict[str, float | None]:
        return {
            "sqlite": self.sqlite.rate / self.limit if self.sqlite else None,
            "postgresql": self.pg.rate / self.limit if self.pg else None,
            "sent": self.sent.rate / self.limit if self.sent else None,
        }

    def flat(self) -> float | None:
        flats = [f for f in (i.flat() for i in (self.sqlite, self.pg) if i) if f is not None]
        return min(flats) if flats else None

    def rss_mb(self) -> float | None:
        peaks = [p.rss_mb for p in (self.sqlite, self.pg, self.sent) if p]
        return max(peaks) if peaks else None


def _median(values: list) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def _fmt(v: float | None, digits: int = 2) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def print_ingest(ing: Ingest, limit: float) -> None:
    r = ing.result
    print(
        f"  {ing.backend}: {ing.mails:,} mails in {ing.seconds:.2f} s = {ing.rate:.1f} mails/s "
        f"(ratio {ing.rate / limit:.2f}); {r['cycles']} cycle(s); startup {r['startup']:.2f} s (not in the rate); "
        f"peak RSS {ing.rss_mb:.0f} MB"
    )
    c = dict(r["counts"])
    events = c.pop("ack_events", {})
    print(
        f"    checks: {r['dispositions']}; {c}; ack events {events}; folders {r['folders']}; "
        f"acks queued {c['acks_queued']:,}, held back by the per-recipient limit {c['acks_held_by_limit']:,}"
    )


def print_deciles(ingests: list[Ingest], batch: int) -> None:
    if not ingests:
        return
    print("\nper 10 % of the backlog (issue 18): decile rates by commit time (the first: from the 1st commit)")
    print(f"  {'decile':<10}" + "".join(f"{i.backend:>12}" for i in ingests))
    for d in range(10):
        cells = []
        for i in ingests:
            rates = i.decile_rates()
            cells.append(f"{_fmt(rates[d], 1) if d < len(rates) else 'n/a':>12}")
        print(f"  {f'{d * 10}-{d * 10 + 10} %':<10}" + "".join(cells))
    print(f"  {'last/first':<10}" + "".join(f"{_fmt(i.flat()):>12}" for i in ingests))
    if ingests[0].mails / 10 < batch:
        print(f"  (a decile of {ingests[0].mails // 10} mails is less than a fetch batch of {batch}: coarse)")
    for i in ingests:
        deciles = [d for d in i.result["deciles"] if d["mails"]]
        if len(deciles) < 2 or not deciles[0]["parts"]:
            continue
        first, last = deciles[0], deciles[-1]
        labels = set(first["parts"]) | set(last["parts"])
        rows = []
        for label in labels:
            a = first["parts"].get(label, 0.0) * 1000 / first["mails"]
            b = last["parts"].get(label, 0.0) * 1000 / last["mails"]
            rows.append((label, a, b))
        rest_a = first["seconds"] * 1000 / first["mails"] - sum(a for _, a, _ in rows)
        rest_b = last["seconds"] * 1000 / last["mails"] - sum(b for _, _, b in rows)
        rows.append(("rest of the cycle (loop, state, untimed, other threads)", rest_a, rest_b))
        rows.sort(key=lambda r: -(r[2] - r[1]))
        print(f"\n  {i.backend}: time per mail by part, first vs last decile, sorted by growth")
        print(f"    {'part':<58} {'first ms':>9} {'last ms':>9} {'ratio':>7}")
        for label, a, b in rows:
            ratio = f"{b / a:7.2f}" if a > 0.0005 else "      -"
            print(f"    {label:<58} {a:9.3f} {b:9.3f} {ratio}")


def print_breakdown(ing: Ingest) -> None:
    parts = ing.result["breakdown"]
    if not parts:
        return
    total = ing.seconds
    rows = sorted(parts.items(), key=lambda kv: -kv[1])
    rows.append(("rest of the cycle (loop, state, untimed, other threads)", total - sum(parts.values())))
    print(f"\n  where the {ing.backend} run's {total:.2f} s went (wall time per part, ms per mail, share):")
    for label, secs in rows:
        print(f"    {label:<58} {secs:8.2f} s {secs * 1000 / ing.mails:7.3f} ms {secs / total:7.1%}")
    print(f"    (wrapped: {', '.join(ing.result['wrapped']) or 'nothing'})")


def _revision() -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "mailbridge"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown revision"
    return f"commit {head}" + (" + uncommitted changes in mailbridge/" if dirty else "")


def run(args: argparse.Namespace) -> int:
    import mailbridge

    n = args.mails
    print(
        f"mailbridge ingest benchmark: {n:,} mails, fetch batch {args.batch}, {args.repeat} repetition(s), "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, load average {_load()}"
    )
    print(f"mailbridge: {_revision()} ({Path(mailbridge.__file__).parent})")
    pg_version = None if args.no_pg else pg_reachable(args.pg_url)
    if not args.no_pg and pg_version is None:
        print(f"PostgreSQL: nothing answers at {args.pg_url}: the PostgreSQL phase is skipped")
    ctx = multiprocessing.get_context("spawn")
    with (
        tempfile.TemporaryDirectory(prefix="mailbridge-bench-") as tmp,
        imap_server(args.imap == "pymap") as imap,
        Sink() as sink,
        ctx.Pool(LIMIT_WORKERS, initializer=_limit_worker_init) as pool,
    ):
        work = Path(tmp)
        print(f"IMAP server: {imap.kind}")
        if pg_version:
            print(f"PostgreSQL {pg_version} at {args.pg_url} (a fresh database per run, dropped after)")
        keep = args.latency + 1 if args.latency else 0
        print(f"generating {n:,} mails (seed {args.seed}) and filling INBOX by APPEND (not measured) …", flush=True)
        shapes, latency_mails, gen_s, app_s = fill(imap.backlog, n, args.seed, keep)
        print(mailgen.format_description(mailgen.describe(shapes)))
        del shapes
        print(f"        generated in {gen_s:.1f} s, appended in {app_s:.1f} s ({rate(n, app_s):.0f} mails/s)")
        pool.map(_limit_warm, range(4 * LIMIT_WORKERS), chunksize=1)

        # Context, once: what the parts cost alone (at most CONTEXT_MAX mails).
        m = min(n, CONTEXT_MAX)
        context = [
            (label, measure_context(imap.backlog, args.batch, parse, m))
            for label, parse in (
                ("fetch alone (UID FETCH BODY.PEEK[], batched)", None),
                ("fetch + mail-parser, 1 process", plain_parse),
                ("fetch + mailbridge parse_mail, 1 process", mailbridge_parse),
            )
        ]
        limits = [measure_limit(imap.backlog, args.batch, pool)]
        if limits[0][0] != n:
            raise CheckFailed(f"the limit fetched {limits[0][0]} mails, expected {n}")
        reps: list[Repetition] = []
        for r in range(args.repeat):
            rep = Repetition(limit_before=rate(*limits[-1]))
            reps.append(rep)
            tag = f" (repetition {r + 1} of {args.repeat})" if args.repeat > 1 else ""
            print(f"\nSQLite ingest{tag} …", flush=True)
            rep.sqlite = run_ingest(
                "sqlite",
                f"sqlite:///{work / f'ingest-{r}.db'}",
                imap.backlog,
                args,
                work,
                sink.port,
                args.profile if r == 0 else None,
            )
            (work / f"ingest-{r}.db").unlink(missing_ok=True)
            move_back(imap.backlog, n)
            if pg_version:
                print(f"PostgreSQL ingest{tag} …", flush=True)
                with pg_database(args.pg_url) as url:
                    rep.pg = run_ingest("postgresql", url, imap.backlog, args, work, sink.port, None)
                move_back(imap.backlog, n)
            if not args.no_sent:
                print(f"mailbridge run until every ack is accepted{tag} …", flush=True)
                rep.sent = run_sent(imap.backlog, args, work, sink)
                move_back(imap.backlog, n)
            limits.append(measure_limit(imap.backlog, args.batch, pool))
            if limits[-1][0] != n:
                raise CheckFailed(f"the limit fetched {limits[-1][0]} mails, expected {n}")
            rep.limit_after = rate(*limits[-1])
        latency = None
        if args.latency:
            print(f"IDLE latency: {args.latency} mails, {LATENCY_GAP_SECONDS} s apart …", flush=True)
            latency = run_latency(imap.latency, latency_mails, args, work, sink)

    # -- report ------------------------------------------------------------------------------------
    print(f"\nload average at the end: {_load()} (this run alone keeps it near 2; more means other work)")
    print(f"\n{'context (first ' + format(m, ',') + ' mails)':<52} {'mails':>7} {'seconds':>8} {'mails/s':>8}")
    for label, (cn, cbytes, cs) in context:
        extra = f"  {cbytes / 2**20 / cs:.1f} MB/s" if label.startswith("fetch alone") else ""
        print(f"  {label:<50} {cn:>7,} {cs:>8.2f} {rate(cn, cs):>8.1f}{extra}")
    for r, rep in enumerate(reps):
        head = f"\nrepetition {r + 1}" if len(reps) > 1 else "\nresults"
        print(
            f"{head}: the limit (imapclient batched fetch + mail-parser on {LIMIT_WORKERS} processes) "
            f"{rep.limit_before:.1f} mails/s before, {rep.limit_after:.1f} after, mean {rep.limit:.1f}"
        )
        for ing in (rep.sqlite, rep.pg):
            if ing is not None:
                print_ingest(ing, rep.limit)
        if rep.pg is None:
            print("  postgresql: skipped")
        if rep.sent is not None:
            s = rep.sent
            print(
                f"  mailbridge run until every ack accepted: {s.mails:,} mails in {s.seconds:.2f} s = "
                f"{s.rate:.1f} mails/s (ratio {s.rate / rep.limit:.2f}); from the start (schema made before), "
                f"first ack after {s.first_ack:.2f} s; {s.acks:,} acks; outbox {s.outbox}; peak RSS {s.rss_mb:.0f} MB"
            )
        else:
            print("  mailbridge run until every ack accepted: skipped")
    last = reps[-1]
    for ing in (last.sqlite, last.pg):
        if ing is not None:
            print_breakdown(ing)
    print_deciles([i for i in (last.sqlite, last.pg) if i is not None], args.batch)
    if latency is not None:
        print(
            f"\nIDLE latency, APPEND done → ack accepted ({len(latency.seconds)} mails): p50 {latency.pct(0.5):.3f} s, "
            f"p95 {latency.pct(0.95):.3f} s, max {max(latency.seconds):.3f} s; peak RSS {latency.rss_mb:.0f} MB"
        )

    ratios = {k: _median([rep.ratios()[k] for rep in reps]) for k in ("sqlite", "postgresql", "sent")}
    rss_mb = max((x for x in (rep.rss_mb() for rep in reps) if x is not None), default=None)
    flat = _median([rep.flat() for rep in reps])
    values = {**ratios, "rss_mb": rss_mb, "flat": flat, "idle_p95_s": latency.pct(0.95) if latency else None}
    if len(reps) > 1:
        print(f"\nmedians over {len(reps)} repetitions (RSS: the highest)")
    verdicts = []
    for name, (op, bound) in TARGETS.items():
        v = values[name]
        ok = None if v is None else (v >= bound if op == ">=" else v <= bound)
        verdict = "" if ok is None else " PASS" if ok else " FAIL"
        verdicts.append(f"{name} {op} {bound:g}: {_fmt(v, 0 if name == 'rss_mb' else 2)}{verdict}")
    note = " (profiled SQLite run: its figure carries cProfile's cost)" if args.profile else ""
    print("TARGETS " + "; ".join(verdicts) + note)
    print(
        f"RESULT sqlite={_fmt(ratios['sqlite'])} postgresql={_fmt(ratios['postgresql'])} sent={_fmt(ratios['sent'])} "
        f"rss_mb={_fmt(rss_mb, 0)} flat={_fmt(flat)}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mails", type=int, default=2000, help="mails in the backlog (default 2000)")
    ap.add_argument("--batch", type=int, default=200, help="UIDs per FETCH, limit and service (default 200)")
    ap.add_argument("--repeat", type=int, default=1, help="repetitions of the measured phases; the median is used")
    ap.add_argument(
        "--pg-url",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="PostgreSQL server to create a fresh database on (default %(default)s, when it answers)",
    )
    ap.add_argument("--no-pg", action="store_true", help="skip the PostgreSQL ingest")
    ap.add_argument("--no-sent", action="store_true", help="skip `mailbridge run` until every ack is accepted")
    ap.add_argument("--latency", type=int, default=30, help="mails for the IDLE latency (default 30; 0 skips it)")
    ap.add_argument("--seed", type=int, default=mailgen.DEFAULT_SEED, help="corpus seed")
    ap.add_argument(
        "--parse-workers",
        type=int,
        help="ingest.parse_workers for the service (default: the service's own default); 0 = parse inline",
    )
    ap.add_argument(
        "--imap",
        choices=("dovecot", "pymap"),
        default="dovecot",
        help="the IMAP server: a private Dovecot (default; pymap when Dovecot is missing) or pymap",
    )
    ap.add_argument("--no-breakdown", action="store_true", help="do not time the parts of the service path")
    ap.add_argument(
        "--profile",
        metavar="FILE",
        help="run the (first) SQLite ingest under cProfile; print hot spots, write FILE ('-': none)",
    )
    ap.add_argument(
        "--progress",
        type=int,
        default=PROGRESS_EVERY,
        metavar="N",
        help="print progress and the RSS so far every N mails (default %(default)s)",
    )
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child is not None:
        return child_main(args.child)
    if min(args.mails, args.batch, args.repeat, args.progress) <= 0 or args.latency < 0:
        ap.error("--mails, --batch, --repeat and --progress must be positive, --latency at least 0")
    try:
        return run(args)
    except CheckFailed as e:
        print(f"\nCHECK FAILED: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
