"""Data protection (issue 20) through the real servers: mail in through IMAP (pymap), mail out through
SMTP (aiosmtpd), SQLite and PostgreSQL, the CLI as an operator runs it.

- ``privacy erase``: afterwards the address is in no table and column (every one, read back), in no file
  under var/ (gunzipped, MIME-decoded), in no mail of the IMAP account, in no log line written after it;
  another customer's case that merely Cc'd the person keeps its content; a file shared with another
  person's mail stays; the case numbers and SLA figures stay; ``--dry-run`` changes nothing; a case under
  legal hold is skipped and reported.
- ``privacy export``: a customer with three cases and attachments: all of them in index.html and data.json.
- ``privacy retention``: at an injected clock it removes exactly what the settings say, and the SLA
  figures (``sla explain``, ``mailbridge report sla`` and ``volume``) read the same before and after;
  two instances at once do the work once.
"""

from __future__ import annotations

import gzip
import io
import json
import threading
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, inspect, select, text

from mailbridge.app import App
from mailbridge.cli import cli
from mailbridge.logging import configure_logging
from mailbridge.privacy.mailtext import decoded_text
from mailbridge.settings import load_settings
from mailbridge.store import tracker as tracker_store
from mailbridge.store.db import session_scope
from mailbridge.store.models import (
    AttachmentRow,
    Participant,
    PrivacyAudit,
    Quarantine,
    RawMessage,
    RetentionRun,
)
from tests.integration.conversation_support import AGENT, CUSTOMER, CUSTOMER2, QUEUE_EXTRA, TEAM, Desk, make_desk, to
from tests.integration.test_noise import _dsn
from tests.support import make_mail

X = CUSTOMER[1]  # juergen.mueller@kunde.example, the person who asks
OTHER = ("Olga Other", "olga@other.example")
SHARED = b"%PDF-1.4 the vendor's manual, sent by several customers\n" * 20
SLA_COLUMNS = (
    "case_number",
    "status",
    "created_at",
    "severity",
    "first_response_at",
    "first_response_due",
    "resolution_due",
    "solved_at",
    "closed_at",
    "paused_seconds",
    "update_due",
    "last_answer_at",
)


@pytest.fixture
def desk(tmp_path, imap_server, smtp_sink, db_url, imap_env):
    d = make_desk(tmp_path, imap_server, smtp_sink, db_url)
    yield d
    d.app.close()


def _run(desk: Desk, *args: str, config: Path | None = None, input: str | None = None):
    return CliRunner().invoke(
        cli,
        ["--config", str(config or desk.app.settings.source), *args],
        input=input,
        obj={"clock": desk.clock},
        env={"COLUMNS": "200"},
        catch_exceptions=False,
    )


def _agent_reply(note, body: str) -> bytes:
    nid = note.header("Message-ID")
    return make_mail(
        subject=f"AW: {note.header('Subject')}",
        body=body,
        sender=AGENT,
        headers={"In-Reply-To": nid, "References": nid},
    )


def _open(desk: Desk, sender, subject: str, body: str, **kw):
    sent = desk.deliver(make_mail(sender=sender, subject=subject, body=body, **kw))
    (note,) = to(sent, TEAM)
    acks = to(sent, sender[1])
    return desk.tickets()[-1].case_number, note, (acks[0] if acks else None)


# -- what the test greps -------------------------------------------------------------------------------


def _db_hits(url: str, needle: str) -> list[str]:
    """Every table and column of the database (read back, not the models) whose value holds ``needle``."""
    engine = create_engine(url)
    hits = []
    try:
        with engine.connect() as conn:
            for table in inspect(conn).get_table_names():
                for row in conn.execute(text(f'SELECT * FROM "{table}"')).mappings():
                    for col, value in row.items():
                        if value is None:
                            continue
                        if isinstance(value, bytes | memoryview):
                            shown = decoded_text(bytes(value))
                        else:
                            shown = value if isinstance(value, str) else json.dumps(value, default=str)
                            shown = shown + json.loads(json.dumps(shown))  # JSON text as stored, unescaped
                        if needle in shown.lower():
                            hits.append(f"{table}.{col}")
    finally:
        engine.dispose()
    return hits


def _file_hits(var: Path, needle: str) -> list[str]:
    hits = []
    for p in var.rglob("*"):
        if not p.is_file():
            continue
        data = p.read_bytes()
        if p.suffix == ".gz":
            data = gzip.decompress(data)
        if needle in decoded_text(data).lower():
            hits.append(str(p.relative_to(var)))
    return hits


