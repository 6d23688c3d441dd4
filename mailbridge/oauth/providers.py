"""Getting a token from a provider, through its library: msal (Microsoft), google-auth (Google),
authlib (any OAuth2 endpoint). No OAuth is written here: each class maps mailbridge's settings onto
the library's documented calls and the library's answer (or error) onto :class:`Grant` /
:class:`~mailbridge.oauth.faults.TokenError`.

A provider holds no token: the token source (``oauth/source.py``) passes the stored refresh token in
and saves what comes back. msal and google-auth are built afresh for each request, so their own
in-memory caches never hand out a token the database does not know.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import requests

from mailbridge.oauth.faults import TokenError
from mailbridge.settings import (
    GOOGLE_TOKEN_URL,
    MICROSOFT_AUTHORITY,
    OAuth2Settings,
    OAuthFlow,
    OAuthProvider,
)

# Lifetime assumed when a token endpoint does not say (RFC 6749 5.1 makes expires_in optional).
DEFAULT_EXPIRES_IN = 3600
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


@dataclass(frozen=True)
class Grant:
    """What a token endpoint gave: the access token, when it expires, and a (rotated) refresh token."""

    access_token: str = field(repr=False)
    expires_at: datetime
    refresh_token: str | None = field(default=None, repr=False)


@dataclass
class DevicePrompt:
    """RFC 8628: what the person signing in is shown, and the library's handle to finish it."""

    verification_uri: str
    user_code: str
    expires_in: int
    message: str
    handle: Any = field(repr=False)


class Provider(Protocol):
    # The flow keeps a refresh token (device_code, refresh_token): without one a person must sign in.
    uses_refresh_token: bool

    def acquire(self, refresh_token: str | None, now: datetime) -> Grant: ...

    def start_device_login(self) -> DevicePrompt: ...

    def finish_device_login(self, prompt: DevicePrompt, now: datetime) -> Grant: ...


def _expires(now: datetime, expires_in: Any) -> datetime:
    try:
        seconds = int(expires_in)
    except (TypeError, ValueError):
        seconds = DEFAULT_EXPIRES_IN
    return now + timedelta(seconds=seconds)


def _unreachable(e: BaseException) -> TokenError:
    """The endpoint did not answer (connection refused, timeout, TLS): transient."""
    return TokenError.from_response(None, f"{type(e).__name__}: {e}")


def _verify(o: OAuth2Settings) -> dict[str, Any]:
    """``verify=`` for one request: the ca_file when set. Given per request, because requests lets
    the environment's REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override a Session's ``verify``
    (psf/requests#3829), which would silently drop ca_file on many hosts."""
    return {"verify": str(o.ca_file)} if o.ca_file is not None else {}


class HttpSession(requests.Session):
    """A requests session that applies ``ca_file`` and the timeout to every request (the seam msal
    and google-auth take: ``http_client=`` / ``Request(session=)``)."""

    def __init__(self, o: OAuth2Settings):
        super().__init__()
        self._extra = {**_verify(o), "timeout": o.timeout}

    def request(self, method, url, *args, **kwargs):  # type: ignore[override]
        for k, v in self._extra.items():
            if kwargs.get(k) is None:
                kwargs[k] = v
        return super().request(method, url, *args, **kwargs)


def _no_device_flow(flow: OAuthFlow) -> TokenError:
    return TokenError(
        f"flow {flow.value!r} has no interactive sign-in",
        code=None,
        permanent=True,
        hint="`mailbridge auth login` is for flow device_code",
    )


# -------------------------------------------------------------------------------- generic


