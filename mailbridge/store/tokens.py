"""OAuth2 token rows (``oauth_tokens``): encrypted at rest with Fernet, shared by every instance.

Access and refresh tokens are stored only as Fernet tokens (AES-128-CBC + HMAC-SHA256, from
``cryptography``) under the key of ``[tokens]``; a row read with another key raises
:class:`TokenKeyError` rather than handing out garbage. The lease columns let one instance renew a
token while the others wait (compare-and-set on ``lease_until``: no row lock is held while the
token endpoint answers, on SQLite and PostgreSQL alike).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import or_, select, update

from mailbridge.store.db import Session
from mailbridge.store.models import OAuthToken


class TokenKeyError(Exception):
    """A stored token does not decrypt with the configured key (the key was changed)."""


class TokenCipher:
    """Fernet encryption of token strings with the ``[tokens]`` key."""

    def __init__(self, key: str):
        self._fernet = Fernet(key.encode("ascii"))

    def seal(self, text: str | None) -> bytes | None:
        return None if text is None else self._fernet.encrypt(text.encode("utf-8"))

    def open(self, blob: bytes | None) -> str | None:
        if blob is None:
            return None
        try:
            return self._fernet.decrypt(bytes(blob)).decode("utf-8")
        except InvalidToken:
            raise TokenKeyError(
                "a stored OAuth token does not decrypt with tokens.key (was the key changed? "
                "then sign in again: mailbridge auth login)"
            ) from None

    def __repr__(self) -> str:
        return "TokenCipher(<key hidden>)"


@dataclass(frozen=True)
class StoredToken:
    """One row, tokens decrypted (never shown in reprs)."""

    name: str
    identity: str
    access_token: str | None = field(repr=False)
    expires_at: datetime | None
    refresh_token: str | None = field(repr=False)
    renewed_at: datetime | None
    renewals: int
    error_code: str | None
    last_error: str | None
    reauth_required: bool
    failing_since: datetime | None
    lease_owner: str | None
    lease_until: datetime | None
    updated_at: datetime


def _stored(row: OAuthToken, cipher: TokenCipher | None) -> StoredToken:
    return StoredToken(
        name=row.name,
        identity=row.identity,
        access_token=cipher.open(row.access_token) if cipher is not None else None,
        expires_at=row.expires_at,
        refresh_token=cipher.open(row.refresh_token) if cipher is not None else None,
        renewed_at=row.renewed_at,
        renewals=row.renewals,
        error_code=row.error_code,
        last_error=row.last_error,
        reauth_required=row.reauth_required,
        failing_since=row.failing_since,
        lease_owner=row.lease_owner,
        lease_until=row.lease_until,
        updated_at=row.updated_at,
    )


def ensure(session: Session, name: str, identity: str, now: datetime) -> None:
    """The row of ``name`` exists and belongs to ``identity``; a row of another identity (the
    provider, flow or client changed in the config) loses its tokens and errors."""
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    session.execute(
        insert(OAuthToken)
        .values(name=name, identity=identity, renewals=0, reauth_required=False, updated_at=now)
        .on_conflict_do_nothing(index_elements=["name"])
    )
    session.execute(
        update(OAuthToken)
        .where(OAuthToken.name == name, OAuthToken.identity != identity)
        .values(
            identity=identity,
            access_token=None,
            expires_at=None,
            refresh_token=None,
            error_code=None,
            last_error=None,
            reauth_required=False,
            failing_since=None,
            updated_at=now,
        )
    )


def read(session: Session, name: str, cipher: TokenCipher | None) -> StoredToken | None:
    """The row of ``name``; with ``cipher`` None the tokens are left out (for status)."""
    row = session.get(OAuthToken, name, populate_existing=True)
    return _stored(row, cipher) if row is not None else None


def all_rows(session: Session) -> list[StoredToken]:
    """Every row, without its tokens."""
    return [_stored(r, None) for r in session.scalars(select(OAuthToken).order_by(OAuthToken.name))]


def take_lease(session: Session, name: str, owner: str, now: datetime, until: datetime) -> bool:
    """Compare-and-set: ``owner`` holds the renewal lease of ``name`` until ``until`` when nobody
    else holds an unexpired one. True when taken."""
    result = session.execute(
        update(OAuthToken)
        .where(
            OAuthToken.name == name,
            or_(OAuthToken.lease_until.is_(None), OAuthToken.lease_until < now, OAuthToken.lease_owner == owner),
        )
        .values(lease_owner=owner, lease_until=until)
    )
    return result.rowcount == 1


def save_token(
    session: Session,
    name: str,
    owner: str | None,
    cipher: TokenCipher,
    *,
    access_token: str,
    expires_at: datetime,
    refresh_token: str | None,
    now: datetime,
) -> bool:
    """A renewal worked: the new access token, the refresh token when one came back (a rotated
    refresh token replaces the old one at once), errors cleared, the lease freed. With ``owner``
    only while that owner still holds the lease; None (a sign-in by hand) always. True when saved."""
    values = {
        "access_token": cipher.seal(access_token),
        "expires_at": expires_at,
        "renewed_at": now,
        "renewals": OAuthToken.renewals + 1,
        "error_code": None,
        "last_error": None,
        "reauth_required": False,
        "failing_since": None,
        "lease_owner": None,
        "lease_until": None,
        "updated_at": now,
    }
    if refresh_token is not None:
        values["refresh_token"] = cipher.seal(refresh_token)
    stmt = update(OAuthToken).where(OAuthToken.name == name)
    if owner is not None:
        stmt = stmt.where(OAuthToken.lease_owner == owner)
    return session.execute(stmt.values(**values)).rowcount == 1


def save_failure(
    session: Session,
    name: str,
    owner: str | None,
    *,
    code: str | None,
    error: str,
    reauth_required: bool,
    now: datetime,
) -> None:
    """A renewal failed: its code and words, whether a person must sign in again (the refresh token
    is kept; a new sign-in replaces it), the streak's start kept; the lease freed."""
    stmt = update(OAuthToken).where(OAuthToken.name == name)
    if owner is not None:
        stmt = stmt.where(or_(OAuthToken.lease_owner == owner, OAuthToken.lease_owner.is_(None)))
    row = session.get(OAuthToken, name)
    since = row.failing_since if row is not None and row.failing_since is not None else now
    session.execute(
        stmt.values(
            error_code=code,
            last_error=error,
            reauth_required=reauth_required,
            failing_since=since,
            lease_owner=None,
            lease_until=None,
            updated_at=now,
        )
    )


def release_lease(session: Session, name: str, owner: str) -> None:
    """``owner`` gives its lease back without a new token (another instance had just renewed)."""
    session.execute(
        update(OAuthToken)
        .where(OAuthToken.name == name, OAuthToken.lease_owner == owner)
        .values(lease_owner=None, lease_until=None)
    )


def forget_access_token(session: Session, name: str, now: datetime) -> None:
    """The server refused the stored access token: the next login asks for a new one."""
    session.execute(
        update(OAuthToken).where(OAuthToken.name == name).values(access_token=None, expires_at=None, updated_at=now)
    )


__all__ = [
    "StoredToken",
    "TokenCipher",
    "TokenKeyError",
    "all_rows",
    "ensure",
    "forget_access_token",
    "read",
    "release_lease",
    "save_failure",
    "save_token",
    "take_lease",
]
