"""Case numbers: shape, Damm check digit, error detection, configurable prefix and width."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stdnum import damm

from mailbridge.domain import CaseNumberFormat

DEFAULT = CaseNumberFormat()

# The Damm operation table (H. Michael Damm, 2004), written out independently of python-stdnum so
# the test checks the algorithm, not just that the code calls the library.
_DAMM_TABLE = (
    (0, 3, 1, 7, 5, 9, 8, 6, 4, 2),
    (7, 0, 9, 2, 1, 5, 4, 8, 6, 3),
    (4, 2, 0, 6, 8, 7, 1, 3, 5, 9),
    (1, 7, 5, 0, 9, 8, 3, 4, 2, 6),
    (6, 1, 2, 3, 0, 4, 5, 9, 7, 8),
    (3, 6, 7, 4, 2, 0, 9, 5, 8, 1),
    (5, 8, 6, 9, 7, 2, 0, 1, 3, 4),
    (8, 9, 4, 5, 3, 6, 2, 0, 1, 7),
    (9, 4, 3, 8, 6, 1, 7, 2, 0, 5),
    (2, 5, 8, 1, 4, 3, 6, 7, 9, 0),
)


def _damm_interim(digits: str) -> int:
    interim = 0
    for ch in digits:
        interim = _DAMM_TABLE[interim][int(ch)]
    return interim


# 2,000 serials, fixed seed: every test run checks the same numbers exhaustively.
SAMPLE_SERIALS = random.Random(20261121).sample(range(1, DEFAULT.max_serial + 1), 2000)


def test_default_shape_is_prefix_six_serial_digits_and_check_digit():
    """The default case number is "C", six zero-padded serial digits and one check digit."""
    number = DEFAULT.format(42)
    assert number.startswith("C000042")
    assert len(number) == 8
    assert number[1:].isdigit()


def test_known_damm_example():
    """The check digit of 572 is 4 (the textbook Damm example), and the format uses that algorithm."""
    fmt = CaseNumberFormat(prefix="X", digits=4)
    assert fmt.format(572) == "X5724"
    assert fmt.parse("X5724") == 572


@pytest.mark.parametrize("serial", [1, 9, 10, 123456, 999999, *SAMPLE_SERIALS[:50]])
def test_check_digit_is_damm(serial):
    """The last digit makes the Damm interim digit of the whole number 0 (same as python-stdnum)."""
    number = DEFAULT.format(serial)
    body, check = number[1:-1], number[-1]
    assert check == damm.calc_check_digit(body)
    assert _damm_interim(number[1:]) == 0


@given(st.integers(min_value=1, max_value=DEFAULT.max_serial))
def test_format_parse_round_trip(serial):
    """Parsing a formatted number gives back its serial."""
    assert DEFAULT.parse(DEFAULT.format(serial)) == serial
    assert DEFAULT.is_valid(DEFAULT.format(serial))


def test_every_single_digit_substitution_is_rejected():
    """Replacing any one digit (serial or check digit) by any other digit never yields a valid number."""
    checked = 0
    for serial in SAMPLE_SERIALS:
        digits = DEFAULT.format(serial)[1:]
        for pos, original in enumerate(digits):
            for replacement in "0123456789":
                if replacement == original:
                    continue
                mutated = "C" + digits[:pos] + replacement + digits[pos + 1 :]
                assert DEFAULT.parse(mutated) is None, (serial, mutated)
                checked += 1
    assert checked == len(SAMPLE_SERIALS) * 7 * 9


def test_every_adjacent_transposition_is_rejected():
    """Swapping any two neighbouring, different digits (check digit included) is detected."""
    checked = 0
    for serial in SAMPLE_SERIALS:
        digits = DEFAULT.format(serial)[1:]
        for pos in range(len(digits) - 1):
            a, b = digits[pos], digits[pos + 1]
            if a == b:
                continue
            mutated = "C" + digits[:pos] + b + a + digits[pos + 2 :]
            assert DEFAULT.parse(mutated) is None, (serial, mutated)
            checked += 1
    assert checked > len(SAMPLE_SERIALS) * 4  # most neighbours differ; the loop really ran


@settings(max_examples=300)
@given(st.integers(min_value=1, max_value=DEFAULT.max_serial), st.data())
def test_substitution_and_transposition_property(serial, data):
    """Hypothesis-chosen serials: a random single substitution or adjacent swap is never valid."""
    digits = DEFAULT.format(serial)[1:]
    pos = data.draw(st.integers(min_value=0, max_value=len(digits) - 1))
    other = data.draw(st.sampled_from([d for d in "0123456789" if d != digits[pos]]))
    assert DEFAULT.parse("C" + digits[:pos] + other + digits[pos + 1 :]) is None
    if pos < len(digits) - 1 and digits[pos] != digits[pos + 1]:
        swapped = digits[:pos] + digits[pos + 1] + digits[pos] + digits[pos + 2 :]
        assert DEFAULT.parse("C" + swapped) is None


@pytest.mark.parametrize("spelling", ["C1234566", "c1234566", "  C1234566 ", "c1234566\n"])
def test_prefix_is_case_insensitive_and_surrounding_space_ignored(spelling):
    """Upper or lower case prefix and surrounding whitespace are accepted."""
    assert DEFAULT.format(123456) == "C1234566"
    assert DEFAULT.parse(spelling) == 123456


@pytest.mark.parametrize(
    "text",
    [
        "",
        "C",
        "1234566",  # no prefix
        "C123456",  # one digit short
        "C12345660",  # one digit too many
        "C01234566",
        "CC1234566",
        "D1234566",  # other prefix
        "C 1234566",  # the token must already be isolated
        "C-1234566",
        "C123456a",
        "C1234567",  # wrong check digit
    ],
)
def test_malformed_or_wrong_length_is_rejected(text):
    """Anything but prefix + exactly ``digits`` digits with a valid check digit is not a case number."""
    assert DEFAULT.parse(text) is None
    assert not DEFAULT.is_valid(text)


@pytest.mark.parametrize(
    ("prefix", "digits"),
    [("SR-", 9), ("TKT", 5), ("T.", 4), ("", 8), ("Fall", 2)],
)
def test_configurable_prefix_and_width(prefix, digits):
    """Prefix and digit count are configurable; the serial is zero-padded to ``digits - 1``."""
    fmt = CaseNumberFormat(prefix=prefix, digits=digits)
    assert fmt.max_serial == 10 ** (digits - 1) - 1
    for serial in (1, fmt.max_serial // 2 or 1, fmt.max_serial):
        number = fmt.format(serial)
        assert number.startswith(prefix)
        assert len(number) == len(prefix) + digits
        assert fmt.parse(number) == serial
        assert fmt.parse(number.lower()) == serial
        assert fmt.parse(number[:-1]) is None  # too short for this width
        assert fmt.parse(number + "0") is None  # too long for this width
        assert DEFAULT.parse(number) is None or (prefix, digits) == ("C", 7)


def test_prefix_is_literal_not_a_pattern():
    """Regex metacharacters in the prefix match only themselves ("T." does not accept "TX")."""
    fmt = CaseNumberFormat(prefix="T.", digits=4)
    number = fmt.format(572)
    assert number == "T.5724"
    assert fmt.parse("TX5724") is None


@pytest.mark.parametrize("serial", [0, -1, 1_000_000, 10**9])
def test_serial_out_of_range_raises(serial):
    """Serial 0, negatives and serials wider than the format raise ValueError instead of wrapping."""
    with pytest.raises(ValueError, match="does not fit"):
        DEFAULT.format(serial)


def test_largest_serial_still_fits():
    """The largest serial of the width formats; one more overflows."""
    assert DEFAULT.format(999_999).startswith("C999999")
    small = CaseNumberFormat(prefix="K", digits=3)
    assert small.parse(small.format(99)) == 99
    with pytest.raises(ValueError):
        small.format(100)


@pytest.mark.parametrize(
    ("fmt", "text"),
    [
        (DEFAULT, "C\u0661\u0662\u0663\u0664\u0665\u0666\u0666"),  # Arabic-Indic digits of C1234566
        (DEFAULT, "C\uff11\uff12\uff13\uff14\uff15\uff16\uff16"),  # full-width digits of C1234566
        (CaseNumberFormat(prefix="K"), "\u212a1234566"),  # KELVIN SIGN instead of K
    ],
)
def test_only_ascii_spellings_are_case_numbers(fmt, text):
    """Only ASCII prefix letters and ASCII digits form a case number (the canonical stored form)."""
    assert fmt.parse(text) is None
