"""Outlook's Thread-Index (MS-OXOMSG 2.2.1.3) and Thread-Topic: layout, deltas, malformed parents."""

from __future__ import annotations

import base64
import calendar
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailbridge.outbound.threadindex import (
    MAX_CHILD_BLOCKS,
    MAX_TOPIC,
    parse_thread_index,
    thread_index_reply,
    thread_index_root,
    thread_topic,
)

CASE = "C1234566"
CREATED = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
# Pinned: changing it would move every open case into a new conversation in the customers' clients.
NAMESPACE = uuid.UUID("890b3a4c-616f-439d-b577-6e6d98517c06")
# FILETIME of 1970-01-01 UTC: 100-ns intervals since 1601-01-01 (MS-DTYP 2.3.3).
UNIX_EPOCH_FILETIME = 116_444_736_000_000_000


def _filetime(moment: datetime) -> int:
    """FILETIME computed independently of the module: Unix seconds scaled, plus the 1601 offset."""
    return UNIX_EPOCH_FILETIME + calendar.timegm(moment.utctimetuple()) * 10_000_000 + moment.microsecond * 10


def _header_ticks(moment: datetime) -> int:
    """The header block keeps the 40 high bits of the FILETIME; the 24 low bits read as zero."""
    return (_filetime(moment) >> 24) << 24


def _raw(value: str) -> bytes:
    return base64.b64decode(value)


ROOT = thread_index_root(CASE, CREATED)


def test_root_bytes_follow_the_spec():
    """The root is 0x01, the 5 high FILETIME bytes big-endian, then the uuid5 GUID in RFC 4122 order."""
    high = _filetime(CREATED) >> 24
    guid = uuid.uuid5(NAMESPACE, f"{CASE}/{high:010x}")
    expected = b"\x01" + high.to_bytes(5, "big") + guid.bytes
    assert _raw(ROOT) == expected
    assert len(_raw(ROOT)) == 22


def test_root_is_pinned_for_a_known_case_and_time():
    """A fixed case and creation time always give the same 30 characters (no hidden randomness)."""
    assert ROOT == "AQHdeNG2hcaPAaqLVIKtceSu1srbzQ=="
    # 2026 FILETIMEs start 0x01DD: Outlook's familiar "AQH…" prefix.
    assert _raw(ROOT)[:3] == b"\x01\x01\xdd"


def test_root_round_trips_through_parse():
    """Parsing a root gives the creation time truncated to the header's 40 bits, the GUID, no deltas."""
    parsed = parse_thread_index(ROOT)
    assert parsed is not None
    when, guid, deltas = parsed
    assert deltas == []
    assert timedelta(0) <= CREATED - when < timedelta(seconds=1.68)
    assert guid.bytes == _raw(ROOT)[6:]


def test_root_is_deterministic_per_case():
    """Every mail of a case gets the same root; the case number's letter case does not matter."""
    assert thread_index_root(CASE, CREATED) == ROOT
    assert thread_index_root(CASE.lower(), CREATED) == ROOT
    assert thread_index_root(f" {CASE} ", CREATED) == ROOT


def test_different_cases_get_different_guids():
    """Two cases created at the same moment are two conversations."""
    a = parse_thread_index(thread_index_root("C1000009", CREATED))
    b = parse_thread_index(thread_index_root("C1000017", CREATED))
    assert a is not None and b is not None
    assert a[1] != b[1]


def test_same_case_number_created_at_another_time_gets_another_guid():
    """Two installations that both have a case C1000009 do not share a conversation GUID."""
    a = parse_thread_index(thread_index_root("C1000009", CREATED))
    b = parse_thread_index(thread_index_root("C1000009", CREATED + timedelta(days=3)))
    assert a is not None and b is not None
    assert a[1] != b[1]


def test_naive_datetime_counts_as_utc():
    """A naive creation time is read as UTC."""
    assert thread_index_root(CASE, CREATED.replace(tzinfo=None)) == ROOT


def _expected_child(delta_ticks: int, random_byte: int) -> bytes:
    """One response level built by hand from MS-OXOMSG 2.2.1.3."""
    if delta_ticks < 2**49:
        code, stored = 0, (delta_ticks >> 18) & 0x7FFFFFFF
    else:
        code, stored = 1, min(delta_ticks >> 23, 0x7FFFFFFF)
    bits = f"{code:01b}{stored:031b}{random_byte:08b}"
    return int(bits, 2).to_bytes(5, "big")


