"""``mailbridge demo``: the whole service on this machine, with nothing but the installed package.

Starts a real IMAP server (pymap, in memory, in a subprocess) and a real SMTP server (aiosmtpd)
on free loopback ports, writes a complete configuration and a SQLite database into a work
directory, delivers a handful of realistic support mails with IMAP APPEND, and runs the real
service (:class:`mailbridge.scheduler.Service`) until every expected mail has reached the SMTP
server or a time limit passes.

The conversation of the first case is played out in order, each step delivered only after the
previous one was processed, so it lands deterministically: the service acknowledges the request
and notifies the queue's agents; the customer and a colleague write again (their mails land on the
case, the agents hear of each); then agent Anna Berger answers the first notification from Outlook
with ``#severity 2`` and ``#pending`` on top, and the service relays her answer to the customer.
Then it prints the tickets and each mail exactly as the SMTP server received it, labelled with what
the service sent it as (its outbox row), and checks the whole exchange.

Nothing here is a stand-in: mailbridge reaches both servers over TCP, as in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import logging
import os
import re
import secrets
import struct
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parsedate_to_datetime
from pathlib import Path

from mailbridge.embedded import PymapServer, ReceivedMail, SmtpSink
from mailbridge.settings import Settings, load_settings

# The whole run (servers up, mails in, acknowledgements, notifications and the relay out) must end
# well within a minute.
SERVICE_TIMEOUT_SECONDS = 40.0
# How often the demo looks at the SMTP server, the mailbox and the outbox while the service runs.
CHECK_INTERVAL_SECONDS = 0.2
# Exit codes: 0 every check of the summary holds (each expected acknowledgement, notification and
# relay arrived exactly once, nothing else was sent, the first case changed as the agent's commands
# said), 1 a check failed, 2 the demo cannot start: the --keep directory is not empty, or the demo
# extra is not installed.
EXIT_OK = 0
EXIT_MISSING = 1
EXIT_USAGE = 2

IMAP_USER = "support"
VENDOR_DOMAIN = "kessler-wzm.example"
SOFTWARE_ADDRESS = f"software-support@{VENDOR_DOMAIN}"
SERVICE_ADDRESS = f"service@{VENDOR_DOMAIN}"
# The agents of each queue, and the team address their notifications go to.
ANNA = ("Anna Berger", f"anna.berger@{VENDOR_DOMAIN}")
MACHINES_AGENTS = [ANNA[1], f"jonas.wirth@{VENDOR_DOMAIN}"]
MACHINES_NOTIFY = f"service-team@{VENDOR_DOMAIN}"
SOFTWARE_AGENTS = [f"emma.clarke@{VENDOR_DOMAIN}", f"lukas.hoffmann@{VENDOR_DOMAIN}"]
SOFTWARE_NOTIFY = f"software-team@{VENDOR_DOMAIN}"
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
    """One mail the demo delivers, and what the service must send because of it: an acknowledgement
    to the customer, a notification to the queue's agents, the relay of an agent's answer."""

    label: str
    raw: bytes
    message_id: str
    sender: str
    to: str
    subject: str
    expect_ack: bool
    note: str = ""
    expect_notification: bool = False
    expect_relay: bool = False


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
    headers = dict(headers or {})
    # In-Reply-To and References as mail clients write them: msg-ids, folded between ids. The email
    # package would treat them as text and fold a long one into RFC 2047 encoded-words, which no
    # mail client does and which no longer names the message answered.
    threading = "".join(
        f"{name}: " + "\r\n ".join(ids.split()) + "\r\n"
        for name in ("In-Reply-To", "References")
        if (ids := headers.pop(name, None))
    )
    msg = EmailMessage()
    msg["From"] = f"{sender[0]} <{sender[1]}>"
    msg["To"] = f"{to[0]} <{to[1]}>" if to[0] else to[1]
    msg["Subject"] = subject
    msg["Date"] = format_datetime(date)
    message_id = make_msgid(domain=sender[1].split("@", 1)[1])
    msg["Message-ID"] = message_id
    msg["X-Mailer"] = mailer
    for k, v in headers.items():
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
    raw = msg.as_bytes(policy=policy.SMTP)
    if threading:
        # After the Message-ID (which may be folded), before the X-Mailer line that follows it.
        head, sep, rest = raw.partition(b"\r\nX-Mailer: ")
        raw = head + b"\r\n" + threading.encode("ascii").removesuffix(b"\r\n") + sep + rest
    return raw, message_id.strip("<>")


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
        DemoMail(
            "1",
            raw,
            mid,
            _CUSTOMER_A[1],
            SERVICE_ADDRESS,
            "Fehlerklasse 1: KX 650 steht …",
            True,
            "log file",
            expect_notification=True,
        )
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
            "2",
            raw,
            mid,
            sender[1],
            SOFTWARE_ADDRESS,
            "License server exits with error -15 …",
            True,
            "screenshot",
            expect_notification=True,
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
        DemoMail(
            "3",
            raw,
            mid,
            sender[1],
            SOFTWARE_ADDRESS,
            "Postprocessor outputs wrong B-axis …",
            True,
            "HTML only",
            expect_notification=True,
        )
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
            expect_notification=True,
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
            "out-of-office answering nothing of ours: kept for the operator, no case (RFC 3834)",
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
    out.append(
        DemoMail(
            "6",
            raw,
            mid,
            _CUSTOMER_A[1],
            SERVICE_ADDRESS,
            f"AW: [{case}] …",
            False,
            "reply to the ack",
            expect_notification=True,
        )
    )

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
            "7",
            raw,
            mid,
            sender[1],
            SERVICE_ADDRESS,
            f"{case} KX 650 läuft wieder …",
            False,
            "a colleague; case number in subject",
            expect_notification=True,
        )
    )
    return out


# What Anna Berger writes to the customer: the check finds it in the relayed mail.
ANNA_ANSWER_MARK = "den Parametersatz des Spindelantriebs S1"
_ANNA_COMMANDS = ("#severity 2", "#pending")
_ANNA_TEXT = f"""\
Guten Tag Herr Müller,

