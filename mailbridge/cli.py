"""The ``mailbridge`` command: click commands that validate settings and call one service each.

A bad configuration prints one line naming the file, the key and the problem, and exits with 2.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from mailbridge.settings import ConfigError, Settings, load_settings

DEFAULT_CONFIG = "config/mailbridge.toml"
EXIT_CONFIG = 2


def _load(config: str) -> Settings:
    try:
        return load_settings(config)
    except ConfigError as e:
        click.echo(f"mailbridge: configuration error: {e}", err=True)
        sys.exit(EXIT_CONFIG)


def _app(ctx: click.Context):
    from mailbridge.app import App, utc_now
    from mailbridge.logging import configure_logging

    settings = _load(ctx.obj["config"])
    configure_logging(
        settings.logging.level, settings.logging.format, redact_addresses=settings.logging.redact_addresses
    )
    # The time "now" is for the commands (running, overdue): the wall clock, or the one a test
    # passes as ``obj={"clock": …}``.
    return App(settings, clock=ctx.obj.get("clock") or utc_now)


@click.group()
@click.option(
    "--config",
    "-c",
    envvar="MAILBRIDGE_CONFIG",
    default=DEFAULT_CONFIG,
    show_default=True,
    help="The TOML configuration file (or MAILBRIDGE_CONFIG).",
)
@click.version_option(package_name="mailbridge")
@click.pass_context
def cli(ctx: click.Context, config: str) -> None:
    """mailbridge: support mail in, tickets with case numbers, acknowledgements out."""
    ctx.ensure_object(dict)
    ctx.obj["config"] = config


@cli.command("check-config")
@click.pass_context
def check_config(ctx: click.Context) -> None:
    """Validate the configuration and print a summary."""
    s = _load(ctx.obj["config"])
    click.echo(f"{ctx.obj['config']}: OK")
    click.echo(f"  database: {s.database_url.split('@')[-1]}")
    for a in s.accounts:
        auth = f", oauth2 {a.oauth2.provider}/{a.oauth2.flow}" if a.oauth2 is not None else ""
        click.echo(f"  account {a.name}: {a.user} @ {a.host}:{a.port} ({a.tls}{auth}) folder {a.folder!r}")
    for q in s.queues:
        click.echo(f"  queue {q.name}: {', '.join(q.addresses)} [{q.language}] from account {q.account}")
    smtp_auth = f", oauth2 as {s.smtp.user} with the token of {s.smtp_token_name}" if s.smtp_token_name else ""
    click.echo(f"  smtp: {s.smtp.host}:{s.smtp.port} ({s.smtp.tls}{smtp_auth})")
    links = f"download links at {s.web.base_url}" if s.web.base_url else "no download links (base_url not set)"
    click.echo(f"  web: {s.web.listen}, {links}")
    r = s.retention
    periods = [
        f"{name} {days:g} d"
        for name, days in (
            ("raw", r.raw_days),
            ("attachments", r.attachment_days),
            ("cases", r.case_days),
            ("noise", r.noise_days),
            ("quarantine", r.quarantine_days),
            ("processed folder", r.processed_folder_days),
        )
        if days is not None
    ]
    click.echo(f"  retention: {', '.join(periods)} (daily at {r.daily_at} UTC)" if periods else "  retention: none")


@cli.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.pass_context
def db_upgrade(ctx: click.Context) -> None:
    """Create or migrate the schema to the newest revision."""
    from mailbridge.store.migrate import current_revision

    app = _app(ctx.parent)
    app.upgrade_db()
    click.echo(f"database at revision {current_revision(app.engine)}")


@cli.command()
@click.pass_context
def run(ctx: click.Context) -> None:
    """Fetch mail and send the outbox until SIGTERM/SIGINT; with ``[metrics] listen`` also serve
    /metrics, /healthz and /readyz there."""
    from mailbridge.metrics import serve_metrics
    from mailbridge.scheduler import Service

    app = _app(ctx)
    service = Service(app)
    try:
        endpoints = serve_metrics(app, service)
    except OSError as e:
        click.echo(f"mailbridge: cannot serve metrics on {app.settings.metrics.listen}: {e.strerror or e}", err=True)
        sys.exit(1)
    try:
        asyncio.run(service.run())
    finally:
        if endpoints is not None:
            endpoints.stop()


@cli.command()
@click.pass_context
def web(ctx: click.Context) -> None:
    """Serve the web app at ``[web] listen`` until SIGTERM/SIGINT: /healthz; with ``[web] base_url``
    and its key the customers' Case Tracker (sign-in by mailed link, /c/<token> case links) and the
    attachments too large for a notification at their signed links (/attachments/<token>)."""
    from mailbridge.web.app import server

    app = _app(ctx)
    if app.settings.web.base_url is None:
        click.echo(
            "mailbridge: [web] base_url is not set: no Case Tracker, no case links in mails and no download "
            "links in notifications; only /healthz is served",
            err=True,
        )
    try:
        server(app).run()
    finally:
        app.close()


@cli.group()
def tickets() -> None:
    """Look at tickets."""


@tickets.command("list")
@click.option(
    "--queue", default=None, help="Only this queue's cases (new/open/pending unless --status), in working order."
)
@click.option("--status", default=None)
@click.option("--limit", default=50, show_default=True)
@click.pass_context
def tickets_list(ctx: click.Context, queue, status, limit) -> None:
    """The newest tickets; with --queue the queue's active cases in working order: with a contract
    first, then by severity (most severe first), then oldest first."""
    from mailbridge import views

    app = _app(ctx.parent)
    click.echo(views.tickets_table(app, queue=queue, status=status, limit=limit))


@tickets.command("show")
@click.argument("case_number")
@click.pass_context
def tickets_show(ctx: click.Context, case_number: str) -> None:
    """One ticket with its messages and history."""
    from mailbridge import views

    app = _app(ctx.parent)
    text = views.ticket_detail(app, case_number)
    if text is None:
        click.echo(f"no ticket {case_number}", err=True)
        sys.exit(1)
    click.echo(text)


@cli.group()
def sla() -> None:
    """Deadlines: how they were computed, and recomputing them after a configuration change."""


@sla.command("explain")
@click.argument("case_number")
@click.pass_context
def sla_explain(ctx: click.Context, case_number: str) -> None:
    """How each deadline of a case was computed: target, calendar, the days counted, pauses, the
    due time, met or running."""
    from mailbridge import views

    app = _app(ctx.parent)
    text = views.sla_explanation(app, case_number)
    if text is None:
        click.echo(f"no ticket {case_number}", err=True)
        sys.exit(1)
    click.echo(text)


@sla.command("recompute")
@click.option("--dry-run", is_flag=True, help="Show what would change; write nothing.")
@click.pass_context
def sla_recompute(ctx: click.Context, dry_run: bool) -> None:
    """Apply the current calendars, targets, organisations and contracts to every case that is not
    solved or closed; one line per changed case, then a count."""
    from mailbridge.sla.recompute import recompute

    app = _app(ctx.parent)
    report = recompute(
        settings=app.settings,
        deadlines=app.deadlines,
        escalations=None if dry_run else app.escalations,
        session_factory=app.session_factory,
        now=app.clock(),
        dry_run=dry_run,
    )
    for line in report.lines():
        click.echo(line)


@cli.group()
def quarantine() -> None:
    """Mails that could not become tickets."""


@quarantine.command("list")
@click.pass_context
def quarantine_list(ctx: click.Context) -> None:
    """Quarantined mails with stage and reason."""
    from mailbridge import views

    app = _app(ctx.parent)
    click.echo(views.quarantine_table(app))


@quarantine.command("show")
@click.argument("quarantine_id", type=int)
@click.pass_context
def quarantine_show(ctx: click.Context, quarantine_id: int) -> None:
    """A quarantined mail: stage, reason, where its raw bytes are, its headers."""
    from mailbridge import views

    app = _app(ctx.parent)
    out = views.quarantine_detail(app, quarantine_id)
    if out is None:
        raise click.ClickException(f"no quarantined mail #{quarantine_id}")
    click.echo(out)


@quarantine.command("requeue")
@click.argument("quarantine_id", type=int, required=False)
@click.option("--all", "all_", is_flag=True, help="Every open quarantined mail.")
@click.option("--stage", help="With --all: only those refused at this stage (size, parse, validate, a step).")
@click.pass_context
def quarantine_requeue(ctx: click.Context, quarantine_id: int | None, all_: bool, stage: str | None) -> None:
    """Run quarantined mail through the pipeline again, once its cause is fixed."""
    from mailbridge.store import repositories as repo
    from mailbridge.store.db import session_scope

    if (quarantine_id is None) == (not all_):
        raise click.UsageError("name one quarantined mail (ID) or --all")
    if stage is not None and not all_:
        raise click.UsageError("--stage goes with --all")
    app = _app(ctx.parent)
    if all_:
        with session_scope(app.session_factory) as s:
            ids = repo.open_quarantine_ids(s, stage)
    else:
        ids = [quarantine_id]
    failed = 0
    for qid in ids:
        try:
            disposition = app.requeue(qid)
        except (LookupError, ValueError) as e:
            raise click.ClickException(str(e)) from None
        failed += disposition == "quarantined"
        click.echo(f"#{qid}: {disposition}")
    app.close()
    if not ids:
        click.echo("nothing to requeue")
    if failed:
        raise click.ClickException(f"{failed} of {len(ids)} quarantined again (mailbridge quarantine show ID)")


@quarantine.command("discard")
@click.argument("quarantine_id", type=int)
@click.pass_context
def quarantine_discard(ctx: click.Context, quarantine_id: int) -> None:
    """Mark a quarantined mail as dealt with, without processing it (its raw bytes are kept)."""
    app = _app(ctx.parent)
    try:
        app.discard(quarantine_id)
    except (LookupError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"#{quarantine_id}: discarded")


@quarantine.command("export")
@click.argument("quarantine_id", type=int)
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), required=True, help="The .eml file.")
@click.pass_context
def quarantine_export(ctx: click.Context, quarantine_id: int, output: str) -> None:
    """Write a quarantined mail's raw bytes, exactly as received, to a file."""
    from mailbridge.store import repositories as repo
    from mailbridge.store.db import session_scope

    app = _app(ctx.parent)
    with session_scope(app.session_factory) as s:
        q = repo.quarantine_row(s, quarantine_id)
        if q is None:
            raise click.ClickException(f"no quarantined mail #{quarantine_id}")
        path = q.raw.path
    data = app.raw_store.get(path)
    Path(output).write_bytes(data)
    click.echo(f"#{quarantine_id}: {len(data)} bytes written to {output}")


