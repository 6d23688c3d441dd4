"""Faults the service survives: the IMAP server restarts mid-batch, the SMTP server is away for a
while, the database is locked (SQLite) or unreachable (PostgreSQL, through a TCP proxy that is cut),
and the watched mailbox is deleted and recreated with a new UIDVALIDITY.

Everything is real: ``mailbridge run`` is a subprocess, pymap a subprocess, aiosmtpd a server on
loopback, the database SQLite or PostgreSQL. The tests only read the database (counts, to decide when
to inject a fault and when the service is done); the one exception is the SQLite lock of
:func:`test_database_locked_or_unreachable_for_seconds`, which is the fault itself. The shared
PostgreSQL server is never stopped: its outage is a proxy between mailbridge and it going away.

At the end of every test each mail has exactly one ticket, each ticket exactly one acknowledgement
that the SMTP server received (counted by Message-ID, duplicates included), and every raw mail is
stored.
"""

from __future__ import annotations

import contextlib
import select
import socket
import sqlite3
import threading
import time
from collections import Counter

import pytest
from sqlalchemy import select as sql_select
from sqlalchemy.engine import make_url

from mailbridge.embedded import LOOPBACK, PymapServer, free_port
from mailbridge.settings import load_settings
from mailbridge.store.models import Outbox
from tests.support import IMAP_PASSWORD
from tests.support.faults import all_sent, check_exactly_once, counts, make_config, make_mails
from tests.support.service import FaultService, start_services
from tests.support.service import append as append
from tests.support.service import message_ids as folder_message_ids

# The service creates the schema at its first start, as in production: an empty database.
pytestmark = [pytest.mark.slow, pytest.mark.empty_database]

POLL_SECONDS = 0.02
# How long each fault lasts.
OUTAGE_SECONDS = 4.0
# How long the slow SMTP server of the database test takes per mail.
SLOW_SMTP_SECONDS = 0.05


@pytest.fixture
def service(imap_env, tmp_path):
    """Start services with ``service(config_path)``; any still running at the end are killed."""
    yield from start_services(FaultService, imap_env, tmp_path / "service.log")


# ------------------------------------------------------------------------------ a. IMAP restart


@pytest.fixture
def maildir_imap(tmp_path):
    """pymap with its Maildir backend: a restart keeps the mailboxes, their UIDs and UIDVALIDITY."""
    server = PymapServer(user="support", password=IMAP_PASSWORD, maildir=tmp_path / "maildir")
    server.start()
    yield server
    server.stop()


def test_imap_server_restarts_mid_batch(tmp_path, db_url, maildir_imap, smtp_sink, service, db):
    """The IMAP server goes away while a batch of 150 mails is being ingested and comes back on the
    same port with the same mailboxes: the service backs off, reconnects, moves what it had
    committed but not yet moved, processes the rest; every mail has exactly one ticket and one
    acknowledgement, and every mail is in Processed exactly once."""
    n = 150
    mails = make_mails(n, "imaprestart")
    mids = [mid for mid, _ in mails]
    append(maildir_imap, [raw for _, raw in mails])
    cfg = make_config(tmp_path, imap=maildir_imap, smtp_port=smtp_sink.port, db_url=db_url)
    settings = load_settings(cfg)
    svc = service(cfg)

    svc.wait("the first tickets", lambda: counts(db)[0] >= 15)
    t0 = time.monotonic()
    maildir_imap.stop()
    stopped_after = time.monotonic() - t0
    at_stop = counts(db)[0]
    svc.stay_alive(OUTAGE_SECONDS)
    maildir_imap.start()
    assert svc.named("account_backoff"), "the outage went unnoticed"
    svc.wait("all mails acknowledged", lambda: all_sent(db, n))
    assert svc.stop() == 0

    backoffs = svc.named("account_backoff")
    print(
        f"\n[{db.dialect.name}] IMAP server stopped ({stopped_after:.1f}s) at {at_stop}/{n} tickets; "
        f"{len(backoffs)} backoffs, {len(svc.named('imap_connected'))} connections, "
        f"{len(svc.named('imap_leftovers_moved'))} leftover moves"
    )
    assert at_stop < n, "the restart did not land in the middle of the batch"
    assert len(svc.named("imap_connected")) >= 2
    assert not svc.named("imap_uidvalidity_changed"), "the Maildir backend keeps UIDVALIDITY across restarts"
    check_exactly_once(db, smtp_sink, settings, mids)
    assert folder_message_ids(maildir_imap, "INBOX") == Counter()
    assert folder_message_ids(maildir_imap, "Processed") == Counter(mids)


# ------------------------------------------------------------------------------ b. SMTP away


