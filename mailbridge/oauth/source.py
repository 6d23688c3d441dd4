"""The token source of one login: a valid access token from the shared token store, renewed ahead of
expiry by one instance at a time; every rotated refresh token saved at once.

``token()`` reads the row; a token valid for more than ``refresh_margin`` seconds is returned as it
is. Otherwise the caller takes the row's renewal lease (compare-and-set, ``store/tokens.py``), asks
the provider outside any transaction and saves the answer; a caller that finds the lease taken waits
for the row to carry the new token instead of asking the endpoint itself. So two instances (or an
IMAP poller and the SMTP sender of one instance) sharing a login cause one token request per expiry.

A refusal that needs a person (``faults.explain``) is recorded on the row as ``reauth_required`` with
the provider's code and a hint, logged at error level, and raised as a permanent
:class:`~mailbridge.oauth.faults.TokenError`; an endpoint that is away is transient (the caller
backs off), and a token still valid is used while it lasts.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog

from mailbridge.oauth.faults import TokenError
from mailbridge.oauth.providers import DevicePrompt, Grant, Provider, build_provider
from mailbridge.settings import OAuth2Settings, OAuthFlow, Settings
from mailbridge.store import tokens as store
from mailbridge.store.db import is_transient_db_error, session_scope
from mailbridge.store.tokens import StoredToken, TokenCipher, TokenKeyError

log = structlog.get_logger(__name__)

# How long a renewal may hold the lease before another instance may take over (seconds): longer than
# any token request (timeouts are 30 s by default).
LEASE_SECONDS = 90.0
# How often a waiting caller looks at the row while another one renews (seconds).
WAIT_SLICE_SECONDS = 0.2
# How often a login in reauth_required asks the token endpoint again, unless App passes the account's
# permanent_fault_retry (SMTP's own login uses this).
DEFAULT_PERMANENT_RETRY_SECONDS = 300.0


@dataclass(frozen=True)
class AccessToken:
    value: str = field(repr=False)
    expires_at: datetime
    # When it is due for renewal: refresh_margin before expiry, or half-way through a token's life
    # when that is shorter (a 60-s token is not renewed at every use).
    renew_at: datetime


def instance_owner() -> str:
    """This process's name for leases: host, pid and a random part (a restarted pid differs)."""
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def identity_of(o: OAuth2Settings, user: str) -> str:
    """What a stored token was issued for; a change in the config makes the stored token unused."""
    where = o.authority_url if o.provider.value == "microsoft" else (o.token_url or "")
    who = o.client_id or (str(o.service_account_file) + ":" + (o.subject or user))
    return f"{o.provider.value}:{o.flow.value}:{who}:{where}"[:512]


