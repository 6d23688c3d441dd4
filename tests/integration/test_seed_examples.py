"""The example configurations in config/examples/, one per seed support policy, work as shipped: each
is loaded with ``load_settings``, only what points at real servers (IMAP, SMTP, database, var_dir) is
replaced by this test's loopback servers, and customer mails go through the real IMAP server and
pipeline. Each test asserts the severity and first-response deadline the seed's rules give (the
arithmetic is in the comments) and that the acknowledgement the SMTP server received states it.
Every file in config/examples/ must be covered by a test here."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from pydantic import SecretStr

from mailbridge.app import App
from mailbridge.settings import DatabaseSettings, Settings, SmtpSettings, TlsMode, load_settings
from mailbridge.sla.policy import Target, TargetKind
from mailbridge.store.models import Ticket
from tests.integration.conversation_support import Clock, Desk, Sent, to
from tests.support import make_mail

EXAMPLES = Path(__file__).resolve().parents[2] / "config" / "examples"
BERLIN = ZoneInfo("Europe/Berlin")
CASE_RE = re.compile(r"^\[(C\d{7})\] ")

# example file name → the test that covers it (filled by @covers at import).
COVERED: dict[str, str] = {}


def covers(name: str) -> Callable:
    def register(fn: Callable) -> Callable:
        COVERED[name] = fn.__name__
        return fn

    return register


def example_environ(path: Path) -> dict[str, str]:
    """A value for every environment variable the example names for a secret (the test replaces
    the servers, so the values are never used)."""
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    tables = [*data.get("accounts", []), data.get("smtp", {}), data.get("conversations", {}), data.get("web", {})]
    names = {t.get(k) for t in tables for k in ("password_env", "secret_env")}
    secret = "not-used-by-the-test-" + "x" * 32
    return {n: secret for n in names if n}


def on_test_servers(settings: Settings, tmp_path: Path, imap_server, smtp_sink, db_url: str) -> Settings:
    """``settings`` with its mailbox, SMTP server, database and files replaced by the test's own."""
    accounts = [
        a.model_copy(
            update={
                "host": imap_server.host,
                "port": imap_server.port,
                "tls": TlsMode.NONE,
                "ca_file": None,
                "user": imap_server.user,
                "password": SecretStr(imap_server.password),
            }
        )
        for a in settings.accounts
    ]
    return settings.model_copy(
        update={
            "var_dir": tmp_path / "var",
            "database": DatabaseSettings(url=db_url),
            "accounts": accounts,
            "smtp": SmtpSettings(host=smtp_sink.host, port=smtp_sink.port, tls=TlsMode.NONE, timeout=10),
        }
    )


class ExampleDesk(Desk):
    """A :class:`Desk` on an example's settings: its one mailbox, whatever the example names it."""

    def __init__(self, app: App, imap, smtp, clock: Clock):
        super().__init__(app, imap, smtp, clock)
        (self.account,) = [a.name for a in app.settings.accounts]

    def new_case(
        self, at: datetime, sender: tuple[str, str], subject: str, body: str
    ) -> tuple[Ticket, Sent, list[Sent]]:
        """A customer's first mail, arriving at ``at`` at the example's (first) queue: its ticket,
        the acknowledgement the SMTP server received, and everything that was sent."""
        self.clock.now = at.astimezone(UTC)
        queue = self.app.settings.queues[0]
        sent = self.deliver(make_mail(subject=subject, body=body, sender=sender, to=queue.address, date=at))
        (ack,) = to(sent, sender[1])
        assert ack.mail_from == queue.address
        m = CASE_RE.match(ack.header("Subject"))
        assert m, ack.header("Subject")
        return self.ticket(m.group(1)), ack, sent


@pytest.fixture
def open_example(tmp_path, imap_server, smtp_sink, db_url):
    desks: list[ExampleDesk] = []

    def open_(name: str) -> ExampleDesk:
        path = EXAMPLES / name
        settings = load_settings(path, environ=example_environ(path))
        settings = on_test_servers(settings, tmp_path, imap_server, smtp_sink, db_url)
        clock = Clock(datetime(2026, 11, 2, 9, 0, tzinfo=UTC))
        app = App(settings, clock=clock)
        app.upgrade_db()
        desk = ExampleDesk(app, imap_server, smtp_sink, clock)
        desks.append(desk)
        return desk

    yield open_
    for d in desks:
        d.app.close()


def test_every_example_is_covered():
    """A new file in config/examples/ fails here until a test below loads it and creates a case."""
    files = sorted(p.name for p in EXAMPLES.iterdir() if not p.name.startswith("."))
    assert files, EXAMPLES
    assert files == sorted(COVERED), f"examples without a test: {sorted(set(files) - set(COVERED))}"


