"""Which queue a mail belongs to, and which addresses are ours: each decided here only.

- **Queue**: the support address the customer wrote to (To, Cc) comes first, then the address the
  mail was delivered to (Delivered-To, X-Original-To: a Bcc), then the account's default queue. A
  server that delivers a second support address into a shared mailbox stamps Delivered-To with the
  mailbox's own address, so the written addresses must win.
- **Ours**: our support addresses, and a queue's agents and notification recipients. Anyone else is
  outside: a customer, a colleague of theirs, a third party. Only outside addresses become a case's
  participants, get copies of our answers, or can be the address a case answers to.
"""

from __future__ import annotations

from mailbridge.domain import ParsedMail
from mailbridge.settings import QueueSettings, Settings


def route(settings: Settings, head: ParsedMail | None, account: str) -> tuple[QueueSettings, dict]:
    """The mail's queue, and the evidence for the routing record."""
    if head is not None:
        for addr in [*(a.email for a in [*head.to, *head.cc]), *head.delivered_to]:
            q = settings.queue_for_address(addr)
            if q is not None:
                return q, {"queue": q.name, "by": "recipient", "evidence": addr}
    q = settings.default_queue_for(account)
    return q, {"queue": q.name, "by": "account-default", "evidence": account}


def is_ours(settings: Settings, address: str, queue: QueueSettings | None = None) -> bool:
    """A support address, or an agent or notification recipient of ``queue`` (of any queue when None)."""
    if address in settings.own_addresses:
        return True
    queues = [queue] if queue is not None else settings.queues
    return any(q.is_agent(address) or address in q.notify_addresses for q in queues)
