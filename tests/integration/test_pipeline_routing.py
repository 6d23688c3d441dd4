"""One rule decides a mail's queue (ingest/routing.py): the support address the customer wrote to
comes before the mailbox it was delivered into, for a ticket and for the notice about a mail too
large to take, alike. Through real IMAP and SMTP servers."""

from __future__ import annotations

from sqlalchemy import select

from mailbridge.store.db import session_scope
from mailbridge.store.models import Quarantine, Ticket
from tests.integration.conversation_support import CUSTOMER, make_desk, to
from tests.support import HOTLINE_ADDRESS, SUPPORT_ADDRESS, make_mail

# The hotline address is delivered into the support mailbox, whose server stamps its own address.
SHARED_MAILBOX = {"Delivered-To": SUPPORT_ADDRESS}


def test_written_queue_wins_over_the_delivering_mailbox_for_cases_and_size_notices(
    tmp_path, imap_server, smtp_sink, db_url, imap_env
):
    desk = make_desk(tmp_path, imap_server, smtp_sink, db_url, conversations="\n[ingest]\nmax_message_bytes = 200000\n")
    small = make_mail(sender=CUSTOMER, to=HOTLINE_ADDRESS, subject="Maschine steht", headers=SHARED_MAILBOX)
    (ack,) = to(desk.deliver(small), CUSTOMER[1])
    assert "Vendor Hotline" in ack.header("From")

    big = make_mail(
        sender=CUSTOMER,
        to=HOTLINE_ADDRESS,
        subject="Logdateien",
        headers=SHARED_MAILBOX,
        attachments=[("server.log", "text/plain", b"x" * 300_000)],
    )
    (notice,) = to(desk.deliver(big), CUSTOMER[1])
    # The hotline (German) answers, as it did for the case: not the support queue (English).
    assert "Vendor Hotline" in notice.header("From") and "hotline@" in notice.header("From")
    assert "zu groß" in notice.header("Subject")
    with session_scope(desk.app.session_factory) as s:
        assert [t.queue for t in s.scalars(select(Ticket))] == ["hotline"]
        (q,) = s.scalars(select(Quarantine)).all()
        assert q.stage == "size" and "was told" in q.reason
