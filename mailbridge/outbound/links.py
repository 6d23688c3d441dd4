"""Signed download links for attachments too large to travel with an agent notification.

A link's token names the attachment row and the address the notification went to, is signed with
the ``[web]`` key (itsdangerous ``URLSafeTimedSerializer``: HMAC-SHA1 over the payload and the time
it was issued, with a salt of its own so a signature made with the same key for another purpose is
never accepted here) and expires after ``web.link_days``. The web app (``mailbridge/web/``) serves
the file only while the address still receives the queue's mail (:func:`may_download`). No I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

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
