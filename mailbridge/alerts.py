"""Is mailbridge well? The one place that decides each health condition, for ``mailbridge status``
(warning / critical) and for the alert mails to ``[alerts] recipients``.

The facts come from the rows the running service writes (``store/health.py``: accounts, jobs) and
from the outbox and the quarantine themselves. :func:`evaluate` turns them into :class:`Finding`\\ s;
those with ``alert`` set are alert conditions:

- ``account:<name>``: the account cannot fetch — at once for a refused login or an untrusted TLS
  certificate (a person must act), after ``account_failing_minutes`` for a transient fault;
- ``outbox``: SMTP refused or unreachable (the sender's streak), or a queued mail being retried,
  for longer than ``outbox_failing_minutes``. The alert mail itself goes through the outbox, so
  during an SMTP outage it arrives when SMTP is back; it says when it was written and how many
  mails were waiting;
- ``quarantine``: more than ``quarantine_growth`` mails quarantined within ``repeat_minutes``;
- ``account:<name>`` with kind ``account_reauth``, and ``oauth:<login>`` for a login whose account
  does not show it (SMTP's own token): an OAuth2 token that cannot be renewed without a person
  (consent revoked, password changed, secret expired) — at once, repeated at most once a day;
- ``secret:<login>``: an OAuth client secret expires within ``secret_expiry_warning_days``
  (``client_secret_expires``) — once a day.

:func:`decide` is the rule for mails: the first mail when a condition starts, at most one more per
``repeat_minutes`` while it lasts, and one "back to normal" mail when it clears. The state of each
condition is a row (``alert_state``), changed by compare-and-set in the transaction that queues the
mail, so neither a restart nor a second instance sends a mail twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

import structlog
from babel.dates import format_datetime, format_timedelta

from mailbridge.outbound import compose as comp
from mailbridge.outbound.outbox import enqueue
from mailbridge.settings import Settings
from mailbridge.store import health
from mailbridge.store import tokens as token_store
from mailbridge.store.db import IntegrityError, Session, session_scope

log = structlog.get_logger(__name__)

TIME_FORMAT = {"de": "EEE dd.MM.yyyy HH:mm zzz", "en": "EEE d MMM yyyy HH:mm zzz"}
# The job names a failing run of which is a warning in `status` (the outbox has a condition of its own).
OUTBOX_JOB = "outbox"
# OAuth conditions (a sign-in needed, a secret expiring) are mailed at most once a day: a person has to
# act, and the mail says what to do; more would be noise (issue 12).
OAUTH_REPEAT_MINUTES = 24 * 60.0


class Level(StrEnum):
    OK = "ok"
    WARNING = "warning"
    CRITICAL = "critical"

    @property
    def exit_code(self) -> int:
        """Nagios plugin convention: 0 OK, 1 WARNING, 2 CRITICAL."""
        return {Level.OK: 0, Level.WARNING: 1, Level.CRITICAL: 2}[self]


def worst(levels) -> Level:
    order = [Level.OK, Level.WARNING, Level.CRITICAL]
    return max(levels, key=order.index, default=Level.OK)


@dataclass(frozen=True)
class Finding:
    """Something not well: ``condition`` names it (``account:main``), ``kind`` says what it is (the
    alert template's case), ``since`` when it began; ``alert`` whether it is an alert condition now."""

    condition: str
    kind: str
    level: Level
    summary: str
    since: datetime | None = None
    alert: bool = False
    facts: dict[str, Any] = field(default_factory=dict)
    # At most one mail per this many minutes while it lasts; None: ``alerts.repeat_minutes``.
    repeat_minutes: float | None = None


@dataclass(frozen=True)
class Snapshot:
    """What the conditions are decided on, read in one transaction."""

    accounts: dict[str, Any]  # name → AccountHealth row
    jobs: dict[str, Any]  # job → JobHealth row
    outbox: health.OutboxSummary
    open_quarantine: int
    recent_quarantine: int  # quarantined within repeat_minutes
    tokens: dict[str, Any] = field(default_factory=dict)  # login → StoredToken (without the tokens)

    @property
    def service_seen(self) -> bool:
        """Has a service ever written its health here?"""
        return bool(self.accounts or self.jobs)


def snapshot(session: Session, settings: Settings, now: datetime) -> Snapshot:
    period = timedelta(minutes=settings.alerts.repeat_minutes)
    return Snapshot(
        accounts={a.account: a for a in health.account_rows(session)},
        jobs={j.job: j for j in health.job_rows(session)},
        outbox=health.outbox_summary(session, now - period),
        open_quarantine=health.open_quarantine(session),
        recent_quarantine=health.quarantined_since(session, now - period),
        tokens={t.name: t for t in token_store.all_rows(session)},
    )


def _minutes(td: timedelta) -> float:
    return td.total_seconds() / 60


# How long a running service may leave an account's health row unwritten: it writes it after every
# cycle and every batch of a backlog (at most every 15 s) and at each failure; a failing account
# retries after at most 300 s (transient backoff) or permanent_fault_retry. Twice that, plus slack
# for a slow batch.
SILENCE_SLACK_SECONDS = 120.0
TRANSIENT_BACKOFF_MAX_SECONDS = 300.0  # ingest/poller.py BACKOFF_MAX_SECONDS


def silence_allowed(account, *, failing: bool) -> timedelta:
    """How long an account's health row may go unwritten while a service runs it."""
    every = max(account.poll_interval, 15.0)
    if failing:
        every = max(every, TRANSIENT_BACKOFF_MAX_SECONDS, account.permanent_fault_retry)
    return timedelta(seconds=2 * every + SILENCE_SLACK_SECONDS)


def evaluate(settings: Settings, snap: Snapshot, now: datetime) -> list[Finding]:
    """Every condition that is not well, with its level and whether it is an alert condition.

    Levels (``mailbridge status`` exits with the worst; README "Health"):

    - critical: an account with a refused login or an untrusted certificate; an account failing
      longer than ``account_failing_minutes``; SMTP failing, or a mail retried, longer than
      ``outbox_failing_minutes`` — these are also the alert conditions, with the quarantine's growth;
      a critical condition too, but no alert: an account whose health row the service has not
      written for twice its refresh period (``silence_allowed``): no service runs it;
    - warning: the service never ran against this database (no health rows at all); an account
      failing for a shorter time; no health row for an account (the service never ran it); SMTP
      failing for a shorter time; mails that failed for good within
      ``repeat_minutes``; open quarantined mails (more than ``quarantine_growth`` new ones within
      ``repeat_minutes`` is an alert condition); a scheduled job whose last run failed.
    """
    cfg = settings.alerts
    out: list[Finding] = []
    if not snap.service_seen:
        out.append(
            Finding("service", "service_unseen", Level.WARNING, "the service has not run here yet (no health rows)")
        )
    for acc in settings.accounts:
        row = snap.accounts.get(acc.name)
        if row is None:
            if snap.service_seen:
                out.append(Finding(f"account:{acc.name}", "account_unseen", Level.WARNING, "never fetched"))
            continue
        silent = now - row.updated_at
        if silent > silence_allowed(acc, failing=row.failing_since is not None):
            # The row is refreshed by the running service (each cycle, each failure): silence means
            # no service fetches this account (stopped, crashed, hung). Only status can say so: a
            # dead service sends no alert.
            out.append(
                Finding(
                    f"account:{acc.name}:silent",
                    "account_silent",
                    Level.CRITICAL,
                    f"no word from the service for {_minutes(silent):.0f} min (is mailbridge run running?)",
                    row.updated_at,
                )
            )
        if row.failing_since is None:
            continue
        facts = {
            "account": acc.name,
            "host": acc.host,
            "port": acc.port,
            "user": acc.user,
            "folder": acc.folder,
            "error": row.last_error or "",
            "retry_seconds": acc.permanent_fault_retry,
        }
        failing = now - row.failing_since
        if row.error_kind == "reauth_required":
            token = snap.tokens.get(acc.name)
            out.append(
                Finding(
                    f"account:{acc.name}",
                    "account_reauth",
                    Level.CRITICAL,
                    f"OAuth sign-in needed: {row.last_error}",
                    row.failing_since,
                    alert=True,
                    facts={**facts, **_oauth_facts(settings, acc.name, token)},
                    repeat_minutes=max(cfg.repeat_minutes, OAUTH_REPEAT_MINUTES),
                )
            )
        elif row.error_kind in ("login", "tls"):
            what = "login refused" if row.error_kind == "login" else "TLS certificate not trusted"
            out.append(
                Finding(
                    f"account:{acc.name}",
                    f"account_{row.error_kind}",
                    Level.CRITICAL,
                    f"{what}: {row.last_error}",
                    row.failing_since,
                    alert=True,
                    facts=facts,
                )
            )
        else:
            long = _minutes(failing) >= cfg.account_failing_minutes
            out.append(
                Finding(
                    f"account:{acc.name}",
                    "account_transient",
                    Level.CRITICAL if long else Level.WARNING,
                    f"failing: {row.last_error}",
                    row.failing_since,
                    alert=long,
                    facts=facts,
                )
            )

    out += oauth_findings(settings, snap.accounts, snap.tokens, now)

    ob = snap.outbox
    smtp = snap.jobs.get(OUTBOX_JOB)
    smtp_since = smtp.failing_since if smtp is not None else None
    starts = [t for t in (smtp_since, ob.oldest_retrying_at) if t is not None]
    if starts:
        since = min(starts)
        long = _minutes(now - since) >= cfg.outbox_failing_minutes
        error = (smtp.last_error if smtp_since is not None else None) or ob.last_error or ""
        out.append(
            Finding(
                "outbox",
                "outbox",
                Level.CRITICAL if long else Level.WARNING,
                f"sending fails: {error}",
                since,
                alert=long,
                facts={
                    "host": settings.smtp.host,
                    "port": settings.smtp.port,
                    "error": error,
                    "pending": ob.pending,
                    "retrying": ob.retrying,
                },
            )
        )
    if ob.failed_since:
        out.append(
            Finding(
                "outbox:failed",
                "outbox_failed",
                Level.WARNING,
                f"{ob.failed_since} mail(s) failed for good in the last {cfg.repeat_minutes:g} minutes",
                facts={"failed": ob.failed_since, "error": ob.last_error or ""},
            )
        )

    if snap.recent_quarantine > cfg.quarantine_growth:
        out.append(
            Finding(
                "quarantine",
                "quarantine",
                Level.WARNING,
                f"{snap.recent_quarantine} mails quarantined in the last {cfg.repeat_minutes:g} minutes",
                alert=True,
                facts={
                    "recent": snap.recent_quarantine,
                    "open": snap.open_quarantine,
                    "threshold": cfg.quarantine_growth,
                },
            )
        )
    elif snap.open_quarantine:
        out.append(
            Finding(
                "quarantine:open", "quarantine_open", Level.WARNING, f"{snap.open_quarantine} open quarantined mail(s)"
            )
        )

    for name, job in sorted(snap.jobs.items()):
        if name != OUTBOX_JOB and job.failing_since is not None:
            out.append(
                Finding(f"job:{name}", "job", Level.WARNING, f"{name} failing: {job.last_error}", job.failing_since)
            )
    return out


_PROVIDER_NAMES = {"microsoft": "Microsoft Entra ID", "google": "Google", "generic": "the token endpoint"}


def _oauth_facts(settings: Settings, login: str, token) -> dict[str, Any]:
    o = settings.oauth_logins.get(login)
    return {
        "login": login,
        "provider": o.provider.value if o else "",
        "provider_name": _PROVIDER_NAMES.get(o.provider.value, "the token endpoint") if o else "the token endpoint",
        "flow": o.flow.value if o else "",
        "code": (token.error_code if token is not None else None) or "",
        "error": (token.last_error if token is not None else None) or "",
        "device_code": bool(o and o.flow.value == "device_code"),
        # SMTP logs in with this token: no mail goes out while it is dead.
        "smtp_host": settings.smtp.host if settings.smtp_token_name == login else "",
    }


def oauth_findings(
    settings: Settings, accounts: dict[str, Any], tokens: dict[str, Any], now: datetime
) -> list[Finding]:
    """Logins whose token needs a person, where no account's own finding says so already (SMTP's own
    login; an account's token that SMTP found dead before its poller did); secrets about to expire."""
    cfg = settings.alerts
    repeat = max(cfg.repeat_minutes, OAUTH_REPEAT_MINUTES)
    out: list[Finding] = []
    for login, o in settings.oauth_logins.items():
        token = tokens.get(login)
        account_row = accounts.get(login)
        shown = account_row is not None and account_row.error_kind == "reauth_required"
        if token is not None and token.reauth_required and not shown:
            facts = _oauth_facts(settings, login, token)
            out.append(
                Finding(
                    f"oauth:{login}",
                    "token_reauth",
                    Level.CRITICAL,
                    f"OAuth sign-in needed for {login}: {token.last_error}",
                    token.failing_since,
                    alert=True,
                    facts=facts,
                    repeat_minutes=repeat,
                )
            )
        expires = o.client_secret_expires
        if expires is not None:
            days = (expires - now.astimezone(ZoneInfo(settings.operator_timezone)).date()).days
            if days <= cfg.secret_expiry_warning_days:
                expired = days < 0
                out.append(
                    Finding(
                        f"secret:{login}",
                        "secret_expiry",
                        Level.CRITICAL if expired else Level.WARNING,
                        f"the client secret of {login} {'expired' if expired else 'expires'} on {expires.isoformat()}",
                        alert=True,
                        facts={**_oauth_facts(settings, login, token), "expires": expires.isoformat(), "days": days},
                        repeat_minutes=repeat,
                    )
                )
    return out


class Action(StrEnum):
    FIRE = "fire"  # the condition began: the first mail
    REPEAT = "repeat"  # still firing and the period is over: one more mail
    CLEAR = "clear"  # back to normal: the all-clear mail


def decide(state, finding: Finding | None, now: datetime, repeat: timedelta) -> Action | None:
    """What the alert job does about one condition: ``state`` is its ``alert_state`` row (or None),
    ``finding`` its alert finding now (None: the condition does not hold)."""
    firing = state is not None and state.firing_since is not None
    if finding is None:
        return Action.CLEAR if firing else None
    if not firing:
        return Action.FIRE
    if state.last_sent_at is None or now - state.last_sent_at >= repeat:
        return Action.REPEAT
    return None


class _Lost(Exception):
    """Another instance changed the condition's row first; this one's mail is rolled back."""


class Alerts:
    """The alert job: evaluate, decide, and queue the mails (``[alerts]``)."""

    def __init__(self, settings: Settings, templates):
        self.settings = settings
        self.templates = templates
        self.zone = ZoneInfo(settings.operator_timezone)

    def _fmt(self, at: datetime | None, lang: str) -> str:
        if at is None:
            return "–"
        return format_datetime(at, TIME_FORMAT.get(lang, TIME_FORMAT["en"]), locale=lang, tzinfo=self.zone)

    def render(self, finding: Finding | None, state, action: Action, now: datetime) -> tuple[str, str]:
        """Subject and text of one alert mail (``templates/<lang>/alert.*.j2``)."""
        cfg = self.settings.alerts
        lang = cfg.language
        last = (state.detail or {}) if state is not None else {}
        facts = finding.facts if finding is not None else last.get("facts", {})
        kind = finding.kind if finding is not None else last.get("kind", "")
        if finding is not None:
            since = finding.since or now
        else:
            since = datetime.fromisoformat(last["since"]) if last.get("since") else state.firing_since
        retry = facts.get("retry_seconds")
        repeat_minutes = (finding.repeat_minutes if finding is not None else None) or cfg.repeat_minutes
        ctx = {
            "kind": kind,
            "resolved": action is Action.CLEAR,
            "facts": facts,
            "since": self._fmt(since, lang),
            "now": self._fmt(now, lang),
            "lasted": format_timedelta(now - since, locale=lang, threshold=1.1) if since else "",
            "retry": format_timedelta(timedelta(seconds=retry), locale=lang) if retry else "",
            "repeat": format_timedelta(timedelta(minutes=repeat_minutes), locale=lang, threshold=1.1),
            "account_for": format_timedelta(timedelta(minutes=cfg.account_failing_minutes), locale=lang),
            "outbox_for": format_timedelta(timedelta(minutes=cfg.outbox_failing_minutes), locale=lang),
        }
        subject = self.templates.render(lang, "alert.subject.j2", **ctx).strip()
        return subject, self.templates.render(lang, "alert.txt.j2", **ctx)

    def _queue(self, s: Session, condition: str, subject: str, text: str, key: str, now: datetime) -> int:
        q = self.settings.queues[0]
        out = comp.compose(
            from_name=q.display_name,
            from_addr=q.address,
            to=[("", a) for a in self.settings.alerts.recipients],
            subject=subject,
            text=text,
            html=None,
            date=now,
            auto_submitted="auto-generated",
            language=self.settings.alerts.language,
        )
        return enqueue(s, out, kind="alert", dedup_key=key, now=now, ticket_id=None)

    def run_once(self, session_factory, now: datetime) -> list[tuple[str, Action]]:
        """Evaluate every condition once and queue what :func:`decide` says; returns what was queued."""
        cfg = self.settings.alerts
        with session_scope(session_factory) as s:
            snap = snapshot(s, self.settings, now)
            states = health.alert_states(s)
        findings = {f.condition: f for f in evaluate(self.settings, snap, now) if f.alert}
        repeat = timedelta(minutes=cfg.repeat_minutes)
        done = []
        for condition in sorted(set(findings) | {c for c, st in states.items() if st.firing_since is not None}):
            state, finding = states.get(condition), findings.get(condition)
            every = timedelta(minutes=finding.repeat_minutes) if finding and finding.repeat_minutes else repeat
            action = decide(state, finding, now, every)
            if action is None:
                continue
            detail = None
            if finding is not None:
                detail = {"kind": finding.kind, "facts": finding.facts, "since": (finding.since or now).isoformat()}
            sent = state.sent if state is not None else 0
            since = state.firing_since if state is not None and state.firing_since else now
            key = f"alert:{condition}:{since.isoformat()}:{'ok' if action is Action.CLEAR else sent + 1}"
            subject, text = self.render(finding, state, action, now)
            try:
                with session_scope(session_factory) as s:
                    if action is Action.FIRE:
                        ok = health.alert_fire(s, condition, now, detail or {})
                        key = f"alert:{condition}:{now.isoformat()}:1"
                    elif action is Action.REPEAT:
                        ok = health.alert_repeat(s, condition, sent, now, detail or {})
                    else:
                        ok = health.alert_clear(s, condition, sent, now)
                    if not ok:
                        raise _Lost
                    self._queue(s, condition, subject, text, key, now)
            except (_Lost, IntegrityError):
                log.info("alert_taken_by_another_instance", condition=condition, action=action.value)
                continue
            log_fn = log.info if action is Action.CLEAR else log.warning
            log_fn(
                "alert_queued" if action is not Action.CLEAR else "alert_cleared",
                condition=condition,
                action=action.value,
                kind=finding.kind if finding else (state.detail or {}).get("kind"),
                recipients=cfg.recipients,
            )
            done.append((condition, action))
        return done