@cli.group()
def noise() -> None:
    """Auto-replies and bounces that belong to no case, and failing addresses."""


@noise.command("list")
@click.option("--limit", type=int, default=100, show_default=True, help="Show at most this many of each.")
@click.pass_context
def noise_list(ctx: click.Context, limit: int) -> None:
    """Automatic mails kept for the operator (not cases), and addresses our mail bounced from."""
    from mailbridge import views

    app = _app(ctx.parent)
    click.echo(views.noise_table(app, limit))


@cli.group()
def suppressions() -> None:
    """Addresses no automatic mail goes to after a hard bounce, and failing ones."""


@suppressions.command("list")
@click.pass_context
def suppressions_list(ctx: click.Context) -> None:
    """Suppressed and failing addresses: state, since, until, bounces, last status and reason, last case."""
    from mailbridge import views

    app = _app(ctx.parent)
    click.echo(views.suppressions_table(app))


@suppressions.command("lift")
@click.argument("address")
@click.option("--by", default=None, help="Who lifts it, for the case history (default: the login name).")
@click.pass_context
def suppressions_lift(ctx: click.Context, address: str, by: str | None) -> None:
    """End the suppression of ADDRESS now: the next automatic mail to it goes out. Recorded on the
    address's last case; an address that is not suppressed is an error (exit 1)."""
    import getpass

    from mailbridge import views
    from mailbridge.outbound.guard import AutoMailGuard, NotSuppressed
    from mailbridge.store.db import session_scope

    app = _app(ctx.parent)
    who = by or getpass.getuser()
    try:
        with session_scope(app.session_factory) as s:
            before = AutoMailGuard(app.settings.auto_mail).lift(s, address, by=who, now=app.clock())
    except NotSuppressed as e:
        click.echo(f"mailbridge: {e}", err=True)
        sys.exit(1)
    on = f"; recorded on case {before.last_case}" if before.last_case else ""
    until = views.shown_time(app, before.suppressed_until)
    click.echo(f"{before.address}: suppression lifted by {who} (was until {until}){on}")


