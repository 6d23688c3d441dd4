"""Several ``mailbridge run`` instances (real subprocesses of the CLI) on one PostgreSQL database and
one real Dovecot (``tests/mailstack.py``): a lease per mailbox, the scheduler's leader lease, the
schema upgrade serialised (``cluster.py``, ``store/leases.py``, ``store/migrate.py``).

Leases are short here (``lease_seconds = 3``: a heartbeat every second) so a takeover after SIGKILL
is seen within seconds. The database is only read by the tests, except where a test marks a case
solved to give the leader's close job work.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from mailbridge.settings import OutboxSettings
from mailbridge.store.db import make_engine
from mailbridge.store.models import Event, Lease, Message, Outbox, Ticket
from tests.mailstack import MailStack, mailstack_fixture, mailstack_session_fixture  # noqa: F401
from tests.support import PG_ENV, make_mail, postgres_database
from tests.support.service import Service

pytestmark = [pytest.mark.slow, pytest.mark.mailstack]

SUPPORT = "support@vendor.example"
SALES = "sales@vendor.example"
LEASE_SECONDS = 3
FETCH_BATCH = 20
MAILS_PER_BOX = 500
# A takeover after SIGKILL: the dead holder's lease runs out (at most LEASE_SECONDS after its last
# renewal), the next heartbeat of a survivor (every LEASE_SECONDS / 3) takes it; plus slack for the
# loaded CI machine (the log line is written after the heartbeat's commit).
TAKEOVER_LIMIT = LEASE_SECONDS + LEASE_SECONDS / 3 + 2.0


@pytest.fixture
def pg_url():
    if not os.environ.get(PG_ENV):
        pytest.skip(f"{PG_ENV} not set")
    with postgres_database() as url:
        yield url


def _config(path: Path, stack: MailStack, smtp_port: int, db_url: str, var_dir: Path, extra: str = "") -> Path:
    accounts = ""
    for name, address, queue, lang in (("support", SUPPORT, "support", "en"), ("sales", SALES, "sales", "de")):
        accounts += f"""
[[accounts]]
name = "{name}"
host = "127.0.0.1"
port = {stack.imap_port}
tls = "none"
user = "{address}"
password_env = "MB_PW_{name.upper()}"
poll_interval = 2
fetch_batch = {FETCH_BATCH}

[[queues]]
name = "{queue}"
addresses = ["{address}"]
language = "{lang}"
account = "{name}"
display_name = "Vendor {queue}"
"""
    path.write_text(
        f"""
var_dir = "{var_dir}"

[database]
url = "{db_url}"
{accounts}
[smtp]
host = "127.0.0.1"
port = {smtp_port}
tls = "none"
timeout = 10

[outbox]
interval = 1
backoff_seconds = 1
max_backoff_seconds = 4
lease_seconds = 5

[ingest]
parse_workers = 0

[cluster]
lease_seconds = {LEASE_SECONDS}

[logging]
format = "json"
{extra}
""",
        encoding="utf-8",
    )
    return path


class Instance(Service):
    def holder_pid(self) -> int:
        return self.proc.pid

    def taken(self, lease: str) -> list[dict]:
        return [e for e in self.named("cluster_lease_taken") if e.get("lease") == lease]

    def cycles(self) -> Counter:
        """What this instance's logged fetch cycles did: fetched, and each disposition."""
        total: Counter = Counter()
        for e in self.named("imap_cycle_done"):
            total["fetched"] += e.get("fetched", 0)
            for k in ("processed", "duplicate", "quarantined", "ignored", "noise"):
                total[k] += e.get(k, 0)
        return total


class Cluster:
    def __init__(self, stack: MailStack, smtp_sink, db_url: str, tmp_path: Path, extra: str = ""):
        stack.add_users(SUPPORT, SALES)
        self.stack, self.smtp, self.db_url, self.tmp_path = stack, smtp_sink, db_url, tmp_path
        self.env = {**os.environ, "MB_PW_SUPPORT": stack.password(SUPPORT), "MB_PW_SALES": stack.password(SALES)}
        # One var_dir (raw store, notification key), as for instances on one host; on several hosts
        # they would share [conversations] secret instead.
        self.extra = extra
        self.started: list[Instance] = []
        self.engine = make_engine(db_url)

    def start(self, n: int) -> Instance:
        config = _config(
            self.tmp_path / f"mailbridge-{n}.toml",
            self.stack,
            self.smtp.port,
            self.db_url,
            self.tmp_path / "var",
            self.extra,
        )
        inst = Instance(config, self.env, self.tmp_path / f"instance-{n}.log")
        self.started.append(inst)
        return inst

    def by_pid(self, holder: str) -> Instance:
        pid = int(holder.rsplit(":", 2)[1])
        (inst,) = [i for i in self.started if i.proc.pid == pid]
        return inst

    def leases(self) -> dict[str, str | None]:
        with self.engine.connect() as c:
            now = c.scalar(select(func.now()))
            return {
                name: holder
                for name, holder, until in c.execute(select(Lease.name, Lease.holder, Lease.expires_at))
                if holder is not None and until > now
            }

    def count(self, stmt) -> int:
        try:
            with self.engine.connect() as c:
                return c.scalar(stmt) or 0
        except Exception:  # the schema is not there yet
            return 0

    def tickets(self) -> int:
        return self.count(select(func.count()).select_from(Ticket))

    def close(self) -> None:
        for inst in self.started:
            inst.kill()
        self.engine.dispose()