def _imap_hits(imap_server, needle: str) -> list[str]:
    c = imap_server.client()
    hits = []
    try:
        for flags, _d, name in c.list_folders():
            if b"\\Noselect" in flags:
                continue
            c.select_folder(name)
            uids = c.search("ALL")
            for uid, d in c.fetch(uids, [b"BODY.PEEK[]"]).items() if uids else []:
                if needle in decoded_text(bytes(d[b"BODY[]"])).lower():
                    hits.append(f"{name}/{uid}")
    finally:
        c.logout()
    return hits


def _sla(desk: Desk, case: str) -> tuple:
    t = desk.ticket(case)
    return tuple(getattr(t, c) for c in SLA_COLUMNS)


# -- the story -------------------------------------------------------------------------------------------


def _story(desk: Desk) -> dict:
    """Jürgen opens case A (two attachments, one the same bytes another customer sends) and gets an
    answer; his acknowledgement bounced once; Petra opens case B with Jürgen in Cc and the shared file,
    Jürgen answers there; Olga's case C never names him."""
    case_a, note_a, ack_a = _open(
        desk,
        CUSTOMER,
        "Lizenzserver startet nicht",
        "Guten Tag,\n\nseit dem Update startet der Lizenzserver nicht. Rückruf bitte unter 0211 4711.\n\nJürgen Müller",
        attachments=[
            ("log-mueller.txt", "text/plain", f"service started by {X}\nERROR license\n".encode()),
            ("handbuch.pdf", "application/pdf", SHARED),
        ],
    )
    desk.deliver(_agent_reply(note_a, "Guten Tag Herr Müller,\n\nbitte starten Sie den Dienst neu.\n\nAnna"))
    desk.clock.now += timedelta(minutes=5)
    desk.deliver(_dsn(ack_a))
    desk.clock.now += timedelta(minutes=5)
    case_b, note_b, ack_b = _open(
        desk,
        CUSTOMER2,
        "Zählerdaten fehlen",
        "Hallo,\n\nseit gestern fehlen die Zählerdaten im Portal.\n\nPetra Kunde",
        cc=f"Jürgen Müller <{X}>",
        attachments=[("handbuch.pdf", "application/pdf", SHARED)],
    )
    desk.deliver(
        make_mail(
            subject=f"AW: {ack_b.header('Subject')}",
            body="Die Daten liegen bei mir, ich schicke sie morgen.\n\nJürgen",
            sender=CUSTOMER,
            to=ack_b.header("From"),
            cc=CUSTOMER2[1],
            headers={"In-Reply-To": ack_b.header("Message-ID"), "References": ack_b.header("Message-ID")},
        )
    )
    case_c, _note_c, _ = _open(desk, OTHER, "Frage zur Rechnung", "Wie lese ich die Rechnung?\n\nOlga")
    # A mail of his that is refused before parsing (too many MIME parts): quarantined, he is told.
    parts = [(f"p{i}.txt", "text/plain", b"x") for i in range(1001)]
    desk.deliver(make_mail(subject="Alle Logs", body="Anbei alle Logs.", sender=CUSTOMER, attachments=parts))
    return {"a": case_a, "b": case_b, "c": case_c, "note_b": note_b}


