"""``mailbridge demo``: the whole service on this machine, with nothing but the installed package.

Starts a real IMAP server (pymap, in memory, in a subprocess) and a real SMTP server (aiosmtpd)
on free loopback ports, writes a complete configuration and a SQLite database into a work
directory, delivers a handful of realistic support mails with IMAP APPEND, and runs the real
service (:class:`mailbridge.scheduler.Service`) until every expected acknowledgement has reached
the SMTP server or a time limit passes. A customer's reply to the first acknowledgement and a
colleague's mail quoting the case number are delivered only after that acknowledgement arrived,
so they land on the case deterministically. Then it prints the tickets and each acknowledgement
exactly as the SMTP server received it.

Nothing here is a stand-in: mailbridge reaches both servers over TCP, as in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import logging
import re
import secrets
import struct
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

from mailbridge.embedded import PymapServer, ReceivedMail, SmtpSink
from mailbridge.settings import Settings, load_settings

# The whole run (servers up, mails in, acknowledgements out) must end well within a minute.
SERVICE_TIMEOUT_SECONDS = 40.0
# How often the demo looks at the SMTP server, the mailbox and the outbox while the service runs.
CHECK_INTERVAL_SECONDS = 0.2
# Exit codes: 0 all acknowledgements arrived (and no others), 1 one is missing or extra,
# 2 the demo cannot start: the --keep directory is not empty, or the demo extra is not installed.
EXIT_OK = 0
EXIT_MISSING = 1
EXIT_USAGE = 2

IMAP_USER = "support"
VENDOR_DOMAIN = "kessler-wzm.example"
SOFTWARE_ADDRESS = f"software-support@{VENDOR_DOMAIN}"
SERVICE_ADDRESS = f"service@{VENDOR_DOMAIN}"
# Case numbers start here so they have a realistic width from the first one (C2041...).
FIRST_SERIAL = 204100
# The demo runs as production does: IMAP IDLE pushes new mail; the folder is re-checked every
# few seconds as well.
DEMO_USE_IDLE = True
DEMO_POLL_INTERVAL_SECONDS = 5

RULE = "=" * 100
SUBRULE = "-" * 100


# ----------------------------------------------------------------------------- sample mails


@dataclass
class DemoMail:
    """One mail the demo delivers, and whether the service must acknowledge it."""

    label: str
    raw: bytes
    message_id: str
    sender: str
    to: str
    subject: str
    expect_ack: bool
    note: str = ""


def _png(width: int = 160, height: int = 48) -> bytes:
    """A small, valid PNG (a grey dialog with a red title bar), as a screenshot stands in a mail."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = bytearray()
    for y in range(height):
        rows.append(0)  # filter type: none
        for x in range(width):
            if y < 10:
                rows += b"\xc0\x20\x20"
            elif 20 <= y < 24 and 12 <= x < 12 + (x * 7 % 120):
                rows += b"\x30\x30\x30"
            else:
                rows += b"\xee\xee\xee"
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(rows))) + chunk(b"IEND", b"")
    )


def _mail(
    *,
    sender: tuple[str, str],
    to: tuple[str, str],
    subject: str,
    date: datetime,
    text: str | None = None,
    html: str | None = None,
    attachments: list[tuple[str, str, bytes]] = (),  # type: ignore[assignment]
    headers: dict[str, str] | None = None,
    mailer: str = "Mozilla Thunderbird",
) -> tuple[bytes, str]:
    """Mail bytes as a mail client composes them (CRLF line ends, RFC 5322), and the Message-ID."""
    msg = EmailMessage()
    msg["From"] = f"{sender[0]} <{sender[1]}>"
    msg["To"] = f"{to[0]} <{to[1]}>"
    msg["Subject"] = subject
    msg["Date"] = format_datetime(date)
    message_id = make_msgid(domain=sender[1].split("@", 1)[1])
    msg["Message-ID"] = message_id
    msg["X-Mailer"] = mailer
    for k, v in (headers or {}).items():
        msg[k] = v
    if text is not None:
        msg.set_content(text)
        if html is not None:
            msg.add_alternative(html, subtype="html")
    else:
        msg.set_content(html or "", subtype="html")
    for name, ctype, data in attachments:
        maintype, subtype = ctype.split("/", 1)
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return msg.as_bytes(policy=policy.SMTP), message_id.strip("<>")


