"""Group commit: a backlog is recorded many mails per transaction, each mail in its own savepoint.
Through a real IMAP server (pymap), the poller's cycle, real SQLite and PostgreSQL; rows and IMAP
folders are read back.

- A step that raises for one mail in the middle of a batch quarantines that mail alone (stage and
  reason, raw bytes kept); every other mail of the batch has its case and acknowledgement, the
  mailbox's last UID covers the whole batch, and Processed/Quarantine hold the right mails.
- A database connection fault in the middle of a batch commits nothing of the batch and moves
  nothing; the next cycle processes every mail.
- Another instance recording the same mail between our check and our insert (PostgreSQL) makes
  that mail a duplicate, never a quarantine, and the rest of the batch commits.
"""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import event, func, select, text

from mailbridge.ingest.mail import InboundMail
from mailbridge.ingest.pipeline import InfrastructureError
from mailbridge.store.db import session_scope
from mailbridge.store.models import MailboxState, Message, Outbox, Quarantine, RawMessage, Ticket
from mailbridge.store.rawstore import raw_store
from tests.support import make_mail

POISON = "poison@kunde.example"


def _folders(imap) -> dict[str, list[str]]:
    """The Message-IDs in each folder (without <>)."""
    c = imap.client()
    try:
        out = {}
        for folder in ("INBOX", "Processed", "Quarantine"):
            c.select_folder(folder)
            uids = c.search("ALL")
            fetched = c.fetch(uids, ["BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"]) if uids else {}
            out[folder] = sorted(
                v[b"BODY[HEADER.FIELDS (MESSAGE-ID)]"].decode().split(":", 1)[1].strip().strip("<>")
                for v in fetched.values()
            )
        return out
    finally:
        c.logout()


def _mails(n: int, tag: str) -> list[tuple[str, bytes]]:
    ids = [f"{tag}-{i}@kunde.example" for i in range(n)]
    return [(mid, make_mail(subject=f"Anfrage {mid}", message_id=f"<{mid}>")) for mid in ids]


def _step_index(app, name: str) -> int:
    return next(i for i, s in enumerate(app.pipeline.steps) if s.name == name)


class Poisoned:
    """A test step placed after ``open_ticket``: raises for the one mail with Message-ID POISON,
    after the case of that mail was written (the savepoint must take it back)."""

    name = "poisoned_step"

    def __init__(self):
        self.raised = 0

    def __call__(self, mail):
        if mail.parsed is not None and mail.parsed.message_id == POISON:
            self.raised += 1
            raise RuntimeError("customer database on fire")


def _commits(app) -> list[int]:
    """Counts the transactions committed on the app's engine from now on."""
    counter = [0]
    event.listen(app.engine, "commit", lambda _conn: counter.__setitem__(0, counter[0] + 1))
    return counter


def test_a_poisoned_mail_in_a_batch_is_quarantined_alone_and_the_batch_commits(app, imap_server):
    mails = _mails(9, "batch")
    mails.insert(4, (POISON, make_mail(subject="Vergiftete Anfrage", message_id=f"<{POISON}>")))
    imap_server.append([raw for _, raw in mails])
    poisoned = Poisoned()
    app.pipeline.steps.insert(_step_index(app, "open_ticket") + 1, poisoned)
    # One batch for sure: a loaded test machine must not end it by ``commit_seconds``.
    app.pipeline.batch_seconds = 60.0
    commits = _commits(app)

    report = app.poller("main").cycle()

    assert report.fetched == 10 and report.dispositions == {"processed": 9, "quarantined": 1}
    assert poisoned.raised == 1  # a step's failure is not retried as a conflict
    # Group commit: the ten mails took one transaction (besides the cycle's state and health rows),
    # not one each.
    assert commits[0] <= 3, commits[0]
    good = [mid for mid, _ in mails if mid != POISON]
    with session_scope(app.session_factory) as s:
        tickets = {t.subject: t for t in s.scalars(select(Ticket))}
        assert set(tickets) == {f"Anfrage {mid}" for mid in good}
        acks = s.scalars(select(Outbox).where(Outbox.kind == "ack")).all()
        assert sorted(a.ticket_id for a in acks) == sorted(t.id for t in tickets.values())
        # Nothing of the failed attempt stands: no message, no case of the poisoned mail.
        assert s.scalars(select(Message).where(Message.message_id == POISON)).first() is None
        (q,) = s.scalars(select(Quarantine)).all()
        assert (q.stage, q.status, q.message_id) == ("poisoned_step", "open", POISON)
        assert "RuntimeError" in q.reason and "customer database on fire" in q.reason
        raw = s.get(RawMessage, q.raw_id)
        assert raw.disposition == "quarantined"
        assert b"Vergiftete Anfrage" in raw_store(app.settings.var_dir).get(raw.path)
        assert s.scalar(select(func.count()).select_from(RawMessage)) == 10
        state = s.scalars(select(MailboxState)).one()
        assert state.last_uid == max(r.uid for r in s.scalars(select(RawMessage)))
    assert _folders(imap_server) == {"INBOX": [], "Processed": sorted(good), "Quarantine": [POISON]}


