"""Drains the outbox over SMTP with aiosmtplib: 4xx and connection errors retry, 5xx fails for good.

One pass (:meth:`OutboxSender.run_once`): claim a batch of due rows (a lease, so a second instance
skips them) and work it with up to ``[outbox] connections`` SMTP connections at once, each an
asyncio task taking rows from the one batch and sending several mails over its connection. The
first connection is opened alone: when the server is away or refuses the login, the whole batch is
given back at once, as with one connection; the others are opened once it stands (no more than the
batch has cases to send to), and one of them that fails to open only leaves its share to the rest
(one still being opened when the batch is done is cancelled).

**Order.** Rows are taken in id order, but a row waits while an earlier row of the same case (the
same recipients for a mail about no case) is in another connection's exchange: the mails of one
case reach the server in the order they were queued; different cases' mails run side by side.

**At most once more after a crash.** Each row is marked ``sending`` just before its SMTP exchange
and recorded (``sent`` …) right after the server's answer. A connection's task writes that record
and the ``sending`` mark of its next row in ONE transaction, so each connection has at most one row
``sending`` at any time: the one in its exchange, or the one whose answer is being recorded. After
a crash exactly the rows still ``sending`` (at most ``connections`` per sender) may or may not have
arrived: such a row is re-sent (same bytes, same Message-ID) after its lease ran out, and the
ticket gets a ``mail_resent_unknown_outcome`` event saying so. Rows that were only ``claimed`` are
simply sent later; they never left.

**Fewer transactions, not a longer gap.** The connections' waiting writes are committed together
(:class:`_Journal`, a group commit: while one transaction runs, the next collects every connection
that finished an exchange meanwhile), so with ``k`` connections one transaction records up to
``k`` answers and marks up to ``k`` next rows, and a connection's record + next mark is one
transaction instead of two. What is NOT done, on purpose: holding back a row's ``sent`` until
later rows of the same connection are sent too. A delivered row whose record waits while its
connection starts the next exchange would be a second row of that connection in doubt: a crash
then re-sends both, beyond the "one row per connection" above. So a row's record is never later
than the commit that immediately follows its 250 (the group in flight, if any, and then its own).

**Connection trouble on one connection** ends that connection only: its row in the exchange is
recorded for a retry (4xx, a broken link: queued with backoff; 5xx: failed), and the rows it had
not started stay in the batch for the other connections. A 421 (the server closes the channel)
ends that connection the same way. What no connection took is given back (``queued``, no attempt
counted) when the pass ends, so a restart or the next pass sends it without waiting for the
lease. A stop (``should_stop``, checked before each mail) lets every mail in an exchange finish
and gives the rest back.

The database may be away (locked past the busy timeout, the link broken) at any of these steps.
Before a mail's exchange that only delays it: its claim runs out and it is sent later. After the
server's answer the outcome is retried for a while (:data:`RECORD_RETRY_SECONDS`): giving up at once
would leave a delivered mail ``sending`` and so send it a second time after the lease.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import aiosmtplib
import structlog

from mailbridge.metrics import Metrics
from mailbridge.oauth.faults import TokenError
from mailbridge.oauth.source import AccessToken, TokenSource
from mailbridge.outbound.outbox import retry_at
from mailbridge.settings import OutboxSettings, SmtpSettings, TlsMode
from mailbridge.store import repositories as repo
from mailbridge.store.db import is_transient_db_error, session_scope
from mailbridge.store.repositories import ClaimedMail

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


def _first_line(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def order_key(row: ClaimedMail) -> Hashable:
    """Mails with the same key reach the server in the order they were queued: a case's mails; a mail
    about no case goes in order with the others to the same recipients."""
    if row.ticket_id is not None:
        return ("case", row.ticket_id)
    return ("to", tuple(sorted(row.envelope_to)))


@dataclass(frozen=True)
class _Outcome:
    """The server's answer to one row's exchange, to be recorded: ``sent``, ``queued`` (a retry; it
    becomes ``failed`` after ``max_attempts``) or ``failed``."""

    row: ClaimedMail
    status: str
    error: str | None = None


@dataclass(frozen=True)
class _Step:
    """One connection's write: the outcome of its last exchange and/or the ``sending`` mark of its
    next row — one transaction, so the connection never has two rows in doubt."""

    done: _Outcome | None
    start: ClaimedMail | None


@dataclass(frozen=True)
class _Written:
    recorded: bool  # the outcome changed the row (this sender's to record), committed
    status: str | None  # the status recorded (``queued`` may have become ``failed``)
    error: str | None
    started: bool  # the next row is ``sending`` (False: it is no longer ours)


class _Journal:
    """Group commit of the connections' steps: a step waits while a transaction runs; the next
    transaction takes every step waiting by then. A transaction that fails fails all its steps
    (each connection then decides: retry a record, or give up a start)."""

    def __init__(self, commit: Callable[[list[_Step]], list[_Written]]):
        self._commit = commit
        self._waiting: list[tuple[_Step, asyncio.Future]] = []
        self._running = False

    async def write(self, step: _Step) -> _Written:
        fut = asyncio.get_running_loop().create_future()
        self._waiting.append((step, fut))
        if not self._running:
            self._running = True
            asyncio.get_running_loop().create_task(self._run())
        return await fut

    async def _run(self) -> None:
        try:
            while self._waiting:
                group, self._waiting = self._waiting, []
                try:
                    written = await asyncio.to_thread(self._commit, [s for s, _ in group])
                except Exception as e:
                    for _, fut in group:
                        if not fut.done():
                            fut.set_exception(e)
                except BaseException:
                    for _, fut in group:
                        fut.cancel()
                    raise
                else:
                    for (_, fut), w in zip(group, written, strict=True):
                        if not fut.done():
                            fut.set_result(w)
        finally:
            self._running = False
            for _, fut in self._waiting:  # only after a cancellation
                fut.cancel()
            self._waiting = []


class _Batch:
    """One claim being worked by several connections: the rows no connection has taken yet (id
    order) and the order keys of the rows in an exchange."""

    def __init__(self, rows: list[ClaimedMail]):
        self.rows: deque[ClaimedMail] = deque(rows)
        self.busy: set[Hashable] = set()
        self.halted = False  # a stop, the database away, a fault: no connection takes another row
        self._changed = asyncio.Event()

    def take(self) -> ClaimedMail | None:
        """The first row whose case has no mail in an exchange, now; None if there is none."""
        for i, row in enumerate(self.rows):
            key = order_key(row)
            if key not in self.busy:
                del self.rows[i]
                self.busy.add(key)
                return row
        return None

    def put_back(self, row: ClaimedMail) -> None:
        """A taken row that was not started (the database was away): first in line again."""
        self.rows.appendleft(row)
        self.finished(row)

    def finished(self, row: ClaimedMail) -> None:
        self.busy.discard(order_key(row))
        self._wake()

    def halt(self) -> None:
        self.halted = True
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def changed(self) -> None:
        await self._changed.wait()


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
        self.metrics = metrics
        self.smtp = smtp
        self.cfg = outbox
        self.skip_locked = skip_locked
        self.clock = clock
        # Checked before each mail: a stop lets the mails in an exchange finish and gives the rest back.
        self.should_stop = should_stop

    # -- the database ---------------------------------------------------------------------------

    def _claim(self) -> list[ClaimedMail]:
        now = self.clock()
        with session_scope(self.factory) as s:
            rows = repo.claim_outbox(
                s, now, timedelta(seconds=self.cfg.lease_seconds), self.cfg.batch_size, self.skip_locked
            )
            for r in rows:
                if r.reclaimed and r.ticket_id is not None:
                    repo.add_event(s, r.ticket_id, "mail_resent_unknown_outcome", now, outbox_id=r.id, mail=r.kind)
        return rows

    def _commit_steps(self, steps: list[_Step]) -> list[_Written]:
        """One transaction for the steps of several connections (:class:`_Journal`): each records
        the outcome of an exchange (with the ticket's ``mail_sent``/``mail_failed`` event) and/or
        marks the connection's next row ``sending``."""
        now = self.clock()
        written = []
        with session_scope(self.factory) as s:
            for step in steps:
                recorded, status, error = False, None, None
                if step.done is not None:
                    row, status, error = step.done.row, step.done.status, step.done.error
                    nxt = None
                    if status == "queued":
                        if row.attempts + 1 >= self.cfg.max_attempts:
                            status = "failed"
                            error = f"gave up after {row.attempts + 1} attempts: {error}"
                        else:
                            nxt = retry_at(
                                now, row.attempts + 1, self.cfg.backoff_seconds, self.cfg.max_backoff_seconds
                            )
                    recorded = repo.outbox_mark(s, row.id, now, status, error=error, next_attempt_at=nxt)
                    if recorded and row.ticket_id is not None and status in ("sent", "failed"):
                        repo.add_event(
                            s, row.ticket_id, f"mail_{status}", now, outbox_id=row.id, mail=row.kind, error=error
                        )
                started = step.start is not None and repo.outbox_mark_sending(s, step.start.id)
                written.append(_Written(recorded, status, error, started))
        return written

    def _release(self, ids: list[int]) -> None:
        with session_scope(self.factory) as s:
            repo.outbox_release(s, ids)

    def _recorded(self, outcome: _Outcome, w: _Written) -> None:
        """Metrics and the log line of a committed record."""
        row = outcome.row
        if w.recorded:  # committed, and this sender's to record
            self.metrics.outbox_recorded(row.kind, w.status)
        log_fn = log.info if w.status == "sent" else log.warning
        log_fn(
            f"outbox_{w.status}",
            outbox_id=row.id,
            kind=row.kind,
            case=row.case_number,
            message_id=row.message_id,
            to=row.envelope_to,
            **({"error": w.error} if w.error else {}),
        )

    async def _step(self, journal: _Journal, done: _Outcome | None, start: ClaimedMail | None) -> bool:
        """Record ``done`` and mark ``start`` ``sending`` in one (group) transaction; whether
        ``start`` is ours to send. With an outcome to record the write is retried while the
        database is away: the server has answered, and only this record keeps the mail from being
        sent again. Gives up (raises) after :data:`RECORD_RETRY_SECONDS`; the row then stays
        ``sending`` and is re-sent with a ``mail_resent_unknown_outcome`` event after its lease,
        as after a crash. Without one a database fault is raised at once (nothing has left)."""
        deadline = time.monotonic() + RECORD_RETRY_SECONDS
        delay = RECORD_RETRY_FIRST_DELAY
        while True:
            try:
                w = await journal.write(_Step(done, start))
                break
            except Exception as e:
                if done is None or not is_transient_db_error(e) or time.monotonic() + delay > deadline:
                    raise
                log.warning(
                    "outbox_record_retry",
                    outbox_id=done.row.id,
                    status=done.status,
                    error=_first_line(e),
                    retry_in=delay,
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECORD_RETRY_MAX_DELAY)
        if done is not None:
            self._recorded(done, w)
        return w.started

    # -- SMTP -----------------------------------------------------------------------------------

    async def _connect(self) -> tuple[aiosmtplib.SMTP, AccessToken | None]:
        """An open, logged-in connection and the OAuth token it logged in with (None: no OAuth)."""
        login: dict = {}
        token = None
        if self.tokens is not None:
            # A fresh token (renewed ahead of expiry) for every connection; aiosmtplib (>= 5.1) logs
            # in with AUTH XOAUTH2 from its token generator when it connects.
            token = await asyncio.to_thread(self.tokens.token)
            value = token.value

            async def generate() -> str:
                return value

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
        try:
            await smtp.connect()
        except aiosmtplib.SMTPAuthenticationError as e:
            e.mailbridge_token = token  # type: ignore[attr-defined]  # the refused token, to invalidate
            raise
        if self.tokens is None and self.smtp.user and self.smtp.password is not None:
            await smtp.login(self.smtp.user, self.smtp.password.get_secret_value())
        return smtp, token

    async def _open(self, report: SendReport, *, first: bool) -> aiosmtplib.SMTP | None:
        """:meth:`_connect`, its failures counted and logged; None if it failed. The first
        connection's failure is the pass's error (the server is away, the login refused); a further
        connection that fails only means fewer connections."""
        try:
            smtp, _ = await self._connect()
            return smtp
        except TokenError as e:
            # No token (the source logged why: reauth_required at error level, or the endpoint away).
            self.metrics.smtp_error("auth")
            if first:
                report.errors.append(f"OAuth token: {e.describe()}")
        except aiosmtplib.SMTPAuthenticationError as e:
            self.metrics.smtp_error(smtp_error_kind(e, connected=False))
            token = getattr(e, "mailbridge_token", None)
            if self.tokens is not None and token is not None:
                await asyncio.to_thread(self.tokens.invalidate, token)  # the next try asks for a new one
            log.error("smtp_auth_failed", host=self.smtp.host, error=str(e))
            if first:
                report.errors.append(str(e))
        except _CONNECTION_ERRORS as e:
            self.metrics.smtp_error(smtp_error_kind(e, connected=False))
            log.warning("smtp_unreachable", host=self.smtp.host, port=self.smtp.port, error=repr(e), first=first)
            if first:
                report.errors.append(repr(e))
        return None

    async def check_login(self) -> str:
        """Connect and log in as the service would, then QUIT (``mailbridge auth test``); what was
        done, in words. Raises what the connection or login raised."""
        smtp, _ = await self._connect()
        try:
            how = "no login"
            if self.tokens is not None:
                how = f"AUTH XOAUTH2 as {self.smtp.user}"
            elif self.smtp.user:
                how = f"password login as {self.smtp.user}"
            return f"{self.smtp.host}:{self.smtp.port} accepted the connection ({how})"
        finally:
            await _close(smtp)

    async def _exchange(self, smtp: aiosmtplib.SMTP, row: ClaimedMail, report: SendReport) -> tuple[_Outcome, bool]:
        """Send one row; its outcome, and whether the connection is finished (broken, or 421)."""
        try:
            try:
                await smtp.sendmail(row.envelope_from, row.envelope_to, row.raw)
            except (aiosmtplib.SMTPException, OSError) as e:  # TimeoutError is an OSError
                self.metrics.smtp_error(smtp_error_kind(e, connected=True))
                raise
        except aiosmtplib.SMTPRecipientsRefused as e:
            transient = all(400 <= r.code < 500 for r in e.recipients)
            report.retry += transient
            report.failed += not transient
            return _Outcome(row, "queued" if transient else "failed", str(e)), False
        except aiosmtplib.SMTPResponseException as e:
            transient = 400 <= e.code < 500
            report.retry += transient
            report.failed += not transient
            # RFC 5321 4.2.3: with 421 the server is closing the channel.
            return _Outcome(row, "queued" if transient else "failed", f"{e.code} {e.message}"), e.code == 421
        except _CONNECTION_ERRORS as e:
            report.retry += 1
            report.errors.append(repr(e))
            return _Outcome(row, "queued", repr(e)), True
        except aiosmtplib.SMTPException as e:
            # Refused by the client library itself (e.g. SMTPUTF8 needed but not offered):
            # this mail cannot be sent to this server as it is.
            report.failed += 1
            return _Outcome(row, "failed", f"{type(e).__name__}: {e}"), False
        report.sent += 1
        return _Outcome(row, "sent"), False

    async def _work(self, smtp: aiosmtplib.SMTP, batch: _Batch, journal: _Journal, report: SendReport) -> None:
        """One connection: take a row, mark it ``sending`` (in the transaction recording the
        previous row's answer), send it, until the batch is done, the connection ends or a stop."""
        answered: _Outcome | None = None  # this connection's last answer, not yet recorded
        try:
            while True:
                if self.should_stop():
                    batch.halt()
                row = None if batch.halted else batch.take()
                if row is None:
                    if answered is not None:  # record now; never wait for a row with an answer unrecorded
                        await self._step(journal, answered, None)
                        answered = None
                        continue  # rows may have become free meanwhile
                    if batch.halted or not batch.rows:
                        return
                    await batch.changed()  # the next rows' cases are in other connections' exchanges
                    continue
                done, answered = answered, None
                try:
                    started = await self._step(journal, done, row)
                except Exception as e:
                    batch.put_back(row)
                    if done is not None or not is_transient_db_error(e):
                        raise  # an answer could not be recorded (see _step), or a bug
                    # Nothing has left: the rows not taken are given back (or their claim runs out).
                    log.warning("outbox_database_unavailable", error=_first_line(e))
                    report.errors.append(repr(e))
                    batch.halt()
                    return
                if not started:
                    batch.finished(row)
                    continue  # no longer ours (our lease ran out and another sender took it)
                try:
                    answered, closing = await self._exchange(smtp, row, report)
                finally:
                    batch.finished(row)
                if closing:
                    await self._step(journal, answered, None)
                    answered = None
                    return
        except BaseException:
            batch.halt()  # a fault: the other connections finish their mail and stop
            raise
        finally:
            await _close(smtp)

    async def _connection(self, batch: _Batch, journal: _Journal, report: SendReport, opening: set) -> None:
        """A further connection: opened, then worked like the first (a failure to open leaves the
        batch to the others). While it is being opened it is in ``opening``: once the batch needs
        no more connections :meth:`run_once` cancels it (a server slow to accept further
        connections must not hold up the pass)."""
        try:
            smtp = await self._open(report, first=False)
        finally:
            opening.discard(asyncio.current_task())
        if smtp is None:
            return
        if batch.halted or not batch.rows:
            await _close(smtp)  # the others sent everything meanwhile
            return
        await self._work(smtp, batch, journal, report)

    async def run_once(self) -> SendReport:
        """Claim and send one batch; returns what happened. Never raises for SMTP trouble."""
        report = SendReport()
        try:
            rows = await asyncio.to_thread(self._claim)
        except Exception as e:
            if not is_transient_db_error(e):
                raise
            # The database is away: nothing was claimed; the next run tries again.
            log.warning("outbox_database_unavailable", error=_first_line(e))
            report.errors.append(repr(e))
            return report
        if not rows:
            return report
        smtp = await self._open(report, first=True)
        if smtp is None:  # the server is away or refused us: the whole batch is given back
            await asyncio.to_thread(self._release, [r.id for r in rows])
            return report
        batch = _Batch(rows)
        journal = _Journal(self._commit_steps)
        more = min(self.cfg.connections, len({order_key(r) for r in rows})) - 1
        opening: set[asyncio.Task] = set()
        tasks = [asyncio.create_task(self._work(smtp, batch, journal, report))]
        for _ in range(more):
            tasks.append(asyncio.create_task(self._connection(batch, journal, report, opening)))
            opening.add(tasks[-1])
        pending = set(tasks)
        try:
            while pending:
                _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if batch.halted or not batch.rows:
                    for t in list(opening):
                        t.cancel()
        except BaseException:  # this pass is cancelled: so are its connections
            for t in tasks:
                t.cancel()
            raise
        results = [t.exception() for t in tasks if not t.cancelled()]
        fault = next((r for r in results if r is not None), None)
        if batch.rows:  # not taken by any connection (a stop, connections ended, the database away)
            try:
                await asyncio.to_thread(self._release, [r.id for r in batch.rows])
            except Exception as e:
                if fault is None and not is_transient_db_error(e):
                    raise
                # The database is away: their claim runs out and they are sent after the lease.
                log.warning("outbox_database_unavailable", error=_first_line(e))
        if fault is not None:
            raise fault
        return report


async def _close(smtp: aiosmtplib.SMTP) -> None:
    try:
        await smtp.quit()
    except Exception:
        smtp.close()