@pytest.fixture
def cluster(mailstack: MailStack, smtp_sink, pg_url, tmp_path):
    c = Cluster(mailstack, smtp_sink, pg_url, tmp_path)
    yield c
    c.close()


def _spread(cluster: Cluster) -> dict[str, str] | None:
    """The live leases once both mailboxes are held, by two different instances; else None."""
    held = cluster.leases()
    boxes = ("mailbox:support/INBOX", "mailbox:sales/INBOX")
    if all(b in held for b in boxes) and held[boxes[0]] != held[boxes[1]]:
        return held
    return None


def _mails(address: str, start: int, count: int) -> list[tuple[str, bytes]]:
    out = []
    for i in range(start, start + count):
        mid = f"cl-{address.split('@')[0]}-{i}@kunde.example"
        raw = make_mail(
            subject=f"Anlage {i} meldet Fehler {address[:2]}",
            sender=(f"Kunde {i}", f"kunde{i}@kunde.example"),
            to=address,
            message_id=f"<{mid}>",
        )
        out.append((mid, raw))
    return out


def _append(stack: MailStack, address: str, mails: list[tuple[str, bytes]], chunk: int = 100) -> None:
    with stack.imap(address) as c:
        for i in range(0, len(mails), chunk):
            c.multiappend("INBOX", [raw for _, raw in mails[i : i + chunk]])


def _wait(what: str, check, timeout: float, instances: list[Instance]):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.1)
    tails = "\n\n".join(i.tail(15) for i in instances)
    pytest.fail(f"timed out after {timeout}s waiting for {what}\n{tails}")


def _folder_ids(stack: MailStack, address: str, folder: str) -> Counter:
    with stack.imap(address) as c:
        if not c.folder_exists(folder):
            return Counter()
        c.select_folder(folder, readonly=True)
        uids = c.search("ALL")
        data = c.fetch(uids, [b"BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"]) if uids else {}
    return Counter(
        v[b"BODY[HEADER.FIELDS (MESSAGE-ID)]"].decode().split(":", 1)[1].strip().strip("<>") for v in data.values()
    )