_CUSTOMER_A = ("Jürgen Müller", "j.mueller@praezisionsteile-schwaben.example")
_SERVICE = ("Kessler Maschinenservice", SERVICE_ADDRESS)
_SOFTWARE = ("Kessler Software Support", SOFTWARE_ADDRESS)

_ALARM_LOG = """\
2026-11-20 06:41:12.331 INFO  KC4 boot complete, firmware 4.2.1 (build 7713), machine M-650-20417
2026-11-20 06:41:15.002 INFO  axis X/Y/Z/B/C referenced
2026-11-20 06:52:40.918 WARN  spindle S1 temperature 61.4 C (limit 65.0 C)
2026-11-20 06:53:02.114 ERROR alarm 2041 SPINDLE_DRIVE_FAULT: DC link undervoltage (412 V < 480 V)
2026-11-20 06:53:02.115 ERROR emergency stop requested by drive S1, program O4711 block N2380
2026-11-20 06:53:02.190 INFO  feed hold, coolant off
2026-11-20 06:58:44.507 ERROR alarm 2041 SPINDLE_DRIVE_FAULT: DC link undervoltage (409 V < 480 V)
2026-11-20 06:58:44.508 INFO  restart inhibited until alarm 2041 is acknowledged by service
"""


def first_mails(now: datetime) -> list[DemoMail]:
    """The mails in the mailbox when the service starts."""
    out: list[DemoMail] = []

    raw, mid = _mail(
        sender=_CUSTOMER_A,
        to=_SERVICE,
        subject="Fehlerklasse 1: KX 650 steht – Alarm 2041 Spindelantrieb nach Steuerungsupdate",
        date=now - timedelta(minutes=14),
        text="""\
Guten Tag,

seit dem Update der Steuerung auf KESSLER CONTROL 4.2.1 gestern Abend steht unser
Bearbeitungszentrum KX 650. Beim Anlauf der Spindel kommt nach wenigen Minuten Alarm 2041
(Spindelantrieb, Zwischenkreis-Unterspannung), die Maschine geht in den Not-Halt und lässt
sich nicht wieder starten. Die Fertigung der Serie für unseren Kunden steht damit komplett.

- Maschinennummer: M-650-20417
- Steuerung: KESSLER CONTROL 4.2.1 (vorher 4.1.8), Antriebsfirmware 7.3
- Ansprechpartner Anwendung: ich selbst, Tel. +49 7071 55810-23
- Log der Steuerung von heute früh anbei.

Wir bitten um dringenden Rückruf.

Mit freundlichen Grüßen
Jürgen Müller
Fertigungsleitung
Präzisionsteile Schwaben GmbH
""",
        attachments=[("kc4_alarm_2026-11-20.log", "text/plain", _ALARM_LOG.encode())],
    )
    out.append(
        DemoMail("1", raw, mid, _CUSTOMER_A[1], SERVICE_ADDRESS, "Fehlerklasse 1: KX 650 steht …", True, "log file")
    )

    sender = ("Sarah Whitfield", "s.whitfield@northgate-aero.example")
    raw, mid = _mail(
        sender=sender,
        to=_SOFTWARE,
        subject="License server exits with error -15 after upgrade to CAM Studio 2026.1",
        date=now - timedelta(minutes=11),
        mailer="Microsoft Outlook 16.0",
        text="""\
Hello,

after upgrading our seats to CAM Studio 2026.1 this morning, the license server no longer
serves any licenses. lmgrd starts, but the vendor daemon exits immediately and the clients
report "Cannot connect to license server system (-15,10:10061)".

Urgency: critical - work severely impaired, 9 of 12 programmers cannot work.
Service contract: SCN 7730-4412
License server: lic01.northgate-aero.example, host ID 00155D3A91F2, Windows Server 2022
Previous version: CAM Studio 2025.3 (worked until yesterday)

A screenshot of the error on a client is attached.

Best regards,
Sarah Whitfield
IT Operations, Northgate Aero Components Ltd
+44 1522 870 114
""",
        attachments=[("license-error.png", "image/png", _png())],
    )
    out.append(
        DemoMail(
            "2", raw, mid, sender[1], SOFTWARE_ADDRESS, "License server exits with error -15 …", True, "screenshot"
        )
    )

    sender = ("Tomasz Nowak", "t.nowak@baltic-moulds.example")
    html = """\
<html><head><meta http-equiv="Content-Type" content="text/html; charset=utf-8"></head>
<body lang="EN-GB"><div class="WordSection1">
<p class="MsoNormal">Dear Support Team,</p>
<p class="MsoNormal">the 5-axis postprocessor for our KX 650 produces wrong G-code for swarf
cutting: the B axis turns the wrong way round at every tool-path transition, so the tool dives
into the part. 3-axis and 3+2 programs are fine.</p>
<table border="1" cellpadding="4">
<tr><td><b>Product</b></td><td>CAM Studio 2025.3 SP2</td></tr>
<tr><td><b>Postprocessor</b></td><td>KX650_5AX_KC4 v3.8</td></tr>
<tr><td><b>Machine number</b></td><td>M-650-19902</td></tr>
<tr><td><b>Urgency</b></td><td>urgent &ndash; work impaired (we run 3+2 for now)</td></tr>
</table>
<p class="MsoNormal">I can send the CAM project and the NC file if that helps.</p>
<p class="MsoNormal">Kind regards<br>Tomasz Nowak<br>NC Programming, Baltic Moulds Sp. z o.o.</p>
</div></body></html>
"""
    raw, mid = _mail(
        sender=sender,
        to=_SOFTWARE,
        subject="Postprocessor outputs wrong B-axis direction for 5-axis swarf cutting",
        date=now - timedelta(minutes=9),
        html=html,
        mailer="Microsoft Outlook 16.0",
    )
    out.append(
        DemoMail("3", raw, mid, sender[1], SOFTWARE_ADDRESS, "Postprocessor outputs wrong B-axis …", True, "HTML only")
    )

    sender = ("Petra Schäfer", "petra.schaefer@werkzeugbau-schaefer.example")
    raw, mid = _mail(
        sender=sender,
        to=_SOFTWARE,
        subject="Lizenzserver nach Windows-Update nicht erreichbar – 12 Arbeitsplätze betroffen",
        date=now - timedelta(minutes=6),
        text="""\
Hallo zusammen,

nach dem Windows-Update heute Nacht erreichen unsere CAM-Arbeitsplätze den Lizenzserver
nicht mehr (Meldung "Lizenzserver antwortet nicht, Fehler -96"). Der Dienst läuft laut
Dienstverwaltung, Port 27000 ist in der Firewall freigegeben.

Lizenzserver: LIZ-SRV02, Host-ID 0019B9F2C41E
Version: CAM Studio 2026.1, Lizenzserver-Dienst 11.19
Ansprechpartner IT: Frank Weber, it@werkzeugbau-schaefer.example, 0711 9988-140

Viele Grüße
Petra Schäfer
Werkzeugbau Schäfer GmbH & Co. KG
""",
        mailer="Apple Mail (2.3774)",
    )
    out.append(
        DemoMail(
            "4",
            raw,
            mid,
            sender[1],
            SOFTWARE_ADDRESS,
            "Lizenzserver nach Windows-Update …",
            True,
            "German mail to the English queue",
        )
    )

    sender = ("Markus Brandt", "m.brandt@praezisionsteile-schwaben.example")
    raw, mid = _mail(
        sender=sender,
        to=_SERVICE,
        subject="Automatische Antwort: Wartungstermin KX 650 im Dezember",
        date=now - timedelta(minutes=3),
        text="""\
Vielen Dank für Ihre Nachricht. Ich bin bis einschließlich 30.11. nicht im Haus und habe
keinen Zugriff auf meine E-Mails. In dringenden Fällen wenden Sie sich bitte an
Jürgen Müller, j.mueller@praezisionsteile-schwaben.example.

Thank you for your message. I am out of the office until 30 November.
""",
        headers={"Auto-Submitted": "auto-replied", "X-Auto-Response-Suppress": "All"},
        mailer="Microsoft Exchange Server",
    )
    out.append(
        DemoMail(
            "5",
            raw,
            mid,
            sender[1],
            SERVICE_ADDRESS,
            "Automatische Antwort: …",
            False,
            "out-of-office: no acknowledgement (RFC 3834)",
        )
    )
    return out


