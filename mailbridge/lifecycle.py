"""The ticket lifecycle as pure rules: what a customer's reply or an agent's command does to a case.

States (``TicketStatus``): ``new`` (nobody answered yet) → ``open`` (an agent answered or took it)
→ ``pending`` (waiting for the customer) → ``solved`` → ``closed``. The rules:

- a customer reply to a *new* or *open* case changes nothing; to a *pending* case makes it *open*;
- to a *solved* case within the reopen window (counted from when it was solved) reopens it (*open*);
- to a *closed* case, or to a solved one after the window, opens a **new case linked to the old
  one** (seed 004: a closed case number is for reference only);
- machine-made mail (auto-replies, bounces) and mail from unknown third parties never change a state;
- an agent's reply that reaches the customer makes a *new* case *open*; commands set what they say;
- solved cases close by themselves once the window has passed (a scheduler job).

Nothing here touches the database; the pipeline steps apply the answers.
"""

from __future__ import annotations

import enum
from datetime import datetime, timedelta

from mailbridge.domain import TicketStatus


class ReplyEffect(enum.StrEnum):
    """What a customer's reply does to the case it references."""

    NONE = "none"  # attach; the status stays
    REOPEN = "reopen"  # pending → open, or solved (within the window) → open
    NEW_LINKED_CASE = "new-linked-case"  # closed, or solved too long ago: a new case, linked


def customer_reply_effect(
    status: str, solved_at: datetime | None, now: datetime, reopen_window: timedelta
) -> ReplyEffect:
    """The effect of a customer's reply on a case in ``status`` (see the module docstring)."""
    if status == TicketStatus.PENDING:
        return ReplyEffect.REOPEN
    if status == TicketStatus.SOLVED:
        if solved_at is not None and now - solved_at <= reopen_window:
            return ReplyEffect.REOPEN
        return ReplyEffect.NEW_LINKED_CASE
    if status == TicketStatus.CLOSED:
        return ReplyEffect.NEW_LINKED_CASE
    return ReplyEffect.NONE


# The status each status command sets.
STATUS_COMMANDS: dict[str, TicketStatus] = {
    "open": TicketStatus.OPEN,
    "pending": TicketStatus.PENDING,
    "solve": TicketStatus.SOLVED,
    "close": TicketStatus.CLOSED,
}


def status_times(new_status: str, now: datetime) -> dict[str, datetime | None]:
    """The ticket columns that change with a status: solved_at / closed_at are set on entering
    solved / closed and cleared when the case becomes active again."""
    if new_status == TicketStatus.SOLVED:
        return {"solved_at": now, "closed_at": None}
    if new_status == TicketStatus.CLOSED:
        return {"closed_at": now}
    return {"solved_at": None, "closed_at": None}
