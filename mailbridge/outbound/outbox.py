"""The transactional outbox: mail is written here in the transaction that decided to send it.

``enqueue`` runs inside the caller's transaction, so a mail exists exactly when the ticket change
that caused it was committed. ``dedup_key`` is unique: the same logical mail (e.g. the
acknowledgement of ticket 42) can never be queued twice.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from mailbridge.outbound.compose import Outgoing
from mailbridge.store import repositories as repo
from mailbridge.store.db import Session
from mailbridge.store.models import Message, Outbox


def enqueue(
    session: Session,
    out: Outgoing,
    *,
    kind: str,
    dedup_key: str,
    now: datetime,
    ticket_id: int | None,
    in_reply_to: str | None = None,
    references: list[str] | None = None,
    language: str | None = None,
    thread_index: str | None = None,
    record: bool = True,
    recipients: list[str] | None = None,
) -> int:
    """Queue ``out`` and record it as an outbound message of the ticket (same transaction).
    ``record`` False: only queue it — a further copy of a mail already recorded (the same
    Message-ID to another recipient, e.g. with that recipient's own case link). ``recipients``:
    whom the recorded message went to, when that is more than this copy's envelope.

    Returns the outbox row's id.
    """
    outbox_id = repo.insert_row(
        session,
        Outbox,
        {
            "kind": kind,
            "dedup_key": dedup_key,
            "ticket_id": ticket_id,
            "message_id": out.message_id,
            "envelope_from": out.envelope_from,
            "envelope_to": out.envelope_to,
            "raw": out.raw,
            "status": "queued",
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
        },
    )
    if record:
        repo.insert_row(
            session,
            Message,
            {
                "ticket_id": ticket_id,
                "direction": "out",
                "message_id": out.message_id,
                "in_reply_to": in_reply_to,
                "references": " ".join(references or []) or None,
                "sender_email": out.envelope_from,
                "sender_name": "",
                "recipients": recipients if recipients is not None else out.envelope_to,
                "subject": out.subject,
                "body_text": out.text,
                "date": now,
                "language": language,
                "outbox_id": outbox_id,
                "kind": kind,
                "thread_index": thread_index,
                "created_at": now,
            },
        )
    return outbox_id


def retry_at(now: datetime, attempts: int, base: float, cap: float, rng: random.Random | None = None) -> datetime:
    """Exponential backoff with ±20 % jitter: base, 2·base, 4·base, … capped at ``cap`` seconds."""
    rng = rng or random
    # The exponent is bounded first: 2 ** 1024 would overflow a float long before the cap applies.
    delay = min(cap, base * 2.0 ** min(max(0, attempts - 1), 64))
    return now + timedelta(seconds=delay * rng.uniform(0.8, 1.2))
