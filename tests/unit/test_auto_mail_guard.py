"""The tiered limits and the hard-bounce suppression of automatic mail (outbound/guard.py), against a
real (in-memory SQLite) database: each tier stops at its maximum and frees up as its window passes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from mailbridge.outbound.guard import AutoMailGuard
from mailbridge.settings import AutoMailSettings, RateLimit
from mailbridge.store.models import Base, Ticket

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
ADDR = "kunde@kunde.example"


@pytest.fixture
def session():
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as s:
        for i in (1, 2):
            s.add(
                Ticket(
                    id=i,
                    case_number=f"C{i}",
                    serial=i,
                    queue="q",
                    status="new",
                    subject="s",
                    requester_email=ADDR,
                    requester_name="",
                    language="de",
                    created_at=T0,
                    updated_at=T0,
                )
            )
        s.flush()
        yield s


def _send_until_refused(guard, session, ticket_id, start, step: timedelta, limit: int = 1000):
    """Record automatic mails every ``step`` until the guard refuses; (count sent, refusal, when)."""
    now = start
    for n in range(limit):
        refusal = guard.check(session, ADDR, ticket_id, now)
        if refusal is not None:
            return n, refusal, now
        guard.record(session, ADDR, ticket_id, "ack", now)
        now += step
    raise AssertionError("never refused")


def test_default_tiers_per_ticket():
    g = AutoMailGuard(AutoMailSettings())
    assert [(t.max, t.minutes) for t in g.settings.per_ticket] == [(10, 10), (25, 60), (100, 600)]
    assert [(t.max, t.minutes) for t in g.settings.per_recipient] == [(30, 10), (120, 60), (360, 600)]


def test_per_ticket_first_tier_ten_in_ten_minutes(session):
    g = AutoMailGuard(AutoMailSettings())
    n, refusal, at = _send_until_refused(g, session, 1, T0, timedelta(seconds=30))
    assert n == 10
    assert (refusal.reason, refusal.detail["scope"], refusal.detail["max"]) == ("limit", "ticket", 10)
    # Another case of the same recipient is not held back by this case's limit...
    assert g.check(session, ADDR, 2, at) is None
    # ... and this case may send again once the first mail left the 10-minute window.
    assert g.check(session, ADDR, 1, T0 + timedelta(minutes=10, seconds=1)) is None


def test_per_ticket_hour_and_ten_hour_tiers(session):
    g = AutoMailGuard(AutoMailSettings())
    # One mail a minute stays under 10 in 10 minutes but hits 25 in an hour.
    n, refusal, _ = _send_until_refused(g, session, 1, T0, timedelta(minutes=1, seconds=5))
    assert (n, refusal.detail["max"], refusal.detail["minutes"]) == (25, 25, 60)


def test_per_ticket_ten_hour_tier(session):
    g = AutoMailGuard(AutoMailSettings())
    # One mail every 2.5 minutes: 24 an hour, so only the 10-hour tier (100) stops it.
    n, refusal, _ = _send_until_refused(g, session, 1, T0, timedelta(minutes=2, seconds=30))
    assert (n, refusal.detail["max"], refusal.detail["minutes"]) == (100, 100, 600)


def test_per_recipient_over_all_cases(session):
    g = AutoMailGuard(AutoMailSettings(per_ticket=[]))
    n, refusal, _ = _send_until_refused(g, session, None, T0, timedelta(seconds=10))
    assert (n, refusal.detail["scope"], refusal.detail["max"]) == (30, "recipient", 30)


def test_configured_tiers_are_used(session):
    g = AutoMailGuard(AutoMailSettings(per_ticket=[RateLimit(max=2, minutes=5)], per_recipient=[]))
    n, refusal, _ = _send_until_refused(g, session, 1, T0, timedelta(seconds=1))
    assert n == 2 and "2 automatic mails to kunde@kunde.example in 5 minutes for this case" in refusal.text()


def test_no_limits_configured_never_refuses(session):
    g = AutoMailGuard(AutoMailSettings(per_ticket=[], per_recipient=[]))
    for _ in range(50):
        assert g.check(session, ADDR, 1, T0) is None
        g.record(session, ADDR, 1, "ack", T0)


def test_hard_bounce_suppresses_for_the_configured_days(session):
    g = AutoMailGuard(AutoMailSettings(hard_bounce_suppress_days=60))
    until = g.record_bounce(session, ADDR, permanent=True, status="5.1.1", reason="DSN", ticket_id=1, now=T0)
    assert until == T0 + timedelta(days=60)
    refusal = g.check(session, ADDR, 1, T0 + timedelta(days=59))
    assert refusal is not None and refusal.reason == "address_failing"
    assert g.check(session, ADDR, 1, T0 + timedelta(days=60, seconds=1)) is None
    # A soft bounce later neither lifts nor shortens it.
    g.record_bounce(session, ADDR, permanent=False, status="4.2.2", reason="DSN", ticket_id=1, now=T0)
    assert g.check(session, ADDR, 1, T0 + timedelta(days=30)) is not None


def test_soft_bounce_and_zero_days_do_not_suppress(session):
    g = AutoMailGuard(AutoMailSettings())
    assert g.record_bounce(session, ADDR, permanent=False, status="4.4.1", reason="", ticket_id=None, now=T0) is None
    assert g.check(session, ADDR, 1, T0) is None
    g0 = AutoMailGuard(AutoMailSettings(hard_bounce_suppress_days=0))
    assert (
        g0.record_bounce(session, "x@y.example", permanent=True, status="5.1.1", reason="", ticket_id=None, now=T0)
        is None
    )
    assert g0.check(session, "x@y.example", 1, T0) is None
