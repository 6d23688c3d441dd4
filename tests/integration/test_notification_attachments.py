"""The customer's attachments in the agents' notification, through real servers: the mail in through
IMAP (pymap), the notification read back from the SMTP server (aiosmtpd), the download links served
by ``mailbridge web`` (uvicorn on loopback), the rows in SQLite and PostgreSQL. And the agent's files
in the relay to the customer."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import timedelta
from email import message_from_bytes
from email.policy import default

import pytest
from sqlalchemy import select

from mailbridge.app import App
from mailbridge.embedded import free_port
from mailbridge.settings import load_settings
from mailbridge.store.db import session_scope
from mailbridge.store.models import AttachmentRow
from tests.integration.attachment_support import (
    LOG,
    PNG,
    TRACE_SIZE,
    WebServer,
    customer_mail,
    trace_bytes,
    web_config,
)
from tests.integration.conversation_support import AGENT, AGENT2, CUSTOMER, QUEUE_EXTRA, TEAM, make_desk, to
from tests.support import IMAP_PASSWORD, IMAP_PASSWORD_ENV, SUPPORT_ADDRESS, make_mail

LINK_RE = re.compile(r"https://support\.example/attachments/\S+")


def _desk(tmp_path, imap_server, smtp_sink, db_url, *, base_url="https://support.example/", queue_extra=QUEUE_EXTRA):
    return make_desk(
        tmp_path,
        imap_server,
        smtp_sink,
        db_url,
        queue_extra=queue_extra,
        conversations=web_config(tmp_path, base_url=base_url),
    )


def _parts(sent) -> list:
    """The notification's attachment parts (file and inline), parsed as a mail client does."""
    return [p for p in sent.msg.walk() if p.get_content_disposition() in ("attachment", "inline")]


def _stored(desk) -> list[AttachmentRow]:
    with session_scope(desk.app.session_factory) as s:
        rows = list(s.scalars(select(AttachmentRow).order_by(AttachmentRow.id)))
        s.expunge_all()
        return rows


