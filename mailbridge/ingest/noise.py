"""What kind of mail this is: a person's, or noise a support desk must never answer.

Every inbound mail gets one :class:`MailClass`, stored on its raw row and message. Only
``human`` and ``auto_forwarded`` mail may open a case, be acknowledged, reopen or notify;
bounces are matched to the mail of ours they bounce (``Bounce.original_message_ids``).

Interface used by the pipeline (``ingest/steps.py``); the detection rules live here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from mailbridge.domain import ParsedMail


class MailClass(StrEnum):
    HUMAN = "human"
    # Forwarded by the customer's own server rule (Exchange marks it auto-generated): a request.
    AUTO_FORWARDED = "auto_forwarded"
    OUT_OF_OFFICE = "out_of_office"
    # Any other autoresponder or machine notification (RFC 3834 auto-replied/auto-generated, …).
    AUTO_REPLY = "auto_reply"
    HARD_BOUNCE = "hard_bounce"
    SOFT_BOUNCE = "soft_bounce"
    LIST = "list"
    OWN = "own"


# Classes a person wrote (or forwarded by rule): they may open cases and get answers.
PERSONAL = frozenset({MailClass.HUMAN, MailClass.AUTO_FORWARDED})
BOUNCES = frozenset({MailClass.HARD_BOUNCE, MailClass.SOFT_BOUNCE})


@dataclass(frozen=True)
class Bounce:
    """What a delivery-status notification says about the mail it bounces."""

    # The addresses that failed (lower case), as the DSN names them.
    recipients: tuple[str, ...]
    permanent: bool
    # RFC 3463 status code of the first failed recipient ("5.1.1"), when given.
    status: str | None = None
    # Message-ID(s) (without <>) of the bounced mail, from its returned copy or headers.
    original_message_ids: tuple[str, ...] = ()
    # The bounced mail's Subject, when returned (for the case tag).
    original_subject: str | None = None


@dataclass(frozen=True)
class Classification:
    kind: MailClass
    # The evidence, for the record ("Auto-Submitted: auto-replied", "multipart/report; 5.1.1").
    reason: str = ""
    bounce: Bounce | None = None
    # Every marker seen, in order (for tests and the operator view).
    evidence: tuple[str, ...] = field(default=())

    @property
    def personal(self) -> bool:
        return self.kind in PERSONAL


def classify_mail(parsed: ParsedMail, raw: bytes, own: frozenset[str]) -> Classification:
    """The class of one inbound mail. Never raises (a broken DSN is still a bounce if it looks like one)."""
    raise NotImplementedError
