"""Import benchmark: mails per second that ``mailbridge import mbox PATH --archive`` brings from an
mbox file into committed cases, side by side with an external baseline that contains nothing of ours.

One run: generate ``--mails`` mails (``bench/mailgen.py``, the same mix as the ingest benchmark) into
an mbox file in a temporary directory (not measured), then measure on that file, in this order:

1. *baseline* - the standard library's ``mailbox.mbox`` iterated key by key (``get_bytes``) and
   ``mailparser.parse_from_bytes`` on every mail, on the same number of processes as the import's
   parse pool (``ingest.parse_workers``): a process pool, the parent reading the file;
2. *import* - ``Importer.run`` exactly as the command runs it (archive mode): the ordering pass over
   the headers, preparation in the parse pool (raw store, parse, language), one transaction per mail
   through the archive pipeline, closing the old cases at the end. Checked: every mail has an
   outcome, one case per thread, nothing in the outbox;
3. the baseline once more (the import lies between the two runs, so a busier machine during part of
   the run shows on both sides; the mean is the baseline).

The last line is ``RESULT import <backend> …`` with both rates and the ratio import / baseline. The
exit code is 0 whether or not the import is fast (this is a measurement); non-zero when a check fails.

    python bench/import.py [--mails 50000] [--db-url postgresql://postgres@127.0.0.1:5432/postgres]
        [--also-sqlite] [--parse-workers N]

Without ``--db-url`` a new SQLite file is used; with it, a fresh PostgreSQL database is created on that
server and dropped afterwards (``--also-sqlite``: run SQLite too and print both).
"""

from __future__ import annotations

import argparse
import mailbox
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import mailparser
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script: bench/ on sys.path
import mailgen
from ingest import HOTLINE_ADDRESS, SUPPORT_ADDRESS, _load, _revision, database, write_config

from mailbridge.app import App
from mailbridge.importer import Importer, LogProgress, Source
from mailbridge.logging import configure_logging
from mailbridge.settings import load_settings
from mailbridge.store.db import session_scope
from mailbridge.store.models import Outbox, RawMessage, Ticket

# Mails handed to a baseline worker at once (the import's pool hands 4; more only helps the baseline).
BASELINE_CHUNK = 16


def _parse(raw: bytes) -> int:
    """The baseline's work on one mail: mail-parser's whole parse (and nothing else)."""
    return len(mailparser.parse_from_bytes(raw).subject or "")


def baseline(path: Path, workers: int) -> tuple[int, float]:
    """(mails, seconds): ``mailbox.mbox`` iteration and ``mailparser.parse_from_bytes`` per mail."""
    t = time.perf_counter()
    box = mailbox.mbox(path, create=False)
    try:
        raws = (box.get_bytes(key) for key in box.iterkeys())
        if workers <= 0:
            n = sum(1 for raw in raws if _parse(raw) >= 0)
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                n = sum(1 for r in pool.map(_parse, raws, chunksize=BASELINE_CHUNK) if r >= 0)
    finally:
        box.close()
    return n, time.perf_counter() - t


