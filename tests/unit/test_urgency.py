"""Urgency requests as customers write them: German and English, any word order, the requested level
when the mail names one, negations and unrelated uses not counted."""

from __future__ import annotations

import pytest

from mailbridge.ingest.urgency import Level, find_urgency
from mailbridge.sla.policy import SeverityLevel

# Seed 004 (config/examples/004_ptc_lizenzverwaltung.toml): the four Dringlichkeitsstufen.
PTC = (
    Level(
        "1",
        "Äußerst kritisch – Arbeit unterbrochen",
        "Extremely critical – work stopped",
        ("Äußerst kritisch", "Arbeit unterbrochen", "extremely critical", "work stopped"),
    ),
    Level(
        "2",
        "Kritisch – Arbeit schwer beeinträchtigt",
        "Critical – work severely impaired",
        ("Kritisch", "Arbeit schwer beeinträchtigt", "critical", "work severely impaired"),
    ),
    Level(
        "3",
        "Dringend – Arbeit beeinträchtigt",
        "Urgent – work impaired",
        ("Dringend", "Arbeit beeinträchtigt", "urgent", "work impaired"),
    ),
    Level(
        "4",
        "Nicht kritisch – Arbeitsabläufe nicht behindert",
        "Not critical – work not impeded",
        ("Nicht kritisch", "Arbeitsabläufe nicht behindert", "not critical", "work not impeded"),
    ),
)
# Seed 002 (config/examples/002_netcor_eskalationsstufen.toml), as the scheme object the pipeline has.
NETCOR = (
    SeverityLevel("1", "Eskalationsstufe 1 (Kritisch)", "Escalation level 1 (critical)", ("kritisch", "critical")),
    SeverityLevel("2", "Eskalationsstufe 2 (Hoch)", "Escalation level 2 (high)", ("Priorität hoch", "high priority")),
    SeverityLevel("3", "Eskalationsstufe 3 (Mittel)", "Escalation level 3 (medium)", ("Priorität mittel",)),
    SeverityLevel("4", "Eskalationsstufe 4 (Niedrig)", "Escalation level 4 (low)", ("nicht kritisch", "low priority")),
)
# Seed 001's letter keys.
INTEGRIS = (
    Level("A", "Ticketklasse A – schwerer Mangel", "Ticket class A – severe defect", ("Systemstillstand",)),
    Level("B", "Ticketklasse B – mittlerer Mangel", "Ticket class B – medium defect"),
    Level("C", "Ticketklasse C – leichter Mangel", "Ticket class C – minor defect"),
)

# (text, levels, expected level key or None, explicit request?)
POSITIVE = [
    # German, the issue's own phrasings
    ("Bitte erhöhen Sie die Dringlichkeit auf äußerst kritisch.", PTC, "1", True),
    ("Dringlichkeit bitte hochsetzen.", PTC, None, True),
    ("Priorität hoch setzen", PTC, None, True),
    ("Priorität hoch setzen", NETCOR, "2", True),
    ("bitte eskalieren", PTC, None, True),
    # German, other word orders and forms
    ("Die Dringlichkeit sollte auf kritisch erhöht werden.", PTC, "2", True),
    ("Können Sie die Priorität bitte anheben? Bei uns steht alles.", PTC, None, True),
    ("Heben Sie bitte die Dringlichkeitsstufe auf äußerst kritisch an.", PTC, "1", True),
    ("Wir bitten um Eskalation dieses Falls.", PTC, None, True),
    ("Bitte stufen Sie das Ticket hoch, Arbeit unterbrochen seit 8 Uhr.", PTC, "1", True),
    ("Ich möchte die Dringlichkeitsstufe von dringend auf äußerst kritisch anheben.", PTC, "1", True),
    ("Bitte setzen Sie den Fall auf Stufe 1.", PTC, "1", True),
    ("Bitte Prio erhöhen!!", PTC, None, True),
    ("Bitte um Prioritätserhöhung, Arbeit schwer beeinträchtigt.", PTC, "2", True),
    ("Wir brauchen eine höhere Priorität für diesen Fall.", PTC, None, True),
    ("Die Lizenz fehlt seit gestern. Könnten Sie das eskalieren?", PTC, None, True),
    ("Bitte auf Eskalationsstufe 1 setzen, das System kann nicht genutzt werden.", NETCOR, "1", True),
    ("Dringlichkeit auf Klasse A ändern bitte", INTEGRIS, "A", True),
    ("Bitte hochpriorisieren – Systemstillstand in der Fertigung.", INTEGRIS, "A", True),
    ("Bitte die Priorität erhöhen.\nWir haben einen Systemstillstand.", INTEGRIS, "A", True),
    ("Bitte priorisieren Sie unsere Anfrage.", PTC, None, True),
    # English
    ("Please raise the priority to critical.", PTC, "2", True),
    ("Can you escalate this?", PTC, None, True),
    ("This is urgent, please bump it up.", PTC, "3", True),
    ("Could the severity be increased to extremely critical? Work stopped for 40 users.", PTC, "1", True),
    ("We need this escalated asap.", PTC, None, True),
    ("Please change the severity to level 2", PTC, "2", True),
    ("I'd like to request an escalation of this case.", PTC, None, True),
    ("Priority should be raised from urgent to critical.", PTC, "2", True),
    ("please set priority to P1", PTC, "1", True),
    ("Kindly expedite - production is blocked.", PTC, None, True),
    ("Please treat this with higher priority.", PTC, None, True),
    ("Increase severity please, we are down.", PTC, None, True),
    ("Please prioritize this ticket, we have a customer demo tomorrow.", PTC, None, True),
    ("Could you move this up the queue?", PTC, None, True),
    ("Please bump up the priority to extremely critical", PTC, "1", True),
    ("It is not critical, but please escalate if you cannot solve it today.", PTC, None, True),
    ("Customer No. 4711, please escalate", PTC, None, True),
    # Pleas: urgency stated, no explicit request
    ("Das ist sehr dringend!", PTC, "3", False),
    ("Eilt! Lizenzserver startet nicht.", PTC, None, False),
    ("URGENT: license server down", PTC, "3", False),
    ("Need a new licence file ASAP", PTC, None, False),
    ("Es ist ein Notfall, die Produktion steht.", PTC, None, False),
]

