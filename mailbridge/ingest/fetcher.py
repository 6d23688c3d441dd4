"""IMAP access through imapclient: SELECT, UIDVALIDITY, batched ``UID FETCH BODY.PEEK[]``, MOVE,
IDLE. No parsing here.

Server quirks are handled locally, each with a comment. RFC 3501 (IMAP4rev1), RFC 6851 (MOVE),
RFC 4315 (UIDPLUS), RFC 2177 (IDLE).
"""

from __future__ import annotations

import ast
import contextlib
import re
import select
import ssl
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from enum import StrEnum

import structlog
from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError

from mailbridge.oauth.faults import TokenError
from mailbridge.oauth.source import AccessToken, TokenSource
from mailbridge.settings import AccountSettings, AuthMode, TlsMode

log = structlog.get_logger(__name__)

# How often an IDLE wait looks at the stop flag (seconds); bounds shutdown latency.
IDLE_SLICE_SECONDS = 0.5
# Untagged responses pushed during IDLE (RFC 3501 7.3.1, 7.1.5): new mail, and the server leaving.
_NEW_MAIL_RE = re.compile(rb"^\* \d+ (EXISTS|RECENT)\b", re.IGNORECASE)
_BYE_RE = re.compile(rb"^\* BYE\b", re.IGNORECASE)


class FaultKind(StrEnum):
    """Why an account cannot fetch. Only ``transient`` faults may heal by themselves soon; the others
    need a person (a password, a certificate) and are retried slowly (``permanent_fault_retry``)."""

    TRANSIENT = "transient"  # refused, timeout, BYE, the link broke, the database away
    LOGIN = "login"  # the server refused the login (LoginError, AUTHENTICATIONFAILED)
    TLS = "tls"  # the server's certificate did not verify (untrusted, expired, wrong name)
    # OAuth2: the token endpoint refuses to renew the token (consent revoked, password changed,
    # secret expired): someone must sign in again or fix the app (oauth/faults.py says which).
    REAUTH = "reauth_required"

    @property
    def permanent(self) -> bool:
        return self is not FaultKind.TRANSIENT

    @property
    def log_event(self) -> str:
        """The event name a permanent fault is logged under."""
        return "account_reauth_required" if self is FaultKind.REAUTH else f"imap_{self.value}_failed"


class FetchError(Exception):
    """The IMAP server refused or the connection broke; the account backs off and retries.

    ``kind`` says whether waiting helps (:class:`FaultKind`); ``server_says`` is the server's or the
    TLS library's own words, for the log and the alert mail."""

    def __init__(self, message: str, kind: FaultKind = FaultKind.TRANSIENT, server_says: str | None = None):
        super().__init__(message)
        self.kind = kind
        self.server_says = server_says if server_says is not None else message


def server_words(e: BaseException) -> str:
    """What the server (or the TLS library) said, as text: imapclient's LoginError carries the
    server's bytes (``b'[AUTHENTICATIONFAILED] Invalid credentials.'``)."""
    arg = e.args[0] if len(e.args) == 1 else None
    if isinstance(arg, bytes):
        return arg.decode("utf-8", "replace")
    text = str(e)
    if len(text) > 3 and text[:2] in ("b'", 'b"') and text[-1] == text[1]:
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text
        if isinstance(value, bytes):
            return value.decode("utf-8", "replace")
    return text


def classify_fault(e: BaseException) -> FaultKind:
    """The one place that decides whether an IMAP connection fault is permanent (see FaultKind).

    imapclient raises LoginError for a NO to LOGIN (RFC 3501 6.2.3; RFC 5530 names the code
    AUTHENTICATIONFAILED); the ssl module raises SSLCertVerificationError for an untrusted or expired
    certificate and for a host name that does not match it. A token that cannot be renewed is
    ``reauth_required`` when the provider's answer needs a person (``oauth/faults.py`` decides),
    else transient (the token endpoint away). Everything else may pass by itself.
    """
    if isinstance(e, TokenError):
        return FaultKind.REAUTH if e.permanent else FaultKind.TRANSIENT
    if isinstance(e, LoginError) or "AUTHENTICATIONFAILED" in str(e).upper():
        return FaultKind.LOGIN
    if isinstance(e, ssl.SSLCertVerificationError):
        return FaultKind.TLS
    return FaultKind.TRANSIENT


class _MechanismNotOffered(LoginError):
    """The server does not offer the configured SASL mechanism (a configuration fault, not the token)."""


