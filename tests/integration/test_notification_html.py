"""The notification's HTML alternative, through real servers: the customer's HTML mail in through
IMAP (pymap), the notification read back from the SMTP server (aiosmtpd) as a mail client parses it.
The customer's HTML is shown sanitised (outbound/customer_html.py), its inline images travel beside
it in multipart/related; a mail without HTML gives the plain notification as before."""

from __future__ import annotations

import os
from email import message_from_bytes
from email.policy import SMTP

import pytest

from mailbridge.outbound.customer_html import MAX_SHOWN_CHARS
from tests.integration.attachment_support import HOSTILE_HTML, LOG, PNG, customer_mail, web_config
from tests.integration.conversation_support import AGENT, CUSTOMER, QUEUE_EXTRA, TEAM, make_desk, to
from tests.support import SUPPORT_ADDRESS, make_mail

# A second inline image the HTML does not show (a signature logo Outlook attaches without using).
LOGO = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + os.urandom(500)


def _desk(tmp_path, imap_server, smtp_sink, db_url, conversations=None):
    return make_desk(
        tmp_path,
        imap_server,
        smtp_sink,
        db_url,
        queue_extra=QUEUE_EXTRA,
        conversations=conversations if conversations is not None else web_config(tmp_path),
    )


def _html(sent) -> str:
    part = sent.msg.get_body(("html",))
    assert part is not None, "no HTML alternative"
    return part.get_content()


def _shape(sent) -> list[tuple[str, str | None]]:
    return [(p.get_content_type(), p.get_content_disposition()) for p in sent.msg.walk()]


