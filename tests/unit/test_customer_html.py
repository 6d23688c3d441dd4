"""The sanitiser rule for the customer's HTML shown to agents (outbound/customer_html.py): formatting
kept; images only from cid: parts the notification carries; nothing that runs, fetches or submits."""

from __future__ import annotations

from markupsafe import Markup

from mailbridge.outbound.customer_html import content_id_of, sanitise

MAIL = """<html><head><title>Alarm</title><style>p { background: url(https://t.example/bg.gif) }</style>
<script>alert(1)</script></head>
<body onload="alert(2)">
<p style="color: red" onclick="alert(3)">Guten <b>Tag</b>, <i>anbei</i> <u>das</u> Bild:</p>
<img src="cid:shot1@kunde.example" alt="Bildschirm" width="200">
<img src="https://tracker.example/pixel.gif?u=juergen" alt="">
<img src="//cdn.example/logo.png" alt="Logo">
<img src="data:image/png;base64,iVBORw0KGgo=" alt="eingebettet">
<img src="logo.png" alt="relativ">
<ul><li>eins</li><li>zwei</li></ul>
<table border="1"><tr><td colspan="2">Zelle</td></tr></table>
<blockquote>zitiert</blockquote><pre>code</pre>
<a href="https://kunde.example/doku" target="_blank">Doku</a>
<a href="javascript:alert(4)">böse</a>
<a href="mailto:juergen@kunde.example">Mail</a>
<form action="https://evil.example/"><input name="pw" value="x"><button>Senden</button></form>
<iframe src="https://evil.example/"></iframe>
<object data="https://evil.example/x.swf"></object>
<!-- a comment -->
<svg><a href="https://evil.example/">svg</a></svg>
</body></html>"""


def test_formatting_kept_and_cid_image_shown():
    clean = sanitise(MAIL, {"shot1@kunde.example"})
    html = str(clean.html)
    assert isinstance(clean.html, Markup)
    for kept in ("<b>Tag</b>", "<i>anbei</i>", "<u>das</u>", "<ul><li>eins</li>", "<blockquote>zitiert</blockquote>",
                 "<pre>code</pre>", '<td colspan="2">Zelle</td>', '<table border="1">'):  # fmt: skip
        assert kept in html, kept
    assert '<img src="cid:shot1@kunde.example" alt="Bildschirm" width="200">' in html
    assert clean.referenced == {"shot1@kunde.example"}


def test_no_remote_relative_or_data_image_and_nothing_that_runs():
    html = str(sanitise(MAIL, {"shot1@kunde.example"}).html).lower()
    for gone in ("tracker.example", "cdn.example", "data:", "logo.png", "<script", "alert(", "<style", "background",
                 "onload", "onclick", "style=", "<form", "<input", "<button", "<iframe", "<object", "evil.example",
                 "javascript:", "<!--", "<svg", "<title", "target="):  # fmt: skip
        assert gone not in html, gone
    # The removed images keep their alt text, with no source to load.
    assert '<img alt="logo">' in html and '<img alt="eingebettet">' in html and '<img alt="">' in html


def test_links_are_noopener_noreferrer():
    html = str(sanitise(MAIL, set()).html)
    assert '<a href="https://kunde.example/doku" rel="noopener noreferrer">Doku</a>' in html
    assert '<a href="mailto:juergen@kunde.example" rel="noopener noreferrer">Mail</a>' in html
    assert '<a rel="noopener noreferrer">böse</a>' in html


def test_an_image_that_does_not_travel_loses_its_source_but_is_still_referenced():
    clean = sanitise(MAIL, set())
    assert "cid:" not in clean.html
    assert '<img width="200" alt="Bildschirm">' in clean.html
    assert clean.referenced == {"shot1@kunde.example"}


def test_cid_urls_are_url_encoded_and_case_insensitive_in_their_scheme():
    assert content_id_of("cid:part1.06090408%4001050003.00000009@kunde.example") == (
        "part1.06090408@01050003.00000009@kunde.example"
    )
    assert content_id_of("CID:<a@b>") == "a@b"
    assert content_id_of("https://x.example/cid:a@b") is None
    assert content_id_of("cid:") is None
    clean = sanitise('<img src="cid:a%40b.example"><img src="Cid:c@d">', {"a@b.example"})
    assert clean.referenced == {"a@b.example", "c@d"}
    assert str(clean.html) == '<img src="cid:a%40b.example"><img>'
    # A link to a part of the customer's mail leads nowhere in ours.
    assert str(sanitise('<a href="cid:a@b">x</a>', {"a@b"}).html) == '<a rel="noopener noreferrer">x</a>'


def test_plain_text_is_escaped_not_interpreted():
    assert str(sanitise("1 < 2 & <b>fett</b> &lt;script&gt;", set()).html) == (
        "1 &lt; 2 &amp; <b>fett</b> &lt;script&gt;"
    )