def test_erase_leaves_the_address_nowhere_and_keeps_other_peoples_content(desk, db_url, imap_server, tmp_path):
    story = _story(desk)
    var = Path(desk.app.settings.var_dir)
    petra_first = desk.messages(story["b"])[0]
    assert petra_first.sender_email == CUSTOMER2[1]
    sla_before = {k: _sla(desk, story[k]) for k in ("a", "b", "c")}
    olga_before = [(m.subject, m.body_text) for m in desk.messages(story["c"])]
    # The address is everywhere before.
    assert {
        "tickets.requester_email",
        "messages.sender_email",
        "ticket_participants.email",
        "address_health.email",
    } <= set(_db_hits(db_url, X))
    assert _file_hits(var, X) and _imap_hits(imap_server, X)
    with session_scope(desk.app.session_factory) as s:
        assert [q.sender for q in s.scalars(select(Quarantine))] == [X]
        # They asked the case tracker for a sign-in link (the token's hash and the request stay).
        now = desk.app.clock()
        tracker_store.add_token(s, "ab" * 32, X, now, now + timedelta(minutes=15))
        tracker_store.add_signin_request(s, X, "203.0.113.7", now)
    assert {"signin_tokens.address", "signin_requests.address"} <= set(_db_hits(db_url, X))

    dry = _run(desk, "privacy", "erase", X, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert f"cases opened by the person (1): {story['a']}" in dry.stdout
    assert f"other cases naming the person (1): {story['b']}" in dry.stdout
    assert "would be removed" in dry.stdout and "IMAP main/Processed: mails deleted" in dry.stdout
    assert "case tracker sign-in records deleted: 2" in dry.stdout
    assert "tickets.requester_email" in _db_hits(db_url, X) and _imap_hits(imap_server, X)

    result = _run(desk, "privacy", "erase", X.upper(), "--yes", "--by", "dpo")
    assert result.exit_code == 0, result.output
    print(result.stdout)
    pseudonym = next(w for w in result.stdout.split() if w.startswith("erased-"))
    assert pseudonym.endswith("@erased.invalid")

    sla_after = {k: _sla(desk, story[k]) for k in ("a", "b", "c")}
    # Nowhere: no table, no file, no IMAP mail, no log line (also not in the CLI's own output).
    assert _db_hits(db_url, X) == []
    assert _file_hits(var, X) == []
    assert _imap_hits(imap_server, X) == []
    buf = io.StringIO()
    configure_logging("debug", "json", stream=buf)
    try:  # the service goes on: Petra answers in her case, an agent answers her
        sent = desk.deliver(
            make_mail(
                subject=f"AW: [{story['b']}] Zählerdaten fehlen",
                body="Noch ein Nachtrag: Zähler 17.",
                sender=CUSTOMER2,
            )
        )
        sent += desk.deliver(_agent_reply(story["note_b"], "Hallo Frau Kunde,\n\nwir prüfen das.\n\nAnna"))
    finally:
        configure_logging("info", "json")
    log_text = buf.getvalue() + result.stdout + result.stderr
    assert "relayed" in log_text.lower() or "agent_reply_relayed" in log_text
    assert X not in log_text.lower() and "juergen.mueller" not in log_text.lower()
    assert all(X not in r.lower() and pseudonym not in r for m in sent for r in m.rcpt_tos), "nothing goes to them"

    # Petra's case keeps her content; only Jürgen's address and his own mail went.
    b = desk.messages(story["b"])
    assert (b[0].subject, b[0].body_text) == (petra_first.subject, petra_first.body_text)
    assert pseudonym in b[0].recipients and X not in json.dumps(b[0].recipients).lower()
    juergen_in_b = [m for m in b if m.sender_email == pseudonym]
    assert len(juergen_in_b) == 1 and juergen_in_b[0].body_text == "" and juergen_in_b[0].text_removed_at
    raw_b = desk.app.raw_store.get(_raw_path(desk, b[0].raw_id))
    assert "seit gestern fehlen die Zählerdaten im Portal." in decoded_text(raw_b)
    assert pseudonym in decoded_text(raw_b)
    assert desk.ticket(story["b"]).subject == "Zählerdaten fehlen"
    with session_scope(desk.app.session_factory) as s:
        roles = dict(s.execute(select(Participant.email, Participant.role)).all())
        assert roles[pseudonym] == "erased"
        shared = s.scalars(select(AttachmentRow).where(AttachmentRow.filename == "handbuch.pdf")).all()
        assert [a.message.sender_email for a in shared] == [CUSTOMER2[1]]
        assert s.scalars(select(Quarantine)).all() == []
        audit = s.scalars(select(PrivacyAudit)).one()
        assert (audit.action, audit.actor, audit.detail["pseudonym"]) == ("erase", "dpo", pseudonym)
    # The shared file stays for Petra; Jürgen's own attachment is gone.
    assert desk.app.attachment_store.get(desk.app.attachment_store.relpath(shared[0].sha256)) == SHARED
    assert len(list((var / "attachments").rglob("*.bin"))) == 1

    # Jürgen's case keeps its number and SLA figures, not his words.
    a = desk.messages(story["a"])
    assert all(m.body_text == "" for m in a) and all(m.subject == "[removed]" for m in a)
    assert desk.ticket(story["a"]).requester_email == pseudonym
    assert sla_after == sla_before
    assert ("personal_data_erased", {"pseudonym": pseudonym, "by": "dpo"}) in desk.events(story["a"])
    # Olga's case is untouched.
    assert [(m.subject, m.body_text) for m in desk.messages(story["c"])][: len(olga_before)] == olga_before
    c = imap_server.client()
    try:
        c.select_folder("Processed")
        kept = [decoded_text(bytes(d[b"BODY[]"])) for d in c.fetch(c.search("ALL"), [b"BODY.PEEK[]"]).values()]
    finally:
        c.logout()
    assert any("seit gestern fehlen die Zählerdaten" in k and pseudonym in k for k in kept), "Petra's copy, rewritten"
    assert not any("Rückruf bitte unter 0211 4711" in k for k in kept), "Jürgen's own mail is gone"
    assert not any("Undelivered Mail Returned" in k for k in kept), "the bounce of a mail to him went with his case"
    assert any("Olga" in k for k in kept), "other people's mail stays as it was"


def _raw_path(desk: Desk, raw_id: int) -> str:
    with session_scope(desk.app.session_factory) as s:
        return s.get(RawMessage, raw_id).path


def test_erase_skips_a_case_under_legal_hold_and_reports_it(desk, imap_server):
    story = _story(desk)
    assert _run(desk, "privacy", "hold", story["a"].lower(), "--reason", "invoice dispute").exit_code == 0
    out = _run(desk, "privacy", "holds").stdout
    assert story["a"] in out and "invoice dispute" in out
    ours = _run(desk, "privacy", "erase", "Support@Vendor.example", "--yes")
    assert ours.exit_code == 1 and "support@vendor.example is one of our support addresses" in ours.stderr
    refused = _run(desk, "privacy", "erase", X, input="n\n")
    assert refused.exit_code == 1 and desk.ticket(story["b"]).requester_email == CUSTOMER2[1]
    assert X in json.dumps([m.recipients for m in desk.messages(story["b"])]).lower(), "nothing changed"
    result = _run(desk, "privacy", "erase", X, "--yes")
    assert result.exit_code == 0, result.output
    assert f"under legal hold, skipped (1): {story['a']}" in result.stdout
    assert "cases opened by the person (0)" in result.stdout
    a = desk.messages(story["a"])
    assert a[0].sender_email == X and "Rückruf bitte unter 0211 4711" in a[0].body_text
    assert desk.ticket(story["a"]).requester_email == X
    assert X not in json.dumps([m.recipients for m in desk.messages(story["b"])]).lower()
    c = imap_server.client()
    try:
        c.select_folder("Processed")
        copies = [decoded_text(bytes(d[b"BODY[]"])) for d in c.fetch(c.search("ALL"), [b"BODY.PEEK[]"]).values()]
    finally:
        c.logout()
    assert any("Rückruf bitte unter 0211 4711" in k for k in copies), "the held case's IMAP copy stays"
    assert not any("Die Daten liegen bei mir" in k for k in copies), "his mail on Petra's case went"

    assert _run(desk, "privacy", "hold", story["a"], "--release").stdout.strip() == f"{story['a']}: hold released"
    again = _run(desk, "privacy", "erase", X, input="y\n")
    assert "This cannot be undone" in again.stdout
    assert f"cases opened by the person (1): {story['a']}" in again.stdout
    assert desk.ticket(story["a"]).requester_email != X


def test_export_of_a_customer_with_three_cases_and_attachments(desk, tmp_path):
    cases = []
    for i, subject in enumerate(["Lizenzserver startet nicht", "Drucker <b>druckt</b> nicht", "Rechnung falsch"]):
        desk.clock.now += timedelta(hours=1)
        case, note, ack = _open(
            desk,
            CUSTOMER,
            subject,
            f"Text des Falls {i + 1}.",
            attachments=[(f"anhang-{i + 1}.txt", "text/plain", f"Anhang {i + 1} von Jürgen".encode())],
        )
        cases.append(case)
        if i == 0:
            first_ack = ack
    desk.deliver(_agent_reply(note, "Wir prüfen die Rechnung.\n\nAnna"))
    desk.clock.now += timedelta(minutes=5)
    desk.deliver(_dsn(first_ack))  # his first acknowledgement bounced: a suppression entry
    _open(desk, OTHER, "Frage", "Olgas Text, nicht Jürgens.")
    out = tmp_path / "juergen.zip"

    result = _run(desk, "privacy", "export", X, "-o", str(out), "--language", "de")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"{out}: 3 cases")
    with zipfile.ZipFile(out) as z:
        names = set(z.namelist())
        data = json.loads(z.read("data.json"))
        html = z.read("index.html").decode()
        assert [c["case_number"] for c in data["cases"]] == cases
        for i, c in enumerate(data["cases"]):
            assert c["role"] == "requester"
            (inbound,) = [m for m in c["messages"] if m["direction"] == "in" and m["from"] == X]
            assert z.read(inbound["text"]).decode().startswith(f"Text des Falls {i + 1}.")
            assert inbound["raw"] in names and f"Text des Falls {i + 1}." in decoded_text(z.read(inbound["raw"]))
            (att,) = inbound["attachments"]
            assert att["filename"] == f"anhang-{i + 1}.txt"
            assert z.read(att["file"]) == f"Anhang {i + 1} von Jürgen".encode()
            assert c["case_number"] in html and att["filename"] in html
        relays = [m for m in data["cases"][2]["messages"] if m["kind"] == "relay"]
        assert relays and "Wir prüfen die Rechnung." in decoded_text(z.read(relays[0]["raw"]))
        assert "Drucker &lt;b&gt;druckt&lt;/b&gt; nicht" in html and "<b>druckt</b>" not in html
        assert "Gespeicherte Daten zu juergen.mueller@kunde.example" in html
        assert not any("Olga" in z.read(n).decode("utf-8", "replace") for n in names)
        assert [(h["email"], h["state"], h["permanent"]) for h in data["suppression"]] == [(X, "failing", True)]
        assert data["suppression"][0]["suppressed_until"] and "keine automatische Mail bis" in html
        assert [m["kind"] for m in data["automatic_mails"]] == ["ack", "ack", "ack"]
        kinds = [e["kind"] for e in data["cases"][0]["events"]]
        assert kinds[:3] == ["created", "ack_queued", "agents_notified"] and "delivery_failed" in kinds
        assert "delivery_failed" in html and "ack_queued" in html
    print(html[:1500])


