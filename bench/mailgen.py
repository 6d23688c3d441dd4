"""A deterministic generator of realistic support mails, as the bytes an MTA would deliver.

``generate(n, seed=…, support_addresses=…)`` returns ``n`` :class:`GeneratedMail` whose ``raw``
bytes are built with the stdlib email package and serialised with ``policy.SMTP`` (CRLF). The same
seed gives the same bytes, byte for byte: every random choice, Message-ID, date and MIME boundary
comes from one seeded :class:`random.Random`.

The corpus mixes what a German/English support mailbox receives:

- languages: German and English, each in its own words (the language detector must have a case);
- clients: Outlook/Exchange Online (multipart/alternative with Word-generated HTML, Thread-Index,
  X-MS-* headers, sometimes an inline signature logo as multipart/related), Thunderbird (8bit
  format=flowed text, sometimes HTML), Gmail (quoted-printable text + ``<div dir="ltr">`` HTML),
  Apple Mail, HTML-only senders (Lotus Notes, web forms) and plain-text senders (mutt, ERP
  systems, some in ISO-8859-1);
- transport: a Received chain of 2-5 hops, DKIM/ARC/Authentication-Results where the sender's
  provider adds them, Return-Path, Delivered-To;
- threads: replies and forwards (``AW:``, ``Re:``, ``WG:``, ``Fwd:``) quoting 1-4 earlier
  messages, Outlook-style (``Von:/Gesendet:`` block) or ``>``-quoted (``Am … schrieb …:``);
- attachments on a minority: log files, PDFs, PNG/JPEG screenshots (random bytes behind a real
  file signature), 5-300 KB, log-uniform.

Every mail opens a new case: quoted history references only Message-IDs of the customer's own
earlier mails (not in the corpus), no subject carries a case number, and nothing is marked
``Auto-Submitted`` - so a service run over the corpus must create one ticket and queue one
acknowledgement per mail.

Run ``python bench/mailgen.py --mails 1000`` for a summary of the size distribution, or
``--write DIR`` to write the mails as ``.eml`` files.
"""

from __future__ import annotations

import argparse
import base64
import html
import math
import random
import statistics
import string
import textwrap
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from pathlib import Path

DEFAULT_SEED = 20260302
DEFAULT_SUPPORT_ADDRESSES = ("support@vendor.example", "hotline@vendor.example")
# A sales/project colleague at the vendor: customers reply to their threads and Cc support.
VENDOR_STAFF = (("Markus Schulz", "m.schulz@vendor.example"), ("Anna Weber", "a.weber@vendor.example"))
# The first mail arrives here; later ones follow at random intervals (a few minutes apart).
START = datetime(2026, 3, 2, 7, 45, tzinfo=UTC)

# Shares of the corpus (they need not sum to one; each is drawn independently where it says so).
GERMAN_SHARE = 0.55
REPLY_SHARE = 0.30
ATTACHMENT_SHARE = 0.16
CC_SHARE = 0.2
DISCLAIMER_SHARE = 0.45
INLINE_LOG_SHARE = 0.12
# Attachments: log-uniform between these sizes (bytes of the file, before base64).
ATTACHMENT_MIN = 5 * 1024
ATTACHMENT_MAX = 300 * 1024
# Mail clients and their share of the corpus.
CLIENTS = (
    ("outlook", 0.36),
    ("thunderbird", 0.18),
    ("gmail", 0.14),
    ("apple", 0.07),
    ("html_only", 0.11),
    ("plain", 0.14),
)

# Plain-text clients wrap lines at this width (RFC 3676 4.7 recommends 66-78).
WRAP_WIDTH = 72
# SMTP (CRLF, 78 columns); headers added pre-folded by _raw_header are written as they are.
WIRE = SMTP.clone(refold_source="none")
# Header lines are folded before this many characters (RFC 5322 2.1.1).
HEADER_WIDTH = 78


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


CET = timezone(timedelta(hours=1))
ZONES = (CET, CET, CET, UTC, timezone(timedelta(hours=-5)), timezone(timedelta(hours=2)))

FIRST_DE = _words(
    "Jürgen Thomas Stefan Andreas Michael Sabine Petra Claudia Monika Katrin Jörg Uwe Björn Ralf Frank "
    "Sören Heike Birgit Tanja Kerstin Lukas Jonas Lea Hannah Özlem Ömer Günther Dörte Maximilian Anke"
)
LAST_DE = _words(
    "Müller Schmidt Schneider Fischer Weber Meyer Wagner Becker Schulz Hoffmann Schäfer Koch Bauer Richter "
    "Klein Wolf Schröder Neumann Schwarz Zimmermann Braun Krüger Hofmann Hartmann Lange Schmitt Werner "
    "Krause Meier Lehmann Köhler Jäger Groß Weiß Böhm Kühn Yılmaz Kaya Nowak"
)
FIRST_EN = _words(
    "James Mary Robert Patricia John Jennifer David Linda William Elizabeth Richard Susan Joseph Jessica "
    "Thomas Sarah Chris Karen Daniel Nancy Matthew Lisa Anthony Emily Mark Olivia Priya Wei Siobhan Sean"
)
LAST_EN = _words(
    "Smith Johnson Williams Brown Jones Miller Davis Wilson Anderson Taylor Moore Jackson Martin Lee "
    "Thompson White Harris Clark Lewis Robinson Walker Young Allen King Wright Scott Green Baker O'Neill "
    "Patel Chen Murphy Kelly"
)
COMPANY_A = _words(
    "mueller stadtwerke nord hanse alpen rhein elbe weser ostsee boden spree main isar donau neckar "
    "brightline northwind oakridge harbor summit bluewater redwood granite silverlake pinecrest"
)
COMPANY_B = _words(
    "maschinenbau logistik kliniken-verbund druck holz-ag versand metall elektro bau systems logistics "
    "health foods manufacturing consulting medical retail-group energy pharma automotive"
)
FREEMAIL_DE = ("gmx.example", "web.example", "t-online.example", "posteo.example")
FREEMAIL_EN = ("gmail.example", "outlook.example", "yahoo.example", "icloud.example")
CITIES_DE = ("Hamburg", "Bremen", "Köln", "München", "Nürnberg", "Leipzig", "Düsseldorf", "Münster", "Kiel")
CITIES_EN = ("Manchester", "Leeds", "Dublin", "Boston", "Denver", "Toronto", "Bristol", "Glasgow")
PRODUCTS = (
    "LizenzServer",
    "DataSync Pro",
    "Webportal",
    "Scanner-Modul X200",
    "API-Gateway",
    "Backup Agent",
    "Zeiterfassung",
    "Report Designer",
    "Mobile App",
    "Warenwirtschaft",
)
ERRORS = (
    "Der Dienst konnte nicht gestartet werden (Fehler 1067)",
    "HTTP 502 Bad Gateway",
    "ORA-12541: TNS:no listener",
    "java.lang.OutOfMemoryError: Java heap space",
    "License check failed: host id mismatch",
    "SSL handshake failed: certificate has expired",
    "Timeout after 30000 ms waiting for connection from pool",
    "Access violation at address 0x00007FF6A1B2C3D4",
    "Deadlock found when trying to get lock; try restarting transaction",
    "Unexpected token < in JSON at position 0",
    "Die Datei ist beschädigt und kann nicht geöffnet werden",
    "Error 0x80070005: Access is denied",
)

