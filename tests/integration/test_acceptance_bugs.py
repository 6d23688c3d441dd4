"""Bugs found by acceptance runs (issue 16, item 9), each seen where a user sees it: mail bytes in
through the real IMAP server, the pipeline, rows in the database and mail out through the real SMTP
server."""

from __future__ import annotations

import base64

import pytest

from tests.integration.conversation_support import CUSTOMER, TEAM, make_desk, to
from tests.support import make_mail


@pytest.fixture
def desk(tmp_path, imap_server, smtp_sink, db_url, imap_env):
    d = make_desk(tmp_path, imap_server, smtp_sink, db_url)
    yield d
    d.app.close()


def _with_from(raw: bytes, from_header: str) -> bytes:
    """``raw`` with its From header replaced by ``from_header`` exactly as given (on the wire)."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    lines = [line for line in head.split(b"\r\n") if not line.lower().startswith(b"from:")]
    return b"\r\n".join([b"From: " + from_header.encode("ascii"), *lines]) + sep + body


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# -- 1. a display name whose encoded words decode to a line break ----------------------------------


@pytest.mark.parametrize(
    ("from_header", "name"),
    [
        ("=?utf-8?b?" + _b64("Eve\r\nExample") + "?= <eve@example.com>", "Eve Example"),
        ("=?utf-8?q?Eve=0D=0AExample?= <eve@example.com>", "Eve Example"),
        ("=?utf-8?q?Eve_M=C3=BC=0D=0Aller?= <eve@example.com>", "Eve Mü ller"),
        ("=?utf-8?q?Eve=0D=0A?= =?utf-8?q?Example?= <eve@example.com>", "Eve Example"),
    ],
)
def test_a_display_name_with_an_encoded_line_break_is_decoded_on_one_line(desk, from_header, name):
    """The acknowledgement greets the decoded name and writes it, on one line, into To; the case
    and the message keep it the same way. No encoded word is left anywhere."""
    raw = _with_from(make_mail(subject="Drucker druckt nicht", message_id="<name-1@example.com>"), from_header)
    sent = desk.deliver(raw)
    [ack] = to(sent, "eve@example.com")
    assert ack.rcpt_tos == ["eve@example.com"]
    to_header = ack.header("To")
    assert "=?" not in to_header and "\n" not in to_header and "\r" not in to_header
    assert to_header == f"{name} <eve@example.com>"
    assert ack.text.startswith(f"Guten Tag {name},\r\n")
    assert "=?" not in ack.text
    ticket = desk.ticket()
    assert ticket.requester_name == name
    assert desk.inbound("name-1@example.com").sender_name == name


# -- 2. a case number the customer typed stays in the notification's subject -----------------------


def test_a_mistyped_case_number_stays_in_the_notification_subject(desk):
    """A subject "Frage zu C1000005" names no case of ours (its check digit is wrong): a new case opens, and
    the agents' notification says "[<new case>] New case: Frage zu C1000005", not "… Frage zu"."""
    sent = desk.deliver(make_mail(subject="Frage zu C1000005", message_id="<typo-1@kunde.example>"))
    ticket = desk.ticket()
    assert ticket.subject == "Frage zu C1000005"
    [note] = to(sent, TEAM)
    subject = note.header("Subject")
    assert subject.startswith(f"[{ticket.case_number}] ") and subject.endswith(": Frage zu C1000005"), subject
    [ack] = to(sent, CUSTOMER[1])
    assert ack.header("Subject").endswith("Frage zu C1000005")


def test_our_tag_and_prefixes_still_go_from_the_notification_subject(desk):
    """A reply "AW: [<case>] Frage zu C1000005" joins the case; its notification names the topic
    once, with the customer's number kept and our tag not doubled."""
    sent = desk.deliver(make_mail(subject="Frage zu C1000005", message_id="<typo-2@kunde.example>"))
    ticket = desk.ticket()
    [ack] = to(sent, CUSTOMER[1])
    ack_id = ack.header("Message-ID")
    sent = desk.deliver(
        make_mail(
            subject=f"AW: [{ticket.case_number}] Frage zu C1000005",
            body="Noch eine Frage dazu.",
            message_id="<typo-3@kunde.example>",
            headers={"In-Reply-To": ack_id, "References": ack_id},
        )
    )
    assert len(desk.tickets()) == 1
    [note] = to(sent, TEAM)
    subject = note.header("Subject")
    assert subject.startswith(f"[{ticket.case_number}] ") and subject.endswith(": Frage zu C1000005"), subject
    assert subject.count(ticket.case_number) == 1 and "AW" not in subject


# -- 3. an Outlook reply keeps its paragraphs -------------------------------------------------------