def follow_up_mails(now: datetime, case: str, ack: EmailMessage, first: DemoMail) -> list[DemoMail]:
    """Mails about ``case``, written once its acknowledgement ``ack`` reached the customer."""
    out: list[DemoMail] = []
    ack_id = str(ack["Message-ID"]).strip().strip("<>")
    raw, mid = _mail(
        sender=_CUSTOMER_A,
        to=_SERVICE,
        subject=f"AW: {ack['Subject']}",
        date=now,
        text=f"""\
Hallo,

noch eine Ergänzung: Ansprechpartner IT ist Herr Frank Ott, it@praezisionsteile-schwaben.example,
Tel. +49 7071 55810-40. Die Netzspannung an der Einspeisung haben wir gemessen, 3 x 401 V.

Gruß
Jürgen Müller

Am {format_datetime(now)} schrieb Kessler Maschinenservice:
> vielen Dank für Ihre Nachricht. Wir haben Ihre Anfrage unter der Fallnummer
>     {case}
> aufgenommen.
""",
        headers={"In-Reply-To": f"<{ack_id}>", "References": f"<{first.message_id}> <{ack_id}>"},
    )
    out.append(DemoMail("6", raw, mid, _CUSTOMER_A[1], SERVICE_ADDRESS, f"AW: [{case}] …", False, "reply to the ack"))

    sender = ("Ayşe Demir", "a.demir@praezisionsteile-schwaben.example")
    raw, mid = _mail(
        sender=sender,
        to=_SERVICE,
        subject=f"{case} KX 650 läuft wieder im Notbetrieb",
        date=now,
        text="""\
Guten Tag,

zur Info zu unserem Fall: Mit reduzierter Spindeldrehzahl (max. 8000 1/min) läuft die
Maschine seit 9:40 Uhr wieder, Alarm 2041 ist seither nicht mehr aufgetreten. Wir brauchen
trotzdem eine Lösung, die Serie ist so nicht in der Taktzeit zu fertigen.

Freundliche Grüße
Ayşe Demir
Instandhaltung, Präzisionsteile Schwaben GmbH
""",
    )
    out.append(
        DemoMail(
            "7", raw, mid, sender[1], SERVICE_ADDRESS, f"{case} KX 650 läuft wieder …", False, "case number in subject"
        )
    )
    return out


