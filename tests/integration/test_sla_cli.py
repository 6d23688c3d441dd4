"""The SLA commands over cases made by real mail (IMAP in, SMTP out, a real database): `sla explain`
shows how each deadline was counted (days, weekends, holidays, pauses), `sla recompute` applies a
changed configuration (and `--dry-run` does not), `tickets list --queue` shows a queue in working
order (contract, severity, arrival; seed 003) — on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner

from mailbridge.app import App
from mailbridge.cli import cli
from mailbridge.settings import load_settings
from tests.integration.conversation_support import (
    AGENT,
    AUTHSERV,
    CUSTOMER,
    NRW_CALENDAR,
    QUEUE_EXTRA,
    TEAM,
    Desk,
    make_desk,
    to,
)
from tests.support import make_mail, write_config

BERLIN = ZoneInfo("Europe/Berlin")
OTHER = ("Olga Other", "olga@other.example")
DAY_ROW = re.compile(r"^    (Mon|Tue|Wed|Thu|Fri|Sat|Sun) \d{4}-\d\d-\d\d ")
SCHEME = 'calendar = "nrw"\nseverity_scheme = "std"\ncontract_required = true\n'


def sla(first_response: str = "business_hours = 4", other_contract: str | None = None) -> str:
    """Calendar nrw (Mon-Fri 08-17, NRW holidays), levels 1 and 3, Kunde GmbH with a contract and
    Other AG with one only when ``other_contract`` is given."""
    other = f'contract = "{other_contract}"\n' if other_contract else ""
    return f"""
{NRW_CALENDAR}
[[severity_schemes]]
name = "std"
default = "3"
[[severity_schemes.levels]]
key = "1"
label_de = "Fehlerklasse 1"
label_en = "Severity 1"
words = ["Systemstillstand", "production down"]
first_response = {{ {first_response} }}
[[severity_schemes.levels]]
key = "3"
label_de = "Fehlerklasse 3"
label_en = "Severity 3"
first_response = {{ business_days = 2 }}

[[organisations]]
name = "Kunde GmbH"
domains = ["kunde.example"]
contract = "Wartungsvertrag"

[[organisations]]
name = "Other AG"
domains = ["other.example"]
{other}"""


@pytest.fixture
def desk(tmp_path, imap_server, smtp_sink, db_url, imap_env):
    d = make_desk(tmp_path, imap_server, smtp_sink, db_url, queue_extra=QUEUE_EXTRA + SCHEME, conversations=sla())
    yield d
    d.app.close()


def _run(desk: Desk, *args, config=None):
    """The command as an operator runs it, at the desk's clock."""
    result = CliRunner().invoke(
        cli,
        ["--config", str(config or desk.app.settings.source), *args],
        obj={"clock": desk.clock},
        catch_exceptions=False,
        env={"COLUMNS": "200"},  # a wide terminal: the whole of each row
    )
    return result.exit_code, result.stdout


def _open(desk: Desk, at: datetime, subject: str, sender=CUSTOMER, body="Bitte um Hilfe.") -> tuple[str, object]:
    desk.clock.now = at.astimezone(UTC)
    sent = desk.deliver(make_mail(subject=subject, body=body, sender=sender))
    (ack,) = to(sent, sender[1])
    notes = to(sent, TEAM)
    return ack.header("Subject").split("]")[0].lstrip("["), notes[0] if notes else None


def _day_rows(out: str) -> list[str]:
    """The per-day lines of an explanation, blanks collapsed."""
    return [" ".join(line.split()) for line in out.splitlines() if DAY_ROW.match(line)]


def _agent_reply(note, body: str) -> bytes:
    nid = note.header("Message-ID")
    return make_mail(
        subject=f"AW: {note.header('Subject')}",
        body=body,
        sender=AGENT,
        headers={"In-Reply-To": nid, "References": nid},
    )


