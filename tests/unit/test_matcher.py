"""Case-number candidates in subjects: spellings customers use, and look-alikes that must not match."""

from __future__ import annotations

import pytest

from mailbridge.domain import CaseNumberFormat
from mailbridge.ingest.matcher import case_number_candidates

DEFAULT = CaseNumberFormat()


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("[C1234567] Drucker defekt", ["C1234567"]),
        ("Re: [C1234567] Drucker defekt", ["C1234567"]),
        ("AW: C1234567", ["C1234567"]),
        ("Frage zu c 1234567", ["C1234567"]),
        ("Fall C-1234567 bitte schließen", ["C1234567"]),
        ("c-1234567", ["C1234567"]),
        ("(C1234567)", ["C1234567"]),
        ("Fallnummer:C1234567.", ["C1234567"]),
        ("C1234567", ["C1234567"]),
    ],
)
def test_spellings_customers_use_are_found_and_normalised(subject, expected):
    """Brackets, a space or a hyphen after the prefix and a lower-case prefix all give ``C1234567``."""
    assert case_number_candidates(subject, DEFAULT) == expected


@pytest.mark.parametrize(
    "subject",
    [
        "ABC1234567",  # prefix glued to a preceding word
        "xC1234567",
        "9C1234567",  # preceded by a digit
        "C12345678",  # one digit too many
        "C123456",  # one digit too few
        "Bestellung 1234567",  # digits without the prefix
        "C--1234567",  # only one separator allowed
        "C  1234567",
        "C_1234567",
        "",
    ],
)
def test_look_alikes_are_not_candidates(subject):
    """A prefix inside a word, too many or too few digits, or odd separators are not case numbers."""
    assert case_number_candidates(subject, DEFAULT) == []


def test_none_text_gives_no_candidates():
    """A missing subject is treated as empty."""
    assert case_number_candidates(None, DEFAULT) == []  # type: ignore[arg-type]


def test_several_numbers_in_order_of_appearance():
    """Every case number in the text is returned, left to right, duplicates kept."""
    subject = "Re: [C7654321] zusammenlegen mit c-1234567 und C 1111111 (siehe C7654321)"
    assert case_number_candidates(subject, DEFAULT) == ["C7654321", "C1234567", "C1111111", "C7654321"]


def test_number_followed_by_letters_is_still_a_candidate():
    """Only a following digit rules a match out; the check digit decides validity later."""
    assert case_number_candidates("C1234567ok", DEFAULT) == ["C1234567"]


def test_custom_prefix_and_width():
    """The pattern follows the configured prefix and digit count, with the prefix normalised."""
    fmt = CaseNumberFormat(prefix="SR", digits=5)
    text = "SR12345, sr-54321 und Sr 11111; nicht SR123456, nicht XSR12345, nicht C1234567"
    assert case_number_candidates(text, fmt) == ["SR12345", "SR54321", "SR11111"]


def test_prefix_with_regex_metacharacters_is_literal():
    """A prefix such as ``T.`` matches only itself, not ``TX``."""
    fmt = CaseNumberFormat(prefix="T.", digits=4)
    assert case_number_candidates("T.5724 and TX5724", fmt) == ["T.5724"]


def test_candidates_are_validated_separately():
    """Candidates are shapes only: an invalid check digit is returned here and rejected by the format."""
    valid = DEFAULT.format(123456)
    candidates = case_number_candidates(f"{valid} C1234567", DEFAULT)
    assert candidates == [valid, "C1234567"]
    assert [DEFAULT.is_valid(c) for c in candidates] == [True, False]


def test_candidates_are_ascii():
    """Every candidate is in the stored (ASCII) spelling, so a lookup by string can find it."""
    candidates = case_number_candidates("Re: C\u0661\u0662\u0663\u0664\u0665\u0666\u0666 Frage", DEFAULT)
    assert all(c.isascii() for c in candidates)
