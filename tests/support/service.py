"""``mailbridge run`` as a real subprocess, for the service, fault and chaos tests: :class:`Service`
(its JSON log, bounded waits, a clean stop), :class:`FaultService` (longer bounds, a wait during which
it must stay up), a ``service`` fixture factory, and IMAP helpers that read a mailbox as a client would."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

# Bounds on every wait (seconds).
START_TIMEOUT = 30.0
# A stop finishes the mail in hand and the sender's batch: well under a second here.
STOP_TIMEOUT = 15.0
WORK_TIMEOUT = 60.0
POLL_SECONDS = 0.02
# The fault tests' longer bounds.
FAULT_WORK_TIMEOUT = 90.0
FAULT_STOP_TIMEOUT = 30.0


class Service:
    """One ``mailbridge run`` subprocess with its log file."""

    def __init__(self, config_path: Path, env: dict, log: Path):
        self.log = log
        with log.open("ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mailbridge", "--config", str(config_path), "run"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )

    def lines(self) -> list[str]:
        return self.log.read_text(encoding="utf-8", errors="replace").splitlines()

    def events(self) -> list[dict]:
        """Every JSON object in the log, also where two were written onto one line (structlog's
        print() and the stdlib handler share no lock, so a line can hold two objects); text that is
        no JSON at all is skipped."""
        decoder = json.JSONDecoder()
        out = []
        for line in self.lines():
            pos = 0
            while pos < len(line):
                try:
                    ev, pos = decoder.raw_decode(line, pos)
                except ValueError:
                    break
                if isinstance(ev, dict):
                    out.append(ev)
        return out

    def named(self, name: str) -> list[dict]:
        return [e for e in self.events() if e.get("event") == name]

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.lines()[-lines:])

    # Bounds of wait() and stop(); a subclass may allow more.
    work_timeout = WORK_TIMEOUT
    stop_timeout = STOP_TIMEOUT

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait(self, what: str, check, timeout: float | None = None):
        timeout = self.work_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive:
                pytest.fail(f"service exited with {self.proc.returncode} while waiting for {what}:\n{self.tail()}")
            got = check()
            if got:
                return got
            time.sleep(POLL_SECONDS)
        pytest.fail(f"timed out after {timeout}s waiting for {what}:\n{self.tail()}")

    def wait_started(self) -> None:
        self.wait("service_started", lambda: self.named("service_started"), START_TIMEOUT)

    def stop(self) -> int:
        """SIGTERM and wait (bounded); the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"service did not stop within {self.stop_timeout}s of SIGTERM:\n{self.tail()}")

    def kill(self) -> None:
        if self.alive:
            self.proc.kill()
            self.proc.wait()

    def backoffs(self, account: str) -> list[dict]:
        return [e for e in self.named("account_backoff") if e.get("account") == account]

    def assert_no_backoff(self, account: str) -> None:
        """A healthy account on a healthy server never fails a cycle, also not while stopping."""
        errors = [e["error"] for e in self.backoffs(account)]
        assert not errors, f"account {account!r} backed off: {errors}"

    def assert_stopped_cleanly(self) -> None:
        """``service_stopped`` is the last word, after every fetch run and the sender ended
        (``service_jobs_finished``, logged once the IMAP thread pool is joined); until then a fetch
        cycle may still be using its IMAP connection and the database."""
        names = [e.get("event") for e in self.events()]
        assert "service_stopped" in names, self.tail()
        assert "service_jobs_finished" in names, self.tail()
        assert names.index("service_jobs_finished") < names.index("service_stopped"), (
            "service_stopped was logged (and IMAP connections closed) before the scheduler's jobs ended"
        )
        assert not self.errors()

    def errors(self) -> list[dict]:
        return [e for e in self.events() if e.get("level") in ("error", "critical", "exception")]


class FaultService(Service):
    """One ``mailbridge run`` subprocess (the service tests'), with the longer bounds of fault tests and
    a wait during which it must stay up."""

    work_timeout = FAULT_WORK_TIMEOUT
    stop_timeout = FAULT_STOP_TIMEOUT

    def stay_alive(self, seconds: float, check=lambda: None) -> None:
        """Wait ``seconds`` while the service must keep running; ``check()`` is called throughout."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            assert self.alive, f"service exited with {self.proc.returncode}:\n{self.tail()}"
            check()
            time.sleep(POLL_SECONDS * 5)


def start_services(cls: type[Service], env: dict, log: Path):
    """A ``service`` fixture's body: yields ``start(config_path)``; kills what is still running after."""
    started: list[Service] = []

    def start(config_path: Path) -> Service:
        s = cls(config_path, env, log)
        started.append(s)
        return s

    yield start
    for s in started:
        s.kill()


def append(imap_server, mails: list[bytes], folder: str = "INBOX") -> None:
    c = imap_server.client()
    try:
        c.multiappend(folder, mails)
    finally:
        c.logout()


def message_ids(imap_server, folder: str) -> Counter:
    """Message-IDs (without <>) of the mails in ``folder``, counted."""
    c = imap_server.client()
    try:
        if not c.folder_exists(folder):
            return Counter()
        c.select_folder(folder, readonly=True)
        uids = c.search("ALL")
        data = c.fetch(uids, [b"BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"]) if uids else {}
    finally:
        c.logout()
    return Counter(
        v[b"BODY[HEADER.FIELDS (MESSAGE-ID)]"].decode().split(":", 1)[1].strip().strip("<>") for v in data.values()
    )
