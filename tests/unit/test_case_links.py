"""The signed links to a case that acknowledgements and relayed answers carry (``outbound/links.py``)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest

from mailbridge.outbound.links import AttachmentLinks, CaseLinkError, CaseLinkExpired, CaseLinkInvalid, CaseLinks

KEY = "k" * 40
T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _links(clock, key=KEY, days=30.0, base="https://support.example/desk"):
    return CaseLinks(key, base, days, clock)


def test_a_case_link_names_the_address_and_the_case():
    links = _links(Clock(T0))
    url = links.url("Kunde@Acme.example", "CASE-2026-0042")
    assert url.startswith("https://support.example/desk/c/")
    token = url.removeprefix("https://support.example/desk/c/")
    assert "/" not in token and "?" not in token
    assert links.load(token) == ("kunde@acme.example", "CASE-2026-0042")


def test_a_case_link_expires_after_case_link_days_and_says_so():
    clock = Clock(T0)
    links = _links(clock, days=30)
    token = links.token("kunde@acme.example", "CASE-7")
    clock.now = T0 + timedelta(days=30) - timedelta(seconds=1)
    assert links.load(token) == ("kunde@acme.example", "CASE-7")
    clock.now = T0 + timedelta(days=30, seconds=1)
    with pytest.raises(CaseLinkExpired) as caught:
        links.load(token)
    # Expired, but ours: the address it was issued to is known (the web side offers it a fresh sign-in).
    assert (caught.value.address, caught.value.case_number) == ("kunde@acme.example", "CASE-7")
    assert isinstance(caught.value, CaseLinkError)
    # Issued in the future (a forged or far-off clock): not accepted either.
    clock.now = T0 - timedelta(hours=1)
    with pytest.raises(CaseLinkExpired):
        links.load(token)


@pytest.mark.parametrize("position", [0, 10, -1, -5])
def test_a_changed_character_anywhere_is_invalid_not_expired(position):
    links = _links(Clock(T0))
    token = links.token("kunde@acme.example", "CASE-7")
    ch = token[position]
    bad = token[:position] + ("A" if ch != "A" else "B") + (token[position + 1 :] if position != -1 else "")
    with pytest.raises(CaseLinkInvalid):
        links.load(bad)


@pytest.mark.parametrize("token", ["", "x", "a.b.c", "." * 3000, None])
def test_garbage_is_invalid(token):
    with pytest.raises(CaseLinkInvalid):
        _links(Clock(T0)).load(token)


def test_another_key_or_another_purpose_is_invalid():
    clock = Clock(T0)
    other = _links(clock, key="o" * 40).token("kunde@acme.example", "CASE-7")
    with pytest.raises(CaseLinkInvalid):
        _links(clock).load(other)
    # An attachment download token signed with the same key is not a case link.
    download = AttachmentLinks(KEY, "https://support.example/", 30, clock).token(7, "kunde@acme.example")
    with pytest.raises(CaseLinkInvalid):
        _links(clock).load(download)
    # A payload of the wrong shape made with our key is refused.
    links = _links(clock)
    wrong = links._fernet.encrypt_at_time(b'{"a": 1, "c": "CASE-7"}', int(T0.timestamp())).decode()
    with pytest.raises(CaseLinkInvalid):
        links.load(wrong)


def test_the_token_does_not_show_whose_it_is():
    """Stored and forwarded mails carry the link: its token must not reveal the address (an erasure
    removes the address from the text; it cannot find it inside a token)."""
    links = _links(Clock(T0))
    token = links.token("kunde@acme.example", "CASE-7")
    decoded = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    assert b"kunde" not in decoded and b"acme" not in decoded and b"CASE-7" not in decoded
    assert links.load(token) == ("kunde@acme.example", "CASE-7")
