"""`mailbridge demo` end to end, as a user runs it: its own IMAP and SMTP servers, sample mails,
the real service; it exits 0 with tickets and acknowledgements tagged with valid case numbers, the
agents notified of every new case and customer reply, and an agent's Outlook reply to a notification
relayed to the customer (her answer only) with her commands applied to the case."""

from __future__ import annotations

import csv
import http.client
import io
import os
import re
import signal
import stat
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request

import pytest

from mailbridge.demo import ANNA_ANSWER_MARK, DEMO_WEB_LISTEN
from mailbridge.domain import CaseNumberFormat
from tests.mailstack import free_port

# The demo promises to finish well within a minute; leave room for a slow CI machine.
DEMO_TIMEOUT_SECONDS = 120
CASE_RE = re.compile(r"\bC\d{7}\b")
# The heading of each mail in "Mails as the SMTP server received them": "3/12  NOTIFICATION  C2041009  of mail 1, …".
SENT_RE = re.compile(r"^(\d+)/(\d+)  ([A-Z ]+?)  (C\d{7}|-)  of (mail \d+|none of the demo's mails)", re.MULTILINE)
SUBJECT_RE = re.compile(r"^  Subject: (.*)$", re.MULTILINE)
MESSAGE_ID_RE = re.compile(r"^  Message-ID: <(.*)>$", re.MULTILINE)
# The demo delivers four new requests and an out-of-office reply that answers nothing of ours (kept
# for the operator, no case), two follow-ups that land on the first case, and the agent's reply to
# that case's notification.
EXPECTED_TICKETS = 4
EXPECTED_ACKS = 4
# Four new cases (one in the German machines queue, three in the English software queue) and the two
# customer follow-ups; the agent's own reply notifies nobody.
EXPECTED_NOTIFICATIONS = 6
CHECKS = (
    "OK: every new request was acknowledged exactly once, and nothing else was.",
    "OK: every new case and every customer reply in a queue with agents produced exactly one notification "
    "to the agents, and nothing else did.",
    "OK: Anna Berger's reply was relayed to the customer exactly once, from service@kessler-wzm.example: "
    "her answer, without the quoted notification and without her command lines.",
    "is pending with severity 2 (#severity 2, #pending), first response 20",
    "OK: nothing else was sent (no command error, no mail the outbox does not know).",
)


def _demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailbridge", "demo", *args],
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_SECONDS,
        check=False,
        env={**os.environ, "COLUMNS": "200"},  # a wide terminal: the report's tables whole
    )


def _tickets_table(out: str) -> str:
    return out.split("Tickets  (mailbridge tickets list)", 1)[1].split("mailbridge tickets show", 1)[0]


def _sent_mails(out: str) -> list[tuple[str, str, str, str, str]]:
    """(kind, case, "mail N" it was made for, subject, the whole block) of each mail the SMTP server
    received, in order."""
    section = out.split("Mails as the SMTP server received them", 1)[1].split("The raw bytes of", 1)[0]
    heads = list(SENT_RE.finditer(section))
    assert heads and all(int(h.group(2)) == len(heads) for h in heads), section[:2000]
    mails = []
    for h, nxt in zip(heads, [*heads[1:], None], strict=True):
        block = section[h.start() : nxt.start() if nxt else len(section)]
        subject = SUBJECT_RE.search(block)
        assert subject, block
        mails.append((h.group(3), h.group(4), h.group(5), subject.group(1), block))
    return mails


