"""Every mail of the real-world corpus (``../shared/corpus``, raw mails from other projects' test
suites) through the whole pipeline: delivered into a real IMAP server (pymap), fetched and processed
by the real poller into a real database. Prints, per category of the corpus's INDEX.tsv, how many
became cases, how many were recognised as auto-replies or bounces, how many were kept as noise,
quarantined (and why) or recognised as duplicates.

Asserts zero crashes (no pipeline step raised on any input) and that every auto-reply and bounce
of the corpus is recognised as one (except the files ``tests/unit/test_noise_corpus.py`` lists,
each with the reason it is not one). Skips when the corpus is absent; nothing of it is copied here.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from sqlalchemy import select

from mailbridge.app import App
from mailbridge.ingest.noise import PERSONAL, classify_mail
from mailbridge.ingest.parser import ParseError, parse_mail
from mailbridge.settings import load_settings
from mailbridge.store.db import session_scope
from mailbridge.store.models import Message, Quarantine, RawMessage
from tests.support import write_config

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus"
AUTOMATIC_CATEGORIES = ("auto-reply", "bounce")
# A quarantine reason that says a step raised (the pipeline's catch-all), as opposed to a verdict.
CRASH_RE = re.compile(r"^\w+(Error|Exception)\b.* in step ")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (CORPUS / "INDEX.tsv").is_file(), reason=f"no mail corpus at {CORPUS}"),
]


def _index() -> list[tuple[str, str, bytes]]:
    """(path, category, bytes) of every corpus file."""
    out = []
    for line in (CORPUS / "INDEX.tsv").read_text(encoding="utf-8").splitlines():
        parts = line.split("\t")
        if len(parts) < 2 or not (CORPUS / parts[0]).is_file():
            continue
        out.append((parts[0], parts[1], (CORPUS / parts[0]).read_bytes()))
    return out


def _not_automatic() -> dict[str, str]:
    """Corpus files filed as bounce/auto-reply that are not one, each with the reason (read one by
    one for the classifier's own corpus test)."""
    from tests.unit.test_noise_corpus import NOT_REALLY_BOUNCES

    return NOT_REALLY_BOUNCES


def _deliver(imap_server, files) -> dict[str, str]:
    """APPEND every file, in batches; returns the files the IMAP server refused, with its answer.
    An empty file is no message at all. pymap's MULTIAPPEND keeps what it stored before a message
    it refuses, so a failed batch goes on after the refused one (the mailbox's count tells which)."""
    rejected = {rel: "empty file" for rel, _, raw in files if not raw}
    todo = [(rel, raw) for rel, _, raw in files if raw]
    c = imap_server.client()
    try:
        while todo:
            batch = todo[:200]
            before = c.folder_status("INBOX", [b"MESSAGES"])[b"MESSAGES"]
            try:
                c.multiappend("INBOX", [raw for _, raw in batch])
                todo = todo[len(batch) :]
            except Exception as e:
                c = imap_server.client()
                stored = c.folder_status("INBOX", [b"MESSAGES"])[b"MESSAGES"] - before
                rel = batch[stored][0]
                rejected[rel] = f"IMAP server refused it: {str(e)[:80]}"
                todo = todo[stored + 1 :]
    finally:
        c.logout()
    return rejected


def _reason_kind(reason: str) -> str:
    """A quarantine reason, shortened to its kind for the table."""
    if CRASH_RE.match(reason):
        return "CRASH"
    if reason.startswith("mail is") and "over the limit" in reason:
        return "size"
    if reason.startswith("unparseable"):
        return "unparseable"
    if reason.startswith("no usable sender"):
        return "no sender"
    return reason.split(";")[0].split(":")[0][:40]


def test_corpus_through_the_pipeline(tmp_path, imap_server, smtp_sink, imap_env, capsys):
    files = _index()
    assert files, "INDEX.tsv lists no files"
    path = write_config(
        tmp_path / "mailbridge.toml",
        imap_port=imap_server.port,
        imap_user=imap_server.user,
        smtp_port=smtp_sink.port,
        db_url=f"sqlite:///{tmp_path / 'corpus.db'}",
        var_dir=tmp_path / "var",
    )
    app = App(load_settings(path))
    app.upgrade_db()
    try:
        rejected = _deliver(imap_server, files)
        poller = app.poller("main")
        try:
            total = 0
            while True:
                report = poller.cycle()
                total += report.fetched
                if not report.fetched:
                    break
        finally:
            poller.close()
        assert total == len(files) - len(rejected)

        with session_scope(app.session_factory) as s:
            raws = {r.sha256: r for r in s.scalars(select(RawMessage))}
            quarantine = {q.raw_id: q.reason for q in s.scalars(select(Quarantine))}
            new_case = {
                m.raw_id
                for m in s.scalars(select(Message).where(Message.direction == "in", Message.ticket_id.is_not(None)))
            }
            s.expunge_all()
    finally:
        app.close()

    rows: dict[str, Counter] = defaultdict(Counter)
    reasons: dict[str, Counter] = defaultdict(Counter)
    crashes: list[str] = []
    missed: list[str] = []
    not_automatic = _not_automatic()
    seen: set[str] = set()
    for rel, category, raw in files:
        c = rows[category]
        c["files"] += 1
        sha = hashlib.sha256(raw).hexdigest()
        # The same bytes twice, or the same Message-ID: the later one has no row of its own.
        r = raws.get(sha) if sha not in seen else None
        seen.add(sha)
        mail_class = r.mail_class if r is not None else None
        if rel in rejected:
            c["not stored"] += 1
            reasons[category][rejected[rel].split(":")[0]] += 1
        elif r is None:
            c["duplicate"] += 1
        elif r.disposition == "quarantined":
            kind = _reason_kind(quarantine.get(r.id, ""))
            c["quarantined"] += 1
            reasons[category][kind] += 1
            if kind == "CRASH":
                crashes.append(f"{rel}: {quarantine[r.id]}")
        elif r.disposition == "noise":
            c["noise"] += 1
        elif r.disposition == "duplicate":
            c["duplicate"] += 1
        elif r.disposition == "ignored":
            c["own"] += 1
        elif r.id in new_case:
            c["ticket"] += 1
        if r is None and raw:
            # A duplicate has no row of its own: classify its bytes the same way.
            try:
                mail_class = classify_mail(parse_mail(raw), raw, frozenset()).kind.value
            except ParseError:
                mail_class = None
        if category in AUTOMATIC_CATEGORIES and rel in rejected:
            missed.append(f"{rel} (not stored: {rejected[rel]})")
            continue
        if mail_class is not None and mail_class not in {k.value for k in PERSONAL}:
            c["recognised"] += 1
        if category in AUTOMATIC_CATEGORIES and rel not in not_automatic:
            c["expected"] += 1
            if mail_class is None or mail_class in {k.value for k in PERSONAL}:
                missed.append(f"{rel} ({mail_class})")

    cols = ("files", "ticket", "recognised", "noise", "quarantined", "duplicate", "own", "not stored")
    lines = [f"{'category':<22}" + "".join(f"{c:>12}" for c in cols) + "  quarantined / not stored because"]
    for category in sorted(rows):
        c = rows[category]
        why = ", ".join(f"{k} {n}" for k, n in reasons[category].most_common(4))
        lines.append(f"{category:<22}" + "".join(f"{c[k]:>12}" for k in cols) + f"  {why}")
    total = sum(rows.values(), Counter())
    lines.append(f"{'all':<22}" + "".join(f"{total[k]:>12}" for k in cols))
    expected = sum(rows[c]["expected"] for c in AUTOMATIC_CATEGORIES)
    lines.append(
        f"auto-replies and bounces recognised: {expected - len(missed)} of {expected}"
        f" ({len(not_automatic)} corpus files filed as such are not one, see test_noise_corpus.py)"
    )
    lines.append(f"crashes: {len(crashes)}")
    with capsys.disabled():
        print("\n" + "\n".join(lines))
    assert crashes == []
    assert missed == []
