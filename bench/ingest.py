"""Backlog benchmark: mails per second from IMAP to committed ticket with queued acknowledgement,
side by side with the rate at which the same mails are merely fetched (batched) and parsed.

One run: start pymap (a real IMAP server, own process) and an aiosmtpd sink on loopback, fill INBOX
with ``--mails`` generated mails (``bench/mailgen.py``) through APPEND, then measure on the same
mailbox, in this order:

1. *fetch only* - ``ImapMailbox.uids_after(0)`` + ``fetch()`` in batches of ``--batch``
   (``UID FETCH BODY.PEEK[]``; the mailbox is left as it was);
2. *fetch + parse* (the baseline) - the same, with ``parse_mail`` on every mail;
3. *parse only* - ``parse_mail`` over the corpus in memory (context: the parser's own share);
4. *service* - a fresh database, then ``App.poller("main").cycle()`` until the backlog is done:
   exactly what ``mailbridge run`` does per cycle (fetch, raw store, a transaction per batch of mails with
   the acknowledgement queued in the outbox, MOVE to Processed). Counted from the first cycle to
   the last commit and MOVE; checked: one ticket and one queued acknowledgement per mail;
5. *outbox drain* - ``OutboxSender.run_once()`` until the outbox is empty, into the SMTP sink.

The target of the issue is service >= 0.5 x (fetch + parse). The exit code is 0 whether or not it
is met (this is a measurement); it is non-zero when something fails or a check does not hold.

    python bench/ingest.py [--mails 5000] [--batch 200] [--db-url URL] [--profile FILE]

``--db-url postgresql://postgres@127.0.0.1:5432/postgres`` runs the service on PostgreSQL: the URL
names the server (and a database to connect to); the benchmark creates a fresh database there and
drops it afterwards. Without it, a new SQLite file in a temporary directory is used.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import platform
import pstats
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.engine import make_url

try:  # run as a script (bench/ on sys.path) or imported as bench.ingest
    import mailgen
except ImportError:  # pragma: no cover
    from bench import mailgen

from mailbridge.app import App
from mailbridge.embedded import PymapServer, SmtpSink
from mailbridge.ingest.fetcher import ImapMailbox
from mailbridge.ingest.parser import parse_mail
from mailbridge.logging import configure_logging
from mailbridge.settings import load_settings
from mailbridge.store.db import session_scope
from mailbridge.store.models import Message, Outbox, Quarantine, RawMessage, Ticket

SUPPORT_ADDRESS = "support@vendor.example"
HOTLINE_ADDRESS = "hotline@vendor.example"
IMAP_USER = "support"
IMAP_PASSWORD = "bench-secret"
PASSWORD_ENV = "MB_BENCH_IMAP_PASSWORD"
# Mails per MULTIAPPEND command while filling the mailbox (filling is not measured).
APPEND_CHUNK = 100
# The target: the service at least this fraction of the fetch-and-parse rate.
TARGET_RATIO = 0.5
# A cycle that fetches nothing while mails are left means the service is stuck.
MAX_IDLE_CYCLES = 3
# Rows shown from the profile.
PROFILE_ROWS = 35


def write_config(
    path: Path, *, imap_port: int, smtp_port: int, db_url: str, var_dir: Path, batch: int, parse_workers: int | None
) -> Path:
    """The same shape of config as the tests write: one account feeding two queues (en, de)."""
    ingest = "" if parse_workers is None else f"\n[ingest]\nparse_workers = {parse_workers}\n"
    path.write_text(
        f"""
var_dir = "{var_dir}"

[database]
url = "{db_url}"