def _waited(internal_date: datetime | None, fetched_at: datetime) -> float:
    """``fetched_at`` - the mail's INTERNALDATE in seconds, at least 0. imapclient gives the date
    as naive local time (``normalise_times``) or, when the server's offset is kept, aware."""
    if not isinstance(internal_date, datetime):
        return 0.0
    arrived = internal_date.astimezone(UTC)  # a naive datetime is taken as local time
    return max(0.0, (fetched_at - arrived).total_seconds())


class ImapMailbox:
    """One logged-in connection to one account, with its watched folder selected."""

    def __init__(self, account: AccountSettings, tokens: TokenSource | None = None):
        self.account = account
        # auth = "oauth2": where the access token comes from (fresh at each connect).
        self.tokens = tokens
        if account.auth is AuthMode.OAUTH2 and tokens is None:
            raise ValueError(f"account {account.name} uses oauth2 but no token source was given")
        self.client: IMAPClient | None = None
        self.uidvalidity: int | None = None
        self.capabilities: frozenset[bytes] = frozenset()
        self._token_refused = False
        # When the token this connection logged in with is due for renewal (None: a password login).
        self.token_renew_at = None
        # How long each mail of the last fetched batch had waited in the folder (seconds, by its
        # INTERNALDATE and our clock at the fetch): see :meth:`waited`.
        self._waited: dict[int, float] = {}

    # -- connection ------------------------------------------------------------------------

    def connect(self) -> None:
        """Connect, log in (password, or an OAuth2 token from the token source), select the folder.

        A token the server refuses although the store holds it as valid (sessions revoked, a token
        that expired under the login) is dropped and the login tried once more at once with a new
        one; only a refusal of that fresh token is a login fault (slow retry)."""
        try:
            self._connect()
        except FetchError as e:
            if not self._token_refused:
                raise
            log.info("imap_token_refused_retrying", account=self.account.name, error=e.server_says[:200])
            self._connect()

    def _connect(self) -> None:
        a = self.account
        self._token_refused = False
        token = None
        if self.tokens is not None:
            try:
                # Before connecting: a token that cannot be had costs no IMAP connection.
                token = self.tokens.token()
            except TokenError as e:
                kind = classify_fault(e)
                raise FetchError(f"OAuth token for {a.name}: {e}", kind, e.describe()) from e
        ctx = None
        if a.tls != TlsMode.NONE:
            ctx = ssl.create_default_context(cafile=str(a.ca_file) if a.ca_file else None)
        client = None
        try:
            client = IMAPClient(a.host, port=a.port, ssl=a.tls == TlsMode.IMPLICIT, ssl_context=ctx, timeout=a.timeout)
            # imapclient sets imaplib's debug level to 5, which makes imaplib format a repr of every
            # literal it reads (every mail body) for a logger that then drops it: ~5x slower FETCH.
            client._imap.debug = 0
            if a.tls == TlsMode.STARTTLS:
                client.starttls(ctx)
            if token is not None:
                self._oauth_login(client, token)
            else:
                assert a.password is not None
                client.login(a.user, a.password.get_secret_value())
            self.capabilities = frozenset(c.upper() for c in client.capabilities())
            for folder in (a.processed_folder, a.quarantine_folder):
                if not client.folder_exists(folder):
                    client.create_folder(folder)
                    log.info("imap_folder_created", folder=folder)
            info = client.select_folder(a.folder)
        except (IMAPClientError, OSError, ssl.SSLError) as e:
            kind = classify_fault(e)
            if client is not None:
                with contextlib.suppress(Exception):
                    client.shutdown()
            refused = kind is FaultKind.LOGIN and not isinstance(e, _MechanismNotOffered)
            if token is not None and self.tokens is not None and refused:
                # The server refused this token: the next login asks for a new one.
                self.tokens.invalidate(token)
                self._token_refused = True
            raise FetchError(f"{type(e).__name__}: {e}", kind, server_words(e)) from e
        self.client = client
        self.uidvalidity = int(info[b"UIDVALIDITY"])
        self.token_renew_at = token.renew_at if token is not None else None

    def _oauth_login(self, client: IMAPClient, token: AccessToken) -> None:
        """SASL XOAUTH2 (Microsoft, Google), or OAUTHBEARER (RFC 7628) where the server offers it."""
        assert self.tokens is not None
        user = self.account.user
        if self.tokens.mechanism == "oauthbearer":
            if b"AUTH=OAUTHBEARER" not in {c.upper() for c in client.capabilities()}:
                raise _MechanismNotOffered('the server does not offer AUTH=OAUTHBEARER (use mechanism = "xoauth2")')
            client.oauthbearer_login(user, token.value)
        else:
            client.oauth2_login(user, token.value, mech="XOAUTH2")

    def close(self) -> None:
        c, self.client = self.client, None
        if c is None:
            return
        try:
            c.logout()
        except Exception:  # the connection may already be gone
            with contextlib.suppress(Exception):
                c.shutdown()

    def reselect(self) -> None:
        """SELECT the watched folder again on the open connection and take its UIDVALIDITY now.

        Done at the start of every cycle: a folder deleted and recreated while we had it selected
        has a new UIDVALIDITY, but not every server tells a client that still has the old one
        selected. Dovecot disconnects it; pymap keeps serving the deleted folder's UIDs silently,
        so without a fresh SELECT the new folder's mails would be read under the old UIDVALIDITY
        or never at all. A SELECT on a selected connection closes the old selection without
        expunging anything (RFC 3501 6.3.1).
        """
        try:
            info = self._c().select_folder(self.account.folder)
        except (IMAPClientError, OSError) as e:
            raise FetchError(f"{type(e).__name__}: {e}") from e
        self.uidvalidity = int(info[b"UIDVALIDITY"])

    def has(self, capability: str) -> bool:
        return capability.encode().upper() in self.capabilities

    def _c(self) -> IMAPClient:
        if self.client is None:
            raise FetchError("not connected")
        return self.client

    # -- reading ---------------------------------------------------------------------------

    def uids_after(self, last_uid: int) -> list[int]:
        """UIDs greater than ``last_uid``, ascending.

        RFC 3501 6.4.8: ``UID n:*`` always includes the highest UID even when it is below n, so
        the result is filtered.
        """
        try:
            uids = self._c().search(["UID", f"{last_uid + 1}:*"])
        except (IMAPClientError, OSError) as e:
            raise FetchError(f"{type(e).__name__}: {e}") from e
        return sorted(u for u in uids if u > last_uid)

    def uids_upto(self, last_uid: int) -> list[int]:
        """UIDs at or below ``last_uid`` still in the folder: committed, but not yet moved away."""
        if last_uid <= 0:
            return []
        try:
            return sorted(self._c().search(["UID", f"1:{last_uid}"]))
        except (IMAPClientError, OSError) as e:
            raise FetchError(f"{type(e).__name__}: {e}") from e

    def fetch_batches(self, uids: list[int]) -> Iterator[list[tuple[int, bytes]]]:
        """Raw bytes of ``uids`` in ascending order, one list per round trip of ``fetch_batch`` UIDs.

        ``BODY.PEEK[]`` leaves the \\Seen flag alone (RFC 3501 6.4.5), so a mail an operator looks
        at in the support mailbox still looks unread until it is processed. The server's INTERNALDATE
        of each mail comes along: how long it waited (:meth:`waited`).
        """
        batch = self.account.fetch_batch
        for i in range(0, len(uids), batch):
            chunk = uids[i : i + batch]
            try:
                data = self._c().fetch(chunk, [b"BODY.PEEK[]", b"INTERNALDATE"])
            except (IMAPClientError, OSError) as e:
                raise FetchError(f"{type(e).__name__}: {e}") from e
            fetched_at = datetime.now(UTC)
            out = []
            self._waited = {}
            for uid in chunk:
                item = data.get(uid)
                # None: expunged by someone else between SEARCH and FETCH; nothing to do.
                body = item.get(b"BODY[]") if item is not None else None
                if body is not None:
                    out.append((uid, bytes(body)))
                    self._waited[uid] = _waited(item.get(b"INTERNALDATE"), fetched_at)
            yield out

    def waited(self, uid: int) -> float:
        """Seconds mail ``uid`` of the last fetched batch had waited in the folder when it was
        fetched (its INTERNALDATE to our clock; 0 when the server gave none or its clock is ahead).
        The automatic-mail limits count a mail at the time it arrived (``InboundMail.arrived``)."""
        return self._waited.get(uid, 0.0)

    def fetch(self, uids: list[int]) -> Iterator[tuple[int, bytes]]:
        """Like :meth:`fetch_batches`, one mail at a time."""
        for batch in self.fetch_batches(uids):
            yield from batch

    # -- moving ----------------------------------------------------------------------------

    def move(self, uids: list[int], folder: str) -> None:
        """Move ``uids`` to ``folder``: MOVE (RFC 6851) when offered, else COPY + \\Deleted + expunge.

        Without UIDPLUS a plain EXPUNGE would also remove mails someone else flagged \\Deleted;
        we accept that, as every MUA does on such servers.
        """
        if not uids:
            return
        c = self._c()
        try:
            if self.has("MOVE"):
                c.move(uids, folder)
            else:
                c.copy(uids, folder)
                c.delete_messages(uids)
                if self.has("UIDPLUS"):
                    c.uid_expunge(uids)
                else:
                    c.expunge()
        except (IMAPClientError, OSError) as e:
            raise FetchError(f"{type(e).__name__}: {e}") from e

    # -- waiting ---------------------------------------------------------------------------

    def wait_for_mail(self, timeout: float, stop: threading.Event) -> bool:
        """Wait up to ``timeout`` seconds for new mail; True when the server announced some.

        With IDLE (RFC 2177) the server pushes ``EXISTS``; without it we simply sleep until the
        next poll. Returns early, False, when ``stop`` is set.

        imapclient's ``idle_check`` reads from a non-blocking socket and can consume half of a
        pushed line (mjs/imapclient#519): the line is lost and ``idle_done`` then trips over its
        tail. So we only *wait* with ``select`` and read whole lines in blocking mode, under the
        socket's normal read timeout. Untagged responses that ``idle_done`` collects are checked
        too, so an EXISTS that was already buffered is not missed.
        """
        if not (self.account.idle and self.has("IDLE")):
            stop.wait(timeout)
            return False
        c = self._c()
        sock = c.socket()
        deadline = time.monotonic() + timeout
        got_mail = False
        try:
            c.idle()
        except (IMAPClientError, OSError) as e:
            raise FetchError(f"{type(e).__name__}: {e}") from e
        try:
            while not stop.is_set() and not got_mail:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                pending = isinstance(sock, ssl.SSLSocket) and sock.pending() > 0
                if not pending and not select.select([sock], [], [], min(IDLE_SLICE_SECONDS, left))[0]:
                    continue
                line = c._imap._get_line()  # blocking: a whole line, or the read timeout
                if _BYE_RE.match(line):
                    raise FetchError(f"server closed the connection during IDLE: {line[:200]!r}")
                got_mail = bool(_NEW_MAIL_RE.match(line))
        except (IMAPClientError, OSError) as e:
            raise FetchError(f"{type(e).__name__}: {e}") from e
        except BaseException:
            with contextlib.suppress(Exception):
                c.idle_done()
            raise
        try:
            _text, responses = c.idle_done()
        except (IMAPClientError, OSError) as e:
            raise FetchError(f"{type(e).__name__}: {e}") from e
        return got_mail or any(len(r) >= 2 and r[1] in (b"EXISTS", b"RECENT") for r in responses)

    # -- data protection (mailbridge/privacy) --------------------------------------------------

    def folder_messages(
        self, folder: str, criteria: list, *, bodies: bool = True
    ) -> dict[int, tuple[bytes, tuple, object]]:
        """SELECT ``folder`` and return its mails matching the SEARCH ``criteria`` (imapclient's list
        form, e.g. ``["OR", "FROM", a, "CC", a]`` or ``["BEFORE", date]``) as {uid: (raw, flags,
        INTERNALDATE)}; without ``bodies`` only the UIDs matter ({uid: (b"", (), None)}, no FETCH).
        The watched folder is selected again by the next ``reselect``."""
        c = self._c()
        try:
            if not c.folder_exists(folder):
                return {}
            c.select_folder(folder)
            uids = c.search(criteria)
            if not uids:
                return {}
            if not bodies:
                return {uid: (b"", (), None) for uid in uids}
            data = c.fetch(uids, [b"BODY.PEEK[]", b"FLAGS", b"INTERNALDATE"])
        except (IMAPClientError, OSError) as e:
            raise FetchError(f"{type(e).__name__}: {e}") from e
        return {
            uid: (bytes(d[b"BODY[]"]), tuple(d.get(b"FLAGS", ())), d.get(b"INTERNALDATE"))
            for uid, d in data.items()
            if d.get(b"BODY[]") is not None
        }

    def replace_in_folder(self, folder: str, delete: list[int], append: list[tuple[bytes, tuple, object]]) -> None:
        """In ``folder`` (selected by :meth:`folder_messages`): APPEND the ``(raw, flags, date)`` mails,
        then flag ``delete`` \\Deleted and expunge them (only them with UIDPLUS)."""
        c = self._c()
        try:
            for raw, flags, when in append:
                c.append(folder, raw, flags=[f for f in flags if f != b"\\Recent"], msg_time=when)
            if delete:
                c.select_folder(folder)
                c.delete_messages(delete)
                if self.has("UIDPLUS"):
                    c.uid_expunge(delete)
                else:
                    c.expunge()
        except (IMAPClientError, OSError) as e:
            raise FetchError(f"{type(e).__name__}: {e}") from e