@pytest.mark.slow
def test_demo_runs_the_conversation_end_to_end(tmp_path):
    """Exit 0; every ticket has a valid case number; each new request got exactly one
    acknowledgement whose subject carries its case number; the agents got one notification per new
    case and customer reply, with a signed Message-ID; the follow-ups found the first case; Anna
    Berger's Outlook reply was relayed once, without the quoted notification and her commands, and
    the commands made the case pending with severity 2."""
    proc = _demo()
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    out = proc.stdout
    fmt = CaseNumberFormat()

    table = _tickets_table(out)
    table_cases = CASE_RE.findall(table)
    assert len(table_cases) == len(set(table_cases)) == EXPECTED_TICKETS
    assert all(fmt.is_valid(c) for c in table_cases), table_cases
    assert all(fmt.is_valid(c) for c in CASE_RE.findall(out))

    sent = _sent_mails(out)
    kinds = [k for k, _, _, _, _ in sent]
    assert sorted(set(kinds)) == ["ACKNOWLEDGEMENT", "NOTIFICATION", "RELAY"], kinds
    acks = [(c, s) for k, c, _, s, _ in sent if k == "ACKNOWLEDGEMENT"]
    notes = [(c, s, b) for k, c, _, s, b in sent if k == "NOTIFICATION"]
    relays = [(c, s, b) for k, c, _, s, b in sent if k == "RELAY"]
    # The case of the first mail, whose conversation the demo plays out.
    (first,) = [c for k, c, of, _, _ in sent if k == "ACKNOWLEDGEMENT" and of == "mail 1"]
    assert len(acks) == EXPECTED_ACKS and len(notes) == EXPECTED_NOTIFICATIONS and len(relays) == 1, kinds

    # One acknowledgement per case, none doubled; its subject carries the case number.
    ack_cases = [c for c, _ in acks]
    assert len(set(ack_cases)) == EXPECTED_ACKS
    assert set(ack_cases) <= set(table_cases)
    assert all(s.startswith(f"[{c}] ") for c, s in acks), acks
    # German and English acknowledgements, each answering in the customer's language.
    assert "Wir haben Ihre Anfrage unter der Fallnummer" in out
    assert "We have logged your request under the case number" in out

    # Every case was announced to its queue's team, with a Message-ID signed for the case.
    assert {c for c, _, _ in notes} == set(table_cases)
    for c, s, block in notes:
        assert s.startswith(f"[{c}] "), s
        mid = MESSAGE_ID_RE.search(block)
        assert mid and mid.group(1).startswith(f"mbn.{c}."), block
        assert "Auto-Submitted: auto-generated" in block
        assert "RCPT TO:<service-team@kessler-wzm.example>" in block or "RCPT TO:<software-team@" in block
    first_subjects = [s for c, s, _ in notes if c == first]
    assert len(first_subjects) == 3, first_subjects  # the new case, the customer's reply, the colleague's mail
    assert sum(f"[{first}] Neuer Fall: " in s for s in first_subjects) == 1
    assert sum(f"[{first}] Antwort des Kunden: " in s for s in first_subjects) == 2
    assert any("] New case: " in s for _, s, _ in notes)  # the English queue

    # The reply and the mail quoting the case number in its subject landed on the first case, and
    # so did the agent's reply to the notification, proven by its signed Message-ID.
    words = " ".join(out.split())  # (routing is said in words, wrapped at the width)
    assert "onto this case: In-Reply-To/References name a message of this case" in words
    assert "onto this case by the case number in its subject" in words
    assert "written by the agent (agent, proven by notification)" in words
    noise = out.split("(mailbridge noise list)", 1)[1]
    assert "1 automatic mail(s) that answered nothing of ours" in noise
    row = next(line for line in noise.splitlines() if "out_of_office" in line)
    assert "out_of_office  m.brandt@praezisionsteile-schwaben.example" in row

    # The agent's Outlook reply, as delivered: commands on top, the notification quoted below.
    delivered = out.split("as Anna Berger's Outlook wrote it", 1)[1].split("Mails as the SMTP server", 1)[0]
    assert "  | #severity 2\n  | #pending\n" in delivered
    assert "-----Ursprüngliche Nachricht-----" in delivered and "##- Bitte oberhalb" in delivered

    # What reached the customer: her answer from the support address, in the customer's case thread.
    case, subject, relay = relays[0]
    assert case == first and subject == dict(acks)[first]
    assert "of mail 8, to the customer" in relay
    assert "envelope: MAIL FROM:<service@kessler-wzm.example>" in relay
    assert "RCPT TO:<j.mueller@praezisionsteile-schwaben.example>" in relay
    assert 'From: "Anna Berger (Kessler Maschinenservice)" <service@kessler-wzm.example>' in relay
    assert ANNA_ANSWER_MARK in relay
    relay_text = relay.split("text part (decoded):", 1)[1]
    for leaked in ("Ursprüngliche Nachricht", "##-", "Neuer Fall", "service-team@", "#severity", "#pending"):
        assert leaked not in relay_text, leaked
    assert "Auto-Submitted" not in relay

    # The commands changed the case; the relayed answer is its first response.
    first_row = next(line for line in table.splitlines() if line.startswith(first))
    assert first_row.split()[1] == "pending", first_row
    assert "status pending, queue machines, language de, severity 2" in out
    # The history table: the event, then its detail in the next column.
    assert re.search(r" command +name=severity, arg=2, by=anna\.berger@kessler-wzm\.example", out)
    assert re.search(r" first_response +by=anna\.berger@kessler-wzm\.example, via=relay", out)

    assert f"acknowledgements received:  {EXPECTED_ACKS}" in out
    assert f"notifications received:     {EXPECTED_NOTIFICATIONS}" in out
    assert "relays received:            1" in out
    for check in CHECKS:
        assert check in out, check
    assert "FAILED" not in out
    # A clean run logs no warnings or errors.
    assert "[warning" not in proc.stderr and "[error" not in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_demo_keep_leaves_a_usable_directory(tmp_path):
    """--keep DIR leaves a config and database that the other commands read, and the keys the
    config names readable by the owner only; a non-empty DIR is refused with exit 2 before anything
    starts."""
    keep = tmp_path / "demo"
    proc = _demo("--keep", str(keep))
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    config = keep / "mailbridge.toml"
    assert config.is_file() and (keep / "var" / "mailbridge.db").is_file()
    conf = tomllib.loads(config.read_text(encoding="utf-8"))
    machines = next(q for q in conf["queues"] if q["name"] == "machines")
    assert machines["agents"] == ["anna.berger@kessler-wzm.example", "jonas.wirth@kessler-wzm.example"]
    assert machines["notify"] == ["service-team@kessler-wzm.example"]
    for secret in (conf["conversations"]["secret_file"], conf["accounts"][0]["password_file"]):
        mode = stat.S_IMODE((keep / secret).stat().st_mode)
        assert mode == 0o600, (secret, oct(mode))

    listed = subprocess.run(
        [sys.executable, "-m", "mailbridge", "--config", str(config), "tickets", "list"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    assert sorted(CASE_RE.findall(listed.stdout)) == sorted(CASE_RE.findall(_tickets_table(proc.stdout)))

    # The open-items report as CSV: a header and one row per open case (new, open, pending).
    report = subprocess.run(
        [sys.executable, "-m", "mailbridge", "--config", str(config), "report", "open-items", "--format", "csv"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert report.returncode == 0, report.stderr
    rows = list(csv.reader(io.StringIO(report.stdout)))
    assert rows[0][:3] == ["CASE", "QUEUE", "STATUS"]
    open_cases = [
        line.split()[0]
        for line in listed.stdout.splitlines()
        if CASE_RE.match(line) and line.split()[1] in ("new", "open", "pending")
    ]
    assert len(open_cases) == EXPECTED_TICKETS  # the demo solves none of its cases
    assert sorted(r[0] for r in rows[1:]) == sorted(open_cases)

    # The case tracker over the kept database: `mailbridge web` answers /healthz, and a case link
    # from an acknowledgement the demo printed opens its case (the kept config on a free port).
    links = re.findall(r"/c/([A-Za-z0-9_\-]+)", proc.stdout)
    assert links, "the demo's acknowledgements carry case links"
    port = free_port()
    config.write_text(
        config.read_text(encoding="utf-8").replace(DEMO_WEB_LISTEN, f"127.0.0.1:{port}"), encoding="utf-8"
    )
    log = tmp_path / "web.log"
    with log.open("wb") as out:
        web = subprocess.Popen(
            [sys.executable, "-m", "mailbridge", "--config", str(config), "web"], stdout=out, stderr=out
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
                    assert r.status == 200
                break
            except (urllib.error.URLError, ConnectionError):
                assert web.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        # As a browser does: the link signs its recipient in (a session cookie) and redirects to the case.
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", f"/c/{links[0]}")
        r = conn.getresponse()
        r.read()
        assert r.status == 303 and r.getheader("Location", "").startswith("/cases/C"), r.status
        cookie = r.getheader("Set-Cookie", "").split(";", 1)[0]
        conn.request("GET", r.getheader("Location"), headers={"Cookie": cookie})
        r = conn.getresponse()
        page = r.read().decode("utf-8")
        conn.close()
        assert r.status == 200 and CASE_RE.search(page) is not None and "Anmelden" not in page, page[:500]
    finally:
        web.send_signal(signal.SIGTERM)
        web.wait(15)

    again = _demo("--keep", str(keep))
    assert again.returncode == 2
    assert "is not empty" in again.stderr
