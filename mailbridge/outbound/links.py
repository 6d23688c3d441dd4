"""Signed download links for attachments too large to travel with an agent notification, and the
encrypted links to a case that customers' mails carry (:class:`CaseLinks`).

A link's token names the attachment row and the address the notification went to, is signed with
the ``[web]`` key (itsdangerous ``URLSafeTimedSerializer``: HMAC-SHA1 over the payload and the time
it was issued, with a salt of its own so a signature made with the same key for another purpose is
never accepted here) and expires after ``web.link_days``. The web app (``mailbridge/web/``) serves
the file only while the address still receives the queue's mail (:func:`may_download`). No I/O.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from cryptography.fernet import Fernet, InvalidToken
from itsdangerous import BadData, TimestampSigner, URLSafeTimedSerializer

from mailbridge.settings import QueueSettings

# Domain separation: a token signed for another purpose with the same key does not verify here.
_SALT = "mailbridge/attachment-download/v1"
# The path below base_url the web app serves downloads at.
DOWNLOAD_PATH = "attachments/"


def may_download(queue: QueueSettings, address: str) -> bool:
    """Whether the address a link was issued to may still download a file of ``queue``'s cases:
    while it is an agent of the queue or one of its notification recipients (a team list)."""
    address = address.lower()
    return queue.is_agent(address) or address in queue.notify_addresses


class AttachmentLinks:
    """Issues and checks download tokens at the app's clock (tests move it to expire a link)."""

    def __init__(self, secret: str, base_url: str, days: float, clock: Callable[[], datetime]):
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.max_age = timedelta(days=days)
        clock_ = clock

        class _Signer(TimestampSigner):
            def get_timestamp(self) -> int:
                return int(clock_().timestamp())

        self._serializer = URLSafeTimedSerializer(secret, salt=_SALT, signer=_Signer)
        self._clock = clock

    def token(self, attachment_id: int, address: str) -> str:
        return self._serializer.dumps({"a": int(attachment_id), "to": address.lower()})

    def url(self, attachment_id: int, address: str) -> str:
        return f"{self.base_url}{DOWNLOAD_PATH}{self.token(attachment_id, address)}"

    def verify(self, token: str) -> tuple[int, str] | None:
        """(attachment id, address) of a token signed with our key and issued within
        ``link_days`` of now; None for anything else. Never raises."""
        if not isinstance(token, str) or len(token) > 1024:
            return None
        try:
            payload, issued = self._serializer.loads(token, return_timestamp=True)
        except (BadData, ValueError, TypeError):
            return None
        now = self._clock()
        if issued > now + timedelta(minutes=5) or now - issued > self.max_age:
            return None
        if (
            not isinstance(payload, dict)
            or not isinstance(payload.get("a"), int)
            or not isinstance(payload.get("to"), str)
        ):
            return None
        return payload["a"], payload["to"]


# The path below base_url the web app (the customers' case tracker) serves a case link at.
CASE_PATH = "c/"


class CaseLinkError(Exception):
    """A case link that opens nothing."""


class CaseLinkInvalid(CaseLinkError):
    """Not a token we signed (changed, truncated, signed with another key or for another purpose)."""


class CaseLinkExpired(CaseLinkError):
    """A token we signed, but older than ``[web] case_link_days`` (or issued in the future). Its
    signed address and case number are trustworthy: the web app offers that address a fresh
    sign-in mail."""

    def __init__(self, address: str, case_number: str):
        super().__init__(f"the link to case {case_number} has expired")
        self.address = address
        self.case_number = case_number


class CaseLinks:
    """The time-limited link to a case for one recipient that every acknowledgement and relayed
    answer carries when ``[web] base_url`` is set: ``{base_url}c/{token}``. The token is encrypted,
    not only signed (``cryptography``'s Fernet, AES-CBC + HMAC-SHA256, with a key derived from the
    ``[web]`` key and the purpose "case-link"): a link in a stored or forwarded mail does not show
    whose it is, so an erasure that removes an address from the text leaves no readable copy of it
    in a link. Its time is the app's clock; valid ``[web] case_link_days``. No I/O."""

    SALT = "case-link"

    def __init__(self, secret: str, base_url: str, days: float, clock: Callable[[], datetime]):
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.max_age = timedelta(days=days)
        key = hashlib.sha256(f"mailbridge {self.SALT}\0{secret}".encode()).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(key))
        self._clock = clock

    def token(self, address: str, case_number: str) -> str:
        payload = json.dumps({"a": address.lower(), "c": str(case_number)}, separators=(",", ":"))
        when = int(self._clock().timestamp())
        return self._fernet.encrypt_at_time(payload.encode(), when).decode("ascii").rstrip("=")

    def url(self, address: str, case_number: str) -> str:
        return f"{self.base_url}{CASE_PATH}{self.token(address, case_number)}"

    def load(self, token: str) -> tuple[str, str]:
        """(address, case number) of a valid token. Raises :class:`CaseLinkInvalid` for anything we
        did not make, :class:`CaseLinkExpired` for a token of ours past ``case_link_days``."""
        if not isinstance(token, str) or not token or len(token) > 2048 or not token.isascii():
            raise CaseLinkInvalid("not a case link")
        raw = (token + "=" * (-len(token) % 4)).encode("ascii")
        try:
            # Only the canonical spelling: base64 ignores a last character's unused bits.
            if base64.urlsafe_b64encode(base64.urlsafe_b64decode(raw)) != raw:
                raise ValueError("not canonical base64")
            payload = json.loads(self._fernet.decrypt(raw))
            issued = datetime.fromtimestamp(self._fernet.extract_timestamp(raw), UTC)
        except (InvalidToken, ValueError, TypeError):
            raise CaseLinkInvalid("not a case link") from None
        if (
            not isinstance(payload, dict)
            or not isinstance(payload.get("a"), str)
            or not isinstance(payload.get("c"), str)
        ):
            raise CaseLinkInvalid("not a case link")
        now = self._clock()
        if issued > now + timedelta(minutes=5) or now - issued > self.max_age:
            raise CaseLinkExpired(payload["a"], payload["c"])
        return payload["a"], payload["c"]
