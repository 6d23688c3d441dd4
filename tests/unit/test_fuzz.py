"""Fuzzing parse and reference matching with mutated real mails (hypothesis).

Seeds are the fixtures in tests/data/eml and, when it is there, the shared corpus (../shared/corpus,
read in place, skipped cleanly when absent). Each example mutates one seed (bit flips, cut, spliced
and duplicated slices, MIME and header tokens inserted) and feeds it to ``parse_mail`` and to the
matcher with a real (in-memory SQLite) database. The contract: no exception escapes; every input
ends as a ParsedMail (with fatal defects: a quarantine reason) or a ParseError; what comes out holds
no control characters where a header, a terminal or PostgreSQL would choke on them.

The run is derandomized (the same 300 examples every time, ~5 s); for a longer hunt:
``MB_FUZZ_EXAMPLES=5000 MB_FUZZ_RANDOM=1 pytest tests/unit/test_fuzz.py -s``.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from mailbridge.domain import CaseNumberFormat, ParsedMail
from mailbridge.ingest.matcher import Matcher
from mailbridge.ingest.parser import ParseError, parse_mail
from mailbridge.ingest.references import SubjectNormalizer, case_number_candidates
from mailbridge.store.models import Base, Ticket

ROOT = Path(__file__).resolve().parents[2]
EML = ROOT / "tests" / "data" / "eml"
CORPUS = ROOT.parent / "shared" / "corpus"
# Per-file cap: the corpus has a few multi-megabyte mails; mutating those is slow and adds nothing.
MAX_SEED_BYTES = 256 * 1024
FMT = CaseNumberFormat()

TOKENS = [
    b"\r\n",
    b"\n",
    b"\r",
    b"\r\n\r\n",
    b"--",
    b"\x00",
    b"\xff\xfe",
    b"\x1b[2J",
    b"=?utf-8?q?a=0D=0AB?=",
    b"=?x-unknown?b?//79?=",
    b'Content-Type: multipart/mixed; boundary=""\r\n',
    b"Content-Type: multipart/mixed; boundary=X\r\n\r\n--X\r\n",
    b"Content-Type: message/rfc822\r\n\r\n",
    b"Content-Type: text/plain; charset=x-no-such\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\xe4\xf6",
    b"Content-Transfer-Encoding: base64\r\n\r\n@@@=",
    b"Content-Disposition: attachment; filename*=utf-8''..%2F..%2Fetc%2Fpasswd%E2%80%AE\r\n",
    b"References: <a@b> <" + b"x" * 1200 + b"@c>\r\n",
    b"In-Reply-To: <\x00@x>\r\n",
    b"Subject: [C1000002] AW: C-1000010 \r\n",
    b"C1000002",
    b"<html><a href='x'>" * 5,
]


def _seeds() -> list[Path]:
    paths = sorted(EML.glob("*.eml"))
    if (CORPUS / "INDEX.tsv").is_file():
        for line in (CORPUS / "INDEX.tsv").read_text(encoding="utf-8").splitlines():
            rel = line.split("\t", 1)[0].strip()
            p = CORPUS / rel
            if rel and p.is_file() and p.stat().st_size <= MAX_SEED_BYTES:
                paths.append(p)
    return paths


SEEDS = _seeds()


@st.composite
def mutated_mail(draw) -> bytes:
    raw = bytearray(draw(st.sampled_from(SEEDS)).read_bytes())
    for _ in range(draw(st.integers(1, 6))):
        n = len(raw)
        op = draw(st.sampled_from(["flip", "insert", "token", "delete", "duplicate", "truncate"]))
        at = draw(st.integers(0, n))
        if op == "flip" and n:
            i = min(at, n - 1)
            raw[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            raw[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif op == "token":
            raw[at:at] = draw(st.sampled_from(TOKENS)) * draw(st.sampled_from([1, 1, 1, 50, 1200]))
        elif op == "delete":
            del raw[at : at + draw(st.integers(1, 256))]
        elif op == "duplicate":
            chunk = raw[at : at + draw(st.integers(1, 512))]
            raw[at:at] = chunk * draw(st.integers(1, 20))
        elif op == "truncate":
            del raw[at:]
    return bytes(raw)


@pytest.fixture(scope="module")
def session():
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)  # the test's throw-away database; production uses alembic
    now = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
    with Session(engine) as s:
        for serial in (1, 2, 3):
            s.add(
                Ticket(
                    case_number=FMT.format(serial),
                    serial=serial,
                    queue="support",
                    status="open",
                    subject="Drucker",
                    requester_email="kunde@kunde.example",
                    requester_name="Kunde",
                    language="de",
                    created_at=now,
                    updated_at=now,
                )
            )
        s.commit()
        yield s
    engine.dispose()


def _check_invariants(m: ParsedMail) -> None:
    for value in (m.subject, *(a.name for a in [m.from_, *m.to, *m.cc, *m.reply_to] if a)):
        assert not any(c in value for c in "\r\n\x00\x1b"), value
    for a in [m.from_, *m.to, *m.cc, *m.reply_to]:
        if a is not None:
            assert not any(c in a.email for c in "\r\n\x00 <>") and len(a.email) <= 254
    for i in [m.message_id, *m.in_reply_to, *m.references]:
        if i is not None:
            assert not any(c in i for c in "\r\n\x00 <>") and len(i) <= 998
    assert "\x00" not in m.text and "\x1b" not in m.text
    for att in m.attachments:
        assert "/" not in att.filename and "\\" not in att.filename and "\x00" not in att.filename
        assert not att.filename.startswith(".")


EXAMPLES = int(os.environ.get("MB_FUZZ_EXAMPLES", "300"))


def test_mutated_mails_parse_and_match_without_escaping_exceptions(session):
    """Every mutated mail is a ParsedMail or a ParseError; a parsed one goes through subject
    normalisation, case-number search and the matcher against a real database without raising.
    Afterwards: the run really fed that many examples through, each ended one of the two ways, most
    still parsed (the mutations test the pipeline, not only the parser's first line), and the fixed
    default run reaches the quarantine path."""
    stats: Counter[str] = Counter()
    rules: Counter[str] = Counter()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=not os.environ.get("MB_FUZZ_RANDOM"),
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(raw=mutated_mail())
    def fuzz(raw):
        stats["examples"] += 1
        try:
            m = parse_mail(raw)
        except ParseError:
            stats["parse_error"] += 1
            return
        stats["parsed"] += 1
        stats["fatal"] += bool(m.fatal_defects)
        _check_invariants(m)
        SubjectNormalizer().topic(m.subject, FMT.tag_pattern())
        case_number_candidates(m.subject, FMT)
        case_number_candidates(m.new_text, FMT)
        match = Matcher(FMT, [b"k" * 32], frozenset()).match(session, m)
        assert match.rule in ("thread-header", "subject", "body", "new")
        rules[match.rule] += 1
        match.as_routing()

    started = time.perf_counter()
    fuzz()
    seconds = time.perf_counter() - started
    corpus = "with" if (CORPUS / "INDEX.tsv").is_file() else "without"
    print(
        f"\nfuzz: {stats['examples']} examples from {len(SEEDS)} seeds ({corpus} the shared corpus) in "
        f"{seconds:.1f} s: {stats['parsed']} parsed ({stats['fatal']} with a quarantine reason), "
        f"{stats['parse_error']} ParseError; matcher rules {dict(rules)}"
    )
    # Hypothesis may stop early only when it runs out of distinct inputs, which these seeds never do.
    assert stats["examples"] >= EXAMPLES, stats
    assert stats["parsed"] + stats["parse_error"] == stats["examples"]
    assert stats["parsed"] > stats["examples"] // 2, f"most mutations should still parse: {stats}"
    if not os.environ.get("MB_FUZZ_RANDOM") and EXAMPLES >= 300:
        assert stats["fatal"] > 0, f"no mutation reached the quarantine path: {stats}"
