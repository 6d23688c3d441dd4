"""The download links of attachments too large for a notification (``outbound/links.py``), the
budget rule (``outbound/attachments.py``) and the download's Content-Disposition (``web/routes.py``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from itsdangerous import URLSafeTimedSerializer

from mailbridge.outbound.attachments import CustomerFile, capacity, encoded_size, human_size, plan, text_reserve
from mailbridge.outbound.links import AttachmentLinks, may_download
from mailbridge.settings import QueueSettings
from mailbridge.web.routes import content_disposition

KEY = "k" * 40
T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _links(clock, key=KEY, days=30.0):
    return AttachmentLinks(key, "https://support.example/desk", days, clock)


def test_a_link_names_the_attachment_and_the_address():
    links = _links(Clock(T0))
    url = links.url(42, "Team@Vendor.example")
    assert url.startswith("https://support.example/desk/attachments/")
    assert links.verify(url.rsplit("/", 1)[1]) == (42, "team@vendor.example")


def test_a_link_expires_after_link_days_at_the_apps_clock():
    clock = Clock(T0)
    links = _links(clock)
    token = links.token(7, "team@vendor.example")
    clock.now = T0 + timedelta(days=30) - timedelta(seconds=1)
    assert links.verify(token) == (7, "team@vendor.example")
    clock.now = T0 + timedelta(days=30, seconds=1)
    assert links.verify(token) is None
    # Issued in the future (a clock far behind, or a forged time): refused too.
    clock.now = T0 - timedelta(hours=1)
    assert links.verify(token) is None


@pytest.mark.parametrize("position", [0, 10, -1, -5])
def test_a_changed_character_anywhere_breaks_the_link(position):
    links = _links(Clock(T0))
    token = links.token(7, "team@vendor.example")
    ch = token[position]
    bad = token[:position] + ("A" if ch != "A" else "B") + (token[position + 1 :] if position != -1 else "")
    assert bad != token
    assert links.verify(bad) is None


def test_another_key_or_purpose_does_not_verify():
    links = _links(Clock(T0))
    assert _links(Clock(T0), key="x" * 40).verify(links.token(1, "a@b.example")) is None
    # The same key, signed for another purpose (no salt, or another salt): refused.
    other = URLSafeTimedSerializer(KEY).dumps({"a": 1, "to": "a@b.example"})
    assert links.verify(other) is None
    for junk in ["", "x", "a.b.c", "\u00e4" * 10, "A" * 5000]:
        assert links.verify(junk) is None


def test_only_current_agents_and_notification_addresses_may_download():
    q = QueueSettings(
        name="support",
        addresses=["support@vendor.example"],
        account="main",
        agents=["anna@vendor.example", "@partner.example"],
        notify=["team@vendor.example"],
    )
    assert may_download(q, "Anna@Vendor.example")
    assert may_download(q, "team@vendor.example")
    assert may_download(q, "someone@partner.example")
    assert not may_download(q, "bert@vendor.example")
    assert not may_download(q, "juergen@kunde.example")


def _f(i: int, size: int) -> CustomerFile:
    return CustomerFile(i, f"f{i}", "application/octet-stream", size)


def test_budget_rule_keeps_the_mails_order_and_lets_smaller_files_through():
    files = [_f(1, 4), _f(2, 7), _f(3, 3), _f(4, 0), _f(5, 4)]
    attached, listed = plan(files, 10)
    assert [f.id for f in attached] == [1, 3, 4]  # 4 + 3 + 0 = 7; file 5 would make 11
    assert [f.id for f in listed] == [2, 5]
    assert plan(files, 18)[1] == []  # exactly the budget
    assert [f.id for f in plan(files, 0)[0]] == [4]  # only the empty file
    assert plan([], 10) == ([], [])


def test_budget_rule_keeps_the_mail_within_the_smtp_servers_limit():
    """8 MB of files are within a 10 MB budget, but not within Postfix's 10,240,000 bytes once
    base64-encoded: the file stays behind, a smaller one still travels."""
    limit, text = 10_240_000, "Guten Tag,\n" * 50
    room = limit - text_reserve(text)
    big, small = _f(1, 8 * 1024 * 1024), _f(2, 2 * 1024 * 1024)
    assert encoded_size(big.size) > room > encoded_size(small.size)
    attached, listed = plan([big, small], 10 * 1024 * 1024, room)
    assert [f.id for f in attached] == [2] and [f.id for f in listed] == [1]
    assert [f.id for f in plan([big, small], 10 * 1024 * 1024)[0]] == [1, 2]  # no limit given
    # Two files each fitting alone, not together.
    five = [_f(3, 5 * 1024 * 1024), _f(4, 5 * 1024 * 1024)]
    assert [f.id for f in plan(five, 10 * 1024 * 1024, room)[0]] == [3]
    # What agents are told: the budget, or what the limit leaves (about 7.1 MB here).
    assert capacity(10 * 1024 * 1024, room) == (room - 2048) * 57 // 78
    assert 7_000_000 < capacity(10 * 1024 * 1024, room) < 7_500_000
    assert capacity(1000, room) == 1000 and capacity(1000, 0) == 0


def test_encoded_size_is_what_the_mail_library_writes():
    """The estimate is an upper bound of the base64 body the composer writes, by at most one line."""
    from mailbridge.outbound.attachments import PART_OVERHEAD
    from mailbridge.outbound.compose import OutgoingAttachment, _attachment_part

    for n in (0, 1, 57, 58, 1_000_000):
        part = _attachment_part(OutgoingAttachment("a.bin", "application/octet-stream", b"\x07" * n))
        body = part.get_payload().replace("\n", "\r\n")
        assert len(body) <= encoded_size(n) - PART_OVERHEAD < len(body) + 78


@pytest.mark.parametrize(
    ("n", "lang", "text"),
    [
        (30 * 1024 * 1024 + 200 * 1024, "de", "30,2 MB"),
        (30 * 1024 * 1024 + 200 * 1024, "en", "30.2 MB"),
        (812 * 1024, "en", "812 KB"),
        (1536 * 1024 * 1024, "de", "1.536,0 MB"),
        (17, "de", "17 Bytes"),
        (17, "en", "17 bytes"),
    ],
)
def test_human_size(n, lang, text):
    assert human_size(n, lang) == text


def test_content_disposition_is_rfc_6266_with_an_ascii_fallback():
    assert content_disposition("Prüfprotokoll 50%.pdf") == (
        "attachment; filename=\"Prufprotokoll 50_.pdf\"; filename*=UTF-8''Pr%C3%BCfprotokoll%2050%25.pdf"
    )
    assert (
        content_disposition("日本.txt")
        == "attachment; filename=\"attachment.txt\"; filename*=UTF-8''%E6%97%A5%E6%9C%AC.txt"
    )
    assert content_disposition('a"b\\c.log').startswith('attachment; filename="a_b_c.log";')
