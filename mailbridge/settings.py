"""Typed, frozen settings read from one TOML file plus the environment; all validation lives here.

``load_settings(path, environ)`` returns a :class:`Settings` or raises :class:`ConfigError` whose text
names the file, the key and what is wrong, e.g.
``config/mailbridge.toml: accounts[0].tls: 'none' is only allowed for a loopback host``.
Nothing reads the environment at import time; secrets are resolved once, here, from named
environment variables or files, and never logged (``SecretStr``).
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from mailbridge import schedules
from mailbridge.business_calendar import BusinessCalendar
from mailbridge.checklist import ChecklistItem
from mailbridge.domain import CaseNumberFormat
from mailbridge.policy_types import (
    DEFAULT_STAGES,
    Recipients,
    SeverityLevel,
    SeverityScheme,
    Stage,
    Target,
    TargetKind,
)

DEFAULT_VAR_DIR = "var"
# The token store's name of SMTP's own OAuth login ([smtp.oauth2]); accounts use their names.
SMTP_TOKEN_NAME = "smtp"
DEFAULT_LANGUAGES = ("de", "en")
# Severity levels a queue accepts (#severity) until the SLA settings define a scheme of their own.
DEFAULT_SEVERITY_LEVELS = ("1", "2", "3", "4")
# The shortest notification key accepted (e.g. `openssl rand -hex 32` gives 64 characters).
MIN_SECRET_CHARS = 32
# The subjects with which a known customer asks for the list of their open cases (issue 13).
DEFAULT_STATUS_WORDS = ("Status", "Übersicht", "Overview")
# Phrases with which a customer asks for more urgency (seed 004); matched as whole words, any case.
DEFAULT_URGENCY_WORDS = (
    "dringend",
    "sehr dringend",
    "Dringlichkeit erhöhen",
    "Dringlichkeit anheben",
    "Priorität erhöhen",
    "eilt",
    "eilig",
    "Produktionsstillstand",
    "Systemstillstand",
    "Produktion steht",
    "urgent",
    "urgently",
    "asap",
    "production down",
    "increase the priority",
    "raise the priority",
    "escalate",
)
# Mail providers whose domain says nothing about a customer's organisation: two gmail.com senders
# are not colleagues.
DEFAULT_PUBLIC_DOMAINS = (
    "gmail.com",
    "googlemail.com",
    "outlook.com",
    "outlook.de",
    "hotmail.com",
    "hotmail.de",
    "live.com",
    "live.de",
    "msn.com",
    "yahoo.com",
    "yahoo.de",
    "ymail.com",
    "icloud.com",
    "me.com",
    "mac.com",
    "aol.com",
    "aol.de",
    "gmx.de",
    "gmx.net",
    "gmx.at",
    "gmx.ch",
    "web.de",
    "t-online.de",
    "freenet.de",
    "posteo.de",
    "mailbox.org",
    "protonmail.com",
    "proton.me",
    "tutanota.com",
    "zoho.com",
    "yandex.ru",
    "mail.ru",
    "qq.com",
    "163.com",
    "126.com",
    "gmx.com",
    "mail.com",
    "mail.de",
    "arcor.de",
    "online.de",
    "vodafone.de",
    "yahoo.co.uk",
    "yahoo.fr",
    "hotmail.fr",
    "hotmail.co.uk",
    "live.co.uk",
    "orange.fr",
    "free.fr",
    "laposte.net",
    "libero.it",
    "bluewin.ch",
    "comcast.net",
    "verizon.net",
    "seznam.cz",
    "wp.pl",
    "o2.pl",
    "onet.pl",
)


class ConfigError(Exception):
    """A configuration problem, phrased for the operator: file, key, problem."""


class TlsMode(StrEnum):
    IMPLICIT = "implicit"
    STARTTLS = "starttls"
    NONE = "none"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Secret(_Model):
    """A password given by the name of an environment variable or of a file; resolved at load."""

    password_env: str | None = None
    password_file: Path | None = None
    # Filled in by load_settings from password_env/password_file; never written in the file.
    password: SecretStr | None = Field(default=None, exclude=True)


class AuthMode(StrEnum):
    """How mailbridge logs in to an IMAP account or the SMTP server."""

    PASSWORD = "password"  # LOGIN / AUTH PLAIN with password_env or password_file
    OAUTH2 = "oauth2"  # SASL XOAUTH2 or OAUTHBEARER with an access token ([accounts.oauth2])


class OAuthProvider(StrEnum):
    MICROSOFT = "microsoft"  # Microsoft 365 / Exchange Online, through msal
    GOOGLE = "google"  # Google Workspace / Gmail, through google-auth
    GENERIC = "generic"  # any OAuth2 token endpoint (Keycloak, Dovecot setups, tests), through authlib


class OAuthFlow(StrEnum):
    CLIENT_CREDENTIALS = "client_credentials"  # app-only: the app's own secret or certificate
    DEVICE_CODE = "device_code"  # delegated: a person signs in once (`mailbridge auth login`), RFC 8628
    SERVICE_ACCOUNT = "service_account"  # Google: a service account with domain-wide delegation
    REFRESH_TOKEN = "refresh_token"  # delegated: a refresh token obtained elsewhere, kept and rotated


class SaslMechanism(StrEnum):
    XOAUTH2 = "xoauth2"  # Microsoft's and Google's SASL mechanism
    OAUTHBEARER = "oauthbearer"  # RFC 7628; IMAP only where the server offers AUTH=OAUTHBEARER


# The flows each provider supports.
OAUTH_FLOWS = {
    OAuthProvider.MICROSOFT: (OAuthFlow.CLIENT_CREDENTIALS, OAuthFlow.DEVICE_CODE),
    OAuthProvider.GOOGLE: (OAuthFlow.SERVICE_ACCOUNT, OAuthFlow.REFRESH_TOKEN),
    OAuthProvider.GENERIC: (OAuthFlow.CLIENT_CREDENTIALS, OAuthFlow.REFRESH_TOKEN, OAuthFlow.DEVICE_CODE),
}
MICROSOFT_AUTHORITY = "https://login.microsoftonline.com"
GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"


def default_scopes(provider: OAuthProvider, flow: OAuthFlow) -> list[str]:
    """The scopes asked for when ``scopes`` is not set."""
    if provider is OAuthProvider.MICROSOFT:
        if flow is OAuthFlow.CLIENT_CREDENTIALS:
            return ["https://outlook.office365.com/.default"]
        # msal adds offline_access (for the refresh token) by itself and refuses it in the list.
        return ["https://outlook.office365.com/IMAP.AccessAsUser.All", "https://outlook.office365.com/SMTP.Send"]
    if provider is OAuthProvider.GOOGLE:
        return ["https://mail.google.com/"]
    return []


def _endpoint(key: str, url: str | None) -> None:
    """An OAuth endpoint is https, or http on a loopback host (a local test server)."""
    if url is None:
        return
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname and _is_loopback(parts.hostname):
        return
    raise _KeyedError(key, f"{url!r} must be an https URL (http only for a loopback host)")


class OAuth2Settings(_Model):
    """How to get an access token for one mailbox (or for SMTP); ``auth = "oauth2"`` uses it."""

    provider: OAuthProvider
    flow: OAuthFlow
    # Microsoft: the directory (tenant) id or its domain.
    tenant: str | None = None
    # Microsoft: the authority URL; default https://login.microsoftonline.com/<tenant>
    # (another cloud, or a local server in tests).
    authority: str | None = None
    client_id: str | None = None
    # The app's client secret, from an environment variable or a file (resolved at load, never logged).
    client_secret_env: str | None = None
    client_secret_file: Path | None = None
    client_secret: SecretStr | None = Field(default=None, exclude=True)
    # Microsoft app-only with a certificate instead of a secret: the PEM file with the private key
    # (and certificate), and the certificate's SHA-1 thumbprint as shown in the app registration.
    certificate_file: Path | None = None
    certificate_thumbprint: str | None = None
    # Google service_account: the service account's JSON key file.
    service_account_file: Path | None = None
    # Google service_account: the mailbox the service account acts as; default: the account's user.
    subject: str | None = None
    # The token endpoint: generic (required); google (default https://oauth2.googleapis.com/token).
    token_url: str | None = None
    # generic device_code: the device authorization endpoint (RFC 8628).
    device_authorization_url: str | None = None
    # refresh_token flow: the first refresh token, from env or file. Once stored, the token store
    # holds the current one (each rotated token is saved); this one is used only while none is stored.
    refresh_token_env: str | None = None
    refresh_token_file: Path | None = None
    refresh_token: SecretStr | None = Field(default=None, exclude=True)
    # Scopes asked for; default per provider (see default_scopes).
    scopes: list[str] | None = None
    # The IMAP SASL mechanism (SMTP always uses XOAUTH2, aiosmtplib's OAuth mechanism).
    mechanism: SaslMechanism = SaslMechanism.XOAUTH2
    # When the client secret expires (from the app registration): a warning comes
    # alerts.secret_expiry_warning_days before.
    client_secret_expires: date | None = None
    # A CA bundle for the token endpoint (a private CA); default the system's trust store.
    ca_file: Path | None = None
    # A token is renewed this many seconds before it expires.
    refresh_margin: Annotated[float, Field(ge=0, le=3000)] = 300.0
    # HTTP timeout towards the token endpoint (seconds).
    timeout: Annotated[float, Field(gt=0)] = 30.0

    @model_validator(mode="after")
    def _valid(self) -> OAuth2Settings:
        p, f = self.provider, self.flow
        if f not in OAUTH_FLOWS[p]:
            allowed = " or ".join(x.value for x in OAUTH_FLOWS[p])
            raise _KeyedError("flow", f"{f.value!r} is not a flow of provider {p.value!r} (use {allowed})")
        for key in ("authority", "token_url", "device_authorization_url"):
            _endpoint(key, getattr(self, key))
        if p is OAuthProvider.MICROSOFT:
            if not self.tenant and not self.authority:
                raise _KeyedError("tenant", "set the tenant (directory id or domain) for provider 'microsoft'")
            if not self.client_id:
                raise _KeyedError("client_id", "set the application (client) id of the app registration")
            if f is OAuthFlow.CLIENT_CREDENTIALS:
                if (self.certificate_file is None) != (self.certificate_thumbprint is None):
                    raise _KeyedError("certificate_file", "give certificate_file and certificate_thumbprint together")
                has_secret = self.client_secret_env or self.client_secret_file
                if not has_secret and self.certificate_file is None:
                    raise _KeyedError(
                        "client_secret_env",
                        "app-only needs client_secret_env, client_secret_file or certificate_file",
                    )
                if has_secret and self.certificate_file is not None:
                    raise _KeyedError("certificate_file", "give a client secret or a certificate, not both")
        elif p is OAuthProvider.GOOGLE:
            if f is OAuthFlow.SERVICE_ACCOUNT and self.service_account_file is None:
                raise _KeyedError("service_account_file", "set the service account's JSON key file")
            if f is OAuthFlow.REFRESH_TOKEN and not (
                self.client_id and (self.client_secret_env or self.client_secret_file)
            ):
                raise _KeyedError("client_id", "the refresh_token flow needs client_id and client_secret_env/_file")
        else:
            if not self.token_url:
                raise _KeyedError("token_url", "set the token endpoint for provider 'generic'")
            if not self.client_id:
                raise _KeyedError("client_id", "set the client id")
            if f is OAuthFlow.DEVICE_CODE and not self.device_authorization_url:
                raise _KeyedError("device_authorization_url", "the device_code flow needs the device endpoint")
            if f is OAuthFlow.CLIENT_CREDENTIALS and not (self.client_secret_env or self.client_secret_file):
                raise _KeyedError("client_secret_env", "client_credentials needs client_secret_env or _file")
        if f is not OAuthFlow.REFRESH_TOKEN and (self.refresh_token_env or self.refresh_token_file):
            raise _KeyedError("refresh_token_env", "a refresh token is given only for flow 'refresh_token'")
        return self

    @property
    def scope_list(self) -> list[str]:
        return list(self.scopes) if self.scopes is not None else default_scopes(self.provider, self.flow)

    @property
    def authority_url(self) -> str:
        """Microsoft: the authority msal talks to."""
        return (self.authority or f"{MICROSOFT_AUTHORITY}/{self.tenant}").rstrip("/")


class _Server(_Secret):
    host: str
    port: Annotated[int, Field(gt=0, lt=65536)]
    tls: TlsMode = TlsMode.IMPLICIT
    # Where the CA bundle for a private CA lives; None = the system's trust store.
    ca_file: Path | None = None
    timeout: Annotated[float, Field(gt=0)] = 30.0
    # "password" (password_env / password_file) or "oauth2" (the oauth2 table).
    auth: AuthMode = AuthMode.PASSWORD
    oauth2: OAuth2Settings | None = None

    @model_validator(mode="after")
    def _plaintext_only_on_loopback(self) -> _Server:
        if self.tls == TlsMode.NONE and not _is_loopback(self.host):
            raise _KeyedError("tls", "'none' is only allowed for a loopback host (127.0.0.1, ::1, localhost)")
        return self


class AccountSettings(_Server):
    """One IMAP mailbox that mailbridge watches."""

    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")]
    port: Annotated[int, Field(gt=0, lt=65536)] = 993
    user: str
    folder: str = "INBOX"
    processed_folder: str = "Processed"
    quarantine_folder: str = "Quarantine"
    # The queue for mail that was not sent to any queue's support address.
    default_queue: str | None = None
    # Use IMAP IDLE (RFC 2177) when the server offers it; otherwise poll every poll_interval.
    # With IDLE the folder is also checked, and the IDLE renewed, every poll_interval (RFC 2177
    # asks for less than 29 minutes).
    idle: bool = True
    poll_interval: Annotated[float, Field(gt=0, le=1740)] = 30.0
    # UIDs per UID FETCH; larger batches amortise round trips on a backlog.
    fetch_batch: Annotated[int, Field(gt=0, le=5000)] = 200
    # After a permanent fault (login refused, TLS certificate not trusted): retry this often
    # (seconds) instead of the short transient backoff, so a fix on the server heals without a restart.
    permanent_fault_retry: Annotated[float, Field(gt=0, le=86400)] = 300.0

    @model_validator(mode="after")
    def _folders_distinct(self) -> AccountSettings:
        names = {self.folder, self.processed_folder, self.quarantine_folder}
        if len(names) != 3:
            raise _KeyedError(
                "processed_folder", "folder, processed_folder and quarantine_folder must be three different folders"
            )
        return self


class QueueSettings(_Model):
    """A support queue: the addresses that belong to it and how it answers."""

    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")]
    addresses: Annotated[list[str], Field(min_length=1)]
    # The display name on mail we send from this queue.
    display_name: str = "Support"
    language: str = "en"
    # The IMAP account that feeds this queue.
    account: str
    # Who is an agent of this queue: addresses, or "@vendor.example" for everyone at a domain. Agents'
    # replies are recorded as agent replies; commands (#solve, …) are taken only from them, and only
    # from a mail that proves it (a reply to a signed notification, or DKIM, see [conversations]).
    agents: list[str] = []
    # Where notifications of new cases and customer replies go. Unset: every agent listed by address.
    notify: list[str] | None = None
    # The levels #severity accepts.
    severity_levels: Annotated[list[str], Field(min_length=1)] = list(DEFAULT_SEVERITY_LEVELS)
    # Phrases with which a customer asks for more urgency, besides the requests mailbridge understands
    # in any wording (ingest/urgency.py); the request is shown to agents.
    urgency_words: list[str] = list(DEFAULT_URGENCY_WORDS)
    # A customer's request for a more severe level (one the mail names) takes effect: the severity
    # goes up, the deadlines are recomputed and the customer is told (seed 004). Else agents decide.
    customer_may_raise: bool = False
    # A customer's mail that a proven agent forwarded to the support address becomes the customer's
    # case; the customer gets the acknowledgement (saying which agent filed it) unless this is false.
    acknowledge_forwards: bool = True
    # A known customer (a requester or participant of a case, or an address of an [[organisations]]
    # entry) whose new mail to the queue has only one of these words as its subject (after reply
    # prefixes, case-insensitive) gets the list of their open cases instead of a new case (issue 13,
    # "status by mail"). Empty: off.
    status_words: list[Annotated[str, Field(min_length=1, max_length=64)]] = list(DEFAULT_STATUS_WORDS)
    # The information a request should contain (seed 000's "Basisinformationen"): the acknowledgement
    # asks for what is missing, and later mails that supply it are recorded (mailbridge/checklist.py).
    checklist: list[ChecklistItem] = []
    # The [[calendars]] entry whose business hours and holidays the queue's deadlines count in.
    calendar: str | None = None
    # The [[severity_schemes]] entry: levels, the words that detect them, response targets. With a
    # scheme, #severity takes its level keys (severity_levels is then not used).
    severity_scheme: str | None = None
    # Who hears of breaches, re-escalations and cases that escalate on creation: the managers.
    # Unset: the notify addresses.
    escalation: list[str] | None = None
    # The SLA clocks stop while the case waits for the customer (pending).
    pause_while_pending: bool = True
    # Only customers whose [[organisations]] entry names a contract get a response promise (seed 003).
    contract_required: bool = False

    @field_validator("addresses", "notify", "escalation")
    @classmethod
    def _addresses(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else [_address(a) for a in v]

    @field_validator("agents")
    @classmethod
    def _agents(cls, v: list[str]) -> list[str]:
        out = []
        for a in v:
            a = a.strip().lower()
            if a.startswith("@") and "." in a and " " not in a and a.count("@") == 1:
                out.append(a)
            else:
                out.append(_address(a))
        return out

    @model_validator(mode="after")
    def _no_loops(self) -> QueueSettings:
        for key, values in (
            ("agents", self.agents),
            ("notify", self.notify or []),
            ("escalation", self.escalation or []),
        ):
            for a in values:
                if a in self.addresses:
                    # A notification to ourselves would come back as a new mail: a loop.
                    raise _KeyedError(key, f"{a} is one of this queue's own addresses")
        keys = [item.key for item in self.checklist]
        if len(keys) != len(set(keys)):
            raise _KeyedError("checklist", f"item keys must be unique: {', '.join(sorted(keys))}")
        return self

    @property
    def address(self) -> str:
        """The address we send from: the first one listed."""
        return self.addresses[0]

    @property
    def notify_addresses(self) -> list[str]:
        return list(self.notify) if self.notify is not None else [a for a in self.agents if not a.startswith("@")]

    @property
    def escalation_addresses(self) -> list[str]:
        return list(self.escalation) if self.escalation is not None else self.notify_addresses

    def is_agent(self, email: str) -> bool:
        email = email.lower()
        return email in self.agents or ("@" + email.rsplit("@", 1)[-1]) in self.agents


def _address(a: str) -> str:
    a = a.strip().lower()
    if "@" not in a or a.startswith("@") or a.endswith("@") or " " in a:
        raise ValueError(f"{a!r} is not an e-mail address")
    return a


class ThirdPartyPolicy(StrEnum):
    # The reply is stored on the case, flagged for agents; the sender gets nothing back.
    ATTACH_AND_FLAG = "attach-and-flag"
    # The reply opens a case of its own, whose acknowledgement says nothing about the other case.
    NEW_TICKET = "new-ticket"


class ConversationSettings(_Model):
    """Replies, participants, the ticket lifecycle and agents working from their mail client."""

    # A customer reply to a solved case reopens it within this many days of the solution; later (or
    # once closed) it opens a new case linked to the old one. Solved cases close after the window.
    reopen_window_days: Annotated[float, Field(gt=0, le=3650)] = 7.0
    # How often solved cases past the window are closed (seconds).
    close_interval: Annotated[float, Field(gt=0)] = 300.0
    # At most this many notifications, and this many relays, per case in any hour: two
    # autoresponders that do not mark their mail would otherwise ping-pong through a case.
    max_mails_per_case_per_hour: Annotated[int, Field(gt=0)] = 30
    # Reply/forward prefixes stripped from subjects ("AW:", "Fwd:", …). Unset: a wide built-in list.
    reply_prefixes: list[str] | None = None
    # A reply that references a case but comes from someone who does not belong to it.
    third_party: ThirdPartyPolicy = ThirdPartyPolicy.ATTACH_AND_FLAG
    # Domains that do not identify an organisation (free mail providers).
    public_domains: list[str] = list(DEFAULT_PUBLIC_DOMAINS)
    # The key that signs the Message-IDs of agent notifications (an agent's reply to one proves it
    # comes from an agent). From an environment variable or a file; unset: a random key kept in
    # var_dir/notification.key (several instances must share one key: set it here then).
    secret_env: str | None = None
    secret_file: Path | None = None
    secret: SecretStr | None = Field(default=None, exclude=True)
    # The authserv-id of our own receiving mail server. When set, an agent's mail for which that
    # server's Authentication-Results header says dkim=pass for the agent's domain counts as proven
    # too (RFC 8601; the server must remove such headers that arrive from outside).
    trusted_authserv_id: str | None = None

    @field_validator("secret")
    @classmethod
    def _long_enough(cls, v: SecretStr | None) -> SecretStr | None:
        # The key signs what proves an agent: a short one could be guessed offline from one
        # notification Message-ID.
        if v is not None and len(v.get_secret_value()) < MIN_SECRET_CHARS:
            raise ValueError(f"the notification key must have at least {MIN_SECRET_CHARS} characters")
        return v

    @field_validator("public_domains")
    @classmethod
    def _domains(cls, v: list[str]) -> list[str]:
        return [d.strip().lower().lstrip("@") for d in v]


class RateLimit(_Model):
    """At most ``max`` automatic mails in any ``minutes`` minutes."""

    max: Annotated[int, Field(gt=0)]
    minutes: Annotated[float, Field(gt=0, le=60 * 24 * 30)]


class AutoMailSettings(_Model):
    """Guards on the mails we send by ourselves to outside addresses (acknowledgements, notices):
    against loops with autoresponders that do not mark their mail, and against bouncing addresses."""

    # After a hard bounce (a permanent failure, 5.x.x), no automatic mail goes to that address for
    # this many days (the bounce is recorded on the case; agents' replies still go out).
    hard_bounce_suppress_days: Annotated[float, Field(ge=0, le=3650)] = 60.0
    # Tiered limits per recipient and case, and per recipient over all cases; an automatic mail over
    # any of them is recorded on its case (auto_mail_suppressed), not sent.
    per_ticket: list[RateLimit] = [
        RateLimit(max=10, minutes=10),
        RateLimit(max=25, minutes=60),
        RateLimit(max=100, minutes=600),
    ]
    per_recipient: list[RateLimit] = [
        RateLimit(max=30, minutes=10),
        RateLimit(max=120, minutes=60),
        RateLimit(max=360, minutes=600),
    ]
    # The sender of a mail over ingest.max_message_bytes gets a short notice (it is quarantined).
    oversize_notice: bool = True


class SmtpSettings(_Server):
    port: Annotated[int, Field(gt=0, lt=65536)] = 587
    tls: TlsMode = TlsMode.STARTTLS
    # Log in (AUTH) as this user; then password_env or password_file is required (auth = "password"),
    # or the identity of the XOAUTH2 login (auth = "oauth2").
    user: str | None = None
    # The largest mail the server accepts (Postfix message_size_limit: 10,240,000 by default;
    # Exchange Online 35 MB): a notification leaves files out rather than grow past it.
    max_message_bytes: Annotated[int, Field(ge=1024 * 1024)] = 10_240_000
    # auth = "oauth2": use the token of this [[accounts]] entry (same mailbox, same app), instead of
    # an [smtp.oauth2] table of its own.
    oauth2_account: str | None = None


class TokenSettings(_Model):
    """The token store's encryption key (Fernet, `mailbridge auth keygen` makes one): needed as soon
    as one login uses auth = "oauth2". From an environment variable or a file, never the config."""

    key_env: str | None = None
    key_file: Path | None = None
    key: SecretStr | None = Field(default=None, exclude=True)

    @field_validator("key")
    @classmethod
    def _fernet(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None:
            from cryptography.fernet import Fernet

            try:
                Fernet(v.get_secret_value().encode())
            except (ValueError, TypeError):
                raise ValueError(
                    "the key is not a Fernet key (32 url-safe base64-encoded bytes; make one with "
                    "`mailbridge auth keygen`)"
                ) from None
        return v


class DatabaseSettings(_Model):
    # None means: a SQLite file under var_dir.
    url: str | None = None


class CaseNumberSettings(_Model):
    prefix: Annotated[str, Field(min_length=1, max_length=8, pattern=r"^[A-Za-z]+$")] = "C"
    # Digits after the prefix, the last of them the Damm check digit.
    digits: Annotated[int, Field(ge=3, le=15)] = 7
    # The first serial handed out (so numbers have a constant width, e.g. C1000002).
    first_serial: Annotated[int, Field(gt=0)] = 100000

    @model_validator(mode="after")
    def _first_fits(self) -> CaseNumberSettings:
        if self.first_serial > 10 ** (self.digits - 1) - 1:
            raise ValueError(f"first_serial {self.first_serial} does not fit in {self.digits - 1} digits")
        return self

    @property
    def fmt(self) -> CaseNumberFormat:
        return CaseNumberFormat(prefix=self.prefix.upper(), digits=self.digits)


class OutboxSettings(_Model):
    # Rows claimed by one sender pass.
    batch_size: Annotated[int, Field(gt=0, le=1000)] = 50
    # A claim older than this is taken to be from a process that died while sending.
    lease_seconds: Annotated[float, Field(gt=0)] = 60.0
    # Transient failures (4xx, connection errors) are retried this often, with backoff, then failed.
    max_attempts: Annotated[int, Field(gt=0)] = 12
    # First retry delay; it doubles per attempt up to max_backoff, with jitter.
    backoff_seconds: Annotated[float, Field(gt=0)] = 30.0
    max_backoff_seconds: Annotated[float, Field(gt=0)] = 3600.0
    # How often the sender looks for due rows (it is also woken right after a mail is queued).
    interval: Annotated[float, Field(gt=0)] = 5.0
    # SMTP connections one sender pass works its batch with at once (each sends several mails).
    connections: Annotated[int, Field(gt=0, le=32)] = 4


class IngestSettings(_Model):
    # Languages a mail may be detected as; a queue's default is used when detection is unsure.
    languages: list[str] = list(DEFAULT_LANGUAGES)
    # Mails larger than this are quarantined instead of parsed.
    max_message_bytes: Annotated[int, Field(gt=0)] = 50 * 1024 * 1024
    # Worker processes that parse a backlog while the database work goes on; None: one per CPU;
    # 0: parse in the fetching thread only. Started with the service (``App.warm_up``) they get every
    # mail, a single new one too; a command parses its few mails inline.
    parse_workers: Annotated[int, Field(ge=0, le=64)] | None = None
    # Group commit: a backlog is recorded in transactions of up to ``commit_batch`` mails, each held
    # at most ``commit_seconds`` (on SQLite the write lock is held that long: the sender and the
    # scheduler's jobs wait). Mail that is at hand alone (a new mail under IDLE) commits at once.
    commit_batch: Annotated[int, Field(ge=1, le=1000)] = 100
    commit_seconds: Annotated[float, Field(gt=0, le=10)] = 0.5

    @property
    def workers(self) -> int:
        return os.cpu_count() or 1 if self.parse_workers is None else self.parse_workers


class TargetSettings(_Model):
    """A response target: exactly one of business_hours, business_days, calendar_hours."""

    business_hours: Annotated[float, Field(gt=0)] | None = None
    business_days: Annotated[int, Field(gt=0)] | None = None
    calendar_hours: Annotated[float, Field(gt=0)] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> TargetSettings:
        given = [k for k in ("business_hours", "business_days", "calendar_hours") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of business_hours, business_days, calendar_hours")
        return self

    @property
    def target(self) -> Target:
        for kind in TargetKind:
            value = getattr(self, kind.value)
            if value is not None:
                return Target(kind, value)
        raise AssertionError("validated")


class StageSettings(_Model):
    """A rung of the escalation ladder: at ``at`` percent of a clock, tell ``to``."""

    at: Annotated[float, Field(gt=0, le=1000)]
    # assignee | agents | escalation | an e-mail address
    to: str = "assignee"
    # Sent also outside the recipients' business hours (else held back until the next opening).
    urgent: bool = False

    @field_validator("to")
    @classmethod
    def _to(cls, v: str) -> str:
        v = v.strip()
        if v.lower() in {r.value for r in Recipients}:
            return v.lower()
        return _address(v)

    @property
    def stage(self) -> Stage:
        to = Recipients(self.to) if self.to in {r.value for r in Recipients} else self.to
        return Stage(self.at, to, self.urgent)


def _ladder(stages: list[StageSettings]) -> tuple[Stage, ...]:
    ats = [st.at for st in stages]
    if len(set(ats)) != len(ats):
        raise _KeyedError("stages", f"two stages at the same percentage: {sorted(ats)}")
    return tuple(sorted((st.stage for st in stages), key=lambda st: st.at))


class SeverityLevelSettings(_Model):
    key: Annotated[str, Field(min_length=1, max_length=16, pattern=r"^[A-Za-z0-9_-]+$")]
    label_de: str
    label_en: str
    # Words and phrases that detect this level in a customer's mail (whole words, any case).
    words: list[str] = []
    first_response: TargetSettings | None = None
    resolution: TargetSettings | None = None
    follow_up: TargetSettings | None = None
    escalate_on_create: bool = False
    # This level's escalation ladder (else the scheme's).
    stages: list[StageSettings] | None = None
    reescalate_every: TargetSettings | None = None

    @model_validator(mode="after")
    def _valid(self) -> SeverityLevelSettings:
        if self.stages is not None:
            _ladder(self.stages)
        for key in ("follow_up", "reescalate_every"):
            t = getattr(self, key)
            hours = t.business_hours or t.calendar_hours if t is not None else None
            if hours is not None and hours < 0.25:
                raise _KeyedError(key, "a cadence shorter than a quarter of an hour would flood the recipients")
        return self


class SeveritySchemeSettings(_Model):
    """Severity levels, most severe first, and the level of a mail that names none."""

    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")]
    default: str
    levels: Annotated[list[SeverityLevelSettings], Field(min_length=1)]
    # The escalation ladder of every level that has none of its own.
    stages: list[StageSettings] | None = None

    @model_validator(mode="after")
    def _valid(self) -> SeveritySchemeSettings:
        try:
            self.scheme()
        except ValueError as e:
            raise _KeyedError("levels", str(e)) from None
        return self

    def scheme(self) -> SeverityScheme:
        return SeverityScheme(
            levels=tuple(
                SeverityLevel(
                    key=lv.key,
                    label_de=lv.label_de,
                    label_en=lv.label_en,
                    words=tuple(lv.words),
                    first_response=lv.first_response.target if lv.first_response else None,
                    resolution=lv.resolution.target if lv.resolution else None,
                    follow_up=lv.follow_up.target if lv.follow_up else None,
                    escalate_on_create=lv.escalate_on_create,
                    stages=_ladder(lv.stages)
                    if lv.stages is not None
                    else (_ladder(self.stages) if self.stages is not None else DEFAULT_STAGES),
                    reescalate_every=lv.reescalate_every.target if lv.reescalate_every else None,
                )
                for lv in self.levels
            ),
            default=self.default,
        )


# Which key a calendar error is about, by a word of its message (BusinessCalendar.build's errors).
_CALENDAR_ERROR_KEYS = (
    ("time zone", "timezone"),
    ("subdivision", "subdivision"),
    ("country", "country"),
    ("weekday", "hours"),
)
_MONTH_DAY_RE = r"^(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$"


def _day_key(value: str | date, key: str) -> date | tuple[int, int]:
    """A date (TOML date or "2026-12-28") or a yearly "MM-DD"."""
    if isinstance(value, date):
        return value
    if re.match(_MONTH_DAY_RE, value):
        return int(value[:2]), int(value[3:])
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise _KeyedError(key, f"{value!r} is neither a date (2026-12-28) nor a yearly day (12-24)") from None


class CalendarSettings(_Model):
    """Business hours and holidays of a queue (or of a contract partner's seat)."""

    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")]
    timezone: str = "Europe/Berlin"
    # mon … sun → intervals "08:00-17:00" (several for a split day, "00:00-24:00" for the whole day).
    hours: dict[str, list[str]] = {}
    # Public holidays from the holidays package: an ISO country code and optionally a subdivision.
    country: str | None = None
    subdivision: str | None = None
    # Extra closed days: dates (2026-12-28), or "MM-DD" for every year.
    closed_dates: list[date | str] = []
    # Hours replacing a day's usual ones: "2026-12-23" or yearly "12-24" → ["08:00-12:00"].
    special_hours: dict[str, list[str]] = {}
    # Open around the clock (no hours, no holidays).
    always_open: bool = False

    @model_validator(mode="after")
    def _valid(self) -> CalendarSettings:
        self.calendar()
        return self

    def calendar(self) -> BusinessCalendar:
        closed = [_day_key(d, "closed_dates") for d in self.closed_dates]
        special = {_day_key(k, "special_hours"): v for k, v in self.special_hours.items()}
        try:
            return BusinessCalendar.build(
                timezone=self.timezone,
                hours=self.hours,
                country=self.country,
                subdivision=self.subdivision,
                closed_dates=closed,
                special_hours=special,
                always_open=self.always_open,
            )
        except ValueError as e:
            text = str(e)
            key = next((k for word, k in _CALENDAR_ERROR_KEYS if word in text), "hours")
            raise _KeyedError(key, text) from None


class TrackerScope(StrEnum):
    OWN = "own"
    ORGANISATION = "organisation"


class OrganisationSettings(_Model):
    """A customer organisation, known by mail domain or address, and its contract (seed 003)."""

    name: Annotated[str, Field(min_length=1, max_length=128)]
    domains: list[str] = []
    addresses: list[str] = []
    # The contract's name or tier ("Wartungsvertrag", "gold"); not set: no contract.
    contract: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    # The [[calendars]] entry of the contract partner's seat (its public holidays, seed 000); else
    # the queue's.
    calendar: str | None = None
    # Who of the organisation sees its cases in the case tracker (``mailbridge web``): "own" (each
    # person the cases they are requester or participant of) or "organisation" (everyone whose
    # address belongs to the organisation sees all of its cases: a lead person's company view).
    tracker: TrackerScope = TrackerScope.OWN

    @field_validator("domains")
    @classmethod
    def _domains(cls, v: list[str]) -> list[str]:
        out = []
        for d in v:
            d = d.strip().lower().lstrip("@")
            if not d or "." not in d or " " in d or "@" in d:
                raise ValueError(f"{d!r} is not a mail domain")
            out.append(d)
        return out

    @field_validator("addresses")
    @classmethod
    def _addresses(cls, v: list[str]) -> list[str]:
        return [_address(a) for a in v]


class DigestSettings(_Model):
    """A manager digest: what is breached and at risk, per queue, on a schedule."""

    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")]
    recipients: Annotated[list[str], Field(min_length=1)]
    # The queues it covers; unset: all.
    queues: list[str] | None = None
    # When it is sent: a crontab line (minute hour day month weekday), in ``timezone``.
    cron: str = "0 8 * * mon-fri"
    timezone: str = "Europe/Berlin"
    # Only on business days of this [[calendars]] entry (no digest on a public holiday).
    calendar: str | None = None
    # "At risk": due within this many business hours (of the case's calendar).
    at_risk_hours: Annotated[float, Field(gt=0)] = 4
    # How many of the oldest open cases are listed.
    oldest: Annotated[int, Field(ge=0, le=100)] = 10
    language: str = "de"
    # Send also when nothing is breached or at risk.
    send_empty: bool = False

    @field_validator("recipients")
    @classmethod
    def _recipients(cls, v: list[str]) -> list[str]:
        return [_address(a) for a in v]

    @model_validator(mode="after")
    def _valid(self) -> DigestSettings:
        from apscheduler.triggers.cron import CronTrigger

        try:
            CronTrigger.from_crontab(self.cron, timezone=self.timezone)
        except (ValueError, KeyError) as e:
            key = "timezone" if "zone" in str(e).lower() or isinstance(e, KeyError) else "cron"
            raise _KeyedError(key, f"{self.cron if key == 'cron' else self.timezone!r}: {e}") from None
        return self


# The report formats a scheduled report can be mailed in (``mailbridge/reports``'s ``--format``).
REPORT_FORMATS = ("html", "csv", "xlsx", "text")
# The reports there are (``mailbridge report <name>``).
REPORT_NAMES = ("open-items", "history", "sla", "volume")


class ReportSettings(_Model):
    """A report mailed on a schedule (``scheduled.py``): the report's name and parameters as
    ``mailbridge report <report>`` takes them, the format, the recipients and when."""

    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")]
    # Which report: open-items, history, sla, volume.
    report: Annotated[str, Field(min_length=1)]
    # Its options, as on the command line without the dashes: {queue = "support", by = "queue"}.
    params: dict[str, Any] = {}
    format: str = "html"
    recipients: Annotated[list[str], Field(min_length=1)]
    language: str = "de"
    # "mon 08:00", "mon,wed 08:00", "weekdays 07:30", "daily 07:30", "first of month 08:00".
    schedule: str
    # The [[calendars]] entry whose zone the schedule is in; on its closed days nothing is sent.
    calendar: str | None = None
    # Or only a zone (default Europe/Berlin); not both.
    timezone: str | None = None

    @field_validator("recipients")
    @classmethod
    def _recipients(cls, v: list[str]) -> list[str]:
        return [_address(a) for a in v]

    @field_validator("report")
    @classmethod
    def _report(cls, v: str) -> str:
        if v not in REPORT_NAMES:
            raise ValueError(f"{v!r} is not a report; allowed: {', '.join(REPORT_NAMES)}")
        return v

    @field_validator("format")
    @classmethod
    def _format(cls, v: str) -> str:
        if v not in REPORT_FORMATS:
            raise ValueError(f"{v!r} is not a format; allowed: {', '.join(REPORT_FORMATS)}")
        return v

    @model_validator(mode="after")
    def _valid(self) -> ReportSettings:
        if self.calendar is not None and self.timezone is not None:
            raise _KeyedError("timezone", "give calendar or timezone, not both (a calendar has its zone)")
        if self.calendar is None:
            try:
                schedules.parse(self.schedule, self.timezone or DEFAULT_REPORT_TIMEZONE)
            except schedules.ScheduleError as e:
                key = "timezone" if str(e).startswith(repr(self.timezone)) else "schedule"
                raise _KeyedError(key, str(e)) from None
        return self


DEFAULT_REPORT_TIMEZONE = "Europe/Berlin"


class SlaSettings(_Model):
    # How often the escalation job runs (seconds).
    escalation_interval: Annotated[float, Field(gt=0)] = 60
    # How many due cases one transaction of the job handles.
    batch: Annotated[int, Field(gt=0)] = 200


class LoggingSettings(_Model):
    level: str = "info"
    # "auto": JSON when stderr is not a terminal, readable lines when it is.
    format: str = "auto"
    # While a fetch cycle works a backlog, a backlog_progress line this often (seconds).
    progress_interval: Annotated[float, Field(gt=0)] = 30.0
    # Replace every e-mail address in log events by a stable pseudonym ("addr-<12 hex>"); the same
    # address always gets the same one, so a log can still be followed (``logging.py``).
    redact_addresses: bool = False

    @field_validator("format")
    @classmethod
    def _fmt(cls, v: str) -> str:
        if v not in ("auto", "json", "console"):
            raise ValueError("must be 'auto', 'json' or 'console'")
        return v

    @field_validator("level")
    @classmethod
    def _lvl(cls, v: str) -> str:
        if v.lower() not in ("debug", "info", "warning", "error"):
            raise ValueError("must be one of debug, info, warning, error")
        return v.lower()


class AlertSettings(_Model):
    """Mail to the operators when mailbridge is unwell (``mailbridge/alerts.py`` decides when)."""

    # Who gets alert mails; empty: no alert mails (``mailbridge status`` still shows everything).
    recipients: list[str] = []
    language: str = "en"
    # The zone of the times in alert mails and `mailbridge status`; unset: the first queue's
    # calendar's zone, else UTC.
    timezone: str | None = None
    # An account failing this long (minutes) is alerted; a login or TLS fault at once.
    account_failing_minutes: Annotated[float, Field(gt=0)] = 10
    # SMTP failing (or a queued mail retried) this long (minutes) is alerted.
    outbox_failing_minutes: Annotated[float, Field(gt=0)] = 10
    # More than this many mails quarantined within repeat_minutes is alerted.
    quarantine_growth: Annotated[int, Field(ge=0)] = 10
    # At most one alert mail per condition in this many minutes while it lasts.
    repeat_minutes: Annotated[float, Field(gt=0)] = 240
    # How often the conditions are evaluated (seconds).
    interval: Annotated[float, Field(gt=0)] = 60
    # A warning this many days before an OAuth client secret expires (oauth2.client_secret_expires).
    secret_expiry_warning_days: Annotated[int, Field(ge=0, le=365)] = 14

    @field_validator("recipients")
    @classmethod
    def _recipients(cls, v: list[str]) -> list[str]:
        return [_address(a) for a in v]

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str | None) -> str | None:
        if v is not None:
            from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

            try:
                ZoneInfo(v)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"{v!r} is not a time zone (e.g. Europe/Berlin)") from None
        return v