vielen Dank für das Steuerungslog und die Messung der Netzspannung. Da
die KX 650 im Notbetrieb wieder läuft, führen wir den Fall ab jetzt in
Fehlerklasse 2.

Alarm 2041 direkt nach dem Update auf KESSLER CONTROL 4.2.1 kennen wir:
4.2.1 liest die Unterspannungsschwelle des Zwischenkreises neu aus dem
Antrieb, und bei Antriebsfirmware 7.3 passt der dort hinterlegte Wert
nicht immer. Damit wir das für Ihre M-650-20417 sicher prüfen können,
schicken Sie uns bitte:

1. {ANNA_ANSWER_MARK}
   (Service > Antrieb > Parameter sichern, Datei S1_PARAM.BAK),
2. den Fehlerspeicher des Antriebs
   (Service > Antrieb > Diagnose > Fehlerspeicher exportieren),
3. ein Foto des Typenschilds am Antriebsmodul.

Den Notbetrieb mit höchstens 8000 1/min können Sie bis dahin beibehalten.
Sobald die Dateien da sind, melden wir uns noch am selben Tag.

Mit freundlichen Grüßen
Anna Berger
Technischer Service Antriebe

Kessler Werkzeugmaschinen GmbH
Tel. +49 7121 9090-312
"""

_DE_WEEKDAYS = ("Montag", "Dienstag", "Mittwoch", "Donnerstag", "Freitag", "Samstag", "Sonntag")
_DE_MONTHS = (
    "Januar",
    "Februar",
    "März",
    "April",
    "Mai",
    "Juni",
    "Juli",
    "August",
    "September",
    "Oktober",
    "November",
    "Dezember",
)


def _outlook_de_date(moment: datetime) -> str:
    """A date as German Outlook writes it in a reply's header block: "Samstag, 21. November 2026 09:41"."""
    local = moment.astimezone()
    return f"{_DE_WEEKDAYS[local.weekday()]}, {local.day}. {_DE_MONTHS[local.month - 1]} {local:%Y %H:%M}"