def test_explain_counts_friday_weekend_and_monday(desk):
    """A severity-1 case on Friday 15:00 with 4 business hours: 2:00 on Friday, Saturday and Sunday
    skipped as weekend, 2:00 on Monday, due Monday 10:00; running before, overdue after; an unknown
    case exits 1."""
    case, _ = _open(desk, datetime(2026, 11, 20, 15, 0, tzinfo=BERLIN), "Systemstillstand Linie 3")
    desk.clock.now = datetime(2026, 11, 23, 9, 0, tzinfo=BERLIN).astimezone(UTC)
    code, out = _run(desk, "sla", "explain", case.lower())
    assert code == 0, out
    assert f"{case}  Systemstillstand Linie 3" in out
    assert "queue support, status new, created Fri 2026-11-20 15:00 CET" in out
    assert "severity:  1 (Severity 1 / Fehlerklasse 1)" in out
    assert 'set to 1 by detection ("systemstillstand")' in out.lower()
    assert "organisation Kunde GmbH, contract Wartungsvertrag" in out
    assert "nrw, named by queue support: Europe/Berlin, public holidays DE-NW, Mon-Fri 08:00-17:00, Sat-Sun closed" in (
        out
    )
    lines = out.splitlines()
    first = lines.index("first response: 4 business hours from the creation, Fri 2026-11-20 15:00 CET")
    days = [" ".join(line.split()) for line in lines[first + 1 : first + 5]]
    assert days == [
        "Fri 2026-11-20 15:00-17:00 2:00",
        "Sat 2026-11-21 - 0:00 weekend",
        "Sun 2026-11-22 - 0:00 weekend",
        "Mon 2026-11-23 08:00-10:00 2:00",
    ]
    assert "4:00 counted = 4 business hours" in lines[first + 5]
    assert lines[first + 6] == "  due Mon 2026-11-23 10:00 CET (as stored)"
    assert lines[first + 7] == "  running: 1:00 business time (1:00 on the clock) left at now"
    assert "resolution: the level has no resolution target" in out
    assert "today's configuration gives" not in out

    desk.clock.now = datetime(2026, 11, 23, 11, 30, tzinfo=BERLIN).astimezone(UTC)
    _, out = _run(desk, "sla", "explain", case)
    assert "OVERDUE by 1:30 business time (1:30 on the clock) at now" in out

    code, _ = _run(desk, "sla", "explain", "C9999999")
    assert code == 1


def test_explain_names_holidays_and_shows_a_met_first_response(desk):
    """Two business days from Wednesday 23 December: Christmas Day and the Second Day of Christmas
    are named holidays, Sunday is weekend, the second business day is Monday 28 December; an
    answer on Monday shows as met in time."""
    case, note = _open(desk, datetime(2026, 12, 23, 15, 0, tzinfo=BERLIN), "Frage zur Lizenz")
    desk.clock.now = datetime(2026, 12, 28, 9, 0, tzinfo=BERLIN).astimezone(UTC)
    desk.deliver(_agent_reply(note, "Guten Tag,\n\ndie Lizenz verlängern Sie im Portal.\n\nAnna"))
    assert desk.ticket(case).first_response_at == desk.clock.now
    code, out = _run(desk, "sla", "explain", case)
    assert code == 0, out
    assert "first response: 2 business days from the creation, Wed 2026-12-23 15:00 CET" in out
    rows = _day_rows(out)
    assert rows[:6] == [
        "Wed 2026-12-23 15:00-17:00 2:00 start",
        "Thu 2026-12-24 08:00-17:00 9:00 business day 1",
        "Fri 2026-12-25 - 0:00 public holiday: Christmas Day",
        "Sat 2026-12-26 - 0:00 public holiday: Second Day of Christmas",
        "Sun 2026-12-27 - 0:00 weekend",
        "Mon 2026-12-28 08:00-15:00 7:00 business day 2",
    ]
    assert "due Mon 2026-12-28 15:00 CET (as stored)" in out
    assert "met: answered Mon 2026-12-28 09:00 CET, in time (6:00 business time before the due time)" in out


def test_explain_shows_a_pause_and_recompute_leaves_an_unchanged_config_alone(desk):
    """An agent's #pending (no answer yet) pauses the case on Monday 10:00; the customer's reply on
    Tuesday 10:00 resumes it after 9 business hours, which move the first response from Monday 13:00
    to Tuesday 13:00. Explain lists the pause and the paused hours on the days; a recompute with the
    same configuration changes nothing (the pause is replayed, not lost)."""
    case, note = _open(desk, datetime(2026, 11, 23, 9, 0, tzinfo=BERLIN), "Systemstillstand Presse 2")
    assert desk.ticket(case).first_response_due == datetime(2026, 11, 23, 13, 0, tzinfo=BERLIN)
    desk.clock.now = datetime(2026, 11, 23, 10, 0, tzinfo=BERLIN).astimezone(UTC)
    desk.deliver(_agent_reply(note, "#pending"))
    t = desk.ticket(case)
    assert t.status == "pending" and t.paused_at == desk.clock.now and t.first_response_at is None

    desk.clock.now = datetime(2026, 11, 23, 15, 0, tzinfo=BERLIN).astimezone(UTC)
    _, out = _run(desk, "sla", "explain", case)
    assert "since Mon 2026-11-23 10:00 CET: still paused" in out
    assert "paused since Mon 2026-11-23 10:00 CET (the case waits for the customer)" in out

    desk.clock.now = datetime(2026, 11, 24, 10, 0, tzinfo=BERLIN).astimezone(UTC)
    desk.deliver(make_mail(subject=f"AW: [{case}] Systemstillstand Presse 2", body="Die Logdatei ist anbei."))
    t = desk.ticket(case)
    assert t.status == "open" and t.paused_at is None and t.paused_seconds == 9 * 3600
    assert t.first_response_due == datetime(2026, 11, 24, 13, 0, tzinfo=BERLIN)

    desk.clock.now = datetime(2026, 11, 24, 11, 0, tzinfo=BERLIN).astimezone(UTC)
    code, out = _run(desk, "sla", "explain", case)
    assert code == 0, out
    assert "Mon 2026-11-23 10:00 CET → Tue 2026-11-24 10:00 CET: 9:00 business time paused; moved first response" in out
    assert "paused Mon 2026-11-23 10:00 CET → Tue 2026-11-24 10:00 CET: moved the due time on by 9:00" in out
    rows = _day_rows(out)
    assert rows[:2] == [
        "Mon 2026-11-23 09:00-10:00 1:00 paused 7:00",
        "Tue 2026-11-24 10:00-13:00 3:00 paused 2:00",
    ]
    assert "4:00 counted = 4 business hours" in out
    assert "due Tue 2026-11-24 13:00 CET (as stored)" in out
    assert "running: 2:00 business time (2:00 on the clock) left at now" in out
    assert "today's configuration gives" not in out

    code, out = _run(desk, "sla", "recompute")
    assert code == 0 and out.splitlines() == ["0 of 1 active case changed"], out
    assert "sla_recomputed" not in [k for k, _ in desk.events(case)]
    assert desk.ticket(case).first_response_due == datetime(2026, 11, 24, 13, 0, tzinfo=BERLIN)


