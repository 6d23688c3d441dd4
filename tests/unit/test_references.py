"""Subject prefixes and gateway tags, case-number candidates and their near misses (ingest/references.py)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stdnum import damm

from mailbridge.domain import CaseNumberFormat
from mailbridge.ingest.references import (
    DEFAULT_REPLY_PREFIXES,
    Candidate,
    SubjectNormalizer,
    case_number_candidates,
    near_misses,
)
from tests.support import python_steps

DEFAULT = CaseNumberFormat()
NORMALIZER = SubjectNormalizer()
VALID = DEFAULT.format(100000)  # C1000002
# The tag pattern the pipeline passes to ``topic`` (steps.py, messages.py).
TAG_RE = re.compile(r"\[?\s*C[\s-]?\d{7}\s*\]?", re.IGNORECASE | re.ASCII)
# Work bound of the linear code: Python steps (calls, lines, returns, as sys.settrace counts them)
# per input character. The code needs at most ~10 on the pathological inputs below; a quadratic
# loop would need tens of thousands per character on 100 kB. A count, not a clock: it does not
# depend on the machine or its load. (The regex engine's own work is not counted: it runs in C.)
STEPS_PER_CHAR = 20
STEPS_BASE = 1_000


def _bounded(fn, text: str, *args):
    """Call ``fn(text, *args)``; fail when it takes more than STEPS_PER_CHAR Python steps per character."""
    result, steps = python_steps(fn, text, *args)
    assert steps <= STEPS_PER_CHAR * len(text) + STEPS_BASE, f"{steps} steps for {len(text)} characters"
    return result


def _one_typo_apart(a: str, b: str) -> bool:
    """Whether digit strings ``a`` and ``b`` differ by one substitution or one adjacent swap."""
    diff = [i for i in range(len(a)) if a[i] != b[i]]
    if len(diff) == 1:
        return True
    return len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]]


# -- strip_prefixes: what is removed --------------------------------------------------------------


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        # English
        ("Re: Printer broken", "Printer broken"),
        ("RE: FW: Fwd: Printer broken", "Printer broken"),
        ("re: fwd: printer", "printer"),
        # German
        ("AW: WG: AW: Drucker defekt", "Drucker defekt"),
        ("Antwort: Drucker defekt", "Drucker defekt"),
        ("WG: Re: AW: Drucker", "Drucker"),
        # Dutch
        ("Antw: Doorst: Printer kapot", "Printer kapot"),
        ("Antwoord: Printer kapot", "Printer kapot"),
        # Scandinavian and Finnish
        ("SV: VS: Møde i morgen", "Møde i morgen"),
        ("VB: SV: Skrivaren", "Skrivaren"),
        ("VL: VS: Tulostin", "Tulostin"),
        ("FS: SV: Prentari", "Prentari"),
        # Italian, French, Spanish, Portuguese
        ("R: I: RIF: Stampante guasta", "Stampante guasta"),
        ("TR: RE: Réf: Imprimante", "Imprimante"),
        ("RE : TR : Imprimante", "Imprimante"),
        ("RV: RE: Impresora", "Impresora"),
        ("RES: ENC: Impressora", "Impressora"),
        # Polish, Czech, Turkish, Hungarian, Lithuanian
        ("Odp: PD: Odp: Drukarka", "Drukarka"),
        ("YNT: İLT: Yazıcı bozuk", "Yazıcı bozuk"),
        ("ynt: ilt: ILT: Yazıcı", "Yazıcı"),
        ("VÁ: Továbbítás: Nyomtató", "Nyomtató"),
        ("ATS: Spausdintuvas", "Spausdintuvas"),
        # Greek, Russian, Hebrew, Arabic
        ("ΑΠ: ΠΡΘ: Εκτυπωτής", "Εκτυπωτής"),
        ("απ: σχετ: Εκτυπωτής", "Εκτυπωτής"),
        ("Отв: Пересл: Ответ: Принтер", "Принтер"),
        ("השב: הועבר: מדפסת", "מדפסת"),
        ("رد: إعادة توجيه: طابعة", "طابعة"),
        # Chinese and Japanese, ASCII and full-width colons
        ("回复：转发：打印机坏了", "打印机坏了"),
        ("答复: 轉寄: 回覆：印表機", "印表機"),
        ("返信：転送: プリンター", "プリンター"),
        ("ＲＥ：ＦＷ：打印机", "打印机"),
        # Counters, colons and spacing
        ("Re[2]: Re(3): RE^2: Drucker", "Drucker"),
        ("AW [2]: WG ( 3 ) : Drucker", "Drucker"),
        ("Re:Re:Fwd:Drucker", "Drucker"),
        ("Re：Drucker", "Drucker"),
        ("  Re:\tAW:\r\n WG:\u00a0Drucker   defekt  ", "Drucker defekt"),
    ],
)
def test_reply_and_forward_prefixes_are_stripped(subject, expected):
    """Stacks of reply/forward prefixes in many languages, with counters and either colon, are removed."""
    assert NORMALIZER.strip_prefixes(subject) == expected


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("[EXT] Re: Drucker", "Drucker"),
        ("AW: [EXT] WG: Re: foo", "foo"),
        ("[Extern] AW: Drucker", "Drucker"),
        ("[EXTERNAL] FW: Printer", "Printer"),
        ("[SPAM] [EXT] Gewinn", "Gewinn"),
        ("[Newsletter] Neuigkeiten", "Neuigkeiten"),
        ("[ext] re: printer", "printer"),
        ("[*** SPAM ***] Re: Gewinn", "Gewinn"),
        ("[Externe E-Mail] AW: Drucker", "Drucker"),
        ("[EXTERNAL SENDER] RE: Invoice", "Invoice"),
    ],
)
def test_gateway_tags_in_the_leading_run_are_stripped(subject, expected):
    """Known gateway tags in square brackets, anywhere among the leading prefixes, are removed."""
    assert NORMALIZER.strip_prefixes(subject) == expected


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("[SPAM]", "[SPAM]"),  # nothing follows: the tag is all there is
        ("Re: [EXT]", "[EXT]"),
        ("Drucker [EXT]", "Drucker [EXT]"),  # not in the leading run
        ("Re: Drucker [EXT] kaputt", "Drucker [EXT] kaputt"),
        ("[C1000002] Drucker", "[C1000002] Drucker"),  # case tags are topic()'s business
        ("AW: [#4711] Drucker", "[#4711] Drucker"),  # another system's ticket id
        ("[python-dev] Re: Release", "[python-dev] Re: Release"),  # a list name is not a gateway tag
        ("[] Drucker", "[] Drucker"),
    ],
)
def test_other_bracketed_text_is_kept(subject, expected):
    """A bracket that is not a known gateway tag, or with nothing after it, ends the leading run."""
    assert NORMALIZER.strip_prefixes(subject) == expected


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("[Fwd: Drucker defekt]", "Drucker defekt"),
        ("Re: [Fwd: AW: Drucker]", "Drucker"),
        ("[Fwd: [Fwd: Drucker] ]", "Drucker"),
        ("[Fwd: a] b", "[Fwd: a] b"),  # the bracket does not wrap the whole rest
        ("[Fwd: Drucker", "[Fwd: Drucker"),  # unbalanced
        ("[Drucker defekt]", "[Drucker defekt]"),  # no prefix inside
    ],
)
def test_a_bracket_wrapping_a_forwarded_subject_is_unwrapped(subject, expected):
    """``[Fwd: subject]`` (old Mozilla style) is unwrapped only when the bracket wraps the whole rest."""
    assert NORMALIZER.strip_prefixes(subject) == expected


# -- strip_prefixes: what stays --------------------------------------------------------------------


@pytest.mark.parametrize(
    "subject",
    [
        "Reparatur: Drucker",
        "Rechnung",
        "Rechnung: 4711",
        "Antwortzeit: zu lang",
        "Antworten bitte bis Freitag",
        "R2D2: Ersatzteile",
        "Re2: Drucker",
        "Resultat: gut",
        "Information: Wartung",
        "Fwd Drucker",
        "Re - Drucker",
        "Ire: Drucker",
        "Drucker: Re: kaputt",
        "Meeting 10:00 Re: Drucker",
    ],
)
def test_words_that_only_look_like_prefixes_stay(subject):
    """Only a known prefix directly followed by a colon counts; words that begin like one stay."""
    assert NORMALIZER.strip_prefixes(subject) == subject


def test_subject_of_prefixes_only_becomes_empty():
    """A subject of nothing but prefixes normalises to an empty string."""
    assert NORMALIZER.strip_prefixes("Re: AW: ") == ""
    assert NORMALIZER.strip_prefixes("Re:") == ""


@pytest.mark.parametrize("subject", ["", "   ", None, 42])
def test_empty_or_missing_subject_is_empty(subject):
    """Empty, blank or non-string subjects give an empty string instead of an error."""
    assert NORMALIZER.strip_prefixes(subject) == ""
    assert NORMALIZER.topic(subject, TAG_RE) == ""


def test_whitespace_is_collapsed_inside_the_subject():
    """Tabs, folded lines and runs of spaces in the rest of the subject become single spaces."""
    assert NORMALIZER.strip_prefixes("Drucker\t  defekt\r\n im   Büro") == "Drucker defekt im Büro"


def test_custom_prefixes_replace_the_default():
    """A configured list is used instead of the default; colons in the configuration are accepted."""
    custom = SubjectNormalizer(["AW:", "wg"])
    assert custom.strip_prefixes("AW: WG: Drucker") == "Drucker"
    assert custom.strip_prefixes("Re: Drucker") == "Re: Drucker"


def test_custom_gateway_tags_replace_the_default():
    """Configured gateway tags are used instead of the default ones, with or without brackets."""
    custom = SubjectNormalizer(tags=["[Intern]"])
    assert custom.strip_prefixes("[INTERN] Re: Drucker") == "Drucker"
    assert custom.strip_prefixes("[EXT] Re: Drucker") == "[EXT] Re: Drucker"


@pytest.mark.parametrize("prefix", ["", "Re2", "[Re]", "one two three", "x" * 31])
def test_a_prefix_that_can_never_match_is_a_configuration_error(prefix):
    """A prefix that is empty, has digits or brackets, or more than two words is rejected up front."""
    with pytest.raises(ValueError, match="reply prefix"):
        SubjectNormalizer([prefix])


def test_default_prefixes_are_all_usable_and_unique():
    """The default list builds a normalizer and names no prefix twice."""
    SubjectNormalizer(DEFAULT_REPLY_PREFIXES)
    folded = [p.casefold() for p in DEFAULT_REPLY_PREFIXES]
    assert len(folded) == len(set(folded))


@pytest.mark.parametrize(
    "subject",
    [
        "Re: " * 25_000 + "Drucker",
        "Re:" * 33_000,
        "Re " * 33_000 + ": x",
        "AW: [EXT] " * 10_000 + "Drucker",
        "[Fwd: " * 16_000 + "Drucker" + "]" * 16_000,
        "[" * 100_000,
        "]" * 100_000,
        "Re" * 50_000 + ": x",
        "Re[1]" * 20_000,
        "R" * 100_000 + ":",
        "[EXT]" * 20_000,
    ],
)
def test_pathological_subjects_are_handled_in_linear_time(subject):
    """100 kB of repeated prefixes, tags, brackets or near-prefixes finish quickly and do not raise."""
    _bounded(NORMALIZER.strip_prefixes, subject)
    _bounded(NORMALIZER.topic, subject, TAG_RE)


def test_a_huge_stack_of_prefixes_is_fully_stripped():
    """Even 25,000 stacked prefixes are all removed."""
    assert NORMALIZER.strip_prefixes("Re: " * 25_000 + "Drucker") == "Drucker"


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("Re:AWG[]()^2 ：\t回复EXTxı̇İ")) | st.characters(), max_size=60))
def test_strip_prefixes_never_raises_and_is_idempotent(subject):
    """Any string normalises without error, and normalising the result again changes nothing."""
    once = NORMALIZER.strip_prefixes(subject)
    assert NORMALIZER.strip_prefixes(once) == once


# -- topic -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("AW: [C1000002] AW: Drucker", "Drucker"),
        ("[C1000002] Re: Drucker", "Drucker"),
        ("Re: Drucker [C1000002]", "Drucker"),
        ("Re: Drucker [C1000002] [C1000019]", "Drucker"),
        ("[EXT] [C1000002] Re: Drucker", "Drucker"),
        ("[C1000002] [EXT] WG: Drucker", "Drucker"),
        ("AW: [c-1000002] Drucker", "Drucker"),
        ("Drucker [C1000002] kaputt", "Drucker [C1000002] kaputt"),  # a tag in the middle stays
        ("AW: [C1000002]", ""),
    ],
)
def test_topic_removes_case_tags_and_the_prefixes_behind_them(subject, expected):
    """Leading and trailing case tags go, and prefixes that stood behind a leading tag go as well."""
    assert NORMALIZER.topic(subject, TAG_RE) == expected


def test_topic_without_pattern_is_strip_prefixes():
    """Without a case-tag pattern the topic is the subject without its prefixes, tags kept."""
    assert NORMALIZER.topic("AW: [C1000002] AW: Drucker") == "[C1000002] AW: Drucker"


def test_topic_with_many_tags_is_linear():
    """Thousands of alternating case tags and prefixes are removed quickly."""
    subject = "[C1000002] Re: " * 10_000 + "Drucker" + " [C1000002]" * 10_000
    assert _bounded(NORMALIZER.topic, subject, TAG_RE) == "Drucker"


# -- case_number_candidates ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "written"),
    [
        ("[C1000009]", "C1000009"),
        ("C1000009", "C1000009"),
        ("Case C1000009", "C1000009"),
        ("Case #C1000009", "C1000009"),
        ("Fall-Nr. C1000009", "C1000009"),
        ("Fall-Nr.C1000009", "C1000009"),
        ("Fallnummer: C1000009", "C1000009"),
        ("Ticket C1000009", "C1000009"),
        ("ticket c1000009 please", "c1000009"),
        ("AW: WG: Case C-1000009", "C-1000009"),
        ("C 1000009", "C 1000009"),
        ("C\u20131000009", "C\u20131000009"),
        ("C\u00a01000009", "C\u00a01000009"),
        ("(C1000009).", "C1000009"),
        ("关于C1000009的问题", "C1000009"),
        ("see https://x.example/ and C1000009", "C1000009"),
        ("mail a@b.example about C1000009", "C1000009"),
    ],
)
def test_every_shape_customers_write_is_a_candidate(text, written):
    """Brackets, keywords, lower case, one separator and CJK running text all yield ``C1000009``."""
    [cand] = case_number_candidates(text, DEFAULT)
    assert cand.written == written
    assert cand.number == "C1000009"
    assert text[cand.start : cand.start + len(cand.written)] == cand.written


@pytest.mark.parametrize(
    "text",
    [
        "ABC1000009",  # longer run before
        "9C1000009",
        "C10000091",  # digit after
        "C1000009X",  # letter after
        "C1000009_draft",
        "C_1000009",
        "C--1000009",  # two separators
        "C  1000009",
        "C100000",  # too short
        "C\u0661\u0662\u0663\u0664\u0665\u0666\u0666",  # Arabic-Indic digits
        "C１０００００９",  # full-width digits
        "C1000009\u0661",
        "https://helpdesk.example/cases/C1000009",
        "http://x.example/view?id=C1000009&x=1",
        "(https://x.example/C1000009)",
        "www.helpdesk.example/C1000009",
        "helpdesk.example/C1000009",
        "?case=C1000009",
        "<C1000009.1700000000@helpdesk.example>",
        "Message-ID: <20240101.c-1000009.abc@helpdesk.example>",
        "support+C1000009@helpdesk.example",
        "mailto:c1000009@helpdesk.example",
        "C1000009@helpdesk.example",
        "",
    ],
)
def test_look_alikes_urls_and_addresses_are_not_candidates(text):
    """Longer runs, wrong digits, separators, URLs, Message-IDs and addresses give no candidate."""
    assert case_number_candidates(text, DEFAULT) == []


def test_missing_text_gives_no_candidates():
    """A missing subject or body is treated as empty."""
    assert case_number_candidates(None, DEFAULT) == []  # type: ignore[arg-type]


def test_candidates_carry_validity_and_position():
    """Each candidate says where it was written and whether its check digit is right."""
    text = f"Re: [{VALID}] und c-1000009"
    assert case_number_candidates(text, DEFAULT) == [
        Candidate(written=VALID, number=VALID, valid=True, start=5),
        Candidate(written="c-1000009", number="C1000009", valid=False, start=19),
    ]


def test_duplicates_are_dropped_keeping_the_first_position():
    """A number written several times, in any spelling, is returned once, where it first appears."""
    cands = case_number_candidates(f"C1000009, {VALID}, c-1000009 and C 1000009", DEFAULT)
    assert [(c.number, c.start) for c in cands] == [("C1000009", 0), (VALID, 10)]


def test_a_masked_address_does_not_hide_the_numbers_around_it():
    """Only the number inside an address is skipped; the ones before and after it count."""
    text = f"{VALID} <reply+C1000009@helpdesk.example> C1000017"
    assert [c.number for c in case_number_candidates(text, DEFAULT)] == [VALID, "C1000017"]


def test_custom_prefix_and_width():
    """The configured prefix (several letters) and digit count are followed, the prefix normalised."""
    fmt = CaseNumberFormat(prefix="SR", digits=5)
    text = "SR12345, sr-54321 und Sr 11111; nicht SR123456, nicht XSR12345, nicht C1234567"
    assert [c.number for c in case_number_candidates(text, fmt)] == ["SR12345", "SR54321", "SR11111"]


def test_kelvin_sign_is_not_a_k():
    """Case-insensitivity is ASCII only: the Kelvin sign does not pass for a ``K`` prefix."""
    fmt = CaseNumberFormat(prefix="K")
    assert case_number_candidates("\u212a1000002", fmt) == []
    assert [c.number for c in case_number_candidates("k1000002", fmt)] == ["K1000002"]


@pytest.mark.parametrize(
    "text",
    [
        "C1000009 " * 12_000,
        "C1000009" * 12_000,
        "a@" * 50_000,
        "x" * 100_000 + "@",
        "http://" * 15_000,
        "a://" * 25_000,
        "www." * 25_000,
        "support+C1000009@helpdesk.example " * 3_000,
    ],
)
def test_pathological_texts_are_handled_in_linear_time(text):
    """100 kB of numbers, addresses or URL fragments finish quickly."""
    _bounded(case_number_candidates, text, DEFAULT)


# -- near_misses -----------------------------------------------------------------------------------


def test_a_valid_number_has_no_near_misses():
    """Damm catches every single substitution and adjacent swap, so no valid number is one typo away."""
    assert damm.is_valid(VALID[1:])
    assert near_misses(VALID, DEFAULT) == []


def test_near_misses_of_an_invalid_number_are_valid_and_one_typo_away():
    """Every near miss has a valid check digit, differs from the input by one typo, and the list is sorted."""
    typo = "C1000009"
    assert not damm.is_valid(typo[1:])
    result = near_misses(typo, DEFAULT)
    assert result
    assert result == sorted(set(result))
    for number in result:
        assert number.startswith("C") and len(number) == 8
        assert damm.is_valid(number[1:])
        assert number != typo
        assert _one_typo_apart(typo[1:], number[1:])


def test_every_single_typo_of_a_valid_number_suggests_it_back():
    """Whatever one digit was mistyped or which adjacent pair was swapped, the original is a near miss."""
    for original in (VALID, DEFAULT.format(123456), DEFAULT.format(908172)):
        digits = original[1:]
        typos = {digits[:i] + d + digits[i + 1 :] for i in range(len(digits)) for d in "0123456789"}
        typos |= {digits[:i] + digits[i + 1] + digits[i] + digits[i + 2 :] for i in range(len(digits) - 1)}
        typos.discard(digits)
        assert len(typos) >= 7 * 9
        for typo in typos:
            assert not damm.is_valid(typo)
            assert original in near_misses(f"C{typo}", DEFAULT)


def test_near_misses_are_complete_for_a_small_format():
    """For four-digit numbers the result equals a brute-force search over all 10,000 numbers."""
    fmt = CaseNumberFormat(prefix="T", digits=4)
    every_valid = [f"{n:04d}" for n in range(10_000) if damm.is_valid(f"{n:04d}")]
    for typo in ("1234", "0000", "9899", "1100"):
        expected = sorted(f"T{v}" for v in every_valid if v != typo and _one_typo_apart(typo, v))
        assert near_misses(f"T{typo}", fmt) == expected


def test_near_misses_accept_candidate_spellings():
    """A lower-case prefix or a separator gives the same near misses as the normalised number."""
    assert near_misses("c-1000009", DEFAULT) == near_misses("C1000009", DEFAULT)


@pytest.mark.parametrize("number", ["", "C123", "C10000091", "X1000009", "1000009", None])
def test_malformed_numbers_have_no_near_misses(number):
    """Input that is not shaped like a case number gives an empty list."""
    assert near_misses(number, DEFAULT) == []