_Days = Annotated[float, Field(gt=0, le=36500)]


class RetentionSettings(_Model):
    """How long personal data is kept (``mailbridge/privacy/retention.py`` applies it, daily). Every
    period is in days; unset (the default): kept for ever. Counted from the case's closing for a
    case's mails, from receipt for noise, from quarantining for quarantined mail."""

    # The raw mails (var/raw) of a closed case.
    raw_days: _Days | None = None
    # The attachments' bytes (var/attachments) of a closed case.
    attachment_days: _Days | None = None
    # Everything personal of a closed case: message text, subjects, names and addresses (replaced by
    # placeholders), raw mails, attachments, the mails we sent; the case number, dates, SLA figures and
    # the history's events (without addresses) stay.
    case_days: _Days | None = None
    # Auto-replies and bounces that belong to no case (and their raw mails); the bytes of the mails we
    # sent about no case (oversize notices, digests, alerts).
    noise_days: _Days | None = None
    # Quarantined mails (row and raw mail), open or dealt with.
    quarantine_days: _Days | None = None
    # Mails in each account's processed_folder older than this (by the IMAP server's arrival date)
    # are deleted and expunged there.
    processed_folder_days: _Days | None = None
    # When the daily job runs, "HH:MM" UTC.
    daily_at: str = "03:15"

    @field_validator("daily_at")
    @classmethod
    def _time(cls, v: str) -> str:
        import re

        m = re.fullmatch(r"([01]\d|2[0-3]):([0-5]\d)", v)
        if m is None:
            raise ValueError('must be "HH:MM" (00:00 to 23:59, UTC)')
        return v

    @model_validator(mode="after")
    def _order(self) -> RetentionSettings:
        for key in ("raw_days", "attachment_days"):
            mine = getattr(self, key)
            if mine is not None and self.case_days is not None and mine > self.case_days:
                raise _KeyedError(key, f"{mine:g} is longer than case_days ({self.case_days:g}), which removes it too")
        return self

    @property
    def enabled(self) -> bool:
        return any(
            v is not None
            for v in (
                self.raw_days,
                self.attachment_days,
                self.case_days,
                self.noise_days,
                self.quarantine_days,
                self.processed_folder_days,
            )
        )


