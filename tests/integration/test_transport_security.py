"""TLS and secrets against real servers on loopback: pymap (IMAP, STARTTLS) and aiosmtpd (SMTP,
STARTTLS + AUTH) with a self-signed certificate made for this test by the ``openssl`` CLI.

- Certificate verification is on by default: without ``ca_file`` both connections are refused and
  the certificate error is logged clearly; with ``ca_file`` naming the certificate both work.
- A password never appears in any log line (the service's own logging at DEBUG, libraries
  included), not on a successful login, not on a failed one, and never in repr/str of the settings.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import shutil
import ssl
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import imapclient
import pytest
import structlog
from sqlalchemy import update

from mailbridge.app import App
from mailbridge.embedded import LOOPBACK, _Handler, free_port, wait_for_port
from mailbridge.ingest.fetcher import FetchError
from mailbridge.logging import configure_logging
from mailbridge.processes import die_with_parent
from mailbridge.settings import load_settings
from mailbridge.store.db import session_scope
from mailbridge.store.models import Outbox
from tests.support import SUPPORT_ADDRESS, make_mail

IMAP_PASSWORD = "imap-Pw-7f3c9e1d-NEVER-LOG"
WRONG_IMAP_PASSWORD = "wrong-Pw-a81b44c2-NEVER-LOG"
SMTP_PASSWORD = "smtp-Pw-0d5e72ab-NEVER-LOG"
IMAP_ENV, SMTP_ENV = "MB_TLS_TEST_IMAP_PASSWORD", "MB_TLS_TEST_SMTP_PASSWORD"


@pytest.fixture(scope="module")
def cert(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (its own CA), made with the openssl CLI."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    d = tmp_path_factory.mktemp("tls")
    crt, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(crt)),
        ],
        check=True,
        capture_output=True,
    )
    return crt, key


@pytest.fixture
def tls_imap(cert, tmp_path):
    """pymap offering STARTTLS with the test certificate, one user with IMAP_PASSWORD."""
    crt, key = cert
    port = free_port()
    code = "import sys; from pymap.main import main; sys.argv[0] = 'pymap'; main()"
    args = [sys.executable, "-c", code, f"--host={LOOPBACK}", f"--port={port}", f"--cert={crt}", f"--key={key}"]
    args += ["--no-service=admin", "--no-service=managesieve", "--no-service=swim"]
    args += ["dict", "--demo-user=support", f"--demo-password={IMAP_PASSWORD}"]
    log = (tmp_path / "pymap.log").open("wb")
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log, preexec_fn=die_with_parent)
    try:
        wait_for_port(port, proc=proc)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


class _Auth:
    """aiosmtpd authenticator: accepts ("mailbridge", SMTP_PASSWORD) only."""

    def __call__(self, server, session, envelope, mechanism, auth_data):
        from aiosmtpd.smtp import AuthResult

        ok = auth_data.login == b"mailbridge" and auth_data.password == SMTP_PASSWORD.encode()
        return AuthResult(success=ok, handled=False)


@pytest.fixture
def tls_smtp(cert):
    """aiosmtpd requiring STARTTLS (test certificate) and AUTH before mail."""
    from aiosmtpd.controller import Controller

    crt, key = cert
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(crt, key)
    handler = _Handler()
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    controller = Controller(
        handler,
        hostname=LOOPBACK,
        port=free_port(),
        tls_context=ctx,
        require_starttls=True,
        authenticator=_Auth(),
        auth_required=True,
    )
    controller.start()
    yield controller.port, handler
    controller.stop()


def _config(tmp_path, imap_port, smtp_port, *, imap_ca: Path | None, smtp_ca: Path | None) -> Path:
    def ca(p):
        return f'ca_file = "{p}"' if p else ""

    path = tmp_path / f"mailbridge-{bool(imap_ca)}-{bool(smtp_ca)}.toml"
    path.write_text(
        f"""
var_dir = "{tmp_path / "var"}"
[database]
url = "sqlite:///{tmp_path / "mailbridge.db"}"
[[accounts]]
name = "main"
host = "127.0.0.1"
port = {imap_port}
tls = "starttls"
{ca(imap_ca)}
user = "support"
password_env = "{IMAP_ENV}"
timeout = 10
[[queues]]
name = "support"
addresses = ["{SUPPORT_ADDRESS}"]
language = "en"
account = "main"
display_name = "Vendor Support"
[smtp]
host = "127.0.0.1"
port = {smtp_port}
tls = "starttls"
{ca(smtp_ca)}
user = "mailbridge"
password_env = "{SMTP_ENV}"
timeout = 10
[outbox]
interval = 1
backoff_seconds = 1
max_backoff_seconds = 4
lease_seconds = 1
""",
        encoding="utf-8",
    )
    return path


@pytest.fixture
def log_lines():
    """The service's real logging (configure_logging, JSON, DEBUG: libraries included) into a buffer."""
    buf = io.StringIO()
    configure_logging(level="debug", fmt="json", stream=buf)
    yield buf
    structlog.reset_defaults()
    logging.getLogger().handlers[:] = []
    logging.getLogger().setLevel(logging.WARNING)


