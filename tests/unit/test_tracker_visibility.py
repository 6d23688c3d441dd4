"""Who sees which case in the case tracker (``web/visibility.py``, applied by ``store/tracker.py``):
own cases; all of the organisation's where it allows it; never another organisation's; of a case
only the customer side's mails and ours to them; other people's addresses only inside the
organisation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mailbridge.settings import ConfigError, load_settings
from mailbridge.store import tracker as tq
from mailbridge.store.db import make_engine, make_session_factory, session_scope
from mailbridge.store.models import Message, Participant, Ticket
from mailbridge.web.visibility import may_sign_in, shown_sender, viewer_for
from tests.support import migrated_sqlite_file
from tests.unit.test_settings import ENV, VALID, _write

NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
ORGS = """
[[organisations]]
name = "ACME"
domains = ["acme.example"]
tracker = "organisation"

[[organisations]]
name = "Beta"
domains = ["beta.example"]
addresses = ["freelancer@gmail.com"]
"""


@pytest.fixture
def settings(tmp_path):
    return load_settings(_write(tmp_path, VALID + ORGS), ENV)


@pytest.fixture
def factory(tmp_path):
    engine = make_engine(f"sqlite:///{migrated_sqlite_file(tmp_path / 'db.sqlite')}")
    f = make_session_factory(engine)
    cases = [
        ("C1", "alice@acme.example", "ACME", []),
        ("C2", "albert@acme.example", "ACME", []),
        ("C3", "boris@beta.example", "Beta", [("bea@beta.example", "customer"), ("alice@acme.example", "customer")]),
        ("C4", "bea@beta.example", "Beta", []),
        ("C5", "freelancer@gmail.com", "Beta", [("agent@vendor.example", "agent")]),
        ("C6", "solo@private.example", None, [("friend@other.example", "customer")]),
    ]
    with session_scope(f) as s:
        for i, (num, who, org, parts) in enumerate(cases):
            t = Ticket(
                case_number=num,
                serial=i,
                queue="support",
                status="open",
                subject=f"case {num}",
                requester_email=who,
                language="en",
                created_at=NOW + timedelta(minutes=i),
                updated_at=NOW + timedelta(minutes=i),
                organisation=org,
            )
            s.add(t)
            s.flush()
            s.add(Participant(ticket_id=t.id, email=who, role="requester", added_at=NOW))
            for email, role in parts:
                s.add(Participant(ticket_id=t.id, email=email, role=role, added_at=NOW))
            for direction, kind, text in [
                ("in", "customer", f"customer text {num}"),
                ("out", "ack", f"ack {num}"),
                ("in", "note", f"internal note {num}"),
                ("out", "notification", f"notification {num}"),
                ("in", "agent", f"agent words {num}"),
                ("out", "relay", f"relay {num}"),
            ]:
                s.add(
                    Message(
                        ticket_id=t.id,
                        direction=direction,
                        kind=kind,
                        body_text=text,
                        sender_email=who if direction == "in" and kind == "customer" else "agent@vendor.example",
                        created_at=NOW,
                    )
                )
    yield f
    engine.dispose()


def seen(factory, settings, address: str, **kw) -> list[str]:
    with session_scope(factory) as s:
        rows, total = tq.list_cases(s, viewer_for(settings, address), sort="created", descending=False, **kw)
    assert total == len(rows)
    return [r.case_number for r in rows]


def test_viewer(settings):
    v = viewer_for(settings, " Alice@ACME.example ")
    assert (v.address, v.organisation, v.organisation_wide) == ("alice@acme.example", "ACME", True)
    v = viewer_for(settings, "bea@beta.example")
    assert (v.organisation, v.organisation_wide) == ("Beta", False)  # "own" is the default
    assert viewer_for(settings, "freelancer@gmail.com").organisation == "Beta"
    assert viewer_for(settings, "someone@gmail.com").organisation is None


def test_organisation_wide_sees_all_of_its_organisation_and_nothing_else(factory, settings):
    # C3 has Alice as a Cc, but it is Beta's case: not hers to see.
    assert seen(factory, settings, "alice@acme.example") == ["C1", "C2"]
    assert seen(factory, settings, "anyone@acme.example") == ["C1", "C2"]


def test_own_cases_only_where_the_organisation_does_not_share(factory, settings):
    assert seen(factory, settings, "boris@beta.example") == ["C3"]
    assert seen(factory, settings, "bea@beta.example") == ["C3", "C4"]  # a Cc of her colleague's case
    assert seen(factory, settings, "freelancer@gmail.com") == ["C5"]
    assert seen(factory, settings, "agent@vendor.example") == []  # an agent participant is not a customer
    assert seen(factory, settings, "solo@private.example") == ["C6"]
    assert seen(factory, settings, "friend@other.example") == ["C6"]
    assert seen(factory, settings, "stranger@else.example") == []


def test_a_foreign_case_is_not_found_by_number_or_search(factory, settings):
    alice = viewer_for(settings, "alice@acme.example")
    with session_scope(factory) as s:
        assert tq.case_for(s, alice, "C1") is not None
        assert tq.case_for(s, alice, "C3") is None and tq.case_for(s, alice, "C99") is None
    assert seen(factory, settings, "alice@acme.example", text="C3") == []
    assert seen(factory, settings, "alice@acme.example", text="customer text C3") == []


def test_search_reads_only_what_the_customer_may_see(factory, settings):
    assert seen(factory, settings, "alice@acme.example", text="relay c2") == ["C2"]
    assert seen(factory, settings, "alice@acme.example", text="internal note") == []
    assert seen(factory, settings, "alice@acme.example", text="notification C1") == []
    assert seen(factory, settings, "alice@acme.example", text="agent words") == []
    assert seen(factory, settings, "alice@acme.example", text="100%_") == []  # LIKE wildcards are text


def test_public_messages_leave_out_notes_notifications_and_agents_mail(factory, settings):
    with session_scope(factory) as s:
        t = tq.case_for(s, viewer_for(settings, "alice@acme.example"), "C1")
        kinds = [(m.direction, m.kind) for m in tq.public_messages(s, t.id)]
    assert kinds == [("in", "customer"), ("out", "ack"), ("out", "relay")]


def test_shown_sender_only_inside_the_organisation(settings):
    alice = viewer_for(settings, "alice@acme.example")
    assert shown_sender(settings, alice, "albert@acme.example", "Albert") == ("Albert", "albert@acme.example")
    assert shown_sender(settings, alice, "alice@acme.example", "") == ("alice@acme.example", "alice@acme.example")
    assert shown_sender(settings, alice, "boris@beta.example", "Boris") == ("", None)
    solo = viewer_for(settings, "solo@private.example")
    assert shown_sender(settings, solo, "friend@other.example", "Friend") == ("", None)


def test_who_may_get_a_sign_in_mail(settings):
    assert may_sign_in(settings, "new@acme.example", known_in_store=False)  # an organisation's domain
    assert may_sign_in(settings, "solo@private.example", known_in_store=True)
    assert not may_sign_in(settings, "nobody@else.example", known_in_store=False)


def test_tracker_setting_names_the_key(tmp_path):
    bad = VALID + '\n[[organisations]]\nname = "X"\ndomains = ["x.example"]\ntracker = "everyone"\n'
    with pytest.raises(ConfigError, match=r"organisations\.0\.tracker|organisations\[0\]\.tracker"):
        load_settings(_write(tmp_path, bad), ENV)