# -- 000 DMG MORI: Mon–Fri 09:00–17:00, holidays at the seat of the contract partner ----------------

DMG_BODY = (
    "Guten Tag,\n\nseit dem Update auf Version 4.2 startet CELOS an der Maschine nicht mehr. "
    "Es handelt sich um einen betriebsverhindernden Fehler, eine Umgehung haben wir nicht gefunden.\n\n"
    "Maschinennummer: 7001234\nAnsprechpartner IT: Herr Huber\n\nMit freundlichen Grüßen\n"
)


@covers("000_dmg_mori_digital_support.toml")
def test_000_dmg_mori_deadlines_count_in_the_contract_partners_holidays(open_example):
    """The same class 1 mail on the same afternoon is due a day later for the customer whose contract
    partner sits in Bavaria (6 January, Heilige Drei Könige, is a holiday there) than for the one
    whose contract partner sits in North Rhine-Westphalia; class 2 is 8 support hours (here for an
    unlisted customer, in English), class 3 "eine Woche" five support days."""
    desk = open_example("000_dmg_mori_digital_support.toml")

    # Class 2, unlisted customer (the queue's calendar, Bavaria), Friday 20.11.2026 14:00 MEZ:
    # 8 business hours = 3 h on Friday (14:00–17:00) + 5 h on Monday from 09:00 → Mon 23.11. 14:00.
    t, ack, _ = desk.new_case(
        datetime(2026, 11, 20, 14, 0, tzinfo=BERLIN),
        ("Jane Miller", "jane.miller@northwind.example"),
        "Postprocessor crashes - error class 2",
        "Hello,\n\nsince this morning the CAM postprocessor crashes on every third program. "
        "We can work around it by restarting, but it seriously slows us down.\n\nBest regards\nJane Miller\n",
    )
    assert (t.severity, t.organisation) == ("2", None)
    assert t.first_response_due == datetime(2026, 11, 23, 14, 0, tzinfo=BERLIN)
    assert "by Monday, 23 November 2026, 14:00 Central European Standard Time at the latest" in ack.text

    # Class 3 (no class named: the default), Bavarian contract partner, Tuesday 29.12.2026 11:00:
    # 5 business days: Wed 30.12. (1), Thu 31.12. (2), [Fri 1.1. Neujahr, weekend], Mon 4.1. (3),
    # Tue 5.1. (4), [Wed 6.1. Heilige Drei Könige in BY], Thu 7.1. (5) → Thu 07.01.2027 11:00.
    t, ack, _ = desk.new_case(
        datetime(2026, 12, 29, 11, 0, tzinfo=BERLIN),
        ("Xaver Huber", "x.huber@allgaeu-praezision.example"),
        "Falsche Einheit im Werkzeugbericht",
        "Guten Tag,\n\nim Werkzeugbericht wird die Länge in Zoll statt in Millimetern angezeigt. "
        "Das stört kaum, wollte es aber melden.\n\nViele Grüße\nXaver Huber\n",
    )
    assert (t.severity, t.organisation) == ("3", "Allgäuer Präzisionsteile GmbH")
    assert t.first_response_due == datetime(2027, 1, 7, 11, 0, tzinfo=BERLIN)
    assert "bis spätestens Donnerstag, 07.01.2027, 11:00 Uhr MEZ" in ack.text

    # Class 1, the same mail on Tuesday 5.1.2027 16:00 MEZ from a customer of each organisation;
    # 4 business hours = 1 h on Tuesday (16:00–17:00) + 3 h on the next business day from 09:00:
    # - contract partner in Bavaria: Wed 6.1. is a holiday → Thu 07.01.2027 12:00;
    # - contract partner in NRW: Wed 6.1. is a working day → Wed 06.01.2027 12:00.
    start = datetime(2027, 1, 5, 16, 0, tzinfo=BERLIN)
    by, by_ack, _ = desk.new_case(
        start, ("Xaver Huber", "x.huber@allgaeu-praezision.example"), "CELOS startet nicht", DMG_BODY
    )
    nw, nw_ack, _ = desk.new_case(
        start, ("Petra Schulte", "p.schulte@owl-metallbau.example"), "CELOS startet nicht", DMG_BODY
    )
    assert (by.severity, by.organisation) == ("1", "Allgäuer Präzisionsteile GmbH")
    assert (nw.severity, nw.organisation) == ("1", "Ostwestfalen Metallbau AG")
    assert by.first_response_due == datetime(2027, 1, 7, 12, 0, tzinfo=BERLIN)
    assert nw.first_response_due == datetime(2027, 1, 6, 12, 0, tzinfo=BERLIN)
    assert "eingestuft als: Fehlerklasse 1 – betriebsverhindernder Fehler" in by_ack.text
    assert "bis spätestens Donnerstag, 07.01.2027, 12:00 Uhr MEZ" in by_ack.text
    assert "bis spätestens Mittwoch, 06.01.2027, 12:00 Uhr MEZ" in nw_ack.text


