"""Escalations end to end (issue 4): cases come in through the real IMAP server, the escalation job
runs at an injected clock (no sleeping), and every warning, breach, re-escalation and digest is
checked where it arrives: at the real SMTP server. A case answered in time gets none."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from mailbridge.app import App
from mailbridge.store.db import session_scope
from mailbridge.store.models import Outbox
from mailbridge.views import ticket_detail
from tests.integration.conversation_support import (
    AGENT,
    CHIEF,
    CUSTOMER2,
    SLA,
    TEAM,
    Sent,
    answer_note,
    berlin,
    sla_desk,
    to,
)
from tests.support import make_mail


@pytest.fixture
def desk(tmp_path, imap_server, smtp_sink, db_url, imap_env):
    d = sla_desk(tmp_path, imap_server, smtp_sink, db_url)
    yield d
    d.app.close()


def _case(sent: list[Sent]) -> str:
    (ack,) = [m for m in sent if TEAM not in m.rcpt_tos and CHIEF not in m.rcpt_tos]
    return ack.header("Subject").split("]")[0].lstrip("[")


def _about(sent: list[Sent], case: str) -> list[Sent]:
    return [m for m in sent if f"[{case}]" in m.header("Subject")]


def test_warning_breach_reescalation_and_digest_and_none_for_a_case_answered_in_time(desk):
    # Monday 23.11.2026, 09:00: two production-down cases (4 business hours: due 13:00).
    desk.clock.now = berlin(2026, 11, 23, 9, 0)
    late = _case(desk.deliver(make_mail(subject="Systemstillstand Linie 3", body="Alles steht.")))
    sent = desk.deliver(make_mail(subject="Systemstillstand Presse 2", body="Presse steht.", sender=CUSTOMER2))
    in_time = _case(sent)
    assert desk.ticket(late).first_response_due == berlin(2026, 11, 23, 13, 0)
    assert desk.ticket(late).next_escalation_at == berlin(2026, 11, 23, 11, 0)  # the 50 % stage

    # 10:00: Anna answers the second case from the notification: its first response is in time.
    desk.clock.now = berlin(2026, 11, 23, 10, 0)
    (note,) = to(sent, TEAM)
    relayed = answer_note(desk, note, "Guten Tag,\n\nwir schauen uns das sofort an.\n\nAnna")
    assert to(relayed, CUSTOMER2[1])
    assert desk.ticket(in_time).first_response_at == berlin(2026, 11, 23, 10, 0)

    # 10:59: nothing yet.
    desk.clock.now = berlin(2026, 11, 23, 10, 59)
    assert desk.escalate() == []

    # 11:00: half of the time is gone: a warning to the case's agents (no assignee: notify), in
    # the queue's language (English here; the customer wrote German).
    desk.clock.now = berlin(2026, 11, 23, 11, 0)
    warn = desk.escalate()
    assert [m.rcpt_tos for m in warn] == [[TEAM]]
    assert _about(warn, late) and "first response: 50% of the time used" in warn[0].header("Subject")
    assert warn[0].header("Auto-Submitted") == "auto-generated"
    assert "Due:       Mon, 23 Nov 2026, 13:00 Central European Standard Time" in warn[0].text

    # Once only: the job running again (or a restarted service) sends nothing new.
    desk.clock.now = berlin(2026, 11, 23, 11, 1)
    assert desk.escalate() == []
    restarted = App(desk.app.settings, clock=desk.clock)
    assert restarted.escalate().sent == []
    restarted.close()

    # 13:00: the breach, to the managers, urgent.
    desk.clock.now = berlin(2026, 11, 23, 13, 0)
    breach = desk.escalate()
    assert [m.rcpt_tos for m in breach] == [[CHIEF]]
    assert _about(breach, late) and "first response overdue" in breach[0].header("Subject")

    # Re-escalation every 2 business hours while nobody answers: 15:00, 17:00 (the close), then
    # Tuesday 10:00.
    desk.clock.now = berlin(2026, 11, 23, 14, 59)
    assert desk.escalate() == []
    desk.clock.now = berlin(2026, 11, 23, 15, 0)
    again = desk.escalate()
    assert [m.rcpt_tos for m in again] == [[CHIEF]] and "reminder 1" in again[0].header("Subject")
    assert desk.ticket(late).next_escalation_at == berlin(2026, 11, 23, 17, 0)
    desk.clock.now = berlin(2026, 11, 23, 17, 0)
    assert "reminder 2" in desk.escalate()[0].header("Subject")
    assert desk.ticket(late).next_escalation_at == berlin(2026, 11, 24, 10, 0)

    # The case answered in time got no escalation of any kind.
    assert not [e for e in desk.events(in_time) if e[0] == "escalated"]
    assert desk.ticket(in_time).next_escalation_at is None
    assert not _about(warn + breach + again, in_time)

    # Tuesday 08:00: the morning digest lists the overdue case, in text and HTML.
    desk.clock.now = berlin(2026, 11, 24, 8, 0)
    (digest,) = desk.digest("morgens")
    assert digest.rcpt_tos == [CHIEF]
    assert "1 überfällig" in digest.header("Subject")
    overdue = digest.text.split("Überfällig (1):")[1].split("Gefährdet")[0]
    assert late in overdue and in_time not in overdue
    html = digest.msg.get_body(("html",)).get_content()
    assert late in html and "Fehlerklasse 1" in html
    # Once per scheduled minute: a second instance firing at the same time queues nothing.
    assert desk.digest("morgens") == []

    # The agent finally answers: the clock stops, no more re-escalations.
    desk.clock.now = berlin(2026, 11, 24, 8, 30)
    notes = [m for m in desk.messages(late) if m.kind == "notification"]
    assert notes
    nid = notes[0].message_id
    _answer_id(desk, nid, late)
    desk.clock.now = berlin(2026, 11, 24, 12, 0)
    assert desk.escalate() == []
    assert desk.ticket(late).next_escalation_at is None


def _answer_id(desk, nid: str, case: str) -> None:
    desk.deliver(
        make_mail(
            subject=f"AW: [{case}] Systemstillstand Linie 3",
            body="Guten Tag,\n\nder Fehler ist gefunden.\n\nAnna",
            sender=AGENT,
            headers={"In-Reply-To": f"<{nid}>", "References": f"<{nid}>"},
        )
    )


def test_after_downtime_only_the_latest_stage_goes_out_once_and_warnings_wait_for_business_hours(desk):
    # Saturday 28.11.2026 09:00, severity 2: 24 wall-clock hours, due Sunday 09:00. No business
    # time lies between, so the 50 % warning falls on the start; it is not urgent and waits for
    # Monday 08:00. The breach is urgent: Sunday 09:00.
    desk.clock.now = berlin(2026, 11, 28, 9, 0)
    case = _case(desk.deliver(make_mail(subject="Störung im Export", body="Der Export bricht ab.")))
    assert desk.ticket(case).first_response_due == berlin(2026, 11, 29, 9, 0)
    assert desk.ticket(case).next_escalation_at == berlin(2026, 11, 29, 9, 0)  # the breach comes first
    desk.clock.now = berlin(2026, 11, 28, 10, 0)
    assert desk.escalate() == []  # the warning is held (nobody works on Saturday)

    # The service was down from Saturday morning to Monday 10:00. At restart the breach (urgent,
    # Sunday 09:00) goes out once; the held warning (Monday 08:00) is superseded by it.
    desk.clock.now = berlin(2026, 11, 30, 10, 0)
    sent = desk.escalate()
    assert [m.rcpt_tos for m in sent] == [[CHIEF]] and "overdue" in sent[0].header("Subject")
    assert desk.escalate() == []
    kinds = [(d["kind"], d["stage"]) for k, d in desk.events(case) if k == "escalated"]
    assert kinds == [("breach", "breach")]


def test_a_pending_case_pauses_its_clock_and_the_deadline_moves_by_the_paused_business_time(desk):
    desk.clock.now = berlin(2026, 11, 23, 9, 0)
    sent = desk.deliver(make_mail(subject="Systemstillstand Linie 3", body="Alles steht."))
    case = _case(sent)
    (note,) = to(sent, TEAM)
    # 10:00: Anna asks an internal question and sets the case pending (nothing reaches the
    # customer, so the first-response clock still runs — but paused).
    desk.clock.now = berlin(2026, 11, 23, 10, 0)
    answer_note(desk, note, "#pending\n#note\nWarten auf Logdateien vom Kunden")
    t = desk.ticket(case)
    assert t.status == "pending" and t.paused_at == berlin(2026, 11, 23, 10, 0) and t.next_escalation_at is None
    detail = ticket_detail(desk.app, case, width=200)
    # In the calendar's zone: due 13:00 (Mon 09:00 + 4 business hours), paused at 10:00.
    assert "due: first response 2026-11-23 13:00 CET" in detail and "paused since 2026-11-23 10:00 CET" in detail
    desk.clock.now = berlin(2026, 11, 23, 16, 0)
    assert desk.escalate() == []  # past the breach time, but paused

    # Tuesday 09:00 the customer answers: 8 business hours paused (Mon 10–17, Tue 8–9), so the
    # due time, Monday 13:00, moves on by 8 business hours (Mon 13–17, Tue 8–12): Tuesday 12:00.
    desk.clock.now = berlin(2026, 11, 24, 9, 0)
    desk.deliver(make_mail(subject=f"Re: [{case}] Systemstillstand Linie 3", body="Hier die Logs."))
    t = desk.ticket(case)
    assert t.status == "open" and t.paused_at is None
    assert t.paused_seconds == 8 * 3600
    assert t.first_response_due == berlin(2026, 11, 24, 12, 0)
    resumed = [d for k, d in desk.events(case) if k == "clock_resumed"]
    assert resumed and resumed[0]["paused_business_seconds"] == 8 * 3600

    # #severity 3 counts its target (2 business days: Wednesday 09:00) from the creation and moves
    # it by the same pause, as it moved the old one: Wednesday 17:00.
    desk.clock.now = berlin(2026, 11, 24, 9, 30)
    answer_note(desk, note, "#severity 3\n#note\nDoch nur eine Linie.")
    t = desk.ticket(case)
    assert t.severity == "3" and t.first_response_due == berlin(2026, 11, 25, 17, 0)


def test_escalate_on_create_reaches_the_managers_in_the_mails_own_transaction(
    tmp_path, imap_server, smtp_sink, db_url, imap_env
):
    sla = SLA.replace('words = ["Systemstillstand"]', 'words = ["Systemstillstand"]\nescalate_on_create = true')
    d = sla_desk(tmp_path, imap_server, smtp_sink, db_url, sla)
    try:
        d.clock.now = berlin(2026, 11, 23, 9, 0)
        sent = d.deliver(make_mail(subject="Systemstillstand Linie 3", body="Alles steht."))
        case = _case(sent)
        (esc,) = to(sent, CHIEF)
        assert "Immediate escalation" in esc.header("Subject") and f"[{case}]" in esc.header("Subject")
        other = d.deliver(make_mail(subject="Frage zur Lizenz", body="Wie verlängere ich?"))
        assert not to(other, CHIEF)
        with session_scope(d.app.session_factory) as s:
            keys = list(s.scalars(select(Outbox.dedup_key).where(Outbox.kind == "escalation")))
        assert len(keys) == 1 and keys[0].endswith(":created")
    finally:
        d.app.close()


def test_the_service_schedules_the_escalation_and_digest_jobs(desk):
    import asyncio

    from mailbridge.scheduler import Service

    async def setup():
        svc = Service(desk.app)
        svc._setup()
        jobs = {j.id: j for j in svc.scheduler.get_jobs()}
        svc._imap_executor.shutdown(wait=False)
        return jobs

    jobs = asyncio.run(setup())
    assert jobs["escalate"].trigger.interval == timedelta(seconds=60)
    # Digests (and reports) go by the durable schedule: one tick job, at once on start.
    assert jobs["schedules"].trigger.interval == timedelta(seconds=30)


def test_an_agent_answers_the_customer_by_replying_to_a_warning_and_the_managers_copy_proves_nothing(desk):
    """A warning to the agents is signed like a notification: replying to it answers the customer
    and stops the clock. A breach to a manager who is not an agent is not signed."""
    desk.clock.now = berlin(2026, 11, 23, 9, 0)
    case = _case(desk.deliver(make_mail(subject="Systemstillstand Linie 3", body="Alles steht.")))
    desk.clock.now = berlin(2026, 11, 23, 11, 0)
    (warn,) = desk.escalate()
    assert warn.header("Message-ID").startswith("<mbn.")
    relayed = answer_note(desk, warn, "Guten Tag,\n\nwir sind dran.\n\nAnna")
    (answer,) = to(relayed, "juergen.mueller@kunde.example")
    assert "wir sind dran" in answer.text and "##-" not in answer.text
    t = desk.ticket(case)
    assert t.first_response_at == berlin(2026, 11, 23, 11, 0) and t.next_escalation_at is None

    desk.clock.now = berlin(2026, 11, 23, 9, 30)
    other = _case(desk.deliver(make_mail(subject="Systemstillstand Presse", body="Presse steht.")))
    desk.clock.now = berlin(2026, 11, 23, 14, 0)
    (breach,) = [m for m in desk.escalate() if CHIEF in m.rcpt_tos]
    assert f"[{other}]" in breach.header("Subject") and not breach.header("Message-ID").startswith("<mbn.")


def test_three_instances_running_the_job_at_once_send_each_stage_once(desk):
    """Three services on one database run the escalation job at the same moment (threads, their
    own engines): every due case's breach is queued exactly once (PostgreSQL: rows claimed with
    SKIP LOCKED; SQLite: writers serialised), and between them they visit every case."""
    import threading

    desk.clock.now = berlin(2026, 11, 23, 9, 0)
    mails = [make_mail(subject=f"Systemstillstand Anlage {i}", body="Alles steht.") for i in range(24)]
    desk.deliver(*mails)
    desk.clock.now = berlin(2026, 11, 23, 13, 30)  # past the 50 % stage and the breach of all 24
    apps = [App(desk.app.settings, clock=desk.clock) for _ in range(3)]
    reports, errors = [], []
    barrier = threading.Barrier(len(apps))

    def run(app):
        try:
            barrier.wait()
            reports.append(app.escalate())
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(a,)) for a in apps]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for a in apps:
        a.close()
    assert not errors
    sent = [s for r in reports for s in r.sent]
    assert len(sent) == 24 and len(set(sent)) == 24 and {s[2] for s in sent} == {"breach"}
    with session_scope(desk.app.session_factory) as s:
        keys = list(s.scalars(select(Outbox.dedup_key).where(Outbox.kind == "escalation")))
    assert len(keys) == len(set(keys)) == 24
    # The outbox delivers them, once each, and the job run again adds nothing.
    arrived = to(desk.escalate(), CHIEF)
    assert len(arrived) == 24 and len({m.header("Subject") for m in arrived}) == 24
    assert desk.escalate() == []


def _pending(desk, note: Sent) -> None:
    answer_note(desk, note, "#pending\n#note\nWarten auf Logdateien vom Kunden")


def _customer_reply(desk, case: str) -> None:
    desk.deliver(make_mail(subject=f"Re: [{case}] Systemstillstand Linie 3", body="Hier die Logs."))


def test_a_pause_delays_the_warnings_as_it_delays_the_deadline_and_sends_none_twice(desk):
    """The 50 % warning of a case paused after it went out is not sent again after the resume; a
    case paused before its warning gets it when half of its *working* time is used."""
    desk.clock.now = berlin(2026, 11, 23, 9, 0)
    sent = desk.deliver(make_mail(subject="Systemstillstand Linie 3", body="Alles steht."))
    warned = _case(sent)
    (note_w,) = to(sent, TEAM)
    sent = desk.deliver(make_mail(subject="Systemstillstand Presse", body="Presse steht.", sender=CUSTOMER2))
    early = _case(sent)
    (note_e,) = to(sent, TEAM)
    desk.clock.now = berlin(2026, 11, 23, 10, 0)
    _pending(desk, note_e)  # 1 of its 4 hours used
    desk.clock.now = berlin(2026, 11, 23, 11, 0)
    assert [m.header("Subject") for m in desk.escalate()] == [
        f"[{warned}] first response: 50% of the time used: Systemstillstand Linie 3"
    ]
    desk.clock.now = berlin(2026, 11, 23, 11, 30)
    _pending(desk, note_w)  # 2.5 of its 4 hours used

    # Tuesday 09:00 both customers answer.
    desk.clock.now = berlin(2026, 11, 24, 9, 0)
    _customer_reply(desk, warned)
    desk.deliver(make_mail(subject=f"Re: [{early}] Systemstillstand Presse", body="Logs.", sender=CUSTOMER2))
    # warned: paused Mon 11:30–17:00 and Tue 08:00–09:00 (6.5 h): due Mon 13:00 → Tue 10:30.
    # early: paused Mon 10:00–17:00 and Tue 08:00–09:00 (8 h): due Mon 13:00 → Tue 12:00.
    assert desk.ticket(warned).first_response_due == berlin(2026, 11, 24, 10, 30)
    assert desk.ticket(early).first_response_due == berlin(2026, 11, 24, 12, 0)
    assert desk.escalate() == []  # no second 50 % warning, no early one
    # early's 50 %: 2 of its 4 working hours, the 2nd falls on Tuesday 08:00–10:00 → 10:00.
    desk.clock.now = berlin(2026, 11, 24, 10, 0)
    assert [m.header("Subject") for m in desk.escalate()] == [
        f"[{early}] first response: 50% of the time used: Systemstillstand Presse"
    ]
    desk.clock.now = berlin(2026, 11, 24, 10, 30)
    (breach,) = desk.escalate()
    assert f"[{warned}] first response overdue" in breach.header("Subject")


def test_a_wall_clock_target_waits_for_wall_clock_time_while_paused(desk):
    """Severity 2 (24 hours around the clock) from Friday 16:00: pending at 17:00 with 23 hours
    left, the customer answers on Sunday 20:00 (51 hours later): due Monday 19:00, not overdue."""
    desk.clock.now = berlin(2026, 11, 27, 16, 0)
    sent = desk.deliver(make_mail(subject="Störung im Export", body="Der Export bricht ab."))
    case = _case(sent)
    (note,) = to(sent, TEAM)
    desk.clock.now = berlin(2026, 11, 27, 17, 0)
    _pending(desk, note)
    desk.clock.now = berlin(2026, 11, 29, 20, 0)
    desk.deliver(make_mail(subject=f"Re: [{case}] Störung im Export", body="Anbei die Datei."))
    assert desk.ticket(case).first_response_due == berlin(2026, 11, 30, 19, 0)
    assert not to(desk.escalate(), CHIEF)


def test_a_reopened_case_owes_a_new_follow_up_from_then_on(tmp_path, imap_server, smtp_sink, db_url, imap_env):
    """With a follow-up every 8 business hours: answered and solved on Monday, reopened by the
    customer on Thursday 10:00 — the next follow-up is due 8 business hours later (Thursday 10–17,
    Friday 08–09: Friday 09:00), and nobody is told it is overdue."""
    sla = SLA.replace(
        'label_en = "Severity 3"\nfirst_response = { business_days = 2 }',
        'label_en = "Severity 3"\nfirst_response = { business_days = 2 }\nfollow_up = { business_hours = 8 }',
    )
    assert sla != SLA
    d = sla_desk(tmp_path, imap_server, smtp_sink, db_url, sla)
    try:
        d.clock.now = berlin(2026, 11, 23, 9, 0)
        sent = d.deliver(make_mail(subject="Frage zur Lizenz", body="Wie verlängere ich?"))
        case = _case(sent)
        (note,) = to(sent, TEAM)
        d.clock.now = berlin(2026, 11, 23, 9, 30)
        answer_note(d, note, "#solve\nGuten Tag,\n\nso geht es: …\n\nAnna")
        t = d.ticket(case)
        assert t.status == "solved" and t.update_due == berlin(2026, 11, 24, 8, 30) and t.next_escalation_at is None
        d.clock.now = berlin(2026, 11, 26, 10, 0)
        d.deliver(make_mail(subject=f"Re: [{case}] Frage zur Lizenz", body="Klappt leider nicht."))
        t = d.ticket(case)
        assert t.status == "open" and t.update_due == berlin(2026, 11, 27, 9, 0)
        assert d.escalate() == []
        d.clock.now = berlin(2026, 11, 27, 9, 0)
        (breach,) = d.escalate()
        assert breach.rcpt_tos == [CHIEF] and "follow-up overdue" in breach.header("Subject")
    finally:
        d.app.close()
