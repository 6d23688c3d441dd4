"""Outbox drain benchmark: how fast the sender empties a queue of acknowledgements into SMTP.

One run: an aiosmtpd sink on loopback (``embedded.SmtpSink``), a fresh database (SQLite file, or a
new PostgreSQL database with ``--db-url``), ``--mails`` outbox rows queued on as many tickets (one
acknowledgement-sized mail each, ~2 KB), then ``OutboxSender.run_once()`` until nothing is due,
with ``[outbox] connections`` = each value of ``--connections``. Checked: every row ``sent``, the
sink received every Message-ID exactly once. The sink runs in this process (its own thread), so on
a small machine it competes with the sender for the CPU, as a local relay would.

    python bench/outbox_drain.py [--mails 2000] [--connections 1 4] [--db-url URL]

``bench/ingest.py`` measures the same drain after its ingest phase ("outbox drain to SMTP").
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select

try:  # run as a script (bench/ on sys.path) or imported as bench.outbox_drain
    from ingest import _load, database, write_config
except ImportError:  # pragma: no cover
    from bench.ingest import _load, database, write_config

from mailbridge.app import App
from mailbridge.embedded import SmtpSink
from mailbridge.logging import configure_logging
from mailbridge.outbound.compose import compose
from mailbridge.outbound.outbox import enqueue
from mailbridge.settings import load_settings
from mailbridge.store.db import session_scope
from mailbridge.store.models import Outbox, Ticket

BODY = "Hello,\n\nthank you for your mail. We have opened case {n} and will answer soon.\n\n" + "x" * 1500


def queue(app: App, n: int, tag: str) -> None:
    now = datetime.now(UTC)
    with session_scope(app.session_factory) as s:
        for i in range(n):
            t = Ticket(
                case_number=f"B{tag}{i:07d}",
                serial=10_000_000 + i,
                queue="support",
                status="new",
                subject=f"case {i}",
                requester_email=f"kunde{i}@kunde.example",
                requester_name="",
                language="en",
                created_at=now,
                updated_at=now,
            )
            s.add(t)
            s.flush()
            out = compose(
                from_name="Vendor Support",
                from_addr="support@vendor.example",
                to=[("Kunde", f"kunde{i}@kunde.example")],
                subject=f"[B{tag}{i:07d}] Your request",
                text=BODY.format(n=i),
                html=None,
                date=now,
            )
            enqueue(s, out, kind="ack", dedup_key=f"bench:{tag}:{i}", now=now, ticket_id=t.id)


async def drain(app: App, connections: int) -> int:
    sender = app.sender()
    if hasattr(sender.cfg, "connections"):
        sender.cfg = sender.cfg.model_copy(update={"connections": connections})
    elif connections != 1:
        raise SystemExit("this mailbridge has no [outbox] connections setting")
    sent = 0
    while True:
        r = await sender.run_once()
        if r.errors or r.failed:
            raise RuntimeError(f"drain failed: {r.errors[:3]} ({r.failed} failed)")
        if not r.sent:
            return sent
        sent += r.sent


def run(args: argparse.Namespace) -> int:
    configure_logging(level="warning", fmt="console")
    print(f"outbox drain benchmark: {args.mails} mails, {os.cpu_count()} CPUs, load average {_load()}")
    print(f"{'connections':>11} {'mails':>6} {'seconds':>8} {'mails/s':>8}  backend")
    for k, connections in enumerate(args.connections):
        with tempfile.TemporaryDirectory(prefix="mailbridge-drain-") as tmp, SmtpSink() as sink:
            work = Path(tmp)
            with database(args.db_url, work) as db_url:
                cfg = write_config(
                    work / "mailbridge.toml",
                    imap_port=1,
                    smtp_port=sink.port,
                    db_url=db_url,
                    var_dir=work / "var",
                    batch=100,
                    parse_workers=0,
                )
                app = App(load_settings(cfg, environ={"MB_BENCH_IMAP_PASSWORD": "x"}))
                try:
                    app.upgrade_db()
                    queue(app, args.mails, str(k))
                    t = time.perf_counter()
                    sent = asyncio.run(drain(app, connections))
                    secs = time.perf_counter() - t
                    received = sink.wait_for(args.mails, timeout=30)
                    with session_scope(app.session_factory) as s:
                        statuses = Counter(s.scalars(select(Outbox.status)))
                        mids = set(s.scalars(select(Outbox.message_id)))
                    got = Counter(m.message["Message-ID"].strip("<>") for m in received)
                    if sent != args.mails or statuses != {"sent": args.mails} or set(got) != mids:
                        raise RuntimeError(f"{sent} sent, rows {dict(statuses)}, {len(got)} Message-IDs received")
                    if max(got.values()) != 1:
                        raise RuntimeError("a mail was received twice")
                    backend = app.engine.dialect.name
                finally:
                    app.close()
        print(f"{connections:>11} {sent:>6} {secs:>8.2f} {sent / secs:>8.1f}  {backend}")
    print(f"load average at the end: {_load()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mails", type=int, default=2000)
    ap.add_argument("--connections", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--db-url", help="postgresql://… (a fresh database is created there); default: SQLite")
    return run(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
