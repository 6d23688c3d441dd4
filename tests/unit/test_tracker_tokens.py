"""Sign-in tokens of the case tracker: random, stored as SHA-256 only, bound to one address, valid
15 minutes, spent by their first use; the address a person types is read as one addr-spec."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mailbridge.store import tracker as tq
from mailbridge.store.db import make_engine, make_session_factory, session_scope
from mailbridge.store.models import SigninToken
from mailbridge.web.signin import TOKEN_MINUTES, clean_address, token_hash
from tests.support import migrated_sqlite_file

NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


@pytest.fixture
def factory(tmp_path):
    engine = make_engine(f"sqlite:///{migrated_sqlite_file(tmp_path / 'db.sqlite')}")
    yield make_session_factory(engine)
    engine.dispose()


def issue(factory, token: str, address: str, at: datetime = NOW) -> None:
    with session_scope(factory) as s:
        tq.add_token(s, token_hash(token), address, at, at + timedelta(minutes=TOKEN_MINUTES))


def use(factory, token: str, at: datetime) -> str | None:
    with session_scope(factory) as s:
        return tq.use_token(s, token_hash(token), at)


def test_hash_is_sha256_hex_and_the_token_is_not_stored(factory):
    issue(factory, "tok-A", "alice@acme.example")
    with session_scope(factory) as s:
        row = s.query(SigninToken).one()
        assert row.token_hash == token_hash("tok-A") and len(row.token_hash) == 64
        assert "tok-A" not in (row.token_hash, row.address)
    assert token_hash("tok-A") != token_hash("tok-a")


def test_single_use(factory):
    issue(factory, "tok-A", "alice@acme.example")
    assert use(factory, "tok-A", NOW + timedelta(minutes=1)) == "alice@acme.example"
    assert use(factory, "tok-A", NOW + timedelta(minutes=2)) is None


def test_valid_for_15_minutes_only(factory):
    issue(factory, "tok-A", "alice@acme.example")
    issue(factory, "tok-B", "alice@acme.example")
    assert use(factory, "tok-A", NOW + timedelta(minutes=14, seconds=59)) == "alice@acme.example"
    assert use(factory, "tok-B", NOW + timedelta(minutes=15)) is None


def test_bound_to_its_address_and_unknown_tokens_give_nothing(factory):
    issue(factory, "tok-A", "alice@acme.example")
    issue(factory, "tok-B", "boris@beta.example")
    assert use(factory, "tok-B", NOW) == "boris@beta.example"
    assert use(factory, "tok-C", NOW) is None
    assert use(factory, "", NOW) is None


@pytest.mark.parametrize(
    ("typed", "address"),
    [
        ("Alice@ACME.example", "alice@acme.example"),
        ("  alice@acme.example\n", "alice@acme.example"),
        ("alice", None),
        ("alice@localhost", None),
        ("a b@acme.example", None),
        ("Alice <alice@acme.example>", None),
        ("alice@acme.example, boris@beta.example", None),
        ("alice@@acme.example", None),
        ("alice@acme.example\r\nBcc: x@evil.example", None),
        ("x" * 400 + "@acme.example", None),
        ("", None),
    ],
)
def test_clean_address(typed, address):
    assert clean_address(typed) == address


def test_rate_counts_per_address_and_client(factory):
    with session_scope(factory) as s:
        for i in range(3):
            tq.add_signin_request(s, "alice@acme.example", "10.0.0.1", NOW + timedelta(minutes=i))
        tq.add_signin_request(s, "boris@beta.example", "10.0.0.1", NOW)
        tq.add_signin_request(s, "alice@acme.example", "10.0.0.2", NOW - timedelta(hours=2))
    with session_scope(factory) as s:
        since = NOW - timedelta(hours=1)
        assert tq.signin_requests_since(s, since, address="alice@acme.example") == 3
        assert tq.signin_requests_since(s, since, client="10.0.0.1") == 4
        assert tq.signin_requests_since(s, since, client="10.0.0.2") == 0


def test_old_requests_and_expired_links_are_pruned(factory):
    """Addresses (even mistyped ones) and client IPs are kept only as long as the limits need them."""
    issue(factory, "old", "alice@acme.example", NOW - timedelta(days=2))
    issue(factory, "new", "alice@acme.example", NOW - timedelta(minutes=5))
    with session_scope(factory) as s:
        tq.add_signin_request(s, "tipo@acme.example", "10.0.0.9", NOW - timedelta(days=2))
        tq.add_signin_request(s, "alice@acme.example", "10.0.0.1", NOW - timedelta(hours=2))
    with session_scope(factory) as s:
        assert tq.prune_signins(s, NOW - timedelta(days=1)) == 2
    with session_scope(factory) as s:
        assert tq.signin_requests_since(s, NOW - timedelta(days=3), client="10.0.0.9") == 0
        assert tq.signin_requests_since(s, NOW - timedelta(days=3), address="alice@acme.example") == 1
        assert [t.address for t in s.query(SigninToken)] == ["alice@acme.example"]
    assert use(factory, "new", NOW) == "alice@acme.example"
