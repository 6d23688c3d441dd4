"""The per-folder IMAP state against a real server: UIDVALIDITY changes, a crash between the commit
and the MOVE, and a server that goes away and comes back."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select

from mailbridge.ingest.fetcher import FetchError
from mailbridge.store import repositories as repo
from mailbridge.store.db import session_scope
from mailbridge.store.models import RawMessage, Ticket
from tests.support import make_mail


def _count(app, model) -> int:
    with session_scope(app.session_factory) as s:
        return s.scalar(select(func.count()).select_from(model))


def _folders(imap):
    c = imap.client()
    try:
        return {f: c.select_folder(f)[b"EXISTS"] for f in ("INBOX", "Processed", "Quarantine")}
    finally:
        c.logout()


@pytest.mark.own_imap_server
def test_new_uidvalidity_processes_nothing_twice(app, imap_server):
    """The mailbox is recreated (new UIDVALIDITY) with the same mails in it plus a new one: only the
    new one becomes a ticket, the others are recognised as duplicates and moved away."""
    old = [make_mail(message_id=f"<m{i}@kunde.example>", subject=f"Anfrage {i}") for i in range(3)]
    imap_server.append(old)
    poller = app.poller("main")
    poller.cycle()
    first_validity = poller.mailbox.uidvalidity
    poller.close()

    imap_server.restart()  # pymap's in-memory mailbox is gone; a new one has a new UIDVALIDITY
    imap_server.append([*old, make_mail(message_id="<new@kunde.example>", subject="Neue Anfrage")])
    poller = app.poller("main")
    report = poller.cycle()
    assert poller.mailbox.uidvalidity != first_validity
    assert report.dispositions == {"duplicate": 3, "processed": 1}
    assert _count(app, Ticket) == 4
    with session_scope(app.session_factory) as s:
        st = repo.mailbox_state(s, "main", "INBOX")
        assert st.uidvalidity == poller.mailbox.uidvalidity and st.last_uid > 0
    assert _folders(imap_server)["INBOX"] == 0


def test_crash_between_commit_and_move_moves_leftovers_by_their_disposition(app, imap_server, monkeypatch):
    """When the MOVE after the commit fails (the process died, the link broke), the next cycle moves
    the already-recorded mails where their disposition says, without processing them again."""
    broken = (
        b"From: a@kunde.example\r\nTo: support@vendor.example\r\nSubject: x\r\nMessage-ID: <bad@kunde.example>\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed\r\n\r\nno boundary\r\n"
    )
    imap_server.append([make_mail(message_id="<a@kunde.example>"), broken, make_mail(message_id="<b@kunde.example>")])
    poller = app.poller("main")

    def fail(*a, **k):
        raise FetchError("connection reset during MOVE")

    monkeypatch.setattr(poller.mailbox, "move", fail)
    with pytest.raises(FetchError):
        poller.cycle()
    assert _count(app, Ticket) == 2 and _count(app, RawMessage) == 3
    assert _folders(imap_server) == {"INBOX": 3, "Processed": 0, "Quarantine": 0}
    monkeypatch.undo()
    poller.close()

    poller = app.poller("main")
    report = poller.cycle()
    assert report.leftovers_moved == 3 and report.fetched == 0
    assert _count(app, Ticket) == 2 and _count(app, RawMessage) == 3
    assert _folders(imap_server) == {"INBOX": 0, "Processed": 2, "Quarantine": 1}


@pytest.mark.own_imap_server
def test_imap_server_away_backs_off_and_recovers(app, imap_server):
    """A dead IMAP server puts the account into backoff (no exception escapes); when the server is
    back, the next tick after the backoff processes the mail."""
    poller = app.poller("main")
    stop = threading.Event()
    imap_server.stop()
    poller.tick(window=0.1, stop=stop)
    assert poller.failures == 1 and poller.retry_at > 0
    poller.tick(window=0.1, stop=stop)  # inside the backoff: does nothing
    assert poller.failures == 1

    imap_server.start()
    imap_server.append([make_mail(message_id="<after@kunde.example>")])
    poller.retry_at = 0  # the backoff has run out
    poller.tick(window=0.1, stop=stop)
    assert poller.failures == 0
    assert _count(app, Ticket) == 1


def test_leftover_duplicate_is_moved_too(app, imap_server, monkeypatch):
    """A duplicate leaves no raw row of its own; after a failed MOVE it is still moved to Processed."""
    mail = make_mail(message_id="<dup@kunde.example>")
    imap_server.append([mail])
    poller = app.poller("main")
    poller.cycle()
    imap_server.append([b"Received: from mx2.kunde.example\r\n" + mail])

    def fail(*a, **k):
        raise FetchError("connection reset during MOVE")

    monkeypatch.setattr(poller.mailbox, "move", fail)
    with pytest.raises(FetchError):
        poller.cycle()
    monkeypatch.undo()
    poller.close()
    report = app.poller("main").cycle()
    assert report.leftovers_moved == 1
    assert _folders(imap_server) == {"INBOX": 0, "Processed": 2, "Quarantine": 0}
    assert _count(app, Ticket) == 1