@cli.group()
def privacy() -> None:
    """Data protection: a person's data on request (export), erasure, legal holds, retention."""


def _actor(by: str | None) -> str:
    import getpass

    return by or getpass.getuser()


@privacy.command("export")
@click.argument("address")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True, help="The .zip file.")
@click.option("--language", type=click.Choice(["de", "en"]), default="en", show_default=True, help="Of index.html.")
@click.option("--by", default=None, help="Who asks, for the audit log (default: the login name).")
@click.pass_context
def privacy_export(ctx: click.Context, address: str, output: Path, language: str, by: str | None) -> None:
    """Everything held about ADDRESS (an access request): its cases, messages (text and the mails as
    .eml), attachments, history, suppression entries, as index.html and data.json in a zip."""
    app = _app(ctx.parent)
    try:
        data = app.exporter().export(address, output, language=language, by=_actor(by))
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    finally:
        app.close()
    n = sum(len(c["messages"]) for c in data["cases"])
    click.echo(f"{output}: {len(data['cases'])} cases, {n} messages, {len(data['quarantined'])} quarantined mails")


@privacy.command("erase")
@click.argument("address")
@click.option("--dry-run", is_flag=True, help="List what would go; change nothing.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--by", default=None, help="Who erases, for the audit log (default: the login name).")
@click.pass_context
def privacy_erase(ctx: click.Context, address: str, dry_run: bool, yes: bool, by: str | None) -> None:
    """Remove or pseudonymise ADDRESS everywhere: its cases' content, the mails it wrote, raw mails,
    attachments, its address in other people's mails, outbox, suppression, the IMAP Processed and
    Quarantine folders. Case numbers and SLA figures stay; cases under legal hold are skipped.
    Asks first unless --yes; it cannot be undone (try --dry-run)."""
    if not (dry_run or yes):
        click.confirm(f"Erase {address} everywhere? This cannot be undone", abort=True)
    app = _app(ctx.parent)
    try:
        report = app.eraser().erase(address, dry_run=dry_run, by=_actor(by))
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    finally:
        app.close()
    for line in report.lines():
        click.echo(line)
    if report.imap_errors:
        sys.exit(1)