# -- retention -------------------------------------------------------------------------------------------

RETENTION = """
[retention]
raw_days = 90
attachment_days = 90
case_days = 1095
noise_days = 30
quarantine_days = 30
processed_folder_days = 1455
"""
# The desk's clock starts 2026-11-23 and the retention test ends 1460 days later: the Processed folder
# keeps what the IMAP server received after 2026-11-28 (every mail of the test, appended now), and loses
# a mail that arrived there on 2026-01-05.


def _retention_desk(tmp_path, imap_server, smtp_sink, db_url) -> Desk:
    return make_desk(
        tmp_path, imap_server, smtp_sink, db_url, queue_extra=QUEUE_EXTRA + "\n" + "", conversations=RETENTION
    )


def _closed_case(desk: Desk, sender, subject: str, file: bytes) -> str:
    case, note, _ = _open(
        desk, sender, subject, f"{subject}: bitte helfen.", attachments=[("f.bin", "application/octet-stream", file)]
    )
    desk.deliver(_agent_reply(note, "#solve\nErledigt.\n\nAnna"))
    desk.deliver(_agent_reply(note, "#close"))
    assert desk.ticket(case).status == "closed"
    return case


def _noise_and_quarantine(desk: Desk, tag: str) -> None:
    """An out-of-office reply that answers nothing of ours (noise), and a mail refused before parsing
    (too many MIME parts: quarantined)."""
    desk.deliver(
        make_mail(
            subject=f"Abwesenheitsnotiz {tag}",
            body="Ich bin bis Montag nicht im Büro.",
            sender=("Otto Abwesend", f"otto.{tag}@kunde.example"),
            headers={"Auto-Submitted": "auto-replied"},
        )
    )
    parts = [(f"p{i}.txt", "text/plain", b"x") for i in range(1001)]
    desk.deliver(make_mail(subject=f"Logs {tag}", body="Alle Logs.", sender=OTHER, attachments=parts))


