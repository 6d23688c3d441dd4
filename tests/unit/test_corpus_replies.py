"""extract_new_text over the reply-parser fixtures of the shared real-world corpus (../shared/corpus).

Only some peers keep the expected reply next to their input, and that is what we compare with:

- discourse-email-reply-trimmer: ``emails/X.txt`` → ``trimmed/X.txt``;
- talon: ``standard_replies/X.eml`` → ``standard_replies/X_reply_text`` (talon keeps signatures and
  "Sent from my iPhone" in its reply, we do not), and ``signature/emails/stripped/X_body`` → that
  body without ``X_signature`` (talon's signature fixtures, no quotes).

crisp-email-reply-parser, zapier-email-reply-parser and github-email-reply-parser keep their
expectations in test code upstream (not copied), talon's HTML replies have none: those inputs only
have to go through without an exception. The match rate is printed (``pytest -s``) and recorded as
test properties; it need not be 100 %, the peers disagree among themselves on signatures and on
quotes kept above the reply. Corpus files are read in place, never copied into the repository.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mailbridge.ingest.parser import ParseError, html_to_text, parse_mail
from mailbridge.ingest.quoting import extract_new_text

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus"

pytestmark = pytest.mark.skipif(not CORPUS.is_dir(), reason=f"shared corpus not found at {CORPUS}")


def _norm(text: str) -> str:
    return " ".join(text.split())


def _read(path: Path) -> str:
    return path.read_bytes().decode("utf-8", "replace")


def _eml_text(path: Path) -> str | None:
    try:
        return parse_mail(path.read_bytes()).text
    except ParseError:
        return None


@dataclass
class Case:
    source: str
    name: str
    text: str
    expected: str


@dataclass
class Tally:
    total: int = 0
    exact: int = 0
    shorter: int = 0  # ours is a proper prefix of the expected text: we cut more (mostly a signature)
    longer: int = 0  # the expected text is a proper prefix of ours: we kept more
    misses: list[str] = field(default_factory=list)


def _paired_cases() -> list[Case]:
    cases: list[Case] = []
    trimmer = CORPUS / "discourse-email-reply-trimmer"
    for src in sorted((trimmer / "emails").glob("*.txt")):
        expected = trimmer / "trimmed" / src.name
        if expected.is_file():
            cases.append(Case("discourse-email-reply-trimmer", src.name, _read(src), _read(expected)))

    talon = CORPUS / "talon"
    for expected in sorted((talon / "standard_replies").glob("*_reply_text")):
        eml = expected.with_name(expected.name.removesuffix("_reply_text") + ".eml")
        text = _eml_text(eml) if eml.is_file() else None
        if text is not None:
            cases.append(Case("talon/standard_replies", eml.name, text, _read(expected)))
    for body in sorted((talon / "signature" / "emails" / "stripped").glob("*_body")):
        signature = body.with_name(body.name.removesuffix("_body") + "_signature")
        if not signature.is_file():
            continue
        text, sig = _read(body).rstrip(), _read(signature).strip()
        if text.endswith(sig):  # an empty signature file: the whole body is the reply
            cases.append(Case("talon/signature", body.name, text, text[: len(text) - len(sig)]))
    return cases


def _unpaired_inputs() -> list[tuple[str, str, str]]:
    inputs: list[tuple[str, str, str]] = []
    for folder in ("crisp-email-reply-parser", "zapier-email-reply-parser", "github-email-reply-parser"):
        for src in sorted((CORPUS / folder).glob("*.txt")):
            inputs.append((folder, src.name, _read(src)))
    talon = CORPUS / "talon"
    for eml in sorted((talon / "standard_replies").glob("*.eml")):
        if not eml.with_name(eml.stem + "_reply_text").is_file() and (text := _eml_text(eml)) is not None:
            inputs.append(("talon/standard_replies", eml.name, text))
    for html in sorted(talon.rglob("*.html")):
        inputs.append(("talon/html", html.name, html_to_text(_read(html))))
    return inputs


def _run(text: str, where: str) -> str:
    try:
        return extract_new_text(text)
    except Exception as e:  # the contract is "never raises": report which fixture broke it
        pytest.fail(f"extract_new_text raised on {where}: {type(e).__name__}: {e}")


def test_reply_fixtures_with_expected_text(record_property):
    """Count how many corpus replies come out as the peer expects (whitespace-normalised)."""
    cases = _paired_cases()
    assert cases, f"the corpus exists at {CORPUS} but no reply fixture with an expected text was found"

    tallies: dict[str, Tally] = {}
    for case in cases:
        got = _norm(_run(case.text, f"{case.source}/{case.name}"))
        want = _norm(case.expected)
        t = tallies.setdefault(case.source, Tally())
        t.total += 1
        if got == want:
            t.exact += 1
        elif got and want.startswith(got):
            t.shorter += 1
            t.misses.append(f"{case.name} (shorter)")
        elif want and got.startswith(want):
            t.longer += 1
            t.misses.append(f"{case.name} (longer)")
        else:
            t.misses.append(case.name)

    total = Tally(
        total=sum(t.total for t in tallies.values()),
        exact=sum(t.exact for t in tallies.values()),
        shorter=sum(t.shorter for t in tallies.values()),
        longer=sum(t.longer for t in tallies.values()),
    )
    width = max(len(s) for s in [*tallies, "total"])
    print(f"\nextract_new_text against expected replies in {CORPUS}")
    print(f"{'source':<{width}}  matched / total   we cut more   we kept more")
    for source, t in [*tallies.items(), ("total", total)]:
        print(f"{source:<{width}}  {t.exact:>7} / {t.total:<5}   {t.shorter:>11}   {t.longer:>12}")
        record_property(f"replies_matched[{source}]", f"{t.exact}/{t.total}")
    for source, t in tallies.items():
        if t.misses:
            print(f"  not matched in {source}: {', '.join(t.misses)}")


def test_inputs_without_expected_text_do_not_raise(record_property):
    """Every other reply input of the corpus goes through extract_new_text without an exception."""
    inputs = _unpaired_inputs()
    assert inputs, f"the corpus exists at {CORPUS} but no reply-parser input was found"
    counts: dict[str, list[int]] = {}
    for source, name, text in inputs:
        result = _run(text, f"{source}/{name}")
        assert isinstance(result, str)
        c = counts.setdefault(source, [0, 0])
        c[0] += 1
        c[1] += bool(result)
    print("\nreply inputs without an expected text (only checked not to raise):")
    for source, (n, non_empty) in counts.items():
        print(f"  {source}: {n} inputs, {non_empty} with a non-empty new text")
        record_property(f"replies_unpaired[{source}]", n)