def _events(buf: io.StringIO) -> list[dict]:
    out = []
    for line in buf.getvalue().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            out.append({"event": line})
    return out


def _cycle_logged(app) -> None:
    """One poll as the service runs it: a failure is logged by the poller (account_backoff)."""
    poller = app.poller("main")
    try:
        poller.tick(0.5, threading.Event())
    finally:
        poller.close()


def _no_secret_anywhere(buf: io.StringIO, *secrets: str) -> None:
    text = buf.getvalue()
    for s in secrets:
        assert s not in text
        assert s.encode().hex() not in text  # not even as a hex dump of the wire


def test_default_config_refuses_self_signed_servers_and_logs_the_certificate_error(
    tmp_path, tls_imap, tls_smtp, cert, monkeypatch, log_lines
):
    """No ca_file: the system trust store does not know our certificate, so IMAP STARTTLS and SMTP
    STARTTLS are refused before any password is sent; the logs name the certificate failure."""
    monkeypatch.setenv(IMAP_ENV, IMAP_PASSWORD)
    monkeypatch.setenv(SMTP_ENV, SMTP_PASSWORD)
    smtp_port, handler = tls_smtp
    # IMAP trusts our CA (so a mail comes in and an acknowledgement is queued); SMTP does not.
    app = App(load_settings(_config(tmp_path, tls_imap, smtp_port, imap_ca=cert[0], smtp_ca=None)))
    app.upgrade_db()
    try:
        c = imapclient.IMAPClient(LOOPBACK, port=tls_imap, ssl=False, timeout=10)
        c.starttls(ssl.create_default_context(cafile=str(cert[0])))
        c.login("support", IMAP_PASSWORD)
        c.append("INBOX", make_mail(message_id="<tls-1@kunde.example>"))
        c.logout()
        assert app.poller("main").cycle().dispositions == {"processed": 1}
        report = asyncio.run(app.sender().run_once())
        assert report.sent == 0 and report.errors
        assert "CERTIFICATE_VERIFY_FAILED" in report.errors[0]
        assert handler.received == []
    finally:
        app.close()
    smtp_fail = [e for e in _events(log_lines) if e.get("event") == "smtp_unreachable"]
    assert smtp_fail and "certificate verify failed" in smtp_fail[0]["error"]

    app = App(load_settings(_config(tmp_path, tls_imap, smtp_port, imap_ca=None, smtp_ca=None)))
    try:
        with pytest.raises(FetchError, match="CERTIFICATE_VERIFY_FAILED"):
            app.poller("main").cycle()
        _cycle_logged(app)
    finally:
        app.close()
    imap_fail = [e for e in _events(log_lines) if e.get("event") == "imap_tls_failed"]
    assert imap_fail and "certificate verify failed" in imap_fail[0]["error"]
    _no_secret_anywhere(log_lines, IMAP_PASSWORD, SMTP_PASSWORD)


