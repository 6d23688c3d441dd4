"""Who sees what in the case tracker — the one place this is decided.

- A signed-in address sees the cases it is the requester or a customer-side participant of
  (``store/tracker.py`` ``visible``), never one of another organisation (a Cc on a foreign case
  does not open it; only its requester sees it).
- Where its organisation allows it (``[[organisations]] tracker = "organisation"``), everyone whose
  address belongs to that organisation (by address or domain, ``Settings.organisation_for``) sees
  all of the organisation's cases.
- Of a case, a customer sees only the customer side's mails and what we sent them (the
  acknowledgement, relayed answers): never internal notes, agents' notifications, agent-only
  events or notification ids (``store/tracker.py`` ``PUBLIC_INBOUND``/``PUBLIC_OUTBOUND``).
- A sender is shown with their address only when it is the viewer's own or belongs to the
  viewer's organisation (:func:`shown_sender`); anyone else is a "contact", our mail is the queue's.
"""

from __future__ import annotations

from mailbridge.settings import Settings, TrackerScope
from mailbridge.store.tracker import Viewer


def viewer_for(settings: Settings, address: str) -> Viewer:
    address = address.strip().lower()
    org = settings.organisation_for(address)
    return Viewer(
        address=address,
        organisation=org.name if org is not None else None,
        organisation_wide=org is not None and org.tracker == TrackerScope.ORGANISATION,
    )


def may_sign_in(settings: Settings, address: str, known_in_store: bool) -> bool:
    """Whether a sign-in mail goes to ``address``: a requester or participant of a case, or an
    address of a configured organisation (by address or domain)."""
    return known_in_store or settings.organisation_for(address) is not None


def shown_sender(settings: Settings, viewer: Viewer, email: str, name: str) -> tuple[str, str | None]:
    """(name, address or None) of a customer-side sender as ``viewer`` may see them."""
    email = (email or "").lower()
    same_org = viewer.organisation is not None and (
        (org := settings.organisation_for(email)) is not None and org.name == viewer.organisation
    )
    if email == viewer.address or same_org:
        return (name or email), email
    return "", None
