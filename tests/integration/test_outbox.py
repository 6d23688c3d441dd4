"""The outbox sender against a real SMTP server (aiosmtpd): retries, permanent failures, a server
that is away, ordering, concurrent senders and leases. Time is injected, never slept."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from mailbridge.app import App
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