# -- 001 INTEGRIS: ticket classes A–D, class A escalates to the head of development at once ---------

HEAD_OF_DEVELOPMENT = "leitung.entwicklung@integris.example"


@covers("001_integris_ticketklassen.toml")
def test_001_integris_class_a_escalates_at_once_to_the_head_of_development(open_example):
    """Class A ("Systemstillstand") is due in 1 support hour (Mon–Fri 9–18) and its escalation mail
    reaches the head of development with the acknowledgement; class B (4 support hours) skips
    Allerheiligen, a holiday in Rhineland-Palatinate, and escalates to nobody."""
    desk = open_example("001_integris_ticketklassen.toml")

    # Class A, Friday 20.11.2026 17:30 MEZ: 1 business hour = 30 min on Friday (17:30–18:00) + 30 min
    # on Monday from 09:00 → Mon 23.11.2026 09:30.
    t, ack, sent = desk.new_case(
        datetime(2026, 11, 20, 17, 30, tzinfo=BERLIN),
        ("Jürgen Müller", "j.mueller@trierer-spedition.example"),
        "Kompletter Systemstillstand im Lager",
        "Guten Tag,\n\nseit 17 Uhr haben wir einen kompletten Systemstillstand: keine Buchung im Lager "
        "ist mehr möglich, kein Workaround. Bitte dringend melden.\n\nMit freundlichen Grüßen\nJürgen Müller\n",
    )
    assert t.severity == "A"
    assert t.first_response_due == datetime(2026, 11, 23, 9, 30, tzinfo=BERLIN)
    assert "eingestuft als: Ticketklasse A – schwerer Mangel" in ack.text
    assert "bis spätestens Montag, 23.11.2026, 09:30 Uhr MEZ" in ack.text
    (escalation,) = to(sent, HEAD_OF_DEVELOPMENT)
    assert escalation.rcpt_tos == [HEAD_OF_DEVELOPMENT]
    assert t.case_number in escalation.header("Subject") + escalation.text
    assert "Sofortige Eskalation" in escalation.header("Subject")

    # Class B, Friday 29.10.2027 16:00 MESZ: 4 business hours = 2 h on Friday (16:00–18:00),
    # [weekend; the clocks go back on 31.10.; Mon 1.11. Allerheiligen in RP], 2 h on Tuesday from
    # 09:00 → Tue 02.11.2027 11:00 MEZ.
    t, ack, sent = desk.new_case(
        datetime(2027, 10, 29, 16, 0, tzinfo=BERLIN),
        ("Jürgen Müller", "j.mueller@trierer-spedition.example"),
        "Etikettendruck im Wareneingang – mittlerer Mangel",
        "Guten Tag,\n\nder Etikettendruck im Wareneingang bricht bei Sammelbuchungen ab. Die "
        "Hauptfunktionen sind nicht betroffen, wir buchen einzeln.\n\nMit freundlichen Grüßen\nJürgen Müller\n",
    )
    assert t.severity == "B"
    assert t.first_response_due == datetime(2027, 11, 2, 11, 0, tzinfo=BERLIN)
    assert "bis spätestens Dienstag, 02.11.2027, 11:00 Uhr MEZ" in ack.text
    assert to(sent, HEAD_OF_DEVELOPMENT) == []


SUPPORT_LEAD = "leitung.support@integris.example"


