"""The lease policy of several instances (``cluster.py`` over ``store/leases.py``) on SQLite and
PostgreSQL, without waiting for time to pass: two :class:`Cluster` objects stand for two instances,
and an instance's death is its rows' expiry written into the database. The running service with
these leases: ``test_cluster.py``."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from mailbridge.cluster import Cluster
from mailbridge.store import leases
from mailbridge.store.db import make_engine, make_session_factory, session_scope
from mailbridge.store.models import Lease

BOXES = [leases.mailbox_lease(a, "INBOX") for a in ("a", "b", "c")]


class Recorder:
    def __init__(self):
        self.gained: list[str] = []
        self.lost: list[str] = []
        self.busy: set[str] = set()


@pytest.fixture
def factory(db_url):
    engine = make_engine(db_url)
    yield make_session_factory(engine)
    engine.dispose()


def _instance(factory, name: str) -> tuple[Cluster, Recorder]:
    r = Recorder()
    c = Cluster(
        factory,
        name,
        30,
        BOXES,
        busy=lambda n: n in r.busy,
        on_gained=r.gained.extend,
        on_lost=r.lost.extend,
    )
    return c, r


def _rows(factory) -> dict[str, str | None]:
    with session_scope(factory) as s:
        now = leases.db_now(s)
        return {x.name: x.holder for x in s.scalars(select(Lease)) if x.holder is not None and x.expires_at > now}


def _die(factory, holder: str) -> None:
    """``holder`` was SIGKILLed long enough ago: every row of it has expired."""
    with session_scope(factory) as s:
        past = leases.db_now(s) - timedelta(seconds=1)
        s.execute(update(Lease).where(Lease.holder == holder).values(expires_at=past))


def test_a_second_instance_gets_its_fair_share_after_the_first_gives_one_up(factory):
    a, ra = _instance(factory, "A")
    b, rb = _instance(factory, "B")
    a.beat()
    assert a.held() == sorted([*BOXES, leases.LEADER]) and a.is_leader()
    assert sorted(ra.gained) == sorted([*BOXES, leases.LEADER])
    b.beat()  # two live instances: a share of two each, but nothing is free
    assert b.held() == [] and not b.is_leader()
    ra.busy.add(BOXES[-1])  # A is fetching the mailbox it will give up
    a.beat()
    assert ra.lost == [BOXES[-1]] and not a.holds(BOXES[-1])  # its fetch is told to stop ...
    a.beat()
    assert _rows(factory)[BOXES[-1]] == "A"  # ... and the lease is kept while that fetch runs
    b.beat()
    assert not b.holds(BOXES[-1])
    ra.busy.clear()
    a.beat()  # the fetch returned: released
    assert BOXES[-1] not in _rows(factory)
    b.beat()
    a.beat()
    assert b.held() == [BOXES[-1]] and rb.gained == [BOXES[-1]]
    assert a.held() == sorted([*BOXES[:2], leases.LEADER])  # A does not take it back
    rows = _rows(factory)
    assert [rows[n] for n in BOXES] == ["A", "A", "B"] and rows[leases.LEADER] == "A"


def test_a_dead_instances_leases_go_to_the_survivor_and_it_hears_it_lost_them(factory):
    a, ra = _instance(factory, "A")
    b, rb = _instance(factory, "B")
    a.beat()
    b.beat()
    _die(factory, "A")
    b.beat()  # one live instance: its share is every mailbox, and the leader lease is free
    assert b.held() == sorted([*BOXES, leases.LEADER]) and b.is_leader()
    assert sorted(rb.gained) == sorted([*BOXES, leases.LEADER])
    a.beat()  # A comes back (a long pause): every renewal fails, it stops fetching
    assert sorted(ra.lost) == sorted([*BOXES, leases.LEADER])
    assert a.held() == [] and not a.is_leader()
    assert all(holder == "B" for name, holder in _rows(factory).items() if not name.startswith("instance:"))


def test_a_mailbox_left_unheld_for_a_whole_lease_is_taken_above_the_share(factory):
    """Heartbeat rows make three instances live, but the third never takes anything (its config
    lacks the mailbox): after a lease unheld the others take it although above their share."""
    a, _ = _instance(factory, "A")
    with session_scope(factory) as s:
        now = leases.db_now(s)
        leases.take(s, leases.instance_lease("B"), "B", now, 30)
        leases.take(s, leases.instance_lease("C"), "C", now, 30)
        leases.take(s, BOXES[1], "C", now, 30)
        leases.take(s, BOXES[2], "C", now, 30)
        leases.release(s, BOXES[1], "C", now)
        leases.release(s, BOXES[2], "C", now)
    a.beat()  # share ceil(3 / 3) = 1: it takes the free "a" only
    assert a.held() == sorted([BOXES[0], leases.LEADER])
    with session_scope(factory) as s:
        long_ago = leases.db_now(s) - timedelta(seconds=31)
        s.execute(update(Lease).where(Lease.name.in_(BOXES[1:])).values(expires_at=long_ago))
    a.beat()
    assert a.held() == sorted([*BOXES, leases.LEADER])


def test_a_clean_stop_releases_everything_and_removes_the_heartbeat(factory):
    a, _ = _instance(factory, "A")
    b, _ = _instance(factory, "B")
    a.beat()
    b.beat()
    a.release_all()
    assert _rows(factory) == {leases.instance_lease("B"): "B"}
    b.beat()  # at once, not after the lease time
    assert b.held() == sorted([*BOXES, leases.LEADER])