def test_three_instances_share_two_mailboxes_and_a_killed_holder_is_replaced_within_the_lease(
    cluster: Cluster, mailstack: MailStack, smtp_sink
):
    """1,000 mails in two mailboxes, three instances on one empty PostgreSQL (they upgrade the schema
    together); the holder of a mailbox lease is SIGKILLed after a quarter of the mail is in. Every
    mail: one ticket, one acknowledgement, in Processed once; at any time one instance fetches a
    mailbox; the dead one's mailbox is taken over within the lease time."""
    first = {a: _mails(a, 0, MAILS_PER_BOX // 2) for a in (SUPPORT, SALES)}
    second = {a: _mails(a, MAILS_PER_BOX // 2, MAILS_PER_BOX // 2) for a in (SUPPORT, SALES)}
    instances = [cluster.start(n) for n in range(3)]
    for inst in instances:
        inst.wait_started()
    # Two mailboxes, three instances: a fair share of one each, so the mailboxes go to two of them
    # (the first one up takes both, and gives one up when the others' heartbeats appear).
    _wait("one mailbox each on two instances", lambda: _spread(cluster), 20, instances)
    for a in (SUPPORT, SALES):
        _append(mailstack, a, first[a])

    _wait("a quarter of the mail", lambda: cluster.tickets() >= MAILS_PER_BOX // 2, 90, instances)
    victim_lease = "mailbox:sales/INBOX"
    victim = cluster.by_pid(cluster.leases()[victim_lease])
    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait()
    killed_at = time.time()
    for a in (SUPPORT, SALES):
        _append(mailstack, a, second[a])
    survivors = [i for i in instances if i is not victim]

    total = 2 * MAILS_PER_BOX
    _wait("every mail a ticket", lambda: cluster.tickets() >= total, 120, survivors)
    sent = select(func.count()).select_from(Outbox).where(Outbox.kind == "ack", Outbox.status == "sent")
    _wait("every acknowledgement sent", lambda: cluster.count(sent) >= total, 60, survivors)

    # The takeover: a survivor took the dead one's mailbox within the lease time of the kill.
    takes = [e for i in survivors for e in i.taken(victim_lease)]
    after = [datetime.fromisoformat(e["timestamp"]).timestamp() - killed_at for e in takes]
    after = [t for t in after if t > 0]
    assert after, f"no survivor took {victim_lease}"
    assert min(after) <= TAKEOVER_LIMIT, f"took over {min(after):.1f}s after the kill (limit {TAKEOVER_LIMIT}s)"

    # One ticket and one acknowledgement per mail (rows and the SMTP sink).
    with cluster.engine.connect() as c:
        inbound = Counter(
            c.scalars(select(Message.message_id).where(Message.direction == "in", Message.ticket_id.is_not(None)))
        )
        acks = c.scalar(select(func.count()).select_from(Outbox).where(Outbox.kind == "ack"))
    expected = {mid for box in (first, second) for a in box for mid, _ in box[a]}
    assert {m.strip("<>") for m in inbound} == expected
    assert max(inbound.values()) == 1 and cluster.tickets() == total
    assert acks == total
    time.sleep(1.5)  # a second send of a row would show now
    # The killed instance's sender may have had a mail in its SMTP exchange on each connection: such
    # a row is sent again after its lease, and recorded as such (outbound/sender.py). Nothing else
    # reaches the server twice.
    with cluster.engine.connect() as c:
        resent = c.scalar(select(func.count()).select_from(Event).where(Event.kind == "mail_resent_unknown_outcome"))
    assert 0 <= len(smtp_sink.received) - total <= resent <= OutboxSettings().connections

    # Processed holds each mail once; nothing is left in the INBOX.
    for a in (SUPPORT, SALES):
        processed = _folder_ids(mailstack, a, "Processed")
        assert set(processed) == {mid for mid, _ in first[a] + second[a]}
        assert max(processed.values()) == 1, [m for m, n in processed.items() if n > 1][:5]
        assert not _folder_ids(mailstack, a, "INBOX")

    # One holder at a time (from the instances' logs): a mailbox is taken from another instance only
    # when that one released it (its log line may trail the taker's by a moment: it is written after
    # the commit), or when it was the dead instance, after the kill.
    for box in ("mailbox:support/INBOX", victim_lease):
        events = sorted(
            (datetime.fromisoformat(e["timestamp"]).timestamp(), e["event"], n)
            for n, inst in enumerate(instances)
            for e in inst.events()
            if e.get("lease") == box and e.get("event") in ("cluster_lease_taken", "cluster_lease_released")
        )
        takes = [(at, n) for at, event, n in events if event == "cluster_lease_taken"]
        releases = [(at, n) for at, event, n in events if event == "cluster_lease_released"]
        for (since, before), (at, n) in itertools.pairwise(takes):
            released = any(h == before and since <= r <= at + 1.0 for r, h in releases)
            died = instances[before] is victim and at > killed_at
            assert before == n or released or died, f"{box} taken by {n} while {before} held it: {events}"

    # Each mail fetched by one instance: the logged cycles fetched at most every mail once, and only
    # mail the dead instance had in hand (at most one fetch batch) was seen again as a duplicate.
    cycles = [i.cycles() for i in instances]
    duplicates = sum(c["duplicate"] for c in cycles)
    fetched = sum(c["fetched"] for c in cycles)
    print(f"\ntakeover after {min(after):.2f}s; fetched per instance: {[c['fetched'] for c in cycles]}")
    assert duplicates <= FETCH_BATCH, cycles
    assert fetched <= total, cycles
    # Two instances never worked on one mail at once (that shows as a unique-key conflict and retry).
    assert not [e for i in instances for e in i.named("pipeline_retry_after_conflict")]
    logs = "\n".join(line for i in instances for line in i.lines())
    assert "EXPUNGEISSUED" not in logs
    for inst in survivors:
        assert not [e for e in inst.errors() if e.get("event") != "cluster_lease_lost"], inst.tail()
        assert inst.stop() == 0


def test_two_instances_fetch_one_mailbox_each_and_a_clean_stop_hands_over_at_once(
    cluster: Cluster, mailstack: MailStack
):
    """Two instances, two mailboxes: each fetches one. One stops cleanly: its lease is released, and
    the other takes that mailbox at its next heartbeat (well within the lease time)."""
    one, two = cluster.start(0), cluster.start(1)
    one.wait_started()
    two.wait_started()
    names = {"mailbox:support/INBOX", "mailbox:sales/INBOX"}
    leases = _wait("one mailbox each", lambda: _spread(cluster), 20, [one, two])
    leader = cluster.by_pid(leases["leader"])
    other = two if leader is one else one
    # `mailbridge status` names the holders.
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mailbridge",
            "--config",
            str(cluster.tmp_path / "mailbridge-0.toml"),
            "status",
            "--json",
        ],
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    shown = {r["name"]: r["holder"] for r in json.loads(out.stdout)["leases"] if r["held"]}
    assert {n: shown[n] for n in names} == {n: leases[n] for n in names}, out.stdout
    assert shown["leader"] == leases["leader"]
    text = subprocess.run(
        [sys.executable, "-m", "mailbridge", "--config", str(cluster.tmp_path / "mailbridge-0.toml"), "status"],
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert "leases" in text and "mailbox:sales/INBOX" in text, text
    mine = next(n for n in names if cluster.by_pid(leases[n]) is other)
    stopped_at = time.time()
    assert other.stop() == 0
    other.assert_stopped_cleanly()
    assert other.named("cluster_leases_released")
    took = _wait("the survivor takes the mailbox", lambda: leader.taken(mine), 10, [leader])
    delay = datetime.fromisoformat(took[-1]["timestamp"]).timestamp() - stopped_at
    assert delay < LEASE_SECONDS, f"handed over after {delay:.1f}s: the lease ran out instead of being released"
    _append(mailstack, SALES if "sales" in mine else SUPPORT, _mails(SALES if "sales" in mine else SUPPORT, 0, 3))
    _wait("the mails of the handed-over mailbox", lambda: cluster.tickets() >= 3, 30, [leader])
    assert leader.stop() == 0


def test_two_instances_starting_together_on_an_empty_database_both_run(
    mailstack: MailStack, smtp_sink, tmp_path, pg_url
):
    """The schema upgrade at start is serialised (an advisory lock): two instances started in the
    same moment on an empty PostgreSQL database both come up and keep running; three times over."""
    for attempt in range(3):
        with postgres_database() as url:
            c = Cluster(mailstack, smtp_sink, url, tmp_path / f"try-{attempt}")
            (tmp_path / f"try-{attempt}").mkdir()
            try:
                pair = [c.start(0), c.start(1)]
                for inst in pair:
                    inst.wait_started()
                time.sleep(0.5)
                for inst in pair:
                    assert inst.alive, inst.tail()
                    assert not inst.errors(), inst.tail()
                for inst in pair:  # both stop at once (the test's time)
                    inst.proc.send_signal(signal.SIGTERM)
                assert [inst.proc.wait(30) for inst in pair] == [0, 0]
            finally:
                c.close()


def test_the_leaders_jobs_run_on_one_instance_and_on_another_after_the_leader_is_killed(
    mailstack: MailStack, smtp_sink, tmp_path, pg_url
):
    """close_solved is a leader's job: with two instances only the leader closes solved cases; after
    the leader is SIGKILLed the other takes the leader lease and closes the next ones."""
    c = Cluster(mailstack, smtp_sink, pg_url, tmp_path, extra="\n[conversations]\nclose_interval = 0.5\n")
    try:
        pair = [c.start(0), c.start(1)]
        for inst in pair:
            inst.wait_started()
        _append(mailstack, SUPPORT, _mails(SUPPORT, 0, 4))
        _wait("four tickets", lambda: c.tickets() >= 4, 30, pair)
        with c.engine.connect() as conn:
            cases = list(conn.scalars(select(Ticket.case_number).order_by(Ticket.id)))

        def solve(case_numbers: list[str]) -> None:
            with c.engine.begin() as conn:
                long_ago = datetime.now(UTC) - timedelta(days=400)
                conn.execute(
                    update(Ticket)
                    .where(Ticket.case_number.in_(case_numbers))
                    .values(status="solved", solved_at=long_ago)
                )

        def closed_by(inst: Instance) -> set[str]:
            return {e["case"] for e in inst.named("ticket_closed")}

        leader = c.by_pid(c.leases()["leader"])
        other = pair[1] if leader is pair[0] else pair[0]
        solve(cases[:2])
        _wait("the leader closes two", lambda: closed_by(leader) >= set(cases[:2]), 15, pair)
        time.sleep(1.5)  # several close intervals of the other instance
        assert not closed_by(other), "a non-leader ran the leader's job"

        leader.proc.send_signal(signal.SIGKILL)
        leader.proc.wait()
        killed_at = time.time()
        took = _wait("the other becomes leader", lambda: other.taken("leader"), 3 * LEASE_SECONDS, [other])
        assert datetime.fromisoformat(took[-1]["timestamp"]).timestamp() - killed_at <= TAKEOVER_LIMIT
        solve(cases[2:])
        _wait("the new leader closes the rest", lambda: closed_by(other) >= set(cases[2:]), 15, [other])
        assert closed_by(leader).isdisjoint(closed_by(other))
        assert other.stop() == 0
    finally:
        c.close()
