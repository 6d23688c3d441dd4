"""The outbox sender against a real SMTP server (aiosmtpd): retries, permanent failures, a server
that is away, ordering, concurrent senders and leases; several connections of one sender at once
(seen by the server: sessions open and in DATA together), a refusal or a dropped connection among
them, a stop. Time is injected, never slept."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy

import pytest
from sqlalchemy import select

from mailbridge.app import App
from mailbridge.embedded import LOOPBACK, free_port
from mailbridge.outbound.compose import compose
from mailbridge.outbound.outbox import enqueue
from mailbridge.store import repositories as repo
from mailbridge.store.db import session_scope
from mailbridge.store.models import Event, Outbox, Ticket


class Clock:
    def __init__(self):
        self.now = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw) -> None:
        self.now += timedelta(**kw)


def _app(settings, clock) -> App:
    a = App(settings, clock=clock)
    a.upgrade_db()
    return a


def _queue(app, n: int, clock) -> list[int]:
    """Queue ``n`` mails on one ticket; return the outbox ids in order."""
    ids = []
    with session_scope(app.session_factory) as s:
        t = Ticket(
            case_number="C1000002",
            serial=100000,
            queue="support",
            status="new",
            subject="s",
            requester_email="kunde@kunde.example",
            requester_name="",
            language="en",
            created_at=clock(),
            updated_at=clock(),
        )
        s.add(t)
        s.flush()
        for i in range(n):
            out = compose(
                from_name="Support",
                from_addr="support@vendor.example",
                to=[("Kunde", f"kunde{i}@kunde.example")],
                subject=f"mail {i}",
                text=f"text {i}",
                html=None,
                date=clock(),
            )
            ids.append(enqueue(s, out, kind="test", dedup_key=f"test:{i}", now=clock(), ticket_id=t.id))
    return ids


def _rows(app) -> dict[int, Outbox]:
    with session_scope(app.session_factory) as s:
        return {r.id: r for r in s.scalars(select(Outbox))}


def _events(app, kind: str) -> list[Event]:
    with session_scope(app.session_factory) as s:
        return list(s.scalars(select(Event).where(Event.kind == kind)))


def test_temporary_failure_is_retried_with_backoff(settings, smtp_sink):
    """A 451 keeps the mail queued with a later attempt time; once due and accepted, it is sent once."""
    clock = Clock()
    app = _app(settings, clock)
    [oid] = _queue(app, 1, clock)
    smtp_sink.set_reply("451 4.3.0 try again later")
    r = asyncio.run(app.sender().run_once())
    assert (r.sent, r.retry) == (0, 1)
    row = _rows(app)[oid]
    assert (row.status, row.attempts) == ("queued", 1) and "451" in row.last_error
    assert row.next_attempt_at > clock()
    smtp_sink.set_reply(None)
    assert asyncio.run(app.sender().run_once()).sent == 0  # not due yet
    clock.advance(seconds=settings.outbox.max_backoff_seconds * 2)
    assert asyncio.run(app.sender().run_once()).sent == 1
    assert _rows(app)[oid].status == "sent"
    assert len(smtp_sink.received) == 1


def test_permanent_failure_is_recorded_and_not_retried(settings, smtp_sink):
    """A 550 marks the mail failed with the server's answer, on the ticket's history too."""
    clock = Clock()
    app = _app(settings, clock)
    [oid] = _queue(app, 1, clock)
    smtp_sink.set_reply("550 5.1.1 mailbox unavailable")
    r = asyncio.run(app.sender().run_once())
    assert r.failed == 1
    row = _rows(app)[oid]
    assert row.status == "failed" and "550" in row.last_error
    assert [e.detail["outbox_id"] for e in _events(app, "mail_failed")] == [oid]
    clock.advance(days=1)
    smtp_sink.set_reply(None)
    assert asyncio.run(app.sender().run_once()).sent == 0
    assert smtp_sink.received == []


def test_server_away_keeps_mail_queued_then_sends_in_order(settings, smtp_sink):
    """With the SMTP server down nothing is lost or counted as an attempt; when it is back the
    mails go out in the order they were queued, each once."""
    clock = Clock()
    app = _app(settings, clock)
    ids = _queue(app, 5, clock)
    smtp_sink.stop()
    r = asyncio.run(app.sender().run_once())
    assert r.sent == 0 and r.errors
    assert {(x.status, x.attempts) for x in _rows(app).values()} == {("queued", 0)}
    smtp_sink.start()
    assert asyncio.run(app.sender().run_once()).sent == 5
    got = [m.message["Subject"] for m in smtp_sink.received]
    assert got == [f"mail {i}" for i in range(5)]
    assert all(r.status == "sent" for r in _rows(app).values())
    assert sorted(ids) == ids


def test_two_senders_at_once_never_send_a_row_twice(settings, smtp_sink):
    """Two senders draining concurrently (as two instances would) deliver every row exactly once."""
    clock = Clock()
    a1, a2 = _app(settings, clock), _app(settings, clock)
    _queue(a1, 40, clock)

    async def both():
        s1, s2 = a1.sender(), a2.sender()
        s1.cfg = s2.cfg = settings.outbox.model_copy(update={"batch_size": 7})
        while True:
            r1, r2 = await asyncio.gather(s1.run_once(), s2.run_once())
            if not (r1.sent or r2.sent):
                return

    asyncio.run(both())
    subjects = [m.message["Subject"] for m in smtp_sink.received]
    assert sorted(subjects) == sorted(f"mail {i}" for i in range(40))
    assert all(r.status == "sent" for r in _rows(a1).values())


def test_a_claim_of_a_dead_sender_is_taken_over_after_its_lease(settings, smtp_sink):
    """Rows claimed by a sender that died are sent after the lease; only the one that died in its
    SMTP exchange ('sending') gets a history entry saying its first attempt's outcome is unknown."""
    clock = Clock()
    app = _app(settings, clock)
    in_exchange, only_claimed = _queue(app, 2, clock)
    with session_scope(app.session_factory) as s:
        claimed = repo.claim_outbox(s, clock(), timedelta(seconds=settings.outbox.lease_seconds), 10, False)
    assert [c.id for c in claimed] == [in_exchange, only_claimed]
    with session_scope(app.session_factory) as s:
        assert repo.outbox_mark_sending(s, in_exchange)
    assert asyncio.run(app.sender().run_once()).sent == 0  # still leased
    clock.advance(seconds=settings.outbox.lease_seconds + 1)
    assert asyncio.run(app.sender().run_once()).sent == 2
    assert [e.detail["outbox_id"] for e in _events(app, "mail_resent_unknown_outcome")] == [in_exchange]
    assert len(smtp_sink.received) == 2