OUTLOOK_HTML = """<html xmlns:o="urn:schemas-microsoft-com:office:office"><head>
<meta http-equiv=Content-Type content="text/html; charset=utf-8">
<meta name=Generator content="Microsoft Word 15 (filtered medium)">
<style><!--
p.MsoNormal, li.MsoNormal, div.MsoNormal
	{margin:0cm;font-size:11.0pt;font-family:"Calibri",sans-serif;}
--></style></head>
<body lang=DE link="#0563C1" vlink="#954F72" style='word-wrap:break-word'><div class=WordSection1>
<p class=MsoNormal>Hallo zusammen,<o:p></o:p></p>
<p class=MsoNormal><o:p>&nbsp;</o:p></p>
<p class=MsoNormal>nach dem Update druckt der Drucker wieder, aber nur schwarz-wei&szlig;.<o:p></o:p></p>
<p class=MsoNormal>Farbe geht weiterhin nicht.<o:p></o:p></p>
<p class=MsoNormal><o:p>&nbsp;</o:p></p>
<p class=MsoNormal>Das Protokoll schicke ich morgen.<o:p></o:p></p>
<p class=MsoNormal><o:p>&nbsp;</o:p></p>
<div><div style='border:none;border-top:solid #E1E1E1 1.0pt;padding:3.0pt 0cm 0cm 0cm'>
<p class=MsoNormal><b>From:</b> Vendor Support &lt;support@vendor.example&gt; <br>
<b>Sent:</b> Monday, November 23, 2026 10:00 AM<br>
<b>To:</b> J&uuml;rgen M&uuml;ller &lt;juergen.mueller@kunde.example&gt;<br>
<b>Subject:</b> {subject}<o:p></o:p></p>
</div></div>
<p class=MsoNormal><o:p>&nbsp;</o:p></p>
<p class=MsoNormal>Guten Tag J&uuml;rgen M&uuml;ller,<o:p></o:p></p>
<p class=MsoNormal>wir haben Ihre Anfrage aufgenommen.<o:p></o:p></p>
</div></body></html>"""

OUTLOOK_PLAIN = (
    "Hallo zusammen,\n"
    "\n"
    "nach dem Update druckt der Drucker wieder, aber nur schwarz-weiß.\n"
    "Farbe geht weiterhin nicht.\n"
    "\n"
    "Das Protokoll schicke ich morgen.\n"
    "\n"
    "From: Vendor Support <support@vendor.example>\n"
    "Sent: Monday, November 23, 2026 10:00 AM\n"
    "To: Jürgen Müller <juergen.mueller@kunde.example>\n"
    "Subject: {subject}\n"
    "\n"
    "Guten Tag Jürgen Müller,\n"
    "wir haben Ihre Anfrage aufgenommen.\n"
)

NEW_TEXT_PARAGRAPHS = [
    "Hallo zusammen,",
    "nach dem Update druckt der Drucker wieder, aber nur schwarz-weiß.",
    "Farbe geht weiterhin nicht.",
    "Das Protokoll schicke ich morgen.",
]


@pytest.mark.parametrize("shape", ["html-only", "alternative", "plain"])
def test_an_outlook_reply_keeps_its_blank_lines_between_paragraphs(desk, shape):
    """The stored new text of an Outlook reply has its paragraphs separated by one blank line each;
    the quoted mail below the "From: … Sent: …" block is not in it."""
    sent = desk.deliver(make_mail(subject="Drucker druckt nicht", message_id="<para-1@kunde.example>"))
    ticket = desk.ticket()
    [ack] = to(sent, CUSTOMER[1])
    ack_id = ack.header("Message-ID")
    subject = f"RE: [{ticket.case_number}] Drucker druckt nicht"
    html = OUTLOOK_HTML.replace("{subject}", f"[{ticket.case_number}] Drucker druckt nicht")
    plain = OUTLOOK_PLAIN.replace("{subject}", f"[{ticket.case_number}] Drucker druckt nicht")
    reply = make_mail(
        subject=subject,
        body=plain,
        html=None if shape == "plain" else html,
        html_only=shape == "html-only",
        message_id="<para-2@kunde.example>",
        headers={"In-Reply-To": ack_id, "References": ack_id},
    )
    sent = desk.deliver(reply)
    stored = desk.inbound("para-2@kunde.example")
    assert stored.ticket_id == ticket.id
    new = stored.body_new.replace("\r\n", "\n")
    lines = new.split("\n")
    expected_paragraphs = (
        [NEW_TEXT_PARAGRAPHS[0], NEW_TEXT_PARAGRAPHS[1] + "\n" + NEW_TEXT_PARAGRAPHS[2], NEW_TEXT_PARAGRAPHS[3]]
        if shape != "html-only"
        else NEW_TEXT_PARAGRAPHS
    )
    assert new == "\n\n".join(expected_paragraphs), new
    assert "" in lines and "\n\n\n" not in new
    assert "Anfrage aufgenommen" not in new and "Sent:" not in new
    # The agents' notification shows the same paragraphs.
    [note] = to(sent, TEAM)
    assert "Hallo zusammen,\n\nnach dem Update" in note.text.replace("\r\n", "\n")
