"""Drains the outbox over SMTP with aiosmtplib: 4xx and connection errors retry, 5xx fails for good.

One pass: claim a batch of due rows (a lease, so a second instance skips them), open one SMTP
connection, send the rows in id order and record each outcome right after the server's answer.
Each row is marked ``sending`` just before its SMTP exchange and ``sent`` right after the 250 reply,
each in its own small transaction. So after a crash exactly the rows still ``sending`` (at most
one per sender) may or may not have arrived: such a row is re-sent (same bytes, same Message-ID)
after its lease ran out, and the ticket gets a ``mail_resent_unknown_outcome`` event saying so.
Rows that were only ``claimed`` are simply sent later; they never left.

The database may be away (locked past the busy timeout, the link broken) at any of these steps.
Before a mail's exchange that only delays it: its claim runs out and it is sent later. After the
server's answer the outcome is retried for a while (:data:`RECORD_RETRY_SECONDS`): giving up at once
would leave a delivered mail ``sending`` and so send it a second time after the lease.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import aiosmtplib
import structlog

from mailbridge.metrics import Metrics
from mailbridge.oauth.faults import TokenError
from mailbridge.oauth.source import TokenSource
from mailbridge.outbound.outbox import retry_at
from mailbridge.settings import OutboxSettings, SmtpSettings, TlsMode
from mailbridge.store import repositories as repo
from mailbridge.store.db import is_transient_db_error, session_scope

log = structlog.get_logger(__name__)

# How long the outcome of a finished SMTP exchange is retried while the database is away (seconds),
# and the pauses between tries (doubling from the first to the longest).
RECORD_RETRY_SECONDS = 30.0
RECORD_RETRY_FIRST_DELAY = 0.2
RECORD_RETRY_MAX_DELAY = 2.0

# Connection-level failures: the server is away or the link broke; the mail stays queued.
_CONNECTION_ERRORS = (
    aiosmtplib.SMTPConnectError,
    aiosmtplib.SMTPServerDisconnected,
    aiosmtplib.SMTPTimeoutError,
    aiosmtplib.SMTPConnectTimeoutError,
    ConnectionError,
    OSError,
    asyncio.TimeoutError,
)


def smtp_error_kind(e: BaseException, *, connected: bool) -> str:
    """What kind of SMTP failure ``e`` is (a label of ``mailbridge_smtp_errors_total``, one of
    ``metrics.SMTP_ERROR_KINDS``); ``connected``: it happened after the connection was open."""
    # Most specific first: the refusals are SMTPResponseExceptions, some connection errors too.
    if isinstance(e, aiosmtplib.SMTPAuthenticationError):
        return "auth"
    if isinstance(e, aiosmtplib.SMTPRecipientsRefused | aiosmtplib.SMTPRecipientRefused):
        return "recipient_refused"
    if isinstance(e, aiosmtplib.SMTPSenderRefused):
        return "sender_refused"
    if isinstance(e, aiosmtplib.SMTPDataError):
        return "data_refused"
    if isinstance(e, _CONNECTION_ERRORS):
        return "connection_lost" if connected else "connect"
    if isinstance(e, aiosmtplib.SMTPResponseException):
        return "response"
    return "client"


@dataclass
class SendReport:
    sent: int = 0
    retry: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


def _tls_context(smtp: SmtpSettings) -> ssl.SSLContext | None:
    if smtp.tls == TlsMode.NONE:
        return None
    ctx = ssl.create_default_context(cafile=str(smtp.ca_file) if smtp.ca_file else None)
    return ctx


class OutboxSender:
    """Sends due outbox rows; safe to run in several processes at once (claims + leases)."""

    def __init__(
        self,
        session_factory,
        smtp: SmtpSettings,
        outbox: OutboxSettings,
        *,
        skip_locked: bool,
        clock: Callable[[], datetime],
        metrics: Metrics,
        should_stop: Callable[[], bool] = lambda: False,
        tokens: TokenSource | None = None,
    ):
        self.factory = session_factory
        # smtp.auth = "oauth2": the token source SMTP AUTH XOAUTH2 logs in with.
        self.tokens = tokens
        self._token = None  # the token of the current connection
        self.metrics = metrics
        self.smtp = smtp
        self.cfg = outbox
        self.skip_locked = skip_locked
        self.clock = clock
        # Checked between mails: a stop lets the current mail finish and gives the rest back.
        self.should_stop = should_stop

    def _claim(self):
        now = self.clock()
        with session_scope(self.factory) as s:
            rows = repo.claim_outbox(
                s, now, timedelta(seconds=self.cfg.lease_seconds), self.cfg.batch_size, self.skip_locked
            )
            for r in rows:
                if r.reclaimed and r.ticket_id is not None:
                    repo.add_event(s, r.ticket_id, "mail_resent_unknown_outcome", now, outbox_id=r.id, mail=r.kind)
        return rows

    def _record(self, row, status: str, error: str | None = None) -> None:
        now = self.clock()
        nxt = None
        if status == "queued":
            if row.attempts + 1 >= self.cfg.max_attempts:
                status = "failed"
                error = f"gave up after {row.attempts + 1} attempts: {error}"
            else:
                nxt = retry_at(now, row.attempts + 1, self.cfg.backoff_seconds, self.cfg.max_backoff_seconds)
        with session_scope(self.factory) as s:
            changed = repo.outbox_mark(s, row.id, now, status, error=error, next_attempt_at=nxt)
            if changed and row.ticket_id is not None and status in ("sent", "failed"):
                repo.add_event(s, row.ticket_id, f"mail_{status}", now, outbox_id=row.id, mail=row.kind, error=error)
        if changed:  # committed, and this sender's to record
            self.metrics.outbox_recorded(row.kind, status)
        log_fn = log.info if status == "sent" else log.warning
        log_fn(
            f"outbox_{status}",
            outbox_id=row.id,
            kind=row.kind,
            case=row.case_number,
            message_id=row.message_id,
            to=row.envelope_to,
            **({"error": error} if error else {}),
        )

    async def _record_outcome(self, row, status: str, error: str | None = None) -> None:
        """:meth:`_record` after an SMTP exchange, retried while the database is away: the server has
        answered, and only this record keeps the mail from being sent again. Gives up (raises)
        after :data:`RECORD_RETRY_SECONDS`; the row then stays ``sending`` and is re-sent with a
        ``mail_resent_unknown_outcome`` event after its lease, as after a crash."""
        deadline = time.monotonic() + RECORD_RETRY_SECONDS
        delay = RECORD_RETRY_FIRST_DELAY
        while True:
            try:
                await asyncio.to_thread(self._record, row, status, error)
                return
            except Exception as e:
                if not is_transient_db_error(e) or time.monotonic() + delay > deadline:
                    raise
                log.warning(
                    "outbox_record_retry",
                    outbox_id=row.id,
                    status=status,
                    error=str(e).splitlines()[0] if str(e) else type(e).__name__,
                    retry_in=delay,
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECORD_RETRY_MAX_DELAY)

    def _mark_sending(self, row) -> bool:
        with session_scope(self.factory) as s:
            return repo.outbox_mark_sending(s, row.id)

    def _release(self, ids: list[int]) -> None:
        with session_scope(self.factory) as s:
            repo.outbox_release(s, ids)

    async def _connect(self) -> aiosmtplib.SMTP:
        login: dict = {}
        if self.tokens is not None:
            # A fresh token (renewed ahead of expiry) for every connection; aiosmtplib (>= 5.1) logs
            # in with AUTH XOAUTH2 from its token generator when it connects.
            token = await asyncio.to_thread(self.tokens.token)
            self._token = token

            async def generate() -> str:
                return token.value

            login = {"username": self.smtp.user, "oauth_token_generator": generate}
        smtp = aiosmtplib.SMTP(
            hostname=self.smtp.host,
            port=self.smtp.port,
            use_tls=self.smtp.tls == TlsMode.IMPLICIT,
            start_tls=self.smtp.tls == TlsMode.STARTTLS,
            tls_context=_tls_context(self.smtp),
            timeout=self.smtp.timeout,
            **login,
        )
        await smtp.connect()
        if self.tokens is None and self.smtp.user and self.smtp.password is not None:
            await smtp.login(self.smtp.user, self.smtp.password.get_secret_value())
        return smtp

    async def check_login(self) -> str:
        """Connect and log in as the service would, then QUIT (``mailbridge auth test``); what was
        done, in words. Raises what the connection or login raised."""
        smtp = await self._connect()
        try:
            how = "no login"
            if self.tokens is not None:
                how = f"AUTH XOAUTH2 as {self.smtp.user}"
            elif self.smtp.user:
                how = f"password login as {self.smtp.user}"
            return f"{self.smtp.host}:{self.smtp.port} accepted the connection ({how})"
        finally:
            try:
                await smtp.quit()
            except Exception:
                smtp.close()

    async def run_once(self) -> SendReport:
        """Claim and send one batch; returns what happened. Never raises for SMTP trouble."""
        report = SendReport()
        try:
            rows = await asyncio.to_thread(self._claim)
        except Exception as e:
            if not is_transient_db_error(e):
                raise
            # The database is away: nothing was claimed; the next run tries again.
            log.warning("outbox_database_unavailable", error=str(e).splitlines()[0] if str(e) else type(e).__name__)
            report.errors.append(repr(e))
            return report
        if not rows:
            return report
        try:
            smtp = await self._connect()
        except TokenError as e:
            # No token (the source logged why: reauth_required at error level, or the endpoint away).
            self.metrics.smtp_error("auth")
            await asyncio.to_thread(self._release, [r.id for r in rows])
            report.errors.append(f"OAuth token: {e.describe()}")
            return report
        except aiosmtplib.SMTPAuthenticationError as e:
            self.metrics.smtp_error(smtp_error_kind(e, connected=False))
            await asyncio.to_thread(self._release, [r.id for r in rows])
            if self.tokens is not None:
                await asyncio.to_thread(self.tokens.invalidate, self._token)  # the next try asks for a new one
            log.error("smtp_auth_failed", host=self.smtp.host, error=str(e))
            report.errors.append(str(e))
            return report
        except _CONNECTION_ERRORS as e:
            self.metrics.smtp_error(smtp_error_kind(e, connected=False))
            await asyncio.to_thread(self._release, [r.id for r in rows])
            log.warning("smtp_unreachable", host=self.smtp.host, port=self.smtp.port, error=repr(e))
            report.errors.append(repr(e))
            return report
        try:
            for i, row in enumerate(rows):
                if self.should_stop():
                    await asyncio.to_thread(self._release, [r.id for r in rows[i:]])
                    return report
                try:
                    if not await asyncio.to_thread(self._mark_sending, row):
                        continue  # no longer ours (our lease ran out and another sender took it)
                except Exception as e:
                    if not is_transient_db_error(e):
                        raise
                    # Nothing has left; the rest of the claim runs out and is sent later.
                    log.warning("outbox_database_unavailable", error=str(e).splitlines()[0] or type(e).__name__)
                    report.errors.append(repr(e))
                    return report
                try:
                    try:
                        await smtp.sendmail(row.envelope_from, row.envelope_to, row.raw)
                    except (aiosmtplib.SMTPException, OSError) as e:  # TimeoutError is an OSError
                        self.metrics.smtp_error(smtp_error_kind(e, connected=True))
                        raise
                except aiosmtplib.SMTPRecipientsRefused as e:
                    codes = [r.code for r in e.recipients]
                    transient = all(400 <= c < 500 for c in codes)
                    await self._record_outcome(row, "queued" if transient else "failed", str(e))
                    report.retry += transient
                    report.failed += not transient
                except aiosmtplib.SMTPResponseException as e:
                    transient = 400 <= e.code < 500
                    await self._record_outcome(row, "queued" if transient else "failed", f"{e.code} {e.message}")
                    report.retry += transient
                    report.failed += not transient
                    if e.code in (421,):  # RFC 5321 4.2.3: the server is closing the channel
                        await asyncio.to_thread(self._release, [r.id for r in rows[i + 1 :]])
                        return report
                except _CONNECTION_ERRORS as e:
                    await self._record_outcome(row, "queued", repr(e))
                    await asyncio.to_thread(self._release, [r.id for r in rows[i + 1 :]])
                    report.retry += 1
                    report.errors.append(repr(e))
                    return report
                except aiosmtplib.SMTPException as e:
                    # Refused by the client library itself (e.g. SMTPUTF8 needed but not offered):
                    # this mail cannot be sent to this server as it is.
                    await self._record_outcome(row, "failed", f"{type(e).__name__}: {e}")
                    report.failed += 1
                else:
                    await self._record_outcome(row, "sent")
                    report.sent += 1
        finally:
            try:
                await smtp.quit()
            except Exception:
                smtp.close()
        return report