def _noise_and_quarantine_raws(desk: Desk) -> dict[str, str]:
    """'noise <tag>' / 'quarantine <tag>' → the raw file's path, of the rows that are there."""
    from mailbridge.store.models import Message

    out = {}
    with session_scope(desk.app.session_factory) as s:
        for m in s.scalars(select(Message).where(Message.ticket_id.is_(None), Message.direction == "in")):
            out["noise " + m.subject.split()[-1]] = m.raw.path
        for q in s.scalars(select(Quarantine)):
            out["quarantine " + (q.subject or "").split()[-1]] = q.raw.path
    return out


def _state(desk: Desk, case: str) -> dict:
    msgs = desk.messages(case)
    requester = desk.ticket(case).requester_email
    with session_scope(desk.app.session_factory) as s:
        raws = [s.get(RawMessage, m.raw_id) for m in msgs if m.raw_id]
        atts = s.scalars(select(AttachmentRow).where(AttachmentRow.message_id.in_([m.id for m in msgs]))).all()
        return {
            "raw_files": sum((desk.app.raw_store.root / r.path).exists() for r in raws),
            "attachment_files": sum(
                (desk.app.attachment_store.root / desk.app.attachment_store.relpath(a.sha256)).exists() for a in atts
            ),
            "texts": sum(bool(m.body_text) for m in msgs),
            "requester": requester,
        }


