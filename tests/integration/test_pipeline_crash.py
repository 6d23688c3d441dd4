"""The crash path: a pipeline step that raises for one mail costs that mail nothing and stops
nothing else. Through a real IMAP server, the running service, a real database and SMTP server."""

from __future__ import annotations

import asyncio
import threading
import time

from sqlalchemy import select

from mailbridge.scheduler import Service
from mailbridge.store.db import session_scope
from mailbridge.store.models import Message, Quarantine, RawMessage, Ticket
from mailbridge.store.rawstore import raw_store
from tests.support import make_mail

BOOM = "Explodierende Anfrage"


class Exploding:
    """Wraps a real step; raises inside it for the mail whose subject names BOOM."""

    def __init__(self, step):
        self.step = step
        self.name = step.name
        self.raised = 0

    def __call__(self, mail):
        if mail.parsed is not None and BOOM in mail.parsed.subject:
            self.raised += 1
            raise RuntimeError("disk on fire")
        self.step(mail)


def _wait(predicate, timeout=60.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def _tickets(app):
    with session_scope(app.session_factory) as s:
        return {t.subject: t.case_number for t in s.scalars(select(Ticket))}


def test_a_step_that_raises_quarantines_its_mail_and_the_service_keeps_running(app, imap_server, smtp_sink):
    steps = app.pipeline.steps
    i = next(i for i, s in enumerate(steps) if s.name == "open_ticket")
    steps[i] = exploding = Exploding(steps[i])

    svc = Service(app)
    runner = threading.Thread(target=lambda: asyncio.run(svc.run(install_signals=False)), daemon=True)
    runner.start()
    try:
        imap_server.append(
            [
                make_mail(subject="Lizenzserver startet nicht", message_id="<ok-1@kunde.example>"),
                make_mail(subject=BOOM, message_id="<boom@kunde.example>", sender=("Eva", "eva@firma.example")),
                make_mail(subject="Drucker druckt nicht", message_id="<ok-2@kunde.example>"),
            ]
        )
        assert _wait(lambda: len(_tickets(app)) == 2), _tickets(app)
        assert set(_tickets(app)) == {"Lizenzserver startet nicht", "Drucker druckt nicht"}
        # Both customers are acknowledged; nobody hears of the failed mail.
        acks = smtp_sink.wait_for(2)
        assert sorted(r for m in acks for r in m.rcpt_tos) == ["juergen.mueller@kunde.example"] * 2

        with session_scope(app.session_factory) as s:
            (q,) = s.scalars(select(Quarantine)).all()
            raw = s.get(RawMessage, q.raw_id)
            assert (q.stage, q.status) == ("open_ticket", "open")
            assert "RuntimeError" in q.reason and "disk on fire" in q.reason
            assert (q.message_id, q.sender, q.subject) == ("boom@kunde.example", "eva@firma.example", BOOM)
            assert raw.disposition == "quarantined"
            # The raw bytes are kept, exactly as fetched; nothing of the failed attempt was committed.
            assert BOOM.encode() in raw_store(app.settings.var_dir).get(raw.path)
            assert s.scalars(select(Message).where(Message.message_id == "boom@kunde.example")).first() is None
        assert exploding.raised == 1  # a step's failure is not retried as a conflict

        # Still running: the next mail becomes a case.
        imap_server.append([make_mail(subject="Noch eine Frage", message_id="<ok-3@kunde.example>")])
        assert _wait(lambda: "Noch eine Frage" in _tickets(app)), _tickets(app)
        c = imap_server.client()
        try:
            counts = {f: c.select_folder(f)[b"EXISTS"] for f in ("INBOX", "Processed", "Quarantine")}
        finally:
            c.logout()
        assert counts == {"INBOX": 0, "Processed": 3, "Quarantine": 1}
    finally:
        svc.request_stop()
        runner.join(30)
    assert not runner.is_alive()
