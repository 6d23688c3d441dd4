"""Which existing case a mail belongs to, strongest evidence first.

1. ``In-Reply-To`` / ``References`` naming a Message-ID we stored (inbound or outbound);
2. a case number in the subject whose check digit is valid and that exists.

The conversations issue extends this with body references, prefixes and conflict rules; every
answer carries the rule and the evidence, stored on the message as its routing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy.orm import Session

from mailbridge.domain import CaseNumberFormat, ParsedMail
from mailbridge.store import repositories as repo
from mailbridge.store.repositories import TicketRef


@dataclass(frozen=True)
class Match:
    ticket: TicketRef | None
    rule: str
    evidence: str

    def as_routing(self) -> dict:
        return {"rule": self.rule, "evidence": self.evidence}


def case_number_candidates(text: str, fmt: CaseNumberFormat) -> list[str]:
    """Tokens shaped like a case number (prefix + digits), in order of appearance, normalised."""
    pattern = re.compile(
        rf"(?<![A-Za-z0-9]){re.escape(fmt.prefix)}[\s-]?(\d{{{fmt.digits}}})(?!\d)", re.IGNORECASE | re.ASCII
    )
    return [f"{fmt.prefix}{m.group(1)}" for m in pattern.finditer(text or "")]


def match_ticket(session: Session, mail: ParsedMail, fmt: CaseNumberFormat) -> Match:
    ids = [*mail.references, *mail.in_reply_to]
    if ids:
        t = repo.ticket_for_message_ids(session, ids)
        if t is not None:
            return Match(t, "thread-header", "In-Reply-To/References name a message of this case")
    for cand in case_number_candidates(mail.subject, fmt):
        if fmt.is_valid(cand):
            t = repo.ticket_ref(session, case_number=cand)
            if t is not None:
                return Match(t, "subject-case-number", cand)
    return Match(None, "new", "no reference to an existing case")
