"""The operator's quarantine commands over mail that went through the real IMAP server and pipeline:
show, export, requeue once the cause is fixed (the mail becomes its case, exactly once), requeue of a
mail whose cause is not fixed (it stays, with the new reason), discard."""

from __future__ import annotations

from click.testing import CliRunner
from sqlalchemy import func, select

from mailbridge.cli import cli
from mailbridge.store.db import session_scope
from mailbridge.store.models import MailboxState, Outbox, Quarantine, RawMessage, Ticket
from tests.support import make_mail

BOOM = "Explodierende Anfrage"


class Exploding:
    """Wraps a real step; raises inside it for the mail whose subject names BOOM (a bug, until fixed)."""

    def __init__(self, step):
        self.step, self.name = step, step.name

    def __call__(self, mail):
        if mail.parsed is not None and BOOM in mail.parsed.subject:
            raise RuntimeError("disk on fire")
        self.step(mail)


def _run(config_path, *args):
    result = CliRunner().invoke(
        cli, ["--config", str(config_path), *args], catch_exceptions=False, env={"COLUMNS": "200"}
    )
    return result.exit_code, result.output


def _last_uid(app):
    with session_scope(app.session_factory) as s:
        return s.scalar(select(MailboxState.last_uid))


def _rows(app):
    with session_scope(app.session_factory) as s:
        return {q.subject: (q.id, q.status, q.outcome, q.stage) for q in s.scalars(select(Quarantine))}


def test_quarantine_show_export_requeue_and_discard(config_path, app, imap_server, smtp_sink, tmp_path):
    steps = app.pipeline.steps
    i = next(i for i, s in enumerate(steps) if s.name == "open_ticket")
    steps[i] = Exploding(steps[i])
    boom = make_mail(subject=BOOM, message_id="<boom@kunde.example>", sender=("Eva", "eva@firma.example"))
    no_sender = b"To: support@vendor.example\r\nSubject: Ohne Absender\r\nMessage-ID: <nos@x.example>\r\n\r\nHallo\r\n"
    other = make_mail(subject="Auch kaputt", message_id="<other@kunde.example>")
    imap_server.append([boom, no_sender, make_mail(subject=f"{BOOM} 2", message_id="<b2@kunde.example>"), other])
    report = app.poller("main").cycle()
    assert report.dispositions == {"quarantined": 3, "processed": 1}
    rows = _rows(app)
    assert rows[BOOM][1:] == ("open", None, "open_ticket") and rows["Ohne Absender"][3] == "validate"
    last_uid = _last_uid(app)

    # show: why, where the raw bytes are, the headers as received.
    qid = rows[BOOM][0]
    code, out = _run(config_path, "quarantine", "show", str(qid))
    assert code == 0
    assert "RuntimeError in step open_ticket: disk on fire" in out
    assert "raw: " in out and ".eml.gz" in out and "Message-ID: <boom@kunde.example>" in out
    # export: the bytes exactly as received.
    target = tmp_path / "boom.eml"
    code, out = _run(config_path, "quarantine", "export", str(qid), "-o", str(target))
    assert code == 0 and target.read_bytes() == boom

    # The bug is fixed (a new process: the CLI's own App has the real step): requeue makes the case,
    # in the same transaction as the row's outcome.
    code, out = _run(config_path, "quarantine", "requeue", str(qid))
    # (The service's log lines go to the same output; the command's own line is the last.)
    assert (code, out.strip().splitlines()[-1]) == (0, f"#{qid}: processed")
    with session_scope(app.session_factory) as s:
        t = s.scalars(select(Ticket).where(Ticket.subject == BOOM)).one()
        assert t.requester_email == "eva@firma.example"
        assert s.scalar(select(func.count()).select_from(Outbox).where(Outbox.ticket_id == t.id, Outbox.kind == "ack"))
        q = s.get(Quarantine, qid)
        assert (q.status, q.outcome) == ("requeued", "processed") and q.resolved_at is not None
        assert s.get(RawMessage, q.raw_id).disposition == "processed"
        assert s.scalar(select(func.count()).select_from(RawMessage)) == 4  # no second row for it
    # Not twice.
    result = CliRunner().invoke(cli, ["--config", str(config_path), "quarantine", "requeue", str(qid)])
    assert result.exit_code == 1 and "is requeued (processed)" in result.output

    # A mail whose cause is not fixed stays quarantined, with the reason of this attempt; --all goes
    # on with the rest and says how many failed.
    result = CliRunner().invoke(cli, ["--config", str(config_path), "quarantine", "requeue", "--all"])
    assert result.exit_code == 1 and "1 of 2 quarantined again" in result.output
    rows = _rows(app)
    assert rows["Ohne Absender"][1:] == ("open", None, "validate")
    assert rows[f"{BOOM} 2"][1:3] == ("requeued", "processed")
    # The mailbox's state was not touched by the requeues.
    assert _last_uid(app) == last_uid

    # discard: dealt with, kept.
    nos = rows["Ohne Absender"][0]
    code, out = _run(config_path, "quarantine", "discard", str(nos))
    assert code == 0 and _rows(app)["Ohne Absender"][1:3] == ("discarded", "discarded")
    code, out = _run(config_path, "quarantine", "list")
    assert "quarantine is empty" in out
