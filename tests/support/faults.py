"""What the fault and chaos tests share: their config, numbered customer mails, counts read from the
database, and the end-state check (one ticket and one received acknowledgement per mail)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from sqlalchemy import func
from sqlalchemy import select as sql_select
from sqlalchemy.engine import Engine

from mailbridge.store.models import Event, Message, Outbox, Quarantine, RawMessage, Ticket
from tests.support import HOTLINE_ADDRESS, SUPPORT_ADDRESS, make_mail, write_config


def make_config(tmp_path: Path, *, imap, smtp_port: int, db_url: str, account_extra: str = "", extra: str = "") -> Path:
    """The shared test config (poll every 2 s, outbox every 1 s, 5 s leases) for the IMAP server or
    account ``imap``."""
    return write_config(
        tmp_path / "mailbridge.toml",
        imap_port=imap.port,
        imap_user=imap.user,
        smtp_port=smtp_port,
        db_url=db_url,
        var_dir=tmp_path / "var",
        account_extra=account_extra,
        extra=extra,
    )


# ------------------------------------------------------------------------------ mail and state


def make_mails(n: int, tag: str, start: int = 0) -> list[tuple[str, bytes]]:
    """``n`` distinct customer mails (Message-ID without <>, raw bytes), German and English mixed."""
    out = []
    for i in range(start, start + n):
        if i % 2:
            sender = (f"Jane Roe {i}", f"jane{i}@customer{i % 5}.example")
            body = f"Hello,\n\nour nightly import job {i} stopped with a timeout.\n\nRegards\nJane"
            subject, to = f"Import job {i} times out", SUPPORT_ADDRESS
        else:
            sender = (f"Jürgen Müller {i}", f"juergen{i}@kunde{i % 7}.example")
            body = f"Guten Tag,\n\nder Drucker in Halle {i} druckt seit gestern nur noch leere Seiten.\n\nGruß\nJürgen"
            subject, to = f"Drucker in Halle {i} defekt", HOTLINE_ADDRESS
        mid = f"{tag}-{i}@{sender[1].split('@')[1]}"
        out.append((mid, make_mail(subject=subject, body=body, sender=sender, to=to, message_id=f"<{mid}>")))
    return out


def counts(engine: Engine) -> tuple[int, dict[str, int]]:
    """(tickets, outbox rows by status); (0, {}) before the service created the schema."""
    try:
        with engine.connect() as c:
            tickets = c.scalar(sql_select(func.count()).select_from(Ticket))
            outbox = dict(c.execute(sql_select(Outbox.status, func.count()).group_by(Outbox.status)).all())
    except Exception:
        return 0, {}
    return tickets, outbox


def all_sent(engine: Engine, n: int) -> bool:
    tickets, outbox = counts(engine)
    return tickets >= n and outbox.get("sent", 0) >= n and not (set(outbox) - {"sent"})


def check_exactly_once(
    engine: Engine,
    smtp_sink,
    settings,
    mids: list[str],
    *,
    flagged_resends_allowed: bool = False,
    unknown_outcomes_allowed: bool = False,
):
    """Every mail one ticket, every ticket one acknowledgement the SMTP server received, every raw
    mail stored (row and file). Returns (received Counter by Message-ID, outbox rows by id order).

    Duplicates are counted, never hidden: with ``flagged_resends_allowed`` a Message-ID may arrive
    more than once only as often as its outbox row was re-sent after a ``mail_resent_unknown_outcome``
    event (the sender died in that mail's SMTP exchange, see outbound/sender.py; a row re-sent right
    after a restart can be hit by the next kill too): at most 1 + its events. Otherwise every count
    must be exactly 1; and unless ``unknown_outcomes_allowed`` no row may carry that event at all
    (a broken database link can make the commit of a row's ``sending`` mark ambiguous: the sender
    then cannot tell that the mail never left, so the row is, rightly, re-sent as of unknown outcome).
    """
    with engine.connect() as c:
        tickets = c.execute(sql_select(Ticket.id, Ticket.serial, Ticket.requester_email)).all()
        inbound = c.execute(
            sql_select(Message.ticket_id, Message.message_id).where(
                Message.direction == "in", Message.ticket_id.is_not(None)
            )
        ).all()
        outbox = c.execute(
            sql_select(
                Outbox.id, Outbox.ticket_id, Outbox.kind, Outbox.status, Outbox.message_id, Outbox.envelope_to
            ).order_by(Outbox.id)
        ).all()
        resent = c.execute(sql_select(Event.detail).where(Event.kind == "mail_resent_unknown_outcome")).all()
        raws = c.execute(sql_select(RawMessage.path, RawMessage.disposition)).all()
        quarantined = c.scalar(sql_select(func.count()).select_from(Quarantine))

    n = len(mids)
    assert len(tickets) == n, f"{len(tickets)} tickets for {n} mails"
    first = settings.case_numbers.first_serial
    assert sorted(t.serial for t in tickets) == list(range(first, first + n)), "a case number gap or collision"
    assert Counter(m.message_id for m in inbound) == Counter(mids), "a mail has no ticket, or two"
    assert len({m.ticket_id for m in inbound}) == n

    assert len(outbox) == n and {o.kind for o in outbox} == {"ack"} and {o.status for o in outbox} == {"sent"}
    assert sorted(o.ticket_id for o in outbox) == sorted(t.id for t in tickets), "a ticket without its ack, or two"

    received = smtp_sink.received
    got = Counter(r.message["Message-ID"].strip("<>") for r in received)
    by_mid = {o.message_id: o for o in outbox}
    assert set(got) == set(by_mid), "an acknowledgement is missing or a foreign mail was sent"
    requester = {t.id: t.requester_email for t in tickets}
    for r in received:
        o = by_mid[r.message["Message-ID"].strip("<>")]
        assert r.rcpt_tos == list(o.envelope_to) == [requester[o.ticket_id]]
    doubled = {mid: k for mid, k in got.items() if k > 1}
    if flagged_resends_allowed:
        flagged = Counter(e.detail["outbox_id"] for e in resent)
        unwarned = {mid: k for mid, k in doubled.items() if k > 1 + flagged[by_mid[mid].id]}
        assert not unwarned, f"deliveries the ticket's history does not warn about: {unwarned}"
    else:
        assert not doubled, f"acknowledgements delivered more than once: {doubled}"
        if not unknown_outcomes_allowed:
            assert not resent, "a row was re-sent with an unknown first outcome (only a crash may cause that)"

    assert len(raws) == n and {r.disposition for r in raws} == {"processed"}
    missing = [r.path for r in raws if not (settings.var_dir / "raw" / r.path).is_file()]
    assert not missing, f"raw files missing: {missing[:5]}"
    assert quarantined == 0
    return got, outbox