class GenericProvider:
    """Any OAuth2 token endpoint through authlib's requests client (``OAuth2Session``)."""

    def __init__(self, o: OAuth2Settings):
        self.o = o
        self.uses_refresh_token = o.flow in (OAuthFlow.REFRESH_TOKEN, OAuthFlow.DEVICE_CODE)

    def _session(self):
        from authlib.integrations.requests_client import OAuth2Session

        o = self.o
        secret = o.client_secret.get_secret_value() if o.client_secret is not None else None
        return OAuth2Session(client_id=o.client_id, client_secret=secret, scope=" ".join(o.scope_list) or None)

    def _call(self, fn: Callable[[], dict], now: datetime) -> Grant:
        from authlib.integrations.base_client import OAuthError

        try:
            token = fn()
        except OAuthError as e:
            raise TokenError.from_response(e.error, e.description) from None
        except (requests.RequestException, ValueError) as e:  # ValueError: not a JSON answer (a 502 page)
            raise _unreachable(e) from None
        if "access_token" not in token:
            raise TokenError.from_response("invalid_response", "the token endpoint sent no access_token")
        return Grant(token["access_token"], _expires(now, token.get("expires_in")), token.get("refresh_token"))

    def acquire(self, refresh_token: str | None, now: datetime) -> Grant:
        o = self.o
        s = self._session()
        if o.flow is OAuthFlow.CLIENT_CREDENTIALS:
            extra = {"timeout": o.timeout, **_verify(o)}
            return self._call(lambda: s.fetch_token(o.token_url, grant_type="client_credentials", **extra), now)
        assert refresh_token is not None
        return self._call(
            lambda: s.refresh_token(o.token_url, refresh_token=refresh_token, timeout=o.timeout, **_verify(o)), now
        )

    def start_device_login(self) -> DevicePrompt:
        o = self.o
        if o.flow is not OAuthFlow.DEVICE_CODE:
            raise _no_device_flow(o.flow)
        s = self._session()
        try:
            resp = s.post(
                o.device_authorization_url,
                data={"client_id": o.client_id, **({"scope": " ".join(o.scope_list)} if o.scope_list else {})},
                withhold_token=True,
                timeout=o.timeout,
                **_verify(o),
            )
            data = resp.json()
        except (requests.RequestException, ValueError) as e:
            raise _unreachable(e) from None
        if "error" in data or "device_code" not in data:
            raise TokenError.from_response(data.get("error", "invalid_response"), data.get("error_description"))
        uri = data.get("verification_uri_complete") or data["verification_uri"]
        return DevicePrompt(
            verification_uri=data["verification_uri"],
            user_code=data["user_code"],
            expires_in=int(data.get("expires_in", 600)),
            message=f"Open {uri} and enter the code {data['user_code']}",
            handle=data,
        )

    def finish_device_login(self, prompt: DevicePrompt, now: datetime) -> Grant:
        """Poll the token endpoint (RFC 8628 3.4/3.5) until the person signed in, refused, or the
        code expired."""
        from authlib.integrations.base_client import OAuthError

        o = self.o
        s = self._session()
        interval = int(prompt.handle.get("interval", 5))
        deadline = time.monotonic() + prompt.expires_in
        while True:
            try:
                return self._call(
                    lambda: s.fetch_token(
                        o.token_url,
                        grant_type=DEVICE_GRANT,
                        device_code=prompt.handle["device_code"],
                        timeout=o.timeout,
                        **_verify(o),
                    ),
                    now,
                )
            except TokenError as e:
                if e.code not in ("authorization_pending", "slow_down") or time.monotonic() > deadline:
                    raise
                if e.code == "slow_down":
                    interval += 5
            except OAuthError:  # pragma: no cover - _call converts these
                raise
            time.sleep(interval)


# -------------------------------------------------------------------------------- microsoft


class MicrosoftProvider:
    """Microsoft Entra ID through msal: app-only (``ConfidentialClientApplication.
    acquire_token_for_client``) or delegated by device code (``PublicClientApplication.
    initiate_device_flow`` / ``acquire_token_by_device_flow``, renewed by
    ``acquire_token_by_refresh_token``)."""

    def __init__(self, o: OAuth2Settings, http_client: Any = None):
        self.o = o
        self.uses_refresh_token = o.flow is OAuthFlow.DEVICE_CODE
        # msal's documented seam for its HTTP traffic (a requests.Session-like object); None: its own.
        self.http_client = http_client

    def _app(self):
        import msal

        o = self.o
        kwargs: dict[str, Any] = {
            "authority": o.authority_url,
            "http_client": self.http_client if self.http_client is not None else HttpSession(o),
        }
        if not o.authority_url.startswith(MICROSOFT_AUTHORITY):
            # Another authority (a sovereign cloud by URL, a local server): msal would otherwise ask
            # login.microsoftonline.com whether it knows the host.
            kwargs.update(validate_authority=False, instance_discovery=False)
        try:
            if o.flow is OAuthFlow.CLIENT_CREDENTIALS:
                if o.certificate_file is not None:
                    credential: Any = {
                        "private_key": o.certificate_file.read_text(encoding="utf-8"),
                        "thumbprint": o.certificate_thumbprint,
                    }
                else:
                    assert o.client_secret is not None
                    credential = o.client_secret.get_secret_value()
                return msal.ConfidentialClientApplication(o.client_id, client_credential=credential, **kwargs)
            return msal.PublicClientApplication(o.client_id, **kwargs)
        except requests.RequestException as e:
            raise _unreachable(e) from None
        except ValueError as e:
            # msal could not read the authority's OpenID configuration: a wrong tenant or authority.
            text = str(e)
            if "AADSTS" in text:
                raise TokenError.from_response("invalid_request", text) from None
            raise TokenError(
                f"authority {o.authority_url}: {text.splitlines()[0][:200]}",
                code="invalid_authority",
                permanent=True,
                hint="check tenant (directory id or domain) and authority",
            ) from None

    def _result(self, fn: Callable[[], dict], now: datetime) -> Grant:
        try:
            result = fn()
        except requests.RequestException as e:
            raise _unreachable(e) from None
        if not result or "access_token" not in result:
            result = result or {}
            raise TokenError.from_response(
                result.get("error", "invalid_response"), result.get("error_description"), result.get("error_codes")
            )
        return Grant(result["access_token"], _expires(now, result.get("expires_in")), result.get("refresh_token"))

    def acquire(self, refresh_token: str | None, now: datetime) -> Grant:
        o = self.o
        app = self._app()
        if o.flow is OAuthFlow.CLIENT_CREDENTIALS:
            return self._result(lambda: app.acquire_token_for_client(scopes=o.scope_list), now)
        assert refresh_token is not None
        return self._result(lambda: app.acquire_token_by_refresh_token(refresh_token, scopes=o.scope_list), now)

    def start_device_login(self) -> DevicePrompt:
        o = self.o
        if o.flow is not OAuthFlow.DEVICE_CODE:
            raise _no_device_flow(o.flow)
        app = self._app()
        try:
            flow = app.initiate_device_flow(scopes=o.scope_list)
        except requests.RequestException as e:
            raise _unreachable(e) from None
        if "user_code" not in flow:
            raise TokenError.from_response(flow.get("error", "invalid_response"), flow.get("error_description"))
        flow["_app"] = app
        return DevicePrompt(
            verification_uri=flow["verification_uri"],
            user_code=flow["user_code"],
            expires_in=int(flow.get("expires_in", 900)),
            message=flow.get("message") or f"Open {flow['verification_uri']} and enter {flow['user_code']}",
            handle=flow,
        )

    def finish_device_login(self, prompt: DevicePrompt, now: datetime) -> Grant:
        flow = dict(prompt.handle)
        app = flow.pop("_app")
        return self._result(lambda: app.acquire_token_by_device_flow(flow), now)


