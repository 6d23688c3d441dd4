"""A long backlog is worked as fast as a short one (issue 18): no statement the ingest path runs per
mail may read a whole table that grows with the mail (a full scan costs more with every mail).

Mails go in through a real IMAP server (pymap) and the poller's cycle, on SQLite and PostgreSQL;
every statement the service runs is recorded with its parameters and asked for its plan
(SQLite ``EXPLAIN QUERY PLAN``; PostgreSQL ``EXPLAIN`` with ``enable_seqscan`` off, so a sequential
scan in the plan means there is no index it could use, whatever the table's size now).

The mails cover the per-mail paths: new cases (deduplication by hash and Message-ID, case numbers,
the automatic-mail counters and suppression), a duplicate by Message-ID, a reply threaded on our
acknowledgement (thread matching on References/In-Reply-To, the case locked, its clocks), a reply
naming its case number, an out-of-office reply on a case, a status request of a customer.
"""

from __future__ import annotations

import re

from sqlalchemy import event, select, text

from mailbridge.store.db import session_scope
from mailbridge.store.models import Outbox, Ticket
from tests.support import make_mail

# Tables that grow with every mail (or every case); a full scan of one of them grows with the backlog.
GROWING = {
    "tickets",
    "ticket_participants",
    "raw_messages",
    "messages",
    "attachments",
    "events",
    "outbox",
    "auto_mails",
    "address_health",
    "quarantine",
}
CUSTOMER = ("Jürgen Müller", "juergen.mueller@kunde.example")
COLLEAGUE = ("Petra Kollegin", "petra@kunde.example")


def _record(app) -> list[tuple[str, object]]:
    """Every statement (and its first parameter set) the app's engine runs from now on."""
    seen: list[tuple[str, object]] = []

    def before(_conn, _cursor, statement, parameters, _context, executemany):
        if executemany:
            parameters = parameters[0] if parameters else parameters
        seen.append((statement, parameters))

    event.listen(app.engine, "before_cursor_execute", before)
    return seen


def _full_scans(app, statements) -> dict[str, set[str]]:
    """statement → the growing tables its plan reads whole."""
    found: dict[str, set[str]] = {}
    done = set()
    pg = app.engine.dialect.name == "postgresql"
    with app.engine.connect() as conn:
        for statement, parameters in statements:
            head = statement.lstrip().split(None, 1)[0].upper()
            if head not in ("SELECT", "UPDATE", "DELETE", "WITH") or statement in done:
                continue
            done.add(statement)
            if pg:
                conn.exec_driver_sql("SET enable_seqscan = off")
                (plan,) = conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + statement, parameters).one()
                tables = set(_pg_full_reads(plan[0]["Plan"], lambda name: _leading_column(conn, name)))
            else:
                # SCAN (also "SCAN t USING INDEX i": the whole index) reads a table whole; SEARCH looks up.
                plan = [r[-1] for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)]
                tables = {m.group(1) for line in plan if (m := re.match(r"SCAN (\w+)", line))}
            bad = tables & GROWING
            if bad:
                found[re.sub(r"SELECT .*? FROM", "SELECT … FROM", " ".join(statement.split()), count=1)[:400]] = bad
        conn.rollback()
    return found


def _pg_full_reads(node: dict, leading):
    """Tables a PostgreSQL plan reads whole: a sequential scan, or an index scan whose condition does
    not name the index's first column (the whole index is read; ``leading(index name)``)."""
    kind = node.get("Node Type", "")
    if kind == "Seq Scan":
        yield node.get("Relation Name", "?")
    elif kind in ("Index Scan", "Index Only Scan", "Bitmap Index Scan"):
        first = leading(node["Index Name"])
        if not re.search(rf"\b{first}\b", node.get("Index Cond", "")):
            yield node.get("Relation Name") or _table_of(node["Index Name"])
    for child in node.get("Plans", []):
        yield from _pg_full_reads(child, leading)


_INDEX_TABLE: dict[str, str] = {}


def _leading_column(conn, index: str) -> str:
    row = conn.exec_driver_sql(
        "SELECT a.attname, t.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "JOIN pg_class t ON t.oid = i.indrelid "
        "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] WHERE c.relname = %(n)s",
        {"n": index},
    ).one()
    _INDEX_TABLE[index] = row[1]
    return row[0]


def _table_of(index: str) -> str:
    return _INDEX_TABLE.get(index, index)


def test_no_per_mail_statement_reads_a_growing_table_whole(app, imap_server):
    statements = _record(app)
    poller = app.poller("main")
    imap_server.append(
        [
            make_mail(subject="Lizenzserver startet nicht", message_id="<first@kunde.example>", cc=COLLEAGUE[1]),
            make_mail(subject="Drucker druckt nicht", message_id="<second@kunde.example>"),
        ]
    )
    assert poller.cycle().dispositions == {"processed": 2}
    ours = len(statements)
    with session_scope(app.session_factory) as s:
        ticket = s.scalars(select(Ticket).where(Ticket.subject == "Lizenzserver startet nicht")).one()
        ack = s.scalars(select(Outbox).where(Outbox.ticket_id == ticket.id, Outbox.kind == "ack")).one()
        case, ack_id = ticket.case_number, ack.message_id
    del statements[ours:]  # the test's own reading is not the service's
    imap_server.append(
        [
            # The same Message-ID again (another copy of the first mail): a duplicate.
            make_mail(subject="Lizenzserver startet nicht (Kopie)", message_id="<first@kunde.example>"),
            # A reply on our acknowledgement (References/In-Reply-To), and one naming the case only.
            make_mail(
                subject=f"Re: [{case}] Lizenzserver startet nicht",
                body="Hier noch die Logdatei.\n\nGruß",
                headers={"In-Reply-To": f"<{ack_id}>", "References": f"<first@kunde.example> <{ack_id}>"},
            ),
            make_mail(subject=f"Nachtrag zu {case}", body="Es betrifft auch den zweiten Server."),
            # An out-of-office reply to our acknowledgement.
            make_mail(
                subject="Abwesenheitsnotiz: Lizenzserver startet nicht",
                body="Ich bin bis Montag nicht im Haus.",
                sender=COLLEAGUE,
                headers={"Auto-Submitted": "auto-replied", "In-Reply-To": f"<{ack_id}>", "References": f"<{ack_id}>"},
            ),
            # A customer's status request (a participant, not a requester).
            make_mail(subject="Status", body="", sender=COLLEAGUE),
        ]
    )
    report = poller.cycle()
    poller.close()
    assert report.fetched == 5 and report.dispositions.get("duplicate") == 1, report.dispositions

    scans = _full_scans(app, statements)
    assert not scans, "\n".join(f"{sorted(t)}: {s}" for s, t in scans.items())


def test_the_plans_are_read(app):
    """The check above can fail: a statement without an index is reported."""
    with app.engine.begin() as conn:
        conn.execute(text("SELECT 1"))
    scans = _full_scans(app, [("SELECT id FROM messages WHERE subject = 'x'", {} if _pg(app) else ())])
    assert list(scans.values()) == [{"messages"}]


def _pg(app) -> bool:
    return app.engine.dialect.name == "postgresql"