class ConnectionFault:
    """A test step: the database connection breaks while the batch runs, at the mail with Message-ID
    ``at``, once. PostgreSQL: the server ends our session (``pg_terminate_backend``); SQLite: the
    engine fails a statement with an OperationalError, as a locked or vanished file does."""

    name = "connection_fault"

    def __init__(self, at: str):
        self.at = at
        self.fired = 0

    def __call__(self, mail):
        if self.fired or mail.parsed is None or mail.parsed.message_id != self.at:
            return
        self.fired += 1
        if mail.session.get_bind().dialect.name == "postgresql":
            mail.session.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))
            mail.session.execute(text("SELECT 1"))
        else:
            mail.session.execute(text("SELECT * FROM a_table_the_database_lost"))


def test_a_connection_fault_mid_batch_commits_nothing_and_the_next_cycle_does_all(app, imap_server):
    mails = _mails(8, "fault")
    imap_server.append([raw for _, raw in mails])
    fault = ConnectionFault(mails[5][0])
    app.pipeline.steps.insert(_step_index(app, "store_message") + 1, fault)
    app.pipeline.batch_seconds = 60.0  # one batch for sure (see above)
    poller = app.poller("main")

    with pytest.raises(InfrastructureError):
        poller.cycle()

    assert fault.fired == 1
    with session_scope(app.session_factory) as s:
        for model in (Ticket, RawMessage, Message, Outbox, Quarantine):
            assert s.scalar(select(func.count()).select_from(model)) == 0, model
        assert s.scalars(select(MailboxState.last_uid)).one() == 0
    assert _folders(imap_server) == {"INBOX": sorted(m for m, _ in mails), "Processed": [], "Quarantine": []}

    poller.close()  # as the poller does after a failure: a fresh connection
    report = poller.cycle()
    assert report.fetched == 8 and report.dispositions == {"processed": 8}
    with session_scope(app.session_factory) as s:
        assert s.scalar(select(func.count()).select_from(Ticket)) == 8
        assert s.scalar(select(func.count()).select_from(Outbox).where(Outbox.kind == "ack")) == 8
        assert s.scalar(select(func.count()).select_from(Quarantine)) == 0
    assert _folders(imap_server) == {"INBOX": [], "Processed": sorted(m for m, _ in mails), "Quarantine": []}
    poller.close()


class RecordedElsewhere:
    """A test step before ``record_raw``: another instance records this very mail (same bytes) and
    commits, after our deduplication looked and before our insert, once."""

    name = "recorded_elsewhere"

    def __init__(self, app, at: str):
        self.app, self.at, self.fired = app, at, 0

    def __call__(self, mail):
        if self.fired or mail.parsed is None or mail.parsed.message_id != self.at:
            return
        self.fired += 1
        with session_scope(self.app.session_factory) as other:
            other.add(RawMessage(**mail.raw_row(mail.disposition, mail.now) | {"account": "other", "folder": "INBOX"}))


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_mail_another_instance_recorded_meanwhile_ends_as_a_duplicate(app, imap_server):
    """PostgreSQL only: on SQLite the batch holds the write lock, no other writer gets in between."""
    mails = _mails(5, "race")
    imap_server.append([raw for _, raw in mails])
    race = RecordedElsewhere(app, mails[2][0])
    app.pipeline.steps.insert(_step_index(app, "record_raw"), race)

    report = app.poller("main").cycle()

    assert race.fired == 1
    assert report.dispositions == {"processed": 4, "duplicate": 1}
    with session_scope(app.session_factory) as s:
        assert s.scalar(select(func.count()).select_from(Quarantine)) == 0
        assert s.scalar(select(func.count()).select_from(Ticket)) == 4
        ours = s.scalars(select(RawMessage.uid).where(RawMessage.account == "main")).all()
        assert len(ours) == 4
        assert s.scalars(select(MailboxState.last_uid).where(MailboxState.account == "main")).one() == max(ours)
    assert _folders(imap_server) == {"INBOX": [], "Processed": sorted(m for m, _ in mails), "Quarantine": []}