DE = {
    "greet": ("Guten Tag,", "Hallo zusammen,", "Sehr geehrte Damen und Herren,", "Hallo Support-Team,", "Moin,"),
    "problem": (
        "seit dem Update auf Version {version} startet {product} auf unserem Server {host} nicht mehr. "
        "Im Ereignisprotokoll steht nur die Meldung „{error}“.",
        "wir haben seit {weekday} das Problem, dass sich die Benutzer nicht mehr an {product} anmelden können. "
        "Die Anmeldung bricht nach etwa {n} Sekunden mit einer Zeitüberschreitung ab.",
        "beim Export der Monatsberichte aus {product} erscheint die Fehlermeldung „{error}“. Das betrifft alle "
        "Mandanten, die wir nach der Umstellung angelegt haben.",
        "die Synchronisation zwischen {product} und unserem ERP-System läuft seit heute Morgen um {time} Uhr "
        "nicht mehr. Es werden keine neuen Aufträge übertragen, die Warteschlange wächst stündlich.",
        "nach dem Neustart des Servers ist die Lizenz von {product} plötzlich ungültig. Wir haben {n} "
        "Arbeitsplätze lizenziert, angezeigt werden aber nur drei.",
        "könnten Sie uns bitte mitteilen, wann die Version {version} für {product} freigegeben wird? Wir planen "
        "die Aktualisierung für das nächste Wartungsfenster am Wochenende.",
        "die Druckausgabe aus {product} ist seit gestern extrem langsam. Ein Lieferschein mit {n} Positionen "
        "braucht mehrere Minuten, bis er beim Drucker ankommt.",
        "wir bekommen beim Öffnen des Webportals nur eine leere Seite. Der Browser zeigt in der Konsole den "
        "Fehler „{error}“ an. Mit dem alten Client funktioniert dagegen alles wie gewohnt.",
        "bei einem Kollegen stürzt {product} jedes Mal ab, wenn er die Suche über mehr als {n} Datensätze "
        "startet. Auf den anderen Rechnern tritt das nicht auf, die Installation ist überall gleich.",
        "unsere Rechnungsstellung hängt, weil {product} die Belege seit {weekday} doppelt bucht. Wir haben die "
        "betroffenen Vorgänge vorerst gesperrt.",
    ),
    "extra": (
        "Ein Neustart des Dienstes hilft nur für ungefähr {n} Minuten, danach tritt der Fehler erneut auf.",
        "Bitte prüfen Sie auch, ob das Problem mit dem Zertifikatswechsel in der letzten Woche zusammenhängt. "
        "Wir haben das neue Zertifikat wie in Ihrer Anleitung beschrieben eingespielt.",
        "Unsere IT hat die Firewall bereits kontrolliert, die Ports sind freigegeben und erreichbar.",
        "Die Datenbank liegt auf einem eigenen Server, dort sehen wir keine Auffälligkeiten.",
        "Das Problem betrifft ungefähr {n} Benutzer an zwei Standorten.",
        "Wir haben die Schritte aus Ihrem Hilfeartikel ausprobiert, leider ohne Erfolg.",
    ),
    "ask": (
        "Können Sie sich das bitte kurzfristig ansehen? Bei uns steht die Produktion.",
        "Für eine kurze Rückmeldung wären wir Ihnen sehr dankbar.",
        "Bitte rufen Sie mich unter der unten stehenden Nummer zurück, gern auch am Nachmittag.",
        "Wie sollen wir hier weiter vorgehen? Brauchen Sie noch weitere Informationen von uns?",
        "Gibt es dafür schon einen Patch oder eine Umgehungslösung?",
    ),
    "attached": "Die Protokolldatei und einen Screenshot haben wir angehängt.",
    "log_intro": "Hier der Auszug aus dem Protokoll:",
    "close": ("Viele Grüße", "Mit freundlichen Grüßen", "Beste Grüße", "Freundliche Grüße aus {city}", "Gruß"),
    "reply": (
        "danke für die schnelle Antwort. Leider besteht das Problem weiterhin, siehe unten.",
        "anbei die gewünschten Informationen. Wir haben den Test wie besprochen wiederholt.",
        "zur Info: Der Fehler ist heute wieder aufgetreten. Können Sie das bitte übernehmen?",
        "ich leite Ihnen die Nachricht meines Kollegen weiter, er hat das Problem genauer beschrieben.",
        "kurze Rückfrage zu unserem Telefonat: Ist das ein bekannter Fehler?",
    ),
    "roles": ("IT-Leitung", "Systemadministrator", "Leitung Buchhaltung", "Teamleiterin Vertrieb", "Einkauf"),
    "disclaimer": (
        "Geschäftsführer: {name} | Amtsgericht {city} HRB {n} | USt-IdNr. DE{vat}\n\n"
        "Diese E-Mail enthält vertrauliche und/oder rechtlich geschützte Informationen. Wenn Sie nicht der "
        "richtige Adressat sind oder diese E-Mail irrtümlich erhalten haben, informieren Sie bitte sofort den "
        "Absender und vernichten Sie diese Mail. Das unerlaubte Kopieren sowie die unbefugte Weitergabe dieser "
        "Mail ist nicht gestattet.\n\nBitte denken Sie an die Umwelt, bevor Sie diese E-Mail ausdrucken."
    ),
    "weekdays": ("Montag", "Dienstag", "Mittwoch", "Donnerstag", "Freitag"),
    "subjects": (
        "{product} startet nicht",
        "Fehler beim Export: {error_short}",
        "Dringend: {product} nicht erreichbar",
        "Frage zur Lizenz {product}",
        "Anmeldung nicht möglich",
        "Synchronisation mit ERP ausgefallen",
        "Druckausgabe sehr langsam",
        "Update auf {version} – Probleme",
        "Bestellung {order}: Rückfrage",
        "Störung {product} seit {weekday}",
    ),
    "reply_prefix": ("AW: ", "AW: ", "AW: AW: ", "WG: ", "Re: "),
    "wrote": "Am {date} schrieb {name} <{email}>:",
    "from_hdr": ("Von", "Gesendet", "An", "Cc", "Betreff"),
    "orig": "-----Ursprüngliche Nachricht-----",
    "fwd": "-------- Weitergeleitete Nachricht --------",
}
EN = {
    "greet": ("Hello,", "Hi team,", "Dear Sir or Madam,", "Hi support,", "Good morning,"),
    "problem": (
        "since the update to version {version}, {product} no longer starts on our server {host}. The event log "
        'only shows the message "{error}".',
        "since {weekday} our users cannot log in to {product} any more. The login times out after about {n} "
        "seconds and nothing is written to the log.",
        'exporting the monthly reports from {product} fails with "{error}". It affects every tenant we created '
        "after the migration.",
        "the synchronisation between {product} and our ERP system stopped this morning at {time}. No new orders "
        "are transferred and the queue keeps growing every hour.",
        "after a server restart the licence of {product} is suddenly invalid. We have {n} seats licensed but "
        "only three are shown.",
        "could you tell us when version {version} of {product} will be released? We are planning the upgrade "
        "for our next maintenance window at the weekend.",
        "printing from {product} has been extremely slow since yesterday. A delivery note with {n} lines takes "
        "several minutes to reach the printer.",
        'opening the web portal only shows a blank page. The browser console says "{error}". The old client '
        "still works as expected.",
        "{product} crashes on one colleague's machine whenever he searches more than {n} records. It does not "
        "happen on the other machines, although the installation is identical.",
        "our invoicing is stuck because {product} has been posting every document twice since {weekday}. We have "
        "locked the affected records for now.",
    ),
    "extra": (
        "Restarting the service only helps for about {n} minutes, then the error comes back.",
        "Could you also check whether this is related to the certificate change last week? We installed the new "
        "certificate as described in your guide.",
        "Our IT team has already checked the firewall; the ports are open and reachable.",
        "The database runs on a separate server and looks fine there.",
        "About {n} users at two sites are affected.",
        "We followed the steps in your knowledge base article, without success.",
    ),
    "ask": (
        "Could you please look into this urgently? Our production is down.",
        "A quick reply would be much appreciated.",
        "Please call me back on the number below, the afternoon is fine too.",
        "How should we proceed? Do you need any further information from us?",
        "Is there a patch or a workaround for this yet?",
    ),
    "attached": "I have attached the log file and a screenshot.",
    "log_intro": "Here is the relevant part of the log:",
    "close": ("Best regards", "Kind regards", "Many thanks", "Regards from {city}", "Cheers"),
    "reply": (
        "thanks for the quick answer. Unfortunately the problem persists, see below.",
        "please find the requested information below. We repeated the test as discussed.",
        "just so you know: the error happened again today. Could you take this over, please?",
        "I am forwarding my colleague's message, he described the problem in more detail.",
        "a quick question about our call: is this a known bug?",
    ),
    "roles": ("IT Manager", "System Administrator", "Head of Finance", "Operations Lead", "Purchasing"),
    "disclaimer": (
        "{company} Ltd, registered in {city}, company number {n}.\n\n"
        "This e-mail and any attachments are confidential and may be privileged. If you are not the intended "
        "recipient, please notify the sender immediately and delete this e-mail. Any unauthorised copying, "
        "disclosure or distribution of the material in this e-mail is strictly forbidden.\n\n"
        "Please consider the environment before printing this e-mail."
    ),
    "weekdays": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday"),
    "subjects": (
        "{product} does not start",
        "Export error: {error_short}",
        "Urgent: {product} unreachable",
        "Licence question {product}",
        "Cannot log in",
        "ERP synchronisation stopped",
        "Printing very slow",
        "Problems after update to {version}",
        "Order {order}: question",
        "{product} outage since {weekday}",
    ),
    "reply_prefix": ("Re: ", "RE: ", "Re: Re: ", "Fwd: ", "FW: "),
    "wrote": "On {date}, {name} <{email}> wrote:",
    "from_hdr": ("From", "Sent", "To", "Cc", "Subject"),
    "orig": "-----Original Message-----",
    "fwd": "-------- Forwarded Message --------",
}
LANG = {"de": DE, "en": EN}

