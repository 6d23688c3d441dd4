"""The signed link to a case in every acknowledgement and relayed answer (``[web] base_url``),
through real servers: the mail in through IMAP (pymap), the mails read back from the SMTP server
(aiosmtpd), the link loaded with ``CaseLinks.load`` and fetched from ``mailbridge web`` on uvicorn;
on SQLite and PostgreSQL. Without ``[web]`` the mails carry no link and a relay goes as one mail."""

from __future__ import annotations

import http.client
import re
from datetime import timedelta

import pytest

from mailbridge.outbound.links import CaseLinkExpired
from tests.integration.attachment_support import BASE_URL, WebServer, web_config
from tests.integration.conversation_support import COLLEAGUE, CUSTOMER, TEAM, answer_note, make_desk, to
from tests.support import make_mail

CASE_LINK = re.compile(re.escape(BASE_URL) + r"c/[A-Za-z0-9_.\-]+")
FIRST = "Guten Tag,\n\nder Export nach PDF bricht mit Fehler 0x80004005 ab.\n\nViele Grüße\nJürgen Müller"
ENGLISH = "Hello,\n\nthe PDF export fails with error 0x80004005 since yesterday.\n\nBest regards\nJohn"


def _desk(tmp_path, imap_server, smtp_sink, db_url, *, web: bool = True):
    return make_desk(
        tmp_path,
        imap_server,
        smtp_sink,
        db_url,
        conversations=web_config(tmp_path, base_url=BASE_URL if web else None),
    )


@pytest.fixture
def desk(tmp_path, imap_server, smtp_sink, db_url, imap_env):
    d = _desk(tmp_path, imap_server, smtp_sink, db_url)
    yield d
    d.app.close()


def _open(desk, *, body=FIRST, cc=None):
    sent = desk.deliver(make_mail(subject="PDF-Export bricht ab", body=body, sender=CUSTOMER, cc=cc))
    (ack,) = to(sent, CUSTOMER[1])
    (note,) = to(sent, TEAM)
    case = ack.header("Subject").split("]", 1)[0].lstrip("[")
    return case, ack, note


def _html(sent) -> str:
    part = sent.msg.get_body(("html",))
    return part.get_content() if part is not None else ""


def test_the_acknowledgement_carries_the_customers_case_link_in_text_and_html(desk):
    case, ack, _ = _open(desk)
    assert desk.ticket(case).language == "de"
    links = CASE_LINK.findall(ack.text)
    assert len(links) == 1, ack.text
    assert f"Ihren Fall online ansehen: {links[0]}" in ack.text
    # The HTML part: the same link, as a link.
    assert f'<a href="{links[0]}">{links[0]}</a>' in _html(ack)
    token = links[0].removeprefix(f"{BASE_URL}c/")
    assert desk.app.case_links.load(token) == (CUSTOMER[1], case)
    # It expires after [web] case_link_days (30 by default) at the app's clock, and says whose it was.
    desk.clock.now += timedelta(days=31)
    with pytest.raises(CaseLinkExpired) as caught:
        desk.app.case_links.load(token)
    assert caught.value.address == CUSTOMER[1]


def test_an_english_acknowledgement_says_it_in_english(desk):
    _, ack, _ = _open(desk, body=ENGLISH)
    (link,) = CASE_LINK.findall(ack.text)
    assert f"View your case online: {link}" in ack.text
    assert "View your case online" in _html(ack)


def test_a_relayed_answer_goes_to_each_recipient_with_their_own_link(desk):
    """The requester and a colleague on Cc of the first mail: each gets a copy carrying a link
    signed for them; both copies show the same To and Cc, so a reply to all reaches everyone."""
    case, _, note = _open(desk, cc=f"{COLLEAGUE[0]} <{COLLEAGUE[1]}>")
    sent = answer_note(desk, note, "Guten Tag Herr Müller,\n\nbitte installieren Sie Patch 4.2.1.\n\nAnna")
    mine, theirs = to(sent, CUSTOMER[1]), to(sent, COLLEAGUE[1])
    assert len(mine) == 1 and len(theirs) == 1 and mine[0] is not theirs[0]
    assert mine[0].rcpt_tos == [CUSTOMER[1]] and theirs[0].rcpt_tos == [COLLEAGUE[1]]
    for copy in (mine[0], theirs[0]):
        assert CUSTOMER[1] in copy.header("To") and COLLEAGUE[1] in copy.header("Cc")
        assert "bitte installieren Sie Patch 4.2.1." in copy.text
        assert f"[{case}]" in copy.header("Subject")
    (link_mine,) = CASE_LINK.findall(mine[0].text)
    (link_theirs,) = CASE_LINK.findall(theirs[0].text)
    assert "Ihren Fall online ansehen: " + link_mine in mine[0].text
    load = desk.app.case_links.load
    assert load(link_mine.removeprefix(f"{BASE_URL}c/")) == (CUSTOMER[1], case)
    assert load(link_theirs.removeprefix(f"{BASE_URL}c/")) == (COLLEAGUE[1], case)
    # One mail in two copies: the same Message-ID (a reply to either threads onto it), recorded once
    # on the case with both recipients (the tracker and `tickets show` list the answer once).
    assert mine[0].header("Message-ID") == theirs[0].header("Message-ID")
    relays = [m for m in desk.messages(case) if m.kind == "relay"]
    assert len(relays) == 1 and sorted(relays[0].recipients) == sorted([CUSTOMER[1], COLLEAGUE[1]])
    assert relays[0].message_id == mine[0].header("Message-ID").strip("<>")
    # The colleague answers their copy (a client that drops the case tag from the subject): it
    # threads onto the case by the shared Message-ID.
    mid = theirs[0].header("Message-ID")
    desk.deliver(
        make_mail(
            subject="AW: PDF-Export bricht ab",
            body="Danke, Patch ist installiert.",
            sender=COLLEAGUE,
            headers={"In-Reply-To": mid, "References": mid},
        )
    )
    assert len(desk.tickets()) == 1
    assert [m for m in desk.messages(case) if m.direction == "in"][-1].sender_email == COLLEAGUE[1]
    # The case records one relay event naming both recipients, and the first response.
    relayed = [d for k, d in desk.events(case) if k == "relayed"]
    assert len(relayed) == 1 and sorted(relayed[0]["to"]) == sorted([CUSTOMER[1], COLLEAGUE[1]])
    assert desk.ticket(case).first_response_at is not None


