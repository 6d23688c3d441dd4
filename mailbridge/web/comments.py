"""A comment written in the case tracker becomes a customer's mail, through the same pipeline.

The comment is made into a real RFC 5322 message (``email.message.EmailMessage``): From the
signed-in address, To the case's queue address, the case's subject with its tag, In-Reply-To and
References the case's public mail, the files as attachments. It then runs as an
:class:`~mailbridge.ingest.mail.InboundMail` of account ``web`` through the App's preparer and
pipeline, as ``importer.py`` runs mbox mail: it is stored, the agents are notified, pending → open,
solved → reopened, closed → a new linked case, and the SLA rules apply — nothing here decides any
of that. A request for higher urgency is a comment whose text asks for it in the words the
pipeline's urgency rule (``ingest/urgency.py``) recognises, with the customer's reason.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from email.headerregistry import Address as HeaderAddress
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from urllib.parse import urlsplit

import structlog

from mailbridge.app import App
from mailbridge.ingest.mail import InboundMail
from mailbridge.outbound.compose import references_for, tagged_subject
from mailbridge.store import tracker as tq
from mailbridge.store.db import session_scope
from mailbridge.store.tracker import Viewer
from mailbridge.vocabulary import Disposition

log = structlog.get_logger(__name__)

# The source identity of the tracker's mail (raw rows): this account, this folder.
ACCOUNT = "web"
FOLDER = "tracker"
# The headers a web comment carries so an agent can tell it came from the tracker.
SOURCE_HEADER = "X-Mailbridge-Source"


@dataclass(frozen=True)
class Upload:
    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class Result:
    disposition: Disposition
    case_number: str | None  # the case the comment landed on (a new linked one for a closed case)


class TooLarge(Exception):
    """The comment with its files is over the size limit of mail (``ingest.max_message_bytes``)."""


class Comments:
    def __init__(self, app: App):
        self.app = app
        base = app.settings.web.base_url or "http://localhost/"
        self.domain = urlsplit(base).hostname or "localhost"
        # The pipeline runs one mail at a time in this process (the web server's threads share it).
        self._lock = threading.Lock()
        self._last_uid = 0

    def message(self, viewer: Viewer, name: str, ticket, text: str, files: list[Upload]) -> bytes:
        """The comment as the raw bytes of a mail from ``viewer`` about ``ticket``."""
        app = self.app
        queue = app.settings.queue(ticket.queue)
        with session_scope(app.session_factory) as s:
            ids = tq.last_public_message_id(s, ticket.id)
        msg = EmailMessage()
        msg["From"] = HeaderAddress(display_name=name or "", addr_spec=viewer.address)
        msg["To"] = HeaderAddress(display_name=queue.display_name, addr_spec=queue.address)
        msg["Subject"] = tagged_subject(ticket.case_number, "Re: " + app.normalizer.strip_prefixes(ticket.subject))
        msg["Date"] = format_datetime(app.clock())
        msg["Message-ID"] = make_msgid("web", domain=self.domain)
        if ids:
            refs = references_for(ids[-1], ids[:-1])
            msg["In-Reply-To"] = f"<{ids[-1]}>"
            msg["References"] = " ".join(f"<{i}>" for i in refs)
        msg[SOURCE_HEADER] = "case-tracker"
        msg.set_content(text)
        for f in files:
            maintype, _, subtype = (f.content_type or "").partition("/")
            if not maintype or not subtype or maintype == "multipart" or "\n" in f.content_type:
                maintype, subtype = "application", "octet-stream"
            msg.add_attachment(f.data, maintype=maintype, subtype=subtype, filename=f.filename or "file")
        return msg.as_bytes()

    def submit(self, viewer: Viewer, name: str, ticket, text: str, files: list[Upload]) -> Result:
        """Run the comment through the pipeline; the case it landed on. Raises :class:`TooLarge`."""
        raw = self.message(viewer, name, ticket, text, files)
        limit = self.app.settings.ingest.max_message_bytes
        if limit and len(raw) > limit:
            raise TooLarge(f"{len(raw)} bytes, the limit is {limit}")
        with self._lock:
            # A UID per comment, increasing (the raw row names the mail's source like a mailbox's).
            self._last_uid = max(self._last_uid + 1, time.time_ns() // 1000)
            mail = InboundMail(ACCOUNT, FOLDER, 1, self._last_uid, raw)
            (mail,) = self.app.preparer.prepare([mail])
            disposition = self.app.pipeline.process(mail)
        case = mail.ticket.case_number if mail.ticket is not None else None
        log.info("web_comment", case=case, by=viewer.address, disposition=disposition.value, files=len(files))
        return Result(disposition, case)
