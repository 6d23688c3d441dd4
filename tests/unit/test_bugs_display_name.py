"""Display names whose encoded words decode to a line break (issue 16, item 9): mail-parser leaves
such a word undecoded; the parser decodes it and makes the name one line."""

from __future__ import annotations

import base64

import pytest

from mailbridge.domain import Address
from mailbridge.ingest.parser import display_name, parse_mail


def _mail(from_header: str) -> bytes:
    return (
        f"From: {from_header}\r\nTo: support@vendor.example\r\nSubject: x\r\n"
        "Message-ID: <a@kunde.example>\r\n\r\nbody\r\n"
    ).encode()


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    ("from_header", "name"),
    [
        ("=?utf-8?b?" + _b64("Eve\r\nExample") + "?= <eve@example.com>", "Eve Example"),
        ("=?UTF-8?B?" + _b64("Eve\nExample") + "?= <eve@example.com>", "Eve Example"),
        ("=?utf-8?q?Eve=0D=0AExample?= <eve@example.com>", "Eve Example"),
        ("=?utf-8?Q?Eve_M=C3=BC=0D=0Aller?= <eve@example.com>", "Eve Mü ller"),  # break inside a name
        ("=?utf-8?q?Eve=0D=0A?= =?utf-8?q?Example?= <eve@example.com>", "Eve Example"),  # adjacent words
        ("=?utf-8?q?=0D=0AEve=0D=0A=0D=0A?= <eve@example.com>", "Eve"),  # trimmed
        ("=?utf-8?q?Eve=09Ex=00am=1Bple?= <eve@example.com>", "Eve Ex am ple"),  # other controls
        ('"=?utf-8?b?' + _b64("Eve\r\nExample") + '?=" <eve@example.com>', "Eve Example"),  # quoted
        ("=?iso-8859-1?q?J=FCrgen=0AM=FCller?= <eve@example.com>", "Jürgen Müller"),
        ("=?utf-8?q?Eve=0D=0ABcc:_x@evil.example?= <eve@example.com>", "Eve Bcc: x@evil.example"),
    ],
)
def test_an_encoded_line_break_in_a_display_name_is_decoded_to_one_line(from_header, name):
    """The name is decoded, line breaks and other controls become one space, the address is the
    angle-addr's."""
    assert parse_mail(_mail(from_header)).from_ == Address(name, "eve@example.com")


def test_the_address_is_never_taken_from_inside_an_encoded_word():
    """An encoded ``<victim@…>`` stays part of the name; the mail is still from the real address."""
    m = parse_mail(_mail("=?utf-8?q?Eve=0D=0A<victim@evil.example>?= <eve@example.com>"))
    assert m.from_ is not None and m.from_.email == "eve@example.com"
    assert "\r" not in m.from_.name and "\n" not in m.from_.name


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Jürgen Müller", "Jürgen Müller"),
        ("", ""),
        (None, ""),
        ("  Eve \r\n  Example  ", "Eve Example"),
        ("=?x-unknown?q?abc?=", "abc"),  # an unknown charset, UTF-8 bytes: as a text part
        ("=?x-unknown?q?=FF?=", "=?x-unknown?q?=FF?="),  # an unknown charset, no UTF-8: kept
        ("=?utf-8?q?Eve?= Example", "Eve Example"),
        ("Müller =?utf-8?q?Eve=0A?=", "Müller Eve"),  # 8-bit text next to an encoded word
        ("=?utf-8?b?!!!?=", ""),  # broken base64 decodes to nothing, never raises
    ],
)
def test_display_name(raw, expected):
    assert display_name(raw) == expected


def test_a_long_name_is_cut():
    assert len(display_name("=?utf-8?q?" + "a" * 70 + "?= " + "b " * 300)) <= 200