def test_recompute_applies_a_changed_config_and_dry_run_changes_nothing(desk, tmp_path, imap_server, smtp_sink):
    """A second config gives severity 1 six business hours and Other AG a contract: --dry-run lists
    the changes and writes nothing; the real run moves the due time (Monday 10:00 → 12:00), gives
    Other AG's case its contract and deadline, records sla_recomputed with old and new values and
    stores the escalation job's next visit; a solved case is left alone; a second run finds
    nothing to do."""
    kunde, _ = _open(desk, datetime(2026, 11, 20, 15, 0, tzinfo=BERLIN), "Systemstillstand Linie 3")
    other, _ = _open(desk, datetime(2026, 11, 20, 15, 5, tzinfo=BERLIN), "Systemstillstand Halle 2", sender=OTHER)
    done, done_note = _open(desk, datetime(2026, 11, 20, 15, 10, tzinfo=BERLIN), "Systemstillstand Lager")
    desk.deliver(_agent_reply(done_note, "#solve\n\nDas Lager läuft wieder."))
    assert desk.ticket(done).status == "solved"
    t = desk.ticket(other)
    assert (t.organisation, t.contract, t.first_response_due) == ("Other AG", None, None)
    before = desk.ticket(kunde)
    assert before.first_response_due == datetime(2026, 11, 23, 10, 0, tzinfo=BERLIN)
    done_due = desk.ticket(done).first_response_due

    second = write_config(
        tmp_path / "second.toml",
        imap_port=imap_server.port,
        imap_user=imap_server.user,
        smtp_port=smtp_sink.port,
        db_url=desk.app.settings.database_url,
        var_dir=tmp_path / "var",
        queue_extra=QUEUE_EXTRA + SCHEME,
        extra=f'[conversations]\ntrusted_authserv_id = "{AUTHSERV}"\n'
        + sla(first_response="business_hours = 6", other_contract="Basis"),
    )
    desk.clock.now = datetime(2026, 11, 23, 8, 30, tzinfo=BERLIN).astimezone(UTC)

    code, out = _run(desk, "sla", "recompute", "--dry-run", config=second)
    assert code == 0, out
    lines = out.splitlines()
    assert lines[-1] == "2 of 2 active cases would change (dry run: nothing was written)"
    assert f"{kunde}  first_response_due Mon 2026-11-23 10:00 CET → Mon 2026-11-23 12:00 CET" in lines
    assert f"{other}  contract - → Basis; first_response_due - → Mon 2026-11-23 12:05 CET" in lines
    assert desk.ticket(kunde).first_response_due == before.first_response_due
    assert desk.ticket(other).contract is None
    assert "sla_recomputed" not in [k for k, _ in desk.events(kunde)]

    code, out = _run(desk, "sla", "recompute", config=second)
    assert code == 0, out
    assert out.splitlines()[-1] == "2 of 2 active cases changed"
    t = desk.ticket(kunde)
    assert t.first_response_due == datetime(2026, 11, 23, 12, 0, tzinfo=BERLIN)
    # The first stage of the default ladder (75 % of 6 business hours: Monday 10:30) is next.
    assert t.next_escalation_at == datetime(2026, 11, 23, 10, 30, tzinfo=BERLIN)
    (ev,) = [d for k, d in desk.events(kunde) if k == "sla_recomputed"]
    assert ev == {
        "old": {"first_response_due": before.first_response_due.isoformat()},
        "new": {"first_response_due": datetime(2026, 11, 23, 11, 0, tzinfo=UTC).isoformat()},
    }
    t = desk.ticket(other)
    assert (t.contract, t.first_response_due) == ("Basis", datetime(2026, 11, 23, 12, 5, tzinfo=BERLIN))
    assert t.next_escalation_at is not None
    assert desk.ticket(done).first_response_due == done_due
    assert "sla_recomputed" not in [k for k, _ in desk.events(done)]

    code, out = _run(desk, "sla", "explain", kunde, config=second)
    assert "first response: 6 business hours from the creation" in out and "today's configuration" not in out
    code, out = _run(desk, "sla", "explain", kunde)  # the first config no longer matches the case
    assert "note: today's configuration gives Mon 2026-11-23 10:00 CET; `mailbridge sla recompute` applies it" in out

    code, out = _run(desk, "sla", "recompute", config=second)
    assert out.splitlines() == ["0 of 2 active cases changed"]


