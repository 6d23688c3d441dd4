"""The parse workers do the steps' pure work (``ingest/prepare.py`` ``Ahead``: the language, the
mail's class, the checklist findings); prepared inline, the steps compute it themselves. Either way a
mailbox gives the same cases, languages, checklists and classes: the same batch of mails through
real IMAP (pymap) into a real database, once through the parse pool and once inline."""

from __future__ import annotations

from collections import Counter
from email import message_from_bytes
from email.policy import default

import pytest
from sqlalchemy import select

from mailbridge.app import App
from mailbridge.ingest.prepare import POOL_MIN_BATCH
from mailbridge.settings import load_settings
from mailbridge.store.db import session_scope
from mailbridge.store.models import Event, Outbox, RawMessage, Ticket
from tests.integration.attachment_support import HOSTILE_HTML, PNG, customer_mail
from tests.integration.conversation_support import QUEUE_EXTRA, TEAM
from tests.support import SUPPORT_ADDRESS, make_mail, write_config

CHECKLIST = (
    QUEUE_EXTRA
    + r"""
[[queues.checklist]]
key = "machine_number"
label = { de = "Maschinennummer", en = "Machine number" }
fields = ['(?:maschinen|machine)[\s-]*(?:nummer|number|nr\.?)\s*[:=]\s*(?P<value>\S+)']

[[queues.checklist]]
key = "log_file"
label = { de = "Logdatei", en = "Log file" }
attachments = ["*.log"]
keywords = ["Logdatei", "log file"]
"""
)

CUSTOMER = ("Jürgen Müller", "juergen.mueller@kunde.example")
OTHER = ("Jane Doe", "jane.doe@customer.example")
# A long English history under a short German answer: the language is the answer's (the new text;
# read with the history, lingua says English).
ENGLISH_HISTORY = "\n".join(
    ["Am 19.11.2026 um 10:00 schrieb Vendor Support <support@vendor.example>:"]
    + ["> Thank you for your message. We have looked at the export and found that the service account"] * 40
)


def _mails() -> list[bytes]:
    mails = [
        # 0: German, machine number given, a log file attached.
        make_mail(
            subject="Maschine steht",
            body="Guten Tag,\n\ndie Maschine steht seit heute früh.\n\nMaschinennummer: 4711-AB\n\nGruß",
            sender=CUSTOMER,
            message_id="<first@kunde.example>",
            attachments=[("trace.log", "text/plain", b"E42 at 07:12\n")],
        ),
        # 1: English, nothing of the checklist.
        make_mail(
            subject="License server",
            body="Hello,\n\nsince this morning the license server refuses every checkout.\n\nRegards",
            sender=OTHER,
            message_id="<second@customer.example>",
        ),
        # 2: a short German answer above a long English history.
        make_mail(
            subject="Export",
            body="Danke, das hilft leider nicht.\n\n" + ENGLISH_HISTORY,
            sender=("Petra Schmidt", "petra.schmidt@kunde.example"),
            message_id="<third@kunde.example>",
        ),
        # 3: an out-of-office reply about nothing of ours: noise.
        make_mail(
            subject="Abwesenheitsnotiz: Ihre Anfrage",
            body="Ich bin bis zum 30.11. nicht im Büro.",
            sender=("Karl Auto", "karl@kunde.example"),
            headers={"Auto-Submitted": "auto-replied"},
        ),
        # 4: the customer of mail 1 answers with the case's subject: the log file is given now.
        make_mail(
            subject="Re: License server",
            body="Hello,\n\nplease find the log file attached.\n\nRegards",
            sender=OTHER,
            message_id="<second-reply@customer.example>",
            headers={"In-Reply-To": "<second@customer.example>", "References": "<second@customer.example>"},
            attachments=[("server.log", "text/plain", b"checkout refused\n")],
        ),
        # 5: and again, with a subject of its own: the machine number.
        make_mail(
            subject="Machine number for the license server",
            body="Hello,\n\nMachine number: 998877\n\nRegards",
            sender=OTHER,
            message_id="<second-reply2@customer.example>",
            headers={"In-Reply-To": "<second@customer.example>", "References": "<second@customer.example>"},
        ),
    ]
    mails += [
        make_mail(subject=f"Anfrage {i}", sender=CUSTOMER, message_id=f"<bulk-{i}@kunde.example>") for i in range(3)
    ]
    # 9: HTML with an inline image, shown to the agents sanitised.
    mails.append(
        customer_mail(
            sender=CUSTOMER,
            to=SUPPORT_ADDRESS,
            subject="Alarm 17 an der KC4",
            text="Guten Tag,\n\ndie KC4 meldet seit heute früh Alarm 17, siehe Bild.\n\nViele Grüße\n",
            html=HOSTILE_HTML,
            files=[],
            inline_png=PNG,
        )
    )
    assert len(mails) >= POOL_MIN_BATCH
    return mails