OUTLOOK_STYLE = (
    '<!--\n/* Font Definitions */\n@font-face\n\t{font-family:"Cambria Math";\n\tpanose-1:2 4 5 3 5 4 6 3 2 4;}\n'
    "@font-face\n\t{font-family:Calibri;\n\tpanose-1:2 15 5 2 2 2 4 3 2 4;}\n@font-face\n\t{font-family:Aptos;}\n"
    "/* Style Definitions */\np.MsoNormal, li.MsoNormal, div.MsoNormal\n\t{margin:0cm;\n\tfont-size:11.0pt;\n"
    '\tfont-family:"Calibri",sans-serif;\n\tmso-fareast-language:EN-US;}\na:link, span.MsoHyperlink\n'
    "\t{mso-style-priority:99;\n\tcolor:#0563C1;\n\ttext-decoration:underline;}\nspan.E-MailFormatvorlage17\n"
    '\t{mso-style-type:personal-compose;\n\tfont-family:"Calibri",sans-serif;\n\tcolor:windowtext;}\n'
    ".MsoChpDefault\n\t{mso-style-type:export-only;\n\tfont-size:10.0pt;\n\tmso-ligatures:none;}\n"
    "@page WordSection1\n\t{size:612.0pt 792.0pt;\n\tmargin:70.85pt 70.85pt 2.0cm 70.85pt;}\n"
    "div.WordSection1\n\t{page:WordSection1;}\n-->"
)
LOG_LEVELS = ("INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR")
LOG_MESSAGES = (
    "Connection pool stats: active={a}, idle={b}, waiting={c}",
    "Request GET /api/v2/orders?page={a} completed in {b} ms",
    "Sync job {a} started for tenant {b}",
    "Retrying connection to db01:5432 (attempt {a}/{b})",
    "Connection reset by peer while reading response from 10.0.{a}.{b}",
    "Cache miss for key order:{a}:{b}",
    "Scheduled task LicenseCheck finished in {a} ms",
    "User {a} logged out after {b} s idle",
)
STACK = (
    "java.net.SocketTimeoutException: Read timed out",
    "\tat java.base/sun.nio.ch.NioSocketImpl.timedRead(NioSocketImpl.java:288)",
    "\tat java.base/java.net.Socket$SocketInputStream.read(Socket.java:1099)",
    "\tat com.vendor.sync.http.Client.execute(Client.java:412)",
    "\tat com.vendor.sync.job.OrderImport.run(OrderImport.java:87)",
    "\tat com.vendor.platform.scheduler.Worker.call(Worker.java:143)",
    "\tat java.base/java.util.concurrent.FutureTask.run(FutureTask.java:317)",
    "\tat java.base/java.lang.Thread.run(Thread.java:1583)",
)


