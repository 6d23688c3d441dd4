"""What an operator reads (issue 16): `tickets list`, `tickets list --queue`, `tickets show`,
through the CLI's output at 80 and 160 columns, over a database filled by real mail (IMAP in, an
SMTP server that refuses once): tables fit the width and cut with "…" (a long queue name, a long
organisation), columns stay aligned, times are in the case's calendar zone (CET), routing is said
in words, history is in the order it was recorded, and the send attempts show the refusal."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from click.testing import CliRunner

from mailbridge.cli import cli
from tests.integration.conversation_support import (
    CHIEF,
    CUSTOMER,
    NRW_CALENDAR,
    QUEUE_EXTRA,
    TEAM,
    Desk,
    make_desk,
    to,
)
from tests.support import make_mail

LONG_QUEUE = "maschinenbau-sonderanfertigungen-nordrhein-westfalen"
LONG_QUEUE_ADDRESS = "sonderbau@vendor.example"
LONG_ORG = "Kessler Werkzeugmaschinen Sondermaschinenbau und Automatisierungstechnik GmbH & Co. KG"
CONTRACT = "Wartungsvertrag Premium"
SUBJECT = "Systemstillstand an Anlage 7 nach dem Update der Steuerungssoftware auf Version 4.2.1"

CONFIG = f"""
{NRW_CALENDAR}
[[severity_schemes]]
name = "std"
default = "3"
[[severity_schemes.stages]]
at = 100
to = "escalation"
[[severity_schemes.levels]]
key = "1"
label_de = "Fehlerklasse 1"
label_en = "Severity 1"
words = ["Systemstillstand"]
first_response = {{ business_hours = 4 }}
escalate_on_create = true
[[severity_schemes.levels]]
key = "3"
label_de = "Fehlerklasse 3"
label_en = "Severity 3"
first_response = {{ business_days = 2 }}

[[organisations]]
name = "{LONG_ORG}"
domains = ["kunde.example"]
contract = "{CONTRACT}"

