"""Real mail servers on loopback for the demo, the tests and the benchmarks.

- :class:`PymapServer`: pymap (an IMAP4rev1 server with IDLE, MOVE, UIDPLUS) with its in-memory
  backend (or, given a directory, its Maildir backend, whose mailboxes and UIDVALIDITY survive a
  restart), in a subprocess of its own, on a free port of 127.0.0.1.
- :class:`SmtpSink`: aiosmtpd in a thread of this process, recording every message it accepts
  (envelope and bytes); optionally it answers with a temporary or permanent error, or goes away.

These are the servers mailbridge talks to in the default test suite, never stand-ins for them:
mailbridge reaches them only over TCP, exactly as it reaches a production server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

from mailbridge.processes import die_with_parent

LOOPBACK = "127.0.0.1"
# How long we wait for a server to accept connections before giving up.
START_TIMEOUT_SECONDS = 30.0


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = START_TIMEOUT_SECONDS, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server process exited with {proc.returncode} before listening on {port}")
        with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
            s.settimeout(0.5)
            if s.connect_ex((LOOPBACK, port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {LOOPBACK}:{port} after {timeout}s")


# pymap's dict backend knows one user. With ``provision_prefix`` it also creates, at its first
# login, any user whose name starts with the prefix, with the server's password: one server can
# then serve many independent accounts (the test suite gives each test its own).
_PROVISIONING = """
from pymap.backend.dict import Login
from pymap.user import Passwords, UserMetadata

_authenticate = Login.authenticate

async def authenticate(self, credentials):
    name = credentials.authcid
    if name.startswith(PREFIX) and name not in self.users_dict:
        hashed = await Passwords(self.config).hash_password(self.config.demo_password)
        self.users_dict[name] = UserMetadata(self.config, name, password=hashed)
    return await _authenticate(self, credentials)

