"""The carrier of one mail (ingest/mail.py): what an attempt decides is gone when the pipeline
starts the mail's transaction again; what fetch and prepare found stays."""

from __future__ import annotations

from datetime import UTC, datetime

from mailbridge.ingest.mail import InboundMail
from mailbridge.ingest.noise import Classification, MailClass
from mailbridge.ingest.parser import parse_mail
from mailbridge.vocabulary import AuthorRole, Disposition, MessageKind
from tests.support import make_mail

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def _mail() -> InboundMail:
    raw = make_mail()
    m = InboundMail("main", "INBOX", 7, 42, raw, sha256="ab" * 32, raw_path="ab/cd", parsed=parse_mail(raw))
    m.begin(session=None, now=NOW)  # type: ignore[arg-type]
    return m


def test_begin_forgets_every_decision_of_the_attempt_before():
    m = _mail()
    m.events.append({"kind": "created"})
    m.flags.append("x")
    m.routing["rule"] = "new"
    m.role, m.kind, m.raw_id, m.answered = AuthorRole.AGENT, MessageKind.NOTE, 5, True
    m.finish(Disposition.NOISE, "out of office")
    old_events = m.events
    later = datetime(2026, 11, 23, 9, 1, tzinfo=UTC)
    m.begin(session=None, now=later)  # type: ignore[arg-type]
    assert (m.events, m.flags, m.routing) == ([], [], {})
    assert (m.role, m.kind, m.raw_id, m.answered, m.outcome) == (
        AuthorRole.REQUESTER,
        MessageKind.CUSTOMER,
        None,
        False,
        None,
    )
    assert m.disposition is Disposition.PROCESSED and m.now == later
    assert m.events is not old_events  # a fresh list: the failed attempt's entries are never written
    # What fetch and prepare found is kept.
    assert (m.account, m.uid, m.sha256, m.raw_path) == ("main", 42, "ab" * 32, "ab/cd") and m.parsed is not None


def test_the_outcome_says_which_mails_are_still_stored():
    m = _mail()
    m.finish(Disposition.IGNORED, "From is our own address")
    assert m.outcome is not None and m.outcome.keeps_message and m.disposition is Disposition.IGNORED
    m.to_quarantine("validate", "no usable sender address in From")
    assert m.outcome.stage == "validate" and not m.outcome.keeps_message
    m.finish(Disposition.DUPLICATE, "same as raw message 1")
    assert not m.outcome.keeps_message


def test_machine_made_follows_the_class_only():
    m = _mail()
    assert m.machine_made is None  # not classified yet
    m.mail_class = Classification(MailClass.HUMAN, "no automatic marker")
    assert m.machine_made is None
    m.mail_class = Classification(MailClass.AUTO_FORWARDED, "Auto-Submitted: auto-forwarded")
    assert m.machine_made is None  # a person's request, forwarded by rule
    for kind in (MailClass.OUT_OF_OFFICE, MailClass.AUTO_REPLY, MailClass.HARD_BOUNCE, MailClass.LIST, MailClass.OWN):
        m.mail_class = Classification(kind, f"because {kind}")
        assert m.machine_made == f"because {kind}"
