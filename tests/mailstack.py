"""A private, mainstream mail stack for end-to-end tests: Dovecot (IMAP + LMTP) and Postfix (SMTP).

:class:`MailStack` runs its own Dovecot and its own Postfix instance out of one temporary directory
(configuration, queue, state, Maildirs, logs), on free ports of 127.0.0.1, never touching the system
configuration or the system instances::

    client ──SMTP──> Postfix (smtpd on 127.0.0.1:smtp_port, mynetworks 127.0.0.0/8)
                        │ virtual_mailbox_domains (vendor.example, kunde.example, …)
                        └──LMTP──> Dovecot (lmtp on 127.0.0.1:lmtp_port) ──> Maildir ──IMAP──> clients
    any other domain: Postfix's error transport bounces it at once (no DNS, no relayhost, no outside world)

Users are virtual: ``passwd-file`` entries with plain passwords, the login name is the full address,
the Maildirs belong to the system user ``mail``. Both servers need root (Postfix's master always
does), so the stack is unavailable unless the tests run as root.

Lifetime: :meth:`MailStack.start` / :meth:`MailStack.stop` (or ``with MailStack() as stack``). It
stops exactly what it started: Dovecot is our child (``dovecot -F``, its own session); Postfix's
master daemonizes and leads a session of its own, its pid is in ``queue/pid/master.pid``; after
``postfix -c DIR stop`` (and SIGTERM to Dovecot) every process of either session must be gone, and
stragglers are killed one by one, by pid. A stack left behind by a killed test run (its owner pid is
dead) is stopped and removed by the next :meth:`start`.

Pytest: import the fixtures into a test module (``from tests.mailstack import mailstack_fixture,
mailstack_session_fixture  # noqa: F401``); they are named ``mailstack_session`` (one stack per test
session) and ``mailstack`` (that stack, handed to one test after :meth:`MailStack.reset`: no users,
no mail, no aliases but the constructor's). Missing binaries skip the test with the reason :data:`INSTALL_HINT`; with
``MAILBRIDGE_REQUIRE_MAILSTACK=1`` a missing binary or a failed start fails instead.

Sieve: ``MailStack(sieve=True)`` loads Pigeonhole (Debian: dovecot-sieve) into Dovecot's LMTP; a user's
active script runs at delivery (:meth:`MailStack.set_vacation`, :meth:`MailStack.set_sieve_script`) and
what it sends — a vacation reply — Dovecot submits to this stack's Postfix (``submission_host``), so it
is delivered like any other mail. :meth:`MailStack.sieve_log` shows what the scripts did. Fixtures
``mailstack_sieve_session`` / ``mailstack_sieve``: a second stack of that kind.
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import os
import pwd
import secrets
import shutil
import signal
import smtplib
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from functools import cached_property
from pathlib import Path

import pytest
from imapclient import IMAPClient

from mailbridge.app import App
from mailbridge.settings import load_settings
from tests.integration.conversation_support import AUTHSERV, QUEUE_EXTRA, Clock, Desk
from tests.support import IMAP_PASSWORD_ENV, SUPPORT_ADDRESS, write_config

LOOPBACK = "127.0.0.1"
INSTALL_HINT = "dovecot/postfix not installed: apt-get install dovecot-imapd dovecot-lmtpd postfix"
SIEVE_HINT = "Pigeonhole (Dovecot's Sieve) not installed: apt-get install dovecot-sieve"
REQUIRE_ENV = "MAILBRIDGE_REQUIRE_MAILSTACK"
# The domains Postfix hands to Dovecot; everything else bounces.
DEFAULT_DOMAINS = ("vendor.example", "kunde.example", "stadtwerke.example", "other.example")
SBIN_PATH = "/usr/sbin:/usr/local/sbin:/sbin"
# Where Debian/Fedora/source installs put Dovecot's protocol binaries (dovecot-imapd, dovecot-lmtpd).
DOVECOT_LIBEXEC = ("/usr/lib/dovecot", "/usr/libexec/dovecot", "/usr/local/libexec/dovecot")
# Where they put Dovecot's plugins; Pigeonhole's LDA/LMTP plugin is lib90_sieve_plugin.so.
DOVECOT_MODULES = ("/usr/lib/dovecot/modules", "/usr/lib64/dovecot", "/usr/local/lib/dovecot")
SIEVE_PLUGIN = "lib90_sieve_plugin.so"
STACK_PREFIX = "mailbridge-mailstack-"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
# Postfix's queues a message passes through; all empty = every accepted mail delivered or bounced.
QUEUES = ("maildrop", "incoming", "active", "deferred", "hold")


class MailStackUnavailable(RuntimeError):
    """The stack cannot run here (binaries missing, not root) or did not start."""


def _which(name: str) -> str | None:
    return shutil.which(name, path=f"{os.environ.get('PATH', '')}:{SBIN_PATH}")


def missing(sieve: bool = False) -> str | None:
    """Why the stack (with Pigeonhole's Sieve when ``sieve``) cannot run on this machine, or None when it can."""
    binaries = {name: _which(name) for name in ("dovecot", "postfix", "postconf")}
    absent = [n for n, p in binaries.items() if p is None]
    for proto in ("imap", "lmtp"):
        if not any(Path(d, proto).exists() for d in DOVECOT_LIBEXEC):
            absent.append(f"dovecot {proto} ({'/'.join(DOVECOT_LIBEXEC)})")
    if absent:
        return f"{INSTALL_HINT} (missing: {', '.join(absent)})"
    if sieve and not any(Path(d, SIEVE_PLUGIN).exists() for d in DOVECOT_MODULES):
        return f"{SIEVE_HINT} (no {SIEVE_PLUGIN} in {'/'.join(DOVECOT_MODULES)})"
    if os.geteuid() != 0:
        return "the mail stack needs root (Postfix's master and Dovecot's privilege separation)"
    for user in ("postfix", "dovecot", "dovenull", "mail"):
        try:
            pwd.getpwnam(user)
        except KeyError:
            return f"system user {user!r} missing ({INSTALL_HINT})"
    return None


def unavailable(reason: str) -> None:
    """Skip the current test with ``reason`` — or fail it when MAILBRIDGE_REQUIRE_MAILSTACK=1."""
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1)", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.settimeout(0.5)
        return s.connect_ex((LOOPBACK, port)) == 0