@privacy.command("hold")
@click.argument("case_number")
@click.option("--release", is_flag=True, help="End the hold.")
@click.option("--reason", default="legal hold", show_default=True)
@click.option("--by", default=None, help="Who holds, for the audit log (default: the login name).")
@click.pass_context
def privacy_hold(ctx: click.Context, case_number: str, release: bool, reason: str, by: str | None) -> None:
    """Put CASE_NUMBER under legal hold (retention and erasure leave it alone), or --release it."""
    from mailbridge.store import privacy_queries as pq
    from mailbridge.store.db import session_scope

    app = _app(ctx.parent)
    who = _actor(by)
    try:
        with session_scope(app.session_factory) as s:
            tid = pq.ticket_id_of(s, case_number)
            if tid is None:
                raise click.ClickException(f"no ticket {case_number}")
            changed = pq.release(s, tid) if release else pq.hold(s, tid, reason, who, app.clock())
            if changed:
                pq.audit(s, "release" if release else "hold", who, app.clock(), case=case_number.upper(), reason=reason)
    finally:
        app.close()
    if release:
        click.echo(f"{case_number.upper()}: hold released" if changed else f"{case_number.upper()}: was not held")
    else:
        click.echo(f"{case_number.upper()}: held ({reason})" if changed else f"{case_number.upper()}: held already")


