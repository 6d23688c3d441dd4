"""Which existing case a mail belongs to: one ordered rule list, strongest evidence first.

1. ``thread-header``: ``In-Reply-To`` / ``References`` name a Message-ID we stored (inbound or
   outbound, agent notifications included); the id nearest the end of the chain wins.
2. ``subject``: a case number in the subject (``[C1000009]``, ``AW: WG: Case C-1000009``, …);
3. ``body``: a case number in the *new* part of the body (quoted history does not count: it quotes
   whatever the old mails said).

Only numbers whose check digit is valid and whose case exists count; the first number found by a
rule is its answer.

**When evidence disagrees** the strongest rule wins and the mail never moves because of weaker
evidence: headers beat the subject, the subject beats the body. Every weaker rule that names a
*different* existing case is recorded as a conflict (stored with the routing, flagged and shown to
agents in the notification), so a person can move the mail if the customer meant the other case.

Numbers shaped like a case number that match nothing are reported (``unknown``): a failed check digit
(a typo) or a valid number no case has. For such a number a suggestion is offered when exactly one
existing case is one digit or one adjacent swap away *and* belongs to the sender's organisation
(requester or customer participant with the same mail domain, or the same address for free-mail
domains); a suggestion never reveals a case of someone else.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mailbridge.domain import CaseNumberFormat, ParsedMail
from mailbridge.ingest.references import case_number_candidates, near_misses
from mailbridge.outbound.tokens import case_for_notification_id
from mailbridge.store import repositories as repo
from mailbridge.store.db import Session
from mailbridge.store.repositories import TicketRef

# Candidates looked at per mail part: a mail listing hundreds of numbers is not a reply to each.
MAX_CANDIDATES = 20


@dataclass(frozen=True)
class UnknownReference:
    """A case-number-shaped token that names no case; ``suggestion`` per the module docstring."""

    written: str
    number: str
    reason: str  # "check digit" | "no such case"
    suggestion: str | None = None


@dataclass
class Match:
    ticket: TicketRef | None
    rule: str
    evidence: str
    # Other existing cases named by weaker evidence: {"rule", "case"}.
    conflicts: list[dict] = field(default_factory=list)
    unknown: list[UnknownReference] = field(default_factory=list)
    # Cases whose signed agent notification this mail answers (a valid HMAC in its thread headers).
    notification_cases: set[str] = field(default_factory=set)
    # The Message-IDs of those notifications.
    notification_ids: list[str] = field(default_factory=list)

    def as_routing(self) -> dict:
        out: dict = {"rule": self.rule, "evidence": self.evidence}
        if self.conflicts:
            out["conflicts"] = self.conflicts
        if self.unknown:
            out["unknown_references"] = [
                {"number": u.number, "reason": u.reason, "suggestion": u.suggestion} for u in self.unknown
            ]
        if self.notification_cases:
            out["signed_notification"] = sorted(self.notification_cases)
        return out


def organisation_key(email: str, public_domains: frozenset[str]) -> str:
    """Who a sender belongs to: the mail domain, or the address itself at a free-mail provider."""
    email = email.lower()
    domain = email.rsplit("@", 1)[-1]
    return email if domain in public_domains else domain


class Matcher:
    def __init__(self, fmt: CaseNumberFormat, secrets: list[bytes], public_domains: frozenset[str]):
        self.fmt = fmt
        self.secrets = secrets
        self.public_domains = public_domains

    def match(self, session: Session, mail: ParsedMail) -> Match:
        ids = [*mail.references, *mail.in_reply_to]
        # A signature proves a notification only while that notification is ours and not revoked
        # (its id reached someone who is not an agent).
        signed_ids = {i: c for i in ids if (c := case_for_notification_id(i, self.secrets))} if self.secrets else {}
        live = repo.live_notifications(session, list(signed_ids)) if signed_ids else set()
        signed = {c for i, c in signed_ids.items() if i in live}
        found: list[tuple[str, TicketRef, str]] = []  # (rule, ticket, evidence), strongest first
        unknown: list[UnknownReference] = []

        if ids:
            t = repo.ticket_for_message_ids(session, ids)
            if t is not None:
                found.append(("thread-header", t, "In-Reply-To/References name a message of this case"))

        for rule, text in (("subject", mail.subject), ("body", mail.new_text)):
            cands = case_number_candidates(text or "", self.fmt)[:MAX_CANDIDATES]
            valid = [c.number for c in cands if c.valid]
            existing = repo.tickets_by_case_numbers(session, valid)
            first = next((c for c in cands if c.valid and c.number in existing), None)
            if first is not None:
                found.append((rule, existing[first.number], first.written))
            for c in cands:
                if c.number in existing or any(u.number == c.number for u in unknown):
                    continue
                unknown.append(UnknownReference(c.written, c.number, "no such case" if c.valid else "check digit"))

        if not found:
            return Match(
                None,
                "new",
                "no reference to an existing case",
                unknown=self._suggest(session, mail, unknown),
                notification_cases=signed,
                notification_ids=sorted(i for i in signed_ids if i in live),
            )
        rule, ticket, evidence = found[0]
        conflicts = []
        for r, t, ev in found[1:]:
            if t.id != ticket.id and all(c["case"] != t.case_number for c in conflicts):
                conflicts.append({"rule": r, "case": t.case_number, "evidence": ev})
        return Match(ticket, rule, evidence, conflicts, unknown, signed, sorted(i for i in signed_ids if i in live))

    def _suggest(self, session: Session, mail: ParsedMail, unknown: list[UnknownReference]) -> list[UnknownReference]:
        """Attach a suggestion to each unknown number where exactly one near miss is the sender's."""
        if not unknown or mail.from_ is None:
            return unknown
        # The acknowledgement goes to Reply-To when there is one: both it and From must belong to
        # the organisation whose case is suggested (From alone can be forged).
        orgs = {organisation_key(a.email, self.public_domains) for a in [mail.from_, *mail.reply_to[:1]]}
        if len(orgs) != 1:
            return unknown
        sender_org = orgs.pop()
        out = []
        for u in unknown:
            near = repo.tickets_by_case_numbers(session, [n for n in near_misses(u.number, self.fmt) if n != u.number])
            people = repo.customer_emails(session, [t.id for t in near.values()])
            mine = [
                t
                for t in near.values()
                if any(organisation_key(e, self.public_domains) == sender_org for e in people.get(t.id, ()))
            ]
            out.append(UnknownReference(u.written, u.number, u.reason, mine[0].case_number if len(mine) == 1 else None))
        return out
