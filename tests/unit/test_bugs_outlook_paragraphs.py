"""An Outlook reply's new text keeps one blank line between paragraphs (issue 16, item 9), for the
HTML Outlook writes (``<p class=MsoNormal>`` with ``&nbsp;`` spacer paragraphs) and its plain-text
alternatives; the "From: … Sent: …" block and the quoted mail below it go."""

from __future__ import annotations

import pytest

from mailbridge.ingest.parser import html_to_text
from mailbridge.ingest.quoting import extract_new_text

HEADER = "From: Support <support@vendor.example>\nSent: Monday, November 23, 2026 1:00 PM\nTo: Eva\nSubject: Drucker\n"
HTML = (
    "<div class=WordSection1><p class=MsoNormal>Hallo zusammen,<o:p></o:p></p>"
    "<p class=MsoNormal><o:p>&nbsp;</o:p></p><p class=MsoNormal>der Drucker druckt wieder.<o:p></o:p></p>"
    "<p class=MsoNormal><o:p>&nbsp;</o:p></p><p class=MsoNormal>Farbe geht nicht.<o:p></o:p></p>"
    "<p class=MsoNormal><o:p>&nbsp;</o:p></p><div style='border:none;border-top:solid #E1E1E1 1.0pt'>"
    "<p class=MsoNormal><b>From:</b> Support &lt;support@vendor.example&gt;<br><b>Sent:</b> Monday<br>"
    "<b>To:</b> Eva<br><b>Subject:</b> Drucker<o:p></o:p></p></div>"
    "<p class=MsoNormal><o:p>&nbsp;</o:p></p><p class=MsoNormal>Guten Tag, alt.<o:p></o:p></p></div>"
)
EXPECTED = "Hallo zusammen,\n\nder Drucker druckt wieder.\n\nFarbe geht nicht."


@pytest.mark.parametrize(
    "text",
    [
        html_to_text(HTML),
        "Hallo zusammen,\n\nder Drucker druckt wieder.\n\nFarbe geht nicht.\n\n" + HEADER + "\nGuten Tag, alt.\n",
        "Hallo zusammen,\n\xa0\nder Drucker druckt wieder.\n\xa0\nFarbe geht nicht.\n\xa0\n" + HEADER + "\nalt\n",
        "Hallo zusammen,\r\n\r\n \r\n\r\nder Drucker druckt wieder.\r\n\r\n \r\n\r\nFarbe geht nicht.\r\n\r\n"
        + HEADER.replace("\n", "\r\n")
        + "\r\nGuten Tag, alt.\r\n",
    ],
)
@pytest.mark.parametrize("keep_signature", [False, True])
def test_paragraphs_stay_separated_by_one_blank_line(text, keep_signature):
    assert extract_new_text(text, keep_signature=keep_signature) == EXPECTED
