"""The customers' case tracker as a customer uses it: Chromium (Playwright, Debian's build) on
``mailbridge web`` (uvicorn on loopback) over a database filled through the real pipeline (pymap,
aiosmtpd), on SQLite and PostgreSQL. Sign-in by the link read from the mail aiosmtpd received;
list, search, sort, open a case; a comment and a request for urgency reach the agents through the
pipeline; another organisation's case stays out of reach; used and expired links and forged POSTs
are refused. Screenshots of the list and the case page in German and English land in the test's
temp dir."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from mailbridge.store.db import session_scope
from mailbridge.store.models import Message, SigninToken
from tests.integration.conversation_support import AGENT, TEAM, Sent, answer_note
from tests.integration.tracker_support import ALBERT, ALICE, BORIS, CASE_LINK_RE, SIGNIN_LINK_RE, TrackerDesk

playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM) and not os.environ.get("MAILBRIDGE_REQUIRE_BROWSER"),
        reason="Debian's chromium is not installed",
    ),
]


@pytest.fixture
def browser():
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def tracker(tmp_path, imap_server, smtp_sink, db_url, imap_env):
    with TrackerDesk(tmp_path, imap_server, smtp_sink, db_url) as t:
        yield t


def sign_in(tracker: TrackerDesk, page, address: str) -> str:
    """Ask for a sign-in mail on the page, read the link from the mail aiosmtpd received, open it
    and confirm; the link."""
    before = len(tracker.desk.smtp.received)
    page.goto(tracker.base + "signin")
    page.get_by_label("E-mail address").fill(address)
    with page.expect_navigation():  # the next page, not the one being left
        page.get_by_role("button", name="Send sign-in link").click()
    assert "If we know this address, a sign-in link is on its way" in page.content()
    mail = tracker.signin_mail(before, address)
    assert mail.header("Auto-Submitted") == "auto-generated" and not mail.msg.get("In-Reply-To")
    print(f"\n--- the sign-in mail to {address} ---\n" + mail.msg.as_string())
    link = SIGNIN_LINK_RE.search(mail.text).group(1)
    page.goto(link)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(tracker.base + "cases")
    return link


def case_numbers(page) -> list[str]:
    return page.locator("table.cases tbody tr td:first-child a").all_inner_texts()


def test_sign_in_list_search_sort_open_comment_and_urgency(tracker, browser, tmp_path):
    t = tracker
    a1, _ = t.open_case(ALICE, "Drucker druckt nicht", "Guten Tag,\n\nder Drucker im 2. Stock druckt nicht.\n")
    t.desk.clock.now += timedelta(minutes=5)
    a2, _ = t.open_case(ALICE, "VPN bricht ab", "Hello,\n\nthe VPN drops every ten minutes since Monday.\n")
    t.desk.clock.now += timedelta(minutes=5)
    a3, _ = t.open_case(ALBERT, "Lizenzserver startet nicht", "Guten Tag,\n\nder Lizenzserver meldet Fehler 0x42.\n")
    b1, _ = t.open_case(BORIS, "Beta: Datenbank langsam", "Hello,\n\nour database of Beta is slow.\n")

    # An unknown address gets the same page and no mail.
    page = browser.new_context(locale="en-US").new_page()
    before = len(t.desk.smtp.received)
    page.goto(t.base + "signin")
    page.get_by_label("E-mail address").fill("nobody@unknown.example")
    with page.expect_navigation():  # the next page, not the one being left
        page.get_by_role("button", name="Send sign-in link").click()
    assert "If we know this address, a sign-in link is on its way" in page.content()
    assert not [m for m in t.send_outbox() if "nobody@unknown.example" in m.rcpt_tos]
    assert len(t.desk.smtp.received) == before

    sign_in(t, page, ALICE[1])
    # ACME lets its people see all its cases: Albert's too; never Beta's.
    assert page.get_by_role("heading", name="Cases of ACME GmbH").is_visible()
    assert sorted(case_numbers(page)) == sorted([a1, a2, a3])
    assert b1 not in page.content()
    assert "Severity 3" in page.content()  # the severity's label, not its key

    # Search by text of a message, by subject, by case number.
    page.get_by_label("Search").fill("0x42")
    with page.expect_navigation():
        page.get_by_role("button", name="Show").click()
    assert case_numbers(page) == [a3]
    page.get_by_label("Search").fill("vpn")
    with page.expect_navigation():
        page.get_by_role("button", name="Show").click()
    assert case_numbers(page) == [a2]
    page.get_by_label("Search").fill(b1)  # another organisation's number finds nothing
    with page.expect_navigation():  # the next page, not the one being left
        page.get_by_role("button", name="Show").click()
    assert case_numbers(page) == [] and "No cases found." in page.content()

    # Sort by created, oldest first, then newest first.
    page.get_by_label("Search").fill("")
    page.get_by_label("Sort by").select_option("created")
    page.get_by_label("Order").select_option("asc")
    with page.expect_navigation():
        page.get_by_role("button", name="Show").click()
    assert case_numbers(page) == [a1, a2, a3]
    page.get_by_label("Order").select_option("desc")
    with page.expect_navigation():
        page.get_by_role("button", name="Show").click()
    assert case_numbers(page) == [a3, a2, a1]
    page.screenshot(path=str(tmp_path / "list-en.png"), full_page=True)

    # Open a case: the customer's mail, the acknowledgement, the SLA state in words.
    page.get_by_role("link", name=a1).click()
    page.wait_for_url(t.base + f"cases/{a1}")
    body = page.content()
    assert "der Drucker im 2. Stock druckt nicht" in body
    assert "Vendor Support" in body  # our acknowledgement, under the queue's name
    assert "first response by" in body
    assert "Albert" not in body
    assert "/c/" not in body and f"{t.base}cases/{a1}" in body  # the mailed case link is not shown
    page.screenshot(path=str(tmp_path / "case-en.png"), full_page=True)

    # German, switched on the page.
    with page.expect_navigation():
        page.get_by_role("link", name="Deutsch").click()
    assert page.get_by_role("heading", name="Verlauf").is_visible()
    assert "erste Antwort bis" in page.content()
    page.screenshot(path=str(tmp_path / "case-de.png"), full_page=True)
    page.goto(t.base + "cases")
    assert page.get_by_role("heading", name="Anfragen von ACME GmbH").is_visible()
    page.screenshot(path=str(tmp_path / "list-de.png"), full_page=True)
    with page.expect_navigation():
        page.get_by_role("link", name="English").click()

    # The agent answers and sets the case pending; the customer's comment opens it again and the
    # agents' notification arrives at the SMTP server.
    notes = [m for m in t.desk.smtp.received if TEAM in m.rcpt_tos and f"[{a1}]" in str(m.message["Subject"])]
    assert notes
    first_note = Sent(notes[0].mail_from, notes[0].rcpt_tos, notes[0].message)
    t._aside(answer_note, t.desk, first_note, "#pending\n\nBitte starten Sie den Drucker neu und melden Sie sich.")
    assert t.desk.ticket(a1).status == "pending"
    page.goto(t.base + f"cases/{a1}")
    assert "Bitte starten Sie den Drucker neu" in page.content()  # the relayed answer
    assert AGENT[1] not in page.content()  # never an agent's address
    before = len(t.desk.smtp.received)
    page.get_by_label("Your comment").fill("Neustart hat nicht geholfen, die Anzeige zeigt E-17.")
    page.get_by_label("Files (optional)").set_input_files(
        files=[{"name": "anzeige.txt", "mimeType": "text/plain", "buffer": b"E-17 paper jam\n"}]
    )
    page.get_by_role("button", name="Send").click()
    page.wait_for_url(t.base + f"cases/{a1}?done=comment")
    assert "your comment has been received" in page.content()
    assert "Neustart hat nicht geholfen" in page.content()
    assert t.desk.ticket(a1).status == "open"
    sent = t.send_outbox()
    note = [m for m in sent if TEAM in m.rcpt_tos]
    assert note and "Neustart hat nicht geholfen" in note[0].text
    print("\n--- the agents' notification of the comment ---\n" + note[0].text)
    assert any(p.get_filename() == "anzeige.txt" for p in note[0].msg.iter_attachments())
    with session_scope(t.app.session_factory) as s:
        m = s.scalars(
            select(Message).where(Message.direction == "in", Message.body_text.like("%Neustart hat nicht%"))
        ).one()
        assert (m.direction, m.kind, m.sender_email) == ("in", "customer", ALICE[1])
    # The attachment downloads from the case page, as a file.
    with page.expect_download() as dl:
        page.get_by_role("link", name="anzeige.txt").click()
    assert dl.value.suggested_filename == "anzeige.txt"
    assert Path(dl.value.path()).read_bytes() == b"E-17 paper jam\n"

    # Ask for higher urgency: an event on the case, loud in the agents' notification.
    page.get_by_label("Reason").fill("Die ganze Abteilung kann nicht drucken.")
    page.get_by_role("button", name="Ask for urgency").click()
    page.wait_for_url(t.base + f"cases/{a1}?done=urgency")
    assert any(k == "urgency_requested" for k, _ in t.desk.events(a1))
    sent = t.send_outbox()
    note = [m for m in sent if TEAM in m.rcpt_tos]
    assert note and "Die ganze Abteilung kann nicht drucken" in note[0].text
    print("\n--- the agents' notification of the urgency request ---\n" + note[0].text)
    assert len(t.desk.smtp.received) > before


def test_other_organisation_and_refused_links_and_forged_posts(tracker, browser):
    t = tracker
    a1, _ = t.open_case(ALICE, "Drucker druckt nicht", "Guten Tag,\n\nder Drucker druckt nicht.\n")
    b1, back = t.open_case(BORIS, "Beta: Datenbank langsam", "Hello,\n\nour database is slow.\n")
    page = browser.new_context(locale="en-US").new_page()

    # Boris (Beta: own cases only) signs in by the link in his acknowledgement.
    links = CASE_LINK_RE.findall(back.text)
    assert links, back.text
    if links:
        page.goto(links[0])
        page.wait_for_url(t.base + f"cases/{b1}")
        assert page.get_by_role("heading", name=f"{b1} Beta: Datenbank langsam").is_visible()
    else:  # the acknowledgement carries no case link in this build: the mailed sign-in
        sign_in(t, page, BORIS[1])
    page.goto(t.base + "cases")
    assert case_numbers(page) == [b1]
    # ACME's case by URL and by search: the same 404 / nothing as a case that does not exist.
    r1 = page.goto(t.base + f"cases/{a1}")
    foreign = page.content()
    r2 = page.goto(t.base + "cases/C9999999")
    assert r1.status == r2.status == 404
    assert foreign.replace(a1, "C?") == page.content().replace("C9999999", "C?")
    page.goto(t.base + f"cases?q={a1}")
    assert case_numbers(page) == []
    assert page.goto(t.base + f"cases/{a1}/files/1").status == 404

    # A forged POST without the CSRF token changes nothing.
    n_before = len(t.desk.messages(b1))
    r = page.request.post(t.base + f"cases/{b1}/comment", multipart={"text": "forged"})
    assert r.status == 403
    r = page.request.post(t.base + f"cases/{b1}/comment", multipart={"text": "forged", "csrf": "x" * 43})
    assert r.status == 403
    assert len(t.desk.messages(b1)) == n_before

    # A closed case is read-only but offers a new case that refers to it: through the pipeline, a
    # new linked case (closed → new linked case, as for a mail).
    notes = [m for m in t.desk.smtp.received if TEAM in m.rcpt_tos and f"[{b1}]" in str(m.message["Subject"])]
    t._aside(answer_note, t.desk, Sent(notes[0].mail_from, notes[0].rcpt_tos, notes[0].message), "#close\n\nErledigt.")
    assert t.desk.ticket(b1).status == "closed"
    page.goto(t.base + f"cases/{b1}")
    assert "Diese Anfrage ist geschlossen." in page.content()  # Boris's case is in German
    with page.expect_navigation():  # the next page, not the one being left
        page.get_by_role("link", name="English").click()
    assert "This case is closed." in page.content()
    assert page.get_by_role("button", name="Ask for urgency").count() == 0
    page.get_by_label("Your comment").fill("The database is slow again since this morning.")
    with page.expect_navigation():
        page.get_by_role("button", name="Open a new case that refers to this one").click()
    new_case = page.url.split("/cases/")[1].split("?")[0]
    assert new_case != b1 and "your new case has been received" in page.content()
    assert t.desk.ticket(new_case).linked_ticket_id == t.desk.ticket(b1).id
    assert page.get_by_role("link", name=b1).is_visible()  # linked cases
    assert t.desk.ticket(b1).status == "closed"

    # A used link is refused; an expired one too, with a fresh sign-in offered.
    page2 = browser.new_context(locale="en-US").new_page()
    link = sign_in(t, page2, ALICE[1])
    page3 = browser.new_context(locale="en-US").new_page()
    page3.goto(link)
    with page3.expect_navigation():  # the next page, not the one being left
        page3.get_by_role("button", name="Sign in").click()
    assert "This link no longer works" in page3.content()
    assert page3.get_by_role("button", name="Send sign-in link").is_visible()

    before = len(t.desk.smtp.received)
    page3.goto(t.base + "signin")
    page3.get_by_label("E-mail address").fill(ALICE[1])
    with page3.expect_navigation():
        page3.get_by_role("button", name="Send sign-in link").click()
    fresh = SIGNIN_LINK_RE.search(t.signin_mail(before, ALICE[1]).text).group(1)
    t.desk.clock.now += timedelta(minutes=16)
    page3.goto(fresh)
    with page3.expect_navigation():  # the next page, not the one being left
        page3.get_by_role("button", name="Sign in").click()
    assert "This link no longer works" in page3.content()
    page3.goto(t.base + "cases")
    assert page3.url == t.base + "signin"  # not signed in
    # Only hashes are stored.
    with session_scope(t.app.session_factory) as s:
        hashes = list(s.scalars(select(SigninToken.token_hash)))
    token = fresh.rsplit("/", 1)[1]
    assert hashes and token not in hashes and all(len(h) == 64 for h in hashes)

    # Alice's case is in German, so the tracker speaks German to her; sign-out ends the session.
    assert page2.get_by_role("heading", name="Anfragen von ACME GmbH").is_visible()
    with page2.expect_navigation():
        page2.get_by_role("button", name="Abmelden").click()
    page2.goto(t.base + "cases")
    assert page2.url == t.base + "signin"


def test_rate_limit_per_address_answers_the_same(tracker, browser):
    t = tracker
    t.open_case(ALICE, "Drucker", "Guten Tag,\n\nder Drucker druckt nicht.\n")
    page = browser.new_context(locale="en-US").new_page()
    before = len(t.desk.smtp.received)
    for _ in range(7):
        page.goto(t.base + "signin")
        page.get_by_label("E-mail address").fill(ALICE[1])
        with page.expect_navigation():  # the next page, not the one being left
            page.get_by_role("button", name="Send sign-in link").click()
        assert "If we know this address, a sign-in link is on its way" in page.content()
    t.send_outbox()
    mails = [m for m in t.desk.smtp.received[before:] if ALICE[1] in m.rcpt_tos]
    # [web] signin_per_address = 5 by default; the guard's own per-recipient limits may hold even more back.
    assert 1 <= len(mails) <= 5


def test_works_without_javascript_and_by_keyboard(tracker, browser):
    t = tracker
    a1, _ = t.open_case(ALICE, "Drucker druckt nicht", "Guten Tag,\n\nder Drucker druckt nicht.\n\nGruß\nAlice")
    page = browser.new_context(locale="en-US", java_script_enabled=False).new_page()
    sign_in(t, page, ALICE[1])
    with page.expect_navigation():
        page.get_by_role("link", name=a1).click()
    # Alice wrote in German: the tracker speaks German to her.
    page.get_by_label("Ihr Kommentar").fill("Ohne JavaScript geschrieben.")
    page.get_by_role("button", name="Senden").click()
    page.wait_for_url(t.base + f"cases/{a1}?done=comment")
    assert "Ohne JavaScript geschrieben." in page.content()

    # By keyboard (a browser with scripts only to ask where the focus is): the first Tab reaches the
    # skip link, and Enter on a focused case link opens the case.
    page = browser.new_context(locale="en-US").new_page()
    sign_in(t, page, ALICE[1])
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Zum Inhalt springen"
    page.get_by_role("link", name=a1).focus()
    page.keyboard.press("Enter")
    page.wait_for_url(t.base + f"cases/{a1}")