# ----------------------------------------------------------------------------- configuration


def _toml_str(value: str | Path) -> str:
    # A JSON string is a valid TOML basic string (same escapes; \\uXXXX for the rest).
    return json.dumps(str(value))


def write_demo_config(workdir: Path, imap_port: int, smtp_port: int, password_file: Path) -> Path:
    """A complete configuration for the servers on loopback: one IMAP account, two queues."""
    path = workdir / "mailbridge.toml"
    path.write_text(
        f"""\
# Written by `mailbridge demo`. The servers it names lived only while the demo ran; the database
# under var_dir stays, so `mailbridge --config {path} tickets list` still works.
var_dir = {_toml_str(workdir / "var")}

[case_numbers]
prefix = "C"
digits = 7
first_serial = {FIRST_SERIAL}

[[accounts]]
name = "support"
host = "127.0.0.1"
port = {imap_port}
tls = "none"
user = "{IMAP_USER}"
password_file = {_toml_str(password_file)}
default_queue = "software"
idle = {"true" if DEMO_USE_IDLE else "false"}
poll_interval = {DEMO_POLL_INTERVAL_SECONDS}

[[queues]]
name = "software"
addresses = ["{SOFTWARE_ADDRESS}"]
display_name = "Kessler Software Support"
language = "en"
account = "support"

[[queues]]
name = "machines"
addresses = ["{SERVICE_ADDRESS}"]
display_name = "Kessler Maschinenservice"
language = "de"
account = "support"

[smtp]
host = "127.0.0.1"
port = {smtp_port}
tls = "none"
timeout = 10

[outbox]
interval = 1
backoff_seconds = 1
max_backoff_seconds = 5

[logging]
level = "info"
format = "console"
""",
        encoding="utf-8",
    )
    return path