[[queues]]
name = "{LONG_QUEUE}"
addresses = ["{LONG_QUEUE_ADDRESS}"]
language = "de"
account = "main"
display_name = "Sonderbau"
calendar = "nrw"
severity_scheme = "std"
escalation = ["{CHIEF}"]
notify = ["{TEAM}"]
"""


@pytest.fixture
def desk(tmp_path, imap_server, smtp_sink, db_url, imap_env):
    d = make_desk(tmp_path, imap_server, smtp_sink, db_url, queue_extra=QUEUE_EXTRA, conversations=CONFIG)
    yield d
    d.app.close()


def _run(desk: Desk, width: int, *args: str) -> str:
    r = CliRunner().invoke(
        cli,
        ["--config", str(desk.app.settings.source), *args],
        obj={"clock": desk.clock},
        env={"COLUMNS": str(width)},
    )
    assert r.exit_code == 0, r.output
    print(f"\n$ COLUMNS={width} mailbridge {' '.join(args)}\n{r.stdout}")
    return r.stdout


def _fits(out: str, width: int) -> None:
    assert out.strip() and all(len(line) <= width for line in out.splitlines()), out
    assert "\x1b" not in out  # no colour codes: not a terminal


def _cell(header: str, row: str, title: str) -> str:
    """The row's text that starts exactly below ``title`` in the header (the columns are aligned:
    a cell starts where its title does)."""
    at = header.index(title)
    assert at == 0 or row[at - 1] == " ", f"no cell starts below {title!r}:\n{header}\n{row}"
    return row[at:].split("  ")[0]


def test_tables_fit_the_width_times_are_local_routing_in_words_history_in_order_attempts_listed(desk):
    # 10:00 CET on Monday 23 November 2026; the SMTP server refuses the first attempt of each mail.
    desk.smtp.set_reply("451 4.3.0 Mailbox busy, try again later")
    sent = desk.deliver(make_mail(sender=CUSTOMER, to=LONG_QUEUE_ADDRESS, subject=SUBJECT))
    assert sent == []
    case = desk.ticket().case_number
    assert desk.ticket(case).queue == LONG_QUEUE and desk.ticket(case).organisation == LONG_ORG

    for width in (80, 160):
        out = _run(desk, width, "tickets", "list")
        _fits(out, width)
        header, row = out.splitlines()
        assert row.split()[:2] == [case, "new"]
        if width == 160:
            assert _cell(header, row, "CREATED") == "2026-11-23 10:00 CET"
        else:  # left out where it does not fit: the subject needs the room more
            assert "CREATED" not in header and "LANG" not in header
        assert _cell(header, row, "SUBJECT").startswith(SUBJECT[:19])
        queue = _cell(header, row, "QUEUE")
        assert queue.endswith("…") and LONG_QUEUE.startswith(queue[:-1]) and len(queue) > 5  # cut, and said so

        out = _run(desk, width, "tickets", "list", "--queue", LONG_QUEUE)
        _fits(out, width)
        header, row = out.splitlines()
        assert _cell(header, row, "FIRST RESPONSE DUE") == "2026-11-23 14:00 CET"  # 10:00 + 4 business hours
        assert _cell(header, row, "SEV") == "1"
        org = _cell(header, row, "CONTRACT / ")
        assert org.startswith(CONTRACT[:10]) and org.endswith("…")
        assert ("CREATED" in header) is ("REQUESTER" in header) is (width == 160)  # left out at 80

        out = _run(desk, width, "tickets", "show", case)
        _fits(out, width)
        assert "created 2026-11-23 10:00 CET" in out and "times in Europe/Berlin (calendar nrw)" in out
        assert not re.search(r"\d\d:\d\d:\d\dZ", out)  # no UTC times left
        routed = next(line for line in out.splitlines() if "routed:" in line)
        # (folded onto the next lines at 80 columns)
        words = " ".join(out.split("routed:", 1)[1].split("|", 1)[0].split())
        assert words.startswith(f"to {LONG_QUEUE_ADDRESS} (queue {LONG_QUEUE}, by its recipient address); a new case")
        assert "{" not in routed and '"' not in routed  # words, not JSON

        history = out.split("\nhistory:\n", 1)[1].splitlines()
        assert history[0].split() == ["TIME", "EVENT", "DETAIL"]
        # In the order recorded (by event id), which is the order things happened: the case was
        # created, then escalated on creation.
        kinds = [line.split()[3] for line in history[1:]]
        assert kinds == [kind for kind, _ in desk.events(case)]
        assert kinds[0] == "created" and kinds.index("escalated") > kinds.index("created")
        assert all(line.split()[2] == "CET" for line in history[1:])

        explained = _run(desk, width, "sla", "explain", case)
        _fits(explained, width)
        assert "due Mon 2026-11-23 14:00 CET" in explained

        attempts = out.split("\nsend attempts:\n", 1)[1].split("\nhistory:", 1)[0].splitlines()
        header, *rows = attempts
        assert header.split()[:4] == ["KIND", "TO", "STATUS", "ATTEMPTS"]
        by_kind = {r.split()[0]: r for r in rows if r.strip()}
        assert set(by_kind) == {"ack", "notification", "escalation"}
        ack = by_kind["ack"]
        assert ack.split()[2:4] == ["queued", "1"] and "451 4.3.0" in ack
        assert _cell(header, ack, "STATUS") == "queued"

    # The server takes mail again: the second attempt goes out, and the list says so.
    desk.smtp.set_reply(None)
    desk.clock.now += timedelta(minutes=5)
    sent = desk._send(0)
    assert len(to(sent, CUSTOMER[1])) == 1
    out = _run(desk, 160, "tickets", "show", case)
    attempts = out.split("\nsend attempts:\n", 1)[1].split("\nhistory:", 1)[0].splitlines()
    header, *rows = attempts
    ack = next(r for r in rows if r.split()[0] == "ack")
    assert ack.split()[2:4] == ["sent", "2"]
    assert _cell(header, ack, "SENT") == "2026-11-23 10:05 CET"
    assert "mail_sent" in out.split("\nhistory:\n", 1)[1]
