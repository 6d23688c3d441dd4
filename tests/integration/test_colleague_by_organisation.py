"""A person whom the configuration names as one of the case's organisation (by address, on another
mail domain: a lead person's private or group address) is a colleague on that organisation's cases,
not an unknown third party: the case tracker shows such a person all of the organisation's cases
(``tracker = "organisation"``), so a comment or reply from them must count as the customer side's."""

from __future__ import annotations

import pytest

from tests.integration.conversation_support import CUSTOMER2, SLA, sla_desk, to
from tests.support import make_mail

ORGANISATION = """
[[organisations]]
name = "Stadtwerke"
domains = ["stadtwerke.example"]
addresses = ["it-leitung.stadtwerke@freemail.example"]
contract = "Wartungsvertrag"
tracker = "organisation"
"""
LEAD = ("Iris Leitung", "it-leitung.stadtwerke@freemail.example")
STRANGER = ("Sam Fremd", "sam@freemail.example")


@pytest.fixture
def desk(tmp_path, imap_server, smtp_sink, db_url, imap_env):
    d = sla_desk(tmp_path, imap_server, smtp_sink, db_url, sla=SLA + ORGANISATION)
    yield d
    d.app.close()


def test_an_address_of_the_cases_organisation_is_a_colleague_not_a_third_party(desk):
    sent = desk.deliver(make_mail(subject="Zählerdaten fehlen", body="Seit gestern fehlen Daten.", sender=CUSTOMER2))
    (ack,) = to(sent, CUSTOMER2[1])
    case = ack.header("Subject").split("]", 1)[0].lstrip("[")
    assert desk.ticket(case).organisation == "Stadtwerke"

    desk.deliver(make_mail(subject=f"AW: [{case}] Zählerdaten", body="Bitte dringend prüfen.", sender=LEAD))
    desk.deliver(make_mail(subject=f"AW: [{case}] Zählerdaten", body="Ich auch.", sender=STRANGER))
    lead, stranger = [m for m in desk.messages(case) if m.direction == "in"][1:]
    assert lead.sender_email == LEAD[1] and lead.kind == "customer"
    assert not any("third party" in f for f in lead.flags or [])
    # The control: someone of no organisation on the same mail domain stays a third party.
    assert stranger.kind == "third_party" and any("unknown third party" in f for f in stranger.flags)
    assert len(desk.tickets()) == 1