def agent_reply(now: datetime, notification: EmailMessage) -> DemoMail:
    """Anna Berger's answer to the agents' notification of a new case, as Outlook writes it: Reply
    on a plain-text mail gives a plain-text reply, top-posted, with the "-----Ursprüngliche
    Nachricht-----" block and the notification below it, unquoted. Her commands come first."""
    from mailbridge.outbound.threadindex import thread_index_reply

    nid = str(notification["Message-ID"]).strip()
    refs = str(notification.get("References", "")).split()
    subject = str(notification["Subject"])
    parent_index = str(notification.get("Thread-Index", "")) or None
    sent = parsedate_to_datetime(str(notification["Date"]))
    body = (
        "\n".join(_ANNA_COMMANDS)
        + "\n\n"
        + _ANNA_TEXT
        + "\n-----Ursprüngliche Nachricht-----\n"
        + f"Von: {notification['From']}\n"
        + f"Gesendet: {_outlook_de_date(sent)}\n"
        + f"An: {notification['To']}\n"
        + f"Betreff: {subject}\n\n"
        + _text_part(notification)
    )
    headers = {
        "In-Reply-To": nid,
        "References": " ".join([*refs, nid]),
        "Thread-Topic": str(notification.get("Thread-Topic", "")),
        "Thread-Index": thread_index_reply(parent_index, now, fallback_root=parent_index or ""),
        "Content-Language": "de-DE",
        "X-MS-Has-Attach": "",
    }
    # Reply in Outlook answers the notification's Reply-To: the support address.
    reply_to = str(notification.get("Reply-To", "") or SERVICE_ADDRESS).strip()
    raw, mid = _mail(
        sender=ANNA,
        to=("", reply_to),
        subject=f"AW: {subject}",
        date=now,
        text=body,
        headers=headers,
        mailer="Microsoft Outlook 16.0",
    )
    case = re.search(r"\[([A-Za-z]+\d+)\]", subject)
    return DemoMail(
        "8",
        raw,
        mid,
        ANNA[1],
        reply_to,
        f"AW: [{case.group(1) if case else '?'}] Neuer Fall: …",
        False,
        f"agent reply to the notification: {', '.join(_ANNA_COMMANDS)}, then her answer to the customer",
        expect_relay=True,
    )


# ----------------------------------------------------------------------------- configuration


def _toml_str(value: str | Path) -> str:
    # A JSON string is a valid TOML basic string (same escapes; \\uXXXX for the rest).
    return json.dumps(str(value))


def _toml_list(values: list[str]) -> str:
    return "[" + ", ".join(_toml_str(v) for v in values) + "]"


# Where `mailbridge web --config <kept dir>/mailbridge.toml` serves the case tracker afterwards.
DEMO_WEB_LISTEN = "127.0.0.1:8080"


def write_demo_config(
    workdir: Path,
    imap_port: int,
    smtp_port: int,
    password_file: Path,
    secret_file: Path,
    web_secret_file: Path | None = None,
) -> Path:
    """A complete configuration for the servers on loopback: one IMAP account, two queues with
    agents, the key that signs the agents' notifications; with ``web_secret_file`` also ``[web]``
    (the case tracker on loopback, its links in the acknowledgements)."""
    web = (
        f"""
[web]
# `mailbridge web --config {workdir / "mailbridge.toml"}` serves the customers' case tracker here.
listen = "{DEMO_WEB_LISTEN}"
base_url = "http://{DEMO_WEB_LISTEN}/"
secret_file = {_toml_str(web_secret_file)}
"""
        if web_secret_file is not None
        else ""
    )
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
agents = {_toml_list(SOFTWARE_AGENTS)}
notify = {_toml_list([SOFTWARE_NOTIFY])}

[[queues]]
name = "machines"
addresses = ["{SERVICE_ADDRESS}"]
display_name = "Kessler Maschinenservice"
language = "de"
account = "support"
agents = {_toml_list(MACHINES_AGENTS)}
notify = {_toml_list([MACHINES_NOTIFY])}

