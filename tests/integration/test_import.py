"""`mailbridge import mbox|maildir PATH` (issue 16): years of support mail brought in through the real
command, read back from the database and from what the real SMTP server received.

Archive mode keeps the original dates, threads a question, its reply and the agent's answer into one
case (whatever their order in the file), sends nothing (no acknowledgement, no command error, no
escalation, also when the escalation job runs later) and closes the cases that are old. Without
``--archive`` the mails are new mail: their acknowledgements reach the SMTP server. Errors name the
path and what is wrong with it.
"""

from __future__ import annotations

import asyncio
import hashlib
import mailbox
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from email.parser import BytesHeaderParser
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from mailbridge.app import App
from mailbridge.cli import cli
from mailbridge.settings import load_settings
from mailbridge.store.db import session_scope
from mailbridge.store.models import Event, MailboxState, Message, Outbox, Quarantine, RawMessage, Ticket
from tests.integration.conversation_support import AGENT, CUSTOMER, SLA, Desk, berlin, sla_desk
from tests.support import HOTLINE_ADDRESS, SUPPORT_ADDRESS, make_mail, write_config


@pytest.fixture
def desk(tmp_path, imap_server, smtp_sink, db_url, imap_env):
    d = sla_desk(tmp_path, imap_server, smtp_sink, db_url)
    yield d
    d.app.close()


def _import(desk: Desk, *args: str) -> tuple[int, str]:
    r = CliRunner().invoke(cli, ["--config", str(desk.app.settings.source), "import", *args], obj={"clock": desk.clock})
    return r.exit_code, r.output


def _summary(out: str) -> list[str]:
    """The command's own lines (the service's JSON log lines go to the same output)."""
    return [line for line in out.splitlines() if not line.startswith("{")]


def _mbox(path, *mails: bytes):
    box = mailbox.mbox(path)
    for raw in mails:
        box.add(raw)
    box.flush()
    box.close()
    return path


def _cases(desk: Desk) -> list[tuple[Ticket, list[Message]]]:
    with session_scope(desk.app.session_factory) as s:
        out = []
        for t in s.scalars(select(Ticket).order_by(Ticket.id)):
            msgs = list(s.scalars(select(Message).where(Message.ticket_id == t.id).order_by(Message.created_at)))
            out.append((t, msgs))
        s.expunge_all()
        return out


def _outbox(desk: Desk) -> int:
    with session_scope(desk.app.session_factory) as s:
        return s.scalar(select(func.count()).select_from(Outbox))


def _send_all(desk: Desk) -> None:
    sender = desk.app.sender()
    while True:
        r = asyncio.run(sender.run_once())
        if not (r.sent or r.retry or r.failed):
            return