def test_notification_carries_a_2mb_log_file_and_the_inline_image(tmp_path, imap_server, smtp_sink, db_url, imap_env):
    desk = _desk(tmp_path, imap_server, smtp_sink, db_url)
    try:
        sent = desk.deliver(
            customer_mail(
                sender=CUSTOMER,
                to=SUPPORT_ADDRESS,
                subject="Alarm an der KC4",
                # A path and a direction override in the name: stored and sent as "kc4_alarm.log".
                files=[("C:\\Logs\\kc4_alarm\u202e.log", "text/plain", LOG)],
                inline_png=PNG,
            )
        )
        (note,) = to(sent, TEAM)
        print(note.msg.as_string()[:3000])
        stored = {r.filename: r for r in _stored(desk)}
        assert set(stored) == {"kc4_alarm.log", "screenshot.png"}

        parts = {p.get_filename(): p for p in _parts(note)}
        assert set(parts) == {"kc4_alarm.log", "screenshot.png"}
        log_part = parts["kc4_alarm.log"]
        assert log_part.get_content_disposition() == "attachment"
        assert log_part.get_payload(decode=True) == LOG
        assert hashlib.sha256(log_part.get_payload(decode=True)).hexdigest() == stored["kc4_alarm.log"].sha256
        # The inline image keeps its Content-ID, beside the HTML that shows it (test_notification_html.py).
        img = parts["screenshot.png"]
        assert img.get_content_disposition() == "inline"
        assert img["Content-ID"] == "<screenshot1@kunde.example>"
        assert img.get_content_type() == "image/png" and img.get_payload(decode=True) == PNG
        # Outlook's and Thunderbird's shape: multipart/mixed, the text (and HTML) first, the files after it.
        assert note.msg.get_content_type() == "multipart/mixed"
        first = note.msg.get_payload()[0]
        assert first.get_content_type() == "multipart/alternative"
        assert "Attachments: screenshot.png, kc4_alarm.log" in note.text
        assert "Not attached" not in note.text
        assert len(note.msg.as_bytes()) > len(LOG)
        # The acknowledgement to the customer carries no file back.
        (ack,) = to(sent, CUSTOMER[1])
        assert not _parts(ack)
    finally:
        desk.app.close()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_30mb_attachment_is_listed_with_a_link_only_agents_can_use(tmp_path, imap_server, smtp_sink, db_url, imap_env):
    """Two recipients: each gets a mail of its own with a link issued to them. The link gives the
    bytes on the running web app; tampered, expired, or no longer an agent's: refused alike."""
    bert = AGENT2[1]
    queue_extra = f'agents = ["{AGENT[1]}", "{bert}"]\nnotify = ["{TEAM}", "{bert}"]\n'
    desk = _desk(tmp_path, imap_server, smtp_sink, db_url, queue_extra=queue_extra)
    trace = trace_bytes()
    try:
        sent = desk.deliver(
            customer_mail(
                sender=CUSTOMER,
                to=SUPPORT_ADDRESS,
                subject="Alarm an der KC4, Trace anbei",
                files=[("kc4_trace.zip", "application/zip", trace), ("kc4_alarm.log", "text/plain", LOG)],
            )
        )
        (team_note,) = to(sent, TEAM)
        (bert_note,) = to(sent, bert)
        assert team_note.rcpt_tos == [TEAM] and bert_note.rcpt_tos == [bert]
        print(team_note.text)
        assert "Attachments: kc4_alarm.log" in team_note.text
        assert "kc4_trace.zip (30.2 MB), download (agents of this queue, 30 days):" in team_note.text
        assert [p.get_filename() for p in _parts(team_note)] == ["kc4_alarm.log"]
        assert _parts(team_note)[0].get_payload(decode=True) == LOG
        assert len(team_note.msg.as_bytes()) < 4 * 1024 * 1024
        (team_link,) = LINK_RE.findall(team_note.text)
        (bert_link,) = LINK_RE.findall(bert_note.text)
        assert team_link != bert_link
        # Two copies of one notification: one Message-ID, recorded once on the case (so the case
        # lists one notification and the hourly cap counts one), its recipients both.
        assert team_note.header("Message-ID") == bert_note.header("Message-ID")
        notes = [m for m in desk.messages(desk.tickets()[0].case_number) if m.kind == "notification"]
        assert len(notes) == 1 and sorted(notes[0].recipients) == sorted([TEAM, bert])
        (row,) = [r for r in _stored(desk) if r.filename == "kc4_trace.zip"]
        assert row.size == TRACE_SIZE

        with WebServer(desk.app) as web:
            status, headers, body = web.get(team_link)
            assert status == 200 and body == trace
            assert headers["content-type"] == "application/zip"
            assert headers["x-content-type-options"] == "nosniff"
            assert headers["content-disposition"] == (
                "attachment; filename=\"kc4_trace.zip\"; filename*=UTF-8''kc4_trace.zip"
            )
            assert web.get(bert_link)[0] == 200
            health = web.get("https://support.example/healthz")
            assert health[0] == 200 and health[2] == b"ok\n"

            # Tampered: one character of the signature changed.
            tampered = team_link[:-1] + ("A" if team_link[-1] != "A" else "B")
            refused = web.get(tampered)
            assert refused[0] == 404 and trace[:100] not in refused[2]
            # A link for another attachment id cannot be made by editing the payload either.
            head, _, rest = team_link.rpartition("/")[2].partition(".")
            assert web.get(f"https://support.example/attachments/x{head}.{rest}")[0] == 404
            # Expired: 31 days later (the app's clock); the same answer as a forged link.
            desk.clock.now += timedelta(days=31)
            assert web.get(team_link)[::2] == refused[::2]
            desk.clock.now -= timedelta(days=31)
            assert web.get(team_link)[0] == 200

        # Bert leaves the queue: his link stops working, the team's still works.
        config = tmp_path / "mailbridge.toml"
        config.write_text(
            config.read_text(encoding="utf-8").replace(queue_extra, f'agents = ["{AGENT[1]}"]\nnotify = ["{TEAM}"]\n'),
            encoding="utf-8",
        )
        later = App(load_settings(config), clock=desk.clock)
        try:
            with WebServer(later) as web:
                assert web.get(bert_link)[::2] == refused[::2]
                status, _, body = web.get(team_link)
                assert status == 200 and body == trace
        finally:
            later.close()
    finally:
        desk.app.close()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_without_the_web_app_a_large_file_is_listed_honestly(tmp_path, imap_server, smtp_sink, db_url, imap_env):
    """No [web] base_url: a file left out is named with its size (in the queue's language, here the
    German hotline's) and where it is, without a link. An 8 MB file is within the 10 MB budget, but
    base64 would make the mail larger than the SMTP server takes (smtp.max_message_bytes, Postfix's
    default 10,240,000): it stays behind and the notification goes out."""
    desk = _desk(tmp_path, imap_server, smtp_sink, db_url, base_url=None)
    config = tmp_path / "mailbridge.toml"
    text = config.read_text(encoding="utf-8")
    config.write_text(
        text.replace('display_name = "Vendor Hotline"', f'display_name = "Vendor Hotline"\nnotify = ["{TEAM}"]'),
        encoding="utf-8",
    )
    desk.app.close()
    desk.app = App(load_settings(config), clock=desk.clock)
    try:
        sent = desk.deliver(
            customer_mail(
                sender=CUSTOMER,
                to="hotline@vendor.example",
                subject="Trace",
                files=[
                    ("kc4_trace.bin", "application/octet-stream", b"\x01" * (8 * 1024 * 1024)),
                    ("notiz.txt", "text/plain", b"klein\n"),
                ],
            )
        )
        (note,) = to(sent, TEAM)
        print(note.text)
        assert "Anhänge: notiz.txt" in note.text
        assert "Nicht angehängt (eine Benachrichtigung trägt Dateien bis 7,1 MB insgesamt):" in note.text
        assert "kc4_trace.bin (8,0 MB): zu groß zum Anhängen; in der Originalmail des Falls enthalten" in note.text
        assert len(note.msg.as_bytes()) < 10_240_000
        assert "http" not in note.text
        assert [p.get_filename() for p in _parts(note)] == ["notiz.txt"]
    finally:
        desk.app.close()


