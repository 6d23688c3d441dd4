"""A local OAuth2 authorization server for the tests: the far side of Microsoft 365 / Google / Keycloak.

:class:`OAuthServer` runs on 127.0.0.1 (free ports) in a thread of the test process. Its endpoint logic is
authlib's server classes (``authlib.oauth2``): the HTTP part here only turns a request into an
``OAuth2Request`` and authlib's answer back into a response. It serves

==========================================  ====================================================================
``POST /token``, ``POST /{tenant}/oauth2/   token endpoint: ``client_credentials``, ``refresh_token`` (rotation:
v2.0/token``                                every use returns a new refresh token and revokes the old one),
                                            ``urn:ietf:params:oauth:grant-type:device_code`` (RFC 8628:
                                            ``authorization_pending``, ``slow_down``, ``expired_token``,
                                            ``access_denied``), ``urn:ietf:params:oauth:grant-type:jwt-bearer``
                                            (RFC 7523, Google's service accounts: RS256 assertion checked with
                                            the registered public key, ``sub`` = the impersonated user)
``POST /device``, ``POST /{tenant}/oauth2/  device authorization (RFC 8628 §3.1), with Microsoft's ``message``
v2.0/devicecode``
``POST /introspect``                        token introspection (RFC 7662; HTTP Basic auth of a client allowed to
                                            introspect, e.g. :attr:`OAuthServer.introspection_url_with_credentials`
                                            for Dovecot): ``active``, ``username``, ``sub``, ``client_id``, ``scope``,
                                            ``exp``
``POST /revoke``                            token revocation (RFC 7009)
``GET /.well-known/openid-configuration``,  OIDC metadata; msal's tenant discovery reads the second,
``GET /{tenant}/v2.0/.well-known/openid-
configuration``
``GET /common/discovery/instance``          msal's instance discovery (Microsoft's answer shape), for an
                                            ``instance_discovery=`` URL pointing here
==========================================  ====================================================================

msal accepts only ``https`` authorities (``msal.authority.canonicalize``), so ``OAuthServer(tls=True)``
serves the same state on a second, TLS listener with a certificate of a test CA (trustme); hand
:attr:`OAuthServer.ca_file` to the client (requests reads ``REQUESTS_CA_BUNDLE``). google-auth takes any
``token_uri``, http included.

Test hooks (all thread-safe): :meth:`register_client`, :meth:`register_service_account`,
:meth:`mint_refresh_token` / :meth:`mint_access_token` (a user's consent given out of band),
:meth:`approve` / :meth:`deny` (the user at the verification page), :meth:`revoke_consent` (→
``invalid_grant`` with an AADSTS-style ``error_codes``/``error_description``), :meth:`expire_secret`
(→ ``invalid_client``, AADSTS7000222), :attr:`access_token_lifetime`, :meth:`fail` / :meth:`recover`
(the token endpoint answers 503), :meth:`token_requests` (counted per grant type), :meth:`introspect`.

Pytest: ``from tests.support.oauth_server import oauth_server_fixture, oauth_server_session_fixture  #
noqa: F401``; ``oauth_server`` is the session's server after :meth:`OAuthServer.reset`.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import secrets
import ssl
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from authlib.oauth2 import AuthorizationServer, OAuth2Error, OAuth2Request
from authlib.oauth2.rfc6749 import ClientMixin, TokenMixin, grants
from authlib.oauth2.rfc6749.errors import InvalidClientError, InvalidGrantError
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload
from authlib.oauth2.rfc6750 import BearerTokenGenerator
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion, JWTBearerGrant
from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from authlib.oauth2.rfc8628 import DeviceAuthorizationEndpoint, DeviceCodeGrant
from authlib.oauth2.rfc8628.models import DeviceCredentialDict
from joserfc import jwk, jwt

LOOPBACK = "127.0.0.1"
DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
DEFAULT_GRANTS = ("client_credentials", "refresh_token", DEVICE_CODE_GRANT)
# What Microsoft says when a user's grant is gone (the codes mailbridge must recognise).
AADSTS = {
    50173: "The provided grant has expired due to it being revoked, a fresh auth token is needed. "
    "The user might have changed or reset their password.",
    65001: "The user or administrator has not consented to use the application.",
    70008: "The provided authorization code or refresh token has expired due to inactivity.",
    700082: "The refresh token has expired due to inactivity.",
    7000222: "The provided client secret keys for app '{client_id}' are expired.",
}


def _aadsts_description(code: int, **kw: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return f"AADSTS{code}: {AADSTS[code].format(**kw)} Trace ID: {uuid.uuid4()} Timestamp: {stamp}"


class _AadstsMixin:
    """An OAuth2 error with Microsoft's extra fields: ``error_codes``, ``trace_id``, ``timestamp``."""

    def __init__(self, code: int, **kw: str):
        super().__init__(description=_aadsts_description(code, **kw))  # type: ignore[call-arg]
        self.code = code

    def get_body(self):
        return [
            *super().get_body(),  # type: ignore[misc]
            ("error_codes", [self.code]),
            ("timestamp", datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")),
            ("trace_id", str(uuid.uuid4())),
            ("correlation_id", str(uuid.uuid4())),
        ]


class AadstsInvalidGrant(_AadstsMixin, InvalidGrantError):
    pass


class AadstsInvalidClient(_AadstsMixin, InvalidClientError):
    status_code = 401


# -- models ---------------------------------------------------------------------------------------------


@dataclass(eq=False)
class Client(ClientMixin):
    client_id: str
    secret: str | None = None  # None: a public client (device code without a secret)
    grant_types: tuple[str, ...] = DEFAULT_GRANTS
    # client_credentials tokens act for this mailbox (what Add-MailboxPermission grants an app)
    mailbox: str | None = None
    may_introspect: bool = False
    public_key: Any = None  # jwk.RSAKey: service accounts (jwt-bearer)
    # jwk.RSAKey of the app's certificate: it authenticates with a signed client_assertion (RFC 7523
    # §2.2, what msal sends for client_credential={"private_key", "thumbprint"})
    certificate_key: Any = None
    secret_expired: bool = False
    consent_revoked: bool = False  # admin consent withdrawn: every grant of this client fails

    def get_client_id(self):
        return self.client_id

    def get_default_redirect_uri(self):
        return None

    def get_allowed_scope(self, scope):
        return scope or ""

    def check_redirect_uri(self, redirect_uri):
        return False

    def check_client_secret(self, client_secret):
        if self.secret is None or not secrets.compare_digest(self.secret, client_secret or ""):
            return False
        if self.secret_expired:
            raise AadstsInvalidClient(7000222, client_id=self.client_id)
        return True

    def check_endpoint_auth_method(self, method, endpoint):
        if method == _ClientAssertion.CLIENT_AUTH_METHOD:
            return self.certificate_key is not None
        if method == "none":
            return self.secret is None
        if method in ("client_secret_basic", "client_secret_post"):
            return self.secret is not None
        return False

    def check_response_type(self, response_type):
        return False

    def check_grant_type(self, grant_type):
        return grant_type in self.grant_types


@dataclass(eq=False)
class Token(TokenMixin):
    client_id: str
    user: str | None
    scope: str
    access_token: str
    expires_in: int
    issued_at: float
    refresh_token: str | None = None
    revoked: bool = False
    refresh_revoked: bool = False
    grant_type: str = ""

    def check_client(self, client):
        return client.get_client_id() == self.client_id

    def get_scope(self):
        return self.scope

    def get_expires_in(self):
        return self.expires_in

    def is_expired(self):
        return time.time() >= self.issued_at + self.expires_in

    def is_revoked(self):
        return self.revoked

    def get_user(self):
        return self.user

    def get_client(self):
        return None


# -- authlib's grants and endpoints, bound to the state of one OAuthServer ---------------------------------


class _ClientAssertion(JWTBearerClientAssertion):
    """Client authentication by a JWT signed with the app's certificate key (``client_assertion``)."""

    def __init__(self, state: OAuthServer):
        super().__init__(validate_jti=True)
        self.state = state

    def resolve_client_public_key(self, client):
        return client.certificate_key

    def get_audiences(self):
        # msal signs for the token endpoint it posts to (/{tenant}/oauth2/v2.0/token)
        return [*self.state.token_urls, self.state._request_url]

    def validate_jti(self, claims, jti):
        if jti in self.state._seen_jti:
            return False
        self.state._seen_jti.add(jti)
        return True


CLIENT_AUTH = ["client_secret_basic", "client_secret_post", _ClientAssertion.CLIENT_AUTH_METHOD]


class _ClientCredentials(grants.ClientCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = CLIENT_AUTH

    def validate_token_request(self):
        super().validate_token_request()
        client = self.request.client
        if client.consent_revoked:
            raise AadstsInvalidGrant(65001)


class _RefreshToken(grants.RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = [*CLIENT_AUTH, "none"]  # noqa: RUF012
    INCLUDE_NEW_REFRESH_TOKEN = True  # rotation

    def authenticate_refresh_token(self, refresh_token):
        state: OAuthServer = self.server.state
        token = state._by_refresh.get(refresh_token)
        if token is None:
            return None
        user = (token.user or "").lower()
        revoked = state._revoked_users.get((user, None)) or state._revoked_users.get((user, token.client_id))
        client = state._clients.get(token.client_id)
        if revoked is not None:
            raise AadstsInvalidGrant(revoked)
        if client is not None and client.consent_revoked:
            raise AadstsInvalidGrant(65001)
        if token.refresh_revoked:
            raise InvalidGrantError(description="The refresh token was already used (rotated) or revoked.")
        return token

    def authenticate_user(self, refresh_token):
        return refresh_token.user

    def revoke_old_credential(self, refresh_token):
        refresh_token.refresh_revoked = True


class _DeviceCode(DeviceCodeGrant):
    def query_device_credential(self, device_code):
        return self.server.state._device.get(device_code)

    def query_user_grant(self, user_code):
        state: OAuthServer = self.server.state
        return state._user_grants.get(user_code)

    def should_slow_down(self, credential):
        now = time.monotonic()
        last = credential.get("last_poll")
        credential["last_poll"] = now
        if last is not None and now - last < credential["interval"]:
            credential["interval"] += 5  # RFC 8628 §3.5: +5 s for this and every later request
            return True
        return False

    def validate_device_credential(self, credential):
        user = super().validate_device_credential(credential)
        # A code is used once; polling with it again afterwards is an invalid grant.
        self.server.state._device.pop(self.request.payload.data.get("device_code"), None)
        return user


class _JWTBearer(JWTBearerGrant):
    def resolve_issuer_client(self, issuer):
        client = self.server.state._clients.get(issuer)
        return client if client is not None and client.public_key is not None else None

    def resolve_client_public_key(self, client):
        return client.public_key

    def authenticate_user(self, subject):
        return subject.lower()

    def get_audiences(self):
        # google-auth always signs for Google's token endpoint (aud), whatever token_uri it posts to;
        # this server stands in for that endpoint, so it accepts that audience besides its own URLs.
        return [*self.server.state.token_urls, GOOGLE_TOKEN_AUDIENCE]

    def process_assertion_claims(self, assertion):
        claims = super().process_assertion_claims(assertion)
        # Google puts the scope into the assertion, not into the form.
        self.request.scope = claims.get("scope") or self.request.payload.scope or ""
        return claims

    def create_token_response(self):
        token = self.generate_token(scope=self.request.scope, user=self.request.user, include_refresh_token=False)
        self.save_token(token)
        return 200, token, self.TOKEN_RESPONSE_HEADER

    def has_granted_permission(self, client, user):
        # Domain-wide delegation: the service account may act for every user, unless withdrawn.
        revoked = self.server.state._revoked_users
        return not client.consent_revoked and (user, None) not in revoked and (user, client.client_id) not in revoked


class _DeviceAuthorization(DeviceAuthorizationEndpoint):
    def get_verification_uri(self):
        return f"{self.server.state.url}/devicelogin"

    def save_device_credential(self, client_id, scope, data):
        state: OAuthServer = self.server.state
        state._device[data["device_code"]] = DeviceCredentialDict(
            client_id=client_id,
            scope=scope,
            expires_at=time.time() + state.device_code_lifetime,
            **{k: v for k, v in data.items() if k not in ("expires_in", "interval")},
            interval=state.device_interval,
        )

    def create_endpoint_response(self, request):
        self.EXPIRES_IN = self.server.state.device_code_lifetime
        self.INTERVAL = self.server.state.device_interval
        status, data, headers = super().create_endpoint_response(request)
        data["message"] = (
            f"To sign in, use a web browser to open the page {data['verification_uri']} "
            f"and enter the code {data['user_code']} to authenticate."
        )
        return status, data, headers


class _Introspection(IntrospectionEndpoint):
    def query_token(self, token_string, token_type_hint):
        state: OAuthServer = self.server.state
        if token_type_hint != "refresh_token" and token_string in state._by_access:
            return state._by_access[token_string]
        return state._by_refresh.get(token_string)

    def check_permission(self, token, client, request):
        return client.may_introspect or client.client_id == token.client_id

    def introspect_token(self, token):
        return self.server.state._introspection(token)

    def create_introspection_payload(self, token):
        payload = super().create_introspection_payload(token)
        self.server.state.introspections.append(
            {
                "token": token.access_token if token else None,
                "active": payload["active"],
                "username": payload.get("username"),
            }
        )
        return payload


class _Revocation(RevocationEndpoint):
    CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]  # noqa: RUF012

    def query_token(self, token_string, token_type_hint):
        state: OAuthServer = self.server.state
        return state._by_access.get(token_string) or state._by_refresh.get(token_string)

    def revoke_token(self, token, request):
        token.revoked = token.refresh_revoked = True


class _Request(OAuth2Request):
    def __init__(self, method: str, uri: str, headers: dict, form: dict[str, str]):
        super().__init__(method, uri, headers=headers)
        self._form = form
        self.payload = BasicOAuth2Payload(form)

    @property
    def args(self):
        return dict(parse_qsl(urlsplit(self.uri).query))

    @property
    def form(self):
        return self._form


class _AuthorizationServer(AuthorizationServer):
    def __init__(self, state: OAuthServer):
        super().__init__()
        self.state = state
        self.register_token_generator(
            "default",
            BearerTokenGenerator(
                access_token_generator=lambda **kw: "at-" + secrets.token_urlsafe(24),
                refresh_token_generator=lambda **kw: "rt-" + secrets.token_urlsafe(32),
                expires_generator=lambda client, grant_type: state.access_token_lifetime,
            ),
        )
        self.register_client_auth_method(_ClientAssertion.CLIENT_AUTH_METHOD, _ClientAssertion(state))
        for grant in (_ClientCredentials, _RefreshToken, _DeviceCode, _JWTBearer):
            self.register_grant(grant)
        for endpoint in (_DeviceAuthorization, _Introspection, _Revocation):
            self.register_endpoint(endpoint)

    def query_client(self, client_id):
        return self.state._clients.get(client_id)

    def save_token(self, token, request):
        self.state._save(token, request)

    def create_oauth2_request(self, request):
        return request

    def create_json_request(self, request):
        return request

    def handle_response(self, status, body, headers):
        return status, body, headers

    def send_signal(self, name, *args, **kwargs):
        pass


# -- HTTP -------------------------------------------------------------------------------------------------


class _HttpHandler(BaseHTTPRequestHandler):
    server_version = "mailbridge-test-oauth/1"
    state: OAuthServer  # set on the per-server subclass

    def log_message(self, format, *args):  # the test output stays quiet
        pass

    def _send(self, status: int, body: Any, headers: Any = ()) -> None:
        data = json.dumps(body).encode() if not isinstance(body, bytes | str) else body
        data = data.encode() if isinstance(data, str) else data
        self.send_response(status)
        names = set()
        for name, value in headers.items() if isinstance(headers, dict) else headers:
            names.add(name.lower())
            self.send_header(name, value)
        if "content-type" not in names:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        path = urlsplit(self.path).path
        base = self.state._base_for(self.server)
        if path.endswith("/.well-known/openid-configuration"):
            prefix = path[: -len("/.well-known/openid-configuration")]
            self._send(200, self.state.metadata(base, prefix))
        elif path.endswith("/discovery/instance"):
            query = dict(parse_qsl(urlsplit(self.path).query))
            # msal sends https://{host}/{tenant}/oauth2/v2.0/authorize, the port left out (it keeps only
            # the host name): the tenant comes from its path, the address is ours.
            endpoint = urlsplit(query.get("authorization_endpoint", "")).path
            tenant = endpoint.split("/oauth2/")[0] if "/oauth2/" in endpoint else "/common"
            tenant_base = f"{base}{tenant}"
            self._send(
                200,
                {
                    "tenant_discovery_endpoint": f"{tenant_base}/v2.0/.well-known/openid-configuration",
                    "api-version": "1.1",
                    "metadata": [{"preferred_network": LOOPBACK, "preferred_cache": LOOPBACK, "aliases": [LOOPBACK]}],
                },
            )
        elif path.endswith("/jwks"):
            self._send(200, {"keys": [self.state._signing_key.as_dict(private=False)]})
        else:
            self._send(404, {"error": "not_found"})

    def do_POST(self):
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace")
        form = dict(parse_qsl(body, keep_blank_values=True))
        base = self.state._base_for(self.server)
        request = _Request("POST", base + self.path, dict(self.headers.items()), form)
        path = split.path
        if path.endswith("/token"):
            kind = "token"
        elif path.endswith("/devicecode") or path.endswith("/device"):
            kind = "device_authorization"
        elif path.endswith("/introspect"):
            kind = "introspection"
        elif path.endswith("/revoke"):
            kind = "revocation"
        else:
            self._send(404, {"error": "not_found"})
            return
        status, out, headers = self.state._handle(kind, request, base, path)
        self._send(status, out, headers)


# -- the server -------------------------------------------------------------------------------------------


class OAuthServer:
    """See the module docstring. ``tls=True`` adds an https listener (:attr:`https_url`, :attr:`ca_file`)."""

    def __init__(self, *, tls: bool = False, workdir: Path | None = None):
        self.tls = tls
        self._workdir = workdir
        self._lock = threading.RLock()
        self._servers: list[tuple[ThreadingHTTPServer, threading.Thread, str]] = []
        self._signing_key = jwk.RSAKey.generate_key(2048, parameters={"kid": "test-signing-key"})
        self.ca_file: Path | None = None
        self.introspection_client_id = "dovecot"
        self.introspection_client_secret = secrets.token_urlsafe(16)
        self.reset()

    # -- lifetime --

    def reset(self) -> None:
        """No clients (but the introspection client), no tokens, no counts, no failure, default lifetimes."""
        with self._lock:
            self._clients: dict[str, Client] = {}
            self._by_access: dict[str, Token] = {}
            self._by_refresh: dict[str, Token] = {}
            self._device: dict[str, DeviceCredentialDict] = {}
            self._user_grants: dict[str, tuple[str, bool]] = {}
            # (user, client_id or None for every client) -> the AADSTS code of the refusal
            self._revoked_users: dict[tuple[str, str | None], int] = {}
            self._counts: Counter[str] = Counter()
            self._failing: tuple[int, int | None, int | None] | None = None
            self.requests: list[dict[str, Any]] = []
            # every introspection answered (Dovecot's, the SMTP server's): token, active, username
            self.introspections: list[dict[str, Any]] = []
            self._seen_jti: set[str] = set()
            self.access_token_lifetime = 3600
            self.device_code_lifetime = 900
            self.device_interval = 1
            self.register_client(
                self.introspection_client_id, self.introspection_client_secret, grant_types=(), may_introspect=True
            )

    def start(self) -> OAuthServer:
        self._authz = _AuthorizationServer(self)
        self._listen("http", None)
        if self.tls:
            import trustme

            ca = trustme.CA()
            cert = ca.issue_cert(LOOPBACK, "localhost")
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            cert.configure_cert(ctx)
            import tempfile

            workdir = self._workdir or Path(tempfile.mkdtemp(prefix="mailbridge-oauth-"))
            self._own_workdir = self._workdir is None
            self._workdir = workdir
            self.ca_file = workdir / "oauth-test-ca.pem"
            ca.cert_pem.write_to_path(str(self.ca_file))
            self._listen("https", ctx)
        return self

    def _listen(self, scheme: str, ctx: ssl.SSLContext | None) -> None:
        handler = type("Handler", (_HttpHandler,), {"state": self})
        httpd = ThreadingHTTPServer((LOOPBACK, 0), handler)
        httpd.daemon_threads = True
        if ctx is not None:
            # The handshake happens in the request's thread (first read), not in the accept loop.
            httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True, do_handshake_on_connect=False)
        thread = threading.Thread(target=httpd.serve_forever, name=f"oauth-server-{scheme}", daemon=True)
        thread.start()
        self._servers.append((httpd, thread, f"{scheme}://{LOOPBACK}:{httpd.server_address[1]}"))

    def stop(self) -> None:
        for httpd, thread, _ in self._servers:
            httpd.shutdown()
            httpd.server_close()
            thread.join(5)
        self._servers.clear()
        if self.ca_file is not None and getattr(self, "_own_workdir", False):
            import shutil

            shutil.rmtree(self.ca_file.parent, ignore_errors=True)

    def __enter__(self) -> OAuthServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- addresses --

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (generic flows, google-auth, Dovecot)."""
        return self._servers[0][2]

    @property
    def https_url(self) -> str:
        """``https://127.0.0.1:PORT`` (msal); needs ``OAuthServer(tls=True)``."""
        if not self.tls:
            raise RuntimeError("no TLS listener: OAuthServer(tls=True)")
        return self._servers[1][2]

    @property
    def token_url(self) -> str:
        return f"{self.url}/token"

    @property
    def device_authorization_url(self) -> str:
        return f"{self.url}/device"

    @property
    def introspection_url(self) -> str:
        return f"{self.url}/introspect"

    @property
    def introspection_url_with_credentials(self) -> str:
        """The introspection URL with the introspection client's Basic credentials in it (Dovecot's form)."""
        host = self.url.split("://", 1)[1]
        return f"http://{self.introspection_client_id}:{self.introspection_client_secret}@{host}/introspect"

    def authority(self, tenant: str = "contoso.example") -> str:
        """An msal authority: ``https://127.0.0.1:PORT/{tenant}``."""
        return f"{self.https_url}/{tenant}"

    @property
    def instance_discovery_url(self) -> str:
        """For msal's ``instance_discovery=`` (answered like login.microsoftonline.com does)."""
        return f"{self.https_url}/common/discovery/instance"

    @property
    def token_urls(self) -> list[str]:
        return [f"{base}/token" for _, _, base in self._servers]

    def _base_for(self, httpd) -> str:
        for s, _, base in self._servers:
            if s is httpd:
                return base
        return self.url

    def metadata(self, base: str, prefix: str = "") -> dict[str, Any]:
        """OIDC discovery document. Under ``/{tenant}/v2.0`` the endpoints are Microsoft's
        (``/{tenant}/oauth2/v2.0/token``, ``…/devicecode``); at the root the generic ones."""
        if prefix.endswith("/v2.0"):
            tenant_root = f"{base}{prefix[: -len('/v2.0')]}"
            issuer = f"{base}{prefix}"
            ep = {
                "authorization_endpoint": f"{tenant_root}/oauth2/v2.0/authorize",
                "token_endpoint": f"{tenant_root}/oauth2/v2.0/token",
                "device_authorization_endpoint": f"{tenant_root}/oauth2/v2.0/devicecode",
            }
        else:
            issuer = f"{base}{prefix}"
            ep = {
                "authorization_endpoint": f"{base}{prefix}/authorize",
                "token_endpoint": f"{base}{prefix}/token",
                "device_authorization_endpoint": f"{base}{prefix}/device",
            }
        return {
            "issuer": issuer,
            **ep,
            "introspection_endpoint": f"{base}/introspect",
            "revocation_endpoint": f"{base}/revoke",
            "jwks_uri": f"{base}/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "grant_types_supported": [*DEFAULT_GRANTS, JWT_BEARER_GRANT],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
        }

    # -- test hooks --

    def register_client(
        self,
        client_id: str | None = None,
        secret: str | None = None,
        *,
        grant_types: tuple[str, ...] = DEFAULT_GRANTS,
        mailbox: str | None = None,
        may_introspect: bool = False,
        public: bool = False,
    ) -> Client:
        """A client (an app registration). ``secret`` None and not ``public``: a random secret.
        ``mailbox``: whose mailbox its client_credentials tokens open (introspection's ``username``)."""
        client_id = client_id or f"client-{uuid.uuid4()}"
        if secret is None and not public:
            secret = secrets.token_urlsafe(24)
        client = Client(
            client_id,
            None if public else secret,
            tuple(grant_types),
            mailbox=mailbox.lower() if mailbox else None,
            may_introspect=may_introspect,
        )
        with self._lock:
            self._clients[client_id] = client
        return client

    def register_service_account(self, client_email: str) -> dict[str, Any]:
        """A Google service account with domain-wide delegation: returns its JSON key file's content
        (``service_account.Credentials.from_service_account_info``), ``token_uri`` pointing here."""
        key = jwk.RSAKey.generate_key(2048)
        client = Client(client_email, None, (JWT_BEARER_GRANT,), public_key=key)
        with self._lock:
            self._clients[client_email] = client
        private_pem = key.as_pem(private=True).decode()
        return {
            "type": "service_account",
            "project_id": "mailbridge-test",
            "private_key_id": hashlib.sha1(private_pem.encode(), usedforsecurity=False).hexdigest(),
            "private_key": private_pem,
            "client_email": client_email,
            "client_id": str(int(hashlib.sha256(client_email.encode()).hexdigest()[:18], 16)),
            "token_uri": self.token_url,
        }

    def register_certificate_client(self, client_id: str, *, mailbox: str | None = None) -> tuple[bytes, str]:
        """An app registration with a certificate instead of a secret (Microsoft app-only): returns the
        PEM with its private key and certificate (what ``certificate_file`` holds) and the
        certificate's SHA-1 thumbprint in hex, as the portal shows it."""
        import trustme
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization

        # RSA, as Entra ID wants it (trustme makes ECDSA keys by default)
        leaf = trustme.CA(key_type=trustme.KeyType.RSA).issue_cert(
            f"{client_id}.apps.example", key_type=trustme.KeyType.RSA
        )
        cert_pem = leaf.cert_chain_pems[0].bytes()
        cert = x509.load_pem_x509_certificate(cert_pem)
        public = cert.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        client = Client(
            client_id,
            None,
            DEFAULT_GRANTS,
            mailbox=mailbox.lower() if mailbox else None,
            certificate_key=jwk.RSAKey.import_key(public),
        )
        with self._lock:
            self._clients[client_id] = client
        return leaf.private_key_pem.bytes() + cert_pem, cert.fingerprint(hashes.SHA1()).hex().upper()  # noqa: S303

    def mint_refresh_token(self, client_id: str, user: str, scope: str = "offline_access") -> str:
        """A refresh token as if ``user`` had consented to ``client_id`` (an earlier device-code login)."""
        return self._issue(client_id, user, scope, with_refresh=True, grant_type="minted").refresh_token  # type: ignore[return-value]

    def mint_access_token(self, client_id: str, user: str | None, scope: str = "", lifetime: int | None = None) -> str:
        """An access token for ``user`` (None: the client's mailbox), without a token request."""
        token = self._issue(client_id, user, scope, with_refresh=False, grant_type="minted")
        if lifetime is not None:
            token.expires_in = lifetime
        return token.access_token

    def approve(self, user_code: str, user: str) -> None:
        """The user entered ``user_code`` at the verification page and consented."""
        with self._lock:
            self._user_grants[user_code] = (user.lower(), True)

    def deny(self, user_code: str, user: str = "someone") -> None:
        with self._lock:
            self._user_grants[user_code] = (user.lower(), False)

    def pending_user_codes(self) -> list[str]:
        with self._lock:
            return [c["user_code"] for c in self._device.values()]

    def revoke_consent(self, user: str | None = None, *, client_id: str | None = None, code: int = 50173) -> None:
        """A grant is gone (password changed, consent withdrawn): refresh tokens answer ``invalid_grant``
        with ``AADSTS{code}`` and the access tokens concerned stop being active. ``user``: that user's
        grants (to ``client_id`` only, when given); ``client_id`` alone: the admin withdrew the app's
        consent, every grant of that client fails (AADSTS65001)."""
        with self._lock:
            if user is not None:
                self._revoked_users[(user.lower(), client_id)] = code
            elif client_id is not None:
                self._clients[client_id].consent_revoked = True
            for token in self._by_access.values():
                if (user is None or (token.user or "") == user.lower()) and (
                    client_id is None or token.client_id == client_id
                ):
                    token.revoked = True

    def restore_consent(self, user: str, client_id: str | None = None) -> None:
        with self._lock:
            self._revoked_users.pop((user.lower(), client_id), None)

    def expire_secret(self, client_id: str) -> None:
        """The client secret's end date passed: every request with it answers ``invalid_client`` (AADSTS7000222)."""
        with self._lock:
            self._clients[client_id].secret_expired = True

    def revoke_access_tokens(self, user: str | None = None, *, client_id: str | None = None) -> None:
        """Every access token (of ``user``, of ``client_id``) stops being active; refresh tokens stay valid."""
        with self._lock:
            for token in self._by_access.values():
                if (user is None or (token.user or "") == user.lower()) and (
                    client_id is None or token.client_id == client_id
                ):
                    token.revoked = True

    def fail(self, status: int = 503, times: int | None = None, retry_after: int | None = None) -> None:
        """The token endpoint (and device authorization) answers ``status``: ``times`` times, or until
        :meth:`recover`; with a ``Retry-After`` header when given. (msal replays a 5xx answer without
        asking again for Retry-After seconds, 5 without the header; a 400 answer for 60 s.)"""
        with self._lock:
            self._failing = (status, times, retry_after)

    def recover(self) -> None:
        with self._lock:
            self._failing = None

    def token_requests(self, grant_type: str | None = None) -> int:
        """How many token requests arrived (failed ones too), in all or of one grant type."""
        with self._lock:
            return sum(self._counts.values()) if grant_type is None else self._counts[grant_type]

    def introspect(self, access_token: str) -> dict[str, Any]:
        """What the introspection endpoint answers for ``access_token`` (without HTTP)."""
        with self._lock:
            token = self._by_access.get(access_token)
            if token is None or token.is_expired() or token.is_revoked():
                return {"active": False}
            return self._introspection(token)

    def access_tokens(self, user: str | None = None) -> list[str]:
        with self._lock:
            return [t.access_token for t in self._by_access.values() if user is None or t.user == user.lower()]

    def live_refresh_tokens(self, user: str | None = None) -> list[str]:
        """The refresh tokens that still work (not rotated away, not revoked)."""
        with self._lock:
            return [
                rt
                for rt, t in self._by_refresh.items()
                if not t.refresh_revoked and (user is None or t.user == user.lower())
            ]

    # -- internals (under the lock) --

    def _handle(self, kind: str, request: _Request, base: str, path: str) -> tuple[int, Any, Any]:
        with self._lock:
            if kind in ("token", "device_authorization"):
                grant = request.form.get("grant_type", "") if kind == "token" else "device_authorization"
                self._counts[grant] += 1
                entry = {
                    "endpoint": kind,
                    "grant_type": grant,
                    "client_id": request.form.get("client_id"),
                    "at": time.monotonic(),
                }
                self.requests.append(entry)
                if self._failing is not None:
                    status, times, retry_after = self._failing
                    if times is not None:
                        self._failing = (status, times - 1, retry_after) if times > 1 else None
                    entry["status"] = status
                    headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
                    body = {"error": "temporarily_unavailable", "error_description": "test: failing"}
                    return status, body, headers
            self._request_base = base
            self._request_url = base + path
            self._request_tenant = path.split("/oauth2/")[0].strip("/") if "/oauth2/" in path else None
            try:
                if kind == "token":
                    status, body, headers = self._authz.create_token_response(request)
                else:
                    status, body, headers = self._authz.create_endpoint_response(kind, request)
            except OAuth2Error as e:
                status, body, headers = e()
            if kind in ("token", "device_authorization"):
                entry["status"] = status
                entry["error"] = body.get("error") if isinstance(body, dict) else None
            return status, body, headers

    def _issue(self, client_id: str, user: str | None, scope: str, *, with_refresh: bool, grant_type: str) -> Token:
        with self._lock:
            client = self._clients[client_id]
            token = Token(
                client_id=client_id,
                user=(user or client.mailbox or "").lower() or None,
                scope=scope,
                access_token="at-" + secrets.token_urlsafe(24),
                expires_in=self.access_token_lifetime,
                issued_at=time.time(),
                refresh_token=("rt-" + secrets.token_urlsafe(32)) if with_refresh else None,
                grant_type=grant_type,
            )
            self._by_access[token.access_token] = token
            if token.refresh_token:
                self._by_refresh[token.refresh_token] = token
            return token

    def _save(self, token: dict[str, Any], request) -> None:
        client = request.client
        user = request.user
        if user is None and client is not None:
            user = client.mailbox
        saved = Token(
            client_id=client.client_id,
            user=(user or "").lower() or None,
            scope=token.get("scope", ""),
            access_token=token["access_token"],
            expires_in=int(token["expires_in"]),
            issued_at=time.time(),
            refresh_token=token.get("refresh_token"),
            grant_type=request.payload.grant_type or "",
        )
        self._by_access[saved.access_token] = saved
        if saved.refresh_token:
            self._by_refresh[saved.refresh_token] = saved
        if saved.grant_type == "client_credentials":
            return  # an app's own token: no user, no id_token, no client_info (msal caches it per app)
        scopes = (saved.scope or "").split()
        if "openid" in scopes and saved.user:
            token["id_token"] = self._id_token(client.client_id, saved.user)
        if saved.user and self._request_tenant is not None:
            # Microsoft's client_info (msal keys its account cache on it): uid.utid
            info = {"uid": hashlib.sha256(saved.user.encode()).hexdigest()[:32], "utid": self._request_tenant}
            token["client_info"] = base64.urlsafe_b64encode(json.dumps(info).encode()).decode().rstrip("=")

    def _id_token(self, client_id: str, user: str) -> str:
        now = int(time.time())
        tenant = self._request_tenant
        issuer = f"{self._request_base}/{tenant}/v2.0" if tenant else self._request_base
        claims = {
            "iss": issuer,
            "sub": hashlib.sha256(user.encode()).hexdigest()[:32],
            "aud": client_id,
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
            "preferred_username": user,
            "email": user,
            "name": user.split("@")[0],
            "oid": str(uuid.uuid5(uuid.NAMESPACE_URL, user)),
            "tid": tenant or "generic",
        }
        return jwt.encode({"alg": "RS256", "kid": "test-signing-key"}, claims, self._signing_key)

    def _introspection(self, token: Token) -> dict[str, Any]:
        return {
            "active": True,
            "username": token.user or "",
            "sub": token.user or token.client_id,
            "client_id": token.client_id,
            "scope": token.scope,
            "token_type": "Bearer",
            "iat": int(token.issued_at),
            "exp": int(token.issued_at + token.expires_in),
        }


# -- pytest fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session", name="oauth_server_session")
def oauth_server_session_fixture(tmp_path_factory) -> Iterator[OAuthServer]:
    """One local authorization server (http and https) for the test session."""
    server = OAuthServer(tls=True, workdir=tmp_path_factory.mktemp("oauth"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(name="oauth_server")
def oauth_server_fixture(oauth_server_session) -> OAuthServer:
    """The session's authorization server, reset for this test (no clients, tokens, counts or faults)."""
    oauth_server_session.reset()
    return oauth_server_session


@contextlib.contextmanager
def running(tls: bool = False) -> Iterator[OAuthServer]:
    """A server of its own (``with running() as server:``)."""
    server = OAuthServer(tls=tls)
    server.start()
    try:
        yield server
    finally:
        server.stop()


__all__ = [
    "AADSTS",
    "DEVICE_CODE_GRANT",
    "JWT_BEARER_GRANT",
    "Client",
    "OAuthServer",
    "oauth_server_fixture",
    "oauth_server_session_fixture",
    "running",
]