def test_001_integris_mails_the_open_items_list_every_weekday_morning_to_the_support_lead(open_example):
    """ "Offene Punkte Listen": the example names the report, its schedule and the support lead; on
    Monday 23.11.2026 at 08:00 in Konz the list of open cases arrives as a spreadsheet, once; on
    Allerheiligen (Sunday 1.11.2026 is no weekday, so Monday 1.11.2027) nothing."""
    import io

    from openpyxl import load_workbook

    desk = open_example("001_integris_ticketklassen.toml")
    (report,) = desk.app.settings.reports
    assert (report.name, report.report, report.format) == ("offene-punkte-liste", "open-items", "xlsx")
    assert report.recipients == [SUPPORT_LEAD] and report.schedule == "weekdays 08:00"
    schedule = desk.app.settings.report_schedule(report)
    assert (schedule.timezone, schedule.day_of_week, schedule.hour, schedule.minute) == (
        "Europe/Berlin",
        "mon-fri",
        8,
        0,
    )

    def tick() -> list[Sent]:
        before = len(desk.smtp.received)
        for item in desk.app.scheduled.items:
            desk.app.run_schedule(item.run)
        return to(desk._send(before), SUPPORT_LEAD)

    desk.clock.now = datetime(2026, 11, 23, 7, 0, tzinfo=BERLIN).astimezone(UTC)
    assert tick() == []  # the service starts: nothing owed yet
    t, _, _ = desk.new_case(
        datetime(2026, 11, 23, 7, 10, tzinfo=BERLIN),
        ("Jürgen Müller", "j.mueller@trierer-spedition.example"),
        "Etikettendruck – leichter Mangel",
        "Guten Tag,\n\nder Etikettendruck stockt bei einzelne Geschäftsvorfälle.\n\nMit freundlichen Grüßen\n",
    )
    desk.clock.now = datetime(2026, 11, 23, 8, 0, tzinfo=BERLIN).astimezone(UTC)
    (mail,) = tick()
    assert mail.header("Subject").startswith("Bericht „offene-punkte-liste“")
    (sheet,) = list(mail.msg.iter_attachments())
    assert sheet.get_filename().endswith(".xlsx")
    rows = list(load_workbook(io.BytesIO(sheet.get_payload(decode=True))).active.iter_rows(values_only=True))
    assert any(t.case_number in row for row in rows)
    assert tick() == []

    # Allerheiligen 2027 (Monday 1.11., a holiday in Rhineland-Palatinate): not sent, not owed later.
    desk.clock.now = datetime(2027, 11, 1, 8, 0, tzinfo=BERLIN).astimezone(UTC)
    assert tick() == []
    desk.clock.now = datetime(2027, 11, 1, 12, 0, tzinfo=BERLIN).astimezone(UTC)
    assert tick() == []


# -- 002 NETCOR: Eskalationsstufen 1–4, Mon–Fri 08:30–17:00, holidays of Lower Saxony ----------------

NETCOR_AGENT = ("Nils Netcor", "nils.berg@netcor.example")


@covers("002_netcor_eskalationsstufen.toml")
def test_002_netcor_levels_count_in_lower_saxony_and_level_1_is_followed_up_daily(open_example):
    """Level 1 (Kritisch, 4 business hours) runs through Fronleichnam, a working day in Lower Saxony;
    after the agent's answer the next one is due a business day later ("täglich verfolgt"); level 3
    (2 business days) skips the Christmas holidays."""
    desk = open_example("002_netcor_eskalationsstufen.toml")

    # Level 3, Wednesday 23.12.2026 10:00 MEZ: 2 business days: Thu 24.12. (1), [Fri 25.12. and
    # Sat 26.12. holidays, Sunday], Mon 28.12. (2) → Mon 28.12.2026 10:00.
    t, ack, _ = desk.new_case(
        datetime(2026, 12, 23, 10, 0, tzinfo=BERLIN),
        ("Heike Meyer", "h.meyer@elbe-kliniken.example"),
        "Dashboard lädt langsam",
        "Guten Tag,\n\nein geringfügiger Ausfall: das Dashboard lädt seit gestern sehr langsam, die "
        "Berichte kommen aber an.\n\nSoftware-Version 7.3, Windows Server 2022.\n\nViele Grüße\nHeike Meyer\n",
    )
    assert t.severity == "3"
    assert t.first_response_due == datetime(2026, 12, 28, 10, 0, tzinfo=BERLIN)
    assert "bis spätestens Montag, 28.12.2026, 10:00 Uhr MEZ" in ack.text

    # Level 1, Wednesday 26.05.2027 15:00 MESZ: 4 business hours = 2 h on Wednesday (15:00–17:00) +
    # 2 h on Thursday 27.05. (Fronleichnam: a holiday in BY/NW, not in NI) from 08:30 → 10:30 MESZ.
    t, ack, sent = desk.new_case(
        datetime(2027, 5, 26, 15, 0, tzinfo=BERLIN),
        ("Heike Meyer", "h.meyer@elbe-kliniken.example"),
        "Kritisch: Firewall-Cluster ausgefallen",
        "Guten Tag,\n\nunser Firewall-Cluster ist komplett ausgefallen, das ist ein vollständiger "
        "Systemausfall. Eine Ausweichlösung gibt es nicht.\n\nViele Grüße\nHeike Meyer\n",
    )
    assert t.severity == "1"
    assert t.first_response_due == datetime(2027, 5, 27, 10, 30, tzinfo=BERLIN)
    assert "eingestuft als: Eskalationsstufe 1 (Kritisch)" in ack.text
    assert "bis spätestens Donnerstag, 27.05.2027, 10:30 Uhr MESZ" in ack.text
    assert t.update_due is None

    # "… und die Supportanfrage wird täglich verfolgt": the agent answers on Thursday 27.05. 09:00
    # (replying to the notification); the next answer is due one business day later, Fri 28.05. 09:00.
    (note,) = to(sent, "support-team@netcor.example")
    desk.clock.now = datetime(2027, 5, 27, 9, 0, tzinfo=BERLIN).astimezone(UTC)
    nid = note.header("Message-ID")
    sent = desk.deliver(
        make_mail(
            subject=f"AW: {note.header('Subject')}",
            body="Guten Tag Frau Meyer,\n\nwir schalten uns um 10 Uhr per Websession auf.\n\nNils Berg",
            sender=NETCOR_AGENT,
            to="support@netcor.example",
            headers={"In-Reply-To": nid, "References": nid},
        )
    )
    assert len(to(sent, "h.meyer@elbe-kliniken.example")) == 1
    t = desk.ticket(t.case_number)
    assert t.first_response_at == datetime(2027, 5, 27, 9, 0, tzinfo=BERLIN)
    assert t.update_due == datetime(2027, 5, 28, 9, 0, tzinfo=BERLIN)
    assert desk.app.deadlines.level("support", "1").follow_up == Target(TargetKind.BUSINESS_DAYS, 1)