class HoldOpen:
    """A test step after ``deduplicate``: the first mail with Message-ID ``mid`` keeps its batch's
    transaction open until the other copy has been started (as a long batch would)."""

    name = "hold_open"

    def __init__(self, mid: str):
        self.mid, self.inside, self.release = mid, threading.Event(), threading.Event()

    def __call__(self, mail):
        if mail.parsed is not None and mail.parsed.message_id == self.mid and not self.inside.is_set():
            self.inside.set()
            self.release.wait(10)


def test_two_copies_of_a_mail_in_batches_open_at_once_make_one_case(app, imap_server, db_url):
    """The same mail delivered to two support addresses (other bytes, the same Message-ID), each copy
    in a batch of its own that is open at the same time (two pollers, two instances): one case, one
    acknowledgement; the other copy is a duplicate. On PostgreSQL the second copy waits for the
    first's batch (``repositories.hold_message_id``); on SQLite the write lock serialises them."""
    mid = "cc-both@kunde.example"
    first = make_mail(subject="Lizenzserver", message_id=f"<{mid}>", to="support@vendor.example")
    second = make_mail(subject="Lizenzserver", message_id=f"<{mid}>", to="hotline@vendor.example")
    assert first != second
    hold = HoldOpen(mid)
    app.pipeline.steps.insert(_step_index(app, "deduplicate") + 1, hold)
    mails = [InboundMail("main", "INBOX", 1, uid, raw) for uid, raw in ((1, first), (2, second))]
    prepared = list(app.preparer.prepare(mails))
    results: dict[int, list] = {}

    def run(mail):
        results[mail.uid] = [d for batch in app.pipeline.batches([mail]) for _, d in batch]

    a = threading.Thread(target=run, args=(prepared[0],))
    a.start()
    assert hold.inside.wait(10)
    b = threading.Thread(target=run, args=(prepared[1],))
    b.start()
    b.join(1.0)  # the second copy waits for the first (PostgreSQL: the Message-ID; SQLite: the lock)
    hold.release.set()
    a.join(20)
    b.join(20)
    assert sorted(d.value for ds in results.values() for d in ds) == ["duplicate", "processed"]
    with session_scope(app.session_factory) as s:
        assert s.scalar(select(func.count()).select_from(Ticket)) == 1
        assert s.scalar(select(func.count()).select_from(Outbox).where(Outbox.kind == "ack")) == 1


def test_no_transaction_is_open_while_the_next_mail_of_a_batch_is_prepared(app, imap_server, db_url):
    """A batch takes its mails from the preparer before its transaction begins: while a mail is
    being parsed (here: while the generator that hands the mails over runs) another writer gets in at
    once, so the sender and the cluster heartbeat never wait for a parse. (SQLite: the write lock.)"""
    if not db_url.startswith("sqlite"):
        pytest.skip("the write lock that other writers would wait for is SQLite's")
    import sqlite3

    path = app.engine.url.database
    mails = [InboundMail("main", "INBOX", 1, uid, raw) for uid, (_, raw) in enumerate(_mails(6, "lock"), start=1)]
    prepared = list(app.preparer.prepare(mails))
    blocked: list[int] = []

    def handed_over():
        for mail in prepared:
            other = sqlite3.connect(path, timeout=0)
            try:
                other.execute("BEGIN IMMEDIATE")  # fails at once while a batch holds the write lock
                other.execute("ROLLBACK")
            except sqlite3.OperationalError:
                blocked.append(mail.uid)
            finally:
                other.close()
            yield mail

    done = [d for batch in app.pipeline.batches(handed_over()) for _, d in batch]
    assert [d.value for d in done] == ["processed"] * 6
    assert blocked == []
