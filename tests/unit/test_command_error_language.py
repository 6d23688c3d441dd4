"""The reasons an agent is given are said in the error mail's language (issue 16, item 9): every
kind has an English and a German text with the same values; a Reason is its English text everywhere
else (events, logs, equality); plain English notices of other steps are recognised."""

from __future__ import annotations

import json
import re

import pytest

from mailbridge.ingest.commands import parse_commands
from mailbridge.outbound.messages import REASONS, Reason, say


@pytest.mark.parametrize("kind", sorted(REASONS))
def test_every_reason_has_english_and_german_with_the_same_values(kind):
    texts = REASONS[kind]
    assert set(texts) == {"en", "de"}
    assert set(re.findall(r"\{(\w+)\}", texts["en"])) == set(re.findall(r"\{(\w+)\}", texts["de"]))


def test_a_parse_error_is_english_text_and_says_itself_in_german():
    block = parse_commands("#slove\nText", severity_levels=["1"], is_agent=lambda a: False)
    (error,) = block.errors
    assert error == 'line "#slove": unknown command #slove, did you mean #solve? (known: ' + error.split("known: ")[1]
    assert say(error, "de").startswith('Zeile "#slove": unbekannter Befehl #slove, meinten Sie #solve?')
    assert say(error, "fr") == error  # a language without texts: English
    assert json.loads(json.dumps([error])) == [str(error)]


def test_a_plain_english_notice_is_recognised_and_other_text_is_kept():
    notice = str(Reason("relay_cap", case="C1000002", limit=3))
    assert say(notice, "de").startswith("an den Kunden wurde nichts gesendet: Fall C1000002 hat")
    assert say("something else entirely", "de") == "something else entirely"