# -- 003 service and maintenance contracts: a deadline only with a contract -------------------------

OUTAGE_DE = (
    "Guten Tag,\n\nseit 15 Uhr haben wir einen Totalausfall des Servers in der Verwaltung, es geht "
    "nichts mehr. Bitte melden Sie sich.\n\nMit freundlichen Grüßen\n"
)


@covers("003_service_und_wartungsvertrag.toml")
def test_003_only_customers_with_a_contract_get_a_deadline(open_example):
    """The same outage on Friday afternoon: the customer with a service and maintenance contract gets
    a deadline (4 business hours); a listed customer without one and an unknown English sender get
    their severity but no deadline, and an acknowledgement that says there is no contract."""
    desk = open_example("003_service_und_wartungsvertrag.toml")
    start = datetime(2026, 11, 27, 15, 30, tzinfo=BERLIN)

    # With contract, Friday 27.11.2026 15:30 MEZ: 4 business hours = 1.5 h on Friday (15:30–17:00) +
    # 2.5 h on Monday from 08:00 → Mon 30.11.2026 10:30.
    t, ack, _ = desk.new_case(
        start, ("Karl Becker", "k.becker@stadtwerke-hunsrueck.example"), "Totalausfall Server", OUTAGE_DE
    )
    assert (t.severity, t.organisation, t.contract) == ("1", "Stadtwerke Hunsrück", "Service- und Wartungsvertrag")
    assert t.first_response_due == datetime(2026, 11, 30, 10, 30, tzinfo=BERLIN)
    assert "bis spätestens Montag, 30.11.2026, 10:30 Uhr MEZ" in ack.text
    assert "Wartungsvertrag" not in ack.text

    # Without contract (a listed organisation without `contract`): no deadline, no promise.
    t, ack, _ = desk.new_case(start, ("Maria Schmitt", "m.schmitt@musterbau.example"), "Totalausfall Server", OUTAGE_DE)
    assert (t.severity, t.organisation, t.contract) == ("1", "Musterbau GmbH", None)
    assert t.first_response_due is None and t.resolution_due is None
    assert "kein Service- und Wartungsvertrag" in ack.text
    assert "bis spätestens" not in ack.text

    # An unknown sender, in English: no contract either.
    t, ack, _ = desk.new_case(
        start,
        ("Tom Baker", "tom.baker@harbour-freight.example"),
        "Production down",
        "Hello,\n\nour order server stopped an hour ago and production is down. Please call us back.\n\n"
        "Kind regards\nTom Baker\n",
    )
    assert (t.severity, t.organisation, t.contract, t.first_response_due) == ("1", None, None, None)
    assert "no service and maintenance contract" in ack.text
    assert "at the latest" not in ack.text


# -- 004 PTC licence management: Dringlichkeitsstufen, case numbers like C1234567 -------------------


