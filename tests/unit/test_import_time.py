"""The time of an imported mail (``importer.mail_time``): the Date header when it is a plausible time
with a zone, read as the parser reads it; else the time the mailbox recorded at delivery; else now."""

from __future__ import annotations

from datetime import UTC, datetime

from mailbridge.importer import mail_time

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
DELIVERED = datetime(2021, 6, 1, 12, 0, tzinfo=UTC)


def _never():
    raise AssertionError("the envelope is read only when the Date is of no use")


def test_the_date_header_wins_in_utc_with_its_zone_and_obsolete_forms():
    assert mail_time("Tue, 4 Mar 2024 10:15:00 +0100", _never, NOW) == datetime(2024, 3, 4, 9, 15, tzinfo=UTC)
    # "-0000": UTC without saying where the writer was (RFC 5322 3.3).
    assert mail_time("7 Dec 2000 19:57:26 -0000", _never, NOW) == datetime(2000, 12, 7, 19, 57, 26, tzinfo=UTC)
    # A comment before the zone, and a two-digit-plus year, as mail-parser (the parser's) reads them.
    assert mail_time("Wed, 20 Sep 1995 00:19:00 (EDT) -0400", _never, NOW) == datetime(1995, 9, 20, 4, 19, tzinfo=UTC)


def test_no_usable_date_falls_back_to_the_delivery_time_then_to_now():
    for header in (None, "", "garbage", "Thu, 29 Apr 2010 00:00:00"):  # the last has no zone: a guess
        assert mail_time(header, lambda: DELIVERED, NOW) == DELIVERED
    # A broken clock: before 1990, or more than a day ahead.
    assert mail_time("Thu, 1 Jan 1970 00:00:00 +0000", lambda: DELIVERED, NOW) == DELIVERED
    assert mail_time("Mon, 30 Jun 3609 15:33:50 +0600", lambda: DELIVERED, NOW) == DELIVERED
    assert mail_time(None, lambda: None, NOW) == NOW
    assert mail_time(None, lambda: datetime(2031, 1, 1, tzinfo=UTC), NOW) == NOW
