"""parse_mail over the shared real-world mail corpus (../shared/corpus, never copied into the repo).

Every file listed in the corpus INDEX.tsv is parsed; ParseError is allowed and counted, any other
exception is a bug. Per-category figures are printed (run with ``-s`` to see them). The corpus is
test input with mixed licences, so it is only read in place; the test skips when it is absent.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mailbridge.ingest.parser import ParseError, parse_mail

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"
INDEX = CORPUS / "INDEX.tsv"
# CPU seconds of this process (time.process_time): what the parsing costs, not how long other
# processes on a busy machine kept it waiting.
CPU_BUDGET_SECONDS = 60.0


@dataclass
class CorpusRun:
    files: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    counts: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    unexpected: dict[str, str] = field(default_factory=dict)
    parse_errors: dict[str, str] = field(default_factory=dict)
    slowest: list[tuple[float, str]] = field(default_factory=list)


def _index() -> list[tuple[str, str]]:
    rows = []
    for line in INDEX.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        path, category, *_ = line.split("\t")
        rows.append((path, category))
    return rows


@pytest.fixture(scope="module")
def corpus_run() -> CorpusRun:
    if not INDEX.is_file():
        pytest.skip(f"mail corpus not found at {CORPUS} (shared/corpus next to the repository)")
    run = CorpusRun()
    timings = []
    started, cpu_started = time.perf_counter(), time.process_time()
    for rel, category in _index():
        raw = (CORPUS / rel).read_bytes()
        t0 = time.perf_counter()
        try:
            parsed = parse_mail(raw)
        except ParseError as e:
            run.counts[category]["parse-error"] += 1
            run.parse_errors[rel] = str(e)
        except Exception as e:  # the point of the test: record, report, assert below
            run.counts[category]["unexpected"] += 1
            run.unexpected[rel] = f"{type(e).__name__}: {e}"
        else:
            run.counts[category]["fatal" if parsed.fatal_defects else "parsed"] += 1
        timings.append((time.perf_counter() - t0, rel))
        run.files += 1
    run.seconds = time.perf_counter() - started
    run.cpu_seconds = time.process_time() - cpu_started
    run.slowest = sorted(timings, reverse=True)[:5]
    _report(run)
    return run


def _report(run: CorpusRun) -> None:
    cols = ["parsed", "fatal", "parse-error", "unexpected"]
    print(f"\ncorpus: {run.files} files from {CORPUS} in {run.seconds:.1f} s")
    print(f"{'category':<22}" + "".join(f"{c:>13}" for c in cols) + f"{'total':>8}")
    total: Counter = Counter()
    for category in sorted(run.counts):
        c = run.counts[category]
        total.update(c)
        print(f"{category:<22}" + "".join(f"{c[k]:>13}" for k in cols) + f"{sum(c.values()):>8}")
    print(f"{'all':<22}" + "".join(f"{total[k]:>13}" for k in cols) + f"{sum(total.values()):>8}")
    for rel, err in sorted(run.parse_errors.items()):
        print(f"  ParseError  {rel}: {err}")
    for rel, err in sorted(run.unexpected.items()):
        print(f"  UNEXPECTED  {rel}: {err}")
    print("  slowest: " + ", ".join(f"{rel} {s * 1000:.0f} ms" for s, rel in run.slowest))


def test_index_lists_existing_files(corpus_run):
    """The corpus index is readable and every listed file exists (so the run below covers it all)."""
    rows = _index()
    assert len(rows) > 1000
    missing = [rel for rel, _ in rows if not (CORPUS / rel).is_file()]
    assert missing == []
    assert corpus_run.files == len(rows)


def test_zero_unexpected_exceptions(corpus_run):
    """Over every corpus file parse_mail returns a ParsedMail or raises ParseError, nothing else."""
    assert corpus_run.unexpected == {}


def test_most_real_mail_parses_without_fatal_defects(corpus_run):
    """Fatal defects stay the exception: well under a quarter of the RFC 822 mails are quarantined."""
    mails = Counter()
    for category, c in corpus_run.counts.items():
        if category != "other":
            mails.update(c)
    assert sum(mails.values()) > 1000
    assert mails["fatal"] < 0.25 * sum(mails.values())
    # Clean categories of ordinary client mail should practically never be fatal.
    for category in ("plain", "reply-quoted", "list", "html"):
        c = corpus_run.counts.get(category, Counter())
        assert c["fatal"] <= max(1, 0.02 * sum(c.values())), (category, c)


def test_corpus_runs_within_time_budget(corpus_run):
    """Parsing the whole corpus stays within the unit-test budget of CPU time."""
    assert corpus_run.cpu_seconds < CPU_BUDGET_SECONDS