class MetricsSettings(_Model):
    # Where ``mailbridge run`` serves /metrics, /healthz and /readyz: "host:port" ("127.0.0.1:9108",
    # "[::1]:9108", "0.0.0.0:9108" in a container). None: not served.
    listen: str | None = None

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str | None) -> str | None:
        if v is not None:
            _host_port(v)
        return v

    @property
    def address(self) -> tuple[str, int] | None:
        """(host, port) to bind, or None when metrics are off."""
        return _host_port(self.listen) if self.listen is not None else None


class ClusterSettings(_Model):
    """Several instances on one database (``cluster.py``): the leases' length and this instance's name."""

    # How long a lease (a mailbox's, the scheduler leader's, an instance's heartbeat) lasts unless
    # renewed; renewed every third of it. An instance killed without a stop is replaced after about
    # this long (plus one renewal interval); one stopped cleanly hands its leases over at once.
    lease_seconds: Annotated[float, Field(ge=1, le=3600)] = 30.0
    # This instance's name in the leases; unique per running instance. None: host:pid:random, new at
    # every start. A fixed name lets a restarted instance take its own leases back at once.
    instance: Annotated[str, Field(min_length=1, max_length=200)] | None = None


class NotificationSettings(_Model):
    """What the agents' notification carries besides its text."""

    # The customer's attachments travel with the notification up to this many bytes in all (the
    # files' own sizes; base64 makes the mail about 4/3 of that, so keep it well under the SMTP
    # server's message size limit). A file that does not fit is listed with its size, and with a
    # download link when [web] base_url is set. 0: no file is attached.
    attach_max_bytes: Annotated[int, Field(ge=0)] = 10 * 1024 * 1024