def test_smtp_server_away_then_back_sends_everything_once_in_order(
    tmp_path, db_url, imap_server, smtp_sink, service, db
):
    """While the SMTP server is down, acknowledgements stay queued (no attempt is used up, the sender
    keeps probing); when it is back they all go out once each, each case's in the order they were queued."""
    cfg = make_config(tmp_path, imap=imap_server, smtp_port=smtp_sink.port, db_url=db_url)
    settings = load_settings(cfg)
    before = make_mails(5, "smtp-before")
    during = make_mails(30, "smtp-during", start=5)
    svc = service(cfg)
    append(imap_server, [raw for _, raw in before])
    svc.wait("the first acknowledgements", lambda: all_sent(db, 5))

    smtp_sink.stop()
    down_at = time.monotonic()
    append(imap_server, [raw for _, raw in during])
    svc.wait("the acknowledgements to be queued", lambda: counts(db) == (35, {"sent": 5, "queued": 30}))

    def still_queued():
        _, outbox = counts(db)
        assert outbox.get("sent") == 5, f"sent while the server was down: {outbox}"

    svc.stay_alive(OUTAGE_SECONDS, still_queued)
    probes = svc.named("smtp_unreachable")
    with db.connect() as c:
        waiting = c.execute(sql_select(Outbox.status, Outbox.attempts).where(Outbox.status != "sent")).all()
    assert {(w.status, w.attempts) for w in waiting} == {("queued", 0)}, "an unreachable server used up attempts"
    assert len(probes) >= 2, "the sender did not retry while the server was away"

    smtp_sink.start()
    down_for = time.monotonic() - down_at
    back_at = time.monotonic()
    svc.wait("all acknowledgements sent", lambda: all_sent(db, 35))
    print(
        f"\n[{db.dialect.name}] SMTP down {down_for:.1f}s, {len(probes)} probes; "
        f"all 30 sent {time.monotonic() - back_at:.1f}s after it came back"
    )
    assert svc.stop() == 0

    got, outbox = check_exactly_once(db, smtp_sink, settings, [mid for mid, _ in before + during])
    assert sum(got.values()) == 35
    # The order kept with several SMTP connections ([outbox] connections): a case's mails in the
    # order they were queued (outbound/sender.py); different cases' mails go side by side.
    case_of = {o.message_id: o.ticket_id for o in outbox}
    queued_order = [(o.ticket_id, o.message_id) for o in outbox[5:]]
    received_order = [
        (case_of[mid], mid) for mid in (r.message["Message-ID"].strip("<>") for r in smtp_sink.received[5:])
    ]
    assert sorted(received_order, key=lambda x: x[0]) == sorted(queued_order, key=lambda x: x[0]), (
        "a case's mails out of order"
    )


# ------------------------------------------------------------------------------ c. database