[[accounts]]
name = "main"
host = "127.0.0.1"
port = {imap_port}
tls = "none"
user = "{IMAP_USER}"
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
level = "warning"
{ingest}""",
        encoding="utf-8",
    )
    return path


@contextmanager
def database(db_url: str | None, workdir: Path) -> Iterator[str]:
    """A fresh, empty database: a new SQLite file, or a new PostgreSQL database that is dropped after."""
    if db_url is None:
        yield f"sqlite:///{workdir / 'mailbridge.db'}"
        return
    url = make_url(db_url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:" and Path(url.database).exists():
            raise SystemExit(f"--db-url: {url.database} exists; the benchmark needs an empty database")
        yield db_url
        return
    if url.get_backend_name() != "postgresql":
        raise SystemExit(f"--db-url: only sqlite and postgresql are supported, not {url.get_backend_name()}")
    import psycopg

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


def fill(server: PymapServer, mails: list[bytes]) -> None:
    """APPEND every mail to INBOX, MULTIAPPEND (RFC 3502) when offered; then check the count."""
    c = server.client()
    try:
        multi = b"MULTIAPPEND" in c.capabilities()
        for i in range(0, len(mails), APPEND_CHUNK):
            chunk = mails[i : i + APPEND_CHUNK]
            if multi:
                c.multiappend("INBOX", chunk)
            else:
                for raw in chunk:
                    c.append("INBOX", raw)
        exists = c.select_folder("INBOX", readonly=True)[b"EXISTS"]
    finally:
        c.logout()
    if exists != len(mails):
        raise RuntimeError(f"INBOX holds {exists} mails after filling, expected {len(mails)}")


def folder_counts(server: PymapServer, *folders: str) -> dict[str, int]:
    c = server.client()
    try:
        return {f: c.folder_status(f, [b"MESSAGES"])[b"MESSAGES"] for f in folders if c.folder_exists(f)}
    finally:
        c.logout()


def unseen(server: PymapServer) -> int:
    c = server.client()
    try:
        c.select_folder("INBOX", readonly=True)
        return len(c.search(["UNSEEN"]))
    finally:
        c.logout()


def bench_fetch(settings, parse: bool, folder: str | None = None) -> tuple[int, int, float]:
    """Fetch every mail in the account's folder (or ``folder``) in batches, and parse it if asked;
    returns (mails, bytes, seconds)."""
    account = settings.account("main")
    if folder is not None:
        account = account.model_copy(update={"folder": folder})
    mb = ImapMailbox(account)
    mb.connect()
    try:
        t0 = time.perf_counter()
        uids = mb.uids_after(0)
        n = size = 0
        for _uid, raw in mb.fetch(uids):
            if parse:
                parse_mail(raw)
            n += 1
            size += len(raw)
        return n, size, time.perf_counter() - t0
    finally:
        mb.close()


class Breakdown:
    """Wall time per part of the service path, taken with perf_counter around the real objects.

    Wraps, on this run's instances only (nothing in mailbridge is changed), whatever of these the
    service has: the mailbox's ``fetch``/``fetch_batches`` and ``move``, the preparer's ``prepare``
    (raw store + parse ahead of the transaction, or the wait for the parse pool), the raw store's
    ``put``, the pipeline's ``process`` and each pipeline step. Times are exclusive: a wrapped call
    inside another (a step inside ``process``, a fetch inside ``prepare``) is counted once, under
    its own label, so the rows add up to the service's time. What ``process`` spends outside its
    steps is the transaction itself: session, flush, ``advance_last_uid``, commit. The cost is two
    perf_counter calls per wrapped call, a few microseconds per mail.
    """

    TX = "transaction: session, flush, advance_last_uid, commit"

    def __init__(self) -> None:
        self.seconds: Counter = Counter()
        self._stack: list[list[float]] = []  # per open timed call: [time spent in nested timed calls]

    def _enter(self) -> tuple[list[float], float]:
        frame = [0.0]
        self._stack.append(frame)
        return frame, time.perf_counter()

    def _exit(self, label: str, frame: list[float], t0: float) -> None:
        elapsed = time.perf_counter() - t0
        self._stack.pop()
        self.seconds[label] += elapsed - frame[0]
        if self._stack:
            self._stack[-1][0] += elapsed

    def wrap(self, obj, attr: str, label: str) -> None:
        fn = getattr(obj, attr, None)
        if fn is None:
            return

        def timed(*args, **kwargs):
            frame, t0 = self._enter()
            try:
                return fn(*args, **kwargs)
            finally:
                self._exit(label, frame, t0)

        setattr(obj, attr, timed)

    def wrap_iter(self, obj, attr: str, label: str) -> None:
        fn = getattr(obj, attr, None)
        if fn is None:
            return

        def timed(*args, **kwargs):
            frame, t0 = self._enter()
            try:
                it = iter(fn(*args, **kwargs))
            finally:
                self._exit(label, frame, t0)
            while True:
                frame, t0 = self._enter()
                try:
                    item = next(it)
                except StopIteration:
                    return
                finally:
                    self._exit(label, frame, t0)
                yield item

        setattr(obj, attr, timed)

    def instrument(self, app: App, poller) -> None:
        pipeline = app.pipeline
        pipeline.steps = [_TimedStep(step, self) for step in pipeline.steps]
        self.wrap(pipeline, "process", self.TX)
        self.wrap_iter(pipeline, "batches", self.TX)  # group commit: a batch of mails per transaction
        self.wrap_iter(poller.mailbox, "fetch", "IMAP fetch")
        self.wrap_iter(poller.mailbox, "fetch_batches", "IMAP fetch")
        self.wrap(poller.mailbox, "move", "IMAP move")
        preparer = getattr(poller, "preparer", None)
        if preparer is not None:
            self.wrap_iter(preparer, "prepare", "prepare: raw store + parse (or wait for the pool)")
        raw = getattr(poller, "raw", None)
        if raw is not None:
            self.wrap(raw, "put", "raw store put (sha256 + gzip + file)")

    def rows(self, total: float) -> list[tuple[str, float]]:
        out = dict(self.seconds)
        out["rest of the cycle (loop, state, leftovers)"] = total - sum(out.values())
        return sorted(out.items(), key=lambda kv: -kv[1])


class _TimedStep:
    """A pipeline step with the same name (and the same ``records_kept``), timed by a :class:`Breakdown`."""

    def __init__(self, step, breakdown: Breakdown):
        self.step = step
        self.name = step.name
        self.records_kept = getattr(step, "records_kept", False)
        self.label = f"step {step.name}"
        self.breakdown = breakdown

    def __call__(self, mail) -> None:
        frame, t0 = self.breakdown._enter()
        try:
            self.step(mail)
        finally:
            self.breakdown._exit(self.label, frame, t0)


def bench_service(
    app: App, expected: int, profile: cProfile.Profile | None, breakdown: Breakdown | None
) -> tuple[float, int, Counter]:
    """Poll cycles until ``expected`` mails went through; returns (seconds, cycles, dispositions)."""
    poller = app.poller("main")
    if breakdown is not None:
        breakdown.instrument(app, poller)
    dispositions: Counter = Counter()
    done = cycles = idle = 0
    try:
        if profile is not None:
            profile.enable()
        t0 = time.perf_counter()
        while done < expected:
            report = poller.cycle()
            cycles += 1
            done += report.fetched
            dispositions.update(report.dispositions)
            if report.fetched == 0:
                idle += 1
                if idle >= MAX_IDLE_CYCLES:
                    raise RuntimeError(f"the service stopped after {done} of {expected} mails")
        elapsed = time.perf_counter() - t0
        if profile is not None:
            profile.disable()
    finally:
        poller.close()
    return elapsed, cycles, dispositions


async def _drain(sender, expected: int) -> int:
    sent = 0
    while sent < expected:
        report = await sender.run_once()
        if report.errors or report.failed:
            raise RuntimeError(f"outbox drain failed: {report.errors[:3]} ({report.failed} failed)")
        if report.sent == 0:
            break
        sent += report.sent
    return sent


def bench_drain(app: App, sink: SmtpSink, expected: int) -> tuple[int, float]:
    t0 = time.perf_counter()
    sent = asyncio.run(_drain(app.sender(), expected))
    elapsed = time.perf_counter() - t0
    received = len(sink.wait_for(expected, timeout=30))
    if sent != expected or received != expected:
        raise RuntimeError(f"outbox drain: {sent} sent, {received} received by the sink, expected {expected}")
    return sent, elapsed


def check_database(app: App, expected: int) -> dict[str, int]:
    with session_scope(app.session_factory) as s:
        counts = {
            "tickets": s.scalar(select(func.count()).select_from(Ticket)),
            "messages_in": s.scalar(select(func.count()).select_from(Message).where(Message.direction == "in")),
            "messages_out": s.scalar(select(func.count()).select_from(Message).where(Message.direction == "out")),
            "raw_messages": s.scalar(select(func.count()).select_from(RawMessage)),
            "acks_queued": s.scalar(
                select(func.count()).select_from(Outbox).where(Outbox.kind == "ack", Outbox.status == "queued")
            ),
            "outbox_rows": s.scalar(select(func.count()).select_from(Outbox)),
            "quarantined": s.scalar(select(func.count()).select_from(Quarantine)),
        }
    wrong = {k: v for k, v in counts.items() if k != "quarantined" and v != expected}
    if wrong or counts["quarantined"]:
        raise RuntimeError(f"after the service run, expected {expected} of each and no quarantine: {counts}")
    return counts


def _revision() -> str:
    """The checkout measured: commit, and whether the working tree had changes."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "mailbridge"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown revision"
    return f"commit {head}" + (" + uncommitted changes in mailbridge/" if dirty else "")


