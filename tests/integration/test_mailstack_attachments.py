"""The customer's attachments in the agents' notification through a mainstream mail stack (issue 19):
the customer's mail in through Postfix and Dovecot, fetched over IMAP; the notification out through
Postfix into the team's Dovecot mailbox, read back over IMAP; the download link served by
``mailbridge web`` (uvicorn on loopback). On SQLite and PostgreSQL."""

from __future__ import annotations

import re

import pytest

from tests.integration.attachment_support import (
    HOSTILE_HTML,
    LOG,
    PNG,
    WebServer,
    customer_mail,
    trace_bytes,
    web_config,
)
from tests.integration.conversation_support import AGENT, AGENT2, CUSTOMER, TEAM, to
from tests.mailstack import (  # noqa: F401  (fixtures: mailstack, mailstack_session)
    mailstack_fixture,
    mailstack_session_fixture,
    stack_desk,
)
from tests.support import SUPPORT_ADDRESS

pytestmark = pytest.mark.mailstack

PEOPLE = (CUSTOMER[1], TEAM, AGENT[1], AGENT2[1])
LINK_RE = re.compile(r"https://support\.example/attachments/\S+")


@pytest.fixture
def desk(mailstack, tmp_path, db_url, monkeypatch):
    d = stack_desk(
        mailstack, tmp_path, db_url, users=PEOPLE, conversations=web_config(tmp_path), monkeypatch=monkeypatch
    )
    yield d
    d.app.close()


def test_a_2mb_log_travels_and_a_30mb_trace_is_linked_through_postfix_and_dovecot(desk):
    trace = trace_bytes()
    sent = desk.deliver(
        customer_mail(
            sender=CUSTOMER,
            to=SUPPORT_ADDRESS,
            subject="Alarm an der KC4",
            files=[("kc4_trace.zip", "application/zip", trace), ("../kc4_alarm.log", "text/plain", LOG)],
        )
    )
    (note,) = to(sent, TEAM)
    text = note.msg.get_body(("plain",)).get_content()
    print(text)
    files = [p for p in note.msg.walk() if p.get_content_disposition() == "attachment"]
    assert [p.get_filename() for p in files] == ["kc4_alarm.log"]
    assert files[0].get_payload(decode=True) == LOG
    assert "kc4_trace.zip (30.2 MB), download (agents of this queue, 30 days):" in text
    (link,) = LINK_RE.findall(text)
    (ack,) = to(sent, CUSTOMER[1])
    assert not [p for p in ack.msg.walk() if p.get_content_disposition() == "attachment"]
    with WebServer(desk.app) as web:
        status, headers, body = web.get(link)
        assert status == 200 and body == trace
        assert headers["content-type"] == "application/zip"
        assert web.get(link[:-2] + "xx")[0] == 404


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_customers_html_and_its_inline_image_reach_the_team_through_postfix_and_dovecot(desk):
    """The notification's HTML alternative read back from the team's Dovecot mailbox: the image
    byte-identical beside the HTML that shows it by cid:, nothing remote, no script."""
    png = PNG
    sent = desk.deliver(
        customer_mail(
            sender=CUSTOMER, to=SUPPORT_ADDRESS, subject="Alarm 17", files=[], inline_png=png, html=HOSTILE_HTML
        )
    )
    (note,) = to(sent, TEAM)
    html = note.msg.get_body(("html",)).get_content()
    related = next(p for p in note.msg.walk() if p.get_content_type() == "multipart/related")
    root, img = related.get_payload()
    assert root.get_content_type() == "text/html"
    assert img["Content-ID"] == "<screenshot1@kunde.example>" and img.get_payload(decode=True) == png
    assert 'src="cid:screenshot1@kunde.example"' in html
    assert "tracker.example" not in html and "<script" not in html and "evil.example" not in html
    assert "Alarm 17" in note.msg.get_body(("plain",)).get_content()