def test_without_web_no_link_and_a_relay_is_one_mail(tmp_path, imap_server, smtp_sink, db_url, imap_env):
    desk = _desk(tmp_path, imap_server, smtp_sink, db_url, web=False)
    try:
        assert desk.app.case_links is None
        case, ack, note = _open(desk, cc=f"{COLLEAGUE[0]} <{COLLEAGUE[1]}>")
        for text in (ack.text, _html(ack)):
            assert "online" not in text and "/c/" not in text
        # The text part ends as before: signature and the automatic-mail line.
        assert ack.text.rstrip().endswith("Diese Nachricht wurde automatisch erstellt.")
        sent = answer_note(desk, note, "Guten Tag,\n\nbitte installieren Sie Patch 4.2.1.\n\nAnna")
        relays = [m for m in sent if CUSTOMER[1] in m.rcpt_tos or COLLEAGUE[1] in m.rcpt_tos]
        assert len(relays) == 1
        assert sorted(relays[0].rcpt_tos) == sorted([CUSTOMER[1], COLLEAGUE[1]])
        assert (
            relays[0]
            .text.rstrip()
            .endswith(f"Fall {case} – bitte lassen Sie die Fallnummer im Betreff stehen, wenn Sie antworten.")
        )
    finally:
        desk.app.close()


def _get(port: int, path: str, cookie: str | None = None) -> tuple[int, dict[str, str], bytes]:
    """GET ``path`` from the web app on loopback without following redirects (a browser behind the
    HTTPS proxy would; the session cookie is Secure, so it is carried here by hand)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path, headers={"Cookie": cookie} if cookie else {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def test_the_link_opens_the_case_on_the_web_app(desk):
    """The link from the mail, fetched from ``mailbridge web`` (uvicorn on loopback): it signs the
    recipient in and redirects to the case page, which shows the case; a changed link is a 404."""
    case, ack, _ = _open(desk)
    (link,) = CASE_LINK.findall(ack.text)
    path = "/" + link.removeprefix(BASE_URL)
    with WebServer(desk.app) as web:
        status, headers, _ = _get(web.port, path)
        assert status in (302, 303, 307), status
        assert headers["location"].endswith(f"/cases/{case}")
        cookie = headers["set-cookie"].split(";", 1)[0]
        status, _, body = _get(web.port, f"/cases/{case}", cookie)
        assert status == 200 and case.encode() in body and b"PDF-Export bricht ab" in body
        bad = path[:-3] + ("AAA" if not path.endswith("AAA") else "BBB")
        assert _get(web.port, bad)[0] == 404


def test_the_relay_cap_counts_a_relay_once_however_many_copies(tmp_path, imap_server, smtp_sink, db_url, imap_env):
    """``max_mails_per_case_per_hour`` counts relays, not copies: with 2 per hour and two recipients,
    two answers go out (four copies); the third is held back and the agent is told."""
    d = make_desk(
        tmp_path,
        imap_server,
        smtp_sink,
        db_url,
        conversations="max_mails_per_case_per_hour = 2\n" + web_config(tmp_path, base_url=BASE_URL),
    )
    try:
        _, _, note = _open(d, cc=f"{COLLEAGUE[0]} <{COLLEAGUE[1]}>")
        for n in (1, 2):
            sent = answer_note(d, note, f"Antwort {n}")
            assert len(to(sent, CUSTOMER[1])) == 1 and len(to(sent, COLLEAGUE[1])) == 1, n
        sent = answer_note(d, note, "Antwort 3")
        assert to(sent, CUSTOMER[1]) == [] and to(sent, COLLEAGUE[1]) == []
        assert any("already sent 2 relayed replies" in m.text for m in sent)
    finally:
        d.app.close()
