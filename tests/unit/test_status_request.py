"""Which subjects are a status request (``ingest/outgoing.py`` ``StatusByMail.is_request``): only a
status word of the queue, after reply prefixes and gateway tags, any case."""

from __future__ import annotations

import pytest

from mailbridge.ingest.outgoing import StatusByMail
from mailbridge.settings import QueueSettings
from mailbridge.subjects import SubjectNormalizer


def _step() -> StatusByMail:
    return StatusByMail(None, None, SubjectNormalizer(), None, None, None, None)  # type: ignore[arg-type]


def _queue(words=None) -> QueueSettings:
    extra = {} if words is None else {"status_words": words}
    return QueueSettings(name="support", addresses=["support@vendor.example"], account="main", **extra)


@pytest.mark.parametrize(
    "subject",
    [
        "Status",
        "status",
        "STATUS",
        "  Status  ",
        "AW: Status",
        "Re: RE: status",
        "WG: Übersicht",
        "ÜBERSICHT",
        "Overview",
        "Fwd: overview",
    ],
)
def test_a_status_word_alone_is_a_request(subject):
    assert _step().is_request(_queue(), subject)


@pytest.mark.parametrize(
    "subject",
    [
        "",
        "Status?",
        "Status der Lieferung",
        "Statusbericht",
        "Bitte Status",
        "Übersicht über Lizenzen",
        "[C1000002] Status",
        "Status: Drucker",
    ],
)
def test_anything_else_is_not(subject):
    assert not _step().is_request(_queue(), subject)


def test_the_queues_words_decide_and_an_empty_list_turns_it_off():
    assert _step().is_request(_queue(["Anfragen"]), "AW: anfragen")
    assert not _step().is_request(_queue(["Anfragen"]), "Status")
    assert not _step().is_request(_queue([]), "Status")
