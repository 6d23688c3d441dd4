"""Reports benchmark: each report of ``mailbridge report`` over a desk of 100,000 cases and about
1,000,000 events (and 300,000 mails), on SQLite or PostgreSQL, against a plain SQL baseline.

1. a fresh database (``bench/escalation.py``'s: a new SQLite file, or a temporary schema in the
   PostgreSQL database of ``--database-url``), the schema by ``App.upgrade_db()`` (migration 0011's
   indexes included); the configuration of ``bench/escalation.py`` (two queues, three calendars,
   four severity levels with stages, 36 organisations);
2. ``--cases`` cases created over the year before ``NOW`` (bulk inserts through SQLAlchemy Core, not
   the pipeline; not timed as a report): about 8 % still open (new, open, pending), the rest solved
   or closed; first response and resolution due times computed with the real calendars
   (``Deadlines.for_level``), answered early or late; 5 % reopened, 2 % linked to a closed case;
   per case three mails (the customer's, the acknowledgement, an agent's answer) and ten events on
   average (created, ack queued, agents notified, mails sent, first response, relayed, status
   changes, reopened);
3. each report through ``mailbridge.reports.render`` (the computation and the format) at ``NOW``:
   ``open-items`` (all open cases), ``sla`` (the whole year, by queue, per week), ``volume`` (the
   year, per day), ``history`` (one week of every case; and one case) — as CSV (the file a lead
   downloads) and as the text table; best of ``--reps``;
4. the **baseline** of each: a plain SQL aggregate or listing of the same data through the DB
   driver (sqlite3 / psycopg), nothing of mailbridge: the open cases with their last customer and
   agent mail; the counts met/missed per queue and week; the cases per day and queue with the
   reopened ones; the events and mails of the week in order. The ratio is report ÷ baseline.

The target is ≤ 3 s per report (``--check``: exit 1 when one misses it).

    .venv/bin/python bench/reports.py [--cases 100000] [--reps 3] [--check]
    .venv/bin/python bench/reports.py --database-url postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import insert
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent))

from escalation import (
    AGENTS,
    IMAP_PASSWORD_ENV,
    QUEUES,
    SECRET_ENV,
    SEVERITIES,
    SUBJECTS,
    TEAM,
    database,
    organisations,
    write_config,
)

from mailbridge.app import App
from mailbridge.logging import configure_logging
from mailbridge.reports import render
from mailbridge.settings import load_settings
from mailbridge.sla.deadlines import Customer
from mailbridge.store.db import session_scope
from mailbridge.store.models import Event, Message, Ticket

BERLIN = ZoneInfo("Europe/Berlin")
NOW = datetime(2026, 11, 30, 10, 0, tzinfo=BERLIN).astimezone(UTC)
DAYS = 365
TARGET_SECONDS = 3.0
OPEN_SHARE = 0.08
REOPEN_SHARE = 0.05
LINK_SHARE = 0.02
CHUNK = 5000


def generate(app: App, n: int, seed: int):
    """(tickets, messages, events) as rows for Core inserts."""
    rng = random.Random(seed)
    dl = app.deadlines
    orgs = organisations()
    org_weights = [o.weight for o in orgs]
    nrw = dl.calendars["nrw"]
    fmt, first = app.settings.case_numbers.fmt, app.settings.case_numbers.first_serial
    tickets, messages, events = [], [], []
    start = NOW - timedelta(days=DAYS)
    for i in range(n):
        tid = i + 1
        while True:
            created = (start + timedelta(seconds=rng.uniform(0, DAYS * 86400))).replace(microsecond=0)
            if nrw.is_open(created) or rng.random() < 0.1:
                break
        queue = rng.choices(list(QUEUES), list(QUEUES.values()))[0]
        sev = rng.choices(list(SEVERITIES), list(SEVERITIES.values()))[0]
        org = rng.choices(orgs, org_weights)[0] if rng.random() < 0.9 else None
        a = dl.for_level(queue, sev, created, Customer(org.name if org else None, org.contract if org else None))
        fr_due, res_due = a.first_response_due, a.resolution_due
        age = NOW - created
        open_case = rng.random() < OPEN_SHARE * (1 + 10 * (age < timedelta(days=14)))
        answered = rng.random() < 0.95
        fr_at = None
        if answered and fr_due is not None:
            fr_at = created + (fr_due - created) * rng.lognormvariate(-0.8, 0.6)
            fr_at = fr_at.replace(microsecond=0) if fr_at < NOW else None
        solved_at = closed_at = None
        if open_case:
            status = "new" if fr_at is None else rng.choice(["open", "open", "pending"])
        else:
            done = (fr_at or created) + timedelta(hours=rng.expovariate(1 / 40))
            if done >= NOW:
                status = "open" if fr_at else "new"
            else:
                solved_at = done.replace(microsecond=0)
                status = "solved"
                if done + timedelta(days=7) < NOW:
                    status, closed_at = "closed", solved_at + timedelta(days=7)
        serial = first + i
        user = f"user{rng.randrange(400)}"
        domain = org.domain if org else "gmail.com"
        case = fmt.format(serial)
        tickets.append(
            {
                "id": tid,
                "case_number": case,
                "serial": serial,
                "queue": queue,
                "status": status,
                "subject": f"{rng.choice(SUBJECTS)} ({rng.randrange(10_000)})",
                "requester_email": f"{user}@{domain}",
                "requester_name": user.capitalize(),
                "language": app.settings.queue(queue).language,
                "created_at": created,
                "updated_at": solved_at or fr_at or created,
                "severity": sev,
                "assignee": rng.choice(AGENTS) if rng.random() < 0.5 else None,
                "first_response_at": fr_at,
                "solved_at": solved_at,
                "closed_at": closed_at,
                "first_response_due": fr_due,
                "resolution_due": res_due,
                "organisation": org.name if org else None,
                "contract": org.contract if org else None,
                "paused_at": NOW - timedelta(hours=2) if status == "pending" else None,
                "paused_seconds": 0,
                "linked_ticket_id": rng.randrange(1, tid) if tid > 10 and rng.random() < LINK_SHARE else None,
            }
        )

        def mail(direction, kind, sender, at, _case=case, _tid=tid):
            messages.append(
                {
                    "ticket_id": _tid,
                    "direction": direction,
                    "message_id": f"{kind}.{_case}.{len(messages)}@bench.example",
                    "sender_email": sender,
                    "recipients": [TEAM],
                    "subject": f"[{_case}] {tickets[-1]['subject']}",
                    "kind": kind,
                    "created_at": at,
                }
            )

        def event(kind, at, _tid=tid, **detail):
            events.append({"ticket_id": _tid, "kind": kind, "detail": detail, "created_at": at})

        mail("in", "customer", f"{user}@{domain}", created)
        mail("out", "ack", f"{queue}@vendor.example", created)
        event("created", created, queue=queue, requester=f"{user}@{domain}")
        event("ack_queued", created, outbox_id=tid, to=f"{user}@{domain}")
        event("agents_notified", created, outbox_id=tid, to=[TEAM])
        event("mail_sent", created + timedelta(seconds=5), outbox_id=tid, mail="ack")
        event("mail_sent", created + timedelta(seconds=6), outbox_id=tid, mail="notification")
        if fr_at is not None:
            agent = rng.choice(AGENTS)
            mail("in", "agent", agent, fr_at)
            event("first_response", fr_at, by=agent, via="relay")
            event("relayed", fr_at, by=agent, to=[f"{user}@{domain}"])
            event("status_changed", fr_at, old="new", new="open", by=agent, reason="agent reply")
        if solved_at is not None:
            event("status_changed", solved_at, old="open", new="solved", by=rng.choice(AGENTS), reason="#solve")
            if rng.random() < REOPEN_SHARE:
                event("reopened", solved_at + timedelta(hours=3), by=f"{user}@{domain}")
        if closed_at is not None:
            event("status_changed", closed_at, old="solved", new="closed", by="mailbridge", reason="auto-close")
    return tickets, messages, events


def insert_all(app: App, tickets, messages, events) -> float:
    t0 = time.perf_counter()
    with session_scope(app.session_factory) as s:
        conn = s.connection()
        for table, rows in ((Ticket.__table__, tickets), (Message.__table__, messages), (Event.__table__, events)):
            for i in range(0, len(rows), CHUNK):
                conn.execute(insert(table), rows[i : i + CHUNK])
    return time.perf_counter() - t0


# -- the baseline: plain SQL through the driver --------------------------------------------------


def _connect(url: str):
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        return sqlite3.connect(u.database), "?"
    import psycopg

    dsn = u.set(drivername="postgresql").render_as_string(hide_password=False)
    return psycopg.connect(dsn), "%s"


def baselines(url: str, week_start: datetime) -> dict[str, tuple[float, int]]:
    """{report: (best seconds of 3, rows)} of the plain SQL of each report."""
    conn, p = _connect(url)
    pg = p == "%s"
    day = "to_char(created_at AT TIME ZONE 'Europe/Berlin', 'YYYY-MM-DD')" if pg else "substr(created_at, 1, 10)"
    week = "to_char(created_at AT TIME ZONE 'Europe/Berlin', 'IYYY-IW')" if pg else "strftime('%Y-%W', created_at)"
    start, end = NOW - timedelta(days=DAYS), NOW
    if not pg:
        start_s, end_s, ws_s, we_s = (
            x.strftime("%Y-%m-%d %H:%M:%S.%f") for x in (start, end, week_start, week_start + timedelta(days=7))
        )
    else:
        start_s, end_s, ws_s, we_s = start, end, week_start, week_start + timedelta(days=7)
    queries = {
        "open-items": (
            "SELECT t.case_number, t.queue, t.status, t.severity, t.assignee, t.organisation, t.created_at, "
            "t.first_response_due, t.resolution_due, t.subject, "
            "(SELECT max(m.created_at) FROM messages m WHERE m.ticket_id = t.id AND m.kind = 'customer'), "
            "(SELECT max(m.created_at) FROM messages m WHERE m.ticket_id = t.id AND m.kind = 'agent') "
            "FROM tickets t WHERE t.status IN ('new', 'open', 'pending') ORDER BY t.created_at",
            (),
        ),
        "sla": (
            f"SELECT queue, {week}, count(*), "
            "sum(CASE WHEN first_response_at <= first_response_due THEN 1 ELSE 0 END), "
            "sum(CASE WHEN first_response_at > first_response_due THEN 1 ELSE 0 END), "
            "sum(CASE WHEN coalesce(solved_at, closed_at) <= resolution_due THEN 1 ELSE 0 END), "
            "sum(CASE WHEN coalesce(solved_at, closed_at) > resolution_due THEN 1 ELSE 0 END) "
            f"FROM tickets WHERE created_at >= {p} AND created_at < {p} GROUP BY 1, 2",
            (start_s, end_s),
        ),
        "volume": (
            f"SELECT {day}, queue, count(*), "
            "sum(CASE WHEN EXISTS (SELECT 1 FROM events e WHERE e.ticket_id = t.id AND e.kind = 'reopened') "
            "THEN 1 ELSE 0 END), sum(CASE WHEN linked_ticket_id IS NOT NULL THEN 1 ELSE 0 END) "
            f"FROM tickets t WHERE created_at >= {p} AND created_at < {p} GROUP BY 1, 2",
            (start_s, end_s),
        ),
        "history (a week)": (
            "SELECT e.created_at, t.case_number, e.kind, CAST(e.detail AS TEXT) FROM events e "
            "JOIN tickets t ON t.id = e.ticket_id "
            f"WHERE e.created_at >= {p} AND e.created_at < {p} "
            "UNION ALL SELECT m.created_at, t.case_number, m.kind, m.message_id FROM messages m "
            f"JOIN tickets t ON t.id = m.ticket_id WHERE m.created_at >= {p} AND m.created_at < {p} ORDER BY 1",
            (ws_s, we_s, ws_s, we_s),
        ),
    }
    out = {}
    try:
        for name, (sql, args) in queries.items():
            best, rows = float("inf"), 0
            for _ in range(3):
                t0 = time.perf_counter()
                cur = conn.cursor()
                cur.execute(sql, args)
                rows = len(cur.fetchall())
                best = min(best, time.perf_counter() - t0)
            out[name] = (best, rows)
    finally:
        conn.close()
    return out


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault(IMAP_PASSWORD_ENV, "bench")
    os.environ.setdefault(SECRET_ENV, "bench-secret-" + "x" * 32)
    with (
        tempfile.TemporaryDirectory(prefix="mb-bench-reports-") as tmp,
        database(args.database_url, Path(tmp)) as (
            url,
            desc,
        ),
    ):
        reuse = args.keep_sqlite is not None and args.keep_sqlite.exists()
        if args.keep_sqlite is not None:
            url, desc = f"sqlite:///{args.keep_sqlite}", f"SQLite ({args.keep_sqlite})"
        path = write_config(Path(tmp) / "mailbridge.toml", db_url=url, var_dir=Path(tmp) / "var", orgs=organisations())
        settings = load_settings(path)
        configure_logging("warning", "console")
        app = App(settings, clock=lambda: NOW)
        app.upgrade_db()
        print(f"database: {desc}")
        if not reuse:
            t0 = time.perf_counter()
            tickets, messages, events = generate(app, args.cases, args.seed)
            gen = time.perf_counter() - t0
            ins = insert_all(app, tickets, messages, events)
            print(f"data generated in {gen:.1f} s, inserted in {ins:.1f} s")
        with app.engine.connect() as c:
            n_cases, n_open = c.exec_driver_sql(
                "SELECT count(*), sum(CASE WHEN status IN ('new', 'open', 'pending') THEN 1 ELSE 0 END) FROM tickets"
            ).one()
            n_events = c.exec_driver_sql("SELECT count(*) FROM events").scalar_one()
            n_mails = c.exec_driver_sql("SELECT count(*) FROM messages").scalar_one()
            one_case = c.exec_driver_sql(f"SELECT case_number FROM tickets WHERE id = {n_cases // 2}").scalar_one()
        print(f"data: {n_cases:,} cases ({n_open:,} open), {n_events:,} events, {n_mails:,} mails")
        if url.startswith("sqlite"):
            with app.engine.connect() as c:
                c.exec_driver_sql("ANALYZE")
        else:
            with app.engine.begin() as c:
                c.exec_driver_sql("ANALYZE")
        week_start = (NOW - timedelta(days=7)).astimezone(BERLIN).replace(hour=0, minute=0, second=0).astimezone(UTC)
        week_first = week_start.astimezone(BERLIN).date()
        year_first = (NOW - timedelta(days=DAYS - 1)).astimezone(BERLIN).date()
        last = NOW.astimezone(BERLIN).date()
        reports = {
            "open-items": ("open-items", {}),
            "sla": ("sla", {"from": year_first, "to": last, "by": "queue", "period": "week"}),
            "volume": ("volume", {"from": year_first, "to": last, "period": "day"}),
            "history (a week)": (
                "history",
                {"from": week_first, "to": week_first + timedelta(days=6)},
            ),
            "history (a case)": ("history", {"case": one_case}),
        }
        base = baselines(url, week_start)
        print()
        print(f"{'report':<18} {'csv s':>7} {'text s':>7} {'rows':>8} {'baseline s':>11} {'ratio':>7}  target ≤ 3 s")
        failed = False
        for label, (name, params) in reports.items():
            if args.only and not label.startswith(args.only):
                continue
            times = {}
            size = 0
            for fmt in ("csv", "text"):
                best = float("inf")
                for _ in range(args.reps):
                    t0 = time.perf_counter()
                    out = render(app, name, params, fmt, now=NOW, width=160)
                    best = min(best, time.perf_counter() - t0)
                times[fmt] = best
                if fmt == "csv":
                    size = out.data.count(b"\n") - 1
            b = base.get(label)
            worst = max(times.values())
            ok = worst <= TARGET_SECONDS
            failed |= not ok
            ratio = f"{times['csv'] / b[0]:.1f}x" if b else "-"
            bs = f"{b[0]:.3f}" if b else "-"
            print(
                f"{label:<18} {times['csv']:>7.3f} {times['text']:>7.3f} {size:>8,} {bs:>11} {ratio:>7}  "
                f"{'PASS' if ok else 'FAIL'}"
            )
        app.close()
    return 1 if failed and args.check else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=100_000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seed", type=int, default=15)
    ap.add_argument("--database-url", help="postgresql://… database to create a temporary schema in (default: SQLite)")
    ap.add_argument("--check", action="store_true", help="exit 1 when a report misses the target")
    ap.add_argument(
        "--keep-sqlite",
        type=Path,
        help="a SQLite file: filled when it does not exist, else reused (same --cases/--seed)",
    )
    ap.add_argument("--only", help="time only the reports whose label starts with this")
    return run(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
