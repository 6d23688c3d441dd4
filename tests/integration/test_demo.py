"""`mailbridge demo` end to end, as a user runs it: its own IMAP and SMTP servers, sample mails,
the real service; it exits 0 with tickets and acknowledgements tagged with valid case numbers."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from mailbridge.domain import CaseNumberFormat

# The demo promises to finish well within a minute; leave room for a slow CI machine.
DEMO_TIMEOUT_SECONDS = 120
CASE_RE = re.compile(r"\bC\d{7}\b")
ACK_SUBJECT_RE = re.compile(r"^  Subject: \[(C\d{7})\] (.+)$", re.MULTILINE)
# The demo delivers five new requests, one of them an out-of-office reply (no acknowledgement),
# and two follow-ups that land on the first case.
EXPECTED_TICKETS = 5
EXPECTED_ACKS = 4


def _demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailbridge", "demo", *args],
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_SECONDS,
        check=False,
    )


def _tickets_table(out: str) -> str:
    return out.split("Tickets  (mailbridge tickets list)", 1)[1].split("mailbridge tickets show", 1)[0]


@pytest.mark.slow
def test_demo_runs_and_acknowledges_every_request(tmp_path):
    """Exit 0; every ticket has a valid case number; each new request got exactly one
    acknowledgement whose subject carries its case number; the follow-ups found the first case."""
    proc = _demo()
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    out = proc.stdout
    fmt = CaseNumberFormat()

    table_cases = CASE_RE.findall(_tickets_table(out))
    assert len(table_cases) == len(set(table_cases)) == EXPECTED_TICKETS
    assert all(fmt.is_valid(c) for c in table_cases), table_cases
    assert all(fmt.is_valid(c) for c in CASE_RE.findall(out))

    acks = ACK_SUBJECT_RE.findall(out)
    assert len(acks) == EXPECTED_ACKS, acks
    ack_cases = [c for c, _ in acks]
    assert len(set(ack_cases)) == EXPECTED_ACKS  # one acknowledgement per case, none doubled
    assert set(ack_cases) <= set(table_cases)
    # German and English acknowledgements, each answering in the customer's language.
    assert "Wir haben Ihre Anfrage unter der Fallnummer" in out
    assert "We have logged your request under the case number" in out

    # The reply and the mail quoting the case number in its subject landed on the first case.
    assert '"rule": "thread-header"' in out
    assert '"rule": "subject"' in out
    assert "ack_suppressed  reason=Auto-Submitted: auto-replied" in out
    assert "acknowledgements received:  4" in out
    assert "OK: every new request was acknowledged exactly once" in out
    # A clean run logs no warnings or errors.
    assert "[warning" not in proc.stderr and "[error" not in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_demo_keep_leaves_a_usable_directory(tmp_path):
    """--keep DIR leaves a config and database that the other commands read; a non-empty DIR is
    refused with exit 2 before anything starts."""
    keep = tmp_path / "demo"
    proc = _demo("--keep", str(keep))
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    config = keep / "mailbridge.toml"
    assert config.is_file() and (keep / "var" / "mailbridge.db").is_file()

    listed = subprocess.run(
        [sys.executable, "-m", "mailbridge", "--config", str(config), "tickets", "list"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    assert sorted(CASE_RE.findall(listed.stdout)) == sorted(CASE_RE.findall(_tickets_table(proc.stdout)))

    again = _demo("--keep", str(keep))
    assert again.returncode == 2
    assert "is not empty" in again.stderr
