"""Escalation benchmark: one pass of the escalation job over a desk with 100,000 open cases, side by
side with the naive way of finding the due cases (every open case's plan computed in Python), and
one manager digest over the same cases.

One run, no network at all (the config names loopback servers that are never contacted):

1. a fresh database (a new SQLite file in a temporary directory, or a dedicated schema in the
   PostgreSQL database named by ``--database-url``, dropped at the end), the schema by
   ``App.upgrade_db()``;
2. ``--tickets`` open cases written with Core ``executemany`` (timed, not part of any target), as
   the pipeline and the job would have left them at the job's previous pass (``--behind`` minutes
   before the measured ``now``): several queues, severities, organisations (some with their own
   calendar), created over the last weeks, the due times computed with the real calendars
   (``Deadlines.for_level``, ``policy.due``), answered, pending or untouched; ``next_escalation_at``
   is what the job's own plan (``Escalations.next_at`` on the row as the job reads it) gives at the
   previous pass, and the stages that pass sent are in the outbox (their keys), next to an
   acknowledgement per case and a notification message per case;
3. **one escalation pass** - ``Escalations.run_once`` at ``now`` - on the cases whose time came
   since the previous pass; then a second pass at the same ``now`` (nothing due: what the
   every-minute job costs most of the time). Repeated ``--reps`` times; before each repetition the
   pass's writes are undone (its outbox, message and event rows deleted, ``next_escalation_at`` of
   the visited cases restored, the SQLite WAL checkpointed), so every repetition does the same work;
4. the **baseline**: every open case loaded and its plan computed in Python with
   ``sla.clock.next_escalation`` (through ``Escalations.next_at``: the same rules and calendars as the
   job) - only finding the due cases, no outbox look-ups and no mails, so the ratio baseline / pass
   is a lower bound;
5. then ``--minutes`` passes at the following minutes (``now`` + 1 min, + 2 min, ...): the job's
   steady state, with the stages that fall due in each minute;
6. **one digest build** (``Digests.build``, all queues, ``at_risk_hours = 4``, ``oldest = 10``) and
   its text and HTML render, three times.

The target is one pass under 0.5 s on SQLite (median of the repetitions); ``--check`` makes the
exit code 1 when it is missed. One more (reset) pass runs with its parts timed (``--no-breakdown``:
not); ``--profile`` runs another under cProfile.

    .venv/bin/python bench/escalation.py [--tickets 100000] [--reps 7] [--behind 1] [--check]
    .venv/bin/python bench/escalation.py --database-url postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import math
import os
import platform
import pstats
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.engine import make_url

from mailbridge.app import App
from mailbridge.logging import configure_logging
from mailbridge.settings import load_settings
from mailbridge.sla import escalation as escalation_module
from mailbridge.sla.deadlines import Customer
from mailbridge.sla.digest import Digests
from mailbridge.sla.escalation import CLOCK_COLUMNS, _split
from mailbridge.sla.policy import due
from mailbridge.store.db import is_postgres, session_scope
from mailbridge.store.models import Event, Message, Outbox, Ticket

BERLIN = ZoneInfo("Europe/Berlin")
# The measured moment: Monday 30 November 2026, 08:00 in Germany - the opening after a weekend, when
# the business-day deadlines of cases that came in outside the hours fall due.
NOW = datetime(2026, 11, 30, 8, 0, tzinfo=BERLIN).astimezone(UTC)
TARGET_SECONDS = 0.5
IMAP_PASSWORD_ENV = "MB_BENCH_IMAP_PASSWORD"
SECRET_ENV = "MB_BENCH_NOTIFICATION_SECRET"
SUPPORT_ADDRESS = "support@vendor.example"
HOTLINE_ADDRESS = "hotline@vendor.example"
AGENTS = ["anna.agent@vendor.example", "bert.agent@vendor.example", "carla.agent@vendor.example"]
TEAM = "team@vendor.example"
CHIEF = "leitung@vendor.example"
# How open cases are spread (weights).
SEVERITIES = {"1": 3, "2": 12, "3": 55, "4": 30}
QUEUES = {"hotline": 60, "support": 40}
# Open cases by age: exponential with this mean, cut at MAX_AGE_DAYS; a share of mails arrives
# outside business hours (OFF_HOURS_KEEP: the acceptance of a draw that falls outside them, which
# gives roughly 20 % of the cases).
MEAN_AGE_DAYS = 9.0
MAX_AGE_DAYS = 56.0
OFF_HOURS_KEEP = 0.09
# The first answer comes after this fraction of the first-response window (log-normal: median
# 0.45, about 10 % late).
ANSWER_MEDIAN, ANSWER_SIGMA = 0.45, 0.62
PENDING_SHARE = 0.22  # of the answered cases: waiting for the customer (clocks paused)
ASSIGNED_SHARE = 0.45
ROWS_PER_EXECUTE = 5000
PROFILE_ROWS = 30
SUBJECTS = [
    "Lizenzserver startet nicht",
    "Export bricht mit Fehler 0x80004005 ab",
    "Systemstillstand Linie 3",
    "Frage zur Rechnung",
    "Update auf 12.4 schlägt fehl",
    "Login not possible after password change",
    "Report shows wrong totals",
    "Störung im Datenabgleich",
    "Schnittstelle zu SAP liefert Timeout",
    "Feature request: CSV export with semicolons",
    "Druckdienst hängt",
    "Dashboard lädt sehr langsam",
]

SLA_CONFIG = f"""
[[calendars]]
name = "nrw"
timezone = "Europe/Berlin"
country = "DE"
subdivision = "NW"
closed_dates = ["12-24", "12-31"]
[calendars.hours]
mon = ["08:00-17:00"]
tue = ["08:00-17:00"]
wed = ["08:00-17:00"]
thu = ["08:00-17:00"]
fri = ["08:00-16:00"]