NEGATIVE = [
    ("Das ist nicht dringend, nur eine Frage zur Lizenz.", PTC),
    ("Keine Eile, bitte melden Sie sich nächste Woche.", PTC),
    ("No rush on this one.", PTC),
    ("It's not urgent at all.", PTC),
    ("Kein Notfall – nur zur Info.", PTC),
    ("Bitte nicht eskalieren, wir klären das intern.", PTC),
    ("There is no need to escalate this.", PTC),
    ("Please don't raise the priority, it can wait.", PTC),
    ("Die Priorität muss nicht erhöht werden.", PTC),
    ("Eskalieren Sie das bitte nicht.", PTC),
    ("Die Dringlichkeitsstufe laut Vertrag ist uns bekannt.", PTC),
    ("Mit freundlichen Grüßen\nJane Doe\nPriority Support Team\nACME Ltd.", PTC),
    ("Escalation matrix attached.", PTC),
    ("Please find attached our escalation matrix.", PTC),
    ("We escalated this internally last week and our IT fixed it.", PTC),
    ("Please increase the log level to 3 and send us the file.", PTC),
    ("Our top priority is to get the licence renewed before May.", PTC),
    ("> Bitte erhöhen Sie die Dringlichkeit\nDanke, hat sich erledigt.", PTC),
    ("Die Dringlichkeit hat sich erledigt, danke!", PTC),
    ("Priority: normal", PTC),
    ("Wir haben die Priorität intern bereits erhöht.", PTC),
    ("Das Problem eskaliert, wenn wir den Server neu starten.", PTC),
    ("Please increase the number of seats to 5.", PTC),
    ("Bitte Ticket schließen, kein dringender Bedarf mehr.", PTC),
    ("Eskalationsstufe 1 (Kritisch) laut Vertrag", NETCOR),
]


@pytest.mark.parametrize(("text", "levels", "level", "explicit"), POSITIVE)
def test_requests_are_recognised_with_the_level_they_name(text, levels, level, explicit):
    found = find_urgency(text, "", levels)
    assert found is not None, text
    assert found.level == level, (text, found)
    assert found.explicit is explicit, (text, found)
    assert found.phrases and all(p in text for p in found.phrases)


@pytest.mark.parametrize(("text", "levels"), NEGATIVE)
def test_negations_and_unrelated_uses_do_not_count(text, levels):
    assert find_urgency(text, "", levels) is None, find_urgency(text, "", levels)


def test_the_test_set_is_large_enough():
    assert len(POSITIVE) >= 30 and len(NEGATIVE) >= 15


def test_the_subject_counts_and_an_explicit_request_wins_over_a_plea():
    found = find_urgency("Es ist dringend. Bitte eskalieren Sie auf äußerst kritisch.", "Lizenz", PTC)
    assert found is not None and found.explicit and found.level == "1"
    assert found.level_phrase == "äußerst kritisch"
    assert find_urgency("", "AW: Dringlichkeit erhöhen – Fall C1234567", PTC) is not None


def test_the_phrase_is_quoted_as_written():
    found = find_urgency("Hallo,\n\nbitte erhöhen Sie die Dringlichkeit auf ÄUSSERST KRITISCH.\n\nGruß", "", PTC)
    assert found is not None
    assert found.phrases == ("erhöhen Sie die Dringlichkeit",)
    assert found.level == "1" and found.level_phrase == "ÄUSSERST KRITISCH"


def test_a_wrapped_line_is_one_sentence():
    text = (
        "vielen Dank für die schnelle Rückmeldung, könnten Sie bitte die Dringlichkeit\nauf äußerst kritisch anheben?"
    )
    found = find_urgency(text, "", PTC)
    assert found is not None and found.level == "1"


def test_no_levels_no_level():
    found = find_urgency("Please raise the priority to critical.", "", ())
    assert found is not None and found.level is None
