"""The ticket lifecycle rules: what a customer's reply does to a case in each status."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mailbridge.lifecycle import ReplyEffect, customer_reply_effect, status_times

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
WEEK = timedelta(days=7)


@pytest.mark.parametrize(
    ("status", "solved_ago", "effect"),
    [
        ("new", None, ReplyEffect.NONE),
        ("open", None, ReplyEffect.NONE),
        ("pending", None, ReplyEffect.REOPEN),
        ("solved", timedelta(days=1), ReplyEffect.REOPEN),
        ("solved", WEEK, ReplyEffect.REOPEN),  # the window's last moment still reopens
        ("solved", WEEK + timedelta(seconds=1), ReplyEffect.NEW_LINKED_CASE),
        ("solved", None, ReplyEffect.NEW_LINKED_CASE),  # solved without a time: treat as long ago
        ("closed", None, ReplyEffect.NEW_LINKED_CASE),
        ("closed", timedelta(hours=1), ReplyEffect.NEW_LINKED_CASE),
    ],
)
def test_customer_reply_effect(status, solved_ago, effect):
    """Pending and recently solved cases reopen; closed ones and old solutions get a linked new case."""
    solved_at = NOW - solved_ago if solved_ago is not None else None
    assert customer_reply_effect(status, solved_at, NOW, WEEK) is effect


def test_status_times_set_and_clear():
    """Solving stamps solved_at; closing stamps closed_at and keeps solved_at; reopening clears both."""
    assert status_times("solved", NOW) == {"solved_at": NOW, "closed_at": None}
    assert status_times("closed", NOW) == {"closed_at": NOW}
    assert status_times("open", NOW) == {"solved_at": None, "closed_at": None}
    assert status_times("pending", NOW) == {"solved_at": None, "closed_at": None}