@privacy.command("holds")
@click.pass_context
def privacy_holds(ctx: click.Context) -> None:
    """The cases under legal hold."""
    from mailbridge import views
    from mailbridge.store import privacy_queries as pq
    from mailbridge.store.db import session_scope

    app = _app(ctx.parent)
    try:
        with session_scope(app.session_factory) as s:
            rows = pq.holds(s)
        for case, reason, by, since in rows:
            click.echo(f"{case}  since {views.shown_time(app, since)}  by {by}: {reason}")
        if not rows:
            click.echo("no case is held")
    finally:
        app.close()


@privacy.command("retention")
@click.option("--dry-run", is_flag=True, help="Count what would go; change nothing.")
@click.pass_context
def privacy_retention(ctx: click.Context, dry_run: bool) -> None:
    """Apply [retention] now (the service does it daily): what was removed, per kind."""
    app = _app(ctx.parent)
    if not app.settings.retention.enabled:
        click.echo("no [retention] period is set: everything is kept")
        app.close()
        return
    try:
        report = app.retention().run(dry_run=dry_run)
    finally:
        app.close()
    for line in report.lines():
        click.echo(line)
    if report.errors:
        sys.exit(1)


@cli.command("import")
@click.argument("kind", type=click.Choice(["mbox", "maildir"]))
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--queue", default=None, help="Put every mail into this queue (default: routed by recipient).")
@click.option(
    "--archive",
    is_flag=True,
    help="Old mail: keep its dates, send nothing, start no SLA clocks, close the quiet cases.",
)
@click.option(
    "--close-older-than",
    type=click.IntRange(min=0),
    default=None,
    metavar="DAYS",
    help="With --archive: close the cases whose last message is older than this (default 30).",
)
@click.pass_context
def import_mail(
    ctx: click.Context, kind: str, path: Path, queue: str | None, archive: bool, close_older_than: int | None
) -> None:
    """Import the mails of an mbox file or a Maildir at PATH through the pipeline, oldest first.

    Without --archive they are processed as if they had just arrived (acknowledgements go out).
    Ctrl-C stops after the current mail; running the same command again continues where it stopped."""
    from mailbridge.importer import Importer, Source, SourceError, held_interrupts, progress_for_output
    from mailbridge.ingest.pipeline import InfrastructureError

    if close_older_than is not None and not archive:
        raise click.UsageError("--close-older-than goes with --archive")
    app = _app(ctx.parent)
    if queue is not None and queue not in {q.name for q in app.settings.queues}:
        names = ", ".join(q.name for q in app.settings.queues)
        raise click.UsageError(f"no queue {queue!r} (queues: {names})")
    try:
        source = Source(kind, path)
    except SourceError as e:
        click.echo(f"mailbridge: {e}", err=True)
        sys.exit(1)
    try:
        importer = Importer(
            app, source, archive=archive, queue=queue, close_older_than=close_older_than, progress=progress_for_output()
        )
        with held_interrupts() as interrupted:
            report = importer.run(interrupted)
    except InfrastructureError as e:
        click.echo(f"mailbridge: database unavailable ({e}); run the same command again to continue", err=True)
        sys.exit(1)
    finally:
        source.close()
        app.close()
    for line in report.lines():
        click.echo(line)
    if report.stopped_after is not None:
        sys.exit(130)