def session_members(sid: int) -> list[int]:
    """The live (not zombie) processes of session ``sid`` (Linux /proc)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path("/proc", entry, "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state ppid pgrp session …
        if int(fields[3]) == sid and fields[0] not in ("Z", "X"):
            out.append(int(entry))
    return out


def _end_session(sid: int, timeout: float) -> list[int]:
    """Wait until session ``sid`` is empty; SIGKILL whatever is still in it after ``timeout``, by pid.
    Returns the pids that had to be killed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not session_members(sid):
            return []
        time.sleep(0.02)
    killed = session_members(sid)
    for pid in killed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while session_members(sid) and time.monotonic() < deadline:
        time.sleep(0.02)
    return killed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _write_settled(path: Path, text: str) -> None:
    """Write a Postfix configuration or lookup file with an mtime in the past. Postfix will not use a
    file modified within the last second: it re-reads it every 300 ms until it is "stable" (up to
    1.5 s per program start, or per daemon with a texthash: map)."""
    path.write_text(text, encoding="utf-8")
    past = time.time() - 60
    os.utime(path, (past, past))


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _die_with_parent() -> None:
    # PR_SET_PDEATHSIG: Dovecot gets SIGTERM when the test process dies. Only set from the main
    # thread: the signal fires when the *thread* that forked ends, not the process.
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


@dataclass
class Delivered:
    """One mail as read back over IMAP from a user's folder."""

    mailbox: str
    folder: str
    uid: int
    raw: bytes
    uidvalidity: int = 0

    @cached_property
    def message(self) -> EmailMessage:
        return message_from_bytes(self.raw, policy=policy.default)  # type: ignore[return-value]

    def header(self, name: str) -> str:
        return str(self.message[name] or "")

    @property
    def subject(self) -> str:
        return self.header("Subject")

    @property
    def message_id(self) -> str:
        return self.header("Message-ID").strip()

    @property
    def mail_from(self) -> str:
        """The envelope sender, from the Return-Path Dovecot's LMTP wrote."""
        return self.header("Return-Path").strip().strip("<>")

    @property
    def text(self) -> str:
        part = self.message.get_body(("plain",))
        return part.get_content() if part is not None else ""