@covers("004_ptc_lizenzverwaltung.toml")
def test_004_ptc_urgency_levels_phrases_and_half_days(open_example):
    """ "Kritisch" is level 2 (4 business hours); "Nicht kritisch" is level 4, not "Kritisch" (3
    business days, 24 December a half day but a business day); "Äußerst kritisch" next to a "nicht
    kritisch" is level 1, the most severe found (2 business hours, 24 December until noon)."""
    desk = open_example("004_ptc_lizenzverwaltung.toml")

    # Level 2, Friday 20.11.2026 15:00 MEZ: 4 business hours = 2 h on Friday (15:00–17:00) + 2 h on
    # Monday from 08:00 → Mon 23.11.2026 10:00.
    t, ack, _ = desk.new_case(
        datetime(2026, 11, 20, 15, 0, tzinfo=BERLIN),
        ("Stefan Wagner", "s.wagner@fahrzeugbau-ingolstadt.example"),
        "Lizenzserver verweigert Floating-Lizenzen",
        "Guten Tag,\n\nDringlichkeitsstufe: Kritisch – Arbeit schwer beeinträchtigt. Der Lizenzserver "
        "gibt nur noch die Hälfte der Floating-Lizenzen aus.\n\nSCN 8812345, PTC Host-ID 00-1A-2B-3C-4D-5E\n\n"
        "Mit freundlichen Grüßen\nStefan Wagner\n",
    )
    assert re.fullmatch(r"C\d{7}", t.case_number)
    assert t.severity == "2"
    assert t.first_response_due == datetime(2026, 11, 23, 10, 0, tzinfo=BERLIN)
    assert "eingestuft als: Kritisch – Arbeit schwer beeinträchtigt" in ack.text
    assert "bis spätestens Montag, 23.11.2026, 10:00 Uhr MEZ" in ack.text

    # Level 4, Wednesday 23.12.2026 14:00 MEZ: 3 business days: Thu 24.12. (half day, still a business
    # day) (1), [Christmas, weekend], Mon 28.12. (2), Tue 29.12. (3) → Tue 29.12.2026 14:00.
    t, ack, _ = desk.new_case(
        datetime(2026, 12, 23, 14, 0, tzinfo=BERLIN),
        ("Stefan Wagner", "s.wagner@fahrzeugbau-ingolstadt.example"),
        "Neue Installationsadresse für Lizenz",
        "Guten Tag,\n\nDringlichkeitsstufe: Nicht kritisch – Arbeitsabläufe nicht behindert. Bitte "
        "tragen Sie für SON 4471122 die neue Installationsadresse in Ingolstadt ein.\n\n"
        "Mit freundlichen Grüßen\nStefan Wagner\n",
    )
    assert t.severity == "4"
    assert t.first_response_due == datetime(2026, 12, 29, 14, 0, tzinfo=BERLIN)
    assert "eingestuft als: Nicht kritisch – Arbeitsabläufe nicht behindert" in ack.text
    assert "bis spätestens Dienstag, 29.12.2026, 14:00 Uhr MEZ" in ack.text

    # Level 1, Thursday 24.12.2026 11:00 MEZ (special hours 08:00–12:00): 2 business hours = 1 h on
    # the 24th (11:00–12:00), [25./26.12. holidays, weekend], 1 h on Monday from 08:00 → 28.12. 09:00.
    t, ack, _ = desk.new_case(
        datetime(2026, 12, 24, 11, 0, tzinfo=BERLIN),
        ("Stefan Wagner", "s.wagner@fahrzeugbau-ingolstadt.example"),
        "Äußerst kritisch – keine einzige Lizenz mehr",
        "Guten Tag,\n\nDringlichkeitsstufe: Äußerst kritisch – Arbeit unterbrochen. Seit dem Neustart "
        "bekommt kein Arbeitsplatz mehr eine Lizenz. (Unsere Anfrage von gestern war nicht kritisch, "
        "diese ist es.)\n\nMit freundlichen Grüßen\nStefan Wagner\n",
    )
    assert t.severity == "1"
    assert t.first_response_due == datetime(2026, 12, 28, 9, 0, tzinfo=BERLIN)
    assert "eingestuft als: Äußerst kritisch – Arbeit unterbrochen" in ack.text
    assert "bis spätestens Montag, 28.12.2026, 09:00 Uhr MEZ" in ack.text


