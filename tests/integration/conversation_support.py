"""A support desk for conversation tests: real IMAP (pymap), real SMTP (aiosmtpd), a real database,
the real pipeline, and a clock the test moves. ``Desk.deliver`` puts mails into the mailbox, runs one
fetch cycle and the outbox sender, and returns what the SMTP server received meanwhile."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from zoneinfo import ZoneInfo

from sqlalchemy import select

from mailbridge.app import App
from mailbridge.settings import load_settings
from mailbridge.store.db import session_scope
from mailbridge.store.models import Event, Message, Ticket
from tests.support import SUPPORT_ADDRESS, make_mail, write_config

AGENT = ("Anna Agent", "anna.agent@vendor.example")
AGENT2 = ("Bert Agent", "bert.agent@vendor.example")
TEAM = "team@vendor.example"
CUSTOMER = ("Jürgen Müller", "juergen.mueller@kunde.example")
COLLEAGUE = ("Erika Muster", "erika.muster@kunde.example")
STRANGER = ("Mallory Other", "mallory@other.example")
AUTHSERV = "mx.vendor.example"

# Business hours of a desk in North Rhine-Westphalia (Mon–Fri 08:00–17:00, NRW holidays), the
# calendar the SLA tests count in.
NRW_CALENDAR = """
[[calendars]]
name = "nrw"
timezone = "Europe/Berlin"
country = "DE"
subdivision = "NW"
[calendars.hours]
mon = ["08:00-17:00"]
tue = ["08:00-17:00"]
wed = ["08:00-17:00"]
thu = ["08:00-17:00"]
fri = ["08:00-17:00"]
"""

QUEUE_EXTRA = f"""agents = ["{AGENT[1]}", "{AGENT2[1]}"]
notify = ["{TEAM}"]
"""


class Clock:
    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Sent:
    mail_from: str
    rcpt_tos: list[str]
    msg: EmailMessage

    @property
    def text(self) -> str:
        part = self.msg.get_body(("plain",))
        return part.get_content() if part is not None else ""

    def header(self, name: str) -> str:
        return str(self.msg[name] or "")


class Desk:
    # The IMAP account the desk's mails arrive at.
    account = "main"

    def __init__(self, app: App, imap, smtp, clock: Clock):
        self.app, self.imap, self.smtp, self.clock = app, imap, smtp, clock

    def deliver(self, *mails: bytes) -> list[Sent]:
        before = len(self.smtp.received)
        self.imap.append(list(mails))
        poller = self.app.poller(self.account)
        try:
            poller.cycle()
        finally:
            poller.close()
        return self._send(before)

    def _send(self, before: int) -> list[Sent]:
        sender = self.app.sender()
        while True:
            r = asyncio.run(sender.run_once())
            if not (r.sent or r.retry or r.failed):
                break
        return [Sent(m.mail_from, m.rcpt_tos, m.message) for m in self.smtp.received[before:]]

    def escalate(self) -> list[Sent]:
        """One run of the escalation job at the desk's clock, then the outbox; what arrived."""
        before = len(self.smtp.received)
        self.app.escalate()
        return self._send(before)

    def digest(self, name: str) -> list[Sent]:
        before = len(self.smtp.received)
        self.app.send_digest(name)
        return self._send(before)

    def ticket(self, case: str | None = None, **where) -> Ticket:
        with session_scope(self.app.session_factory) as s:
            q = select(Ticket)
            if case:
                q = q.where(Ticket.case_number == case)
            for k, v in where.items():
                q = q.where(getattr(Ticket, k) == v)
            t = s.scalars(q.order_by(Ticket.id)).first()
            assert t is not None, f"no ticket {case or where}"
            s.expunge(t)
            return t

    def tickets(self) -> list[Ticket]:
        with session_scope(self.app.session_factory) as s:
            out = list(s.scalars(select(Ticket).order_by(Ticket.id)))
            s.expunge_all()
            return out

    def messages(self, case: str) -> list[Message]:
        with session_scope(self.app.session_factory) as s:
            t = s.scalars(select(Ticket).where(Ticket.case_number == case)).one()
            out = list(s.scalars(select(Message).where(Message.ticket_id == t.id).order_by(Message.id)))
            s.expunge_all()
            return out

    def inbound(self, message_id: str) -> Message:
        with session_scope(self.app.session_factory) as s:
            m = s.scalars(select(Message).where(Message.message_id == message_id, Message.direction == "in")).one()
            s.expunge(m)
            return m

    def events(self, case: str) -> list[tuple[str, dict]]:
        with session_scope(self.app.session_factory) as s:
            t = s.scalars(select(Ticket).where(Ticket.case_number == case)).one()
            return [
                (e.kind, e.detail) for e in s.scalars(select(Event).where(Event.ticket_id == t.id).order_by(Event.id))
            ]