def test_ca_file_trusts_a_private_ca_and_no_password_is_ever_logged(
    tmp_path, tls_imap, tls_smtp, cert, monkeypatch, log_lines
):
    """With ca_file both connections verify and work (IMAP login, SMTP STARTTLS + AUTH + DATA). At
    DEBUG, through a failed IMAP login and a failed SMTP AUTH too, no password reaches the log, and
    the settings never show one in repr, str or a dump."""
    monkeypatch.setenv(IMAP_ENV, IMAP_PASSWORD)
    monkeypatch.setenv(SMTP_ENV, SMTP_PASSWORD)
    smtp_port, handler = tls_smtp
    settings = load_settings(_config(tmp_path, tls_imap, smtp_port, imap_ca=cert[0], smtp_ca=cert[0]))
    for shown in (repr(settings), str(settings), settings.model_dump_json(), str(settings.model_dump())):
        assert IMAP_PASSWORD not in shown and SMTP_PASSWORD not in shown
    assert settings.accounts[0].password.get_secret_value() == IMAP_PASSWORD  # it is there, only hidden

    app = App(settings)
    app.upgrade_db()
    try:
        c = imapclient.IMAPClient(LOOPBACK, port=tls_imap, ssl=False, timeout=10)
        c.starttls(ssl.create_default_context(cafile=str(cert[0])))
        c.login("support", IMAP_PASSWORD)
        c.append("INBOX", make_mail(message_id="<tls-2@kunde.example>"))
        c.logout()
        assert app.poller("main").cycle().dispositions == {"processed": 1}
        assert asyncio.run(app.sender().run_once()).sent == 1
        assert len(handler.received) == 1 and handler.received[0].rcpt_tos == ["juergen.mueller@kunde.example"]
    finally:
        app.close()

    # Wrong passwords: the IMAP login and the SMTP AUTH fail, and are logged without the password.
    monkeypatch.setenv(IMAP_ENV, WRONG_IMAP_PASSWORD)
    monkeypatch.setenv(SMTP_ENV, WRONG_IMAP_PASSWORD + "-smtp")
    app = App(load_settings(_config(tmp_path, tls_imap, smtp_port, imap_ca=cert[0], smtp_ca=cert[0])))
    try:
        _cycle_logged(app)
        with session_scope(app.session_factory) as s:  # one more mail to send: re-queue the sent row
            s.execute(update(Outbox).values(status="queued", next_attempt_at=datetime(2000, 1, 1, tzinfo=UTC)))
        report = asyncio.run(app.sender().run_once())
        assert report.sent == 0 and report.errors
    finally:
        app.close()
    events = _events(log_lines)
    assert [e for e in events if e.get("event") == "imap_login_failed" and e["level"] == "error"]
    assert [e for e in events if e.get("event") == "smtp_auth_failed"]
    _no_secret_anywhere(log_lines, IMAP_PASSWORD, SMTP_PASSWORD, WRONG_IMAP_PASSWORD)


def test_an_untrusted_certificate_is_an_error_retried_slowly_and_an_alert(
    tmp_path, tls_imap, smtp_sink, monkeypatch, log_lines
):
    """The IMAP server's certificate is self-signed and not trusted: imap_tls_failed at error level
    with the TLS library's words, one attempt per permanent_fault_retry (not the fast backoff), and
    an alert mail to the operators that names the host and what to do."""
    monkeypatch.setenv(IMAP_ENV, IMAP_PASSWORD)
    path = _config(tmp_path, tls_imap, smtp_sink.port, imap_ca=None, smtp_ca=None)
    text = path.read_text().replace("timeout = 10\n[[queues]]", "timeout = 10\npermanent_fault_retry = 600\n[[queues]]")
    # Plain SMTP to the test's sink (no SMTP login), and an operator to alert.
    text = text.split("[smtp]")[0] + (
        f'[smtp]\nhost = "127.0.0.1"\nport = {smtp_sink.port}\ntls = "none"\n'
        '[alerts]\nrecipients = ["it-ops@vendor-it.example"]\n'
    )
    path.write_text(text)
    app = App(load_settings(path))
    app.upgrade_db()
    try:
        poller = app.poller("main")
        t0 = time.monotonic()
        poller.tick(3.0, threading.Event())  # retry_at lies beyond the window: the run ends at once
        poller.tick(3.0, threading.Event())  # the next run of the job: still waiting, no new attempt
        elapsed = time.monotonic() - t0
        poller.close()
        assert app.check_alerts() == 1
        assert app.check_alerts() == 0  # once per period
        assert asyncio.run(app.sender().run_once()).sent == 1
    finally:
        app.close()
    failed = [e for e in _events(log_lines) if e.get("event") == "imap_tls_failed"]
    assert len(failed) == 1 and elapsed < 2.5
    assert failed[0]["level"] == "error" and failed[0]["retry_in"] == 600
    assert "certificate verify failed" in failed[0]["error"] and failed[0]["host"] == "127.0.0.1"
    assert not [e for e in _events(log_lines) if e.get("event") == "account_backoff"]
    (mail,) = smtp_sink.received
    assert mail.rcpt_tos == ["it-ops@vendor-it.example"]
    msg = mail.message
    assert msg["Subject"] == "[mailbridge] TLS certificate of 127.0.0.1 not trusted"
    assert msg["Auto-Submitted"] == "auto-generated"
    body = " ".join(msg.get_body(("plain",)).get_content().split())
    assert "certificate verify failed" in body and "retries every 10 minutes" in body
    assert "check the server's certificate (host name, expiry date, the issuing CA)" in body
