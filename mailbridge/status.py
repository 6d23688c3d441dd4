"""``mailbridge status``: is the desk healthy? Per account (connected, IDLE or polling, last fetch,
the failure streak, mails waiting), the outbox (pending, retrying, failed, the oldest pending mail,
the last SMTP error), open quarantined mails, the scheduled jobs' last runs, the schema revision, and
with several instances on the database who holds which lease (``store/leases.py``).

The facts are the rows the running service writes (``store/health.py``) and the outbox and quarantine
themselves; what is a warning and what is critical is decided in ``alerts.evaluate`` (the same rules
the alert mails follow), the schema's level here. Times are shown in ``settings.operator_timezone``.
Exit codes follow the Nagios plugin convention: 0 OK, 1 WARNING, 2 CRITICAL.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from alembic.script import ScriptDirectory
from babel.dates import format_timedelta
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from mailbridge.alerts import OUTBOX_JOB, Finding, Level, evaluate, snapshot, worst
from mailbridge.app import App
from mailbridge.store import leases as lease_rows
from mailbridge.store import migrate
from mailbridge.store.db import session_scope
from mailbridge.views import printable


@dataclass
class Status:
    level: Level
    findings: list[Finding]
    zone: ZoneInfo
    now: datetime
    schema_current: str | None
    schema_newest: str | None
    accounts: list[dict[str, Any]]
    outbox: dict[str, Any]
    quarantine: dict[str, Any]
    jobs: list[dict[str, Any]]
    # Every lease row: a mailbox's, the leader's, each instance's heartbeat (``store/leases.py``).
    leases: list[dict[str, Any]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return self.level.exit_code


def _jobs_expected(app: App) -> list[str]:
    s = app.settings
    names = ["escalate", "close_solved", *(f"digest:{d.name}" for d in s.digests), OUTBOX_JOB]
    names += [f"report:{r.name}" for r in s.reports]
    if s.alerts.recipients:
        names.append("alerts")
    if s.retention.enabled:
        names.append("retention")
    return names


def collect(app: App) -> Status:
    """Read everything once and decide the level."""
    settings, now = app.settings, app.clock()
    zone = ZoneInfo(settings.operator_timezone)
    current = migrate.current_revision(app.engine)
    newest = ScriptDirectory.from_config(migrate.alembic_config(app.engine)).get_current_head()
    findings: list[Finding] = []
    if current is None:
        findings.append(
            Finding("schema", "schema", Level.CRITICAL, "no schema: run `mailbridge db upgrade` (or start the service)")
        )
    elif current != newest:
        findings.append(
            Finding(
                "schema",
                "schema",
                Level.WARNING,
                f"schema at {current}, newest is {newest}: the service upgrades it at its start "
                "(or `mailbridge db upgrade`)",
            )
        )
    accounts: list[dict[str, Any]] = []
    outbox: dict[str, Any] = {}
    quarantine: dict[str, Any] = {}
    jobs: list[dict[str, Any]] = []
    held: list[dict[str, Any]] = []
    if current == newest:
        with session_scope(app.session_factory) as s:
            snap = snapshot(s, settings, now)
            held = [
                {"name": r.name, "holder": r.holder, "held": r.live, "since": r.acquired_at, "expires": r.expires_at}
                for r in lease_rows.all_leases(s)
            ]
        findings += evaluate(settings, snap, now)
        for acc in settings.accounts:
            row = snap.accounts.get(acc.name)
            token = snap.tokens.get(acc.name) if acc.oauth2 is not None else None
            accounts.append(
                {
                    "name": acc.name,
                    "host": acc.host,
                    "user": acc.user,
                    # The token slot (issue 12): how the account logs in, and its OAuth token's expiry.
                    "auth": acc.auth.value
                    if acc.oauth2 is None
                    else f"oauth2 {acc.oauth2.provider.value}/{acc.oauth2.flow.value}",
                    "token_expires": token.expires_at if token is not None else None,
                    "seen": row is not None,
                    "connected": row.connected if row else None,
                    "mode": row.mode if row else None,
                    "last_fetch": row.last_fetch_at if row else None,
                    "error": row.last_error if row else None,
                    "error_kind": row.error_kind if row else None,
                    "failing_since": row.failing_since if row else None,
                    "waiting": row.waiting if row else None,
                }
            )
        ob = snap.outbox
        smtp = snap.jobs.get(OUTBOX_JOB)
        outbox = {
            "pending": ob.pending,
            "retrying": ob.retrying,
            "failed": ob.failed,
            "failed_recently": ob.failed_since,
            "oldest_pending": ob.oldest_pending_at,
            "smtp_failing_since": smtp.failing_since if smtp else None,
            "last_error": (smtp.last_error if smtp and smtp.failing_since else None) or ob.last_error,
        }
        quarantine = {"open": snap.open_quarantine, "recent": snap.recent_quarantine}
        for name in _jobs_expected(app) + sorted(set(snap.jobs) - set(_jobs_expected(app))):
            j = snap.jobs.get(name)
            jobs.append(
                {
                    "job": name,
                    "last_run": j.last_run_at if j else None,
                    "last_success": j.last_success_at if j else None,
                    "error": j.last_error if j else None,
                    "failing_since": j.failing_since if j else None,
                }
            )
    level = worst(f.level for f in findings)
    return Status(level, findings, zone, now, current, newest, accounts, outbox, quarantine, jobs, held)


# ---------------------------------------------------------------- JSON


def _iso(value, zone: ZoneInfo):
    if isinstance(value, datetime):
        return value.astimezone(zone).isoformat(timespec="seconds")
    if isinstance(value, dict):
        return {k: _iso(v, zone) for k, v in value.items()}
    if isinstance(value, list):
        return [_iso(v, zone) for v in value]
    return value


def as_json(st: Status) -> dict[str, Any]:
    """The machine-readable document of ``status --json``: the same facts, times as ISO 8601 in the
    operator's zone, and ``status`` (ok | warning | critical)."""
    return _iso(
        {
            "status": st.level.value,
            "time": st.now,
            "timezone": st.zone.key,
            "schema": {"current": st.schema_current, "newest": st.schema_newest},
            "problems": [
                {"condition": f.condition, "level": f.level.value, "summary": f.summary, "since": f.since}
                for f in st.findings
            ],
            "accounts": st.accounts,
            "outbox": st.outbox,
            "quarantine": st.quarantine,
            "jobs": st.jobs,
            "leases": st.leases,
        },
        st.zone,
    )


