"""Whether mailbridge may send an automatic mail (an acknowledgement, a notice) to an outside
address, and what our bounced mails tell about addresses.

Two guards, both recorded rather than silent:

- **Failing addresses.** A bounce of one of our mails marks its recipients as failing
  (``address_health``); after a hard bounce (a permanent failure) no automatic mail goes there for
  ``auto_mail.hard_bounce_suppress_days``. Mail that arrives from the address meanwhile does not
  lift it: a forged sender is exactly how backscatter starts; an operator can
  (``mailbridge suppressions lift``, :meth:`AutoMailGuard.lift`), recorded on the address's last case.
- **Tiered limits** per recipient and case and per recipient overall (``auto_mail.per_ticket`` /
  ``per_recipient``): an autoresponder that does not mark its replies as automatic, and answers
  each acknowledgement with a mail that opens a new case, is stopped by them.

Agents' own replies are never held back by either: a person decided to send them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from mailbridge.settings import AutoMailSettings
from mailbridge.store import automail
from mailbridge.store.db import Session
from mailbridge.store.repositories import add_event

log = structlog.get_logger(__name__)


class NotSuppressed(Exception):
    """Lifting an address whose automatic mail is not suppressed; the message says why."""


@dataclass(frozen=True)
class Refusal:
    """Why an automatic mail is not sent: ``address_failing`` or ``limit``, with the details."""

    reason: str
    detail: dict

    def text(self) -> str:
        if self.reason == "address_failing":
            return f"{self.detail['address']} hard-bounced ({self.detail.get('status') or 'permanent failure'})"
        return (
            f"{self.detail['count']} automatic mails to {self.detail['address']} in {self.detail['minutes']:g} "
            f"minutes {'for this case' if self.detail['scope'] == 'ticket' else 'over all cases'} "
            f"(limit {self.detail['max']})"
        )


class AutoMailGuard:
    def __init__(self, settings: AutoMailSettings):
        self.settings = settings
        tiers = [*settings.per_ticket, *settings.per_recipient]
        self._window = timedelta(minutes=max((t.minutes for t in tiers), default=0))

    def check(
        self, session: Session, recipient: str, ticket_id: int | None, now: datetime, arrived: datetime | None = None
    ) -> Refusal | None:
        """None when an automatic mail to ``recipient`` (about case ``ticket_id``) may go now.

        The suppression of a failing address holds at ``now``. The limits count the mail at
        ``arrived``, when the mail it answers came (default ``now``): the automatic mails counted
        within each tier's window before then (or since). So a backlog worked after downtime is
        limited as its mails were when they arrived, not as if they all came at once; a storm that
        arrives while we run is counted as it comes."""
        at = now if arrived is None else min(arrived, now)
        held = automail.suppression(session, recipient, now)
        if held is not None:
            return Refusal(
                "address_failing",
                {
                    "address": recipient,
                    "status": held.status,
                    "since": held.since.isoformat(),
                    "until": held.until.isoformat(),
                },
            )
        if not self._window:
            return None
        # Rows counted after ``at`` count too: a backlog runs in arrival order, so those are mails of
        # the same moment (INTERNALDATE has whole seconds) or a storm going on now — never fewer.
        rows = automail.auto_mails_since(session, recipient, at - self._window)
        for scope, tiers in (("ticket", self.settings.per_ticket), ("recipient", self.settings.per_recipient)):
            mine = [t for t, tid in rows if scope == "recipient" or (tid == ticket_id and ticket_id is not None)]
            for tier in tiers:
                since = at - timedelta(minutes=tier.minutes)
                count = sum(1 for t in mine if t > since)
                if count >= tier.max:
                    return Refusal(
                        "limit",
                        {
                            "address": recipient,
                            "scope": scope,
                            "max": tier.max,
                            "minutes": tier.minutes,
                            "count": count,
                        },
                    )
        return None

    def record(self, session: Session, recipient: str, ticket_id: int | None, kind: str, now: datetime) -> None:
        """Count an automatic mail that was queued, at ``now`` (the time :meth:`check` counted it at)."""
        automail.add_auto_mail(session, recipient, ticket_id, kind, now)

    # -- bounces -----------------------------------------------------------------------------------

    def record_bounce(
        self,
        session: Session,
        address: str,
        *,
        permanent: bool,
        status: str | None,
        reason: str,
        ticket_id: int | None,
        now: datetime,
    ) -> datetime | None:
        """Mark ``address`` as failing; returns until when automatic mail to it is suppressed."""
        until = (
            now + timedelta(days=self.settings.hard_bounce_suppress_days)
            if permanent and self.settings.hard_bounce_suppress_days > 0
            else None
        )
        return automail.mark_failing(
            session,
            address,
            permanent=permanent,
            status=status,
            reason=reason,
            ticket_id=ticket_id,
            now=now,
            suppress_until=until,
        )

    # -- by hand ---------------------------------------------------------------------------------------

    def lift(self, session: Session, address: str, *, by: str, now: datetime) -> automail.Health:
        """End the suppression of ``address`` now (an operator knows the mailbox works again): the
        next automatic mail goes out. Recorded as ``address_lifted`` on the address's last case and
        logged. Raises :class:`NotSuppressed` for an address that never bounced or is not
        suppressed (a soft bounce, expired or already lifted): nothing to lift is an error, not a
        silent success. Returns the address's health as it was before."""
        address = address.strip().lower()
        before = automail.health(session, address, lock=True)
        if before is None:
            raise NotSuppressed(f"{address}: no mail of ours bounced from this address; nothing is suppressed")
        if not before.suppressed(now):
            why = (
                "its suppression was lifted"
                if before.state == automail.LIFTED
                else "it bounced softly (failing, not suppressed)"
                if before.suppressed_until is None
                else f"its suppression ended {before.suppressed_until.isoformat()}"
            )
            raise NotSuppressed(f"{address}: automatic mail to it is not suppressed ({why})")
        automail.lift(session, address, now)
        detail = {
            "address": address,
            "by": by,
            "at": now.isoformat(),
            "was_until": before.suppressed_until.isoformat() if before.suppressed_until else None,
            "status": before.last_status,
        }
        if before.last_ticket_id is not None:
            add_event(session, before.last_ticket_id, "address_lifted", now, **detail)
        log.info("address_lifted", case=before.last_case, **detail)
        return before