def test_customer_html_with_an_inline_image_shown_sanitised_to_agents(
    tmp_path, imap_server, smtp_sink, db_url, imap_env
):
    desk = _desk(tmp_path, imap_server, smtp_sink, db_url)
    try:
        raw = customer_mail(
            sender=CUSTOMER,
            to=SUPPORT_ADDRESS,
            subject="Alarm 17 an der KC4",
            text="Guten Tag,\n\ndie KC4 meldet seit heute früh Alarm 17, siehe Bild.\n\nViele Grüße\nJürgen Müller\n",
            html=HOSTILE_HTML,
            files=[("kc4_alarm.log", "text/plain", LOG)],
            inline_png=PNG,
        )
        sent = desk.deliver(raw)
        (note,) = to(sent, TEAM)
        html = _html(note)
        print(html)

        # multipart/mixed [alternative [text/plain, related [text/html, the image]], the log file]
        assert _shape(note) == [
            ("multipart/mixed", None),
            ("multipart/alternative", None),
            ("text/plain", None),
            ("multipart/related", None),
            ("text/html", None),
            ("image/png", "inline"),
            ("text/plain", "attachment"),
        ]
        alternative = note.msg.get_payload()[0]
        related = alternative.get_payload()[1]
        assert related.get_param("type") == "text/html"
        root, img = related.get_payload()
        assert root.get_content_type() == "text/html"
        assert img["Content-ID"] == "<screenshot1@kunde.example>"
        assert img.get_payload(decode=True) == PNG and img.get_filename() == "screenshot.png"
        assert '<img src="cid:screenshot1@kunde.example" alt="Bildschirm" width="320">' in html
        (log_part,) = [p for p in note.msg.walk() if p.get_content_disposition() == "attachment"]
        assert log_part.get_filename() == "kc4_alarm.log" and log_part.get_payload(decode=True) == LOG

        # The customer's words and formatting; nothing that runs, fetches or submits.
        assert "die <b>KC4</b> meldet seit heute früh <i>Alarm&nbsp;17</i>, siehe Bild:" in html
        assert '<a href="https://kunde.example/kc4.pdf" rel="noopener noreferrer">KC4</a>' in html
        for gone in ("tracker.example", "evil.example", "<script", "document.cookie", "onload", "onclick",
                     "alert(", "<form", "<input", "target=", "background"):  # fmt: skip
            assert gone not in html, gone
        # Every http(s) reference left in the HTML is the customer's link (no src= can fetch anything).
        assert [s for s in html.split('src="')[1:] if not s.startswith("cid:")] == []

        # The frame says what the text says: the case, the sender, the files, the reply marker.
        case = note.header("Subject").split("]")[0].lstrip("[")
        assert f"New case {case}" in html and "Alarm 17 an der KC4" in html
        assert "Jürgen Müller &lt;juergen.mueller@kunde.example&gt; (requester)" in html
        assert "Attachments: screenshot.png, kc4_alarm.log" in html
        assert "Please type your reply above this line" in html and "#severity &lt;" in html

        # The text part as before: the frame and the customer's plain text.
        assert "Attachments: screenshot.png, kc4_alarm.log" in note.text
        assert "die KC4 meldet seit heute früh Alarm 17, siehe Bild." in note.text
        assert "<" not in note.text.split("-" * 70)[1]
    finally:
        desk.app.close()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_an_image_the_html_does_not_show_is_an_ordinary_attachment(tmp_path, imap_server, smtp_sink, db_url, imap_env):
    desk = _desk(tmp_path, imap_server, smtp_sink, db_url)
    try:
        raw = customer_mail(
            sender=CUSTOMER,
            to=SUPPORT_ADDRESS,
            subject="Zwei Bilder",
            files=[],
            inline_png=PNG,
        )
        msg = message_from_bytes(raw, policy=SMTP)
        msg.get_payload()[1].add_related(LOGO, "image", "png", cid="<logo@kunde.example>", filename="logo.png")
        sent = desk.deliver(msg.as_bytes())
        (note,) = to(sent, TEAM)
        parts = {p.get_filename(): p for p in note.msg.walk() if p.get_filename()}
        assert parts["screenshot.png"].get_content_disposition() == "inline"
        assert parts["logo.png"].get_content_disposition() == "attachment"
        assert parts["logo.png"]["Content-ID"] is None and parts["logo.png"].get_payload(decode=True) == LOGO
        related = next(p for p in note.msg.walk() if p.get_content_type() == "multipart/related")
        assert [p.get_filename() for p in related.get_payload()] == [None, "screenshot.png"]
        assert "cid:logo" not in _html(note) and "cid:screenshot1@kunde.example" in _html(note)
    finally:
        desk.app.close()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_an_inline_image_over_the_budget_leaves_the_html_and_is_listed(
    tmp_path, imap_server, smtp_sink, db_url, imap_env
):
    desk = _desk(tmp_path, imap_server, smtp_sink, db_url, conversations="\n[notifications]\nattach_max_bytes = 1000\n")
    try:
        sent = desk.deliver(
            customer_mail(sender=CUSTOMER, to=SUPPORT_ADDRESS, subject="Bild", files=[], inline_png=PNG)
        )
        (note,) = to(sent, TEAM)
        html = _html(note)
        print(html)
        # No image part at all; the picture's alt text stays where it was, without a source.
        assert not [p for p in note.msg.walk() if p.get_content_maintype() == "image"]
        assert "multipart/related" not in [t for t, _ in _shape(note)]
        assert '<img alt="Bildschirm">' in html and "cid:" not in html
        assert "screenshot.png (2 KB): too large to attach" in note.text
        assert "<li>screenshot.png (2 KB): too large to attach; available in the case's raw mail</li>" in html
    finally:
        desk.app.close()