# ----------------------------------------------------------------------------- running


@dataclass
class DemoRun:
    mails: list[DemoMail] = field(default_factory=list)
    case_of_first: str | None = None
    seconds: float = 0.0
    timed_out: bool = False


def _ack_for(received: list[ReceivedMail], message_id: str) -> list[EmailMessage]:
    """The acknowledgements among ``received`` that answer the mail ``message_id``."""
    out = []
    for r in received:
        m = r.message
        if str(m.get("In-Reply-To", "")).strip().strip("<>") == message_id:
            out.append(m)
    return out


def _mailbox_settled(imap: PymapServer, total: int) -> bool:
    """True when every delivered mail has left INBOX for Processed or Quarantine (committed + moved)."""
    c = imap.client()
    try:
        counts = {}
        for folder in ("INBOX", "Processed", "Quarantine"):
            try:
                counts[folder] = c.folder_status(folder, ["MESSAGES"])[b"MESSAGES"]
            except Exception:  # the folder does not exist (yet)
                counts[folder] = 0
        return counts["INBOX"] == 0 and counts["Processed"] + counts["Quarantine"] == total
    finally:
        with contextlib.suppress(Exception):
            c.logout()


def _outbox_idle(app) -> bool:
    from mailbridge.store import repositories as repo
    from mailbridge.store.db import session_scope

    with session_scope(app.session_factory) as s:
        counts = repo.outbox_counts(s)
    return not counts.get("queued") and not counts.get("sending")


async def _drive(settings: Settings, imap: PymapServer, smtp: SmtpSink, run: DemoRun, out) -> None:
    """Run the service; deliver the follow-ups after the first ack; stop when all is done."""
    from mailbridge.app import App
    from mailbridge.scheduler import Service

    service = Service(App(settings))
    task = asyncio.create_task(service.run(install_signals=False))
    start = time.monotonic()
    deadline = start + SERVICE_TIMEOUT_SECONDS
    first = run.mails[0]
    follow_ups_sent = False
    try:
        while time.monotonic() < deadline and not task.done():
            received = smtp.received
            if not follow_ups_sent:
                acks = _ack_for(received, first.message_id)
                if acks:
                    m = re.search(r"\[([A-Za-z]+\d+)\]", str(acks[0]["Subject"]))
                    if m:
                        run.case_of_first = m.group(1)
                        later = follow_up_mails(datetime.now(UTC), m.group(1), acks[0], first)
                        print(
                            f"\nThe acknowledgement of mail 1 arrived after {time.monotonic() - start:.1f}s "
                            f"({m.group(1)}); the customer answers it:",
                            file=out,
                        )
                        _print_deliveries(later, out)
                        await asyncio.to_thread(imap.append, [d.raw for d in later])
                        run.mails += later
                    follow_ups_sent = True
            elif (
                all(_ack_for(received, d.message_id) for d in run.mails if d.expect_ack)
                and await asyncio.to_thread(_mailbox_settled, imap, len(run.mails))
                and _outbox_idle(service.app)
            ):
                break
            await asyncio.sleep(CHECK_INTERVAL_SECONDS)
        else:
            run.timed_out = not task.done()
        run.seconds = time.monotonic() - start
    finally:
        service.request_stop()
        await task


def _print_deliveries(mails: list[DemoMail], out) -> None:
    for d in mails:
        note = f"  ({d.note})" if d.note else ""
        print(f"  {d.label}. {d.sender} -> {d.to}: {d.subject}{note}", file=out)


