"""Signed notification Message-IDs: format, verification, tampering, key rotation, garbage."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailbridge.outbound.tokens import case_for_notification_id, notification_message_id, verified_cases

SECRET = b"k" * 32
OLD = b"o" * 32
CASE = "C1000009"
DOMAIN = "vendor.example"
# RFC 5322 3.2.3 atext; a dot-atom-text is atext runs joined by single dots.
ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
DOT_ATOM = re.compile(rf"{ATEXT}+(?:\.{ATEXT}+)*")


def _mid(case: str = CASE, secret: bytes | list[bytes] = SECRET, nonce: str | None = None) -> str:
    return notification_message_id(case, DOMAIN, secret, nonce=nonce)


def _splice_mac(mid: str, mac: str) -> str:
    local, domain = mid.split("@")
    prefix, case, nonce, _ = local.split(".")
    return f"{prefix}.{case}.{nonce}.{mac}@{domain}"


def test_id_has_the_documented_shape():
    """The id is mbn.<case>.<16 hex nonce>.<26 base32 mac>@domain, a dot-atom on both sides."""
    mid = _mid()
    assert re.fullmatch(r"mbn\.C1000009\.[0-9a-f]{16}\.[a-z2-7]{26}@vendor\.example", mid)
    local, domain = mid.split("@")
    assert DOT_ATOM.fullmatch(local) and DOT_ATOM.fullmatch(domain)
    assert len(mid) <= 80


def test_mac_is_truncated_hmac_sha256_over_label_case_and_nonce():
    """The mac is the first 128 bits of HMAC-SHA256 over the purpose label, case and nonce."""
    mid = _mid(nonce="00112233aabbccdd")
    msg = b"mailbridge/notification-message-id/v1\x00C1000009\x0000112233aabbccdd"
    mac = base64.b32encode(hmac.new(SECRET, msg, hashlib.sha256).digest()[:16]).decode().rstrip("=").lower()
    assert mid == f"mbn.C1000009.00112233aabbccdd.{mac}@vendor.example"


def test_nonces_differ_between_notifications():
    """Two notifications of one case get two different ids."""
    assert _mid() != _mid()


def test_valid_id_verifies_to_its_case():
    """A freshly signed id gives back its case number."""
    assert case_for_notification_id(_mid(), SECRET) == CASE


@pytest.mark.parametrize("wrap", ["<{}>", " <{}> ", "{}", "\t{}\r\n"])
def test_angle_brackets_and_blanks_are_accepted(wrap):
    """The id verifies with or without angle brackets and surrounding whitespace."""
    assert case_for_notification_id(wrap.format(_mid()), SECRET) == CASE


def test_lower_case_case_number_is_normalised():
    """A case number signed or presented in lower case comes back upper-case."""
    mid = _mid(case="c1000009")
    assert ".C1000009." in mid
    assert case_for_notification_id(mid.replace("C1000009", "c1000009"), SECRET) == CASE


def test_upper_case_mac_still_verifies():
    """base32 is case-insensitive: an id whose mac was upper-cased in transit still verifies."""
    mid = _mid()
    local, domain = mid.split("@")
    head, mac = local.rsplit(".", 1)
    assert case_for_notification_id(f"{head}.{mac.upper()}@{domain}", SECRET) == CASE


def test_other_domain_still_verifies():
    """The mac does not cover the domain, so a renamed queue address keeps old notifications valid."""
    mid = _mid().replace("@vendor.example", "@support.vendor.example")
    assert case_for_notification_id(mid, SECRET) == CASE


def test_tampered_mac_is_rejected():
    """Changing one character of the mac makes the id worthless."""
    mid = _mid()
    mac = mid.split("@")[0].rsplit(".", 1)[1]
    flipped = ("b" if mac[0] == "a" else "a") + mac[1:]
    assert case_for_notification_id(_splice_mac(mid, flipped), SECRET) is None


def test_other_case_number_spliced_in_is_rejected():
    """A valid id's nonce and mac do not carry over to another case number."""
    mid = _mid()
    assert case_for_notification_id(mid.replace("C1000009", "C1000017"), SECRET) is None


def test_other_nonce_spliced_in_is_rejected():
    """The nonce is covered by the mac too."""
    mid = _mid(nonce="00112233aabbccdd")
    assert case_for_notification_id(mid.replace("00112233aabbccdd", "00112233aabbccde"), SECRET) is None