def test_retention_removes_exactly_what_the_settings_say_and_the_sla_report_stays(
    tmp_path, imap_server, smtp_sink, db_url, imap_env
):
    desk = _retention_desk(tmp_path, imap_server, smtp_sink, db_url)
    try:
        start = desk.clock.now
        _noise_and_quarantine(desk, "alt")  # 4 years old at the end: they go
        old = _closed_case(desk, CUSTOMER, "Alter Fall", b"old file " * 50)  # closed now: 4 years old at the end
        desk.clock.now = start + timedelta(days=1095 + 365 - 100)
        middle = _closed_case(desk, CUSTOMER2, "Mittlerer Fall", b"middle file " * 50)  # 100 days at the end
        desk.clock.now = start + timedelta(days=1095 + 365 - 10)
        young = _closed_case(desk, OTHER, "Junger Fall", b"young file " * 50)  # 10 days at the end
        held = _closed_case(desk, ("Hanna Held", "hanna@held.example"), "Gehaltener Fall", b"held " * 50)
        _noise_and_quarantine(desk, "neu")  # 10 days old at the end: they stay
        desk.clock.now = start + timedelta(days=1095 + 365)
        noise_raws = _noise_and_quarantine_raws(desk)
        assert sorted(noise_raws) == ["noise alt", "noise neu", "quarantine alt", "quarantine neu"]
        assert _run(desk, "privacy", "hold", held).exit_code == 0
        c = imap_server.client()
        try:
            c.append(
                "Processed",
                make_mail(subject="Ganz alt", sender=OTHER),
                msg_time=datetime(2026, 1, 5, 12, 0, tzinfo=UTC),
            )
            c.select_folder("Processed")
            in_processed = len(c.search("ALL"))
        finally:
            c.logout()
        cases = {"old": old, "middle": middle, "young": young, "held": held}
        before = {k: _state(desk, c) for k, c in cases.items()}
        assert all(s["raw_files"] >= 3 and s["attachment_files"] == 1 and s["texts"] >= 3 for s in before.values())
        explain_before = {k: _run(desk, "sla", "explain", c).stdout for k, c in cases.items()}
        sla_before = {k: _sla(desk, c) for k, c in cases.items()}
        # The support lead's reports over the whole time (mailbridge report, CSV): the same figures after.
        span = ["--from", (start - timedelta(days=1)).date().isoformat(), "--to", desk.clock.now.date().isoformat()]
        reports = {
            "sla": ["report", "sla", *span, "--by", "queue", "--period", "month", "--format", "csv"],
            "volume": ["report", "volume", *span, "--period", "week", "--format", "csv"],
        }
        reports_before = {k: _run(desk, *args).stdout for k, args in reports.items()}
        assert all(out.count("\n") > 10 for out in reports_before.values()), reports_before
        rows = [line.split(",") for line in reports_before["sla"].splitlines()[1:]]
        assert sum(int(r[2]) for r in rows if r[1] == "(all)") == 4  # the four cases, each in its month

        dry = _run(desk, "privacy", "retention", "--dry-run")
        assert dry.exit_code == 0 and "would remove" in dry.stdout, dry.output
        dry_counts = dry.stdout.splitlines()[1:]
        assert {k: _state(desk, c) for k, c in cases.items()} == before

        result = _run(desk, "privacy", "retention")
        assert result.exit_code == 0, result.output
        print(result.stdout)
        after = {k: _state(desk, c) for k, c in cases.items()}
        assert after["old"] == {
            "raw_files": 0,
            "attachment_files": 0,
            "texts": 0,
            "requester": "removed-1@removed.invalid",
        }
        assert after["middle"] == {**before["middle"], "raw_files": 0, "attachment_files": 0}
        history = desk.events(old)
        assert ("command", {"name": "close", "arg": None, "by": AGENT[1]}) in history, "the agent stays named"
        assert CUSTOMER[1] not in json.dumps(history) and "removed-1@removed.invalid" in json.dumps(history)
        assert all(m.message_id and "removed" not in m.message_id for m in desk.messages(old)), "Message-IDs stay"
        assert after["young"] == before["young"] and after["held"] == before["held"]
        assert "  cases: 1" in result.stdout
        # The old auto-reply and the notice we sent about the old quarantined mail; that notice's bytes.
        assert "  noise_messages: 2" in result.stdout and "  quarantined_mails: 1" in result.stdout
        assert "  sent_mails_of_no_case: 1" in result.stdout
        assert sorted(_noise_and_quarantine_raws(desk)) == ["noise neu", "quarantine neu"]
        assert not (desk.app.raw_store.root / noise_raws["noise alt"]).exists()
        assert not (desk.app.raw_store.root / noise_raws["quarantine alt"]).exists()
        assert (desk.app.raw_store.root / noise_raws["noise neu"]).exists()
        # the old and middle cases' raw mails, the old auto-reply's and the old quarantined mail's
        assert f"  raw_files: {before['old']['raw_files'] + before['middle']['raw_files'] + 2}" in result.stdout
        assert "  imap_expunged: 1" in result.stdout
        assert result.stdout.splitlines()[1:] == dry_counts, "the dry run counted what the run removed"
        c = imap_server.client()
        try:
            c.select_folder("Processed")
            left = c.fetch(c.search("ALL"), [b"BODY.PEEK[HEADER.FIELDS (SUBJECT)]"])
        finally:
            c.logout()
        subjects = [bytes(d[b"BODY[HEADER.FIELDS (SUBJECT)]"]).decode() for d in left.values()]
        assert len(subjects) == in_processed - 1 and not any("Ganz alt" in x for x in subjects)

        # The SLA report reads the same (only the removed subject differs).
        assert {k: _sla(desk, c) for k, c in cases.items()} == sla_before
        assert {k: _run(desk, *args).stdout for k, args in reports.items()} == reports_before
        for k, c in cases.items():
            now = _run(desk, "sla", "explain", c).stdout
            if k == "old":
                now = now.replace("[removed]", "Alter Fall")
            assert now == explain_before[k], k
        with session_scope(desk.app.session_factory) as s:
            (run,) = s.scalars(select(RetentionRun).where(RetentionRun.dry_run.is_(False))).all()
            assert run.finished_at is not None and run.counts["cases"] == 1 and run.error is None
        # A second run finds nothing more.
        desk.clock.now += timedelta(minutes=1)
        again = _run(desk, "privacy", "retention")
        assert "  cases: 0" not in again.stdout and "raw_files" not in again.stdout, again.stdout
    finally:
        desk.app.close()