def test_004_the_company_sees_its_cases_the_acks_link_to_them_and_status_by_mail_lists_them(open_example):
    """Seed 004's Case Tracker: "die von Ihrem Unternehmen beim Kundendienst eingereichten Anfragen"
    — the example enables organisation-wide visibility for its customer companies and [web]; the
    acknowledgement links to the case, and a colleague's "Status" mail lists the company's open
    cases, never another company's."""
    desk = open_example("004_ptc_lizenzverwaltung.toml")
    settings = desk.app.settings
    assert settings.web.base_url == "https://support.ptc.example/"
    assert [o.tracker for o in settings.organisations] == ["organisation", "organisation"]
    wagner = ("Stefan Wagner", "s.wagner@fahrzeugbau-ingolstadt.example")
    huber = ("Anna Huber", "a.huber@fahrzeugbau-ingolstadt.example")
    rosenheim = ("Karl Berger", "k.berger@maschinenbau-rosenheim.example")
    at = datetime(2026, 11, 20, 10, 0, tzinfo=BERLIN)
    body = "Guten Tag,\n\nDringlichkeitsstufe: Dringend. Der Lizenzserver startet nicht.\n\nGrüße\n"
    first, ack, _ = desk.new_case(at, wagner, "Lizenzserver startet nicht", body)
    (link,) = re.findall(r"Ihren Fall online ansehen: (https://support\.ptc\.example/c/\S+)", ack.text)
    assert desk.app.case_links.load(link.rsplit("/", 1)[1]) == (wagner[1], first.case_number)
    foreign, _, _ = desk.new_case(at, rosenheim, "Lizenz verlängern", body)

    sent = desk.deliver(make_mail(subject="Status", body="", sender=huber, to=settings.queues[0].address))
    (answer,) = to(sent, huber[1])
    assert answer.header("Subject") == "Offene Fälle von Fahrzeugbau Ingolstadt GmbH (1)"
    assert first.case_number in answer.text and foreign.case_number not in answer.text
    assert "Dringend – Arbeit beeinträchtigt" in answer.text
    assert len(desk.tickets()) == 2


# -- What customers are told (issue 14): missing information, support hours, urgency in their words --


def _reply(desk: ExampleDesk, ack: Sent, sender: tuple[str, str], at: datetime, body: str) -> list[Sent]:
    """The customer answers the acknowledgement at ``at``."""
    desk.clock.now = at.astimezone(UTC)
    mail = make_mail(
        subject="AW: " + ack.header("Subject"),
        body=body,
        sender=sender,
        to=desk.app.settings.queues[0].address,
        date=at,
        headers={"In-Reply-To": ack.header("Message-ID"), "References": ack.header("Message-ID")},
    )
    return desk.deliver(mail)


def test_000_ack_asks_for_exactly_the_missing_information_and_states_the_support_hours(open_example):
    """Seed 000's "Basisinformationen": a mail naming the error and the machine number is asked for
    the products and versions, the IT contact and the application contact, in German, with lines to
    fill in; the acknowledgement states the hours of the customer's contract partner (Bavaria) and
    that 6 January, before the promised answer, is a holiday there. A reply naming the versions marks
    that item given, from that mail; agents and `tickets show` see the list."""
    desk = open_example("000_dmg_mori_digital_support.toml")
    customer = ("Xaver Huber", "x.huber@allgaeu-praezision.example")
    t, ack, sent = desk.new_case(
        datetime(2027, 1, 5, 16, 0, tzinfo=BERLIN),
        customer,
        "Maschine steht: Lizenzserver nicht erreichbar",
        "Guten Tag,\n\nunsere Maschine 12670331 bleibt seit heute früh beim Hochfahren stehen. Die Steuerung "
        'zeigt die Fehlermeldung "Lizenzserver nicht erreichbar" und lässt sich nicht weiter bedienen. Wir '
        "haben den Rechner bereits neu gestartet, leider ohne Erfolg. Betriebsverhindernder Fehler.\n\n"
        "Mit freundlichen Grüßen\nXaver Huber\nAllgäuer Präzisionsteile GmbH\n",
    )
    text = ack.text
    asked = text.split("fehlen uns noch diese Angaben:", 1)[1].split("Bitte antworten Sie", 1)[0]
    assert [line.strip("- ").strip() for line in asked.strip().splitlines()] == [
        "Involvierte Produkte (wenn möglich Versionsstand)",
        "Ansprechpartner IT",
        "Ansprechpartner Anwendung",
    ]
    assert "Maschinennummer" not in text and "Fehlerbeschreibung" not in text
    assert "\nAnsprechpartner IT:" in text.replace("\r\n", "\n")  # the block to fill in
    assert (
        "Unsere Supportzeiten: Mo–Fr 09:00–17:00 Uhr (MEZ), an gesetzlichen Feiertagen in Bayern geschlossen." in text
    )
    assert "Am Mittwoch, 6. Januar 2027 (Heilige Drei Könige) sind wir nicht erreichbar." in text
    assert t.checklist is not None and [k for k, v in t.checklist.items() if v["given"]] == [
        "error_description",
        "machine_number",
    ]
    (note,) = [m for m in sent if m.mail_from == ack.mail_from and m is not ack]
    assert "[x] Maschinennummer: Maschine 12670331" in note.text
    assert "[ ] Ansprechpartner IT – fehlt" in note.text

    sent = _reply(
        desk,
        ack,
        customer,
        datetime(2027, 1, 7, 9, 30, tzinfo=BERLIN),
        "Guten Tag,\n\nhier die Versionen: CELOS 1.6.2, Sinumerik Operate 4.95.\n\nGruß\nXaver Huber\n",
    )
    t = desk.ticket(t.case_number)
    assert t.checklist["products_versions"]["given"] is True
    assert [k for k, v in t.checklist.items() if not v["given"]] == ["it_contact", "application_contact"]
    given = [d for kind, d in desk.events(t.case_number) if kind == "information_given"]
    assert [d["items"] for d in given] == [["products_versions"]]
    assert given[0]["message_id"] == t.checklist["products_versions"]["message_id"] is not None
    (note,) = to(sent, "customer-support-managers@dmgmori.example")
    assert "[x] Involvierte Produkte (wenn möglich Versionsstand)" in note.text

    from mailbridge.views import ticket_detail

    shown = ticket_detail(desk.app, t.case_number, width=200)
    assert "[x] Products involved (with versions if possible): " in shown and "(mail of " in shown
    assert "[ ] IT contact: missing" in shown