[[calendars]]
name = "bayern"
timezone = "Europe/Berlin"
country = "DE"
subdivision = "BY"
[calendars.hours]
mon = ["07:30-12:00", "13:00-16:30"]
tue = ["07:30-12:00", "13:00-16:30"]
wed = ["07:30-12:00", "13:00-16:30"]
thu = ["07:30-12:00", "13:00-16:30"]
fri = ["07:30-13:00"]

[[calendars]]
name = "wien"
timezone = "Europe/Vienna"
country = "AT"
subdivision = "9"
[calendars.hours]
mon = ["08:00-17:00"]
tue = ["08:00-17:00"]
wed = ["08:00-17:00"]
thu = ["08:00-17:00"]
fri = ["08:00-15:00"]

[[severity_schemes]]
name = "std"
default = "3"
[[severity_schemes.stages]]
at = 50
to = "assignee"
[[severity_schemes.stages]]
at = 80
to = "agents"
[[severity_schemes.stages]]
at = 100
to = "escalation"
urgent = true
[[severity_schemes.levels]]
key = "1"
label_de = "Fehlerklasse 1 (kritisch)"
label_en = "Severity 1 (critical)"
words = ["Systemstillstand", "kritisch"]
first_response = {{ business_hours = 2 }}
follow_up = {{ business_days = 1 }}
resolution = {{ business_days = 5 }}
reescalate_every = {{ business_hours = 2 }}
[[severity_schemes.levels]]
key = "2"
label_de = "Fehlerklasse 2 (hoch)"
label_en = "Severity 2 (high)"
words = ["Störung"]
first_response = {{ business_hours = 8 }}
resolution = {{ business_days = 15 }}
reescalate_every = {{ business_days = 1 }}
[[severity_schemes.levels]]
key = "3"
label_de = "Fehlerklasse 3 (mittel)"
label_en = "Severity 3 (medium)"
first_response = {{ business_days = 2 }}
[[severity_schemes.levels]]
key = "4"
label_de = "Fehlerklasse 4 (niedrig)"
label_en = "Severity 4 (low)"
first_response = {{ business_days = 4 }}

[[digests]]
name = "leitung"
recipients = ["{CHIEF}"]
cron = "0 8 * * mon-fri"
timezone = "Europe/Berlin"
calendar = "nrw"
at_risk_hours = 4
oldest = 10
language = "de"
"""


@dataclass(frozen=True)
class Org:
    name: str
    domain: str
    contract: str | None
    calendar: str | None
    weight: float


def organisations() -> list[Org]:
    """36 customer organisations, a few large ones; some sit in Bavaria or Vienna (own calendar)."""
    out = []
    for i in range(36):
        cal = "bayern" if i % 9 == 4 else ("wien" if i % 9 == 7 else None)
        contract = None if i % 10 == 9 else ("gold" if i % 10 == 0 else "Wartungsvertrag")
        out.append(Org(f"Kunde {i:02d} GmbH", f"kunde{i:02d}.example", contract, cal, 1 / (i + 2) ** 0.8))
    return out


def org_config(orgs: list[Org]) -> str:
    parts = []
    for o in orgs:
        lines = ["[[organisations]]", f'name = "{o.name}"', f'domains = ["{o.domain}"]']
        if o.contract:
            lines.append(f'contract = "{o.contract}"')
        if o.calendar:
            lines.append(f'calendar = "{o.calendar}"')
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def write_config(path: Path, *, db_url: str, var_dir: Path, orgs: list[Org]) -> Path:
    """Two queues (German hotline, English support) on one account; IMAP and SMTP are never
    contacted (nothing here fetches or sends)."""
    queue_sla = (
        f'agents = {AGENTS!r}\nnotify = ["{TEAM}"]\nescalation = ["{CHIEF}"]\n'
        'calendar = "nrw"\nseverity_scheme = "std"\n'
    ).replace("'", '"')
    path.write_text(
        f"""
