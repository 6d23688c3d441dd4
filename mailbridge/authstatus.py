"""``mailbridge auth status`` and ``auth test``: per login (each account, and SMTP) how it logs in,
its OAuth token's expiry, the last renewal and the last error; and a real login to IMAP and SMTP.

The facts are the token rows (``store/tokens.py``) the token sources write. A login needs a person
(critical) when its row says ``reauth_required`` or when a device-code login was never signed in; a
client secret about to expire is decided where the alert mail is (``alerts.oauth_findings``).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from mailbridge.alerts import Level, oauth_findings, worst
from mailbridge.app import App
from mailbridge.oauth.faults import TokenError
from mailbridge.settings import AuthMode, OAuth2Settings, OAuthFlow
from mailbridge.store import migrate
from mailbridge.store import tokens as token_store
from mailbridge.store.db import session_scope
from mailbridge.views import printable


@dataclass
class Login:
    name: str  # the account's name, or "smtp"
    user: str
    mode: str  # password | oauth2 provider/flow | none | shares <account>
    level: Level
    state: str
    token_expires: datetime | None = None
    last_renewal: datetime | None = None
    renewals: int = 0
    last_error: str | None = None
    failing_since: datetime | None = None


@dataclass
class AuthReport:
    level: Level
    now: datetime
    zone: ZoneInfo
    logins: list[Login]
    notes: list[str]


def _oauth_state(name: str, o: OAuth2Settings, token, now: datetime) -> tuple[Level, str]:
    if token is not None and token.reauth_required:
        return Level.CRITICAL, f"reauth_required ({token.error_code or 'refused'})"
    has_token = token is not None and token.renewed_at is not None
    if not has_token:
        if o.flow is OAuthFlow.DEVICE_CODE:
            return Level.CRITICAL, f"never signed in: run `mailbridge auth login {name}`"
        if o.flow is OAuthFlow.REFRESH_TOKEN and o.refresh_token is None:
            return Level.CRITICAL, "no refresh token: set refresh_token_env or refresh_token_file"
        return Level.WARNING, "no token yet (the service fetches one when it starts)"
    if token.failing_since is not None:
        return Level.WARNING, f"renewal failing since {token.failing_since:%Y-%m-%d %H:%M %Z} (retrying)"
    if token.expires_at is not None and token.expires_at <= now:
        return Level.OK, "expired; renewed at the next use"
    return Level.OK, "valid"


def collect(app: App) -> AuthReport:
    settings, now = app.settings, app.clock()
    zone = ZoneInfo(settings.operator_timezone)
    notes: list[str] = []
    rows: dict[str, Any] = {}
    current = migrate.current_revision(app.engine)
    if current is None:
        notes.append("no schema: run `mailbridge db upgrade` (or start the service)")
    else:
        with session_scope(app.session_factory) as s:
            rows = {t.name: t for t in token_store.all_rows(s)}
    logins: list[Login] = []

    def oauth_login(name: str, user: str, o: OAuth2Settings) -> Login:
        token = rows.get(name)
        level, state = _oauth_state(name, o, token, now) if current is not None else (Level.CRITICAL, "no schema")
        return Login(
            name,
            user,
            f"oauth2 {o.provider.value}/{o.flow.value} ({o.mechanism.value})",
            level,
            state,
            token_expires=token.expires_at if token else None,
            last_renewal=token.renewed_at if token else None,
            renewals=token.renewals if token else 0,
            last_error=token.last_error if token else None,
            failing_since=token.failing_since if token else None,
        )

    for a in settings.accounts:
        if a.auth is AuthMode.OAUTH2 and a.oauth2 is not None:
            logins.append(oauth_login(a.name, a.user, a.oauth2))
        else:
            logins.append(Login(a.name, a.user, "password", Level.OK, "password login"))
    smtp = settings.smtp
    if smtp.auth is AuthMode.OAUTH2 and smtp.oauth2 is not None:
        logins.append(oauth_login("smtp", smtp.user or "", smtp.oauth2))
    elif smtp.auth is AuthMode.OAUTH2:
        shared = next(x for x in logins if x.name == smtp.oauth2_account)
        logins.append(
            Login(
                "smtp",
                smtp.user or "",
                f"oauth2, the token of {smtp.oauth2_account}",
                shared.level,
                f"as {smtp.oauth2_account}",
            )
        )
    else:
        logins.append(Login("smtp", smtp.user or "", "password" if smtp.user else "none", Level.OK, "-"))
    # Client secrets about to expire: the same rule as the alert mail's.
    for f in oauth_findings(settings, {}, {}, now):
        if f.kind == "secret_expiry":
            login = next(x for x in logins if x.name == f.facts["login"])
            login.level = worst([login.level, f.level])
            login.state += f"; {f.summary}"
            notes.append(f"{f.level.value.upper()} {f.condition}: {f.summary}")
    level = worst([x.level for x in logins] + ([Level.CRITICAL] if current is None else []))
    return AuthReport(level, now, zone, logins, notes)


def _iso(at: datetime | None, zone: ZoneInfo) -> str | None:
    return at.astimezone(zone).isoformat(timespec="seconds") if at is not None else None


def as_json(r: AuthReport) -> dict[str, Any]:
    return {
        "status": r.level.value,
        "time": _iso(r.now, r.zone),
        "notes": r.notes,
        "logins": [
            {
                "login": x.name,
                "user": x.user,
                "mode": x.mode,
                "level": x.level.value,
                "state": x.state,
                "token_expires": _iso(x.token_expires, r.zone),
                "last_renewal": _iso(x.last_renewal, r.zone),
                "renewals": x.renewals,
                "last_error": x.last_error,
                "failing_since": _iso(x.failing_since, r.zone),
            }
            for x in r.logins
        ],
    }


def render(r: AuthReport, width: int = 200) -> str:
    buf = io.StringIO()
    console = Console(file=buf, width=width, color_system=None, force_terminal=False, highlight=False)
    console.print(Text(f"mailbridge auth: {r.level.value.upper()}   ({r.now.astimezone(r.zone):%Y-%m-%d %H:%M %Z})"))
    for n in r.notes:
        console.print(Text(f"  {printable(n)}"), soft_wrap=True)
    t = Table(box=box.SIMPLE)
    for col in ("login", "user", "mode", "state", "token expires", "last renewal"):
        t.add_column(col, no_wrap=col != "state")

    def when(at: datetime | None) -> str:
        return f"{at.astimezone(r.zone):%Y-%m-%d %H:%M %Z}" if at is not None else "-"

    for x in r.logins:
        t.add_row(
            x.name,
            x.user or "-",
            x.mode,
            Text(f"{x.level.value.upper()}: {printable(x.state)}"),
            when(x.token_expires),
            when(x.last_renewal),
        )
    console.print(t)
    # The last errors in full below the table: the provider's code, its words and what to do.
    for x in r.logins:
        if x.last_error:
            since = f" (since {when(x.failing_since)})" if x.failing_since else ""
            console.print(Text(f"{x.name}: last error{since}: {printable(x.last_error)[:1000]}"), soft_wrap=True)
    return buf.getvalue()


def test_logins(app: App, name: str) -> list[tuple[str, bool, str]]:
    """Log in to IMAP (when ``name`` is an account) and to SMTP as the service does: (what, ok, words)."""
    from mailbridge.ingest.fetcher import FetchError, ImapMailbox

    out: list[tuple[str, bool, str]] = []
    account = next((a for a in app.settings.accounts if a.name == name), None)
    # A person is testing, probably after fixing something: ask the token endpoint now, not after
    # the slow retry of a login in reauth_required (the result is stored for the logins below).
    for source in {app.token_sources.get(name), app.smtp_tokens} - {None}:
        with contextlib.suppress(TokenError):
            source.token(force=True)
    if account is not None:
        source = app.token_sources.get(account.name)
        mailbox = ImapMailbox(account, source)
        try:
            mailbox.connect()
            how = f"SASL {source.mechanism.upper()} with an OAuth2 token" if source is not None else "password"
            waiting = len(mailbox.uids_after(0))
            out.append(
                (
                    f"IMAP {account.host}:{account.port}",
                    True,
                    f"logged in as {account.user} ({how}); folder {account.folder}: {waiting} mail(s)",
                )
            )
        except FetchError as e:
            out.append((f"IMAP {account.host}:{account.port}", False, f"{e.kind.value}: {e.server_says}"))
        finally:
            mailbox.close()
    smtp = app.settings.smtp
    sender = app.sender()
    try:
        out.append((f"SMTP {smtp.host}:{smtp.port}", True, asyncio.run(sender.check_login())))
    except TokenError as e:
        out.append((f"SMTP {smtp.host}:{smtp.port}", False, f"OAuth token: {e.describe()}"))
    except Exception as e:
        out.append((f"SMTP {smtp.host}:{smtp.port}", False, f"{type(e).__name__}: {str(e)[:300]}"))
    return out


__all__ = ["AuthReport", "Login", "as_json", "collect", "render", "test_logins"]
