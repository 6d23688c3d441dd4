"""`mailbridge suppressions list` and `lift` (issue 16, item 5), read through the CLI's output
against a database filled through the real IMAP and SMTP servers: a real hard bounce of our
acknowledgement makes the address appear; lifting it records who and when on its last case, and the
next acknowledgement to it goes out again."""

from __future__ import annotations

from datetime import timedelta

import pytest
from click.testing import CliRunner

from mailbridge.cli import cli
from tests.integration.conversation_support import CUSTOMER, Desk, make_desk, to
from tests.integration.test_noise import _dsn, _open_case
from tests.support import make_mail


@pytest.fixture
def desk(tmp_path, imap_server, smtp_sink, db_url, imap_env):
    d = make_desk(tmp_path, imap_server, smtp_sink, db_url)
    yield d
    d.app.close()


def _run(desk: Desk, *args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(
        cli,
        ["--config", str(desk.app.settings.source), "suppressions", *args],
        obj={"clock": desk.clock},
        env={"COLUMNS": "160"},
    )
    return r.exit_code, r.stdout, r.stderr


def test_a_hard_bounce_is_listed_and_lifting_it_lets_the_next_acknowledgement_out(desk):
    assert _run(desk, "list") == (0, "no address is suppressed or failing\n", "")
    t, ack = _open_case(desk)
    desk.clock.now += timedelta(minutes=2)
    bounced_at = desk.clock.now
    assert desk.deliver(_dsn(ack)) == []

    code, out, _ = _run(desk, "list")
    assert code == 0
    header, row, last, reason_header, reason, total = out.splitlines()
    assert header.split() == ["ADDRESS", "STATE", "SINCE", "UNTIL", "BOUNCES", "STATUS", "LAST", "CASE"]
    until = bounced_at + timedelta(days=60)
    # (the desk has no calendar: times in UTC, to the minute)
    assert row.split() == [
        CUSTOMER[1],
        "suppressed",
        *bounced_at.strftime("%Y-%m-%d %H:%M UTC").split(),
        *until.strftime("%Y-%m-%d %H:%M UTC").split(),
        "1",
        "5.1.1",
        t.case_number,
    ]
    assert last == "last bounces:" and reason_header.split() == ["ADDRESS", "AT", "REASON"]
    assert reason.split()[:4] == [CUSTOMER[1], *bounced_at.strftime("%Y-%m-%d %H:%M UTC").split()]
    assert "5.1.1" in reason
    assert total == "1 suppressed, 0 failing"

    # Suppressed: a new request is a case, but is not acknowledged.
    desk.clock.now += timedelta(hours=1)
    assert to(desk.deliver(make_mail(sender=CUSTOMER, subject="Noch ein Problem")), CUSTOMER[1]) == []

    desk.clock.now += timedelta(hours=1)
    lifted_at = desk.clock.now
    code, out, err = _run(desk, "lift", CUSTOMER[1].upper(), "--by", "admin")
    assert code == 0 and '"event": "address_lifted"' in err and '"by": "admin"' in err  # logged
    assert out == f"{CUSTOMER[1]}: suppression lifted by admin (was until {until:%Y-%m-%d %H:%M} UTC); " + (
        f"recorded on case {t.case_number}\n"
    )
    (event,) = [d for k, d in desk.events(t.case_number) if k == "address_lifted"]
    assert event["by"] == "admin" and event["at"] == lifted_at.isoformat() and event["address"] == CUSTOMER[1]
    assert _run(desk, "list")[1] == "no address is suppressed or failing\n"

    # The next acknowledgement to the address goes out again.
    desk.clock.now += timedelta(minutes=5)
    assert len(to(desk.deliver(make_mail(sender=CUSTOMER, subject="Drittes Problem")), CUSTOMER[1])) == 1

    # Lifting it again, or an address that never bounced, is an error.
    code, out, err = _run(desk, "lift", CUSTOMER[1])
    assert (code, out) == (1, "") and "not suppressed (its suppression was lifted)" in err
    code, out, err = _run(desk, "lift", "nobody@kunde.example")
    assert (code, out) == (1, "") and "nobody@kunde.example: no mail of ours bounced" in err


def test_a_soft_bounce_is_listed_as_failing_and_cannot_be_lifted(desk):
    t, ack = _open_case(desk)
    desk.deliver(_dsn(ack, status="4.2.2", action="delayed"))
    code, out, _ = _run(desk, "list")
    assert code == 0
    row = out.splitlines()[1].split()
    assert row[:2] == [CUSTOMER[1], "failing"] and row[-3:] == ["1", "4.2.2", t.case_number]
    assert "0 suppressed, 1 failing" in out
    code, _, err = _run(desk, "lift", CUSTOMER[1])
    assert code == 1 and "bounced softly (failing, not suppressed)" in err
