"""Sign-in without a password: a single-use link mailed through the outbox.

- The token is 32 random bytes (``secrets.token_urlsafe``); only its SHA-256 is stored, bound to
  the address, valid :data:`TOKEN_MINUTES`, spent by its first use (``store/tracker.py`` ``use_token``).
- Every request is recorded; beyond ``[web] signin_per_address`` requests for an address or
  ``signin_per_client`` from one client address in an hour no mail goes out. The page answers the
  same in every case (known, unknown, limited), so addresses cannot be enumerated.
- The mail is an automatic mail: the loop and rate guard (``outbound/guard.py``) may hold it back
  (a hard-bounced address, the per-recipient limits), and it counts towards them.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from email.errors import HeaderParseError
from email.headerregistry import Address as HeaderAddress

import structlog
from sqlalchemy import select

from mailbridge.app import App
from mailbridge.domain import Address
from mailbridge.outbound.outbox import enqueue
from mailbridge.store import tracker as tq
from mailbridge.store.db import session_scope
from mailbridge.store.models import Ticket
from mailbridge.vocabulary import MessageKind
from mailbridge.web.visibility import may_sign_in

log = structlog.get_logger(__name__)

TOKEN_MINUTES = 15
RATE_WINDOW = timedelta(hours=1)
# Sign-in requests and spent or expired links are kept this long, then deleted.
KEEP_SIGNINS = timedelta(days=1)
# The path below base_url a sign-in link opens.
SIGNIN_PATH = "signin/"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def clean_address(text: str) -> str | None:
    """The address a person typed, lower-cased, if it is one mailbox's address (RFC 5322 addr-spec
    as the standard library reads it); else None."""
    text = (text or "").strip()
    if not text or len(text) > 320 or any(c.isspace() for c in text) or text.count("@") != 1:
        return None
    try:
        a = HeaderAddress(addr_spec=text)
    except (HeaderParseError, ValueError, IndexError):
        return None
    if not a.username or "." not in a.domain:
        return None
    return a.addr_spec.lower()


class SignIn:
    def __init__(self, app: App):
        self.app = app
        web = app.settings.web
        self.base_url = web.base_url or "/"

    def request(self, address: str, client: str, language: str) -> bool:
        """Record a request for a sign-in mail to ``address`` from ``client`` and queue the mail
        when it may go; True when it was queued (the page says the same either way)."""
        app, web = self.app, self.app.settings.web
        with session_scope(app.session_factory) as s:
            now = app.clock()
            since = now - RATE_WINDOW
            per_address = tq.signin_requests_since(s, since, address=address)
            per_client = tq.signin_requests_since(s, since, client=client)
            # What the limits no longer need goes (addresses, even mistyped ones, and client IPs are
            # personal data): requests older than a day, links spent or expired a day ago.
            tq.prune_signins(s, now - KEEP_SIGNINS)
            tq.add_signin_request(s, address, client, now)
            if per_address >= web.signin_per_address or per_client >= web.signin_per_client:
                log.warning(
                    "signin_rate_limited", to=address, client=client, per_address=per_address, per_client=per_client
                )
                return False
            if not may_sign_in(app.settings, address, tq.known_address(s, address)):
                log.info("signin_unknown_address", to=address, client=client)
                return False
            refusal = app.guard.check(s, address, None, now)
            if refusal is not None:
                log.warning("signin_mail_held", to=address, reason=refusal.text())
                return False
            token = secrets.token_urlsafe(32)
            digest = token_hash(token)
            tq.add_token(s, digest, address, now, now + timedelta(minutes=TOKEN_MINUTES))
            latest = s.execute(
                select(Ticket.queue, Ticket.language)
                .where(Ticket.requester_email == address)
                .order_by(Ticket.id.desc())
                .limit(1)
            ).first()
            queue = next((q for q in app.settings.queues if latest and q.name == latest.queue), app.settings.queues[0])
            lang = latest.language if latest and latest.language in ("de", "en") else language
            built = app.builder.signin(
                queue,
                Address(tq.participant_name(s, address), address),
                language=lang,
                url=f"{self.base_url}{SIGNIN_PATH}{token}",
                minutes=TOKEN_MINUTES,
                now=now,
            )
            enqueue(
                s,
                built.out,
                kind=MessageKind.SIGNIN.value,
                dedup_key=f"signin:{digest}",
                now=now,
                ticket_id=None,
                language=lang,
            )
            app.guard.record(s, address, None, MessageKind.SIGNIN.value, now)
        log.info("signin_mail_queued", to=address, client=client)
        return True

    def redeem(self, token: str) -> str | None:
        """The address a sign-in token was issued to, spending it; None for a token that is unknown,
        used or expired."""
        if not token or len(token) > 128:
            return None
        with session_scope(self.app.session_factory) as s:
            address = tq.use_token(s, token_hash(token), self.app.clock())
        log.info("signin_link_used" if address else "signin_link_refused", to=address)
        return address
