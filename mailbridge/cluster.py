"""Several ``mailbridge run`` instances on one database: which instance fetches which mailbox, and
which one runs the scheduler's cluster-wide jobs. The rows are ``store/leases.py``'s; this module
decides what an instance takes, keeps and gives back.

One heartbeat (:meth:`Cluster.beat`, every ``lease_seconds / 3``) is one transaction at the
database's time:

1. the instance's own row ``instance:<name>`` is renewed: it is alive until it expires;
2. its fair share is ``ceil(mailboxes / live instances)``; holding more than that, it gives one
   mailbox up (its fetch stops after the mail it is on; the lease is released once that fetch has
   returned, so nobody fetches the mailbox while it still works on it);
3. each mailbox it holds is renewed; each one it does not is taken when it is free and the
   instance is below its share, or when it has been left unheld for a whole lease (a share counted
   from stale heartbeat rows must not leave a mailbox unfetched);
4. the ``leader`` lease is taken or renewed: whoever holds it runs the leader's jobs.

The names are visited in one sorted order by every instance, so two heartbeats on PostgreSQL never
wait for each other's row locks in a cycle. A lease counts as held here only after the transaction
that took it committed, and only until ``lease_seconds`` after that heartbeat *began* (monotonic
time): a heartbeat that cannot reach the database loses its leases here no later than the database
lets another instance take them.

What is lost or given up is reported to ``on_lost`` (the service stops fetching those mailboxes),
what is gained to ``on_gained`` (the service starts fetching at once). Thread-safe: the heartbeat
runs in a thread of its own, the fetch threads ask :meth:`holds`.
"""

from __future__ import annotations

import math
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterable
from datetime import timedelta

import structlog

from mailbridge.store import leases
from mailbridge.store.db import session_scope

log = structlog.get_logger(__name__)

# A heartbeat row expired this long ago belongs to an instance that is gone: it is deleted at start.
FORGET_INSTANCES_AFTER = timedelta(hours=1)