def test_archive_threads_keeps_dates_closes_old_cases_and_sends_nothing(desk, smtp_sink, tmp_path):
    desk.clock.now = berlin(2026, 11, 23, 9, 0)
    asked, replied, answered = berlin(2024, 3, 4, 9, 15), berlin(2024, 3, 4, 11, 40), berlin(2024, 3, 5, 8, 5)
    question = make_mail(
        subject="Systemstillstand Linie 3",
        body="Guten Tag,\n\ndie Linie 3 steht seit heute früh.\n\nJürgen Müller",
        sender=CUSTOMER,
        message_id="<q@kunde.example>",
        date=asked,
    )
    reply = make_mail(
        subject="AW: Systemstillstand Linie 3",
        body="Nachtrag: Fehlercode E-4711.\n\nJürgen Müller",
        sender=CUSTOMER,
        message_id="<r@kunde.example>",
        date=replied,
        headers={"In-Reply-To": "<q@kunde.example>", "References": "<q@kunde.example>"},
    )
    # The agent wrote to the customer directly (an old system's answer), with a command line that
    # is not proven here: no command error mail, nothing relayed.
    answer = make_mail(
        subject="AW: Systemstillstand Linie 3",
        body="#close\n\nGuten Tag Herr Müller,\n\nbitte starten Sie den Dienst neu.\n\nAnna",
        sender=AGENT,
        to=CUSTOMER[1],
        cc=SUPPORT_ADDRESS,
        message_id="<a@vendor.example>",
        date=answered,
        headers={"In-Reply-To": "<r@kunde.example>", "References": "<q@kunde.example> <r@kunde.example>"},
    )
    # Two days old, production down: it stays open, and it must not escalate for deadlines that
    # passed before the import.
    recent_at = desk.clock.now - timedelta(days=2)
    recent = make_mail(
        subject="Systemstillstand Presse 2",
        body="Die Presse steht.",
        sender=("Petra Kunde", "petra@stadtwerke.example"),
        message_id="<p@stadtwerke.example>",
        date=recent_at,
    )
    # In the file, the answer comes first and the question last: the import goes by date.
    path = _mbox(tmp_path / "support.mbox", answer, recent, reply, question)

    code, out = _import(desk, "mbox", str(path), "--archive")
    assert code == 0, out
    lines = _summary(out)
    assert lines[0].startswith(f"{path} (mbox, archive): 4 mails in ")
    assert lines[1] == "  processed 4, duplicate 0, ignored 0, noise 0, quarantined 0; tickets created 2"
    assert lines[2] == "  closed 1 (last message older than 30 days)"

    (old, old_msgs), (young, _) = _cases(desk)
    assert [m.message_id for m in old_msgs] == ["q@kunde.example", "r@kunde.example", "a@vendor.example"]
    assert [m.created_at for m in old_msgs] == [asked, replied, answered]
    assert (old.created_at, old.updated_at, old.status) == (asked, answered, "closed")
    assert old.closed_at == desk.clock.now
    assert old_msgs[2].kind.startswith("agent")
    assert (young.status, young.created_at, young.severity) == ("new", recent_at, "1")
    for t in (old, young):
        assert (t.first_response_due, t.resolution_due, t.update_due, t.next_escalation_at) == (None,) * 4
    with session_scope(desk.app.session_factory) as s:
        created = s.scalars(select(Event.created_at).where(Event.ticket_id == old.id, Event.kind == "created")).one()
        assert created == asked
        closing = s.scalars(select(Event.detail).where(Event.ticket_id == old.id, Event.kind == "status_changed"))
        assert [d["reason"] for d in closing] == ["imported: last message older than 30 days"]

    # Nothing went out, and the escalation job, now and a week later, finds nothing to do.
    assert _outbox(desk) == 0
    assert desk.escalate() == []
    desk.clock.now += timedelta(days=7)
    assert desk.escalate() == []
    assert _outbox(desk) == 0 and smtp_sink.received == []

    # Again: everything is done, nothing is doubled.
    code, out = _import(desk, "mbox", str(path), "--archive")
    assert code == 0 and _summary(out)[0].endswith("0 mails in " + _summary(out)[0].split(" mails in ")[1])
    assert "4 of 4 done before" in out
    assert [len(m) for _, m in _cases(desk)] == [3, 1]


def test_maildir_archive_into_a_named_queue(desk, tmp_path):
    desk.clock.now = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    md = mailbox.Maildir(tmp_path / "Maildir", create=True)
    first, second = datetime(2023, 5, 2, 7, 0, tzinfo=UTC), datetime(2023, 6, 9, 15, 30, tzinfo=UTC)
    md.add(make_mail(subject="Frage zur Lizenz", message_id="<m1@kunde.example>", date=second))
    md.add(make_mail(subject="Drucker druckt nicht", message_id="<m2@kunde.example>", to=SUPPORT_ADDRESS, date=first))
    md.close()

    code, out = _import(desk, "maildir", str(tmp_path / "Maildir"), "--archive", "--queue", "hotline")
    assert code == 0, out
    assert "processed 2," in out and "tickets created 2" in out and "closed 2 " in out
    cases = _cases(desk)
    assert [(t.subject, t.queue, t.created_at, t.status) for t, _ in cases] == [
        ("Drucker druckt nicht", "hotline", first, "closed"),
        ("Frage zur Lizenz", "hotline", second, "closed"),
    ]
    with session_scope(desk.app.session_factory) as s:
        raws = s.execute(select(RawMessage.account, RawMessage.folder, RawMessage.uid).order_by(RawMessage.uid)).all()
        assert raws == [("import", str(tmp_path / "Maildir"), 1), ("import", str(tmp_path / "Maildir"), 2)]
        assert s.get(MailboxState, ("import", str(tmp_path / "Maildir"))).last_uid == 2
    assert _outbox(desk) == 0