def test_004_a_customer_raises_the_urgency_in_their_own_words_and_nicht_dringend_raises_nothing(open_example):
    """Seed 004 lets customers raise the level (customer_may_raise): "Bitte erhöhen Sie die
    Dringlichkeit auf äußerst kritisch" on an open case makes it level 1 with the deadline of level 1
    (2 business hours from the case's creation), the customer is told and the agents see it; a mail
    saying "nicht dringend" raises nothing and asks for nothing."""
    desk = open_example("004_ptc_lizenzverwaltung.toml")
    customer = ("Stefan Wagner", "s.wagner@fahrzeugbau-ingolstadt.example")
    # Level 3 (the default: no level named), Monday 23.11.2026 09:00: 1 business day → Tue 09:00.
    t, ack, _ = desk.new_case(
        datetime(2026, 11, 23, 9, 0, tzinfo=BERLIN),
        customer,
        "Lizenz lässt sich nicht aktivieren",
        "Guten Tag,\n\nunsere neue Lizenz für SCN 8812345 lässt sich nicht aktivieren.\n\nMit freundlichen Grüßen\n"
        "Stefan Wagner\n",
    )
    assert (t.severity, t.first_response_due) == ("3", datetime(2026, 11, 24, 9, 0, tzinfo=BERLIN))

    calm = _reply(
        desk,
        ack,
        customer,
        datetime(2026, 11, 23, 9, 20, tzinfo=BERLIN),
        "Guten Tag,\n\ndas ist nicht dringend, keine Eile. Die Host-ID reiche ich nach.\n\nGruß\nStefan Wagner\n",
    )
    assert desk.ticket(t.case_number).severity == "3"
    assert not [k for k, _ in desk.events(t.case_number) if k in ("urgency_requested", "severity_changed")]
    assert to(calm, customer[1]) == []
    assert all("DRINGLICHKEIT" not in m.text for m in calm)

    sent = _reply(
        desk,
        ack,
        customer,
        datetime(2026, 11, 23, 10, 0, tzinfo=BERLIN),
        "Guten Tag,\n\ninzwischen steht die ganze Konstruktion. Bitte erhöhen Sie die Dringlichkeit auf "
        "äußerst kritisch.\n\nGruß\nStefan Wagner\n",
    )
    t = desk.ticket(t.case_number)
    # Level 1: 2 business hours from the creation (09:00) → 11:00 the same day.
    assert (t.severity, t.first_response_due) == ("1", datetime(2026, 11, 23, 11, 0, tzinfo=BERLIN))
    events = dict(desk.events(t.case_number))
    assert events["urgency_requested"]["level"] == "1"
    assert events["severity_changed"] == {
        "old": "3",
        "new": "1",
        "by": customer[1],
        "reason": "customer request",
        "first_response_due": "2026-11-23T10:00:00+00:00",
        "resolution_due": None,
    }
    (told,) = to(sent, customer[1])
    assert "erhöht auf: Äußerst kritisch – Arbeit unterbrochen" in told.text
    assert "bis spätestens Montag, 23.11.2026, 11:00 Uhr MEZ" in told.text
    assert told.header("Auto-Submitted") == "auto-replied"
    (note,) = to(sent, "lm-europa@ptc.example")
    assert "DER KUNDE HAT DIE DRINGLICHKEIT ERHÖHT" in note.text and "jetzt Stufe 1" in note.text