@pytest.mark.parametrize(
    "after",
    [
        timedelta(seconds=7),
        timedelta(hours=5, minutes=3),
        timedelta(days=12, seconds=1),
        timedelta(days=400),
        timedelta(days=365 * 3),
        timedelta(days=365 * 40),
    ],
    ids=["seconds", "hours", "days", "over-a-year", "years", "decades"],
)
def test_child_block_bytes_follow_the_spec(after):
    """A reply appends 1 DeltaCode bit, 31 delta bits (bits 48..18 or 53..23) and the random byte."""
    now = CREATED + after
    delta = _filetime(now) - _header_ticks(CREATED)
    got = _raw(thread_index_reply(ROOT, now, fallback_root=ROOT, random_byte=0xA5))
    assert got[:22] == _raw(ROOT)
    assert got[22:] == _expected_child(delta, 0xA5)


@pytest.mark.parametrize(
    ("after", "resolution"),
    [
        (timedelta(seconds=7), timedelta(milliseconds=27)),
        (timedelta(hours=5), timedelta(milliseconds=27)),
        (timedelta(days=12), timedelta(milliseconds=27)),
        (timedelta(days=365 * 3), timedelta(milliseconds=839)),
        (timedelta(days=365 * 30), timedelta(milliseconds=839)),
    ],
)
def test_child_delta_round_trips_within_its_resolution(after, resolution):
    """The parsed delta is the time since the header, rounded down to 26.2 ms (< 1.78 y) or 0.84 s."""
    now = CREATED + after
    parsed = parse_thread_index(thread_index_reply(ROOT, now, fallback_root=ROOT))
    assert parsed is not None
    header_time, _, deltas = parsed
    assert len(deltas) == 1
    assert timedelta(0) <= (now - header_time) - deltas[0] < resolution