def test_other_secret_is_rejected():
    """An id signed with another installation's key does not verify."""
    assert case_for_notification_id(_mid(secret=b"x" * 32), SECRET) is None


def test_rotation_first_signs_all_verify():
    """With [new, old], new ids are signed with new, and ids signed with old still verify."""
    rotated = [SECRET, OLD]
    fresh = _mid(secret=rotated, nonce="aaaaaaaaaaaaaaaa")
    assert fresh == _mid(secret=SECRET, nonce="aaaaaaaaaaaaaaaa")
    assert case_for_notification_id(fresh, rotated) == CASE
    assert case_for_notification_id(_mid(secret=OLD), rotated) == CASE
    assert case_for_notification_id(_mid(secret=OLD), [SECRET]) is None


def test_empty_secrets_never_verify():
    """An empty key (or none at all) proves nothing: nothing verifies."""
    signed_with_empty = _splice_mac(_mid(), "a" * 26)
    assert case_for_notification_id(signed_with_empty, b"") is None
    assert case_for_notification_id(_mid(), []) is None
    assert case_for_notification_id(_mid(), [b""]) is None


def test_signing_without_a_secret_raises():
    """Signing with no usable key is a configuration error, not a silent unsigned id."""
    with pytest.raises(ValueError):
        notification_message_id(CASE, DOMAIN, [])
    with pytest.raises(ValueError):
        notification_message_id(CASE, DOMAIN, b"")


@pytest.mark.parametrize(
    ("case", "domain", "nonce"),
    [("C10.0009", DOMAIN, None), ("C1 0009", DOMAIN, None), (CASE, "vendor example", None), (CASE, DOMAIN, "a.b")],
)
def test_signing_rejects_parts_that_break_the_id(case, domain, nonce):
    """A case number, domain or nonce that would not give a dot-atom Message-ID is refused."""
    with pytest.raises(ValueError):
        notification_message_id(case, domain, SECRET, nonce=nonce)


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "<>",
        "abc@vendor.example",
        "mbn.C1000009@vendor.example",
        "mbn.C1000009.nonce@vendor.example",
        "mbn..0011.aaaaaaaaaaaaaaaaaaaaaaaaaa@vendor.example",
        "mbn.C1000009.0011.aaaaaaaaaaaaaaaaaaaaaaaaaa",
        "mbn.C1000009.0011.aaaaaaaaaaaaaaaaaaaaaaaaaa@",
        "mbn.C1000009.0011.a1a1a1a1a1a1a1a1a1a1a1a1a1@vendor.example",
        "mbn.C1000009.00 11.aaaaaaaaaaaaaaaaaaaaaaaaaa@vendor.example",
        "mbn.Cünf.0011.aaaaaaaaaaaaaaaaaaaaaaaaaa@vendor.example",
        "\x00\r\n",
    ],
)
def test_garbage_is_rejected_without_raising(garbage):
    """Anything that is not one of our ids gives None."""
    assert case_for_notification_id(garbage, SECRET) is None


def test_very_long_input_is_rejected_quickly():
    """A megabyte-long References entry is refused before any pattern or HMAC runs."""
    valid = _mid()
    assert case_for_notification_id("a" * 1_000_000 + valid, SECRET) is None
    assert case_for_notification_id(valid.replace("@", "@" + "x" * 1_000_000), SECRET) is None


@pytest.mark.parametrize("value", [None, 42, b"mbn.C1000009"])
def test_non_string_input_is_rejected(value):
    """A non-string id gives None instead of a TypeError."""
    assert case_for_notification_id(value, SECRET) is None  # type: ignore[arg-type]


@given(st.text(max_size=300))
def test_arbitrary_text_never_raises(text):
    """No text makes verification raise."""
    assert case_for_notification_id(text, [SECRET, OLD]) is None


def test_verified_cases_collects_every_valid_id():
    """verified_cases returns each case with a valid id among ordinary and forged References."""
    ids = [
        "CAFEBABE.1234@mail.gmail.com",
        _mid(),
        _mid(case="C1000017", secret=OLD),
        _mid(case="C1000025", secret=b"x" * 32),
        _mid(),
        "garbage",
    ]
    assert verified_cases(ids, [SECRET, OLD]) == {"C1000009", "C1000017"}
    assert verified_cases([], SECRET) == set()
