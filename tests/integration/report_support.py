"""A week of a support desk made by real mail for the report tests: pymap in, aiosmtpd out, a real
database, the real pipeline, the clock moved by the test. The calendar is nrw (Mon–Fri 08:00–17:00
Europe/Berlin); the week is Monday 23 to Thursday 26 November 2026 (no NRW holiday), CET (UTC+1).

The scheme: level 1 ("Systemstillstand"): first response 4 business hours, resolution 16 business
hours; level 3 (default): first response 2 business days, resolution 5 business days; the warning
stage at 50 %, the breach at 100 %.

The cases (Berlin time):

- A  Mon 09:00, level 1. Answered Mon 10:30 (1.5 business hours; due Mon 13:00: met). Closed by the
  agent (#close) Tue 10:00: resolution after Mon 09–17 (8 h) + Tue 08–10 (2 h) = 10 business hours;
  due 16 business hours after Mon 09:00 = Mon 8 h + Tue 08–16 = Tue 16:00: met.
- B  Mon 15:00, level 1. First response due Mon 15–17 (2 h) + Tue 08–10 (2 h) = Tue 10:00; answered
  Tue 11:00 (Mon 2 h + Tue 08–11 3 h = 5 business hours): missed. Resolution due Mon 2 h + Tue 9 h +
  Wed 08–13 (5 h) = Wed 13:00; not resolved: missed at Thu 12:00, overdue by 23 hours.
- E  Tue 09:00, level 3. Answered with #solve Tue 09:30 (0.5 business hours; due Thu 09:00: met);
  the customer replies Wed 11:00: reopened (solved_at cleared, open again).
- F  Wed 09:00: the customer writes about the closed case A: a new case linked to A, level 1 (its
  subject "AW: [A] Systemstillstand Linie 3" names the word). First response due Wed 09:00 + 4 business
  hours = Wed 13:00; not answered: missed, overdue by 23 hours at Thu 12:00. Resolution due 16
  business hours later (Wed 8 h + Thu 8 h = Thu 16:00): still running at Thu 12:00.
- C  Wed 10:00, level 3. First response due Fri 10:00; 50 % of Wed 7 h + Thu 9 h + Fri 2 h = 18 h
  = Thu 10:00: at risk at Thu 12:00.
- D  Thu 08:30, level 3. First response due Mon 08:30; 50 % of Thu 8.5 h + Fri 9 h + Mon 0.5 h =
  9 h after Thu 08:30 = Fri 08:30: on time at Thu 12:00.

The reports are read at Thursday 26 November 12:00 CET (:data:`NOW`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from tests.integration.conversation_support import (
    AGENT,
    CUSTOMER,
    CUSTOMER2,
    SLA,
    TEAM,
    Desk,
    answer_note,
    berlin,
    sla_desk,
    to,
)
from tests.support import make_mail

# The scheme of conversation_support.SLA with resolution targets.
REPORT_SLA = SLA.replace(
    "first_response = { business_hours = 4 }\n",
    "first_response = { business_hours = 4 }\nresolution = { business_hours = 16 }\n",
).replace(
    "first_response = { business_days = 2 }\n",
    "first_response = { business_days = 2 }\nresolution = { business_days = 5 }\n",
)
assert REPORT_SLA.count("resolution = ") == 2

NOW = berlin(2026, 11, 26, 12, 0)


@dataclass
class Week:
    desk: Desk
    cases: dict[str, str]  # letter -> case number


def _open(desk: Desk, at: datetime, subject: str, body: str, sender=CUSTOMER):
    desk.clock.now = at
    sent = desk.deliver(make_mail(subject=subject, body=body, sender=sender))
    (ack,) = to(sent, sender[1])
    (note,) = to(sent, TEAM)
    return ack.header("Subject").split("]")[0].lstrip("["), note


def desk_week(tmp_path, imap_server, smtp_sink, db_url) -> Week:
    d = sla_desk(tmp_path, imap_server, smtp_sink, db_url, REPORT_SLA)
    cases = {}
    a, note_a = _open(d, berlin(2026, 11, 23, 9, 0), "Systemstillstand Linie 3", "Systemstillstand seit 8 Uhr.")
    cases["A"] = a
    d.clock.now = berlin(2026, 11, 23, 10, 30)
    assert to(answer_note(d, note_a, "Guten Tag,\n\nwir schauen sofort.\n\nAnna"), CUSTOMER[1])
    b, note_b = _open(
        d, berlin(2026, 11, 23, 15, 0), "Systemstillstand Presse 2", "Systemstillstand Presse.", sender=CUSTOMER2
    )
    cases["B"] = b
    d.clock.now = berlin(2026, 11, 24, 10, 0)
    answer_note(d, note_a, "#close\nGuten Tag,\n\nLinie 3 läuft wieder.\n\nAnna")
    e, note_e = _open(d, berlin(2026, 11, 24, 9, 0), "Frage zur Lizenz", "Wie verlängere ich?")
    cases["E"] = e
    d.clock.now = berlin(2026, 11, 24, 9, 30)
    answer_note(d, note_e, "#solve\nGuten Tag,\n\nso geht es: …\n\nAnna")
    d.clock.now = berlin(2026, 11, 24, 11, 0)
    assert to(answer_note(d, note_b, "Guten Tag,\n\nwir sind dran.\n\nAnna"), CUSTOMER2[1])
    # F: about the closed case A.
    d.clock.now = berlin(2026, 11, 25, 9, 0)
    sent = d.deliver(make_mail(subject=f"AW: [{a}] Systemstillstand Linie 3", body="Noch eine Frage zu Linie 3."))
    (ack_f,) = to(sent, CUSTOMER[1])
    cases["F"] = ack_f.header("Subject").split("]")[0].lstrip("[")
    c, _ = _open(d, berlin(2026, 11, 25, 10, 0), "Export bricht ab", "Der Export bricht ab.")
    cases["C"] = c
    d.clock.now = berlin(2026, 11, 25, 11, 0)
    d.deliver(make_mail(subject=f"AW: [{e}] Frage zur Lizenz", body="Klappt leider nicht."))
    dd, _ = _open(d, berlin(2026, 11, 26, 8, 30), "Druckerausgabe leer", "Der Drucker gibt nichts aus.")
    cases["D"] = dd
    d.clock.now = NOW
    return Week(d, cases)


__all__ = ["AGENT", "NOW", "Week", "desk_week"]