@pytest.fixture
def app_with_checklist(tmp_path, db_url, imap_server, smtp_sink, imap_env):
    path = write_config(
        tmp_path / "mailbridge.toml",
        imap_port=imap_server.port,
        imap_user=imap_server.user,
        smtp_port=smtp_sink.port,
        db_url=db_url,
        var_dir=tmp_path / "var",
        queue_extra=CHECKLIST,
    )
    app = App(load_settings(path))
    app.upgrade_db()
    yield app
    app.close()


def _given(ticket: Ticket) -> list[str]:
    return [k for k, v in (ticket.checklist or {}).items() if v["given"]]


@pytest.mark.parametrize("prepared", ["pool", "inline"])
def test_pool_and_inline_preparation_give_the_same_cases(app_with_checklist, imap_server, prepared):
    app = app_with_checklist
    if prepared == "inline":
        app.preparer.workers = 0
    imap_server.append(_mails())
    report = app.poller("main").cycle()
    assert (app.preparer._pool is not None) == (prepared == "pool")
    assert report.dispositions == {"processed": 9, "noise": 1}
    with session_scope(app.session_factory) as s:
        tickets = {t.subject: t for t in s.scalars(select(Ticket))}
        assert {k: t.language for k, t in tickets.items()} == {
            "Maschine steht": "de",
            "License server": "en",
            "Export": "de",
            **{f"Anfrage {i}": "de" for i in range(3)},
            "Alarm 17 an der KC4": "de",
        }
        assert _given(tickets["Maschine steht"]) == ["machine_number", "log_file"]
        # The first mail gave nothing; the replies gave the log file, then the machine number.
        license_case = tickets["License server"]
        assert _given(license_case) == ["machine_number", "log_file"]
        given = s.scalars(
            select(Event.detail).where(Event.ticket_id == license_case.id, Event.kind == "information_given")
        ).all()
        assert [d["items"] for d in given] == [["log_file"], ["machine_number"]]
        assert _given(tickets["Export"]) == []
        classes = Counter(s.scalars(select(RawMessage.mail_class)))
        assert classes == {"human": 9, "out_of_office": 1}
        # The agents see the customer's HTML sanitised, its inline image beside it.
        alarm = tickets["Alarm 17 an der KC4"]
        raws = s.scalars(select(Outbox.raw).where(Outbox.ticket_id == alarm.id, Outbox.kind == "notification")).all()
        notes = [message_from_bytes(r, policy=default) for r in raws]
        (note,) = [n for n in notes if TEAM in str(n["To"])]
        html = note.get_body(("html",)).get_content()
        assert '<img src="cid:screenshot1@kunde.example" alt="Bildschirm" width="320">' in html
        assert "die <b>KC4</b> meldet seit heute früh <i>Alarm&nbsp;17</i>, siehe Bild:" in html
        for gone in ("evil.example", "<script", "onload", "<form"):
            assert gone not in html, gone