class WebSettings(_Model):
    """The web app (``mailbridge web``): the customers' Case Tracker (sign-in links, sessions, case
    links in mails) and agents' download links for attachments too large to travel with a
    notification; the key signs and encrypts all of them."""

    # Where ``mailbridge web`` listens: "host:port".
    listen: str = "127.0.0.1:8080"
    # The address agents reach the web app at (behind a reverse proxy), e.g. "https://support.example/".
    # Unset: notifications carry no download links.
    base_url: str | None = None
    # The key that signs download links: from an environment variable or a file (required with
    # base_url; at least 32 characters). Never logged.
    secret_env: str | None = None
    secret_file: Path | None = None
    secret: SecretStr | None = Field(default=None, exclude=True)
    # A download link works for this many days after the notification was sent.
    link_days: Annotated[float, Field(gt=0, le=3650)] = 30.0
    # The case tracker: sign-in mails per address and per client (IP) address in one hour, beyond
    # which a request is answered the same but no mail goes out.
    signin_per_address: Annotated[int, Field(ge=1, le=1000)] = 5
    signin_per_client: Annotated[int, Field(ge=1, le=100000)] = 30
    # A signed-in session lasts this many hours (a signed cookie; sign-out ends it earlier).
    session_hours: Annotated[float, Field(gt=0, le=24 * 90)] = 12.0
    # Cases per page of the tracker's list.
    page_size: Annotated[int, Field(ge=5, le=500)] = 25
    # The link to a case that acknowledgements and relayed answers carry works for this many days.
    case_link_days: Annotated[float, Field(gt=0, le=3650)] = 30.0

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        _host_port(v)
        return v

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise ValueError(f'{v!r} is not an http(s) URL (e.g. "https://support.example/")')
        return v if v.endswith("/") else v + "/"

    @field_validator("secret")
    @classmethod
    def _long_enough(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and len(v.get_secret_value()) < MIN_SECRET_CHARS:
            raise ValueError(f"the link key must have at least {MIN_SECRET_CHARS} characters")
        return v

    @model_validator(mode="after")
    def _key_with_url(self) -> WebSettings:
        if self.base_url is not None and self.secret is None:
            raise _KeyedError("secret_env", "base_url is set, so set secret_env or secret_file (the link key)")
        return self

    @property
    def address(self) -> tuple[str, int]:
        return _host_port(self.listen)


def _host_port(value: str) -> tuple[str, int]:
    """``host:port`` (an IPv6 host in brackets) → (host, port); ValueError saying what is wrong."""
    shape = f'{value!r} is not host:port (e.g. "127.0.0.1:9108")'
    try:
        parts = urlsplit(f"//{value}")
    except ValueError:  # e.g. an unclosed IPv6 bracket
        raise ValueError(shape) from None
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{shape}: the port must be a number from 1 to 65535") from None
    if not parts.hostname or parts.path or parts.query or parts.fragment or parts.username is not None:
        raise ValueError(shape)
    if port is None or port == 0:
        raise ValueError(f"{shape}: give a port from 1 to 65535")
    return parts.hostname, port


class Settings(_Model):
    """Everything mailbridge is configured with; built only by :func:`load_settings`."""

    var_dir: Path = Path(DEFAULT_VAR_DIR)
    database: DatabaseSettings = DatabaseSettings()
    case_numbers: CaseNumberSettings = CaseNumberSettings()
    accounts: Annotated[list[AccountSettings], Field(min_length=1)]
    queues: Annotated[list[QueueSettings], Field(min_length=1)]
    smtp: SmtpSettings
    outbox: OutboxSettings = OutboxSettings()
    ingest: IngestSettings = IngestSettings()
    conversations: ConversationSettings = ConversationSettings()
    auto_mail: AutoMailSettings = AutoMailSettings()
    calendars: list[CalendarSettings] = []
    severity_schemes: list[SeveritySchemeSettings] = []
    organisations: list[OrganisationSettings] = []
    digests: list[DigestSettings] = []
    reports: list[ReportSettings] = []
    sla: SlaSettings = SlaSettings()
    logging: LoggingSettings = LoggingSettings()
    alerts: AlertSettings = AlertSettings()
    metrics: MetricsSettings = MetricsSettings()
    notifications: NotificationSettings = NotificationSettings()
    web: WebSettings = WebSettings()
    retention: RetentionSettings = RetentionSettings()
    tokens: TokenSettings = TokenSettings()
    cluster: ClusterSettings = ClusterSettings()
    # The file this came from, for messages; not a key in the file.
    source: Path | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _cross_references(self) -> Settings:
        accounts = [a.name for a in self.accounts]
        queues = [q.name for q in self.queues]
        for kind, names in (("accounts", accounts), ("queues", queues)):
            dup = {n for n in names if names.count(n) > 1}
            if dup:
                raise ValueError(f"{kind}: duplicate name {sorted(dup)[0]!r}")
        owner: dict[str, str] = {}
        for i, q in enumerate(self.queues):
            if q.account not in accounts:
                raise _KeyedError(f"queues[{i}].account", f"no account named {q.account!r}")
            if q.language not in self.ingest.languages:
                raise _KeyedError(
                    f"queues[{i}].language", f"{q.language!r} is not in ingest.languages {self.ingest.languages}"
                )
            for a in q.addresses:
                if a in owner:
                    raise _KeyedError(f"queues[{i}].addresses", f"{a} already belongs to queue {owner[a]!r}")
                owner[a] = q.name
        for i, q in enumerate(self.queues):
            for key, values in (("agents", q.agents), ("notify", q.notify or []), ("escalation", q.escalation or [])):
                for a in values:
                    if a in owner:
                        raise _KeyedError(
                            f"queues[{i}].{key}", f"{a} is a support address of queue {owner[a]!r} (a mail loop)"
                        )
        calendars = {c.name: c for c in self.calendars}
        schemes = {c.name: c for c in self.severity_schemes}
        for kind, names in (("calendars", [c.name for c in self.calendars]), ("severity_schemes", list(schemes))):
            dup = {n for n in names if names.count(n) > 1}
            if dup:
                raise ValueError(f"{kind}: duplicate name {sorted(dup)[0]!r}")
        for i, q in enumerate(self.queues):
            if q.calendar is not None and q.calendar not in calendars:
                raise _KeyedError(f"queues[{i}].calendar", f"no [[calendars]] entry named {q.calendar!r}")
            if q.severity_scheme is not None:
                if q.severity_scheme not in schemes:
                    raise _KeyedError(
                        f"queues[{i}].severity_scheme", f"no [[severity_schemes]] entry named {q.severity_scheme!r}"
                    )
                has_targets = any(
                    lv.first_response or lv.resolution or lv.follow_up for lv in schemes[q.severity_scheme].levels
                )
                if has_targets and q.calendar is None:
                    raise _KeyedError(f"queues[{i}].calendar", "the severity scheme has targets: name a calendar")
        seen: dict[str, str] = {}
        for i, o in enumerate(self.organisations):
            if o.calendar is not None and o.calendar not in calendars:
                raise _KeyedError(f"organisations[{i}].calendar", f"no [[calendars]] entry named {o.calendar!r}")
            for key in (*o.domains, *o.addresses):
                if key in seen:
                    raise _KeyedError(f"organisations[{i}]", f"{key} already belongs to {seen[key]!r}")
                seen[key] = o.name
        for i, d in enumerate(self.digests):
            for qn in d.queues or []:
                if qn not in queues:
                    raise _KeyedError(f"digests[{i}].queues", f"no queue named {qn!r}")
            if d.calendar is not None and d.calendar not in calendars:
                raise _KeyedError(f"digests[{i}].calendar", f"no [[calendars]] entry named {d.calendar!r}")
            if d.language not in self.ingest.languages:
                raise _KeyedError(f"digests[{i}].language", f"{d.language!r} is not in ingest.languages")
        names = [d.name for d in self.digests]
        if len(set(names)) != len(names):
            raise ValueError("digests: duplicate name")
        for i, r in enumerate(self.reports):
            if r.calendar is not None:
                if r.calendar not in calendars:
                    raise _KeyedError(f"reports[{i}].calendar", f"no [[calendars]] entry named {r.calendar!r}")
                try:
                    self.report_schedule(r)
                except schedules.ScheduleError as e:
                    raise _KeyedError(f"reports[{i}].schedule", str(e)) from None
            if r.language not in self.ingest.languages:
                raise _KeyedError(f"reports[{i}].language", f"{r.language!r} is not in ingest.languages")
            for a in r.recipients:
                if a in owner:
                    raise _KeyedError(
                        f"reports[{i}].recipients", f"{a} is a support address of queue {owner[a]!r} (a mail loop)"
                    )
        names = [r.name for r in self.reports]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise _KeyedError("reports", f"duplicate name {sorted(dup)[0]!r}")
        if self.alerts.language not in self.ingest.languages:
            raise _KeyedError("alerts.language", f"{self.alerts.language!r} is not in ingest.languages")
        for a in self.alerts.recipients:
            if a in owner:
                raise _KeyedError("alerts.recipients", f"{a} is a support address of queue {owner[a]!r} (a mail loop)")
        for i, a in enumerate(self.accounts):
            if a.auth is AuthMode.OAUTH2 and a.oauth2 is None:
                raise _KeyedError(f"accounts[{i}].oauth2", 'auth = "oauth2" needs an [accounts.oauth2] table')
            if a.auth is AuthMode.PASSWORD and a.oauth2 is not None:
                raise _KeyedError(f"accounts[{i}].auth", 'an oauth2 table is given: set auth = "oauth2"')
        smtp = self.smtp
        if smtp.auth is AuthMode.OAUTH2:
            if not smtp.user:
                raise _KeyedError("smtp.user", 'auth = "oauth2" needs the mailbox to log in as (user)')
            if (smtp.oauth2 is None) == (smtp.oauth2_account is None):
                raise _KeyedError("smtp.oauth2_account", "give oauth2_account or an [smtp.oauth2] table (one of them)")
            if smtp.oauth2_account is not None:
                owner_acc = next((a for a in self.accounts if a.name == smtp.oauth2_account), None)
                if owner_acc is None:
                    raise _KeyedError("smtp.oauth2_account", f"no account named {smtp.oauth2_account!r}")
                if owner_acc.auth is not AuthMode.OAUTH2:
                    raise _KeyedError("smtp.oauth2_account", f"account {smtp.oauth2_account!r} does not use oauth2")
        elif smtp.oauth2 is not None or smtp.oauth2_account is not None:
            raise _KeyedError("smtp.auth", 'oauth2 settings are given: set auth = "oauth2"')
        if self.oauth_logins and self.tokens.key is None:
            raise _KeyedError("tokens", 'a login uses auth = "oauth2": set tokens.key_env or tokens.key_file')
        for i, a in enumerate(self.accounts):
            if a.default_queue is not None and a.default_queue not in queues:
                raise _KeyedError(f"accounts[{i}].default_queue", f"no queue named {a.default_queue!r}")
            if a.default_queue is None and not any(q.account == a.name for q in self.queues):
                raise _KeyedError(f"accounts[{i}]", "no queue is fed by this account and no default_queue is set")
        return self

    # -- derived views -------------------------------------------------------------------------

    @property
    def oauth_logins(self) -> dict[str, OAuth2Settings]:
        """Every token source by its name in the token store: an account's name, and "smtp" for an
        [smtp.oauth2] table of its own (SMTP with oauth2_account shares that account's token)."""
        out = {a.name: a.oauth2 for a in self.accounts if a.auth is AuthMode.OAUTH2 and a.oauth2 is not None}
        if self.smtp.auth is AuthMode.OAUTH2 and self.smtp.oauth2 is not None:
            out[SMTP_TOKEN_NAME] = self.smtp.oauth2
        return out

    @property
    def smtp_token_name(self) -> str | None:
        """The token source SMTP logs in with (None: password or no login)."""
        if self.smtp.auth is not AuthMode.OAUTH2:
            return None
        return self.smtp.oauth2_account or SMTP_TOKEN_NAME

    @property
    def database_url(self) -> str:
        if self.database.url:
            return self.database.url
        return f"sqlite:///{(self.var_dir / 'mailbridge.db').resolve()}"

    @property
    def own_addresses(self) -> frozenset[str]:
        """Every address we send from; mail from these is never treated as a customer's."""
        return frozenset(a for q in self.queues for a in q.addresses)

    def severity_levels(self, queue: QueueSettings) -> list[str]:
        """The levels #severity accepts in ``queue``: its scheme's keys, else ``severity_levels``."""
        if queue.severity_scheme is not None:
            scheme = next(s for s in self.severity_schemes if s.name == queue.severity_scheme)
            return [lv.key for lv in scheme.levels]
        return list(queue.severity_levels)

    def organisation_for(self, email: str) -> OrganisationSettings | None:
        """The organisation an address belongs to: by full address first, then by domain (also a
        parent domain: mail.customer.example belongs to customer.example)."""
        email = email.lower()
        for o in self.organisations:
            if email in o.addresses:
                return o
        domain = email.rsplit("@", 1)[-1]
        parts = domain.split(".")
        for i in range(len(parts) - 1):
            d = ".".join(parts[i:])
            for o in self.organisations:
                if d in o.domains:
                    return o
        return None

    def organisation(self, name: str | None) -> OrganisationSettings | None:
        return next((o for o in self.organisations if o.name == name), None) if name else None

    def queue(self, name: str) -> QueueSettings:
        return next(q for q in self.queues if q.name == name)

    def account(self, name: str) -> AccountSettings:
        return next(a for a in self.accounts if a.name == name)

    def default_queue_for(self, account: str) -> QueueSettings:
        acc = self.account(account)
        if acc.default_queue:
            return self.queue(acc.default_queue)
        return next(q for q in self.queues if q.account == account)

    def queue_for_address(self, address: str) -> QueueSettings | None:
        address = address.lower()
        return next((q for q in self.queues if address in q.addresses), None)

    def report_schedule(self, r: ReportSettings) -> schedules.Schedule:
        """When the scheduled report ``r`` is due: its schedule in its calendar's zone, else in its
        ``timezone`` (default Europe/Berlin)."""
        zone = r.timezone or DEFAULT_REPORT_TIMEZONE
        if r.calendar is not None:
            zone = next(c.timezone for c in self.calendars if c.name == r.calendar)
        return schedules.parse(r.schedule, zone)

    @property
    def operator_timezone(self) -> str:
        """The zone of times shown to operators (alerts, status): ``alerts.timezone``, else the
        first queue's calendar's zone, else UTC."""
        if self.alerts.timezone:
            return self.alerts.timezone
        cal = next((q.calendar for q in self.queues if q.calendar), None)
        return next((c.timezone for c in self.calendars if c.name == cal), "UTC")


class _KeyedError(ValueError):
    """A cross-field problem that knows which key it is about."""

    def __init__(self, key: str, problem: str):
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _resolve_secret(
    obj: dict[str, Any], key: str, environ: Mapping[str, str], base: Path, prefix: str = "password"
) -> None:
    env_name = obj.get(f"{prefix}_env")
    file_name = obj.get(f"{prefix}_file")
    if env_name and file_name:
        raise ConfigError(f"{key}: give {prefix}_env or {prefix}_file, not both")
    if env_name:
        if env_name not in environ:
            raise ConfigError(f"{key}.{prefix}_env: environment variable {env_name} is not set")
        obj[prefix] = environ[env_name]
    elif file_name:
        p = Path(file_name)
        p = p if p.is_absolute() else base / p
        try:
            obj[prefix] = p.read_text(encoding="utf-8").strip()
        except OSError as e:
            raise ConfigError(f"{key}.{prefix}_file: cannot read {p}: {e.strerror}") from None
    if prefix in obj and not obj[prefix]:
        raise ConfigError(f"{key}.{prefix}_{'env' if env_name else 'file'}: the {prefix} is empty")


def _resolve_oauth_secrets(obj: Any, key: str, environ: Mapping[str, str], base: Path) -> None:
    """The client secret and the first refresh token of an oauth2 table, from env or file."""
    if not isinstance(obj, dict):
        return
    for prefix in ("client_secret", "refresh_token"):
        if prefix in obj:
            raise ConfigError(
                f"{key}.{prefix}: put it in the environment ({prefix}_env) or a file ({prefix}_file), not in the config"
            )
        _resolve_secret(obj, key, environ, base, prefix=prefix)
    for file_key in ("service_account_file", "certificate_file"):
        name = obj.get(file_key)
        if isinstance(name, str):
            p = Path(name) if Path(name).is_absolute() else base / name
            if not p.is_file():
                raise ConfigError(f"{key}.{file_key}: cannot read {p}: no such file")


def load_settings(path: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> Settings:
    """Read, resolve and validate the configuration file at ``path``.

    Relative paths in the file (``var_dir``, ``password_file``) are taken relative to the current
    directory, as an operator running ``mailbridge`` from the deployment directory expects.

    Raises:
        ConfigError: with a message ``<file>: <key>: <problem>``.
    """
    environ = os.environ if environ is None else environ
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text: {e}") from None

    try:
        base = Path.cwd()
        for i, acc in enumerate(data.get("accounts", []) if isinstance(data.get("accounts"), list) else []):
            if isinstance(acc, dict):
                if "password" in acc:
                    raise ConfigError(
                        f"accounts[{i}].password: put the password in the environment "
                        "(password_env) or a file (password_file), not in the config"
                    )
                if acc.get("auth", AuthMode.PASSWORD.value) == AuthMode.PASSWORD.value:
                    _resolve_secret(acc, f"accounts[{i}]", environ, base)
                _resolve_oauth_secrets(acc.get("oauth2"), f"accounts[{i}].oauth2", environ, base)
        smtp = data.get("smtp")
        if isinstance(smtp, dict):
            if "password" in smtp:
                raise ConfigError(
                    "smtp.password: put the password in the environment (password_env) "
                    "or a file (password_file), not in the config"
                )
            if smtp.get("auth", AuthMode.PASSWORD.value) == AuthMode.PASSWORD.value:
                _resolve_secret(smtp, "smtp", environ, base)
            _resolve_oauth_secrets(smtp.get("oauth2"), "smtp.oauth2", environ, base)
        tokens = data.get("tokens")
        if isinstance(tokens, dict):
            if "key" in tokens:
                raise ConfigError("tokens.key: put the key in the environment (key_env) or a file (key_file)")
            _resolve_secret(tokens, "tokens", environ, base, prefix="key")
        conv = data.get("conversations")
        if isinstance(conv, dict):
            if "secret" in conv:
                raise ConfigError(
                    "conversations.secret: put the key in the environment (secret_env) or a file (secret_file)"
                )
            _resolve_secret(conv, "conversations", environ, base, prefix="secret")
        web = data.get("web")
        if isinstance(web, dict):
            if "secret" in web:
                raise ConfigError("web.secret: put the key in the environment (secret_env) or a file (secret_file)")
            _resolve_secret(web, "web", environ, base, prefix="secret")
        settings = Settings.model_validate({**data, "source": path})
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    except ValidationError as e:
        first = e.errors()[0]
        ctx_err = (first.get("ctx") or {}).get("error")
        if isinstance(ctx_err, _KeyedError):
            # The key is relative to the model that raised it (e.g. "tls" inside accounts[0]).
            key = f"{_loc(first['loc'])}.{ctx_err.key}" if first["loc"] else ctx_err.key
            raise ConfigError(f"{path}: {key}: {ctx_err.problem}") from None
        msg = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            msg = "unknown key (a typo?)"
        raise ConfigError(f"{path}: {_loc(first['loc'])}: {msg}") from None
    for i, acc in enumerate(settings.accounts):
        if acc.auth is AuthMode.PASSWORD and acc.password is None:
            raise ConfigError(f"{path}: accounts[{i}]: set password_env or password_file")
    if settings.smtp.auth is AuthMode.PASSWORD and settings.smtp.user and settings.smtp.password is None:
        raise ConfigError(f"{path}: smtp: user is set, so set password_env or password_file too")
    return settings