@dataclass(frozen=True)
class GeneratedMail:
    raw: bytes
    language: str
    client: str
    reply: bool
    attachments: int
    to: str

    @property
    def size(self) -> int:
        return len(self.raw)

    def shape(self) -> MailShape:
        """What :func:`describe` needs, without the bytes (a long run keeps shapes, not the corpus)."""
        return MailShape(len(self.raw), self.language, self.client, self.reply, self.attachments)


@dataclass(frozen=True)
class MailShape:
    size: int
    language: str
    client: str
    reply: bool
    attachments: int


@dataclass
class _Person:
    name: str
    email: str
    company: str
    domain: str
    city: str
    role: str
    phone: str


class _Gen:
    def __init__(self, seed: int, support: tuple[str, ...]):
        self.r = random.Random(seed)
        self.support = support
        self.now = START
        # A stable population of customer companies, each with a few people.
        self.companies = [self._company(i) for i in range(260)]

    # -- small helpers ---------------------------------------------------------------------------

    def hex(self, n: int) -> str:
        return "".join(self.r.choices("0123456789abcdef", k=n))

    def b64(self, nbytes: int) -> str:
        return base64.b64encode(self.r.randbytes(nbytes)).decode()

    def spaced(self, token: str, width: int = 64) -> str:
        # Long base64 values (DKIM b=, ARC) are folded by the sender; whitespace inside them is
        # insignificant (RFC 6376 3.5), and it lets the email package fold instead of encoding.
        return " ".join(token[i : i + width] for i in range(0, len(token), width))

    def ip(self) -> str:
        return f"{self.r.choice(('192.0.2', '198.51.100', '203.0.113'))}.{self.r.randint(1, 254)}"

    def _company(self, i: int) -> dict:
        r = self.r
        lang = "de" if r.random() < GERMAN_SHARE else "en"
        a, b = r.choice(COMPANY_A), r.choice(COMPANY_B)
        if r.random() < 0.12:
            domain = r.choice(FREEMAIL_DE if lang == "de" else FREEMAIL_EN)
            company = ""
        else:
            domain = f"{a}-{b}{i}.example"
            company = f"{a.capitalize()} {b.replace('-', ' ').title()}" + (" GmbH" if lang == "de" else "")
        people = []
        for _ in range(r.randint(1, 4)):
            first = r.choice(FIRST_DE if lang == "de" else FIRST_EN)
            last = r.choice(LAST_DE if lang == "de" else LAST_EN)
            local = f"{first}.{last}".lower()
            for src, dst in (("ä", "ae"), ("ö", "oe"), ("ü", "ue"), ("ß", "ss"), ("ı", "i"), ("'", "")):
                local = local.replace(src, dst)
            if not company:
                local += str(r.randint(1, 99))
            people.append(
                _Person(
                    name=f"{first} {last}",
                    email=f"{local}@{domain}",
                    company=company,
                    domain=domain,
                    city=r.choice(CITIES_DE if lang == "de" else CITIES_EN),
                    role=r.choice(LANG[lang]["roles"]),
                    phone=f"{r.randint(30, 911)} {r.randint(100000, 9999999)}",
                )
            )
        return {"lang": lang, "people": people, "domain": domain}

    def slots(self, lang: str) -> dict:
        r = self.r
        err = r.choice(ERRORS)
        return {
            "product": r.choice(PRODUCTS),
            "version": f"{r.randint(4, 12)}.{r.randint(0, 9)}.{r.randint(0, 30)}",
            "error": err,
            "error_short": err[:40],
            "host": f"{r.choice(('srv', 'app', 'vm', 'ts'))}{r.randint(1, 40):02d}",
            "n": r.randint(3, 250),
            "time": f"{r.randint(5, 11):02d}:{r.choice(('00', '15', '30', '45', '12', '47'))}",
            "weekday": r.choice(LANG[lang]["weekdays"]),
            "order": f"4500{r.randint(100000, 999999)}",
        }

    # -- text --------------------------------------------------------------------------------------

    def signature(self, p: _Person, lang: str) -> str:
        r, L = self.r, LANG[lang]
        lines = [p.name]
        if p.company:
            street = r.choice(
                ("Hafenstraße", "Industriestraße", "Am Markt") if lang == "de" else ("Main Road", "High St")
            )
            lines += [
                p.role,
                "",
                p.company,
                f"{street} {r.randint(1, 120)}",
                f"{r.randint(10000, 99999)} {p.city}",
                f"Tel. +49 {p.phone}" if lang == "de" else f"Phone +44 {p.phone}",
                f"E-Mail: {p.email}",
            ]
            if r.random() < DISCLAIMER_SHARE:
                lines += [
                    "",
                    L["disclaimer"].format(
                        name=r.choice(FIRST_DE) + " " + r.choice(LAST_DE),
                        city=p.city,
                        n=r.randint(1000, 99999),
                        vat=r.randint(100000000, 999999999),
                        company=p.company,
                    ),
                ]
        return "\n".join(lines)

    def inline_log(self) -> str:
        r = self.r
        t = self.now - timedelta(minutes=r.randint(5, 600))
        lines = []
        for _ in range(r.randint(4, 14)):
            t += timedelta(milliseconds=r.randint(1, 4000))
            lvl = r.choice(LOG_LEVELS)
            msg = r.choice(LOG_MESSAGES).format(a=r.randint(1, 999), b=r.randint(1, 9999), c=r.randint(0, 40))
            lines.append(f"{t:%Y-%m-%d %H:%M:%S},{t.microsecond // 1000:03d} {lvl:5} [worker-{r.randint(1, 8)}] {msg}")
        if r.random() < 0.6:
            lines += STACK[: r.randint(3, len(STACK))]
        return "\n".join(lines)

    def body(self, p: _Person, lang: str, *, reply: bool, attached: bool) -> list[str]:
        """Paragraphs of a new message (greeting … signature)."""
        r, L = self.r, LANG[lang]
        s = self.slots(lang)
        paras = [r.choice(L["greet"])]
        if reply:
            paras.append(r.choice(L["reply"]))
        paras.append(r.choice(L["problem"]).format(**s))
        for _ in range(r.choice((0, 0, 1, 1, 2, 3))):
            paras.append(r.choice(L["extra"]).format(**s))
        if r.random() < INLINE_LOG_SHARE:
            paras += [L["log_intro"], self.inline_log()]
        if attached:
            paras.append(L["attached"])
        paras.append(r.choice(L["ask"]))
        paras.append(r.choice(L["close"]).format(city=p.city) + "\n" + self.signature(p, lang))
        return paras

    # -- one mail ----------------------------------------------------------------------------------

    def mail(self, i: int) -> GeneratedMail:
        r = self.r
        self.now += timedelta(seconds=r.randint(5, 400))
        company = r.choice(self.companies)
        lang = company["lang"]
        L = LANG[lang]
        sender = r.choice(company["people"])
        client = r.choices([c for c, _ in CLIENTS], [w for _, w in CLIENTS])[0]
        reply = r.random() < REPLY_SHARE
        n_att = 0
        if r.random() < ATTACHMENT_SHARE:
            n_att = r.choice((1, 1, 1, 2, 3))
        to = self.support[0] if (lang == "en" or r.random() < 0.45) else self.support[-1]
        date = self.now.astimezone(r.choice(ZONES))
        s = self.slots(lang)
        subject = r.choice(L["subjects"]).format(**s)

        paras = self.body(sender, lang, reply=reply, attached=bool(n_att))
        history: list[tuple[_Person, datetime, str, list[str], str]] = []
        if reply:
            subject = r.choice(L["reply_prefix"]) + subject
            t = date
            for _ in range(r.choice((1, 1, 1, 2, 2, 3, 4))):
                t -= timedelta(hours=r.randint(1, 70), minutes=r.randint(0, 59))
                if r.random() < 0.3:
                    name, email = r.choice(VENDOR_STAFF)
                    author = _Person(name, email, "Vendor GmbH", "vendor.example", "Hamburg", "Vertrieb", "40 1234")
                else:
                    author = r.choice(company["people"])
                history.append(
                    (
                        author,
                        t,
                        self.message_id(author.domain, client),
                        self.body(author, lang, reply=False, attached=False),
                        sender.email,
                    )
                )

        mid = self.message_id(sender.domain, client)
        msg = EmailMessage()
        self.transport_headers(msg, client, sender, to, date)
        msg["From"] = f'"{sender.name}" <{sender.email}>' if "'" in sender.name else f"{sender.name} <{sender.email}>"
        msg["To"] = to
        if r.random() < CC_SHARE:
            colleague = r.choice(company["people"])
            msg["Cc"] = f"{colleague.name} <{colleague.email}>"
        msg["Subject"] = subject
        msg["Date"] = format_datetime(date)
        msg["Message-ID"] = f"<{mid}>"
        if history:
            refs = [h[2] for h in reversed(history)]
            _raw_header(msg, "In-Reply-To", f"<{refs[-1]}>")
            _raw_header(msg, "References", " ".join(f"<{x}>" for x in refs))
        self.client_headers(msg, client, lang, subject, n_att)

        text = self.plain(paras, history, lang, client, subject)
        self.content(msg, client, lang, paras, history, text, subject)
        for _ in range(n_att):
            self.attach(msg, lang)
        self.fix_boundaries(msg, client, mid)
        raw = msg.as_bytes(policy=WIRE)
        return GeneratedMail(raw=raw, language=lang, client=client, reply=reply, attachments=n_att, to=to)

    def message_id(self, domain: str, client: str) -> str:
        r = self.r
        if client == "outlook":
            host = f"{r.choice(('AM0PR07', 'DB9PR03', 'FR2P281', 'BE1P281', 'PAXPR04'))}MB{r.randint(1000, 9999)}"
            return f"{host}{self.hex(24).upper()}@{host}.eurprd07.prod.outlook.com"
        if client == "gmail":
            return f"CA+{self.b64(30).replace('/', '_').replace('=', '')}@mail.gmail.example"
        if client == "apple":
            return f"{self.hex(8).upper()}-{self.hex(4).upper()}-{self.hex(4).upper()}-{self.hex(12).upper()}@{domain}"
        return f"{self.hex(8)}-{self.hex(4)}-{self.hex(4)}-{self.hex(4)}-{self.hex(12)}@{domain}"

    def transport_headers(self, msg: EmailMessage, client: str, sender: _Person, to: str, date: datetime) -> None:
        r = self.r
        msg["Return-Path"] = f"<{sender.email}>"
        msg["Delivered-To"] = to
        t = date + timedelta(seconds=r.randint(1, 20))
        stamp = format_datetime(t)
        mx = r.randint(1, 3)
        msg["Received"] = (
            f"from mx0{mx}.vendor.example (mx0{mx}.vendor.example [10.20.0.{mx + 1}]) "
            f"by mail.vendor.example (Postfix) with ESMTPS id 4{self.hex(11).upper()} for <{to}>; {stamp}"
        )
        if client == "outlook":
            edge = f"mail-{r.choice(('am6', 'db8', 'fr3'))}eur05on20{r.randint(10, 99)}.outbound.protection.outlook.com"
            msg["Received"] = (
                f"from EUR05-AM6-obe.outbound.protection.outlook.com ({edge} [{self.ip()}]) by mx01.vendor.example "
                f"(Postfix) with ESMTPS id 4{self.hex(11).upper()} for <{to}>; {stamp}"
            )
            for _ in range(r.randint(1, 3)):
                a = f"AM0PR07MB{r.randint(1000, 9999)}.eurprd07.prod.outlook.com"
                b = f"DB9PR03MB{r.randint(1000, 9999)}.eurprd03.prod.outlook.com"
                msg["Received"] = (
                    f"from {a} (2603:10a6:208:{self.hex(2)}::{r.randint(10, 99)}) by {b} "
                    f"(2603:10a6:10:{self.hex(3)}::{self.hex(2)}) with Microsoft SMTP Server (version=TLS1_2, "
                    f"cipher=TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384) id "
                    f"15.20.{r.randint(7000, 8999)}.{r.randint(10, 40)}; {stamp}"
                )
            self.auth_headers(msg, sender, arc=True)
        elif client == "gmail":
            msg["Received"] = (
                f"from mail-wr1-f{r.randint(40, 70)}.google.example (mail-wr1-f{r.randint(40, 70)}.google.example "
                f"[{self.ip()}]) by mx02.vendor.example (Postfix) with ESMTPS id 4{self.hex(11).upper()} "
                f"for <{to}>; {stamp}"
            )
            msg["Received"] = f"by mail-wr1-f{r.randint(40, 70)}.google.example with SMTP id {self.hex(16)}; {stamp}"
            msg["X-Received"] = (
                f"by 2002:a05:600c:{self.hex(4)}:b0:{self.hex(3)}:{self.hex(4)}:{self.hex(4)} with SMTP id "
                f"{self.hex(20)}mr{r.randint(10**6, 10**7)}; {stamp}"
            )
            self.auth_headers(msg, sender, arc=r.random() < 0.5)
        else:
            msg["Received"] = (
                f"from mail.{sender.domain} (mail.{sender.domain} [{self.ip()}]) by mx01.vendor.example (Postfix) "
                f"with ESMTPS id 4{self.hex(11).upper()} for <{to}>; {stamp}"
            )
            for _ in range(r.randint(0, 2)):
                msg["Received"] = (
                    f"from [10.{r.randint(0, 255)}.{r.randint(0, 255)}.{r.randint(1, 254)}] (unknown "
                    f"[{self.ip()}]) by mail.{sender.domain} (Postfix) with ESMTPSA id {self.hex(10).upper()}; "
                    f"{stamp}"
                )
            if r.random() < 0.6:
                self.auth_headers(msg, sender, arc=False)

    def auth_headers(self, msg: EmailMessage, sender: _Person, arc: bool) -> None:
        d = sender.domain
        if arc:
            msg["ARC-Seal"] = (
                f"i=1; a=rsa-sha256; s=arcselector10001; d=microsoft.example; cv=none; b={self.spaced(self.b64(256))}"
            )
            msg["ARC-Message-Signature"] = (
                "i=1; a=rsa-sha256; c=relaxed/relaxed; d=microsoft.example; s=arcselector10001; "
                "h=From:Date:Subject:Message-ID:Content-Type:MIME-Version; "
                f"bh={self.b64(32)}; b={self.spaced(self.b64(256))}"
            )
        msg["DKIM-Signature"] = (
            f"v=1; a=rsa-sha256; c=relaxed/relaxed; d={d}; s=selector1; "
            "h=From:Date:Subject:Message-ID:Content-Type:MIME-Version; "
            f"bh={self.b64(32)}; b={self.spaced(self.b64(256))}"
        )
        msg["Authentication-Results"] = (
            f"mx01.vendor.example; dkim=pass (2048-bit key) header.d={d} header.i=@{d} header.b={self.b64(6)}; "
            f"spf=pass smtp.mailfrom={d}; dmarc=pass (p=quarantine dis=none) header.from={d}"
        )

    def client_headers(self, msg: EmailMessage, client: str, lang: str, subject: str, n_att: int) -> None:
        r = self.r
        cl = "de-DE" if lang == "de" else "en-GB"
        if client == "outlook":
            msg["Thread-Topic"] = subject.split(": ")[-1]
            msg["Thread-Index"] = self.b64(22 + 5 * r.randint(0, 3))
            msg["Accept-Language"] = f"{cl}, en-US"
            msg["Content-Language"] = cl
            msg["X-MS-Has-Attach"] = "yes" if n_att else ""
            msg["X-MS-TNEF-Correlator"] = ""
            msg["x-ms-publictraffictype"] = "Email"
            msg["x-ms-office365-filtering-correlation-id"] = (
                f"{self.hex(8)}-{self.hex(4)}-{self.hex(4)}-{self.hex(4)}-{self.hex(12)}"
            )
            msg["x-microsoft-antispam"] = "BCL:0;ARA:13230040|1800799024|366016|376014|38070700018;"
            msg["x-microsoft-antispam-message-info"] = self.spaced(self.b64(r.randint(600, 1400)), 76)
            msg["X-MS-Exchange-CrossTenant-originalarrivaltime"] = format_datetime(self.now)
            msg["X-MS-Exchange-CrossTenant-id"] = (
                f"{self.hex(8)}-{self.hex(4)}-{self.hex(4)}-{self.hex(4)}-{self.hex(12)}"
            )
            msg["X-OriginatorOrg"] = msg["From"].addresses[0].domain
        elif client == "thunderbird":
            v = r.choice(("115.14.0", "128.5.2", "102.15.1"))
            msg["User-Agent"] = (
                f"Mozilla Thunderbird {v}"
                if r.random() < 0.3
                else (
                    f"Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:{v.split('.')[0]}.0) Gecko/20100101 Thunderbird/{v}"
                )
            )
            msg["Content-Language"] = cl
        elif client == "gmail":
            msg["X-Gm-Message-State"] = self.spaced(self.b64(r.randint(60, 120)), 76)
            _raw_header(msg, "X-Google-Smtp-Source", self.b64(60))
        elif client == "apple":
            msg["X-Mailer"] = f"Apple Mail (2.{r.randint(3600, 3826)}.{r.randint(100, 600)}.1.{r.randint(1, 9)})"
        elif client == "html_only":
            msg["X-Mailer"] = r.choice(
                (
                    "Lotus Notes Release 9.0.1FP10 January 05, 2018",
                    "PHPMailer 6.9.1",
                    "Microsoft Outlook 16.0",
                    "Zimbra 9.0.0_GA_4546",
                )
            )
        else:
            msg["X-Mailer"] = r.choice(
                ("Mutt/2.2.12 (2023-09-09)", "SAP NetWeaver 7.50", "sendmail", "Claws Mail 4.1.1")
            )
        msg["MIME-Version"] = "1.0"

    def quote_header_block(self, author: _Person, when: datetime, to: str, subject: str, lang: str) -> list[str]:
        von, gesendet, an, _cc, betreff = LANG[lang]["from_hdr"]
        return [
            f"{von}: {author.name} <{author.email}>",
            f"{gesendet}: {format_datetime(when)}",
            f"{an}: {to}",
            f"{betreff}: {subject}",
        ]

    def plain(self, paras, history, lang, client, subject) -> str:
        """The text/plain rendering with the quoted history in the client's style."""
        L = LANG[lang]
        if client in ("thunderbird", "plain"):
            # Thunderbird and mutt wrap at 72; format=flowed marks soft breaks with a trailing space.
            paras = [_wrap(p, client == "thunderbird") for p in paras]
            history = [(a, w, m, [_wrap(p, client == "thunderbird") for p in hp], t) for a, w, m, hp, t in history]
        out = "\n\n".join(paras)
        level = 0
        for author, when, _mid, hparas, to in history:
            htext = "\n\n".join(hparas)
            if client in ("outlook", "html_only"):
                out += "\n\n" + (L["orig"] + "\n" if self.r.random() < 0.3 else "")
                out += "\n".join(self.quote_header_block(author, when, to, subject, lang)) + "\n\n" + htext
            else:
                level += 1
                wrote = L["wrote"].format(date=when.strftime("%d.%m.%Y %H:%M"), name=author.name, email=author.email)
                prefix = "> " * level
                out += (
                    "\n\n"
                    + "> " * (level - 1)
                    + wrote
                    + "\n"
                    + "\n".join((prefix + line).rstrip() for line in htext.split("\n"))
                )
        return out + "\n"

    def html(self, paras, history, lang, client, subject) -> str:
        esc = html.escape

        def ps(ps_, cls=""):
            out = []
            for p in ps_:
                inner = "<br>\n".join(esc(x) for x in p.split("\n"))
                if client == "outlook":
                    out.append(
                        f'<p class="MsoNormal"><span lang="{lang.upper()}">{inner}<o:p></o:p></span></p>\n'
                        f'<p class="MsoNormal"><span lang="{lang.upper()}"><o:p>&nbsp;</o:p></span></p>'
                    )
                elif client == "gmail":
                    out.append(f"<div>{inner}</div><div><br></div>")
                else:
                    out.append(f"<p{cls}>{inner}</p>")
            return "\n".join(out)

        body = ps(paras)
        for author, when, _mid, hparas, to in history:
            hdr = self.quote_header_block(author, when, to, subject, lang)
            if client in ("outlook", "html_only"):
                lines = "<br>\n".join(f"<b>{esc(h.split(': ', 1)[0])}:</b> {esc(h.split(': ', 1)[1])}" for h in hdr)
                body += (
                    '\n<div style="border:none;border-top:solid #E1E1E1 1.0pt;padding:3.0pt 0cm 0cm 0cm">'
                    f'<p class="MsoNormal">{lines}<o:p></o:p></p></div>\n' + ps(hparas)
                )
            elif client == "gmail":
                wrote = LANG[lang]["wrote"].format(
                    date=when.strftime("%d.%m.%Y %H:%M"), name=author.name, email=author.email
                )
                body += (
                    f'<br><div class="gmail_quote"><div dir="ltr" class="gmail_attr">{esc(wrote)}<br></div>'
                    '<blockquote class="gmail_quote" style="margin:0px 0px 0px 0.8ex;border-left:1px solid '
                    f'rgb(204,204,204);padding-left:1ex">{ps(hparas)}'
                )
            else:
                wrote = LANG[lang]["wrote"].format(
                    date=when.strftime("%d.%m.%Y %H:%M"), name=author.name, email=author.email
                )
                body += f'<div class="moz-cite-prefix">{esc(wrote)}<br></div>\n<blockquote type="cite">{ps(hparas)}'
        if client == "gmail":
            body += "</blockquote></div>" * len(history)
        elif client not in ("outlook", "html_only"):
            body += "</blockquote>" * len(history)

        if client == "outlook":
            return (
                '<html xmlns:v="urn:schemas-microsoft-com:vml" xmlns:o="urn:schemas-microsoft-com:office:office" '
                'xmlns:w="urn:schemas-microsoft-com:office:word" '
                'xmlns:m="http://schemas.microsoft.com/office/2004/12/omml" '
                'xmlns="http://www.w3.org/TR/REC-html40">\n<head>\n<meta http-equiv="Content-Type" content="text/html; '
                'charset=utf-8">\n<meta name="Generator" content="Microsoft Word 15 (filtered medium)">\n'
                f'<style>{OUTLOOK_STYLE}</style><!--[if gte mso 9]><xml>\n<o:shapedefaults v:ext="edit" '
                'spidmax="1026" />\n</xml><![endif]-->\n</head>\n<body lang="DE" link="#0563C1" vlink="#954F72" '
                f'style="word-wrap:break-word">\n<div class="WordSection1">\n{body}\n</div>\n</body>\n</html>\n'
            )
        if client == "gmail":
            return f'<div dir="ltr">{body}</div>\n'
        if client == "apple":
            return (
                '<html><head><meta http-equiv="content-type" content="text/html; charset=utf-8"></head><body '
                'style="overflow-wrap: break-word; -webkit-nbsp-mode: space; line-break: after-white-space;">'
                f"{body}</body></html>"
            )
        if client == "html_only":
            return (
                '<html><body><table width="100%" cellpadding="0" cellspacing="0"><tr><td style="font-family:'
                f'Arial,Helvetica,sans-serif;font-size:10pt">\n{body}\n</td></tr></table></body></html>'
            )
        return (
            '<!DOCTYPE html>\n<html>\n  <head>\n    <meta http-equiv="content-type" content="text/html; '
            f'charset=UTF-8">\n  </head>\n  <body>\n{body}\n  </body>\n</html>\n'
        )

    def content(self, msg, client, lang, paras, history, text, subject) -> None:
        r = self.r
        if client == "plain":
            # Older clients and ERP systems still send Windows-1252/Latin-1 when the text fits.
            charset = r.choice(("iso-8859-1", "windows-1252")) if (lang == "de" and r.random() < 0.4) else "utf-8"
            try:
                text.encode(charset)
            except UnicodeEncodeError:
                charset = "utf-8"
            msg.set_content(text, charset=charset, cte="quoted-printable" if r.random() < 0.5 else "8bit")
            return
        if client == "thunderbird" and r.random() < 0.6:
            msg.set_content(text, params={"format": "flowed"}, cte="8bit")
            return
        markup = self.html(paras, history, lang, client, subject)
        if client == "html_only":
            msg.set_content(markup, subtype="html", cte=r.choice(("quoted-printable", "base64", "8bit")))
            return
        cte = {"outlook": "quoted-printable", "gmail": "quoted-printable", "apple": "quoted-printable"}.get(
            client, "8bit"
        )
        if client == "outlook" and r.random() < 0.25:
            cte = "base64"
        msg.set_content(text, cte=cte)
        msg.add_alternative(markup, subtype="html", cte=cte)
        if client == "outlook" and r.random() < 0.3:
            # The company logo in the signature, as Outlook embeds it.
            html_part = msg.get_payload()[1]
            cid = f"image001.png@01DA{self.hex(4).upper()}.{self.hex(8).upper()}"
            html_part.add_related(
                b"\x89PNG\r\n\x1a\n" + self.r.randbytes(r.randint(2500, 14000)),
                "image",
                "png",
                cid=f"<{cid}>",
                filename="image001.png",
                disposition="inline",
            )

    def attach(self, msg: EmailMessage, lang: str) -> None:
        r = self.r
        size = int(math.exp(r.uniform(math.log(ATTACHMENT_MIN), math.log(ATTACHMENT_MAX))))
        kind = r.choice(("log", "log", "pdf", "png", "png", "jpg"))
        if kind == "log":
            data = self.log_file(size)
            name = r.choice(("server.log", "sync-service.log", "error_" + self.hex(6) + ".log", "debug.txt"))
            msg.add_attachment(data, subtype="plain", filename=name)
        elif kind == "pdf":
            data = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n" + r.randbytes(size)
            name = r.choice(("Lieferschein.pdf", "Rechnung_2026.pdf", "Fehlerbericht.pdf", "report.pdf", "quote.pdf"))
            msg.add_attachment(data, maintype="application", subtype="pdf", filename=name)
        elif kind == "png":
            data = b"\x89PNG\r\n\x1a\n" + r.randbytes(size)
            name = r.choice(("Screenshot 2026-03-02 101214.png", "Bildschirmfoto.png", "image.png", "error.png"))
            msg.add_attachment(data, maintype="image", subtype="png", filename=name)
        else:
            data = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + r.randbytes(size)
            msg.add_attachment(data, maintype="image", subtype="jpeg", filename=f"IMG_{r.randint(1000, 9999)}.jpg")

    def log_file(self, size: int) -> str:
        r = self.r
        t = self.now - timedelta(hours=r.randint(1, 48))
        out, total = [], 0
        while total < size:
            t += timedelta(milliseconds=r.randint(1, 2000))
            msg = r.choice(LOG_MESSAGES).format(a=r.randint(1, 999), b=r.randint(1, 9999), c=r.randint(0, 40))
            level = r.choice(LOG_LEVELS)
            line = f"{t:%Y-%m-%d %H:%M:%S},{t.microsecond // 1000:03d} {level:5} [worker-{r.randint(1, 8)}] {msg}"
            out.append(line)
            total += len(line) + 1
        return "\n".join(out) + "\n"

    def fix_boundaries(self, msg: EmailMessage, client: str, mid: str) -> None:
        # The email package draws boundaries from the global random module; pin them to the seed.
        for n, part in enumerate(p for p in msg.walk() if p.is_multipart()):
            if client == "outlook":
                core = "".join(ch for ch in mid if ch.isalnum())[:40]
                b = f"_{n:03d}_{core}_"
            elif client == "thunderbird":
                b = f"------------{''.join(self.r.choices(string.ascii_letters + string.digits, k=24))}"
            elif client == "apple":
                uid = f"{self.hex(8)}-{self.hex(4)}-{self.hex(4)}-{self.hex(12)}".upper()
                b = f"Apple-Mail={uid}"
            else:
                b = f"000000000000{self.hex(16)}"
            part.set_boundary(b)