@cli.command()
@click.option(
    "--keep",
    type=click.Path(path_type=Path),
    default=None,
    help="Keep the demo's database and var/ in this directory instead of a temporary one.",
)
def demo(keep: Path | None) -> None:
    """Run everything on this machine: IMAP and SMTP servers, sample mails, the service."""
    from mailbridge.demo import run_demo

    sys.exit(run_demo(keep))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help='Print a JSON document (with "status": ok|warning|critical).')
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Health of the running desk: accounts (connected, IDLE or polling, last fetch, error and since
    when, mails waiting), the outbox (pending, retrying, failed, oldest pending mail, last SMTP
    error), open quarantined mails, the jobs' last runs, the schema revision. Times in the
    calendar's zone ([alerts] timezone).

    \b
    Exit codes (Nagios style):
      0 OK
      1 WARNING: the service never ran here; an account failing for less than
        alerts.account_failing_minutes or never fetched; SMTP failing for less than
        alerts.outbox_failing_minutes; mails failed for good within alerts.repeat_minutes;
        open quarantined mails; a job whose last run failed; an OAuth client secret expiring
        within alerts.secret_expiry_warning_days; the schema behind the newest
      2 CRITICAL: an account's login refused or its TLS certificate untrusted; an OAuth2 token
        that cannot be renewed without a person (reauth_required); an expired client secret; an account
        failing longer than alerts.account_failing_minutes; SMTP failing, or a mail being
        retried, longer than alerts.outbox_failing_minutes; an account the service has not
        reported on for twice its poll (or retry) interval plus two minutes (no mailbridge run
        fetches it); no schema
    """
    import json

    from mailbridge import status as health_status

    app = _app(ctx)
    try:
        st = health_status.collect(app)
    finally:
        app.close()
    if as_json:
        click.echo(json.dumps(health_status.as_json(st), indent=2, ensure_ascii=False))
    else:
        click.echo(health_status.render(st), nl=False)
    sys.exit(st.exit_code)


@cli.group()
def report() -> None:
    """Reports for support leads: open items, processing history, SLA compliance, volume; on the
    terminal, or as CSV, XLSX or HTML (--format, --output)."""


def _report_options(f):
    """The options every report takes: format, output file, CSV dialect."""
    f = click.option(
        "--bom", is_flag=True, help="CSV: start with a UTF-8 byte order mark (Excel needs it to read UTF-8)."
    )(f)
    f = click.option(
        "--csv-delimiter",
        type=click.Choice([",", ";", "tab"]),
        default=",",
        show_default=True,
        help="CSV: the field separator; ';' also writes decimal commas (German Excel).",
    )(f)
    f = click.option(
        "--output",
        "-o",
        type=click.Path(dir_okay=False, writable=True, path_type=Path),
        default=None,
        help="Write the report to this file instead of printing it.",
    )(f)
    f = click.option(
        "--format",
        "fmt",
        type=click.Choice(["text", "csv", "xlsx", "html"]),
        default="text",
        show_default=True,
        help="text: a table fitting the terminal; csv; xlsx (typed cells); html (self-contained, with charts).",
    )(f)
    return f


def _filter_options(f):
    f = click.option("--severity", default=None, help="Only cases of this severity level.")(f)
    f = click.option("--organisation", default=None, help="Only cases of this organisation.")(f)
    f = click.option("--queue", default=None, help="Only cases of this queue.")(f)
    return f


def _period_options(f):
    f = click.option(
        "--to",
        "to_",
        type=click.DateTime(["%Y-%m-%d"]),
        default=None,
        help="The last day (included), in the calendar's zone (default: today).",
    )(f)
    f = click.option(
        "--from",
        "from_",
        type=click.DateTime(["%Y-%m-%d"]),
        default=None,
        help="The first day, in the calendar's zone (default: 27 days before --to).",
    )(f)
    return f


def _run_report(ctx: click.Context, name: str, params: dict, fmt: str, output: Path | None, delimiter: str, bom: bool):
    from mailbridge.reports import ReportError, render
    from mailbridge.views import terminal_width

    params = {k: v for k, v in params.items() if v not in (None, "")}
    for k in ("from", "to"):
        if k in params:
            params[k] = params[k].date()
    params["csv_delimiter"] = "\t" if delimiter == "tab" else delimiter
    params["bom"] = bom
    if fmt == "xlsx" and output is None and sys.stdout.isatty():
        raise click.UsageError("--format xlsx writes a binary file: give --output FILE")
    app = _app(ctx.parent)
    try:
        out = render(app, name, params, fmt, now=app.clock(), width=terminal_width())
    except ReportError as e:
        click.echo(f"mailbridge: {e}", err=True)
        sys.exit(2)
    finally:
        app.close()
    if output is not None:
        output.write_bytes(out.data)
        click.echo(f"{out.summary}; {len(out.data)} bytes written to {output}")
    else:
        click.echo(out.data, nl=False)  # bytes: written as they are


@report.command("open-items")
@_filter_options
@_report_options
@click.pass_context
def report_open_items(ctx, queue, organisation, severity, fmt, output, csv_delimiter, bom) -> None:
    """Every open case (new, open, pending) across queues in working order: age in business and
    calendar hours, status, severity, assignee, contract/organisation, SLA state (on time, at risk,
    overdue by how much), the next deadline, the last customer and agent mail."""
    params = {"queue": queue, "organisation": organisation, "severity": severity}
    _run_report(ctx, "open-items", params, fmt, output, csv_delimiter, bom)


@report.command("history")
@click.option("--case", "case_number", default=None, help="One case's whole history.")
@_period_options
@click.option("--queue", default=None, help="Only cases of this queue.")
@click.option("--organisation", default=None, help="Only cases of this organisation.")
@_report_options
@click.pass_context
def report_history(ctx, case_number, from_, to_, queue, organisation, fmt, output, csv_delimiter, bom) -> None:
    """The processing history: every event and mail in order with who, what, when and which mail;
    of one case (--case) or of all cases in a period (--from/--to)."""
    if case_number and (from_ or to_):
        raise click.UsageError("--case shows a whole case: leave out --from/--to")
    params = {"case": case_number, "from": from_, "to": to_, "queue": queue, "organisation": organisation}
    _run_report(ctx, "history", params, fmt, output, csv_delimiter, bom)


@report.command("sla")
@_period_options
@click.option("--by", type=click.Choice(["queue", "severity", "organisation", "agent"]), default=None)
@click.option("--period", type=click.Choice(["week", "month"]), default=None, help="A row per week or month.")
@_filter_options
@_report_options
@click.pass_context
def report_sla(ctx, from_, to_, by, period, queue, organisation, severity, fmt, output, csv_delimiter, bom) -> None:
    """SLA compliance of the cases opened in the period: opened, first response and resolution
    met/missed (counts and %), first-response and resolution time in business hours (median, p90),
    the backlog at the end of each period."""
    params = {
        "from": from_,
        "to": to_,
        "by": by,
        "period": period,
        "queue": queue,
        "organisation": organisation,
        "severity": severity,
    }
    _run_report(ctx, "sla", params, fmt, output, csv_delimiter, bom)


@report.command("volume")
@_period_options
@click.option("--period", type=click.Choice(["day", "week"]), default="day", show_default=True)
@_filter_options
@_report_options
@click.pass_context
def report_volume(ctx, from_, to_, period, queue, organisation, severity, fmt, output, csv_delimiter, bom) -> None:
    """Cases opened per day or week by queue, the reopen rate, and cases linked to a closed one."""
    params = {"from": from_, "to": to_, "period": period, "queue": queue, "organisation": organisation}
    params["severity"] = severity
    _run_report(ctx, "volume", params, fmt, output, csv_delimiter, bom)


@cli.group()
def auth() -> None:
    """OAuth2 logins (Microsoft 365, Google Workspace, any OAuth2 server): sign in, state, test."""


@auth.command("keygen")
def auth_keygen() -> None:
    """Print a new key for [tokens] (Fernet); put it where tokens.key_env or tokens.key_file points."""
    from cryptography.fernet import Fernet

    click.echo(Fernet.generate_key().decode())


def _oauth_source(app, name: str):
    sources = app.token_sources
    if name not in sources:
        logins = ", ".join(sources) or "none"
        click.echo(f"mailbridge: {name!r} has no OAuth2 login (OAuth2 logins: {logins})", err=True)
        sys.exit(EXIT_CONFIG)
    return sources[name]


@auth.command("login")
@click.argument("login")
@click.pass_context
def auth_login(ctx: click.Context, login: str) -> None:
    """Sign in for LOGIN (an account's name, or "smtp" for [smtp.oauth2]).

    With flow device_code it prints a URL and a code: open the URL on any device, enter the code and
    sign in as the mailbox's user; the command waits, then stores the token (encrypted, with its
    refresh token) for every instance. No redirect URL has to be reachable. Other flows need no
    sign-in: the command fetches a token to show that the app's credentials work.
    Exit 0: signed in / a token was issued; 1: refused (the code and what to do are printed).
    """
    from mailbridge.oauth.faults import TokenError
    from mailbridge.settings import OAuthFlow

    app = _app(ctx)
    try:
        app.upgrade_db()
        source = _oauth_source(app, login)
        try:
            if source.settings.flow is not OAuthFlow.DEVICE_CODE:
                token = source.token(force=True)
                click.echo(
                    f"{login}: flow {source.settings.flow.value} needs no sign-in; a token was issued, "
                    f"valid until {token.expires_at:%Y-%m-%d %H:%M:%S %Z}"
                )
                return
            prompt = source.start_login()
            click.echo(prompt.message)
            click.echo(f"URL:  {prompt.verification_uri}")
            click.echo(f"Code: {prompt.user_code}")
            click.echo(f"Waiting for the sign-in (at most {prompt.expires_in // 60} minutes) …")
            token = source.finish_login(prompt)
        except TokenError as e:
            click.echo(f"{login}: sign-in failed: {e}", err=True)
            click.echo(f"  what to do: {e.hint}", err=True)
            sys.exit(1)
        click.echo(
            f"{login}: signed in; token stored (valid until {token.expires_at:%Y-%m-%d %H:%M:%S %Z}, renewed "
            "automatically with the stored refresh token)"
        )
    finally:
        app.close()


@auth.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document.")
@click.pass_context
def auth_status(ctx: click.Context, as_json: bool) -> None:
    """Per account (and SMTP): how it logs in, the token's expiry, the last renewal and the last error.

    \b
    Exit codes:
      0 every login is fine
      1 a login needs attention soon: a client secret expiring within
        alerts.secret_expiry_warning_days, a renewal failing for a moment (the endpoint away),
        no token yet for a flow that needs no person (the service fetches one at its start)
      2 a login needs a person now: reauth_required (consent revoked, password changed, secret
        expired), no sign-in yet for flow device_code, the secret expired, no schema
    """
    import json

    from mailbridge import authstatus

    app = _app(ctx)
    try:
        report = authstatus.collect(app)
    finally:
        app.close()
    if as_json:
        click.echo(json.dumps(authstatus.as_json(report), indent=2, ensure_ascii=False))
    else:
        click.echo(authstatus.render(report), nl=False)
    sys.exit(report.level.exit_code)


@auth.command("test")
@click.argument("login")
@click.pass_context
def auth_test(ctx: click.Context, login: str) -> None:
    """Log in to IMAP (account LOGIN) and to SMTP as the service would, and say what works.

    LOGIN is an account's name (or "smtp"). SMTP is tested with its own configured login. Exit 0
    when everything tried works, 1 otherwise.
    """
    from mailbridge import authstatus

    app = _app(ctx)
    try:
        names = {a.name for a in app.settings.accounts} | set(app.token_sources)
        if login not in names:
            click.echo(f"mailbridge: no account or OAuth2 login named {login!r}", err=True)
            sys.exit(EXIT_CONFIG)
        app.upgrade_db()
        results = authstatus.test_logins(app, login)
    finally:
        app.close()
    for what, ok, text in results:
        click.echo(f"{what}: {'OK' if ok else 'FAILED'}: {text}")
    sys.exit(0 if all(ok for _, ok, _ in results) else 1)


def main() -> None:
    cli(prog_name="mailbridge")


if __name__ == "__main__":  # pragma: no cover
    main()