# -------------------------------------------------------------------------------- google


class GoogleProvider:
    """Google through google-auth: a service account with domain-wide delegation
    (``service_account.Credentials.with_subject``) or a user's refresh token
    (``google.oauth2.credentials.Credentials.refresh``)."""

    def __init__(self, o: OAuth2Settings, user: str):
        self.o = o
        self.user = user
        self.uses_refresh_token = o.flow is OAuthFlow.REFRESH_TOKEN

    def _request(self):
        from google.auth.transport.requests import Request

        return Request(session=HttpSession(self.o))

    def _credentials(self, refresh_token: str | None):
        o = self.o
        if o.flow is OAuthFlow.SERVICE_ACCOUNT:
            from google.oauth2 import service_account

            assert o.service_account_file is not None
            try:
                info = json.loads(o.service_account_file.read_text(encoding="utf-8"))
                if o.token_url:
                    info["token_uri"] = o.token_url
                creds = service_account.Credentials.from_service_account_info(info, scopes=o.scope_list)
            except (OSError, ValueError, KeyError) as e:
                raise TokenError(
                    f"service_account_file {o.service_account_file}: {type(e).__name__}: {e}",
                    code="invalid_key_file",
                    permanent=True,
                    hint="download the service account's JSON key again (IAM → Service accounts → Keys)",
                ) from None
            return creds.with_subject(o.subject or self.user)
        from google.oauth2.credentials import Credentials

        return Credentials(
            None,
            refresh_token=refresh_token,
            token_uri=o.token_url or GOOGLE_TOKEN_URL,
            client_id=o.client_id,
            client_secret=o.client_secret.get_secret_value() if o.client_secret is not None else None,
            scopes=o.scope_list,
        )

    def acquire(self, refresh_token: str | None, now: datetime) -> Grant:
        from google.auth import exceptions

        creds = self._credentials(refresh_token)
        try:
            creds.refresh(self._request())
        except exceptions.RefreshError as e:
            data = e.args[1] if len(e.args) > 1 and isinstance(e.args[1], dict) else {}
            error = data.get("error") or "invalid_grant"
            if getattr(e, "retryable", False) and not data:
                raise _unreachable(e) from None
            raise TokenError.from_response(error, data.get("error_description") or str(e.args[0])) from None
        except (exceptions.TransportError, requests.RequestException) as e:
            raise _unreachable(e) from None
        # google-auth keeps expiry as naive UTC, from the real clock.
        expires_at = creds.expiry.replace(tzinfo=UTC) if creds.expiry is not None else _expires(now, None)
        new_refresh = getattr(creds, "refresh_token", None)
        return Grant(creds.token, expires_at, new_refresh if new_refresh != refresh_token else None)

    def start_device_login(self) -> DevicePrompt:
        # Google's device flow does not allow the https://mail.google.com/ scope.
        raise _no_device_flow(self.o.flow)

    def finish_device_login(self, prompt: DevicePrompt, now: datetime) -> Grant:  # pragma: no cover
        raise _no_device_flow(self.o.flow)


def build_provider(o: OAuth2Settings, user: str) -> Provider:
    """The provider of one login; ``user`` is the mailbox (Google's default subject)."""
    if o.provider is OAuthProvider.MICROSOFT:
        return MicrosoftProvider(o)
    if o.provider is OAuthProvider.GOOGLE:
        return GoogleProvider(o, user)
    return GenericProvider(o)


__all__ = ["DevicePrompt", "GenericProvider", "GoogleProvider", "Grant", "MicrosoftProvider", "build_provider"]