class TokenSource:
    """Access tokens for one login (an account, or SMTP's own table)."""

    def __init__(
        self,
        name: str,
        settings: OAuth2Settings,
        user: str,
        session_factory,
        cipher: TokenCipher,
        clock: Callable[[], datetime],
        *,
        owner: str | None = None,
        provider: Provider | None = None,
        permanent_retry: float = DEFAULT_PERMANENT_RETRY_SECONDS,
    ):
        self.name = name
        self.settings = settings
        self.user = user
        self.factory = session_factory
        self.cipher = cipher
        self.clock = clock
        self.owner = owner or instance_owner()
        self.provider = provider if provider is not None else build_provider(settings, user)
        self.identity = identity_of(settings, user)
        self.margin = timedelta(seconds=settings.refresh_margin)
        # After a refusal that needs a person, the endpoint is asked again only this often (seconds),
        # whoever asks (an IMAP poller, the outbox sender every few seconds, another instance).
        self.permanent_retry = timedelta(seconds=permanent_retry)
        # One renewal per process at a time (the lease covers other processes).
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"TokenSource({self.name!r}, {self.settings.provider.value}/{self.settings.flow.value})"

    @property
    def mechanism(self) -> str:
        return self.settings.mechanism.value

    # -- reading ---------------------------------------------------------------------------

    def _row(self) -> StoredToken:
        with session_scope(self.factory) as s:
            store.ensure(s, self.name, self.identity, self.clock())
        with session_scope(self.factory) as s:
            row = store.read(s, self.name, self.cipher)
        assert row is not None
        return row

    def _renew_at(self, expires_at: datetime, issued_at: datetime | None) -> datetime:
        margin = self.margin
        if issued_at is not None and expires_at > issued_at:
            margin = min(margin, (expires_at - issued_at) / 2)
        return expires_at - margin

    def _fresh(self, row: StoredToken, now: datetime) -> AccessToken | None:
        if row.access_token and row.expires_at is not None:
            renew_at = self._renew_at(row.expires_at, row.renewed_at)
            if renew_at > now:
                return AccessToken(row.access_token, row.expires_at, renew_at)
        return None

    def stored(self) -> StoredToken | None:
        """The row (tokens left out), for status."""
        with session_scope(self.factory) as s:
            return store.read(s, self.name, None)

    def token(self, *, force: bool = False) -> AccessToken:
        """A token valid for at least ``refresh_margin`` more seconds (renewed when needed).

        A login in ``reauth_required`` asks the endpoint again only every ``permanent_retry``
        seconds; in between the stored refusal is raised again. ``force``: ask now (``auth test``,
        ``auth login``: a person has just acted).

        Raises:
            TokenError: permanent (reauth_required; a token store key that does not fit) or
            transient (the endpoint away, the database away).
        """
        try:
            return self._token(force)
        except TokenKeyError as e:
            raise TokenError(str(e), code="token_key", permanent=True, hint="check tokens.key_env / key_file") from e
        except TokenError:
            raise
        except Exception as e:
            if not is_transient_db_error(e):
                raise
            raise TokenError(
                f"token store: {str(e).splitlines()[0][:200]}",
                code=None,
                permanent=False,
                hint="the database is away; retrying with backoff",
            ) from e

    def _token(self, force: bool) -> AccessToken:
        row = self._row()
        now = self.clock()
        fresh = self._fresh(row, now)
        if fresh is not None:
            return fresh
        refused = self._refused_recently(row, now, force)
        if refused is not None:
            raise refused
        with self._lock:
            deadline = time.monotonic() + LEASE_SECONDS + self.settings.timeout
            while True:
                now = self.clock()
                with session_scope(self.factory) as s:
                    taken = store.take_lease(s, self.name, self.owner, now, now + timedelta(seconds=LEASE_SECONDS))
                if taken:
                    return self._renew(force)
                time.sleep(WAIT_SLICE_SECONDS)
                row = self._row()
                fresh = self._fresh(row, self.clock())
                if fresh is not None:
                    return fresh
                refused = self._refused_recently(row, self.clock(), force) if row.lease_owner is None else None
                if refused is not None:
                    raise refused  # the instance that renewed was refused: it has logged it
                if time.monotonic() > deadline:
                    raise TokenError(
                        "another instance holds the renewal lease and no new token came",
                        code=None,
                        permanent=False,
                        hint="retrying with backoff",
                    )

    def _refused_recently(self, row: StoredToken, now: datetime, force: bool) -> TokenError | None:
        """A refusal that needs a person, less than ``permanent_retry`` ago: raised again without
        asking the endpoint (the outbox runs every few seconds; Microsoft throttles such loops) and
        without logging it again."""
        if not row.reauth_required or force or now - row.updated_at >= self.permanent_retry:
            return None
        return TokenError(
            row.last_error or "reauth_required",
            code=row.error_code,
            permanent=True,
            hint=f"asked again every {self.permanent_retry.total_seconds():g} s until then",
        )

    # -- renewing --------------------------------------------------------------------------

    def _refresh_token_for(self, row: StoredToken) -> str | None:
        seed = self.settings.refresh_token.get_secret_value() if self.settings.refresh_token is not None else None
        if row.reauth_required and seed:
            return seed  # the stored one is dead: an operator may have put a new one in the config
        return row.refresh_token or seed

    def _renew(self, force: bool) -> AccessToken:
        """Holding the lease: renew, save, free the lease (also on failure)."""
        row = self._row()
        now = self.clock()
        # Another instance renewed, or was refused, just before we took the lease.
        fresh = self._fresh(row, now)
        refused = self._refused_recently(row, now, force) if fresh is None else None
        if fresh is not None or refused is not None:
            self._release()
            if refused is not None:
                raise refused
            return fresh
        try:
            refresh = self._refresh_token_for(row)
            if self.provider.uses_refresh_token and refresh is None:
                raise TokenError(
                    "no token stored yet",
                    code="no_token",
                    permanent=True,
                    hint=f"sign in once: mailbridge auth login {self.name}"
                    if self.settings.flow is OAuthFlow.DEVICE_CODE
                    else "set oauth2.refresh_token_env or refresh_token_file",
                )
            grant = self.provider.acquire(refresh, now)
        except TokenError as e:
            self._failed(e)
            if not e.permanent:
                still = self._usable(row)
                if still is not None:
                    return still
            raise
        except Exception as e:
            self._failed(TokenError(f"{type(e).__name__}: {e}", code=None, permanent=False, hint="a bug? retrying"))
            raise
        # Saved also when our lease ran out meanwhile (a very slow endpoint): a rotated refresh token
        # is the only live one now, and losing it would mean a new sign-in.
        return self._save(grant, owner=None, rotated_from=refresh)

    def _usable(self, row: StoredToken | None) -> AccessToken | None:
        """The stored token while it has not expired (a renewal ahead of expiry may fail)."""
        if row is not None and row.access_token and row.expires_at is not None and row.expires_at > self.clock():
            return AccessToken(row.access_token, row.expires_at, row.expires_at)
        return None

    def _save(self, grant: Grant, *, owner: str | None, rotated_from: str | None) -> AccessToken:
        now = self.clock()
        with session_scope(self.factory) as s:
            saved = store.save_token(
                s,
                self.name,
                owner,
                self.cipher,
                access_token=grant.access_token,
                expires_at=grant.expires_at,
                refresh_token=grant.refresh_token,
                now=now,
            )
        log.info(
            "oauth_token_renewed",
            login=self.name,
            provider=self.settings.provider.value,
            flow=self.settings.flow.value,
            expires_at=grant.expires_at.isoformat(),
            refresh_token_rotated=grant.refresh_token is not None and grant.refresh_token != rotated_from,
            saved=saved,
        )
        return AccessToken(grant.access_token, grant.expires_at, self._renew_at(grant.expires_at, now))

    def _release(self) -> None:
        with session_scope(self.factory) as s:
            store.release_lease(s, self.name, self.owner)

    def _failed(self, e: TokenError) -> None:
        try:
            with session_scope(self.factory) as s:
                store.save_failure(
                    s,
                    self.name,
                    self.owner,
                    code=e.code,
                    error=e.describe()[:1000],
                    reauth_required=e.permanent,
                    now=self.clock(),
                )
        except Exception as db_error:  # the database away: the error is still raised and logged
            log.warning("oauth_failure_not_recorded", login=self.name, error=str(db_error).splitlines()[0][:200])
        fn = log.error if e.permanent else log.warning
        fn(
            "oauth_reauth_required" if e.permanent else "oauth_token_unavailable",
            login=self.name,
            provider=self.settings.provider.value,
            flow=self.settings.flow.value,
            code=e.code,
            error=str(e)[:300],
            hint=e.hint,
        )

    def invalidate(self, token: AccessToken) -> None:
        """The server refused ``token``: the next ``token()`` asks for a new one (once the stored
        one is still this one)."""
        with session_scope(self.factory) as s:
            row = store.read(s, self.name, self.cipher)
            if row is not None and row.access_token == token.value:
                store.forget_access_token(s, self.name, self.clock())

    # -- signing in ------------------------------------------------------------------------

    def start_login(self) -> DevicePrompt:
        """RFC 8628: the URL and code the person signing in is shown."""
        return self.provider.start_device_login()

    def finish_login(self, prompt: DevicePrompt) -> AccessToken:
        """Wait for the person to sign in; store the token and the refresh token."""
        self._row()
        try:
            grant = self.provider.finish_device_login(prompt, self.clock())
        except TokenError as e:
            self._failed(e)
            raise
        return self._save(grant, owner=None, rotated_from=None)


def build_token_sources(
    settings: Settings, session_factory, clock: Callable[[], datetime], *, owner: str | None = None
) -> dict[str, TokenSource]:
    """One source per login (``Settings.oauth_logins``); empty without OAuth."""
    if not settings.oauth_logins:
        return {}
    assert settings.tokens.key is not None  # settings refuse oauth2 without a key
    cipher = TokenCipher(settings.tokens.key.get_secret_value())
    owner = owner or instance_owner()
    accounts = {a.name: a for a in settings.accounts}
    out = {}
    for name, o in settings.oauth_logins.items():
        acc = accounts.get(name)
        out[name] = TokenSource(
            name,
            o,
            acc.user if acc is not None else settings.smtp.user or "",
            session_factory,
            cipher,
            clock,
            owner=owner,
            permanent_retry=acc.permanent_fault_retry if acc is not None else DEFAULT_PERMANENT_RETRY_SECONDS,
        )
    return out


__all__ = ["AccessToken", "TokenSource", "build_token_sources", "instance_owner"]
