"""classify_mail over the shared real-world mail corpus (../shared/corpus, never copied into the repo).

Every file of INDEX.tsv goes through parse_mail and classify_mail; a table per corpus category of
how many mails got each MailClass is printed (run with ``-s``). Asserted: classification never
raises; every autoresponder and bounce of the corpus is recognised as not a person's (except the
files listed below, each with the reason it is no bounce); and mail of the person categories is
classified as noise only where that is listed and explained. Skips when the corpus is absent.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mailbridge.ingest.noise import BOUNCES, PERSONAL, MailClass, classify_mail
from mailbridge.ingest.parser import ParseError, parse_mail

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"
INDEX = CORPUS / "INDEX.tsv"
OWN = frozenset({"support@vendor.example"})
# Categories whose mails are autoresponders and bounces by the corpus index.
NOISE_CATEGORIES = ("auto-reply", "bounce")
# Classes that count as "recognised" for them (list mail does not: a bounce must not pass as a post).
RECOGNISED = frozenset({MailClass.OUT_OF_OFFICE, MailClass.AUTO_REPLY, *BOUNCES})
# Categories of mail people write; noise found there is a lost request unless explained below.
PERSON_CATEGORIES = ("plain", "reply-quoted", "forward", "html", "multipart-attachment", "tnef", "non-ascii-charset")

# Files the index calls "bounce" (by heuristics, see SOURCES.md) that are no bounce, read one by one.
NOT_REALLY_BOUNCES = {
    "zammad/mail054.box": 'a person\'s reply ("AW: One Net Business", body "some text"); the index\'s '
    "bounce-by-body guess comes from a base64 X-Brightmail-Tracker header that breaks header parsing",
    "zammad/mail087.box": 'a fax-to-mail notification ("Failed Mail" subject, PDF attached) from an '
    "ordinary address: no DSN, no daemon or null sender, no automatic marker, nothing returned",
}
# Mails of the person categories that are classified as noise, each checked by hand.
EXPECTED_NOISE_IN_PERSON_CATEGORIES = {
    "zetacomponents-mail/drafts/postponed-msgs-pine.mbox": "Pine's internal folder-data message "
    '("DON\'T DELETE THIS MESSAGE") From MAILER-DAEMON: no person wrote it',
    "zammad/mail019.box": 'Chinese bulk spam with Return-Path <> and From "..." <>',
    "zammad/mail035.box": "loan spam sent with a null Return-Path",
}


@dataclass
class NoiseRun:
    files: int = 0
    seconds: float = 0.0
    classify_seconds: float = 0.0
    counts: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    kinds: dict[str, tuple[str, MailClass, str]] = field(default_factory=dict)  # rel → (category, class, reason)
    crashes: dict[str, str] = field(default_factory=dict)
    parse_errors: dict[str, str] = field(default_factory=dict)
    bounce_fields: Counter = field(default_factory=Counter)


def _index() -> list[tuple[str, str]]:
    rows = []
    for line in INDEX.read_text(encoding="utf-8").splitlines():
        if line.strip():
            path, category, *_ = line.split("\t")
            rows.append((path, category))
    return rows


@pytest.fixture(scope="module")
def noise_run() -> NoiseRun:
    if not INDEX.is_file():
        pytest.skip(f"mail corpus not found at {CORPUS} (shared/corpus next to the repository)")
    run = NoiseRun()
    started = time.perf_counter()
    for rel, category in _index():
        raw = (CORPUS / rel).read_bytes()
        run.files += 1
        try:
            parsed = parse_mail(raw)
        except ParseError as e:
            run.counts[category]["parse-error"] += 1
            run.parse_errors[rel] = str(e)
            continue
        except Exception as e:  # parse_mail's own contract is tested in test_corpus.py
            run.counts[category]["parse-crash"] += 1
            run.crashes[rel] = f"parse_mail: {type(e).__name__}: {e}"
            continue
        t0 = time.perf_counter()
        try:
            c = classify_mail(parsed, raw, OWN)
        except Exception as e:  # the point of the test: record, report, assert below
            run.counts[category]["crash"] += 1
            run.crashes[rel] = f"classify_mail: {type(e).__name__}: {e}"
            continue
        finally:
            run.classify_seconds += time.perf_counter() - t0
        run.counts[category][c.kind.value] += 1
        run.kinds[rel] = (category, c.kind, c.reason)
        if c.bounce is not None:
            b = c.bounce
            run.bounce_fields["bounces"] += 1
            run.bounce_fields["with recipients"] += bool(b.recipients)
            run.bounce_fields["with original Message-ID"] += bool(b.original_message_ids)
            run.bounce_fields["with original Subject"] += b.original_subject is not None
            run.bounce_fields["with status code"] += b.status is not None
    run.seconds = time.perf_counter() - started
    _report(run)
    return run


def _report(run: NoiseRun) -> None:
    cols = [k.value for k in MailClass] + ["parse-error", "crash"]
    short = {"out_of_office": "ooo", "auto_forwarded": "fwd", "auto_reply": "auto", "hard_bounce": "hard"}
    short |= {"soft_bounce": "soft", "parse-error": "perr"}
    print(f"\nnoise corpus: {run.files} files in {run.seconds:.1f} s (classify_mail {run.classify_seconds:.2f} s)")
    print(f"{'category':<22}" + "".join(f"{short.get(c, c):>7}" for c in cols) + f"{'total':>7}")
    total: Counter = Counter()
    for category in sorted(run.counts):
        c = run.counts[category]
        total.update(c)
        print(f"{category:<22}" + "".join(f"{c[k]:>7}" for k in cols) + f"{sum(c.values()):>7}")
    print(f"{'all':<22}" + "".join(f"{total[k]:>7}" for k in cols) + f"{sum(total.values()):>7}")
    noise = [(r, k) for r, (cat, k, _) in run.kinds.items() if cat in NOISE_CATEGORIES]
    recognised = sum(k in RECOGNISED for _, k in noise)
    print(
        f"auto-replies and bounces recognised: {recognised} of {len(noise)} classified"
        f" ({len(NOT_REALLY_BOUNCES)} allow-listed as no bounce)"
    )
    print("bounce fields: " + ", ".join(f"{k} {v}" for k, v in run.bounce_fields.items()))
    for rel, (cat, kind, reason) in sorted(run.kinds.items()):
        if cat not in NOISE_CATEGORIES and kind not in PERSONAL and not (cat == "list" and kind is MailClass.LIST):
            print(f"  non-personal  {cat:<20} {kind.value:<14} {rel}: {reason}")
    for rel, err in sorted(run.parse_errors.items()):
        print(f"  ParseError  {rel}: {err}")
    for rel, err in sorted(run.crashes.items()):
        print(f"  CRASH  {rel}: {err}")


def test_classification_never_raises(noise_run):
    """classify_mail returns a Classification for every mail parse_mail accepts."""
    assert noise_run.files == len(_index())
    assert noise_run.crashes == {}


def test_every_autoreply_and_bounce_is_recognised(noise_run):
    """Every auto-reply and bounce of the corpus is out-of-office, auto-reply or bounce — except the
    files listed, with reasons, as no bounce at all."""
    missed = {
        rel: f"{kind.value}: {reason}"
        for rel, (cat, kind, reason) in noise_run.kinds.items()
        if cat in NOISE_CATEGORIES and kind not in RECOGNISED and rel not in NOT_REALLY_BOUNCES
    }
    assert missed == {}


def test_allow_list_is_still_needed(noise_run):
    """Each allow-listed file is still in the corpus and still classified as a person's mail (an
    entry that the detector now recognises, or that vanished, is removed from the list)."""
    for rel in NOT_REALLY_BOUNCES:
        assert rel in noise_run.kinds, rel
        assert noise_run.kinds[rel][1] in PERSONAL, (rel, noise_run.kinds[rel])


def test_people_mail_is_not_noise(noise_run):
    """In the categories of mail people write, only the hand-checked files are classified as noise."""
    noise = {
        rel: f"{kind.value}: {reason}"
        for rel, (cat, kind, reason) in noise_run.kinds.items()
        if cat in PERSON_CATEGORIES and kind not in PERSONAL
    }
    assert set(noise) == set(EXPECTED_NOISE_IN_PERSON_CATEGORIES), noise


def test_most_bounces_name_the_bounced_mail(noise_run):
    """Bounces mostly carry our Message-ID (from the returned copy, its headers or the text), so
    the pipeline can find which mail bounced; most name the failed recipient."""
    f = noise_run.bounce_fields
    assert f["bounces"] > 350
    assert f["with original Message-ID"] > 0.8 * f["bounces"]
    assert f["with recipients"] > 0.8 * f["bounces"]