def test_a_stop_between_mails_gives_the_rest_of_the_batch_back(settings, smtp_sink):
    """A sender told to stop finishes the mail it is on and returns the rest of its claim at once
    (not after a lease), so a restart sends them without delay."""
    clock = Clock()
    app = _app(settings, clock)
    _queue(app, 5, clock)
    sender = app.sender(should_stop=lambda: len(smtp_sink.received) >= 2)
    r = asyncio.run(sender.run_once())
    assert r.sent == 2
    rows = _rows(app)
    assert sorted(x.status for x in rows.values()) == ["queued", "queued", "queued", "sent", "sent"]
    assert all(x.claimed_until is None for x in rows.values() if x.status == "queued")
    assert asyncio.run(app.sender().run_once()).sent == 3


# ---------------------------------------------------------------- several connections at once


class GateHandler:
    """aiosmtpd handler that sees the sender's connections: how many are open at once, how many
    exchanges are in DATA at once, which connection carried which mail. ``hold``: every DATA waits
    until that many exchanges are in DATA together (so the test does not depend on timing: a
    sender with fewer connections leaves them waiting, and the maximum shows it); ``gate``: a DATA
    then also waits until the test sets it. ``replies``: a subject answered with that reply instead
    of 250; ``drop``: subjects whose connection is closed in DATA (once each, nothing stored)."""

    def __init__(self, hold: int = 0):
        self.lock = threading.Lock()
        self.received: list[tuple[int, str, str]] = []  # (connection, Subject, Message-ID)
        self.open = self.max_open = self.opened_total = 0
        self.in_data = self.max_in_data = 0
        self.hold = hold
        self.all_in = threading.Event()
        self.gate: threading.Event | None = None
        self.replies: dict[str, str] = {}
        self.drop: set[str] = set()

    def opened(self) -> None:
        with self.lock:
            self.open += 1
            self.opened_total += 1
            self.max_open = max(self.max_open, self.open)

    def closed(self) -> None:
        with self.lock:
            self.open -= 1

    async def handle_DATA(self, server, session, envelope):
        msg = message_from_bytes(envelope.content, policy=policy.default)
        subject, mid = str(msg["Subject"]), str(msg["Message-ID"]).strip("<>")
        with self.lock:
            self.in_data += 1
            self.max_in_data = max(self.max_in_data, self.in_data)
            if self.in_data >= self.hold:
                self.all_in.set()
        try:
            if self.hold:
                await asyncio.to_thread(self.all_in.wait, 30)
            if self.gate is not None:
                await asyncio.to_thread(self.gate.wait, 30)
            if subject in self.drop:
                self.drop.discard(subject)
                server.transport.close()
                return "421 4.4.2 gone"
            if subject in self.replies:
                return self.replies[subject]
            with self.lock:
                self.received.append((id(server), subject, mid))
            return "250 2.0.0 OK: queued"
        finally:
            with self.lock:
                self.in_data -= 1

    @property
    def subjects(self) -> list[str]:
        with self.lock:
            return [s for _, s, _ in self.received]