class TcpProxy:
    """A TCP relay from a loopback port to ``target``. :meth:`cut` drops every relayed connection
    (RST) and stops listening, so new connections are refused, until :meth:`restore`."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.port = free_port()
        self._lock = threading.Lock()
        self._socks: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._closed = threading.Event()
        self.connections = 0
        self._listen()
        self._thread = threading.Thread(target=self._accept_loop, name="tcp-proxy", daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((LOOPBACK, self.port))
        s.listen(64)
        with self._lock:
            self._listener = s

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            with self._lock:
                listener = self._listener
            if listener is None:
                time.sleep(0.05)
                continue
            try:
                if not select.select([listener], [], [], 0.1)[0]:
                    continue
                client, _ = listener.accept()
            except (OSError, ValueError):  # closed by cut() under us
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._socks |= {client, upstream}
                self.connections += 1
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                self._drop(s)

    def _drop(self, s: socket.socket) -> None:
        with self._lock:
            self._socks.discard(s)
        with contextlib.suppress(OSError):
            # Linger 0: close with RST, as a broken link or a crashed server would look.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            s.close()

    def cut(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            socks = list(self._socks)
        if listener is not None:
            listener.close()
        for s in socks:
            self._drop(s)

    def restore(self) -> None:
        self._listen()

    def close(self) -> None:
        self._closed.set()
        self.cut()
        self._thread.join(5)


def test_database_locked_or_unreachable_for_seconds(tmp_path, db_url, imap_server, smtp_sink, service, db):
    """SQLite: another connection holds an exclusive lock for a few seconds while mails are being
    ingested; PostgreSQL: the link to the server breaks for a few seconds (a proxy drops every
    connection and refuses new ones). The service keeps running, retries, and when the database is
    back every mail has exactly one ticket and one acknowledgement; nothing is lost or doubled.
    A slow SMTP server makes the fault land while acknowledgements are being sent, too."""
    n = 120
    mails = make_mails(n, "dbfault")
    proxy = None
    service_url = db_url
    if db.dialect.name == "postgresql":
        u = make_url(db_url)
        proxy = TcpProxy((u.host or LOOPBACK, u.port or 5432))
        service_url = u.set(host=LOOPBACK, port=proxy.port).render_as_string(hide_password=False)
    cfg = make_config(tmp_path, imap=imap_server, smtp_port=smtp_sink.port, db_url=service_url)
    settings = load_settings(cfg)
    append(imap_server, [raw for _, raw in mails])
    # A slow SMTP server keeps the sender busy, so the fault also lands in the middle of sending:
    # between the server's answer and the commit that records it, too.
    smtp_sink.set_delay(SLOW_SMTP_SECONDS)

    def sending():
        tickets, outbox = counts(db)
        return tickets >= 10 and outbox.get("sent", 0) >= 3

    try:
        svc = service(cfg)
        svc.wait("the first acknowledgements", sending)
        if proxy is None:
            path = make_url(db_url).database
            holder = sqlite3.connect(path, timeout=30, isolation_level=None)
            try:
                holder.execute("BEGIN EXCLUSIVE")
                at_fault = counts(db)
                svc.stay_alive(OUTAGE_SECONDS)
                # The lock really held: nothing was committed meanwhile (WAL readers still read).
                assert counts(db) == at_fault
            finally:
                holder.execute("COMMIT")
                holder.close()
        else:
            proxy.cut()
            at_fault = counts(db)
            svc.stay_alive(OUTAGE_SECONDS)
            proxy.restore()
        svc.wait("all mails acknowledged", lambda: all_sent(db, n))
        assert svc.stop() == 0
    finally:
        if proxy is not None:
            proxy.close()

    trouble = [
        e
        for e in svc.events()
        if e.get("event") in ("account_backoff", "database_unavailable") or e.get("level") in ("error", "exception")
    ]
    print(
        f"\n[{db.dialect.name}] fault at {at_fault[0]}/{n} tickets, outbox {at_fault[1]}; "
        f"{len(trouble)} error/backoff log events, {len(svc.named('outbox_record_retry'))} outcome records retried"
        + (f"; {proxy.connections} proxied connections" if proxy else "")
    )
    assert at_fault[0] < n or at_fault[1].get("sent", 0) < n, "the fault did not land while there was work"
    if proxy is not None:
        assert trouble, "the outage went unnoticed"
    # No delivery twice; a row whose 'sending' mark was committed as the link broke is re-sent once
    # with an unknown-outcome event, which is allowed here (it still arrives exactly once).
    check_exactly_once(db, smtp_sink, settings, [mid for mid, _ in mails], unknown_outcomes_allowed=True)
    assert folder_message_ids(imap_server, "Processed") == Counter(mid for mid, _ in mails)


# ------------------------------------------------------------------------------ d. new UIDVALIDITY


def test_mailbox_recreated_with_new_uidvalidity(tmp_path, db_url, imap_server, smtp_sink, service, db):
    """The watched folder is deleted and created again (new UIDVALIDITY) with the same, already
    processed mails in it, plus new ones, while the service runs: the old mails are recognised as
    duplicates (no second ticket, no second acknowledgement) and moved away; the new ones become
    tickets."""
    folder = "Support"
    c = imap_server.client()
    try:
        c.create_folder(folder)
    finally:
        c.logout()
    cfg = make_config(
        tmp_path,
        imap=imap_server,
        smtp_port=smtp_sink.port,
        db_url=db_url,
        account_extra=f'folder = "{folder}"',
    )
    settings = load_settings(cfg)
    old = make_mails(20, "uidv-old")
    new = make_mails(5, "uidv-new", start=20)
    append(imap_server, [raw for _, raw in old], folder)
    svc = service(cfg)
    svc.wait("the first acknowledgements", lambda: all_sent(db, 20))
    svc.wait("the folder to be emptied", lambda: not folder_message_ids(imap_server, folder))
    [connected] = svc.named("imap_connected")

    c = imap_server.client()
    try:
        c.delete_folder(folder)
        c.create_folder(folder)
        new_validity = c.select_folder(folder)[b"UIDVALIDITY"]
        c.multiappend(folder, [raw for _, raw in old + new])
    finally:
        c.logout()
    assert new_validity != connected["uidvalidity"]

    svc.wait("the new mails acknowledged", lambda: all_sent(db, 25))
    svc.wait("the folder to be emptied again", lambda: not folder_message_ids(imap_server, folder))
    svc.stay_alive(3)  # time for a second ticket or acknowledgement to show up, if one were coming
    assert svc.stop() == 0

    [changed] = svc.named("imap_uidvalidity_changed")
    assert changed["new"] == new_validity
    check_exactly_once(db, smtp_sink, settings, [mid for mid, _ in old + new])
    assert folder_message_ids(imap_server, "Processed") == Counter(mid for mid, _ in old + old + new)
    dups = svc.named("mail_duplicate")
    print(f"\n[{db.dialect.name}] UIDVALIDITY {connected['uidvalidity']} -> {new_validity}; {len(dups)} duplicates")
    assert len(dups) == len(old)