def test_delta_code_switches_at_two_to_the_49_ticks():
    """Below 2**49 ticks the fine scale is used (DeltaCode 0), from 2**49 on the coarse one."""
    header = datetime(1601, 1, 1, tzinfo=UTC) + timedelta(microseconds=_header_ticks(CREATED) // 10)
    just_below = header + timedelta(microseconds=(2**49) // 10 - 1)
    at_limit = header + timedelta(microseconds=(2**49) // 10 + 1)
    below = _raw(thread_index_reply(ROOT, just_below, fallback_root=ROOT, random_byte=0))
    above = _raw(thread_index_reply(ROOT, at_limit, fallback_root=ROOT, random_byte=0))
    assert below[22] >> 7 == 0
    assert above[22] >> 7 == 1


def test_huge_delta_is_clamped_not_wrapped():
    """A difference beyond 57 years stores the largest delta instead of wrapping around."""
    got = _raw(thread_index_reply(ROOT, CREATED + timedelta(days=365 * 80), fallback_root=ROOT, random_byte=0))
    assert got[22:] == bytes([0xFF, 0xFF, 0xFF, 0xFF, 0x00])


def test_clock_behind_the_header_gives_a_zero_delta():
    """A reply timestamped before the root (clock skew) gets delta zero, not a negative number."""
    got = _raw(thread_index_reply(ROOT, CREATED - timedelta(hours=1), fallback_root=ROOT, random_byte=7))
    assert got[22:] == bytes([0, 0, 0, 0, 7])


def test_random_byte_defaults_to_a_byte():
    """Without a pinned random byte the last byte is still one byte; the rest is deterministic."""
    now = CREATED + timedelta(hours=1)
    a = _raw(thread_index_reply(ROOT, now, fallback_root=ROOT))
    b = _raw(thread_index_reply(ROOT, now, fallback_root=ROOT, random_byte=0))
    assert len(a) == 27
    assert a[:26] == b[:26]


def test_replies_chain_onto_the_parent():
    """A reply to a reply keeps the parent's bytes and adds one more level, delta from the header."""
    first = thread_index_reply(ROOT, CREATED + timedelta(hours=1), fallback_root=ROOT)
    second = thread_index_reply(first, CREATED + timedelta(hours=3), fallback_root=ROOT)
    assert _raw(second)[:27] == _raw(first)
    parsed = parse_thread_index(second)
    assert parsed is not None
    assert [round(d.total_seconds() / 3600) for d in parsed[2]] == [1, 3]


def test_foreign_parent_is_continued_not_replaced():
    """A valid index from the customer's own Outlook is continued, so their conversation holds."""
    theirs = base64.b64encode(b"\x01" + bytes(range(1, 6)) + bytes(range(16)) + b"\x00\x00\x10\x00\x01").decode()
    got = _raw(thread_index_reply(theirs, CREATED, fallback_root=ROOT))
    assert got[:27] == _raw(theirs)
    assert len(got) == 32


def test_folded_parent_is_accepted():
    """Whitespace from header folding inside the parent value is ignored."""
    first = thread_index_reply(ROOT, CREATED + timedelta(hours=1), fallback_root=ROOT)
    folded = first[:20] + "\r\n\t" + first[20:]
    assert _raw(thread_index_reply(folded, CREATED, fallback_root=ROOT))[:27] == _raw(first)


TOO_LONG = base64.b64encode(_raw(ROOT) + b"\x00\x00\x01\x00\x00" * MAX_CHILD_BLOCKS).decode()


@pytest.mark.parametrize(
    "parent",
    [
        None,
        "",
        "   ",
        "not base64 at all!",
        "AQHdeNG2hcaPAaqLVIKtceSu1srbzQ",  # padding cut off
        base64.b64encode(b"\x01" + b"\x00" * 22).decode(),  # 23 bytes: not 22 + 5k
        base64.b64encode(b"\x01" + b"\x00" * 10).decode(),  # shorter than a header block
        base64.b64encode(b"\x02" + b"\x00" * 21).decode(),  # reserved byte is not 0x01
        "ÄÖÜ" * 10,
        "A" * 1_000_000,
        TOO_LONG,
    ],
    ids=[
        "none",
        "empty",
        "blank",
        "garbage",
        "bad-padding",
        "23-bytes",
        "short",
        "reserved",
        "non-ascii",
        "huge",
        "too-many-levels",
    ],
)
def test_malformed_parent_falls_back_to_the_case_root(parent):
    """A missing, broken or over-long parent makes the reply a first-level child of the case root."""
    got = _raw(thread_index_reply(parent, CREATED + timedelta(minutes=5), fallback_root=ROOT))
    assert len(got) == 27
    assert got[:22] == _raw(ROOT)


def test_parent_one_below_the_cap_still_gets_its_level():
    """A parent with 199 levels gets the 200th; the result is at the cap, not beyond."""
    parent = base64.b64encode(_raw(ROOT) + b"\x00\x00\x01\x00\x00" * (MAX_CHILD_BLOCKS - 1)).decode()
    got = _raw(thread_index_reply(parent, CREATED, fallback_root=ROOT))
    assert len(got) == 22 + 5 * MAX_CHILD_BLOCKS
    assert got.startswith(_raw(parent))


def test_malformed_fallback_is_returned_unchanged():
    """Even a broken fallback root does not raise; it comes back as it was."""
    assert thread_index_reply(None, CREATED, fallback_root="broken!") == "broken!"


@given(st.one_of(st.none(), st.text(max_size=200), st.binary(max_size=80).map(lambda b: base64.b64encode(b).decode())))
def test_reply_never_raises_and_always_parses(parent):
    """Whatever arrives as the parent, the result is a well-formed index in the case's or parent's chain."""
    got = thread_index_reply(parent, CREATED, fallback_root=ROOT)
    parsed = parse_thread_index(got)
    assert parsed is not None
    assert len(parsed[2]) >= 1


@pytest.mark.parametrize("value", ["", "%%%", base64.b64encode(b"\x01" * 23).decode(), TOO_LONG + "AAAAAAAA"])
def test_parse_rejects_malformed_values(value):
    """parse_thread_index returns None instead of raising on anything malformed."""
    assert parse_thread_index(value) is None


def test_topic_is_one_line_without_controls():
    """CR, LF, tabs, NUL and Unicode line separators become single spaces; ends are trimmed."""
    assert thread_topic("  Lizenz\r\nserver\tstartet\x00 nicht\u2028mehr  ") == "Lizenz server startet nicht mehr"


def test_topic_keeps_non_ascii_text():
    """Umlauts and other letters pass through (compose RFC 2047-encodes them)."""
    assert thread_topic("Drucker druckt nur Käsekästchen") == "Drucker druckt nur Käsekästchen"


def test_topic_is_capped_at_255_characters():
    """A very long topic is cut to 255 characters without trailing blanks."""
    topic = thread_topic("x" * 254 + " " + "y" * 100)
    assert len(topic) <= MAX_TOPIC
    assert topic == "x" * 254


def test_empty_topic_stays_empty():
    """An empty or blank subject gives an empty topic."""
    assert thread_topic("") == ""
    assert thread_topic(" \r\n ") == ""