Login.authenticate = authenticate
"""


class PymapServer:
    """pymap with one user, in a subprocess.

    Without ``maildir`` it uses the in-memory ``dict`` backend: a restart loses every mailbox (and
    a recreated mailbox gets a new UIDVALIDITY). With ``maildir`` (a directory) it uses the Maildir
    backend: mailboxes, UIDs and UIDVALIDITY persist across :meth:`restart`, as on a real server.

    ``provision_prefix`` (dict backend only): users whose login name starts with it are created at
    their first login, with ``password``; :meth:`account` hands out such a user.
    """

    def __init__(
        self,
        user: str = "support",
        password: str = "secret",
        port: int | None = None,
        maildir: Path | None = None,
        provision_prefix: str | None = None,
    ):
        if provision_prefix is not None and maildir is not None:
            raise ValueError("provision_prefix needs the dict backend (no maildir)")
        self.user = user
        self.password = password
        self.port = port or free_port()
        self.host = LOOPBACK
        self.maildir = Path(maildir) if maildir is not None else None
        self.provision_prefix = provision_prefix
        self.proc: subprocess.Popen | None = None
        self._log = None

    def _maildir_users(self) -> None:
        """pymap's Maildir backend reads its users from passwd/shadow-like files in the base directory."""
        assert self.maildir is not None
        self.maildir.mkdir(parents=True, exist_ok=True)
        passwd, shadow = self.maildir / "pymap-etc-passwd", self.maildir / "pymap-etc-shadow"
        if passwd.exists() and shadow.exists():
            return
        from pymap.config import IMAPConfig

        # The same hash pymap itself would write (passlib's pbkdf2_sha256 when installed).
        hashed = IMAPConfig._get_hash_context(None).hash(self.password)
        # name:password:uid:gid:comment:home_dir:shell, CRLF as pymap writes it; home relative to the base.
        passwd.write_text(f"{self.user}:::::{self.user}:\r\n", encoding="utf-8")
        shadow.write_text(f"{self.user}:{hashed}\r\n", encoding="utf-8")

    def start(self) -> PymapServer:
        code = "import sys; from pymap.main import main; sys.argv[0] = 'pymap'; main()"
        if self.provision_prefix is not None:
            code = f"PREFIX = {self.provision_prefix!r}\n{_PROVISIONING}\n{code}"
        services = ["--no-service=admin", "--no-service=managesieve", "--no-service=swim"]
        # "--opt=value" throughout: a password starting with "-" must not be read as an option.
        args = [sys.executable, "-c", code, f"--host={LOOPBACK}", f"--port={self.port}", "--no-tls", *services]
        if self.maildir is not None:
            self._maildir_users()
            args += ["maildir", str(self.maildir)]
        else:
            args += ["dict", f"--demo-user={self.user}", f"--demo-password={self.password}"]
        # pymap's log goes to a file: a pipe nobody reads would fill up and stall the server.
        self._log = tempfile.NamedTemporaryFile(prefix="pymap-", suffix=".log", delete=False)  # noqa: SIM115
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=self._log, preexec_fn=die_with_parent)
        try:
            wait_for_port(self.port, proc=self.proc)
        except (RuntimeError, TimeoutError) as e:
            tail = self.log_tail()
            self.stop()
            raise RuntimeError(f"{e}; pymap said: {tail}") from None
        return self

    def log_tail(self, limit: int = 2000) -> str:
        """The end of pymap's log (for error messages)."""
        if self._log is None:
            return ""
        try:
            return Path(self._log.name).read_text(errors="replace")[-limit:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if self._log is not None:
            self._log.close()
            Path(self._log.name).unlink(missing_ok=True)
            self._log = None

    def restart(self) -> None:
        """Stop and start on the same port (the in-memory mailboxes are lost; Maildir ones are kept)."""
        self.stop()
        self.start()

    def client(self, user: str | None = None):
        """A logged-in imapclient connection (for seeding and inspecting the mailbox)."""
        from imapclient import IMAPClient

        c = IMAPClient(self.host, port=self.port, ssl=False, timeout=30)
        c._imap.debug = 0
        c.login(user or self.user, self.password)
        return c

    def append(self, messages: list[bytes], folder: str = "INBOX", user: str | None = None) -> None:
        """Deliver ``messages`` into ``folder`` with IMAP APPEND, as an MTA's local delivery would."""
        c = self.client(user)
        try:
            # MULTIAPPEND (RFC 3502): one command for all; single APPENDs stall on Nagle + delayed ACK.
            if messages and c.has_capability("MULTIAPPEND"):
                c.multiappend(folder, messages)
            else:
                for raw in messages:
                    c.append(folder, raw)
        finally:
            c.logout()

    def account(self, user: str) -> PymapAccount:
        """A user of this server (see ``provision_prefix``) with the server's interface for one account."""
        if self.provision_prefix is None or not user.startswith(self.provision_prefix):
            raise ValueError(f"{user!r} is not a provisioned user (prefix {self.provision_prefix!r})")
        return PymapAccount(self, user)

    def __enter__(self) -> PymapServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class PymapAccount:
    """One user of a shared :class:`PymapServer`: the same ``host``/``port``/``user``/``password``,
    ``client()`` and ``append()`` as a server of its own, but no stop or restart (others use it)."""

    def __init__(self, server: PymapServer, user: str):
        self.server, self.user = server, user
        self.host, self.port, self.password = server.host, server.port, server.password

    def client(self):
        return self.server.client(self.user)

    def append(self, messages: list[bytes], folder: str = "INBOX") -> None:
        self.server.append(messages, folder, user=self.user)

    def clear(self) -> None:
        """Delete every mail of this user (the shared server keeps its memory small)."""
        c = self.client()
        try:
            for flags, _delim, name in c.list_folders():
                if b"\\Noselect" in flags:
                    continue
                c.select_folder(name)
                uids = c.search("ALL")
                if uids:
                    c.delete_messages(uids)
                    c.expunge()
                c.close_folder()
        finally:
            c.logout()

    def log_tail(self, limit: int = 2000) -> str:
        return self.server.log_tail(limit)

    def _shared(self, *_args, **_kwargs):
        raise RuntimeError("a shared pymap cannot be stopped or restarted: use a PymapServer of the test's own")

    start = stop = restart = _shared


@dataclass
class ReceivedMail:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    @property
    def message(self) -> EmailMessage:
        return message_from_bytes(self.data, policy=policy.default)  # type: ignore[return-value]


@dataclass
class _Handler:
    received: list[ReceivedMail] = field(default_factory=list)
    # None: accept; otherwise an SMTP reply such as "451 4.3.0 try later" or "550 5.1.1 no such user".
    reply: str | None = None
    # Seconds each DATA takes before the answer (a slow server; 0: answer at once).
    delay: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)
    arrived: threading.Condition = field(init=False)

    def __post_init__(self):
        self.arrived = threading.Condition(self.lock)

    async def handle_DATA(self, server, session, envelope):
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.reply is not None:
            return self.reply
        with self.arrived:
            self.received.append(ReceivedMail(envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.content)))
            self.arrived.notify_all()
        return "250 2.0.0 OK: queued"


class SmtpSink:
    """aiosmtpd on loopback that keeps every accepted message in ``received``."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.host = LOOPBACK
        self.handler = _Handler()
        self.controller = None

    @property
    def received(self) -> list[ReceivedMail]:
        with self.handler.lock:
            return list(self.handler.received)

    def start(self) -> SmtpSink:
        from aiosmtpd.controller import Controller

        # aiosmtpd logs every SMTP command at INFO; the sink is a test/demo peer, not our service.
        logging.getLogger("mail.log").setLevel(logging.WARNING)

        # An explicit port, never 0: aiosmtpd's Controller checks readiness by connecting to it.
        self.controller = Controller(self.handler, hostname=LOOPBACK, port=self.port, data_size_limit=0)
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def set_reply(self, reply: str | None) -> None:
        """Make the server answer DATA with ``reply`` (e.g. a 4xx or 5xx) instead of accepting."""
        self.handler.reply = reply

    def set_delay(self, seconds: float) -> None:
        """Make every DATA take ``seconds`` before it is answered (a slow server)."""
        self.handler.delay = seconds

    def wait_for(self, count: int, timeout: float = 30.0) -> list[ReceivedMail]:
        """Block until at least ``count`` messages were accepted (or ``timeout``); return them all."""
        deadline = time.monotonic() + timeout
        with self.handler.arrived:
            while len(self.handler.received) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.handler.arrived.wait(left)
            return list(self.handler.received)

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