def test_a_mail_without_html_gives_the_plain_notification(tmp_path, imap_server, smtp_sink, db_url, imap_env):
    desk = _desk(tmp_path, imap_server, smtp_sink, db_url)
    try:
        sent = desk.deliver(make_mail(subject="Nur Text", attachments=[("a.log", "text/plain", b"zeile\n")]))
        (note,) = to(sent, TEAM)
        assert _shape(note) == [("multipart/mixed", None), ("text/plain", None), ("text/plain", "attachment")]
        assert note.msg.get_body(("html",)) is None
        assert "Attachments: a.log" in note.text and "seit dem Update startet unser Lizenzserver" in note.text
        sent = desk.deliver(make_mail(subject="Ohne Anhang", message_id="<plain2@kunde.example>"))
        (note,) = to(sent, TEAM)
        assert _shape(note) == [("text/plain", None)]
    finally:
        desk.app.close()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_reply_shows_its_new_text_then_the_whole_html_below_a_separator(
    tmp_path, imap_server, smtp_sink, db_url, imap_env
):
    """The text part shows a reply's new part; the HTML cannot be cut there reliably, so it shows the
    new part as text and the customer's whole HTML (with the quote) below a separator."""
    desk = _desk(tmp_path, imap_server, smtp_sink, db_url)
    try:
        sent = desk.deliver(make_mail(subject="Lizenzserver", message_id="<first@kunde.example>"))
        (ack,) = to(sent, CUSTOMER[1])
        sent = desk.deliver(
            customer_mail(
                sender=CUSTOMER,
                to=SUPPORT_ADDRESS,
                subject=f"Re: {ack.header('Subject')}",
                in_reply_to=ack.header("Message-ID"),
                text="Der Server läuft wieder.\n\n> Wir haben Ihre Anfrage erhalten.\n",
                html="<p>Der Server <b>läuft</b> wieder.</p><blockquote>Wir haben Ihre Anfrage erhalten.</blockquote>",
                files=[],
            )
        )
        (note,) = to(sent, TEAM)
        html = _html(note)
        print(html)
        assert "Customer reply on case" in note.text and "Wir haben Ihre Anfrage" not in note.text
        new, _, whole = html.partition("The customer's whole mail as they sent it")
        assert "Der Server läuft wieder." in new and "Wir haben Ihre Anfrage" not in new
        assert (
            "<p>Der Server <b>läuft</b> wieder.</p><blockquote>Wir haben Ihre Anfrage erhalten.</blockquote>" in whole
        )
    finally:
        desk.app.close()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_an_agent_replying_in_html_to_the_html_notification_relays_only_their_words(
    tmp_path, imap_server, smtp_sink, db_url, imap_env
):
    """An HTML-only reply that quotes the whole HTML notification (as Outlook writes one): the
    customer gets the agent's words, not the frame, the marker or their own mail back."""
    desk = _desk(tmp_path, imap_server, smtp_sink, db_url)
    try:
        sent = desk.deliver(
            customer_mail(
                sender=CUSTOMER, to=SUPPORT_ADDRESS, subject="Alarm 17", files=[], inline_png=PNG, html=HOSTILE_HTML
            )
        )
        (note,) = to(sent, TEAM)
        quoted = _html(note).split("<body", 1)[1].split(">", 1)[1].rsplit("</body>", 1)[0]
        nid = note.header("Message-ID")
        sent = desk.deliver(
            make_mail(
                subject=f"AW: {note.header('Subject')}",
                sender=AGENT,
                html_only=True,
                html=(
                    "<html><body><p>Guten Tag Herr Müller,</p><p>bitte starten Sie die KC4 neu.</p>"
                    "<p>Anna Agent</p><div style='border-top:solid #E1E1E1 1.0pt'><p><b>Von:</b> Vendor Support"
                    f"<br><b>Gesendet:</b> Montag, 23. November 2026 09:00</p></div>{quoted}</body></html>"
                ),
                headers={"In-Reply-To": nid, "References": nid},
            )
        )
        (relay,) = to(sent, CUSTOMER[1])
        print(relay.text)
        assert "bitte starten Sie die KC4 neu." in relay.text
        for gone in ("Please type your reply", "meldet seit heute", "New case", "#severity", "Attachments"):
            assert gone not in relay.text, gone
        assert not [p for p in relay.msg.walk() if p.get_content_maintype() == "image"]
    finally:
        desk.app.close()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_an_html_too_large_to_show_gives_the_plain_notification(tmp_path, imap_server, smtp_sink, db_url, imap_env):
    """Over MAX_SHOWN_CHARS (a pasted log, a newsletter) the notification is as without HTML: the
    text, and the inline image as a file with its Content-ID."""
    desk = _desk(tmp_path, imap_server, smtp_sink, db_url)
    try:
        big = "<p>" + "Zeile des Protokolls 0123456789<br>\n" * (MAX_SHOWN_CHARS // 30) + "</p>"
        big += '<img src="cid:screenshot1@kunde.example">'
        assert len(big) > MAX_SHOWN_CHARS
        sent = desk.deliver(
            customer_mail(sender=CUSTOMER, to=SUPPORT_ADDRESS, subject="Log", files=[], inline_png=PNG, html=big)
        )
        (note,) = to(sent, TEAM)
        assert note.msg.get_body(("html",)) is None
        assert _shape(note) == [("multipart/mixed", None), ("text/plain", None), ("image/png", "inline")]
        assert "Attachments: screenshot.png" in note.text
    finally:
        desk.app.close()