@dataclass
class MailStack:
    """A private Dovecot + Postfix; see the module docstring."""

    domains: tuple[str, ...] = DEFAULT_DOMAINS
    hostname: str = "mx.vendor.example"
    # Postfix virtual aliases present after every reset(): address -> target addresses.
    aliases: dict[str, list[str]] = field(default_factory=dict)
    root: Path | None = None
    # Pigeonhole's Sieve plugin in Dovecot's LMTP: each user's active script (set_vacation) runs at
    # delivery, and what it sends (vacation replies) goes out through this stack's Postfix.
    sieve: bool = False
    # Dovecot's oauth2 passdb beside the passwd-file one: XOAUTH2 and OAUTHBEARER logins are checked
    # by posting the token to this RFC 7662 introspection URL (Basic credentials may be in it, as
    # tests/support/oauth_server.OAuthServer.introspection_url_with_credentials gives them); the token
    # is good when it is ``active`` and its ``username`` is the login. Password users are unchanged.
    oauth2_introspection_url: str | None = None

    host: str = field(default=LOOPBACK, init=False)
    imap_port: int = field(default=0, init=False)
    lmtp_port: int = field(default=0, init=False)
    smtp_port: int = field(default=0, init=False)

    def __post_init__(self):
        self._users: dict[str, str] = {}
        self._aliases: dict[str, list[str]] = {}
        self._secret = secrets.token_hex(8)
        self._dovecot: subprocess.Popen | None = None
        self._postfix_sid: int | None = None
        self._own_root = self.root is None
        self._postfix_log_mark = 0
        self._dovecot_log_mark = 0

    # -- paths -----------------------------------------------------------------------------------

    @property
    def dovecot_conf(self) -> Path:
        return self._root / "dovecot" / "dovecot.conf"

    @property
    def postfix_dir(self) -> Path:
        """Postfix's config_directory (``postfix -c``)."""
        return self._root / "postfix" / "etc"

    @property
    def queue_dir(self) -> Path:
        return self._root / "postfix" / "queue"

    @property
    def postfix_log_path(self) -> Path:
        return self._root / "postfix" / "postfix.log"

    @property
    def dovecot_log_path(self) -> Path:
        return self._root / "dovecot" / "dovecot.log"

    @property
    def mail_root(self) -> Path:
        return self._root / "mail"

    def home(self, address: str) -> Path:
        """The user's home; the Maildir is ``home/Maildir``."""
        return self.mail_root / address.lower()

    # -- lifetime --------------------------------------------------------------------------------

    def start(self) -> MailStack:
        """Start Dovecot, then Postfix; raises :class:`MailStackUnavailable` with the servers' logs."""
        reason = missing()
        if reason:
            raise MailStackUnavailable(reason)
        reap_stale_stacks()
        if self.root is None:
            self.root = Path(tempfile.mkdtemp(prefix=STACK_PREFIX))
        self._root = Path(self.root)
        # Postfix's and Dovecot's unprivileged processes must reach their directories in here.
        self._root.chmod(0o755)
        (self._root / "owner.pid").write_text(f"{os.getpid()}\n")
        self._aliases = {k.lower(): list(v) for k, v in self.aliases.items()}
        last: Exception | None = None
        for _ in range(3):  # a free port taken by someone else in between: new ports, once more
            self.imap_port, self.lmtp_port, self.smtp_port = free_port(), free_port(), free_port()
            try:
                self._write_dovecot_config()
                self._write_postfix_config()
                self.start_dovecot()
                self._start_postfix()
                return self
            except MailStackUnavailable as e:
                last = e
                self.stop(remove=False)
                if "in use" not in str(e):
                    break
        self.stop()
        raise last  # type: ignore[misc]

    def stop(self, remove: bool = True) -> None:
        """Stop Postfix and Dovecot and check that none of their processes is left; remove the
        directory (unless ``remove`` is False or the caller gave ``root``)."""
        leftovers: list[str] = []
        leftovers += self._stop_postfix()
        leftovers += self.stop_dovecot()
        if remove and self._own_root and getattr(self, "_root", None) is not None:
            shutil.rmtree(self._root, ignore_errors=True)
        if leftovers:
            raise RuntimeError(f"mail stack processes had to be killed: {leftovers}")

    def __enter__(self) -> MailStack:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def sessions(self) -> list[int]:
        """The session ids of Dovecot (our child's pid) and of Postfix (its master's pid)."""
        return [sid for sid in (self._dovecot.pid if self._dovecot else None, self._postfix_sid) if sid is not None]

    def processes(self) -> list[int]:
        """Every live process of this stack (Dovecot's session and Postfix's)."""
        pids = []
        if self._dovecot is not None:
            pids += session_members(self._dovecot.pid)
        if self._postfix_sid is not None:
            pids += session_members(self._postfix_sid)
        return pids

    # -- Dovecot ---------------------------------------------------------------------------------

    def _write_dovecot_config(self) -> None:
        d = self._root / "dovecot"
        for sub in ("run", "state"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        self.mail_root.mkdir(exist_ok=True)
        mail = pwd.getpwnam("mail")
        os.chown(self.mail_root, mail.pw_uid, mail.pw_gid)
        self._users_dir.mkdir(exist_ok=True)
        for address, password in self._users.items():
            self._write_user(address, password)
        self.dovecot_conf.write_text(
            f"""# A private Dovecot for mailbridge's tests (tests/mailstack.py); nothing from /etc/dovecot.
instance_name = {self._root.name}
base_dir = {d / "run"}
state_dir = {d / "state"}
log_path = {self.dovecot_log_path}
hostname = {self.hostname}
postmaster_address = postmaster@{self.domains[0]}
protocols = imap lmtp
listen = {LOOPBACK}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login{" xoauth2 oauthbearer" if self.oauth2_introspection_url else ""}
default_internal_user = dovecot
default_login_user = dovenull
first_valid_uid = {mail.pw_uid}
first_valid_gid = {mail.pw_gid}
mail_location = maildir:~/Maildir
mail_fsync = never
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {self._users_dir}/%Lu
{self._oauth2_passdb()}}}
userdb {{
  driver = static
  args = uid={mail.pw_uid} gid={mail.pw_gid} home={self.mail_root}/%Lu
}}
protocol imap {{
  mail_max_userip_connections = 100
}}
service imap-login {{
  inet_listener imap {{
    address = {LOOPBACK}
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = {LOOPBACK}
    port = {self.lmtp_port}
  }}
  unix_listener lmtp {{
    mode = 0
  }}
}}
"""
            + self._sieve_config(),
            encoding="utf-8",
        )

    @property
    def dovecot_oauth2_conf(self) -> Path:
        return self._root / "dovecot" / "dovecot-oauth2.conf.ext"

    def _oauth2_passdb(self) -> str:
        """With ``oauth2_introspection_url``: the passwd-file passdb serves only PLAIN and LOGIN, and an
        ``oauth2`` passdb serves XOAUTH2 and OAUTHBEARER (Dovecot 2.3's ``passdb { mechanisms }``), so a
        password never reaches the introspection endpoint and a token never the passwd-file. Users
        still come from the passwd-file (LMTP delivery and the static userdb need them): a token
        opens only the mailbox of an existing user."""
        if not self.oauth2_introspection_url:
            return ""
        self.dovecot_oauth2_conf.write_text(
            f"""# Dovecot's oauth2 passdb (tests/mailstack.py): RFC 7662 introspection by POST.
introspection_mode = post
introspection_url = {self.oauth2_introspection_url}
force_introspection = yes
username_attribute = username
active_attribute = active
active_value = true
timeout_msecs = 5000
""",
            encoding="utf-8",
        )
        # Read by Dovecot's auth process (user dovecot); it holds the introspection credentials.
        dovecot = pwd.getpwnam("dovecot")
        os.chown(self.dovecot_oauth2_conf, dovecot.pw_uid, dovecot.pw_gid)
        self.dovecot_oauth2_conf.chmod(0o600)
        # "none": lookups without a mechanism (LMTP's userdb lookup of a recipient) still use the
        # passwd-file; without it Dovecot skips every passdb and delivery fails.
        return f"""  mechanisms = plain login none
}}
passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {self.dovecot_oauth2_conf}
"""

    def _sieve_config(self) -> str:
        """Pigeonhole in LMTP, when ``sieve``: per-user scripts in the user's home (``~/sieve/``, the
        active one linked as ``~/.dovecot.sieve``, the ManageSieve layout); what a script sends
        (vacation replies, redirects) Dovecot submits over SMTP to this stack's Postfix. Vacation's
        minimum period is 0 so that a test may use ``:seconds 0`` (answer every mail); RFC 5230's
        checks all stay on — Pigeonhole never answers Auto-Submitted, list or bulk mail, mail from a
        null sender or MAILER-DAEMON, nor mail that does not name the user in To/Cc/Bcc."""
        if not self.sieve:
            return ""
        return f"""submission_host = {LOOPBACK}:{self.smtp_port}
protocol lmtp {{
  mail_plugins = $mail_plugins sieve
}}
plugin {{
  sieve = file:~/sieve;active=~/.dovecot.sieve
  sieve_extensions = +vacation-seconds
  sieve_vacation_min_period = 0
}}
"""

    def start_dovecot(self) -> None:
        """Start Dovecot in the foreground (our child, its own session) and wait for IMAP and LMTP."""
        if self._dovecot is not None and self._dovecot.poll() is None:
            return
        dovecot = _which("dovecot")
        assert dovecot is not None
        self._dovecot = subprocess.Popen(
            [dovecot, "-F", "-c", str(self.dovecot_conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=(self._root / "dovecot" / "stderr.log").open("ab"),
            start_new_session=True,
            preexec_fn=_die_with_parent if _in_main_thread() else None,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while not (_listening(self.imap_port) and _listening(self.lmtp_port)):
            if self._dovecot.poll() is not None or time.monotonic() > deadline:
                why = "exited" if self._dovecot.poll() is not None else "did not listen"
                raise MailStackUnavailable(f"dovecot {why}: {self.dovecot_log()[-1500:]}")
            time.sleep(0.02)

    def stop_dovecot(self) -> list[str]:
        """SIGTERM to Dovecot's master, wait until its whole session is gone. Returns what had to be
        killed (nothing, normally)."""
        proc, self._dovecot = self._dovecot, None
        if proc is None:
            return []
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return [f"dovecot:{pid}" for pid in _end_session(proc.pid, STOP_TIMEOUT)]

    def restart_dovecot(self) -> None:
        """Stop and start Dovecot on the same ports; Maildirs (and UIDVALIDITY) survive."""
        self.stop_dovecot()
        self.start_dovecot()

    def dovecot_log(self) -> str:
        text = ""
        for p in (self.dovecot_log_path, self._root / "dovecot" / "stderr.log"):
            with contextlib.suppress(OSError):
                text += p.read_text(errors="replace")
        return text

    # -- Postfix ---------------------------------------------------------------------------------

    def _write_postfix_config(self) -> None:
        self.postfix_dir.mkdir(parents=True, exist_ok=True)
        # The queue directory must exist (root-owned); `postfix start` creates everything inside it.
        self.queue_dir.mkdir(parents=True, exist_ok=True)
        self._write_aliases()
        lmtp = f"lmtp:inet:{LOOPBACK}:{self.lmtp_port}"
        nowhere = "error:5.7.1 no outside world in the mailbridge test mail stack"
        _write_settled(
            self.postfix_dir / "main.cf",
            f"""# A private Postfix for mailbridge's tests (tests/mailstack.py); nothing from /etc/postfix.
compatibility_level = 3.6
queue_directory = {self.queue_dir}
data_directory = {self._root / "postfix" / "data"}
maillog_file = {self.postfix_log_path}
maillog_file_prefixes = {self._root}
syslog_name = postfix-{self._root.name}
myhostname = {self.hostname}
mydomain = {self.domains[0]}
myorigin = $mydomain
mydestination =
local_recipient_maps =
local_transport = error:5.1.1 local delivery is off in the test mail stack
alias_maps =
alias_database =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost =
smtp_dns_support_level = disabled
lmtp_dns_support_level = disabled
smtpd_peername_lookup = no
default_transport = {nowhere}
relay_transport = {nowhere}
virtual_mailbox_domains = {" ".join(self.domains)}
virtual_transport = {lmtp}
virtual_alias_maps = texthash:{self.postfix_dir / "virtual"}
# Dovecot's LMTP decides which users exist (550 5.1.1 -> bounce), as with a real Dovecot backend.
smtpd_reject_unlisted_recipient = no
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_recipient_restrictions = permit_mynetworks, reject
notify_classes =
biff = no
append_dot_mydomain = no
# Retry deferred mail (Dovecot down) within seconds, not minutes.
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
# 64 MB (Postfix's default is 10,240,000 bytes): mailbridge's own limit (ingest.max_message_bytes,
# 50 MB) is what the tests exercise, and the attachment tests send a customer a 30 MB file.
message_size_limit = 67108864
""",
        )
        services = [
            f"{LOOPBACK}:{self.smtp_port} inet n - n - - smtpd",
            "pickup unix n - n 60 1 pickup",
            "cleanup unix n - n - 0 cleanup",
            "qmgr unix n - n 300 1 qmgr",
            "rewrite unix - - n - - trivial-rewrite",
            "bounce unix - - n - 0 bounce",
            "defer unix - - n - 0 bounce",
            "trace unix - - n - 0 bounce",
            "verify unix - - n - 1 verify",
            "flush unix n - n 1000? 0 flush",
            "proxymap unix - - n - - proxymap",
            "proxywrite unix - - n - 1 proxymap",
            "smtp unix - - n - - smtp",
            "relay unix - - n - - smtp",
            "showq unix n - n - - showq",
            "error unix - - n - - error",
            "retry unix - - n - - error",
            "discard unix - - n - - discard",
            "lmtp unix - - n - - lmtp",
            "anvil unix - - n - 1 anvil",
            "scache unix - - n - 1 scache",
            "postlog unix-dgram n - n - 1 postlogd",
        ]
        # chroot = n everywhere: a chrooted daemon would need copies of /etc files in the queue dir.
        _write_settled(self.postfix_dir / "master.cf", "\n".join(services) + "\n")

    def _postfix(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
        postfix = _which("postfix")
        assert postfix is not None
        return subprocess.run(
            [postfix, "-c", str(self.postfix_dir), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={"PATH": f"{SBIN_PATH}:/usr/bin:/bin", "LANG": "C"},
            check=False,
        )

    def _start_postfix(self) -> None:
        r = self._postfix("start")
        self._postfix_sid = _read_pid(self.queue_dir / "pid" / "master.pid")
        if r.returncode != 0:
            raise MailStackUnavailable(f"postfix start failed: {r.stderr.strip()} {self.postfix_log()[-1500:]}")
        deadline = time.monotonic() + START_TIMEOUT
        while not _listening(self.smtp_port):
            if time.monotonic() > deadline:
                raise MailStackUnavailable(f"postfix did not listen on {self.smtp_port}: {self.postfix_log()[-1500:]}")
            time.sleep(0.02)

    def _stop_postfix(self) -> list[str]:
        sid, self._postfix_sid = self._postfix_sid, None
        if sid is None:
            return []
        if _pid_alive(sid):
            self._postfix("stop")
        return [f"postfix:{pid}" for pid in _end_session(sid, STOP_TIMEOUT)]

    def postfix_log(self) -> str:
        try:
            return self.postfix_log_path.read_text(errors="replace")
        except OSError:
            return ""

    def reload_postfix(self) -> None:
        r = self._postfix("reload")
        if r.returncode != 0:
            raise RuntimeError(f"postfix reload failed: {r.stderr.strip()}")

    def flush(self) -> None:
        """Try every deferred mail now (``postqueue -f``)."""
        postqueue = _which("postqueue")
        assert postqueue is not None
        subprocess.run([postqueue, "-c", str(self.postfix_dir), "-f"], capture_output=True, timeout=30, check=False)

    def queued(self) -> list[str]:
        """The queue files Postfix still holds (paths relative to the queue directory)."""
        out = []
        for q in QUEUES:
            for dirpath, _, files in os.walk(self.queue_dir / q):
                out += [str(Path(dirpath, f).relative_to(self.queue_dir)) for f in files]
        return out

    def wait_idle(self, timeout: float = 15.0) -> None:
        """Wait until Postfix's queues are empty: every mail it accepted was delivered or bounced."""
        deadline = time.monotonic() + timeout
        empty_in_a_row = 0
        while True:
            if self.queued():
                empty_in_a_row = 0
            else:
                empty_in_a_row += 1
                if empty_in_a_row == 2:  # twice: a retry moves a file from deferred back to active
                    return
            if time.monotonic() > deadline:
                listing = subprocess.run(
                    [_which("postqueue") or "postqueue", "-c", str(self.postfix_dir), "-p"],
                    capture_output=True,
                    text=True,
                    check=False,
                ).stdout
                raise TimeoutError(
                    f"Postfix queue not empty after {timeout}s:\n{listing}\n{self.postfix_log()[-2000:]}"
                )
            time.sleep(0.01)

    def postfix_events(self, status: str = "bounced") -> list[str]:
        """Postfix log lines with ``status=<status>`` since the last reset()."""
        log = self.postfix_log()[self._postfix_log_mark :]
        return [line for line in log.splitlines() if f"status={status}" in line]

    # -- users, aliases, mailboxes ---------------------------------------------------------------

    @property
    def _users_dir(self) -> Path:
        return self._root / "dovecot" / "users"

    def _password_for(self, address: str) -> str:
        # The same address always gets the same password within one stack: Dovecot checks a
        # passwd-file at most once per second, so a file written again with the same content can
        # never be read stale.
        return hashlib.sha256(f"{self._secret}:{address}".encode()).hexdigest()[:16]

    def _write_user(self, address: str, password: str) -> None:
        path = self._users_dir / address
        tmp = path.with_name(f".{address}.new")
        tmp.write_text(f"{address}:{{PLAIN}}{password}\n", encoding="utf-8")
        tmp.chmod(0o644)
        os.replace(tmp, path)

    def add_user(self, address: str, password: str | None = None) -> str:
        """A Dovecot user (login = the address) with an empty INBOX; returns the password.

        One passwd-file per user (``users/%Lu``): Dovecot stats a passwd-file at most once per second
        and serves its cached copy in between, so a user added to one shared file could be "unknown"
        for up to a second; a new file is read at once. Changing the password of an existing user
        therefore waits for the next second."""
        address = address.lower()
        password = password or self._password_for(address)
        changed = address in self._users and self._users[address] != password
        self._users[address] = password
        self._write_user(address, password)
        if changed:
            time.sleep(1.05 - time.time() % 1)
        return password

    def add_users(self, *addresses: str) -> None:
        for a in addresses:
            self.add_user(a)

    def remove_user(self, address: str) -> None:
        """The user is gone (LMTP answers 550 5.1.1 for it) and so is its mail."""
        self._users.pop(address.lower(), None)
        (self._users_dir / address.lower()).unlink(missing_ok=True)
        shutil.rmtree(self.home(address), ignore_errors=True)

    @property
    def users(self) -> list[str]:
        return list(self._users)

    def password(self, address: str) -> str:
        return self._users[address.lower()]

    def _write_aliases(self) -> None:
        _write_settled(self.postfix_dir / "virtual", "".join(f"{a} {', '.join(t)}\n" for a, t in self._aliases.items()))

    def add_alias(self, address: str, *targets: str) -> None:
        """A Postfix virtual alias (e.g. a second support address delivered into one mailbox)."""
        self._aliases[address.lower()] = list(targets)
        self._write_aliases()
        self.reload_postfix()

    def delete_mailbox(self, address: str) -> None:
        """Remove the user's Maildir on disk (the user stays): the next delivery or login recreates an
        empty INBOX with a new UIDVALIDITY, as after a mailbox restored from nothing."""
        shutil.rmtree(self.home(address), ignore_errors=True)

    def recreate_mailbox(self, address: str) -> None:
        """:meth:`delete_mailbox`, then log in once so that the new, empty INBOX exists."""
        self.delete_mailbox(address)
        with self.imap(address) as c:
            c.select_folder("INBOX")

    def recreate_folder(self, address: str, folder: str) -> None:
        """IMAP DELETE + CREATE of a folder other than INBOX (its mail is gone, new UIDVALIDITY)."""
        with self.imap(address) as c:
            if c.folder_exists(folder):
                c.delete_folder(folder)
            c.create_folder(folder)

    # -- Sieve (Pigeonhole) -----------------------------------------------------------------------

    def set_sieve_script(self, address: str, script: str, name: str = "active") -> Path:
        """Make ``script`` the user's active Sieve script (needs ``MailStack(sieve=True)``). Written
        as Dovecot's user (``mail``) would own it: Pigeonhole compiles it next to the script and keeps
        vacation's duplicate database in the home."""
        if not self.sieve:
            raise RuntimeError("Sieve is off in this stack: MailStack(sieve=True)")
        mail = pwd.getpwnam("mail")
        home = self.home(address)
        scripts = home / "sieve"
        for d in (home, scripts):
            d.mkdir(mode=0o700, exist_ok=True)
            os.chown(d, mail.pw_uid, mail.pw_gid)
        path = scripts / f"{name}.sieve"
        path.write_text(script, encoding="utf-8")
        os.chown(path, mail.pw_uid, mail.pw_gid)
        link = home / ".dovecot.sieve"
        link.unlink(missing_ok=True)
        link.symlink_to(path.relative_to(home))
        os.lchown(link, mail.pw_uid, mail.pw_gid)
        return path

    def set_vacation(
        self,
        address: str,
        text: str,
        *,
        subject: str | None = None,
        days: int | None = None,
        seconds: int | None = None,
        addresses: Iterable[str] = (),
        from_: str | None = None,
    ) -> str:
        """An RFC 5230 ``vacation`` as the user's active Sieve script (what a webmail's "out of office"
        writes); returns the script. Without ``days``/``seconds`` Pigeonhole answers each sender once
        a week (its default period); ``seconds=0`` (RFC 6131) answers every mail it may answer."""

        def q(value: str) -> str:
            return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'

        args = []
        if seconds is not None:
            args.append(f":seconds {seconds}")
        elif days is not None:
            args.append(f":days {days}")
        if subject is not None:
            args.append(f":subject {q(subject)}")
        if from_ is not None:
            args.append(f":from {q(from_)}")
        if addresses:
            args.append(":addresses [" + ", ".join(q(a) for a in addresses) + "]")
        require = ["vacation", *(["vacation-seconds"] if seconds is not None else [])]
        script = (
            f"require [{', '.join(q(r) for r in require)}];\n"
            f"vacation {' '.join(args)}{' ' if args else ''}text:\n"
            + "".join(f".{line}\n" if line.startswith(".") else f"{line}\n" for line in text.splitlines())
            + ".\n;\n"
        )
        self.set_sieve_script(address, script, name="vacation")
        return script

    def sieve_log(self) -> list[str]:
        """Dovecot's log lines of Sieve (Pigeonhole) since the last reset(): what each script did
        ("sent vacation response to <…>", "discarding vacation response to auto-submitted message …")."""
        log = self._dovecot_main_log()[self._dovecot_log_mark :]
        return [line for line in log.splitlines() if ": sieve: " in line]

    def wait_for_sieve_log(self, *parts: str, timeout: float = 5.0) -> list[str]:
        """Wait until :meth:`sieve_log` has a line containing every one of ``parts``; return those
        lines. (Dovecot's log process writes a line a moment after the delivery it tells of.)"""
        deadline = time.monotonic() + timeout
        while True:
            found = [line for line in self.sieve_log() if all(p in line for p in parts)]
            if found:
                return found
            if time.monotonic() > deadline:
                raise TimeoutError(f"no Sieve log line with {parts} after {timeout}s:\n" + "\n".join(self.sieve_log()))
            time.sleep(0.02)

    def _dovecot_main_log(self) -> str:
        try:
            return self.dovecot_log_path.read_text(errors="replace")
        except OSError:
            return ""

    def reset(self) -> None:
        """Between tests: wait for Postfix to finish what it holds, then no users, no mail, only the
        constructor's aliases."""
        with contextlib.suppress(TimeoutError):
            self.wait_idle(timeout=10)
        for address in list(self._users):
            self.remove_user(address)
        for child in self.mail_root.iterdir():
            shutil.rmtree(child, ignore_errors=True)
        wanted = {k.lower(): list(v) for k, v in self.aliases.items()}
        if wanted != self._aliases:
            self._aliases = wanted
            self._write_aliases()
            self.reload_postfix()
        self._postfix_log_mark = len(self.postfix_log())
        self._dovecot_log_mark = len(self._dovecot_main_log())

    # -- mail in and out -------------------------------------------------------------------------

    def send(self, raw: bytes, *, mail_from: str | None = None, rcpt_tos: Iterable[str] | None = None) -> str:
        """Submit ``raw`` to Postfix over SMTP as a mail client on loopback would. The envelope comes
        from the headers (From; To, Cc, Bcc) unless given. Returns the mail's Message-ID."""
        msg = message_from_bytes(raw, policy=policy.default)
        if mail_from is None:
            mail_from = email.utils.parseaddr(str(msg["From"] or ""))[1]
        if rcpt_tos is None:
            fields = [str(v) for h in ("To", "Cc", "Bcc") for v in msg.get_all(h) or []]
            rcpt_tos = [a for _, a in email.utils.getaddresses(fields) if a]
        rcpt_tos = list(rcpt_tos)
        with smtplib.SMTP(self.host, self.smtp_port, local_hostname="client.kunde.example", timeout=30) as s:
            options = ["BODY=8BITMIME"] if any(b > 127 for b in raw) else []
            refused = s.sendmail(mail_from, rcpt_tos, raw, mail_options=options)
        assert not refused, refused
        return str(msg["Message-ID"] or "").strip()

    @contextlib.contextmanager
    def imap(self, address: str) -> Iterator[IMAPClient]:
        """A logged-in IMAP connection to Dovecot as ``address``."""
        c = IMAPClient(self.host, port=self.imap_port, ssl=False, timeout=30)
        try:
            c.login(address.lower(), self.password(address))
            yield c
        finally:
            with contextlib.suppress(Exception):
                c.logout()

    def messages(self, address: str, folder: str = "INBOX") -> list[Delivered]:
        """Every mail in ``folder`` of ``address``, oldest first, read over IMAP (without setting \\Seen)."""
        with self.imap(address) as c:
            if not c.folder_exists(folder):
                return []
            validity = int(c.select_folder(folder, readonly=True)[b"UIDVALIDITY"])
            uids = c.search("ALL")
            if not uids:
                return []
            data = c.fetch(uids, ["BODY.PEEK[]"])
            return [Delivered(address.lower(), folder, uid, data[uid][b"BODY[]"], validity) for uid in sorted(data)]

    def uidvalidity(self, address: str, folder: str = "INBOX") -> int:
        with self.imap(address) as c:
            return int(c.folder_status(folder, ["UIDVALIDITY"])[b"UIDVALIDITY"])

    def wait_for_mail(
        self,
        address: str,
        *,
        count: int = 1,
        message_id: str | None = None,
        subject: str | None = None,
        where: Callable[[Delivered], bool] | None = None,
        folder: str = "INBOX",
        timeout: float = 15.0,
    ) -> list[Delivered]:
        """Wait until ``folder`` of ``address`` holds at least ``count`` mails matching every filter
        given (Message-ID equal, subject containing ``subject``, ``where``); return the matching ones."""

        def matches(m: Delivered) -> bool:
            if message_id is not None and m.message_id.strip("<>") != message_id.strip().strip("<>"):
                return False
            if subject is not None and subject not in m.subject:
                return False
            return where is None or where(m)

        deadline = time.monotonic() + timeout
        while True:
            found = [m for m in self.messages(address, folder) if matches(m)]
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{len(found)} of {count} mails in {address}/{folder} after {timeout}s; "
                    f"queue: {self.queued()}\n{self.postfix_log()[-1500:]}"
                )
            time.sleep(0.05)


def reap_stale_stacks() -> None:
    """Stop and remove the stacks of earlier test runs that died without stopping them."""
    for d in Path(tempfile.gettempdir()).glob(f"{STACK_PREFIX}*"):
        owner = _read_pid(d / "owner.pid")
        if owner is None or _pid_alive(owner):
            continue
        master = _read_pid(d / "postfix" / "queue" / "pid" / "master.pid")
        if master is not None and _pid_alive(master) and (d / "postfix" / "etc" / "main.cf").exists():
            postfix = _which("postfix")
            if postfix:
                subprocess.run([postfix, "-c", str(d / "postfix" / "etc"), "stop"], capture_output=True, check=False)
            _end_session(master, STOP_TIMEOUT)
        dovecot = _read_pid(d / "dovecot" / "run" / "master.pid")
        if dovecot is not None and _pid_alive(dovecot):
            with contextlib.suppress(ProcessLookupError):
                os.kill(dovecot, signal.SIGTERM)
            _end_session(dovecot, STOP_TIMEOUT)
        shutil.rmtree(d, ignore_errors=True)


# -- pytest fixtures (import them into the test module) ----------------------------------------------


@pytest.fixture(scope="session", name="mailstack_session")
def mailstack_session_fixture():
    """One private Dovecot + Postfix for the test session (or a skip/failure saying why not)."""
    reason = missing()
    if reason:
        unavailable(reason)
    stack = MailStack(aliases={"hotline@vendor.example": ["support@vendor.example"]})
    try:
        stack.start()
    except MailStackUnavailable as e:
        unavailable(f"the mail stack did not start: {e}")
    try:
        yield stack
    finally:
        stack.stop()  # raises when a process of the stack had to be killed


@pytest.fixture(name="mailstack")
def mailstack_fixture(mailstack_session):
    """The session's stack, reset for this test: no users, no mail."""
    mailstack_session.reset()
    return mailstack_session


@pytest.fixture(scope="session", name="mailstack_sieve_session")
def mailstack_sieve_session_fixture():
    """A second private stack for the session, with Pigeonhole's Sieve in Dovecot's LMTP
    (``MailStack(sieve=True)``; needs dovecot-sieve as well)."""
    reason = missing(sieve=True)
    if reason:
        unavailable(reason)
    stack = MailStack(aliases={"hotline@vendor.example": ["support@vendor.example"]}, sieve=True)
    try:
        stack.start()
    except MailStackUnavailable as e:
        unavailable(f"the mail stack (with Sieve) did not start: {e}")
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(name="mailstack_sieve")
def mailstack_sieve_fixture(mailstack_sieve_session):
    """The Sieve stack, reset for this test: no users, no mail, no scripts (they live in the homes)."""
    mailstack_sieve_session.reset()
    return mailstack_sieve_session


@pytest.fixture(scope="session", name="mailstack_oauth_session")
def mailstack_oauth_session_fixture(oauth_server_session):
    """A private stack whose Dovecot also takes XOAUTH2/OAUTHBEARER logins with tokens of the
    session's local authorization server (tests/support/oauth_server.py), checked by introspection.
    The test module imports ``oauth_server_session_fixture`` too."""
    reason = missing()
    if reason:
        unavailable(reason)
    stack = MailStack(
        aliases={"hotline@vendor.example": ["support@vendor.example"]},
        oauth2_introspection_url=oauth_server_session.introspection_url_with_credentials,
    )
    try:
        stack.start()
    except MailStackUnavailable as e:
        unavailable(f"the mail stack (with OAuth2) did not start: {e}")
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(name="mailstack_oauth")
def mailstack_oauth_fixture(mailstack_oauth_session, oauth_server):
    """The OAuth2 stack, reset for this test (no users, no mail), with the authorization server reset too."""
    mailstack_oauth_session.reset()
    return mailstack_oauth_session


# -- mailbridge's conversation Desk over the stack -----------------------------------------------------
# tests/integration/conversation_support.Desk talks to an "imap" object (``append(mails)``) and an
# "smtp" object (``received``: what arrived). These two adapters make the same Desk run against the
# stack: mails go in through Postfix into the desk's Dovecot mailbox, and "received" is what Postfix
# delivered into the other users' Dovecot mailboxes, read back over IMAP.


class ThroughPostfix:
    """The Desk's ``imap``: ``append`` submits each mail to Postfix (envelope from the headers) and
    waits until it is in ``mailbox``'s INBOX."""

    def __init__(self, stack: MailStack, mailbox: str):
        self.stack, self.mailbox = stack, mailbox.lower()
        self.port = stack.imap_port

    def append(self, messages: list[bytes], folder: str = "INBOX") -> None:
        ids = [self.stack.send(raw) for raw in messages]
        self.stack.wait_idle()
        for mid in ids:
            if mid:
                self.stack.wait_for_mail(self.mailbox, message_id=mid, folder=folder)


@dataclass
class Arrived:
    """One mail Postfix delivered, as the Desk's Sent wants it: one entry per Message-ID, with every
    stack mailbox it arrived in as ``rcpt_tos``."""

    mail_from: str
    rcpt_tos: list[str]
    copies: list[Delivered]

    @property
    def message(self) -> EmailMessage:
        return self.copies[0].message


class DeliveredMail:
    """The Desk's ``smtp``: ``received`` waits until Postfix's queue is empty and returns every mail
    delivered so far into the stack's mailboxes (except ``exclude``), in arrival order per mailbox."""

    def __init__(self, stack: MailStack, exclude: Iterable[str] = ()):
        self.stack = stack
        self.exclude = {a.lower() for a in exclude}
        self.port = stack.smtp_port
        self._seen: set[tuple[str, int, int]] = set()  # (mailbox, UIDVALIDITY, UID)
        self._arrived: list[Arrived] = []

    @property
    def received(self) -> list[Arrived]:
        self.stack.wait_idle()
        batch: dict[str, Arrived] = {}
        for user in self.stack.users:
            if user in self.exclude:
                continue
            for m in self.stack.messages(user):
                if (user, m.uidvalidity, m.uid) in self._seen:
                    continue
                self._seen.add((user, m.uidvalidity, m.uid))
                key = m.message_id or f"{user}/{m.uid}"
                if key in batch:
                    batch[key].rcpt_tos.append(user)
                    batch[key].copies.append(m)
                else:
                    batch[key] = Arrived(m.mail_from, [user], [m])
        self._arrived += batch.values()
        return list(self._arrived)


def stack_desk(
    stack: MailStack,
    tmp_path: Path,
    db_url: str,
    *,
    queue_extra: str | None = None,
    conversations: str = "",
    users: Iterable[str] = (),
    mailbox: str = SUPPORT_ADDRESS,
    monkeypatch: pytest.MonkeyPatch,
) -> Desk:
    """The conversation tests' Desk (make_desk's configuration) with mailbridge fetching from the
    stack's Dovecot as ``mailbox`` (tls none on loopback, password via password_env) and sending
    through the stack's Postfix. ``mailbox`` and ``users`` become Dovecot users first."""
    password = stack.add_user(mailbox)
    stack.add_users(*users)
    monkeypatch.setenv(IMAP_PASSWORD_ENV, password)
    path = write_config(
        tmp_path / "mailbridge.toml",
        imap_port=stack.imap_port,
        smtp_port=stack.smtp_port,
        db_url=db_url,
        var_dir=tmp_path / "var",
        imap_user=mailbox,
        queue_extra=QUEUE_EXTRA if queue_extra is None else queue_extra,
        extra=f'[conversations]\ntrusted_authserv_id = "{AUTHSERV}"\n{conversations}',
    )
    clock = Clock(datetime(2026, 11, 23, 9, 0, tzinfo=UTC))
    app = App(load_settings(path), clock=clock)
    app.upgrade_db()
    return Desk(app, ThroughPostfix(stack, mailbox), DeliveredMail(stack, exclude=[mailbox]), clock)
