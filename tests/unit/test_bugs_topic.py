"""The topic of a case's mails removes only that case's own tag (issue 16, item 9): a case number
the customer typed, mistyped or not, is part of the topic."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailbridge.subjects import SubjectNormalizer, case_tag_pattern, may_carry_tag

NORMALIZER = SubjectNormalizer()
CASE = "C1000002"


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("Frage zu C1000005", "Frage zu C1000005"),  # a mistyped number stays
        ("Frage zu [C1000005]", "Frage zu [C1000005]"),  # in brackets too
        ("[C1000019] Frage", "[C1000019] Frage"),  # another case's tag stays
        ("Frage zu C1000002", "Frage zu C1000002"),  # our number without brackets is the customer's
        ("AW: [C1000002] AW: Frage zu C1000005", "Frage zu C1000005"),
        ("Re: Frage zu C1000005 [C1000002]", "Frage zu C1000005"),
        ("[c-1000002] WG: Frage", "Frage"),
        ("[ C1000002 ] Frage", "Frage"),
        ("AW: [C1000002]", ""),
    ],
)
def test_only_this_cases_tag_and_reply_prefixes_are_removed(subject, expected):
    assert NORMALIZER.topic(subject, case_tag_pattern(CASE)) == expected


def test_the_pattern_matches_nothing_but_the_tag():
    pattern = case_tag_pattern(CASE)
    assert pattern.fullmatch("[C1000002]")
    assert not pattern.search("[C10000021]")
    assert not pattern.search("C1000002")


@given(
    st.lists(
        st.sampled_from(["AW:", "Re:", "WG:", "[C1000002]", "[c-1000002]", "[ C1000002 ]", "[C1000005]", "C1000002"])
        | st.text(alphabet="abcXYZ019 []-:äß", max_size=12),
        max_size=6,
    ),
    st.sampled_from([CASE, "C-1000002", "1000002", "ABC", "T77"]),
)
def test_skipping_the_pattern_when_the_number_is_absent_changes_no_topic(parts, case):
    """``may_carry_tag`` only says where the tag cannot be: the topic is the same with the pattern."""
    subject = " ".join(parts)
    if not may_carry_tag(subject, case):
        assert NORMALIZER.topic(subject, case_tag_pattern(case)) == NORMALIZER.topic(subject, None)