def default_instance_name() -> str:
    """host:pid:random — unique per process, readable in ``mailbridge status`` and the logs."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Cluster:
    """This instance's leases: the mailboxes it fetches and whether it is the leader."""

    def __init__(
        self,
        session_factory,
        instance: str,
        lease_seconds: float,
        mailboxes: Iterable[str],
        *,
        busy: Callable[[str], bool] = lambda name: False,
        on_gained: Callable[[list[str]], None] = lambda names: None,
        on_lost: Callable[[list[str]], None] = lambda names: None,
    ):
        self.factory = session_factory
        self.instance = instance
        self.lease_seconds = lease_seconds
        self.mailboxes = sorted(set(mailboxes))
        self.busy = busy
        self.on_gained = on_gained
        self.on_lost = on_lost
        self._lock = threading.Lock()
        # lease name -> monotonic time until which it is ours
        self._held: dict[str, float] = {}
        # mailboxes given up: still renewed until their fetch returned, then released
        self._leaving: set[str] = set()
        self._forgotten = False

    @property
    def interval(self) -> float:
        """Seconds between heartbeats."""
        return self.lease_seconds / 3

    # -- what the service asks ---------------------------------------------------------------------

    def holds(self, name: str) -> bool:
        """Whether this instance may fetch the mailbox ``name`` (or, for ``leases.LEADER``, run the
        leader's jobs) now."""
        with self._lock:
            until = self._held.get(name)
            return until is not None and name not in self._leaving and time.monotonic() < until

    def is_leader(self) -> bool:
        return self.holds(leases.LEADER)

    def leaving(self, name: str) -> bool:
        with self._lock:
            return name in self._leaving

    def held(self) -> list[str]:
        """The leases held now (given-up mailboxes excluded), sorted."""
        with self._lock:
            now = time.monotonic()
            return sorted(n for n, until in self._held.items() if until > now and n not in self._leaving)

    # -- the heartbeat -----------------------------------------------------------------------------

    def beat(self) -> None:
        """One heartbeat (see the module docstring). A database fault is logged; leases whose time
        ran out meanwhile are reported lost."""
        started = time.monotonic()
        try:
            gained, lost, released = self._beat()
        except Exception as e:
            log.warning("cluster_heartbeat_failed", instance=self.instance, error=str(e).splitlines()[0][:200])
            with self._lock:
                expired = sorted(n for n, until in self._held.items() if until <= time.monotonic())
                for n in expired:
                    self._held.pop(n, None)
                    self._leaving.discard(n)
            if expired:
                log.warning("cluster_leases_expired", instance=self.instance, leases=expired)
                self.on_lost(expired)
            return
        with self._lock:
            for n in lost + released:
                self._held.pop(n, None)
                self._leaving.discard(n)
            for n in gained:
                self._held[n] = started + self.lease_seconds
            for n in list(self._held):
                self._held[n] = started + self.lease_seconds
        for n in gained:
            log.info("cluster_lease_taken", instance=self.instance, lease=n)
        for n in released:
            log.info("cluster_lease_released", instance=self.instance, lease=n)
        for n in lost:
            log.warning("cluster_lease_lost", instance=self.instance, lease=n)
        if lost:
            self.on_lost(lost)
        if gained:
            self.on_gained(gained)

    def _beat(self) -> tuple[list[str], list[str], list[str]]:
        """The heartbeat's transaction: (gained, lost, released) lease names."""
        with self._lock:
            held = set(self._held)
            leaving = set(self._leaving)
        gained: list[str] = []
        lost: list[str] = []
        released: list[str] = []
        shed: str | None = None
        seconds = self.lease_seconds
        with session_scope(self.factory) as s:
            now = leases.db_now(s)
            if not self._forgotten:
                leases.forget_instances(s, now - FORGET_INSTANCES_AFTER)
            leases.take(s, leases.instance_lease(self.instance), self.instance, now, seconds)
            live = max(1, leases.live_instances(s, now))
            share = math.ceil(len(self.mailboxes) / live)
            mine = [n for n in self.mailboxes if n in held and n not in leaving]
            if len(mine) > share:
                shed = mine[-1]
            count = len(mine) - (shed is not None)
            for name in self.mailboxes:
                if name in leaving and not self.busy(name):
                    leases.release(s, name, self.instance, now)
                    released.append(name)
                elif name in held:
                    if not leases.take(s, name, self.instance, now, seconds):
                        lost.append(name)
                else:
                    free_before = now if count < share else now - timedelta(seconds=seconds)
                    if leases.take(s, name, self.instance, now, seconds, free_before=free_before):
                        gained.append(name)
                        count += 1
            leader = leases.LEADER
            if leases.take(s, leader, self.instance, now, seconds):
                if leader not in held:
                    gained.append(leader)
            elif leader in held:
                lost.append(leader)
        self._forgotten = True
        if shed in lost:  # gone anyway: reported once, as lost
            shed = None
        if shed is not None:
            with self._lock:
                self._leaving.add(shed)
            log.info("cluster_lease_given_up", instance=self.instance, lease=shed, share=share, live=live)
            self.on_lost([shed])
        return gained, lost, released

    def release_all(self) -> None:
        """A clean stop: every lease released and the heartbeat row removed, so another instance
        takes over at its next heartbeat rather than after the lease time."""
        with self._lock:
            names = sorted(self._held)
            self._held.clear()
            self._leaving.clear()
        try:
            with session_scope(self.factory) as s:
                now = leases.db_now(s)
                for n in names:
                    leases.release(s, n, self.instance, now)
                leases.drop(s, leases.instance_lease(self.instance), self.instance)
        except Exception as e:  # the database is away: the leases run out by themselves
            log.warning("cluster_release_failed", instance=self.instance, error=str(e).splitlines()[0][:200])
            return
        log.info("cluster_leases_released", instance=self.instance, leases=names)


__all__ = ["Cluster", "default_instance_name"]