def test_pending_mail_imported_as_new_mail_is_acknowledged(desk, smtp_sink, tmp_path):
    desk.clock.now = berlin(2026, 11, 23, 10, 0)
    people = [("Eva Meier", "eva@firma.example"), ("Tom Roe", "tom@corp.example"), CUSTOMER]
    mails = [
        make_mail(subject=f"Anfrage {i}", sender=p, to=HOTLINE_ADDRESS if i else SUPPORT_ADDRESS)
        for i, p in enumerate(people)
    ]
    code, out = _import(desk, "mbox", str(_mbox(tmp_path / "pending.mbox", *mails)))
    assert code == 0, out
    assert "(mbox, as new mail)" in out and "tickets created 3" in out and "closed" not in out
    cases = _cases(desk)
    # Processed now (not at their Date), routed by recipient, with running clocks.
    assert [(t.queue, t.created_at) for t, _ in cases] == [
        ("support", desk.clock.now),
        ("hotline", desk.clock.now),
        ("hotline", desk.clock.now),
    ]
    assert cases[0][0].first_response_due is not None  # the support queue counts (the hotline has no scheme)
    _send_all(desk)
    acks = [m for m in smtp_sink.received if m.rcpt_tos != ["team@vendor.example"]]
    assert sorted(r for m in acks for r in m.rcpt_tos) == sorted(p[1] for p in people)
    assert all(f"[{t.case_number}]" in str(m.message["Subject"]) for m, (t, _) in zip(acks, cases, strict=True))


def test_a_missing_path_or_a_file_that_is_not_a_mailbox_is_refused(desk, tmp_path):
    code, out = _import(desk, "mbox", str(tmp_path / "nowhere.mbox"))
    assert (code, out.strip().splitlines()[-1]) == (
        1,
        f"mailbridge: {tmp_path / 'nowhere.mbox'}: no such file or directory",
    )
    notes = tmp_path / "notes.txt"
    notes.write_text("Subject: not a mailbox\n\njust text\n")
    code, out = _import(desk, "mbox", str(notes))
    assert code == 1 and f"{notes}: not an mbox file" in out
    code, out = _import(desk, "maildir", str(tmp_path))
    assert code == 1 and f"{tmp_path}: not a Maildir (no cur and no new/)" in out
    (tmp_path / "cur").mkdir()
    code, out = _import(desk, "mbox", str(tmp_path))
    assert code == 1 and "is a directory, not an mbox file (a Maildir? use 'import maildir')" in out
    code, out = _import(desk, "mbox", str(notes), "--close-older-than", "5")
    assert code == 2 and "--close-older-than goes with --archive" in out
    code, out = _import(desk, "mbox", str(notes), "--queue", "sales")
    assert code == 2 and "no queue 'sales'" in out
    with session_scope(desk.app.session_factory) as s:
        assert s.scalar(select(func.count()).select_from(RawMessage)) == 0


# -- the real-world corpus, as one mbox, through the real command, killed halfway ------------------

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus"


def _corpus_mbox(path: Path) -> int:
    """Every non-empty file of the corpus (read in place) as one mbox at ``path``; how many."""
    box = mailbox.mbox(path)
    n = 0
    for line in (CORPUS / "INDEX.tsv").read_text(encoding="utf-8").splitlines():
        rel = line.split("\t")[0]
        f = CORPUS / rel
        if rel and f.is_file() and f.stat().st_size:
            box.add(f.read_bytes())
            n += 1
    box.flush()
    box.close()
    return n


def _committed(db_file: Path) -> int:
    """Mails of the import committed so far, read without taking a write lock."""
    try:
        with sqlite3.connect(f"file:{db_file}?mode=ro", uri=True, timeout=1) as c:
            row = c.execute("SELECT last_uid FROM mailbox_state WHERE account = 'import'").fetchone()
            return row[0] if row else 0
    except sqlite3.OperationalError:
        return 0