@pytest.fixture
def gate_smtp():
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import SMTP

    handler = GateHandler()

    class CountingSMTP(SMTP):
        def connection_made(self, transport):
            super().connection_made(transport)
            handler.opened()

        def connection_lost(self, error):
            handler.closed()
            super().connection_lost(error)

    class CountingController(Controller):
        def factory(self):
            return CountingSMTP(self.handler, **self.SMTP_kwargs)

    ctl = CountingController(handler, hostname=LOOPBACK, port=free_port())
    ctl.start()
    deadline = time.monotonic() + 10
    while handler.open and time.monotonic() < deadline:  # the controller's own readiness probe
        time.sleep(0.01)
    handler.max_open = handler.opened_total = 0
    handler.port = ctl.port
    yield handler
    if handler.gate is not None:
        handler.gate.set()
    ctl.stop()


def _app_on(settings, clock, smtp: GateHandler, connections: int = 4) -> App:
    settings = settings.model_copy(
        update={
            "smtp": settings.smtp.model_copy(update={"port": smtp.port}),
            "outbox": settings.outbox.model_copy(update={"connections": connections}),
        }
    )
    return _app(settings, clock)


def _queue_cases(app, cases: int, clock, per_case: int = 1) -> list[int]:
    """``per_case`` mails on each of ``cases`` tickets, queued interleaved (case 0 mail 0, case 1
    mail 0, …); subjects ``case <c>`` (``case <c> mail <m>`` with several per case)."""
    ids = []
    with session_scope(app.session_factory) as s:
        tickets = []
        for c in range(cases):
            t = Ticket(
                case_number=f"C{2000000 + c}",
                serial=200000 + c,
                queue="support",
                status="new",
                subject=f"case {c}",
                requester_email=f"kunde{c}@kunde.example",
                requester_name="",
                language="en",
                created_at=clock(),
                updated_at=clock(),
            )
            s.add(t)
            tickets.append(t)
        s.flush()
        for m in range(per_case):
            for c, t in enumerate(tickets):
                subject = f"case {c}" if per_case == 1 else f"case {c} mail {m}"
                out = compose(
                    from_name="Support",
                    from_addr="support@vendor.example",
                    to=[("Kunde", f"kunde{c}@kunde.example")],
                    subject=subject,
                    text=f"text {c} {m}",
                    html=None,
                    date=clock(),
                )
                ids.append(enqueue(s, out, kind="test", dedup_key=f"cases:{c}:{m}", now=clock(), ticket_id=t.id))
    return ids


def _by_subject(app) -> dict[str, Outbox]:
    with session_scope(app.session_factory) as s:
        return {_subject(r): r for r in s.scalars(select(Outbox))}


def _subject(row: Outbox) -> str:
    return str(message_from_bytes(row.raw, policy=policy.default)["Subject"])


def _once_each(app, smtp: GateHandler) -> None:
    """Every row sent, and received by the server exactly once."""
    rows = _rows(app).values()
    assert {r.status for r in rows} == {"sent"}
    got = Counter(mid for _, _, mid in smtp.received)
    assert got == Counter(r.message_id for r in rows)


def test_four_connections_send_side_by_side_and_every_row_once(settings, gate_smtp):
    """With ``connections = 4`` four SMTP sessions are open and in DATA at once, each carries
    several mails, and every row is sent exactly once."""
    clock = Clock()
    app = _app_on(settings, clock, gate_smtp, connections=4)
    _queue_cases(app, 20, clock)
    gate_smtp.hold = 4
    r = asyncio.run(app.sender().run_once())
    assert (r.sent, r.retry, r.failed, r.errors) == (20, 0, 0, [])
    assert gate_smtp.max_in_data == 4 and gate_smtp.max_open == 4
    per_connection = Counter(conn for conn, _, _ in gate_smtp.received)
    assert len(per_connection) == 4 and sum(per_connection.values()) == 20
    _once_each(app, gate_smtp)
    assert {r.attempts for r in _rows(app).values()} == {1}
    assert len(_events(app, "mail_sent")) == 20 and not _events(app, "mail_resent_unknown_outcome")


