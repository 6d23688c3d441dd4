"""Case tracker benchmark: an organisation's case list with 5,000 cases, as ``mailbridge web``
serves it, against an external baseline.

One run, no mail servers (the config names loopback servers that are never contacted):

1. a fresh SQLite file in a temporary directory (or ``--database-url`` for PostgreSQL, a schema of
   its own, dropped at the end), the schema by ``App.upgrade_db()``;
2. ``--cases`` cases of organisation ACME (several requesters, queues, statuses, severities, due
   times) plus as many of another organisation, each with the customer's mail and our
   acknowledgement, written with Core ``executemany`` (not timed);
3. **the tracker**: ``GET /cases`` (page 1, sorted by last activity) over HTTP from the real uvicorn
   server, signed in as an ACME address of an organisation-wide organisation — the visibility
   clause, the filters' choices, the count, the page and the render; then the same with a search
   text (``q``, which reads the messages' text) and sorted by due time;
4. **the baseline**: the same 25 rows fetched with a plain SQLAlchemy query (``WHERE organisation =
   'ACME' ORDER BY updated_at DESC LIMIT 25`` plus the count) and the same template rendered by a
   plain Jinja2 environment with the same words, in-process (no HTTP).

Target: the tracker's list ≤ 200 ms on SQLite (median of ``--reps``); ``--check`` exits 1 when missed.

    .venv/bin/python bench/tracker.py [--cases 5000] [--reps 15] [--check]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

from itsdangerous import TimestampSigner
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import func, insert, select

from mailbridge.app import App
from mailbridge.embedded import free_port
from mailbridge.resources import templates_dir
from mailbridge.settings import load_settings
from mailbridge.store.db import session_scope
from mailbridge.store.models import Message, Participant, Ticket
from mailbridge.web.app import SESSION_COOKIE, server, session_key
from mailbridge.web.i18n import TEXT

KEY = "b" * 48
NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)

CONFIG = """
var_dir = "{var}"
[database]
url = "{db}"
[[accounts]]
name = "main"
host = "127.0.0.1"
port = 1
tls = "none"
user = "support"
password_env = "BENCH_IMAP_PASSWORD"
[[queues]]
name = "support"
addresses = ["support@vendor.example"]
language = "de"
account = "main"
display_name = "Vendor Support"
severity_scheme = "std"
calendar = "nrw"
[[queues]]
name = "hotline"
addresses = ["hotline@vendor.example"]
language = "de"
account = "main"
display_name = "Vendor Hotline"
severity_scheme = "std"
calendar = "nrw"
[smtp]
host = "127.0.0.1"
port = 1
tls = "none"
[[calendars]]
name = "nrw"
timezone = "Europe/Berlin"
country = "DE"
subdivision = "NW"
[calendars.hours]
mon = ["08:00-17:00"]
tue = ["08:00-17:00"]
wed = ["08:00-17:00"]
thu = ["08:00-17:00"]
fri = ["08:00-17:00"]
[[severity_schemes]]
name = "std"
default = "3"
[[severity_schemes.levels]]
key = "1"
label_de = "Fehlerklasse 1"
label_en = "Severity 1"
[[severity_schemes.levels]]
key = "2"
label_de = "Fehlerklasse 2"
label_en = "Severity 2"
[[severity_schemes.levels]]
key = "3"
label_de = "Fehlerklasse 3"
label_en = "Severity 3"
[[organisations]]
name = "ACME"
domains = ["acme.example"]
tracker = "organisation"
[[organisations]]
name = "Beta"
domains = ["beta.example"]
[web]
listen = "127.0.0.1:{port}"
base_url = "http://127.0.0.1:{port}/"
secret_file = "{key}"
"""

SUBJECTS = ["Drucker druckt nicht", "VPN bricht ab", "Lizenzserver startet nicht", "Datenbank langsam", "KC4 Alarm"]


def fill(app: App, cases: int) -> None:
    rng = random.Random(7)
    tickets, messages, parts = [], [], []
    n = 0
    for org, domain in (("ACME", "acme.example"), ("Beta", "beta.example")):
        for _ in range(cases):
            n += 1
            created = NOW - timedelta(minutes=rng.randint(1, 60 * 24 * 90))
            who = f"person{rng.randint(1, 40)}@{domain}"
            answered = rng.random() < 0.6
            tickets.append(
                {
                    "id": n,
                    "case_number": f"C{1000000 + n}",
                    "serial": n,
                    "queue": rng.choice(["support", "hotline"]),
                    "status": rng.choice(["new", "open", "open", "pending", "solved", "closed"]),
                    "subject": f"{rng.choice(SUBJECTS)} #{n}",
                    "requester_email": who,
                    "requester_name": "",
                    "language": "de",
                    "created_at": created,
                    "updated_at": created + timedelta(minutes=rng.randint(0, 600)),
                    "severity": rng.choice(["1", "2", "3", "3"]),
                    "first_response_due": created + timedelta(hours=rng.randint(4, 48)),
                    "first_response_at": created + timedelta(hours=2) if answered else None,
                    "resolution_due": created + timedelta(days=rng.randint(2, 20)),
                    "organisation": org,
                    "paused_seconds": 0,
                }
            )
            parts.append({"ticket_id": n, "email": who, "name": "", "role": "requester", "added_at": created})
            for direction, kind in (("in", "customer"), ("out", "ack")):
                messages.append(
                    {
                        "ticket_id": n,
                        "direction": direction,
                        "kind": kind,
                        "sender_email": who if direction == "in" else "support@vendor.example",
                        "sender_name": "",
                        "recipients": [],
                        "subject": "",
                        "body_text": f"Guten Tag,\n\nFall {n}: Fehler 0x{n:04x} seit dem Update.\n" * 5,
                        "created_at": created,
                    }
                )
    with session_scope(app.session_factory) as s:
        s.execute(insert(Ticket), tickets)
        s.execute(insert(Participant), parts)
        s.execute(insert(Message), messages)


def cookie(address: str) -> str:
    data = base64.b64encode(json.dumps({"a": address, "csrf": "x" * 43, "lang": "de"}).encode())
    return SESSION_COOKIE + "=" + TimestampSigner(session_key(KEY)).sign(data).decode()


def timed(fn, reps: int) -> tuple[float, object]:
    out, times = None, []
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=5000)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()

    os.environ.setdefault("BENCH_IMAP_PASSWORD", "unused")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "key").write_text(KEY, encoding="utf-8")
        port = free_port()
        conf = tmp / "mailbridge.toml"
        db = f"sqlite:///{tmp / 'bench.sqlite'}"
        conf.write_text(CONFIG.format(var=tmp / "var", db=db, port=port, key=tmp / "key"), encoding="utf-8")
        app = App(load_settings(conf), clock=lambda: NOW)
        app.upgrade_db()
        t0 = time.perf_counter()
        fill(app, args.cases)
        print(f"filled {2 * args.cases} cases (two organisations) in {time.perf_counter() - t0:.1f} s")

        srv = server(app, host="127.0.0.1", port=port)
        thread = threading.Thread(target=srv.run, daemon=True)
        thread.start()
        while not srv.started:
            time.sleep(0.02)
        headers = {"Cookie": cookie("person1@acme.example")}

        def get(path: str) -> bytes:
            req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
            with urllib.request.urlopen(req, timeout=30) as r:  # noqa: S310 - loopback
                assert r.status == 200
                return r.read()

        results = {}
        for name, path in (
            ("list", "/cases"),
            ("list, search text", "/cases?q=0x0a1"),
            ("list, sorted by due", "/cases?sort=due&order=asc"),
        ):
            get(path)  # warm
            results[name], body = timed(lambda p=path: get(p), args.reps)
            assert b"Anfragen von ACME" in body, body[:500]
        page = get("/cases").decode()
        assert f"({args.cases:,} Anfragen)".replace(",", ".") in page, "the count of ACME's cases"

        # The baseline: a plain query and a plain render of the same template, in-process.
        env = Environment(loader=FileSystemLoader(str(templates_dir() / "web")), autoescape=select_autoescape(["html"]))
        template = env.get_template("list.html")

        class V:
            address, organisation, organisation_wide = "person1@acme.example", "ACME", True

        def baseline() -> str:
            with session_scope(app.session_factory) as s:
                total = s.scalar(select(func.count()).select_from(Ticket).where(Ticket.organisation == "ACME"))
                rows = s.execute(
                    select(Ticket.case_number, Ticket.subject, Ticket.status, Ticket.severity, Ticket.updated_at)
                    .where(Ticket.organisation == "ACME")
                    .order_by(Ticket.updated_at.desc())
                    .limit(25)
                ).all()
            shown = [
                {
                    "case": r.case_number,
                    "subject": r.subject,
                    "status": r.status,
                    "status_key": r.status,
                    "severity": r.severity,
                    "queue": "support",
                    "due": "-",
                    "late": False,
                    "updated": r.updated_at.strftime("%a %d.%m. %H:%M"),
                    "created": "",
                }
                for r in rows
            ]
            return template.render(
                t=TEXT["de"],
                lang="de",
                other_languages=["en"],
                viewer=V,
                csrf="x",
                root="",
                here="/cases",
                rows=shown,
                total=total,
                page=1,
                pages=200,
                query={"q": "", "status": "", "severity": "", "queue": "", "sort": "updated", "order": "desc"},
                statuses=[],
                severities=[],
                queues=[],
                sorts=["updated"],
                prev_url=None,
                next_url="/cases?page=2",
            )

        baseline()
        base_t, _ = timed(baseline, args.reps)
        srv.should_exit = True
        thread.join(10)
        app.close()

    print(f"\n{args.cases:,} cases of one organisation (and {args.cases:,} of another), median of {args.reps}:")
    for name, t in results.items():
        print(f"  tracker {name:<22} {t * 1000:7.1f} ms  (HTTP, uvicorn, session, visibility, facets, count, page)")
    print(f"  baseline: plain query + plain Jinja2 render {base_t * 1000:7.1f} ms  (in-process, no HTTP)")
    print(f"  tracker list / baseline: {results['list'] / base_t:.1f}x   target ≤ 200 ms")
    ok = results["list"] <= 0.2
    print("target met" if ok else "TARGET MISSED")
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
