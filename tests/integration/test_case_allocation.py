"""Case numbers from several processes at once: no gaps, no collisions, on SQLite and PostgreSQL.

Each worker is a separate OS process (``multiprocessing`` with the ``spawn`` start method, so it
shares nothing with pytest but the database) that opens its own engine and, in a loop, allocates a
serial and inserts a ticket with it in one transaction, exactly as the pipeline's ``open_ticket``
step does. A start barrier makes the workers really run at the same time.
"""

from __future__ import annotations

import itertools
import multiprocessing
import queue
import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from mailbridge.domain import CaseNumberFormat
from mailbridge.store import migrate
from mailbridge.store import repositories as repo
from mailbridge.store.db import make_engine, make_session_factory, session_scope
from mailbridge.store.models import CaseSequence, Ticket

pytestmark = pytest.mark.slow

FIRST_SERIAL = 100000
WORKERS = 3
ITERATIONS = 150
# Every this-many-th transaction of a worker allocates a serial and then rolls back.
ROLLBACK_EVERY = 7
# A ticket transaction does more than allocate (parse, route, render the acknowledgement); hold it
# open a little after allocating so the other workers really queue up behind the sequence row.
HOLD_SECONDS = 0.002
# Between two tickets a poller fetches the next mail and writes its raw bytes, outside any
# transaction. Without such a pause SQLite's lock (no queue: waiters poll with growing sleeps)
# lets one process take it again and again, and the workers would run one after the other.
BETWEEN_SECONDS = 0.002
# The serials of the workers, in order, change hands at least this often (a few hundred is usual).
MIN_SWITCHES = 10
# A unique-key race on the very first allocation (no sequence row yet) is retried this often,
# as the pipeline does (INTEGRITY_RETRIES).
CONFLICT_RETRIES = 3
# Bounds on waiting for the workers (seconds).
BARRIER_TIMEOUT = 60.0
WORKER_TIMEOUT = 120.0


class _Rollback(Exception):
    """Raised inside a worker's transaction to roll it back after the serial was taken."""


def _ticket(fmt: CaseNumberFormat, serial: int, worker: str) -> Ticket:
    now = datetime.now(UTC)
    return Ticket(
        case_number=fmt.format(serial),
        serial=serial,
        queue=worker,
        status="new",
        subject=f"allocated by {worker}",
        requester_email=f"{worker}@kunde.example",
        requester_name="",
        language="de",
        created_at=now,
        updated_at=now,
    )


def _allocate_many(db_url, worker, iterations, rollback_every, barrier, results) -> None:
    """Worker process: ``iterations`` ticket transactions; reports what it committed."""
    engine = make_engine(db_url)
    factory = make_session_factory(engine)
    fmt = CaseNumberFormat()
    with engine.connect():  # connect before the barrier so that start-up cost does not stagger us
        pass
    committed, rolled_back, conflicts = [], [], 0
    barrier.wait(BARRIER_TIMEOUT)
    for i in range(iterations):
        time.sleep(BETWEEN_SECONDS)
        for _attempt in range(CONFLICT_RETRIES + 1):
            try:
                with session_scope(factory) as s:
                    serial = repo.allocate_serial(s, fmt, FIRST_SERIAL)
                    s.add(_ticket(fmt, serial, worker))
                    s.flush()
                    time.sleep(HOLD_SECONDS)
                    if rollback_every and i % rollback_every == rollback_every - 1:
                        raise _Rollback
                committed.append(serial)
            except _Rollback:
                rolled_back.append(serial)
            except IntegrityError:
                conflicts += 1
                continue
            break
        else:
            raise AssertionError(f"{worker}: still conflicting after {CONFLICT_RETRIES} retries")
    engine.dispose()
    results.put((worker, committed, rolled_back, conflicts))


def _run_workers(db_url: str, n: int, iterations: int, rollback_every: int) -> dict[str, tuple]:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(n)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_allocate_many, args=(db_url, f"w{k}", iterations, rollback_every, barrier, results))
        for k in range(n)
    ]
    for p in procs:
        p.start()
    out = {}
    try:
        deadline = time.monotonic() + WORKER_TIMEOUT
        while len(out) < n:
            dead = [p for p in procs if p.exitcode not in (None, 0)]
            if dead:
                pytest.fail(f"worker process exited with {dead[0].exitcode}")
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"workers did not finish within {WORKER_TIMEOUT}s")
            try:
                worker, committed, rolled_back, conflicts = results.get(timeout=min(left, 1.0))
            except queue.Empty:  # look at the processes again
                continue
            out[worker] = (committed, rolled_back, conflicts)
        for p in procs:
            p.join(WORKER_TIMEOUT)
            assert p.exitcode == 0
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
    return out


def _migrate(db_url: str, seed: bool):
    engine = make_engine(db_url)
    migrate.upgrade(engine)
    factory = make_session_factory(engine)
    if seed:
        with session_scope(factory) as s:
            repo.ensure_case_sequence(s, CaseNumberFormat(), FIRST_SERIAL)
    return engine, factory


def _switches(serials_by_worker: dict[str, list[int]]) -> int:
    """How often the worker changes when all serials are put in order: 0 means no interleaving."""
    owner = sorted((s, w) for w, ss in serials_by_worker.items() for s in ss)
    return sum(1 for a, b in itertools.pairwise(owner) if a[1] != b[1])