def test_only_the_rows_in_an_exchange_are_sending(settings, gate_smtp):
    """While four exchanges wait for the server's answer exactly their four rows are ``sending``
    (what a crash would leave in doubt: at most ``connections``); the rest of the claim is only
    ``claimed``. Then everything goes out once."""
    clock = Clock()
    app = _app_on(settings, clock, gate_smtp, connections=4)
    _queue_cases(app, 12, clock)
    gate_smtp.hold, gate_smtp.gate = 4, threading.Event()
    done: list = []
    worker = threading.Thread(target=lambda: done.append(asyncio.run(app.sender().run_once())))
    worker.start()
    try:
        assert gate_smtp.all_in.wait(30)
        assert Counter(r.status for r in _rows(app).values()) == {"sending": 4, "claimed": 8}
    finally:
        gate_smtp.gate.set()
        worker.join(60)
    assert done[0].sent == 12
    _once_each(app, gate_smtp)


def test_a_4xx_on_one_connection_retries_only_that_row(settings, gate_smtp):
    """A 451 for one mail queues that row for a retry with backoff; the four connections send
    everything else (no error, no session opened again); once due, the row goes out, and nothing
    arrives twice."""
    clock = Clock()
    app = _app_on(settings, clock, gate_smtp, connections=4)
    _queue_cases(app, 12, clock)
    gate_smtp.hold = 4
    gate_smtp.replies["case 5"] = "451 4.3.0 try again later"
    r = asyncio.run(app.sender().run_once())
    assert (r.sent, r.retry, r.failed, r.errors) == (11, 1, 0, [])
    rows = _by_subject(app)
    assert (rows["case 5"].status, rows["case 5"].attempts) == ("queued", 1)
    assert "451" in rows["case 5"].last_error and rows["case 5"].next_attempt_at > clock()
    assert all(row.status == "sent" for subject, row in rows.items() if subject != "case 5")
    assert gate_smtp.opened_total == 4  # four sessions for the batch, none opened again after the 451
    del gate_smtp.replies["case 5"]
    clock.advance(seconds=settings.outbox.max_backoff_seconds * 2)
    assert asyncio.run(app.sender().run_once()).sent == 1
    _once_each(app, gate_smtp)


def test_a_connection_dropped_mid_batch_loses_and_doubles_nothing(settings, gate_smtp):
    """The server drops one of four connections in the middle of a mail: that row is queued for a
    retry (its exchange failed), the other connections send the rest of the batch, and after the
    retry every row is sent and received exactly once; no row is left in doubt."""
    clock = Clock()
    app = _app_on(settings, clock, gate_smtp, connections=4)
    _queue_cases(app, 20, clock)
    gate_smtp.hold = 4
    gate_smtp.drop.add("case 7")
    r = asyncio.run(app.sender().run_once())
    assert (r.sent, r.retry, r.failed) == (19, 1, 0) and r.errors
    rows = _by_subject(app)
    assert (rows["case 7"].status, rows["case 7"].attempts) == ("queued", 1)
    assert all(row.status == "sent" for subject, row in rows.items() if subject != "case 7")
    clock.advance(seconds=settings.outbox.max_backoff_seconds * 2)
    assert asyncio.run(app.sender().run_once()).sent == 1
    _once_each(app, gate_smtp)
    assert not _events(app, "mail_resent_unknown_outcome")


def test_a_stop_lets_the_exchanges_finish_and_gives_the_rest_back(settings, gate_smtp):
    """A stop while four connections send: the mails in an exchange finish and are recorded, the
    rest of the claim is queued again at once (no attempt counted, no lease to wait for), and the
    next pass sends exactly those."""
    clock = Clock()
    app = _app_on(settings, clock, gate_smtp, connections=4)
    _queue_cases(app, 20, clock)
    gate_smtp.hold = 4
    r = asyncio.run(app.sender(should_stop=lambda: len(gate_smtp.received) >= 6).run_once())
    received = gate_smtp.subjects
    assert r.sent == len(received) and 6 <= r.sent <= 6 + 3
    rows = _by_subject(app)
    assert {s for s, row in rows.items() if row.status == "sent"} == set(received)
    rest = [row for row in rows.values() if row.status != "sent"]
    assert len(rest) == 20 - r.sent
    assert all((row.status, row.attempts, row.claimed_until) == ("queued", 0, None) for row in rest)
    assert asyncio.run(app.sender().run_once()).sent == len(rest)
    _once_each(app, gate_smtp)


def test_a_cases_mails_keep_their_order_across_connections(settings, gate_smtp):
    """Three cases' mails, queued interleaved, go out over three connections side by side; each
    case's mails reach the server in the order they were queued."""
    clock = Clock()
    app = _app_on(settings, clock, gate_smtp, connections=4)
    _queue_cases(app, 3, clock, per_case=5)
    gate_smtp.hold = 3
    assert asyncio.run(app.sender().run_once()).sent == 15
    assert gate_smtp.max_in_data == 3
    for c in range(3):
        assert [s for s in gate_smtp.subjects if s.startswith(f"case {c} ")] == [f"case {c} mail {m}" for m in range(5)]
    _once_each(app, gate_smtp)
