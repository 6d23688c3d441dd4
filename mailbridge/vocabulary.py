"""The words the parts of mailbridge share, as enums stored as their string values.

Each is a :class:`~enum.StrEnum`, so a value compares equal to the string in the database
(``Message.kind == MessageKind.AGENT``) and serialises as that string in JSON and logs.
A ticket's status is :class:`mailbridge.domain.TicketStatus`; a mail's class is
:class:`mailbridge.ingest.noise.MailClass`.
"""

from __future__ import annotations

from enum import StrEnum


class Disposition(StrEnum):
    """What became of one inbound mail (``RawMessage.disposition``; the IMAP folder it moves to)."""

    # A case was opened or changed, or the mail was recorded on one.
    PROCESSED = "processed"
    # We already had it (same bytes or same Message-ID): nothing recorded again.
    DUPLICATE = "duplicate"
    # Our own mail (From is a support address): kept, never treated as a customer's. Also a proven
    # agent's mail about no case that opens none (#help, a #new block with an error): kept, answered.
    # And a known customer's status request (outgoing.StatusByMail): kept, answered with their list.
    IGNORED = "ignored"
    # An auto-reply or bounce that answers nothing of ours: kept for the operator, no case.
    NOISE = "noise"
    # Not processed (unparseable, over the size limit, or a step failed): raw kept, with the reason.
    QUARANTINED = "quarantined"


class MessageKind(StrEnum):
    """What a message is on its case (``Message.kind``); also the kind of the outbox row that sends it."""

    # Inbound
    CUSTOMER = "customer"
    AUTO = "auto"  # machine-made (an out-of-office reply, a robot): recorded, changes nothing
    BOUNCE = "bounce"
    THIRD_PARTY = "third_party"
    AGENT = "agent"  # a proven agent's answer for the customer
    AGENT_UNVERIFIED = "agent_unverified"
    AGENT_REJECTED = "agent_rejected"  # a proven agent's mail whose commands were invalid
    NOTE = "note"  # an internal note
    # Outbound
    ACK = "ack"
    RELAY = "relay"
    NOTIFICATION = "notification"
    COMMAND_ERROR = "command_error"
    HELP = "help"  # the agents' cheat sheet, the answer to #help
    OVERSIZE_NOTICE = "oversize_notice"
    SEVERITY_NOTICE = "severity_notice"  # the customer's request raised the case's severity
    ESCALATION = "escalation"
    SIGNIN = "signin"  # the case tracker's sign-in link (mailbridge web)
    DIGEST = "digest"
    STATUS_LIST = "status_list"  # a known customer's open cases, the answer to their status request
    REPORT = "report"  # a scheduled report (scheduled.py)


# Inbound kinds of an agent's own proven mail: never announced to the agents again.
AGENTS_OWN = frozenset({MessageKind.AGENT, MessageKind.NOTE, MessageKind.AGENT_REJECTED})
# Message kinds that make up the conversation with the customer (what a relay continues).
CUSTOMER_THREAD = (MessageKind.CUSTOMER, MessageKind.ACK, MessageKind.RELAY)


class AuthorRole(StrEnum):
    """Who wrote a mail, relative to its case (``ingest/conversation.py`` Identify)."""

    REQUESTER = "requester"
    CUSTOMER = "customer"  # Cc'd on the first mail, or added later
    COLLEAGUE = "colleague"  # same organisation as the requester: a customer, but not copied on answers
    AGENT = "agent"
    THIRD_PARTY = "third_party"


class AgentMode(StrEnum):
    """Where an agent's mail went, which decides what it is (``Identify._agent_mode``)."""

    DIRECT = "direct"  # to the customer, the support address in Cc/Bcc: recorded, not sent again
    EXTERNAL = "external"  # to someone outside the case: recorded, never relayed
    RELAY = "relay"  # to the support address, otherwise only agents: relayed to the customer
    INTERNAL = "internal"  # the support address only in Cc/Bcc: an internal note


# The event that marks a case opened from an archive (``mailbridge import --archive``): it has no SLA
# clocks (``ingest/clocks.py`` ``ArchiveClocks`` writes it; ``sla/recompute.py`` leaves such a case
# without clocks).
CLOCKS_NOT_STARTED = "clocks_not_started"