def test_relay_carries_the_agents_files_with_a_non_ascii_name(tmp_path, imap_server, smtp_sink, db_url, imap_env):
    desk = _desk(tmp_path, imap_server, smtp_sink, db_url)
    try:
        sent = desk.deliver(make_mail(subject="Export bricht ab", sender=CUSTOMER, message_id="<r1@kunde.example>"))
        (note,) = to(sent, TEAM)
        nid = note.header("Message-ID")
        patch = "Änderung für Müller – Prüfprotokoll.pdf"
        data = b"%PDF-1.7\n" + bytes(range(256)) * 400
        sent = desk.deliver(
            make_mail(
                subject=f"AW: {note.header('Subject')}",
                body="Guten Tag Herr Müller,\n\nanbei das Protokoll.\n\nAnna Agent",
                sender=AGENT,
                headers={"In-Reply-To": nid, "References": nid},
                attachments=[(patch, "application/pdf", data)],
            )
        )
        (relay,) = to(sent, CUSTOMER[1])
        reread = message_from_bytes(relay.msg.as_bytes(), policy=default)
        (part,) = [p for p in reread.walk() if p.get_content_disposition() == "attachment"]
        assert part.get_filename() == patch
        assert part.get_payload(decode=True) == data
        assert part.get_content_type() == "application/pdf"
        assert "anbei das Protokoll" in relay.text
    finally:
        desk.app.close()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_mailbridge_web_command_serves_the_link(tmp_path, imap_server, smtp_sink, db_url, imap_env, monkeypatch):
    """``mailbridge web`` as an operator runs it: a subprocess on ``[web] listen``, the key from the
    environment (never in its output); SIGTERM stops it."""
    port = free_port()
    secret = "s" * 48
    monkeypatch.setenv("MB_TEST_WEB_SECRET", secret)
    env = {**os.environ, IMAP_PASSWORD_ENV: IMAP_PASSWORD}
    desk = make_desk(
        tmp_path,
        imap_server,
        smtp_sink,
        db_url,
        conversations=(
            "\n[notifications]\nattach_max_bytes = 1000\n\n"
            f'[web]\nlisten = "127.0.0.1:{port}"\nbase_url = "https://support.example/"\n'
            'secret_env = "MB_TEST_WEB_SECRET"\n'
        ),
    )
    config = tmp_path / "mailbridge.toml"
    data = b"%PDF-1.7\n" + bytes(range(256)) * 20
    name = "Prüfprotokoll März.pdf"
    try:
        sent = desk.deliver(
            customer_mail(sender=CUSTOMER, to=SUPPORT_ADDRESS, subject="PDF", files=[(name, "application/pdf", data)])
        )
        (note,) = to(sent, TEAM)
        assert f"{name} (5 KB), download" in note.text and LINK_RE.search(note.text)
        # The link in the mail was signed at the desk's clock; the command runs at the wall clock.
        with session_scope(desk.app.session_factory) as s:
            (row_id,) = s.scalars(select(AttachmentRow.id)).all()
        fresh = App(load_settings(config))
        try:
            link = fresh.attachment_links.url(row_id, TEAM)
        finally:
            fresh.close()
    finally:
        desk.app.close()
    log = tmp_path / "web.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mailbridge", "--config", str(config), "web"], env=env, stdout=out, stderr=out
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
                    assert r.status == 200 and r.read() == b"ok\n"
                break
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
        local = link.replace("https://support.example/", f"http://127.0.0.1:{port}/")
        with urllib.request.urlopen(local, timeout=10) as r:  # noqa: S310 - loopback http only
            assert r.status == 200 and r.read() == data
            assert r.headers["Content-Disposition"] == (
                "attachment; filename=\"Prufprotokoll Marz.pdf\"; filename*=UTF-8''Pr%C3%BCfprotokoll%20M%C3%A4rz.pdf"
            )
            assert r.headers["Content-Type"] == "application/pdf"
            assert r.headers["X-Content-Type-Options"] == "nosniff"
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(15)
    output = log.read_text(encoding="utf-8")
    print(output)
    assert code in (0, -signal.SIGTERM), output
    assert secret not in output and link.rsplit("/", 1)[1] not in output
    assert "attachment_downloaded" in output