def run_import(path: Path, work: Path, db_url: str | None, parse_workers: int | None, n: int) -> dict:
    with database(db_url, work) as url:
        backend = make_url(url).get_backend_name()
        cfg = write_config(
            work / f"mailbridge-{backend}.toml",
            imap_port=1,  # no IMAP: the import reads the file
            smtp_port=1,  # nothing is sent in archive mode
            db_url=url,
            var_dir=work / f"var-{backend}",
            batch=200,
            parse_workers=parse_workers,
        )
        app = App(load_settings(cfg, environ={"MB_BENCH_IMAP_PASSWORD": "-"}))
        try:
            # Migrations and the language models load before the clock starts (once per command).
            t = time.perf_counter()
            app.upgrade_db()
            app.detector.guess("Lizenzserver startet nicht", "Guten Tag, seit dem Update geht nichts.")
            startup = time.perf_counter() - t
            source = Source("mbox", path)
            t = time.perf_counter()
            report = Importer(app, source, archive=True, progress=LogProgress(every=30)).run()
            seconds = time.perf_counter() - t
            source.close()
            with session_scope(app.session_factory) as s:
                tickets = s.scalar(select(func.count()).select_from(Ticket))
                closed = s.scalar(select(func.count()).select_from(Ticket).where(Ticket.status == "closed"))
                raws = s.scalar(select(func.count()).select_from(RawMessage))
                outbox = s.scalar(select(func.count()).select_from(Outbox))
        finally:
            app.close()
    if report.processed != n or outbox != 0:
        raise RuntimeError(f"import: {report.processed} of {n} mails, {outbox} outbox rows")
    return {
        "backend": backend,
        "seconds": seconds,
        "startup": startup,
        "dispositions": {k.value: v for k, v in report.dispositions.items()},
        "tickets": tickets,
        "closed": closed,
        "raws": raws,
        "workers": app.settings.ingest.workers,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mails", type=int, default=50_000, help="mails in the mbox (default 50000)")
    ap.add_argument("--db-url", help="postgresql://… server to create a fresh database on (default: SQLite)")
    ap.add_argument("--also-sqlite", action="store_true", help="with --db-url: run on SQLite as well")
    ap.add_argument("--parse-workers", type=int, default=None, help="ingest.parse_workers (default: CPUs)")
    ap.add_argument("--seed", type=int, default=mailgen.DEFAULT_SEED, help="corpus seed")
    args = ap.parse_args(argv)
    configure_logging(level="warning", fmt="console")
    n = args.mails
    workers = args.parse_workers if args.parse_workers is not None else os.cpu_count() or 1
    print(
        f"mailbridge import benchmark: {n:,} mails, {workers} parse process(es), {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, load average {_load()}"
    )
    print(f"mailbridge: {_revision()}")
    t = time.perf_counter()
    corpus = mailgen.generate(n, seed=args.seed, support_addresses=(SUPPORT_ADDRESS, HOTLINE_ADDRESS))
    print(mailgen.format_description(mailgen.describe(corpus)))
    with tempfile.TemporaryDirectory(prefix="mailbridge-import-bench-") as tmp:
        work = Path(tmp)
        path = work / "support.mbox"
        box = mailbox.mbox(path)
        box.lock()
        for m in corpus:
            box.add(m.raw)
        box.flush()
        box.unlock()
        box.close()
        del corpus
        print(
            f"        generated into {path.stat().st_size / 1024 / 1024:.1f} MB of mbox"
            f" in {time.perf_counter() - t:.1f} s"
        )

        b1_n, b1_s = baseline(path, workers)
        urls = [args.db_url] if args.db_url else [None]
        if args.db_url and args.also_sqlite:
            urls.insert(0, None)
        results = [run_import(path, work, url, args.parse_workers, n) for url in urls]
        b2_n, b2_s = baseline(path, workers)
    if b1_n != n or b2_n != n:
        raise RuntimeError(f"baseline read {b1_n}/{b2_n} mails, expected {n}")
    base_s = (b1_s + b2_s) / 2
    base_rate = n / base_s
    print(f"\nload average at the end: {_load()} (other work on the machine shows here)")
    print(f"{'phase':<52} {'mails':>6} {'seconds':>8} {'mails/s':>8}")
    print("-" * 78)
    print(f"{'baseline: mailbox.mbox + mailparser, before':<52} {n:>6} {b1_s:>8.2f} {n / b1_s:>8.1f}")
    print(f"{'baseline: mailbox.mbox + mailparser, after':<52} {n:>6} {b2_s:>8.2f} {n / b2_s:>8.1f}")
    for r in results:
        label = f"import --archive ({r['backend']})"
        print(f"{label:<52} {n:>6} {r['seconds']:>8.2f} {n / r['seconds']:>8.1f}  startup {r['startup']:.1f} s")
    print("-" * 78)
    for r in results:
        print(f"checks ({r['backend']}): {r['dispositions']}; tickets {r['tickets']}, closed {r['closed']}")
    for r in results:
        rate = n / r["seconds"]
        print(
            f"RESULT import {r['backend']} mails={n} workers={r['workers']} import={rate:.1f}/s "
            f"baseline={base_rate:.1f}/s ratio={rate / base_rate:.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