@pytest.mark.slow
@pytest.mark.skipif(not (CORPUS / "INDEX.tsv").is_file(), reason=f"no mail corpus at {CORPUS}")
def test_corpus_archive_import_interrupted_killed_and_resumed(tmp_path, imap_server, smtp_sink, imap_env):
    db_file = tmp_path / "import.db"
    config = write_config(
        tmp_path / "mailbridge.toml",
        imap_port=imap_server.port,
        imap_user=imap_server.user,
        smtp_port=smtp_sink.port,
        db_url=f"sqlite:///{db_file}",
        var_dir=tmp_path / "var",
        queue_extra='calendar = "nrw"\nseverity_scheme = "std"\nescalation = ["leitung@vendor.example"]\n',
        extra=f"[conversations]\n{SLA}",
    )
    app = App(load_settings(config))
    app.upgrade_db()
    mbox_path = tmp_path / "corpus.mbox"
    total = _corpus_mbox(mbox_path)
    command = [
        sys.executable,
        "-m",
        "mailbridge",
        "--config",
        str(config),
        "import",
        "mbox",
        str(mbox_path),
        "--archive",
    ]
    log = tmp_path / "import.log"

    def start_and_wait_for(n: int, **popen) -> subprocess.Popen:
        proc = subprocess.Popen(command, env=imap_env, **popen)
        deadline = time.monotonic() + 240
        while _committed(db_file) < n and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, (log.read_text() if log.exists() else "")[-3000:]
        return proc

    try:
        # Ctrl-C on the terminal (SIGINT to the whole process group, the parse workers too) a third
        # of the way: it stops after the current mail and says where.
        # (Log lines to a file: a pipe nobody reads would fill up and stop the import.)
        with log.open("wb") as f:
            proc = start_and_wait_for(total // 3, stdout=subprocess.PIPE, stderr=f, start_new_session=True)
            os.killpg(proc.pid, signal.SIGINT)
            out, _ = proc.communicate(timeout=120)
        stopped_at = _committed(db_file)
        err = log.read_text()
        assert proc.returncode == 130, err[-3000:]
        assert f"stopped by Ctrl-C after mail {stopped_at} of {total}" in out.decode()
        # The parse workers ignore SIGINT (the parent stops after the current mail and shuts them down).
        assert "parse_pool_broken" not in err and "Traceback" not in err, err[-3000:]

        # SIGKILL two thirds of the way.
        with log.open("wb") as f:
            proc = start_and_wait_for(2 * total // 3, stdout=f, stderr=f)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        killed_at = _committed(db_file)
        assert 2 * total // 3 <= killed_at < total

        done = subprocess.run(command, env=imap_env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        summary = _summary(done.stdout)
        assert f"{killed_at} of {total} done before" in summary[0]
        assert summary[0].split("): ")[1].startswith(f"{total - killed_at} mails in ")

        # Nothing is sent: the outbox is empty, and the sender finds nothing for the SMTP server.
        _send_all(Desk(app, imap_server, smtp_sink, None))
        assert smtp_sink.received == []

        now = datetime.now(UTC)
        with session_scope(app.session_factory) as s:
            assert s.scalar(select(func.count()).select_from(Outbox)) == 0
            assert s.get(MailboxState, ("import", str(mbox_path))).last_uid == total
            raws = list(s.scalars(select(RawMessage).where(RawMessage.account == "import")))
            # Each position of the import recorded once at most (a duplicate has no row of its own).
            assert len({r.uid for r in raws}) == len(raws) and all(1 <= r.uid <= total for r in raws)
            inbound = list(s.scalars(select(Message).where(Message.direction == "in")))
            by_raw = Counter(m.raw_id for m in inbound)
            quarantined = dict(s.execute(select(Quarantine.raw_id, Quarantine.stage)).all())
            # Every raw mail has exactly one outcome: a message (a case's, or kept as noise or our
            # own) or a quarantine row, never both, never two.
            for r in raws:
                if r.disposition == "quarantined":
                    assert r.id in quarantined and by_raw[r.id] == 0, r.id
                else:
                    assert r.disposition in ("processed", "noise", "ignored") and by_raw[r.id] == 1, r.id
            # No mail lost: every mail of the file is recorded, or is a duplicate of one that is.
            shas = {r.sha256 for r in raws}
            mids = {m.message_id for m in inbound}
            box = mailbox.mbox(mbox_path)
            for key in box.iterkeys():
                raw = box.get_bytes(key)
                if hashlib.sha256(raw).hexdigest() not in shas:
                    mid = (box.get_message(key)["Message-ID"] or "").strip().strip("<>")
                    assert mid and mid in mids, f"mail {key} of the mbox is lost"
            box.close()
            # No case has a message twice; every case has its first mail; the original dates are
            # the messages' and the cases' times.
            per_case = Counter((m.ticket_id, m.raw_id) for m in inbound if m.ticket_id is not None)
            assert max(per_case.values()) == 1
            tickets = list(s.scalars(select(Ticket)))
            created = s.scalar(select(func.count()).select_from(Event).where(Event.kind == "created"))
            assert len(tickets) == created > total // 4
            first = {}
            last = {}
            for m in inbound:
                if m.ticket_id is not None:
                    first[m.ticket_id] = min(first.get(m.ticket_id, m.created_at), m.created_at)
                    last[m.ticket_id] = max(last.get(m.ticket_id, m.created_at), m.created_at)
            dated = [m for m in inbound if m.date is not None and m.date.year >= 1990 and m.date <= now]
            assert len(dated) > total // 3
            paths = {r.id: r.path for r in raws}
            for m in dated:
                if m.created_at != m.date:
                    # Only a Date the standard library cannot read (the parser reads more) is not kept.
                    header = BytesHeaderParser().parsebytes(app.raw_store.get(paths[m.raw_id]))["Date"]
                    with pytest.raises((TypeError, ValueError)):
                        parsedate_to_datetime(header)
            old = now - timedelta(days=30)
            for t in tickets:
                assert t.created_at == first[t.id]
                assert (t.status == "closed") == (last[t.id] < old), t.case_number
                assert t.next_escalation_at is None
    finally:
        app.close()


def test_a_quarantined_archived_mail_requeued_stays_archived_and_recompute_leaves_it_without_clocks(
    tmp_path, imap_server, smtp_sink, db_url, imap_env
):
    """A mail of an archive import refused for its size, requeued once the limit is raised: it is
    still archived mail (its own date, no clocks, nothing sent), and ``sla recompute`` leaves cases
    from an archive without clocks (it would count their deadlines from their old dates)."""
    desk = sla_desk(tmp_path, imap_server, smtp_sink, db_url, sla=SLA + "\n[ingest]\nmax_message_bytes = 200000\n")
    try:
        desk.clock.now = berlin(2026, 11, 23, 9, 0)
        written = berlin(2026, 11, 20, 10, 30)  # three days old: the case stays open
        big = make_mail(
            subject="Logdateien vom Ausfall",
            body="Anbei die Logs.",
            message_id="<big@kunde.example>",
            date=written,
            attachments=[("logs.txt", "text/plain", os.urandom(150_000).hex().encode())],
        )
        small = make_mail(subject="Lizenzfrage", message_id="<small@kunde.example>", date=written)
        code, out = _import(desk, "mbox", str(_mbox(tmp_path / "a.mbox", big, small)), "--archive")
        assert code == 0, out
        assert "processed 1," in out and "quarantined 1;" in out
        with session_scope(desk.app.session_factory) as s:
            (qid,) = s.scalars(select(Quarantine.id).where(Quarantine.status == "open")).all()

        cfg = Path(desk.app.settings.source)
        cfg.write_text(cfg.read_text().replace("max_message_bytes = 200000", "max_message_bytes = 2000000"))
        args = ["--config", str(cfg), "quarantine", "requeue", str(qid)]
        r = CliRunner().invoke(cli, args, obj={"clock": desk.clock})
        assert r.exit_code == 0, r.output
        assert r.output.splitlines()[-1] == f"#{qid}: processed"

        r = CliRunner().invoke(cli, ["--config", str(cfg), "sla", "recompute"], obj={"clock": desk.clock})
        assert r.exit_code == 0, r.output
        assert "2 case(s) from an archive import left without clocks" in r.output
        cases = _cases(desk)
        assert sorted(t.subject for t, _ in cases) == ["Lizenzfrage", "Logdateien vom Ausfall"]
        for t, msgs in cases:
            assert (t.status, t.created_at, [m.created_at for m in msgs]) == ("new", written, [written])
            assert (t.first_response_due, t.resolution_due, t.update_due, t.next_escalation_at) == (None,) * 4
        assert desk.escalate() == []
        _send_all(desk)
        assert _outbox(desk) == 0 and smtp_sink.received == []
    finally:
        desk.app.close()
