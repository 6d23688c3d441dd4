"""An SMTP server for the OAuth tests: aiosmtpd requiring ``AUTH XOAUTH2`` (or ``AUTH OAUTHBEARER``, RFC 7628)
before mail, each token checked at an RFC 7662 introspection endpoint (the local authorization server of
tests/support/oauth_server.py), the way Exchange Online and Gmail check theirs.

:class:`OAuthSmtpSink` is mailbridge's :class:`~mailbridge.embedded.SmtpSink` (``received``, ``wait_for``,
``set_reply``) with authentication required; aiosmtpd calls a handler's ``auth_<MECHANISM>`` methods for
mechanisms of its own (``AUTH=XOAUTH2 OAUTHBEARER`` in the EHLO answer). PLAIN and LOGIN are not offered.

A good token: introspection says ``active`` and its ``username`` is the login (case-insensitive). A bad
one gets what Google's servers send: a ``334`` challenge with a base64 JSON error, then, after the
client's empty (XOAUTH2) or ``^A`` (OAUTHBEARER) answer, ``535 5.7.8``. ``logins`` lists every attempt.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import urllib.parse
import urllib.request
from dataclasses import dataclass, field

from aiosmtpd.smtp import AuthResult

from mailbridge.embedded import SmtpSink, _Handler

REFUSED = "535 5.7.8 Username and Password not accepted (test: token refused by introspection)"


@dataclass
class Login:
    mechanism: str
    user: str
    ok: bool
    why: str = ""


@dataclass
class _OAuthHandler(_Handler):
    introspection_url: str = ""
    client_id: str = ""
    client_secret: str = ""
    logins: list[Login] = field(default_factory=list)
    # the authenticated login of each accepted mail, in the order of ``received``
    senders: list[str] = field(default_factory=list)

    def _introspect(self, token: str) -> dict:
        credentials = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        request = urllib.request.Request(  # noqa: S310 (a loopback http URL of the test's server)
            self.introspection_url,
            data=urllib.parse.urlencode({"token": token, "token_type_hint": "access_token"}).encode(),
            headers={"Authorization": f"Basic {credentials}"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return json.loads(response.read())

    async def _check(self, server, mechanism: str, user: str, token: str, error: dict, abort: bytes) -> AuthResult:
        """``abort``: the client's answer to the error challenge (XOAUTH2: empty; OAUTHBEARER: ^A)."""
        try:
            info = await asyncio.to_thread(self._introspect, token)
        except OSError as e:
            info = {"active": False, "why": f"introspection failed: {e}"}
        ok = bool(info.get("active")) and str(info.get("username", "")).lower() == user.lower()
        why = "" if ok else info.get("why") or ("inactive token" if not info.get("active") else "token of another user")
        with self.lock:
            self.logins.append(Login(mechanism, user, ok, why))
        if ok:
            return AuthResult(success=True, auth_data=user.lower())
        # The error challenge; the client answers it (empty line / ^A), then the final 535.
        answer = await server.challenge_auth(json.dumps(error))
        if not isinstance(answer, bytes):  # "*" or not base64: aiosmtpd has answered 501 already
            return AuthResult(success=False, handled=True)
        if answer not in (b"", abort):
            return AuthResult(success=False, handled=False, message="501 5.5.2 unexpected answer to the error")
        return AuthResult(success=False, handled=False, message=REFUSED)

    async def _initial(self, server, args: list[str]) -> bytes | None:
        if len(args) > 1:
            try:
                return base64.b64decode(args[1], validate=True)
            except ValueError:
                return None
        answer = await server.challenge_auth("")
        return answer if isinstance(answer, bytes) else None

    async def auth_XOAUTH2(self, server, args: list[str]) -> AuthResult:
        raw = await self._initial(server, args)
        fields = dict(p.split("=", 1) for p in (raw or b"").decode("utf-8", "replace").split("\x01") if "=" in p)
        user, auth = fields.get("user", ""), fields.get("auth", "")
        if not user or not auth.startswith("Bearer "):
            return AuthResult(success=False, handled=False, message="501 5.5.2 malformed XOAUTH2 response")
        error = {"status": "401", "schemes": "Bearer", "scope": "https://mail.google.com/"}
        return await self._check(server, "XOAUTH2", user, auth[len("Bearer ") :], error, b"")

    async def auth_OAUTHBEARER(self, server, args: list[str]) -> AuthResult:
        raw = (await self._initial(server, args) or b"").decode("utf-8", "replace")
        # RFC 7628: gs2-header "n,a=USER," then ^A-separated key=value pairs, ending ^A^A.
        header, _, rest = raw.partition("\x01")
        user = next((p[2:] for p in header.split(",") if p.startswith("a=")), "")
        fields = dict(p.split("=", 1) for p in rest.split("\x01") if "=" in p)
        auth = fields.get("auth", "")
        if not user or not auth.startswith("Bearer "):
            return AuthResult(success=False, handled=False, message="501 5.5.2 malformed OAUTHBEARER response")
        error = {"status": "invalid_token", "schemes": "Bearer", "scope": "https://mail.google.com/"}
        return await self._check(server, "OAUTHBEARER", user, auth[len("Bearer ") :], error, b"\x01")

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        # Authentication required before mail (aiosmtpd's own auth_required would warn at every
        # connection that AUTH without TLS is unsafe: on loopback in a test that is not news).
        if not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        reply = await super().handle_DATA(server, session, envelope)
        if reply.startswith("250"):
            with self.lock:
                self.senders.append(session.auth_data)
        return reply


class OAuthSmtpSink(SmtpSink):
    """:class:`SmtpSink` that takes mail only after AUTH XOAUTH2/OAUTHBEARER with a token the
    introspection endpoint finds active for the login. For an OAuthServer ``s``:
    ``OAuthSmtpSink(s.introspection_url, s.introspection_client_id, s.introspection_client_secret)``."""

    def __init__(self, introspection_url: str, client_id: str, client_secret: str, port: int | None = None):
        super().__init__(port)
        self.handler = _OAuthHandler(
            introspection_url=introspection_url, client_id=client_id, client_secret=client_secret
        )

    @property
    def logins(self) -> list[Login]:
        with self.handler.lock:
            return list(self.handler.logins)

    @property
    def senders(self) -> list[str]:
        with self.handler.lock:
            return list(self.handler.senders)

    def start(self) -> OAuthSmtpSink:
        from aiosmtpd.controller import Controller

        logging.getLogger("mail.log").setLevel(logging.WARNING)
        self.controller = Controller(
            self.handler,
            hostname=self.host,
            port=self.port,
            data_size_limit=0,
            auth_require_tls=False,  # loopback only; the token is what is checked here
            auth_exclude_mechanism=["PLAIN", "LOGIN"],
        )
        self.controller.start()
        return self

    @classmethod
    def for_server(cls, server) -> OAuthSmtpSink:
        """Checking tokens of ``server`` (a tests.support.oauth_server.OAuthServer)."""
        return cls(server.introspection_url, server.introspection_client_id, server.introspection_client_secret)
