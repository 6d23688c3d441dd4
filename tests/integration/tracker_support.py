"""The case tracker's desk: real pymap and aiosmtpd, a real database filled through the real
pipeline, two customer organisations, and ``mailbridge web`` on a real uvicorn server whose
``base_url`` is its own loopback address (the links in the mails open in the browser as they are)."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from email.utils import make_msgid

from mailbridge.embedded import free_port
from tests.integration.attachment_support import WebServer
from tests.integration.conversation_support import CHIEF, QUEUE_EXTRA, SLA, Desk, Sent, make_desk
from tests.support import SUPPORT_ADDRESS, make_mail

# Organisation A lets everyone see all its cases; organisation B only their own.
ALICE = ("Alice Anders", "alice@acme.example")
ALBERT = ("Albert Acme", "albert@acme.example")
BORIS = ("Boris Beta", "boris@beta.example")
BEA = ("Bea Beta", "bea@beta.example")

ORGANISATIONS = """
[[organisations]]
name = "ACME GmbH"
domains = ["acme.example"]
tracker = "organisation"

[[organisations]]
name = "Beta AG"
domains = ["beta.example"]
tracker = "own"
"""

SIGNIN_LINK_RE = re.compile(r"(http://127\.0\.0\.1:\d+/signin/[A-Za-z0-9_-]+)")
CASE_LINK_RE = re.compile(r"(http://127\.0\.0\.1:\d+/c/[A-Za-z0-9_.-]+)")


class TrackerDesk:
    """A :class:`Desk` with the web app: ``base`` is the tracker's URL."""

    def __init__(self, tmp_path, imap_server, smtp_sink, db_url, *, extra: str = "", https: bool = False):
        self.port = free_port()
        # The server itself speaks plain HTTP on loopback (a reverse proxy would add TLS); with
        # ``https`` the public base URL says https, as behind such a proxy.
        self.base = f"http://127.0.0.1:{self.port}/"
        public = f"https://127.0.0.1:{self.port}/" if https else self.base
        key = tmp_path / "web.key"
        key.write_text("w" * 48 + "\n", encoding="utf-8")
        web = f'\n[web]\nlisten = "127.0.0.1:{self.port}"\nbase_url = "{public}"\nsecret_file = "{key}"\n{extra}\n'
        self.desk: Desk = make_desk(
            tmp_path,
            imap_server,
            smtp_sink,
            db_url,
            queue_extra=QUEUE_EXTRA + f'calendar = "nrw"\nseverity_scheme = "std"\nescalation = ["{CHIEF}"]\n',
            conversations=SLA + ORGANISATIONS + web,
        )
        self.app = self.desk.app
        self.web = WebServer(self.app, self.port)

    def __enter__(self) -> TrackerDesk:
        self.web.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.web.__exit__(*exc)

    @staticmethod
    def _aside(fn, *args):
        """Run ``fn`` in a thread of its own: the outbox sender runs an asyncio loop, which must not
        meet Playwright's (the sync API keeps one on the test's thread)."""
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(fn, *args).result()

    def deliver(self, *mails: bytes) -> list[Sent]:
        return self._aside(self.desk.deliver, *mails)

    def open_case(self, who: tuple[str, str], subject: str, body: str) -> tuple[str, Sent]:
        """A customer's first mail, through IMAP; the case number and the acknowledgement."""
        sent = self.deliver(make_mail(subject=subject, body=body, sender=who, message_id=make_msgid()))
        ack = next(m for m in sent if who[1] in m.rcpt_tos)
        case = re.search(r"\[(C\d+)\]", ack.header("Subject")).group(1)
        return case, ack

    def send_outbox(self) -> list[Sent]:
        """Run the outbox sender until it is empty; the mails the SMTP server received meanwhile."""
        return self._aside(self.desk._send, len(self.desk.smtp.received))

    def signin_mail(self, before: int, address: str) -> Sent:
        """The sign-in mail that reached the SMTP server for ``address`` after ``before`` mails."""
        self.send_outbox()
        mails = [Sent(m.mail_from, m.rcpt_tos, m.message) for m in self.desk.smtp.received[before:]]
        found = [m for m in mails if address in m.rcpt_tos]
        assert found, f"no sign-in mail to {address}: {[m.header('Subject') for m in mails]}"
        return found[-1]


__all__ = ["ALBERT", "ALICE", "BEA", "BORIS", "SUPPORT_ADDRESS", "TrackerDesk"]