def test_tickets_list_orders_a_queue_by_contract_severity_and_arrival(desk, tmp_path, imap_server, smtp_sink):
    """seed 003: within a queue cases with a contract come first, then by severity (most severe
    first, none last), then by arrival; solved cases are not listed unless asked for. A case from
    before the queue had a severity scheme has none. Without --queue the list stays newest first."""
    # One case from before the queue had a scheme: a desk on the same database without one.
    early = write_config(
        tmp_path / "early.toml",
        imap_port=imap_server.port,
        imap_user=imap_server.user,
        smtp_port=smtp_sink.port,
        db_url=desk.app.settings.database_url,
        var_dir=tmp_path / "var",
        queue_extra=QUEUE_EXTRA,
        extra=f'[conversations]\ntrusted_authserv_id = "{AUTHSERV}"\n' + sla(),
    )
    early_app = App(load_settings(early), clock=desk.clock)
    try:
        unrated, _ = _open(Desk(early_app, imap_server, smtp_sink, desk.clock), _at(0), "Frage von früher")
    finally:
        early_app.close()
    assert desk.ticket(unrated).severity is None and desk.ticket(unrated).contract == "Wartungsvertrag"

    a, _ = _open(desk, _at(1), "Systemstillstand ohne Vertrag", sender=OTHER)
    b, _ = _open(desk, _at(2), "Frage eins")
    c, _ = _open(desk, _at(3), "Systemstillstand mit Vertrag")
    d, d_note = _open(desk, _at(4), "Frage zwei")
    e, _ = _open(desk, _at(5), "Frage ohne Vertrag", sender=OTHER)
    f, f_note = _open(desk, _at(6), "Frage erledigt")
    desk.deliver(_agent_reply(f_note, "#solve\n\nErledigt."))
    desk.deliver(_agent_reply(d_note, "#pending\n\nWelche Version nutzen Sie?"))

    code, out = _run(desk, "tickets", "list", "--queue", "support")
    assert code == 0, out
    rows = [line.split()[0] for line in out.splitlines()[1:]]
    assert rows == [c, b, d, unrated, a, e]
    header, *lines = out.splitlines()
    assert "CONTRACT / ORGANISATION" in header and "SEV" in header and "FIRST RESPONSE DUE" in header
    row = dict(zip(rows, lines, strict=True))
    assert "Wartungsvertrag / Kunde GmbH" in row[c] and " 1 " in row[c]
    assert "2026-11-23 09:03 CET" in row[c]  # Friday 14:03 + 4 business hours = Monday 09:03 CET
    assert "- / Other AG" in row[a] and row[a].split()[1] == "new"
    assert "answered" in row[d] and row[d].split()[1] == "pending"

    code, out = _run(desk, "tickets", "list", "--queue", "support", "--status", "solved")
    assert [line.split()[0] for line in out.splitlines()[1:]] == [f]

    code, out = _run(desk, "tickets", "list")
    assert [line.split()[0] for line in out.splitlines()[1:]] == [f, e, d, c, b, a, unrated]

    code, out = _run(desk, "sla", "explain", a)
    assert "organisation Other AG, no contract: no promise (the queue requires a contract)" in out
    assert out.rstrip().endswith("no deadlines: no contract, no promise")


def _at(minutes: int) -> datetime:
    """Friday 20 November 2026, 14:00 CET plus ``minutes``."""
    return datetime(2026, 11, 20, 14, 0, tzinfo=BERLIN) + timedelta(minutes=minutes)


def test_tickets_table_without_cases(desk):
    """An empty queue says so."""
    code, out = _run(desk, "tickets", "list", "--queue", "hotline")
    assert code == 0 and out.strip() == "no new/open/pending tickets in queue hotline"