def _load() -> str:
    # Other processes on a 2-core machine move every figure; the load average says whether they ran.
    try:
        return "/".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:  # pragma: no cover - not on every platform
        return "n/a"


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def print_profile(profile: cProfile.Profile, out: Path | None) -> None:
    stats = pstats.Stats(profile, stream=sys.stdout)
    if out is not None:
        stats.dump_stats(out)
        print(f"profile written to {out} (python -m pstats {out})")
    stats.strip_dirs()
    print(f"\n--- service profile, top {PROFILE_ROWS} by cumulative time ---")
    stats.sort_stats("cumulative").print_stats(PROFILE_ROWS)
    print(f"--- service profile, top {PROFILE_ROWS} by own time ---")
    stats.sort_stats("tottime").print_stats(PROFILE_ROWS)


def run(args: argparse.Namespace) -> int:
    configure_logging(level="warning", fmt="console")
    n = args.mails
    print(
        f"mailbridge ingest benchmark: {n:,} mails, fetch_batch {args.batch}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, load average {_load()}"
    )
    print(f"mailbridge: {_revision()}")
    t = time.perf_counter()
    corpus = mailgen.generate(n, seed=args.seed, support_addresses=(SUPPORT_ADDRESS, HOTLINE_ADDRESS))
    print(mailgen.format_description(mailgen.describe(corpus)))
    print(f"        generated in {time.perf_counter() - t:.1f} s (seed {args.seed})")
    raws = [m.raw for m in corpus]

    with (
        tempfile.TemporaryDirectory(prefix="mailbridge-bench-") as tmp,
        PymapServer(user=IMAP_USER, password=IMAP_PASSWORD) as imap,
        SmtpSink() as sink,
    ):
        work = Path(tmp)
        t = time.perf_counter()
        fill(imap, raws)
        print(f"INBOX filled by APPEND in {time.perf_counter() - t:.1f} s (pymap, loopback; not measured)")

        with database(args.db_url, work) as db_url:
            backend = make_url(db_url).get_backend_name()
            cfg = write_config(
                work / "mailbridge.toml",
                imap_port=imap.port,
                smtp_port=sink.port,
                db_url=db_url,
                var_dir=work / "var",
                batch=args.batch,
                parse_workers=args.parse_workers,
            )
            settings = load_settings(cfg, environ={PASSWORD_ENV: IMAP_PASSWORD})
            # Parse worker processes of the service (ingest.parse_workers), where the service has them.
            w = getattr(settings.ingest, "workers", None)
            workers = "parse inline" if not w else f"{w} parse worker process(es)"

            # (1) + (2): the baseline, read-only on the mailbox.
            f_n, f_bytes, f_s = bench_fetch(settings, parse=False)
            fp_n, _, fp_s = bench_fetch(settings, parse=True)
            if f_n != n or fp_n != n:
                raise RuntimeError(f"baseline fetched {f_n}/{fp_n} mails, expected {n}")
            if unseen(imap) != n:
                raise RuntimeError("the baseline changed the \\Seen flags (BODY.PEEK expected)")
            # (3): the parser alone, for context.
            t = time.perf_counter()
            for raw in raws:
                parse_mail(raw)
            p_s = time.perf_counter() - t

            # (4): the service. Migrations and the language models load before the clock starts,
            # as they do once when `mailbridge run` starts.
            t = time.perf_counter()
            app = App(settings)
            try:
                app.upgrade_db()
                _ = app.pipeline
                app.detector.guess("Lizenzserver startet nicht", "Guten Tag, seit dem Update geht nichts.")
                app.detector.guess("Server does not start", "Hello, since the update nothing works.")
                startup_s = time.perf_counter() - t

                profile = cProfile.Profile() if args.profile else None
                breakdown = None if args.no_breakdown else Breakdown()
                s_s, cycles, dispositions = bench_service(app, n, profile, breakdown)
                counts = check_database(app, n)
                folders = folder_counts(imap, "INBOX", "Processed", "Quarantine")
                if folders.get("INBOX") != 0 or folders.get("Processed") != n:
                    raise RuntimeError(f"after the service run the folders hold {folders}")

                # (2'): the baseline once more, now from Processed: the service run lies between
                # the two, so a slower or busier machine during part of the run shows on both sides.
                fp2_n, _, fp2_s = bench_fetch(settings, parse=True, folder="Processed")
                if fp2_n != n:
                    raise RuntimeError(f"second baseline fetched {fp2_n} mails from Processed, expected {n}")

                # (5): the outbox, drained into the SMTP sink.
                d_n, d_s = (0, 0.0) if args.no_drain else bench_drain(app, sink, n)
            finally:
                app.close()

    mb = f_bytes / 1024 / 1024
    base_s = (fp_s + fp2_s) / 2
    ratio = rate(n, s_s) / rate(n, base_s)
    rows = [
        ("fetch only (UID FETCH BODY.PEEK[], batched)", n, f_s, f"{mb / f_s:6.1f} MB/s"),
        ("fetch + parse, before the service (INBOX)", n, fp_s, ""),
        ("fetch + parse, after the service (Processed)", n, fp2_s, ""),
        ("fetch + parse: baseline (mean time of the two)", n, base_s, ""),
        ("parse only (in memory, context)", n, p_s, ""),
        ("service: fetch -> ticket + ack queued -> MOVE", n, s_s, f"{backend}, {workers}, {cycles} cycle(s)"),
    ]
    if not args.no_drain:
        rows.append(("outbox drain to SMTP (separate)", d_n, d_s, ""))
    print(f"\nload average at the end: {_load()} (this run alone keeps it near 1; more means other work)")
    print(f"service startup (migrations, language models; not in the rate): {startup_s:.2f} s")
    print(f"checks: {dict(dispositions)}; {counts}; folders {folders}\n")
    print(f"{'phase':<47} {'mails':>6} {'seconds':>8} {'mails/s':>8}")
    print("-" * 72)
    for label, count, secs, note in rows:
        print(f"{label:<47} {count:>6} {secs:>8.2f} {rate(count, secs):>8.1f}  {note}")
    print("-" * 72)
    print(
        f"ratio service / (fetch + parse): {ratio:.2f}  "
        f"(against each baseline alone: {fp_s / s_s:.2f} before, {fp2_s / s_s:.2f} after)"
    )
    verdict = "PASS" if ratio >= TARGET_RATIO else "FAIL"
    note = " (profiled run: the service figure carries cProfile's overhead)" if args.profile else ""
    print(f"target >= {TARGET_RATIO}: {verdict}{note}")
    if breakdown is not None:
        print(f"\nwhere the service's {s_s:.2f} s went (wall time, ms per mail, share):")
        for label, secs in breakdown.rows(s_s):
            print(f"  {label:<55} {secs:7.2f} s {secs * 1000 / n:6.2f} ms {secs / s_s:6.1%}")
    if args.profile:
        print_profile(profile, None if args.profile == "-" else Path(args.profile))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mails", type=int, default=5000, help="mails in the backlog (default 5000)")
    ap.add_argument("--batch", type=int, default=200, help="UIDs per FETCH, baseline and service (default 200)")
    ap.add_argument("--db-url", help="postgresql://… server to create a fresh database on (default: new SQLite file)")
    ap.add_argument("--seed", type=int, default=mailgen.DEFAULT_SEED, help="corpus seed")
    ap.add_argument(
        "--parse-workers",
        type=int,
        help="ingest.parse_workers for the service (default: the service's own default); 0 = parse inline",
    )
    ap.add_argument("--no-drain", action="store_true", help="skip draining the outbox over SMTP")
    ap.add_argument("--no-breakdown", action="store_true", help="do not time the parts of the service path")
    ap.add_argument(
        "--profile",
        metavar="FILE",
        help="run the service phase under cProfile; print hot spots, write FILE ('-': none)",
    )
    args = ap.parse_args(argv)
    if args.mails <= 0 or args.batch <= 0:
        ap.error("--mails and --batch must be positive")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