# ----------------------------------------------------------------------------- report


def _text_part(msg: EmailMessage) -> str:
    body = msg.get_body(preferencelist=("plain",))
    return body.get_content() if body is not None else "(no text part)"


def _print_ack(r: ReceivedMail, out) -> None:
    m = r.message
    print(f"envelope: MAIL FROM:<{r.mail_from}>  RCPT TO:{', '.join(f'<{a}>' for a in r.rcpt_tos)}", file=out)
    print("headers:", file=out)
    for k, v in m.items():
        # Decoded (RFC 2047) and unfolded; the raw form of one acknowledgement follows below.
        print(f"  {k}: {str(v).strip()}", file=out)
    parts = [p.get_content_type() for p in m.walk() if not p.is_multipart()]
    print(f"parts: {', '.join(parts)}", file=out)
    print("text part (decoded):", file=out)
    for line in _text_part(m).rstrip().splitlines():
        print(f"  | {line}", file=out)


def _report(settings: Settings, smtp: SmtpSink, run: DemoRun, out) -> int:
    from mailbridge import views
    from mailbridge.app import App
    from mailbridge.store import repositories as repo
    from mailbridge.store.db import session_scope

    app = App(settings)
    try:
        print(f"\n{RULE}\nTickets  (mailbridge tickets list)\n{RULE}", file=out)
        print(views.tickets_table(app), file=out)
        with session_scope(app.session_factory) as s:
            cases = [t.case_number for t in reversed(repo.list_tickets(s, limit=100))]
        for case in cases:
            print(f"\n{RULE}\nmailbridge tickets show {case}\n{RULE}", file=out)
            print(views.ticket_detail(app, case), file=out)
        print(f"\n{RULE}\nQuarantine  (mailbridge quarantine list)\n{RULE}", file=out)
        print(views.quarantine_table(app), file=out)
    finally:
        app.close()

    received = smtp.received
    print(f"\n{RULE}\nAcknowledgements as the SMTP server received them ({len(received)})\n{RULE}", file=out)
    for i, r in enumerate(received, 1):
        print(f"{SUBRULE}\n{i}/{len(received)}\n{SUBRULE}", file=out)
        _print_ack(r, out)
    if received:
        print(f"\n{RULE}\nThe raw bytes of acknowledgement 1, as received\n{RULE}", file=out)
        print(received[0].data.decode("utf-8", "replace").replace("\r\n", "\n").rstrip(), file=out)

    # Every mail that expects an acknowledgement has exactly one; no other mail got one.
    missing, doubled = [], []
    for d in run.mails:
        n = len(_ack_for(received, d.message_id))
        if d.expect_ack and n == 0:
            missing.append(d)
        elif n > (1 if d.expect_ack else 0):
            doubled.append(d)
    answered = {d.message_id for d in run.mails}
    stray = [r for r in received if str(r.message.get("In-Reply-To", "")).strip().strip("<>") not in answered]

    expected = sum(d.expect_ack for d in run.mails)
    print(f"\n{RULE}\nSummary\n{RULE}", file=out)
    print(f"  mails delivered:            {len(run.mails)}", file=out)
    print(f"  tickets:                    {len(cases)}", file=out)
    print(f"  acknowledgements expected:  {expected}", file=out)
    print(f"  acknowledgements received:  {len(received)}", file=out)
    print(f"  service ran for:            {run.seconds:.1f}s", file=out)
    ok = True
    if run.timed_out:
        print(f"  the service was stopped after the time limit of {SERVICE_TIMEOUT_SECONDS:.0f}s", file=out)
    if run.case_of_first is None:
        ok = False
        print("  FAILED: mail 1 was never acknowledged, so the follow-up mails were not sent", file=out)
    for d in missing:
        ok = False
        print(f"  FAILED: no acknowledgement for mail {d.label} ({d.subject})", file=out)
    for d in doubled:
        ok = False
        print(f"  FAILED: mail {d.label} ({d.subject}) was acknowledged when it should not have been", file=out)
    for r in stray:
        ok = False
        print(f"  FAILED: an acknowledgement that answers none of the demo's mails: {r.message['Subject']}", file=out)
    if ok:
        print("  OK: every new request was acknowledged exactly once, and nothing else was.", file=out)
    return EXIT_OK if ok else EXIT_MISSING