def _raw_header(msg: EmailMessage, name: str, value: str) -> None:
    """Add a header folded as a mail client folds it: at spaces, a long token on a line of its own.

    The email package (3.11) folds a token longer than a line of In-Reply-To/References by turning
    it into RFC 2047 encoded words, which no mail client does; a pre-folded value is kept as is.
    """
    lines, cur = [], f"{name}:"
    for token in value.split(" "):
        if len(cur) + 1 + len(token) > HEADER_WIDTH:
            # A token longer than a line goes on a continuation line of its own (RFC 5322 2.2.3).
            lines.append(cur)
            cur = ""
        cur += " " + token
    lines.append(cur)
    folded = "\r\n".join(lines)
    msg.set_raw(*msg.policy.header_source_parse([folded + "\r\n"]))


def _wrap(paragraph: str, flowed: bool) -> str:
    out = []
    for line in paragraph.split("\n"):
        if len(line) <= WRAP_WIDTH or line[:1].isdigit() or line.startswith("\t"):
            out.append(line)
        else:
            out.append((" \n" if flowed else "\n").join(textwrap.wrap(line, WRAP_WIDTH, break_long_words=False)))
    return "\n".join(out)


def generate(
    n: int, seed: int = DEFAULT_SEED, support_addresses: tuple[str, ...] = DEFAULT_SUPPORT_ADDRESSES
) -> list[GeneratedMail]:
    """``n`` realistic support mails; the same arguments give the same bytes."""
    return list(stream(n, seed, support_addresses))