def test_concurrent_processes_allocate_without_gaps_or_collisions(db_url):
    """Three processes, 150 ticket transactions each, every seventh rolled back after taking a
    serial: the committed tickets carry exactly the serials first..first+N-1, each once, the
    workers' serials interleave, and a rolled-back serial is handed out again, not lost."""
    engine, factory = _migrate(db_url, seed=True)
    try:
        started = time.monotonic()
        results = _run_workers(db_url, WORKERS, ITERATIONS, ROLLBACK_EVERY)
        elapsed = time.monotonic() - started

        committed = {w: r[0] for w, r in results.items()}
        rolled_back = {w: r[1] for w, r in results.items()}
        per_worker = ITERATIONS - ITERATIONS // ROLLBACK_EVERY
        assert all(len(c) == per_worker for c in committed.values())
        total = WORKERS * per_worker

        with session_scope(factory) as s:
            rows = s.execute(select(Ticket.serial, Ticket.case_number, Ticket.queue)).all()
            next_serial = s.get(CaseSequence, "C7").next_serial
        serials = sorted(r.serial for r in rows)
        assert serials == list(range(FIRST_SERIAL, FIRST_SERIAL + total)), "gap or collision"
        assert len({r.case_number for r in rows}) == total
        fmt = CaseNumberFormat()
        assert all(fmt.parse(r.case_number) == r.serial for r in rows)
        assert next_serial == FIRST_SERIAL + total
        # What each worker says it committed is what the database holds for it.
        for w, ss in committed.items():
            assert sorted(ss) == sorted(r.serial for r in rows if r.queue == w)
        # Each worker's own serials rise: a later transaction never gets a smaller number.
        assert all(ss == sorted(ss) for ss in committed.values())
        # A rolled-back serial was not lost: someone committed it later.
        all_rolled_back = [s for ss in rolled_back.values() for s in ss]
        assert set(all_rolled_back) <= set(serials)

        # The workers really ran at the same time: their serial ranges overlap pairwise.
        spans = {w: (min(ss), max(ss)) for w, ss in committed.items()}
        for a in spans:
            for b in spans:
                if a < b:
                    assert spans[a][0] < spans[b][1] and spans[b][0] < spans[a][1], f"{a} and {b} did not overlap"
        switches = _switches(committed)
        assert switches >= MIN_SWITCHES
        print(
            f"\n[{engine.dialect.name}] {WORKERS} processes, {total} tickets and "
            f"{len(all_rolled_back)} rollbacks in {elapsed:.2f}s; the allocating process changed "
            f"{switches} times along the serials; spans {spans}"
        )
    finally:
        engine.dispose()


def test_first_allocations_race_without_a_sequence_row(db_url):
    """Before ``ensure_case_sequence`` ran, several processes allocating the very first serials at
    once still end up with first..first+N-1: the loser of the insert race retries (as the pipeline
    does) instead of getting a duplicate."""
    engine, factory = _migrate(db_url, seed=False)
    try:
        results = _run_workers(db_url, WORKERS, 5, rollback_every=0)
        with session_scope(factory) as s:
            serials = sorted(s.scalars(select(Ticket.serial)))
        assert serials == list(range(FIRST_SERIAL, FIRST_SERIAL + WORKERS * 5))
        conflicts = sum(r[2] for r in results.values())
        print(f"\n[{engine.dialect.name}] first allocations: {conflicts} insert conflicts retried")
    finally:
        engine.dispose()


def test_a_rolled_back_ticket_gives_its_serial_back(db_url):
    """A ticket transaction that fails after taking a serial (here: its ticket collides with an
    existing case number) leaves no gap: the next ticket gets that very serial."""
    engine, factory = _migrate(db_url, seed=True)
    fmt = CaseNumberFormat()
    try:
        with session_scope(factory) as s:
            first = repo.allocate_serial(s, fmt, FIRST_SERIAL)
            s.add(_ticket(fmt, first, "main"))
        assert first == FIRST_SERIAL

        with pytest.raises(IntegrityError), session_scope(factory) as s:
            taken = repo.allocate_serial(s, fmt, FIRST_SERIAL)
            assert taken == FIRST_SERIAL + 1
            bad = _ticket(fmt, taken, "main")
            bad.case_number = fmt.format(first)  # a unique violation at flush
            s.add(bad)
            s.flush()

        with pytest.raises(_Rollback), session_scope(factory) as s:
            assert repo.allocate_serial(s, fmt, FIRST_SERIAL) == FIRST_SERIAL + 1
            raise _Rollback

        with session_scope(factory) as s:
            again = repo.allocate_serial(s, fmt, FIRST_SERIAL)
            s.add(_ticket(fmt, again, "main"))
        assert again == FIRST_SERIAL + 1

        with session_scope(factory) as s:
            assert sorted(s.scalars(select(Ticket.serial))) == [FIRST_SERIAL, FIRST_SERIAL + 1]
            assert s.get(CaseSequence, "C7").next_serial == FIRST_SERIAL + 2
    finally:
        engine.dispose()


def test_two_instances_starting_at_once_both_start(app, monkeypatch):
    """Two instances started together on a new database both find no case sequence row and both add
    it; the one that commits second must start anyway (it crashed with a unique violation)."""
    from mailbridge import app as app_module

    if app.settings.database_url.startswith("sqlite"):
        pytest.skip("SQLite transactions take the write lock at BEGIN (IMMEDIATE): this race cannot happen there")
    original = repo.ensure_case_sequence

    def other_instance_wins(session, fmt, first_serial):
        original(session, fmt, first_serial)  # this instance adds the row (not yet committed) …
        with session_scope(app.session_factory) as other:  # … while the other one commits it first
            original(other, fmt, first_serial)

    with session_scope(app.session_factory) as s:
        s.query(CaseSequence).delete()
    monkeypatch.setattr(app_module.repo, "ensure_case_sequence", other_instance_wins)
    app.upgrade_db()
    with session_scope(app.session_factory) as s:
        assert [c.name for c in s.scalars(select(CaseSequence))] == [
            f"{app.settings.case_numbers.fmt.prefix}{app.settings.case_numbers.fmt.digits}"
        ]