def _usable_keep_dir(keep: Path) -> str | None:
    """Why ``keep`` cannot hold a demo, or None. A previous demo's database would remember the
    UIDs of another (since vanished) in-memory mailbox, so the directory must be new or empty."""
    if keep.exists() and not keep.is_dir():
        return f"{keep} exists and is not a directory"
    if keep.is_dir() and any(keep.iterdir()):
        return f"{keep} is not empty; give a new or empty directory"
    return None


def run_demo(keep: Path | None) -> int:
    """Run the demo; return 0 when every acknowledgement arrived, 1 when one is missing.

    Args:
        keep: a new or empty directory for the configuration, database and var/ that stays after
            the demo; None uses a temporary directory that is removed afterwards.
    """
    from mailbridge.logging import configure_logging

    out = sys.stdout
    missing = [m for m in ("pymap", "aiosmtpd") if importlib.util.find_spec(m) is None]
    if missing:
        print(
            f"mailbridge demo: needs {' and '.join(missing)}; install the demo extra: pip install 'mailbridge[demo]'",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if keep is not None:
        problem = _usable_keep_dir(keep)
        if problem:
            print(f"mailbridge demo: {problem}", file=sys.stderr)
            return EXIT_USAGE
    with contextlib.ExitStack() as stack:
        if keep is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mailbridge-demo-")))
        else:
            workdir = keep.resolve()
            workdir.mkdir(parents=True, exist_ok=True)

        # Hex, not token_urlsafe: pymap takes it on its command line, where a leading "-" would
        # be read as an option.
        password = secrets.token_hex(16)
        password_file = workdir / "imap-password"
        password_file.write_text(password + "\n", encoding="utf-8")
        password_file.chmod(0o600)

        print("mailbridge demo: an IMAP server, an SMTP server and the service, all on this machine", file=out)
        imap = PymapServer(user=IMAP_USER, password=password).start()
        stack.callback(imap.stop)
        smtp = SmtpSink().start()
        stack.callback(smtp.stop)
        config = write_demo_config(workdir, imap.port, smtp.port, password_file)
        settings = load_settings(config)
        print(f"  IMAP  pymap (in memory)      127.0.0.1:{imap.port}  user {IMAP_USER}", file=out)
        print(f"  SMTP  aiosmtpd (records all) 127.0.0.1:{smtp.port}", file=out)
        print(f"  config    {config}", file=out)
        print(f"  database  {settings.database_url}", file=out)
        for q in settings.queues:
            print(f"  queue {q.name:<9} {', '.join(q.addresses)}  [{q.language}]  {q.display_name}", file=out)

        # Readable log lines on stderr; the report on stdout. APScheduler's per-run INFO lines
        # (one per outbox pass and fetch cycle every second) would drown the service's own events.
        configure_logging(settings.logging.level, settings.logging.format)
        # Alembic announces each of its plugins at INFO, too.
        for noisy in ("apscheduler", "alembic"):
            logging.getLogger(noisy).setLevel(logging.WARNING)

        run = DemoRun(mails=first_mails(datetime.now(UTC)))
        print(f"\nDelivering {len(run.mails)} support mails into INBOX with IMAP APPEND:", file=out)
        _print_deliveries(run.mails, out)
        imap.append([d.raw for d in run.mails])

        print("\nStarting the service (what `mailbridge run` runs) …", file=out)
        out.flush()
        asyncio.run(_drive(settings, imap, smtp, run, out))
        print(f"Service stopped after {run.seconds:.1f}s.", file=out)

        code = _report(settings, smtp, run, out)
        if keep is not None:
            print(f"\nKept in {workdir}: try  mailbridge --config {config} tickets list", file=out)
        out.flush()
        return code