def make_desk(tmp_path, imap_server, smtp_sink, db_url, *, queue_extra: str = QUEUE_EXTRA, conversations: str = ""):
    path = write_config(
        tmp_path / "mailbridge.toml",
        imap_port=imap_server.port,
        imap_user=imap_server.user,
        smtp_port=smtp_sink.port,
        db_url=db_url,
        var_dir=tmp_path / "var",
        queue_extra=queue_extra,
        extra=f'[conversations]\ntrusted_authserv_id = "{AUTHSERV}"\n{conversations}',
    )
    clock = Clock(datetime(2026, 11, 23, 9, 0, tzinfo=UTC))
    app = App(load_settings(path), clock=clock)
    app.upgrade_db()
    return Desk(app, imap_server, smtp_sink, clock)


def to(sent: list[Sent], address: str) -> list[Sent]:
    return [m for m in sent if address in m.rcpt_tos]


# -- the SLA desk of the escalation tests (also used by the hostile-mail tests) ---------------------

BERLIN = ZoneInfo("Europe/Berlin")
CHIEF = "leitung@vendor.example"
CUSTOMER2 = ("Petra Kunde", "petra@stadtwerke.example")

SLA = f"""
{NRW_CALENDAR}
[[severity_schemes]]
name = "std"
default = "3"
[[severity_schemes.stages]]
at = 50
to = "assignee"
[[severity_schemes.stages]]
at = 100
to = "escalation"
urgent = true
[[severity_schemes.levels]]
key = "1"
label_de = "Fehlerklasse 1"
label_en = "Severity 1"
words = ["Systemstillstand"]
first_response = {{ business_hours = 4 }}
reescalate_every = {{ business_hours = 2 }}
[[severity_schemes.levels]]
key = "2"
label_de = "Fehlerklasse 2"
label_en = "Severity 2"
words = ["Störung"]
first_response = {{ calendar_hours = 24 }}
[[severity_schemes.levels]]
key = "3"
label_de = "Fehlerklasse 3"
label_en = "Severity 3"
first_response = {{ business_days = 2 }}

[[digests]]
name = "morgens"
recipients = ["{CHIEF}"]
cron = "0 8 * * mon-fri"
timezone = "Europe/Berlin"
calendar = "nrw"
at_risk_hours = 4
oldest = 5
"""


def berlin(*args) -> datetime:
    return datetime(*args, tzinfo=BERLIN).astimezone(UTC)


def sla_desk(tmp_path, imap_server, smtp_sink, db_url, sla: str = SLA):
    """A desk whose queue counts in the nrw calendar with the std scheme; managers: CHIEF."""
    return make_desk(
        tmp_path,
        imap_server,
        smtp_sink,
        db_url,
        queue_extra=QUEUE_EXTRA + f'calendar = "nrw"\nseverity_scheme = "std"\nescalation = ["{CHIEF}"]\n',
        conversations=sla,
    )


def answer_note(desk, note: Sent, text: str) -> list[Sent]:
    nid = note.header("Message-ID")
    return desk.deliver(
        make_mail(
            subject=f"AW: {note.header('Subject')}",
            body=text,
            sender=AGENT,
            headers={"In-Reply-To": nid, "References": nid},
        )
    )


__all__ = ["SUPPORT_ADDRESS"]