var_dir = "{var_dir}"

[database]
url = "{db_url}"

[[accounts]]
name = "main"
host = "127.0.0.1"
port = 1143
tls = "none"
user = "support"
password_env = "{IMAP_PASSWORD_ENV}"

[[queues]]
name = "hotline"
addresses = ["{HOTLINE_ADDRESS}"]
language = "de"
account = "main"
display_name = "Vendor Hotline"
{queue_sla}
[[queues]]
name = "support"
addresses = ["{SUPPORT_ADDRESS}"]
language = "en"
account = "main"
display_name = "Vendor Support"
{queue_sla}
[smtp]
host = "127.0.0.1"
port = 2525
tls = "none"

[conversations]
secret_env = "{SECRET_ENV}"

[logging]
level = "info"

{SLA_CONFIG}

{org_config(orgs)}
""",
        encoding="utf-8",
    )
    return path


# -- the database --------------------------------------------------------------------------------


@contextmanager
def database(url: str | None, workdir: Path) -> Iterator[tuple[str, str]]:
    """(URL for mailbridge, description): a new SQLite file, or a new schema in the given
    PostgreSQL database (first on the search_path), dropped with everything in it afterwards."""
    if url is None:
        yield f"sqlite:///{workdir / 'mailbridge.db'}", "SQLite (new file, WAL)"
        return
    u = make_url(url)
    if u.get_backend_name() != "postgresql":
        raise SystemExit(f"--database-url: only postgresql is supported, not {u.get_backend_name()}")
    import psycopg

    dsn = u.set(drivername="postgresql").render_as_string(hide_password=False)
    schema = f"mb_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        bench_url = u.set(drivername="postgresql+psycopg", query={**u.query, "options": f"-csearch_path={schema}"})
        yield bench_url.render_as_string(hide_password=False), f"PostgreSQL (schema {schema} in {u.database})"
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def checkpoint(app: App) -> None:
    """SQLite: fold the WAL back into the database file, so every repetition starts alike."""
    if is_postgres(app.engine):
        return
    raw = app.engine.raw_connection()
    try:
        raw.driver_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        raw.close()


# -- the cases -----------------------------------------------------------------------------------


@dataclass
class Dataset:
    tickets: list[dict] = field(default_factory=list)
    # (ticket id, outbox key, when): the stages the previous pass (and earlier ones) sent.
    sent_keys: list[tuple[int, str, datetime]] = field(default_factory=list)
    # Cases by what the previous pass left them with.
    shape: Counter = field(default_factory=Counter)


def _created(rng: random.Random, before: datetime, cal) -> datetime:
    while True:
        age = rng.expovariate(1 / MEAN_AGE_DAYS)
        if age > MAX_AGE_DAYS:
            continue
        at = (before - timedelta(days=age)).replace(microsecond=0)
        if cal.is_open(at) or rng.random() < OFF_HOURS_KEEP:
            return at


def generate(app: App, n: int, prev: datetime, seed: int, orgs: list[Org]) -> Dataset:
    """``n`` open cases as the pipeline and the job left them at ``prev`` (the previous pass): nothing
    has happened since but time."""
    rng = random.Random(seed)
    dl = app.deadlines
    esc = app.escalations
    first_serial = app.settings.case_numbers.first_serial
    fmt = app.settings.case_numbers.fmt
    queue_names, queue_weights = list(QUEUES), list(QUEUES.values())
    sev_keys, sev_weights = list(SEVERITIES), list(SEVERITIES.values())
    org_weights = [o.weight for o in orgs]
    nrw = dl.calendars["nrw"]
    data = Dataset()
    for i in range(n):
        tid = i + 1
        queue = rng.choices(queue_names, queue_weights)[0]
        lang = app.settings.queue(queue).language
        org = rng.choices(orgs, org_weights)[0] if rng.random() < 0.9 else None
        created = _created(rng, prev, nrw)
        sev = rng.choices(sev_keys, sev_weights)[0]
        level = dl.level(queue, sev)
        cal = dl.calendar(queue, org.name if org else None)
        assert level is not None and cal is not None
        customer = Customer(org.name if org else None, org.contract if org else None)
        a = dl.for_level(queue, sev, created, customer)
        fr_due, res_due = a.first_response_due, a.resolution_due
        assert fr_due is not None
        answer = created + (fr_due - created) * rng.lognormvariate(math.log(ANSWER_MEDIAN), ANSWER_SIGMA)
        answered = answer <= prev
        fr_at = answer.replace(microsecond=0) if answered else None
        last_answer = update_due = paused_at = None
        if answered:
            assert fr_at is not None
            if level.follow_up is not None:
                # Followed up since: the last answer some time within the last day and a half.
                last_answer = max(fr_at, (prev - timedelta(hours=rng.uniform(0, 36))).replace(microsecond=0))
                update_due = due(cal, last_answer, level.follow_up)
            else:
                last_answer = fr_at
            if rng.random() < PENDING_SHARE:
                status = "pending"
                paused_at = (last_answer + (prev - last_answer) * rng.random()).replace(microsecond=0)
            else:
                status = "open"
        else:
            status = "new" if rng.random() < 0.9 else "open"
        serial = first_serial + i
        user = f"user{rng.randrange(400)}"
        ticket = {
            "id": tid,
            "case_number": fmt.format(serial),
            "serial": serial,
            "queue": queue,
            "status": status,
            "subject": f"{rng.choice(SUBJECTS)} ({rng.randrange(10_000)})",
            "requester_email": f"{user}@{org.domain if org else 'gmail.com'}",
            "requester_name": user.capitalize(),
            "language": lang,
            "created_at": created,
            "updated_at": paused_at or last_answer or created,
            "severity": sev,
            "assignee": rng.choice(AGENTS) if rng.random() < ASSIGNED_SHARE else None,
            "first_response_at": fr_at,
            "solved_at": None,
            "closed_at": None,
            "reply_to": None,
            "first_response_due": fr_due,
            "resolution_due": res_due,
            "organisation": org.name if org else None,
            "contract": org.contract if org else None,
            "update_due": update_due,
            "last_answer_at": last_answer,
            "update_started_at": last_answer if update_due else None,
            "paused_at": paused_at,
            "paused_seconds": 0,
            "linked_ticket_id": None,
        }
        # The plan exactly as the job makes it: the row it reads, split by its own code.
        ref, facts = _split(tuple(ticket.get(c.key) for c in CLOCK_COLUMNS))
        plans, next_at = esc.next_at(ref, facts, prev)
        ticket["next_escalation_at"] = next_at
        data.tickets.append(ticket)
        for p in plans:
            if p.send is not None:
                data.sent_keys.append((tid, p.send.key(tid), p.send.at))
        data.shape[
            "paused (pending)"
            if paused_at
            else ("no running clock" if not plans else ("clock(s) done" if next_at is None else "waiting for a stage"))
        ] += 1
    return data


def _chunks(rows: list, size: int = ROWS_PER_EXECUTE) -> Iterator[list]:
    for i in range(0, len(rows), size):
        yield rows[i : i + size]


def insert_tickets(app: App, data: Dataset) -> float:
    t0 = time.perf_counter()
    with session_scope(app.session_factory) as s:
        conn = s.connection()
        for chunk in _chunks(data.tickets):
            conn.execute(insert(Ticket.__table__), chunk)
    return time.perf_counter() - t0


def insert_history(app: App, data: Dataset) -> tuple[float, int, int]:
    """What every case has in production and the job reads: its acknowledgement in the outbox (the
    outbox's unique key index, which the job probes), the agents' notification (the thread an
    escalation continues) and the stages already sent (their outbox keys)."""
    outbox, messages = [], []
    for t in data.tickets:
        case, created = t["case_number"], t["created_at"]
        domain = "vendor.example"
        outbox.append(_outbox_row("ack", f"ack:{t['id']}", t["id"], f"ack.{case}@{domain}", created))
        messages.append(
            {
                "ticket_id": t["id"],
                "direction": "out",
                "message_id": f"note.{case}.{t['id']:x}@{domain}",
                "sender_email": t["queue"] + "@vendor.example",
                "recipients": [TEAM],
                "subject": f"[{case}] {t['subject']}",
                "kind": "notification",
                "created_at": created,
            }
        )
    for tid, key, at in data.sent_keys:
        outbox.append(_outbox_row("escalation", key, tid, f"esc.{tid}.{at.timestamp():.0f}@vendor.example", at))
    t0 = time.perf_counter()
    with session_scope(app.session_factory) as s:
        conn = s.connection()
        for chunk in _chunks(outbox):
            conn.execute(insert(Outbox.__table__), chunk)
        for chunk in _chunks(messages):
            conn.execute(insert(Message.__table__), chunk)
    return time.perf_counter() - t0, len(outbox), len(messages)


def _outbox_row(kind: str, key: str, tid: int, message_id: str, at: datetime) -> dict:
    return {
        "kind": kind,
        "dedup_key": key,
        "ticket_id": tid,
        "message_id": message_id,
        "envelope_from": SUPPORT_ADDRESS,
        "envelope_to": [TEAM],
        # The bytes are not read by the job; a short stand-in keeps the file small.
        "raw": b"(sent mail)",
        "status": "sent",
        "attempts": 1,
        "next_attempt_at": at,
        "created_at": at,
        "sent_at": at,
    }


# -- measuring -----------------------------------------------------------------------------------


@dataclass
class Marks:
    """The last ids before a pass: what the pass wrote is everything after them."""

    outbox: int
    message: int
    event: int


def marks(app: App) -> Marks:
    with session_scope(app.session_factory) as s:
        return Marks(
            s.scalar(select(func.coalesce(func.max(Outbox.id), 0))),
            s.scalar(select(func.coalesce(func.max(Message.id), 0))),
            s.scalar(select(func.coalesce(func.max(Event.id), 0))),
        )


def undo_pass(app: App, m: Marks, due: list[dict]) -> None:
    """Undo what a pass wrote: its mails, messages and events, and the visited cases' next times."""
    with session_scope(app.session_factory) as s:
        conn = s.connection()
        conn.execute(delete(Message).where(Message.id > m.message))
        conn.execute(delete(Event).where(Event.id > m.event))
        conn.execute(delete(Outbox).where(Outbox.id > m.outbox))
        conn.execute(RESTORE, due)


RESTORE = update(Ticket).where(Ticket.id == bindparam("_id")).values(next_escalation_at=bindparam("_next"))


class Breakdown:
    """Exclusive wall time of the parts of a pass (a part's time excludes the timed parts it calls),
    taken with perf_counter around the real functions for one extra pass, then put back."""

    def __init__(self) -> None:
        self.seconds: Counter = Counter()
        self._stack: list[list[float]] = []
        self._undo: list[tuple[object, str, object]] = []

    def wrap(self, obj, attr: str, label: str) -> None:
        fn = getattr(obj, attr, None)
        if fn is None:  # the code changed: that part is then counted in its caller
            return

        def timed(*args, **kwargs):
            frame = [0.0]
            self._stack.append(frame)
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - t0
                self._stack.pop()
                self.seconds[label] += elapsed - frame[0]
                if self._stack:
                    self._stack[-1][0] += elapsed

        self._undo.append((obj, attr, obj.__dict__.get(attr, _MISSING) if hasattr(obj, "__dict__") else _MISSING))
        setattr(obj, attr, timed)

    def instrument(self, app: App) -> None:
        esc = app.escalations
        self.wrap(esc, "next_at", "plans (next_escalation per visited case)")
        self.wrap(esc, "send", "send: outbox key check, recipients, facts, log")
        self.wrap(esc, "fmt", "send: due and created dates formatted (babel)")
        self.wrap(esc.builder, "escalation", "mail: templates + MIME compose")
        self.wrap(escalation_module.repo, "last_message", "thread parent (last agent message) query")
        # Where the job looks them up for a whole batch at once:
        self.wrap(escalation_module.repo, "existing_outbox_keys", "batch look-up: outbox keys queued")
        self.wrap(escalation_module.repo, "last_messages", "batch look-up: thread parents")
        self.wrap(escalation_module, "enqueue", "enqueue (outside its inserts)")
        self.wrap(escalation_module.repo, "insert_row", "INSERTs: outbox, message, event")

    def restore(self) -> None:
        for obj, attr, old in reversed(self._undo):
            if old is _MISSING:
                delattr(obj, attr)
            else:
                setattr(obj, attr, old)
        self._undo.clear()

    def rows(self, total: float) -> list[tuple[str, float]]:
        out = dict(self.seconds)
        out["rest: batch SELECT, next times UPDATE, commits"] = total - sum(out.values())
        return sorted(out.items(), key=lambda kv: -kv[1])


_MISSING = object()


@dataclass
class PassResult:
    seconds: float
    visited: int
    sent: int
    kinds: Counter
    idle_seconds: float
    idle_visited: int


def one_pass(app: App, now: datetime, profile: cProfile.Profile | None = None) -> PassResult:
    esc = app.escalations
    skip = is_postgres(app.engine)
    if profile is not None:
        profile.enable()
    t0 = time.perf_counter()
    report = esc.run_once(app.session_factory, now, skip_locked=skip)
    t1 = time.perf_counter()
    if profile is not None:
        profile.disable()
    idle = esc.run_once(app.session_factory, now, skip_locked=skip)
    t2 = time.perf_counter()
    # "re-escalation 7" and the like counted together.
    kinds = Counter(f"{clock} {stage.rstrip('0123456789').strip()}" for _, clock, stage in report.sent)
    return PassResult(t1 - t0, report.visited, len(report.sent), kinds, t2 - t1, idle.visited)


def still_due(app: App, now: datetime) -> int:
    with session_scope(app.session_factory) as s:
        return s.scalar(select(func.count()).select_from(Ticket).where(Ticket.next_escalation_at <= now))


def baseline(app: App, now: datetime) -> tuple[float, float, int, int]:
    """Every open case loaded, its plan computed: (load s, plans s, cases, cases with a stage whose
    time has come - each would still need an outbox look-up to learn whether it went out)."""
    esc = app.escalations
    t0 = time.perf_counter()
    with session_scope(app.session_factory) as s:
        rows = s.connection().execute(select(*CLOCK_COLUMNS).where(Ticket.status.in_(("new", "open", "pending")))).all()
    t1 = time.perf_counter()
    passed = 0
    for row in rows:
        # Escalations.next_at: sla.clock.next_escalation with the case's and the queue's calendars.
        plans, _next_at = esc.next_at(*_split(row), now)
        if any(p.send is not None for p in plans):
            passed += 1
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, len(rows), passed


def digest_build(app: App, now: datetime) -> DigestResult:
    d = app.settings.digests[0]
    digests = Digests(app.settings, app.deadlines, app.templates)
    with session_scope(app.session_factory) as s:
        t0 = time.perf_counter()
        digest = digests.build(s, d, now)
        t1 = time.perf_counter()
        _subject, text, html = digests.render(digest)
        t2 = time.perf_counter()
    return DigestResult(
        t1 - t0,
        t2 - t1,
        shown=(sum(len(q.breached) for q in digest.queues), sum(len(q.at_risk) for q in digest.queues)),
        # Where the digest caps its lists it also counts them all.
        total=(
            sum(getattr(q, "breached_total", len(q.breached)) for q in digest.queues),
            sum(getattr(q, "at_risk_total", len(q.at_risk)) for q in digest.queues),
        ),
        text_bytes=len(text.encode()),
        html_bytes=len(html.encode()),
    )


@dataclass
class DigestResult:
    build_seconds: float
    render_seconds: float
    shown: tuple[int, int]  # breached, at risk: lines in the digest
    total: tuple[int, int]  # breached, at risk: cases
    text_bytes: int
    html_bytes: int


# -- output --------------------------------------------------------------------------------------


def _revision() -> str:
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
    try:
        return "/".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:  # pragma: no cover
        return "n/a"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms"


def print_profile(profile: cProfile.Profile) -> None:
    stats = pstats.Stats(profile, stream=sys.stdout)
    stats.strip_dirs()
    print(f"\n--- profiled pass, top {PROFILE_ROWS} by cumulative time ---")
    stats.sort_stats("cumulative").print_stats(PROFILE_ROWS)
    print(f"--- profiled pass, top {PROFILE_ROWS} by own time ---")
    stats.sort_stats("tottime").print_stats(PROFILE_ROWS)


def run(args: argparse.Namespace) -> int:
    # The job logs a line per queued mail at info: formatted as in production, written nowhere.
    devnull = open(os.devnull, "w")  # noqa: SIM115 - open for the whole run
    configure_logging(level="info", fmt="json", stream=devnull)
    now = NOW
    prev = now - timedelta(minutes=args.behind)
    print(
        f"mailbridge escalation benchmark: {args.tickets:,} open cases, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, load average {_load()}"
    )
    print(f"mailbridge: {_revision()}")
    print(
        f"now = {now.astimezone(BERLIN):%a %d.%m.%Y %H:%M %Z}; the previous pass ran {args.behind} min before; "
        f"--reps {args.reps}, seed {args.seed}"
    )
    orgs = organisations()
    env = {IMAP_PASSWORD_ENV: "unused", SECRET_ENV: "bench-" + "k" * 40}
    with tempfile.TemporaryDirectory(prefix="mailbridge-esc-bench-") as tmp:
        work = Path(tmp)
        with database(args.database_url, work) as (db_url, db_desc):
            cfg = write_config(work / "mailbridge.toml", db_url=db_url, var_dir=work / "var", orgs=orgs)
            settings = load_settings(cfg, environ=env)
            app = App(settings, clock=lambda: now)
            try:
                app.upgrade_db()
                return measure(app, args, now, prev, db_desc)
            finally:
                app.close()
                devnull.close()


def measure(app: App, args: argparse.Namespace, now: datetime, prev: datetime, db_desc: str) -> int:
    t = time.perf_counter()
    data = generate(app, args.tickets, prev, args.seed, organisations())
    gen_s = time.perf_counter() - t
    due_rows = sorted(
        ({"_id": r["id"], "_next": r["next_escalation_at"]} for r in data.tickets if _due(r, now)),
        key=lambda r: (r["_next"], r["_id"]),
    )
    tickets_s = insert_tickets(app, data)
    history_s, n_outbox, n_messages = insert_history(app, data)
    if is_postgres(app.engine):
        with app.engine.connect() as conn:  # autovacuum would do it soon after such a load
            conn.exec_driver_sql("ANALYZE")
            conn.commit()
    checkpoint(app)
    statuses = Counter(r["status"] for r in data.tickets)
    sev = Counter(r["severity"] for r in data.tickets)
    waiting = sum(1 for r in data.tickets if r["next_escalation_at"] is not None)
    shape = data.shape
    # The generated rows (millions of objects) would make every full collection of Python's cyclic
    # GC during the measured passes walk them: a cost of this script, not of the service.
    del data
    gc.collect()
    print(f"database: {db_desc}")
    print(
        f"cases generated in {gen_s:.1f} s (due times and plans with the real calendars); "
        f"status {dict(sorted(statuses.items()))}; severity {dict(sorted(sev.items()))}"
    )
    print(f"  at the previous pass: {dict(shape.most_common())}")
    print(f"  next_escalation_at set: {waiting:,}; of them due at now: {len(due_rows):,}")
    print(
        f"insert (not measured against any target): {args.tickets:,} tickets {tickets_s:.1f} s "
        f"({args.tickets / tickets_s:,.0f}/s); history {n_outbox:,} outbox rows + {n_messages:,} messages "
        f"{history_s:.1f} s"
    )

    # (3) the pass, on the same due cases each repetition.
    m = marks(app)
    passes: list[PassResult] = []
    for rep in range(args.reps):
        if rep:
            undo_pass(app, m, due_rows)
            checkpoint(app)
            if still_due(app, now) != len(due_rows):
                raise RuntimeError("the undo did not restore the due cases")
        r = one_pass(app, now)
        passes.append(r)
        if r.visited != len(due_rows) or r.idle_visited or still_due(app, now):
            raise RuntimeError(f"pass {rep + 1}: visited {r.visited} of {len(due_rows)} due, then {r.idle_visited}")
        if passes[0].sent != r.sent:
            raise RuntimeError(f"pass {rep + 1} queued {r.sent} mails, the first {passes[0].sent}")
    with session_scope(app.session_factory) as s:
        queued = s.scalar(select(func.count()).select_from(Outbox).where(Outbox.id > m.outbox))
    if queued != passes[-1].sent:
        raise RuntimeError(f"the pass reported {passes[-1].sent} mails, the outbox holds {queued} new rows")
    # One more pass with its parts timed (not among the repetitions above).
    breakdown = None
    if not args.no_breakdown:
        undo_pass(app, m, due_rows)
        checkpoint(app)
        breakdown = Breakdown()
        breakdown.instrument(app)
        try:
            broken = one_pass(app, now)
        finally:
            breakdown.restore()
    if args.profile:
        undo_pass(app, m, due_rows)
        checkpoint(app)
        profile = cProfile.Profile()
        profiled = one_pass(app, now, profile)

    # (4) the baseline.
    b_load, b_plan, b_cases, b_passed = baseline(app, now)
    b_total = b_load + b_plan

    # (5) the following minutes.
    minutes = []
    for k in range(1, args.minutes + 1):
        checkpoint(app)
        minutes.append(one_pass(app, now + timedelta(minutes=k)))

    # (6) the digest.
    digests = [digest_build(app, now) for _ in range(max(1, min(args.reps, 3)))]

    pass_s = statistics.median(r.seconds for r in passes)
    idle_s = statistics.median(r.idle_seconds for r in passes)
    first = passes[0]
    print(f"\nload average at the end: {_load()}")
    print(f"\n{'what':<58} {'median':>11}  runs / notes")
    print("-" * 110)
    print(
        f"{'escalation pass at now (' + str(first.visited) + ' due cases)':<58} {ms(pass_s):>11}  "
        f"min {ms(min(r.seconds for r in passes))}; {', '.join(ms(r.seconds) for r in passes)}"
    )
    print(
        f"{'  per visited case / per queued mail':<58} {ms(pass_s / max(first.visited, 1)):>11}  "
        f"{first.sent} mails queued: {dict(first.kinds.most_common())}"
    )
    print(
        f"{'second pass right after (nothing due, steady state)':<58} {ms(idle_s):>11}  "
        f"{', '.join(ms(r.idle_seconds) for r in passes)}"
    )
    if minutes:
        mins = ", ".join(f"{ms(r.seconds)} ({r.visited}/{r.sent})" for r in minutes)
        print(
            f"{'passes at now + 1 … ' + str(len(minutes)) + ' min (visited/queued)':<58} "
            f"{ms(statistics.median(r.seconds for r in minutes)):>11}  {mins}"
        )
    print(
        f"{'baseline: load every open case + next_escalation each':<58} {ms(b_total):>11}  "
        f"load {ms(b_load)} + plans {ms(b_plan)} for {b_cases:,} cases "
        f"({b_plan / b_cases * 1e6:.0f} µs each); {b_passed:,} with a passed stage (each an outbox look-up)"
    )
    print(
        f"{'digest build (all queues, 4 business hours, oldest 10)':<58} "
        f"{ms(statistics.median(d.build_seconds for d in digests)):>11}  "
        f"{', '.join(ms(d.build_seconds) for d in digests)}"
    )
    d0 = digests[0]
    print(
        f"{'digest render (text + HTML)':<58} {ms(statistics.median(d.render_seconds for d in digests)):>11}  "
        f"{d0.total[0]:,} breached + {d0.total[1]:,} at risk, {d0.shown[0]:,} + {d0.shown[1]:,} lines shown; "
        f"text {d0.text_bytes / 1024:,.0f} KB, HTML {d0.html_bytes / 1024:,.0f} KB"
    )
    print("-" * 110)
    print(
        f"ratio baseline / pass: {b_total / pass_s:,.0f}x at now (the baseline only finds the cases, the pass "
        f"also queues {first.sent} mails); {b_total / idle_s:,.0f}x against the pass with nothing due"
    )
    ok = pass_s < TARGET_SECONDS
    print(
        f"target: one pass < {TARGET_SECONDS} s (set for SQLite): {'PASS' if ok else 'FAIL'} "
        f"(median {ms(pass_s)}, {db_desc})"
    )
    if breakdown is not None:
        print(f"\nwhere one more pass's {ms(broken.seconds)} went ({broken.visited} cases, {broken.sent} mails):")
        for label, secs in breakdown.rows(broken.seconds):
            print(
                f"  {label:<50} {ms(secs):>10} {secs * 1000 / max(broken.sent, 1):6.2f} ms/mail "
                f"{secs / broken.seconds:6.1%}"
            )
    if args.profile:
        print(f"\nprofiled pass: {ms(profiled.seconds)} under cProfile (about twice the time without it)")
        print_profile(profile)
    return 1 if args.check and not ok else 0


def _due(row: dict, now: datetime) -> bool:
    return row["next_escalation_at"] is not None and row["next_escalation_at"] <= now


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tickets", type=int, default=100_000, help="open cases (default 100000)")
    ap.add_argument("--reps", type=int, default=7, help="repetitions of the pass (default 7)")
    ap.add_argument(
        "--behind", type=int, default=1, help="minutes since the job's previous pass (default 1: the every-minute job)"
    )
    ap.add_argument("--minutes", type=int, default=5, help="passes at the following minutes (default 5)")
    ap.add_argument("--seed", type=int, default=20261130)
    ap.add_argument("--database-url", help="postgresql://… database to create a temporary schema in (default: SQLite)")
    ap.add_argument("--check", action="store_true", help=f"exit 1 when the pass takes {TARGET_SECONDS} s or more")
    ap.add_argument("--no-breakdown", action="store_true", help="skip the extra pass with its parts timed")
    ap.add_argument("--profile", action="store_true", help="run one more pass under cProfile and print the hot spots")
    args = ap.parse_args(argv)
    if args.tickets <= 0 or args.reps <= 0 or args.behind <= 0 or args.minutes < 0:
        ap.error("--tickets, --reps and --behind must be positive")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