[conversations]
# Signs the Message-IDs of the notifications: an agent's reply to one proves it is the agent's.
secret_file = {_toml_str(secret_file)}

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
{web}""",
        encoding="utf-8",
    )
    return path


# ----------------------------------------------------------------------------- running


@dataclass
class DemoRun:
    mails: list[DemoMail] = field(default_factory=list)
    case_of_first: str | None = None
    agent_replied: bool = False
    seconds: float = 0.0
    timed_out: bool = False


# What the report calls each kind of outbox row (``Outbox.kind``).
KIND_LABELS = {
    "ack": "acknowledgement",
    "notification": "notification",
    "relay": "relay",
    "command_error": "command error",
}
_KIND_PLURALS = {"ack": "acknowledgements", "notification": "notifications", "relay": "relays"}


def _bare(message_id: object) -> str:
    return str(message_id or "").strip().strip("<>")


@dataclass(frozen=True)
class SentMail:
    """A mail the SMTP server received, and what the service sent it as, from its outbox row."""

    received: ReceivedMail
    message_id: str
    # ack | notification | relay | command_error, or "unknown": no outbox row has its Message-ID.
    kind: str
    case: str | None
    # The Message-ID of the mail it was made for: the customer's mail an acknowledgement answers, the
    # mail a notification tells the agents of, the agent's reply a relay passes on.
    about: str | None

    @property
    def message(self) -> EmailMessage:
        return self.received.message


def _classify(app, received: list[ReceivedMail]) -> list[SentMail]:
    """Each received mail with its outbox row's kind and case. Which inbound mail it was made for:
    an acknowledgement's In-Reply-To; for the others the outbox row's dedup key, which names the
    inbound ``messages`` row (``notify:<id>``, ``relay:<id>``, ``cmderr:<id>``)."""
    if not received:
        return []  # and the service may not have created its tables yet
    from mailbridge.store import repositories as repo
    from mailbridge.store.db import session_scope

    with session_scope(app.session_factory) as s:
        rows = {_bare(mid): (kind, dedup, case) for mid, kind, dedup, case in repo.outbox_mails(s)}
        row_ids = {int(ref) for _, dedup, _ in rows.values() if (ref := dedup.partition(":")[2]).isdigit()}
        inbound = {i: _bare(mid) for i, mid in repo.message_ids_of_rows(s, row_ids).items()}
    out = []
    for r in received:
        m = r.message
        mid = _bare(m["Message-ID"])
        kind, dedup, case = rows.get(mid, ("unknown", "", None))
        if kind == "ack":
            about = _bare(m.get("In-Reply-To")) or None
        else:
            ref = dedup.partition(":")[2]
            about = inbound.get(int(ref)) if ref.isdigit() else None
        out.append(SentMail(r, mid, kind, case, about))
    return out


def _about(sent: list[SentMail], kind: str, message_id: str) -> list[SentMail]:
    """The mails of ``kind`` the service sent because of the mail ``message_id``."""
    return [s for s in sent if s.kind == kind and s.about == message_id]


def _all_sent(run: DemoRun, sent: list[SentMail]) -> bool:
    """Every acknowledgement, notification and relay the demo's mails call for has arrived."""
    return all(
        len(_about(sent, "ack", d.message_id)) >= d.expect_ack
        and len(_about(sent, "notification", d.message_id)) >= d.expect_notification
        and len(_about(sent, "relay", d.message_id)) >= d.expect_relay
        for d in run.mails
    )


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
    """Run the service and play out the first case's conversation, each step once the one before
    was processed: the follow-ups after the first acknowledgement; Anna Berger's answer after the
    first notification arrived and the follow-ups were processed (so her #pending is the case's last
    word). Stop when every expected mail was sent and nothing is left to do."""
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
            sent = _classify(service.app, smtp.received)
            if not follow_ups_sent:
                acks = _about(sent, "ack", first.message_id)
                if acks:
                    case = acks[0].case
                    run.case_of_first = case
                    later = follow_up_mails(datetime.now(UTC), case or "?", acks[0].message, first)
                    print(
                        f"\nThe acknowledgement of mail 1 arrived after {time.monotonic() - start:.1f}s "
                        f"({case}); the customer answers it, and a colleague writes too:",
                        file=out,
                    )
                    _print_deliveries(later, out)
                    await asyncio.to_thread(imap.append, [d.raw for d in later])
                    run.mails += later
                    follow_ups_sent = True
            elif not run.agent_replied:
                notes = _about(sent, "notification", first.message_id)
                if notes and await asyncio.to_thread(_mailbox_settled, imap, len(run.mails)):
                    reply = agent_reply(datetime.now(UTC), notes[0].message)
                    print(
                        f"\nThe agents' notification of {notes[0].case} reached "
                        f"{', '.join(notes[0].received.rcpt_tos)}, and the follow-ups are processed "
                        f"({time.monotonic() - start:.1f}s); agent {ANNA[0]} answers that notification "
                        "in Outlook:",
                        file=out,
                    )
                    _print_deliveries([reply], out)
                    await asyncio.to_thread(imap.append, [reply.raw])
                    run.mails.append(reply)
                    run.agent_replied = True
            elif (
                _all_sent(run, sent)
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


def _describe(s: SentMail, mails: dict[str, DemoMail]) -> str:
    """One line: what the service sent this mail as, about which of the demo's mails, to whom."""
    d = mails.get(s.about or "")
    of = f"mail {d.label}" if d else "none of the demo's mails"
    label = KIND_LABELS.get(s.kind, f"{s.kind} (not in the outbox)")
    to = {"ack": "the customer", "notification": "the agents", "relay": "the customer"}.get(s.kind, "")
    return f"{label.upper()}  {s.case or '-'}  of {of}" + (f", to {to}" if to else "")


def _print_mail(r: ReceivedMail, out) -> None:
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


def _count_check(run: DemoRun, sent: list[SentMail], kind: str, want: str) -> list[str]:
    """Problems with the mails of ``kind``: each demo mail whose ``want`` field (expect_ack, …) is set
    caused exactly one, every other none, and none was made for a mail the demo did not deliver."""
    label = KIND_LABELS[kind]
    problems = []
    for d in run.mails:
        n, expected = len(_about(sent, kind, d.message_id)), int(getattr(d, want))
        if n != expected:
            problems.append(f"mail {d.label} ({d.subject}) caused {n} {label}(s), expected {expected}")
    known = {d.message_id for d in run.mails}
    for s in sent:
        if s.kind == kind and s.about not in known:
            problems.append(f"a {label} made for none of the demo's mails: {s.message['Subject']}")
    return problems


def _relay_problems(relay: SentMail, requester: str) -> list[str]:
    """What is wrong with the relayed answer: it must come from the support address, go to the
    customer, carry the agent's answer and nothing of the notification she quoted or her commands."""
    text = _text_part(relay.message)
    problems = []
    if relay.received.mail_from != SERVICE_ADDRESS:
        problems.append(f"the relay was sent from {relay.received.mail_from}, not {SERVICE_ADDRESS}")
    if requester not in relay.received.rcpt_tos:
        problems.append(f"the relay did not go to the customer {requester}")
    if ANNA_ANSWER_MARK not in text:
        problems.append(f"the relay lacks her answer ({ANNA_ANSWER_MARK!r})")
    # The quoted notification: Outlook's header block, our marker line, the notification's own
    # lines, the team address and the customer's text it carried.
    for leak in (
        "Ursprüngliche Nachricht",
        "##-",
        "Neuer Fall",
        "Antworten Sie auf diese Mail",
        MACHINES_NOTIFY,
        "seit dem Update der Steuerung",
    ):
        if leak in text:
            problems.append(f"the relay contains the quoted notification ({leak!r})")
    commands = [line.strip() for line in text.splitlines() if line.strip().startswith("#")]
    if commands:
        problems.append(f"the relay contains command lines: {commands}")
    return problems


@dataclass(frozen=True)
class CaseState:
    status: str
    severity: str | None
    first_response_at: datetime | None
    requester: str


def _case_problems(case: str, state: CaseState) -> list[str]:
    """The first case after Anna Berger's reply: her commands applied, her relayed answer counted."""
    problems = []
    if (state.status, state.severity) != ("pending", "2"):
        problems.append(
            f"{case} is {state.status}, severity {state.severity}; "
            f"{' and '.join(_ANNA_COMMANDS)} should have made it pending, severity 2"
        )
    if state.first_response_at is None:
        problems.append(f"{case} has no first-response time after {ANNA[0]}'s relayed answer")
    return problems


def _plural(n: int, kind: str) -> str:
    """ "1 relay", "4 acknowledgements"."""
    label = KIND_LABELS.get(kind, kind)
    return f"{n} {label if n == 1 else _KIND_PLURALS.get(kind, label + 's')}"


def _report(settings: Settings, smtp: SmtpSink, run: DemoRun, out) -> int:
    from mailbridge import views
    from mailbridge.app import App
    from mailbridge.store import repositories as repo
    from mailbridge.store.db import session_scope

    app = App(settings)
    state = None
    try:
        print(f"\n{RULE}\nTickets  (mailbridge tickets list)\n{RULE}", file=out)
        print(views.tickets_table(app), file=out)
        with session_scope(app.session_factory) as s:
            cases = [t.case_number for t in reversed(repo.list_tickets(s, limit=100))]
            t = repo.ticket_by_case(s, run.case_of_first) if run.case_of_first else None
            if t is not None:
                state = CaseState(t.status, t.severity, t.first_response_at, t.requester_email)
        for case in cases:
            print(f"\n{RULE}\nmailbridge tickets show {case}\n{RULE}", file=out)
            print(views.ticket_detail(app, case), file=out)
        print(f"\n{RULE}\nQuarantine  (mailbridge quarantine list)\n{RULE}", file=out)
        print(views.quarantine_table(app), file=out)
        print(f"\n{RULE}\nAuto-replies and bounces  (mailbridge noise list)\n{RULE}", file=out)
        print(views.noise_table(app), file=out)
        sent = _classify(app, smtp.received)
    finally:
        app.close()

    agent_mail = next((d for d in run.mails if d.expect_relay), None)
    if agent_mail is not None:
        print(f"\n{RULE}\nMail {agent_mail.label} as {ANNA[0]}'s Outlook wrote it (IMAP APPEND)\n{RULE}", file=out)
        m = message_from_bytes(agent_mail.raw, policy=policy.default)
        for k in ("From", "To", "Subject", "Date", "In-Reply-To", "References", "Thread-Index"):
            print(f"  {k}: {str(m.get(k, '')).strip()}", file=out)
        print("text part (decoded):", file=out)
        for line in _text_part(m).rstrip().splitlines():  # type: ignore[arg-type]
            print(f"  | {line}", file=out)

    mails = {d.message_id: d for d in run.mails}
    tally = ", ".join(_plural(sum(s.kind == k for s in sent), k) for k in dict.fromkeys(s.kind for s in sent))
    print(f"\n{RULE}\nMails as the SMTP server received them ({len(sent)}: {tally})\n{RULE}", file=out)
    for i, s in enumerate(sent, 1):
        print(f"{SUBRULE}\n{i}/{len(sent)}  {_describe(s, mails)}\n{SUBRULE}", file=out)
        _print_mail(s.received, out)
    acks = [s for s in sent if s.kind == "ack"]
    if acks:
        print(f"\n{RULE}\nThe raw bytes of acknowledgement 1, as received\n{RULE}", file=out)
        print(acks[0].received.data.decode("utf-8", "replace").replace("\r\n", "\n").rstrip(), file=out)

    print(f"\n{RULE}\nSummary\n{RULE}", file=out)
    print(f"  mails delivered:            {len(run.mails)}", file=out)
    print(f"  tickets:                    {len(cases)}", file=out)
    for kind, want in (("ack", "expect_ack"), ("notification", "expect_notification"), ("relay", "expect_relay")):
        plural = _KIND_PLURALS[kind]
        expected = sum(getattr(d, want) for d in run.mails)
        print(f"  {plural + ' expected:':<27} {expected}", file=out)
        print(f"  {plural + ' received:':<27} {sum(s.kind == kind for s in sent)}", file=out)
    print(f"  service ran for:            {run.seconds:.1f}s", file=out)
    if run.timed_out:
        print(f"  the service was stopped after the time limit of {SERVICE_TIMEOUT_SECONDS:.0f}s", file=out)

    # (problems, what holds when there are none), in the order the checks are printed.
    checks: list[tuple[list[str], str]] = []
    if run.case_of_first is None:
        checks.append((["mail 1 was never acknowledged, so the follow-up mails were not sent"], ""))
    elif agent_mail is None:
        checks.append(
            (
                [
                    f"the agents' notification of {run.case_of_first} never arrived (or the follow-ups were "
                    f"not processed), so {ANNA[0]} did not reply"
                ],
                "",
            )
        )
    checks.append(
        (
            _count_check(run, sent, "ack", "expect_ack"),
            "every new request was acknowledged exactly once, and nothing else was.",
        )
    )
    checks.append(
        (
            _count_check(run, sent, "notification", "expect_notification"),
            "every new case and every customer reply in a queue with agents produced exactly one "
            "notification to the agents, and nothing else did.",
        )
    )
    if agent_mail is not None and run.case_of_first is not None and state is not None:
        problems = _count_check(run, sent, "relay", "expect_relay")
        relays = _about(sent, "relay", agent_mail.message_id)
        if len(relays) == 1:
            problems += _relay_problems(relays[0], state.requester)
        checks.append(
            (
                problems,
                f"{ANNA[0]}'s reply was relayed to the customer exactly once, from {SERVICE_ADDRESS}: her "
                "answer, without the quoted notification and without her command lines.",
            )
        )
        first_response = f"{state.first_response_at:%Y-%m-%d %H:%M:%SZ}" if state.first_response_at else "-"
        checks.append(
            (
                _case_problems(run.case_of_first, state),
                f"{run.case_of_first} is pending with severity 2 ({', '.join(_ANNA_COMMANDS)}), "
                f"first response {first_response} ({ANNA[0]}'s relayed answer).",
            )
        )
    others = [s for s in sent if s.kind not in ("ack", "notification", "relay")]
    checks.append(
        (
            [f"an unexpected {KIND_LABELS.get(s.kind, s.kind)}: {s.message['Subject']}" for s in others],
            "nothing else was sent (no command error, no mail the outbox does not know).",
        )
    )
    ok = True
    for problems, holds in checks:
        ok = ok and not problems
        for line in problems:
            print(f"  FAILED: {line}", file=out)
        if not problems:
            print(f"  OK: {holds}", file=out)
    return EXIT_OK if ok else EXIT_MISSING


def _usable_keep_dir(keep: Path) -> str | None:
    """Why ``keep`` cannot hold a demo, or None. A previous demo's database would remember the
    UIDs of another (since vanished) in-memory mailbox, so the directory must be new or empty."""
    if keep.exists() and not keep.is_dir():
        return f"{keep} exists and is not a directory"
    if keep.is_dir() and any(keep.iterdir()):
        return f"{keep} is not empty; give a new or empty directory"
    return None


def _write_private(path: Path, text: str) -> None:
    """Write a secret file that only its owner can read (mode 0600 from its creation on)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    path.chmod(0o600)


def run_demo(keep: Path | None) -> int:
    """Run the demo; return 0 when every check of the summary holds, 1 when one fails.

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
        _write_private(password_file, password + "\n")
        # The key that signs the agents' notifications, as an operator would keep it.
        secret_file = workdir / "notification-secret"
        _write_private(secret_file, secrets.token_hex(32) + "\n")

        print("mailbridge demo: an IMAP server, an SMTP server and the service, all on this machine", file=out)
        imap = PymapServer(user=IMAP_USER, password=password).start()
        stack.callback(imap.stop)
        smtp = SmtpSink().start()
        stack.callback(smtp.stop)
        # The key of the web app's links and sessions (the case tracker over the kept database).
        web_secret_file = workdir / "web-secret"
        _write_private(web_secret_file, secrets.token_hex(32) + "\n")
        config = write_demo_config(workdir, imap.port, smtp.port, password_file, secret_file, web_secret_file)
        settings = load_settings(config)
        print(f"  IMAP  pymap (in memory)      127.0.0.1:{imap.port}  user {IMAP_USER}", file=out)
        print(f"  SMTP  aiosmtpd (records all) 127.0.0.1:{smtp.port}", file=out)
        print(f"  config    {config}", file=out)
        print(f"  database  {settings.database_url}", file=out)
        for q in settings.queues:
            print(f"  queue {q.name:<9} {', '.join(q.addresses)}  [{q.language}]  {q.display_name}", file=out)
            print(f"        agents {', '.join(q.agents)}; notifications to {', '.join(q.notify_addresses)}", file=out)

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
            if run.case_of_first:
                print(f"  or  mailbridge --config {config} tickets show {run.case_of_first}", file=out)
            print(f"  or  mailbridge --config {config} web   (the case tracker at http://{DEMO_WEB_LISTEN}/)", file=out)
        out.flush()
        return code