def stream(
    n: int, seed: int = DEFAULT_SEED, support_addresses: tuple[str, ...] = DEFAULT_SUPPORT_ADDRESSES
) -> Iterator[GeneratedMail]:
    """The same mails as :func:`generate`, one at a time: a run over 50,000 mails (1.6 GB) need not
    hold them all."""
    g = _Gen(seed, tuple(support_addresses))
    for i in range(n):
        yield g.mail(i)


def describe(mails: Sequence[GeneratedMail | MailShape]) -> dict:
    """Size distribution and mix of a corpus (the mails or their shapes), for the benchmark's header."""
    sizes = sorted(m.size for m in mails)
    n = len(sizes)
    clients: dict[str, int] = {}
    for m in mails:
        clients[m.client] = clients.get(m.client, 0) + 1
    return {
        "mails": n,
        "bytes": sum(sizes),
        "median": statistics.median(sizes),
        "mean": sum(sizes) / n,
        "p90": sizes[int(n * 0.9)],
        "p99": sizes[int(n * 0.99)],
        "max": sizes[-1],
        "german": sum(m.language == "de" for m in mails) / n,
        "replies": sum(m.reply for m in mails) / n,
        "with_attachments": sum(bool(m.attachments) for m in mails) / n,
        "clients": {k: v / n for k, v in sorted(clients.items(), key=lambda kv: -kv[1])},
    }


def format_description(d: dict) -> str:
    kb = 1024
    clients = ", ".join(f"{k} {v:.0%}" for k, v in d["clients"].items())
    return (
        f"corpus: {d['mails']:,} mails, {d['bytes'] / kb / kb:.1f} MB; size median {d['median'] / kb:.1f} KB, "
        f"mean {d['mean'] / kb:.1f} KB, p90 {d['p90'] / kb:.1f} KB, p99 {d['p99'] / kb:.0f} KB, "
        f"max {d['max'] / kb:.0f} KB\n"
        f"        German {d['german']:.0%}, replies/forwards {d['replies']:.0%}, "
        f"with attachments {d['with_attachments']:.0%}; {clients}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mails", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--write", type=Path, help="write the mails as DIR/00001.eml …")
    args = ap.parse_args(argv)
    mails = generate(args.mails, args.seed)
    print(format_description(describe(mails)))
    if args.write:
        args.write.mkdir(parents=True, exist_ok=True)
        for i, m in enumerate(mails, 1):
            (args.write / f"{i:05d}.eml").write_bytes(m.raw)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