# ---------------------------------------------------------------- the table


def _when(st: Status, at: datetime | None) -> str:
    if at is None:
        return "never"
    ago = format_timedelta(st.now - at, locale="en", threshold=1.1) if st.now >= at else "now"
    return f"{at.astimezone(st.zone):%Y-%m-%d %H:%M:%S %Z} ({ago} ago)"


def _cell(text: str | None, width: int = 160) -> Text:
    return Text(printable(text or "-")[:width])


def render(st: Status, width: int = 140) -> str:
    """The human view: a summary line, the problems, then accounts, outbox, quarantine, jobs."""
    buf = io.StringIO()
    console = Console(file=buf, width=width, color_system=None, force_terminal=False, highlight=False)
    console.print(Text(f"mailbridge: {st.level.value.upper()}   ({st.now.astimezone(st.zone):%Y-%m-%d %H:%M %Z})"))
    for f in st.findings:
        since = f" since {_when(st, f.since)}" if f.since else ""
        line = f"  {f.level.value.upper():8} {f.condition}: {printable(f.summary)[:200]}{since}"
        console.print(Text(line), soft_wrap=True)
    console.print(
        Text(f"schema: {st.schema_current or 'none'} (newest {st.schema_newest})"),
    )
    if not st.accounts and not st.outbox:
        return buf.getvalue()
    t = Table(title="accounts", box=box.SIMPLE, title_justify="left")
    for col in ("account", "state", "mode", "last fetch", "waiting", "error", "failing since"):
        t.add_column(col, no_wrap=col != "error")
    for a in st.accounts:
        if not a["seen"]:
            t.add_row(a["name"], "never ran", "-", "never", "-", "-", "-")
            continue
        state = "connected" if a["connected"] else f"failing ({a['error_kind']})"
        if a["auth"] != "password":
            state += f", {a['auth']}"
        t.add_row(
            a["name"],
            state,
            a["mode"] or "-",
            _when(st, a["last_fetch"]),
            str(a["waiting"]),
            _cell(a["error"], 60),
            _when(st, a["failing_since"]) if a["failing_since"] else "-",
        )
    console.print(t)
    ob = st.outbox
    t = Table(title="outbox", box=box.SIMPLE, title_justify="left", show_header=False)
    t.add_column("what")
    t.add_column("value")
    t.add_row("pending", str(ob["pending"]))
    t.add_row("retrying", str(ob["retrying"]))
    t.add_row("failed", f"{ob['failed']} ({ob['failed_recently']} recently)")
    t.add_row("oldest pending", _when(st, ob["oldest_pending"]) if ob["oldest_pending"] else "-")
    t.add_row("SMTP failing since", _when(st, ob["smtp_failing_since"]) if ob["smtp_failing_since"] else "-")
    t.add_row("last SMTP error", _cell(ob["last_error"], 90))
    t.add_row("quarantine (open)", str(st.quarantine["open"]))
    console.print(t)
    t = Table(title="jobs", box=box.SIMPLE, title_justify="left")
    for col in ("job", "last run", "last success", "error"):
        t.add_column(col, no_wrap=col != "error")
    for j in st.jobs:
        t.add_row(j["job"], _when(st, j["last_run"]), _when(st, j["last_success"]), _cell(j["error"], 50))
    console.print(t)
    if st.leases:
        t = Table(title="leases (instances on this database)", box=box.SIMPLE, title_justify="left")
        for col in ("lease", "holder", "since", "expires"):
            t.add_column(col, no_wrap=True)
        for r in st.leases:
            holder = r["holder"] if r["held"] else f"free (was {r['holder'] or '-'})"
            t.add_row(
                _cell(r["name"], 60),
                _cell(holder, 60),
                _when(st, r["since"]) if r["held"] else "-",
                f"{r['expires'].astimezone(st.zone):%Y-%m-%d %H:%M:%S %Z}",
            )
        console.print(t)
    return buf.getvalue()