def test_two_instances_run_the_daily_retention_once(tmp_path, imap_server, smtp_sink, db_url, imap_env):
    if not db_url.startswith("postgresql"):
        pytest.skip("several instances share a PostgreSQL database")
    desk = _retention_desk(tmp_path, imap_server, smtp_sink, db_url)
    try:
        start = desk.clock.now
        cases = [
            _closed_case(desk, (f"K{i}", f"k{i}@kunde.example"), f"Fall {i}", f"file {i}".encode() * 40)
            for i in range(6)
        ]
        desk.clock.now = start + timedelta(days=1200)
        apps = [App(load_settings(desk.app.settings.source), clock=desk.clock) for _ in range(2)]
        barrier = threading.Barrier(2)
        reports = [None, None]

        def daily(i):
            barrier.wait()
            reports[i] = apps[i].retention().daily()

        def manual(i):
            barrier.wait()
            reports[i] = apps[i].retention().run(f"manual:{i}")

        threads = [threading.Thread(target=daily, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(r.skipped for r in reports) == [False, True]
        done = next(r for r in reports if not r.skipped)
        assert done.counts["cases"] == len(cases)
        with session_scope(desk.app.session_factory) as s:
            assert len(s.scalars(select(RetentionRun)).all()) == 1

        # Two manual runs at once (different keys): each case is claimed by one of them.
        more = [
            _closed_case(desk, (f"M{i}", f"m{i}@kunde.example"), f"Neu {i}", f"new {i}".encode() * 40) for i in range(8)
        ]
        desk.clock.now += timedelta(days=1200)
        threads = [threading.Thread(target=manual, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sum(r.counts.get("cases", 0) for r in reports) == len(more)
        for a in apps:
            a.close()
    finally:
        desk.app.close()


def test_the_service_runs_retention_daily_and_records_it(tmp_path, imap_server, smtp_sink, db_url, imap_env):
    """The service's ``retention`` job: one run row per day (a second call the same day does nothing),
    its health row for ``mailbridge status``."""
    from mailbridge.scheduler import Service
    from mailbridge.store.models import JobHealth

    desk = _retention_desk(tmp_path, imap_server, smtp_sink, db_url)
    try:
        case = _closed_case(desk, CUSTOMER, "Alter Fall", b"old " * 50)
        desk.clock.now += timedelta(days=1100)
        service = Service(desk.app)
        service._retention()
        service._retention()
        with session_scope(desk.app.session_factory) as s:
            (run,) = s.scalars(select(RetentionRun)).all()
            assert run.run_key == f"daily:{desk.clock.now.date().isoformat()}" and run.counts["cases"] == 1
            job = s.get(JobHealth, "retention")
            assert job.last_success_at == desk.clock.now and job.last_error is None
        assert desk.ticket(case).subject == "[removed]"
    finally:
        desk.app.close()


def test_erase_merges_the_same_address_in_two_spellings_on_one_case(desk):
    """Two participant rows of one case whose addresses differ only in case become one pseudonym row
    (not a unique-key violation that would stop the erasure)."""
    _open(desk, CUSTOMER, "Lizenz", "Text.")
    with session_scope(desk.app.session_factory) as s:
        tid = s.scalar(select(Participant.ticket_id))
        s.add(Participant(ticket_id=tid, email=X.title(), name="J. M.", role="customer", added_at=desk.clock.now))
    result = _run(desk, "privacy", "erase", X, "--yes")
    assert result.exit_code == 0, result.output
    with session_scope(desk.app.session_factory) as s:
        rows = s.execute(select(Participant.email, Participant.role)).all()
    assert len(rows) == 1 and rows[0].email.startswith("erased-") and rows[0].role == "erased"


def test_erase_with_the_imap_server_away_erases_the_database_says_so_and_a_second_run_cleans_imap(
    desk, db_url, imap_server, tmp_path
):
    """IMAP unreachable: the database and var/ are erased all the same, the output names the account
    and the exit code is 1; run again once the server is back, the Processed copies go too."""
    from mailbridge.embedded import free_port

    _open(desk, CUSTOMER, "Lizenzserver startet nicht", "Rückruf bitte unter 0211 4711.")
    config = desk.app.settings.source.read_text(encoding="utf-8")
    away = tmp_path / "away.toml"
    away.write_text(config.replace(f"port = {imap_server.port}\n", f"port = {free_port()}\n", 1), encoding="utf-8")

    first = _run(desk, "privacy", "erase", X, "--yes", config=away)
    assert first.exit_code == 1, first.output
    assert "  IMAP: account main: " in first.stdout and "Connection refused" in first.stdout
    assert _db_hits(db_url, X) == [] and _file_hits(Path(desk.app.settings.var_dir), X) == []
    assert _imap_hits(imap_server, X) != []

    second = _run(desk, "privacy", "erase", X, "--yes")
    assert second.exit_code == 0, second.output
    assert "IMAP main/Processed: mails deleted: 1" in second.stdout
    assert _imap_hits(imap_server, X) == []


def test_a_retention_run_stops_with_the_service_and_the_next_one_goes_on(
    tmp_path, imap_server, smtp_sink, db_url, imap_env
):
    desk = _retention_desk(tmp_path, imap_server, smtp_sink, db_url)
    try:
        case = _closed_case(desk, CUSTOMER, "Alter Fall", b"old " * 50)
        desk.clock.now += timedelta(days=1100)
        stopped = desk.app.retention(should_stop=lambda: True).run()
        assert stopped.counts == {} and stopped.errors == ["stopped with the service; the next run goes on"]
        assert desk.ticket(case).subject == "Alter Fall"
        desk.clock.now += timedelta(minutes=1)
        assert desk.app.retention().run().counts["cases"] == 1
        with session_scope(desk.app.session_factory) as s:
            errors = [r.error for r in s.scalars(select(RetentionRun).order_by(RetentionRun.id))]
        assert errors == ["stopped with the service; the next run goes on", None]
    finally:
        desk.app.close()
