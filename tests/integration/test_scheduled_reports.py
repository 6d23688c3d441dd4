"""Scheduled reports and digests (issue 15, item 6) arrive at the SMTP server exactly once: in normal
running, after downtime across their due time (once, on start, marked late), and with two instances
on one database. Cases come in through the real IMAP server; the report is the real
``mailbridge.reports`` output; the mails are read back from the real SMTP server (aiosmtpd)."""

from __future__ import annotations

import asyncio
import csv
import io
import re
import threading
import time
from datetime import UTC

import pytest
from sqlalchemy import select

from mailbridge.app import App
from mailbridge.scheduler import Service
from mailbridge.settings import load_settings
from mailbridge.store.db import session_scope
from mailbridge.store.models import JobHealth, Outbox, ScheduleRun, ScheduleStart
from tests.integration.conversation_support import SLA, Clock, Desk, Sent, berlin, sla_desk
from tests.support import make_mail

LEAD = "lead@vendor.example"
# The SLA desk's digest "morgens" (08:00 Mon–Fri) sends also when nothing is overdue, and two reports:
# SLA compliance as HTML with charts every Monday at 08:00 (nrw calendar), and the open items as CSV
# on weekdays at 07:30 (Berlin), in English.
SCHEDULED = (
    SLA
    + """send_empty = true

[[reports]]
name = "wochenliste"
report = "sla"
params = { by = "severity" }
format = "html"
recipients = ["lead@vendor.example"]
schedule = "mon 08:00"
calendar = "nrw"
language = "de"

[[reports]]
name = "morning-csv"
report = "open-items"
format = "csv"
recipients = ["lead@vendor.example"]
schedule = "weekdays 07:30"
timezone = "Europe/Berlin"
language = "en"
"""
)
WAIT_SECONDS = 60.0


def scheduled_desk(tmp_path, imap_server, smtp_sink, db_url) -> Desk:
    return sla_desk(tmp_path, imap_server, smtp_sink, db_url, sla=SCHEDULED)


@pytest.fixture
def desk(tmp_path, imap_server, smtp_sink, db_url, imap_env):
    d = scheduled_desk(tmp_path, imap_server, smtp_sink, db_url)
    yield d
    d.app.close()


def tick(desk: Desk) -> list[Sent]:
    """One tick of the scheduled reports and digests at the desk's clock, then the outbox."""
    before = len(desk.smtp.received)
    for item in desk.app.scheduled.items:
        desk.app.run_schedule(item.run)
    return desk._send(before)


def runs(app: App) -> list[tuple[str, str, str]]:
    """(name, due time in Berlin as "dd HH:MM", outcome) of every schedule_runs row."""
    from tests.integration.conversation_support import BERLIN

    with session_scope(app.session_factory) as s:
        rows = s.scalars(select(ScheduleRun).order_by(ScheduleRun.name, ScheduleRun.due_at))
        return [(r.name, r.due_at.astimezone(BERLIN).strftime("%d %H:%M"), r.outcome) for r in rows]


def open_case(desk: Desk, subject: str) -> str:
    sent = desk.deliver(make_mail(subject=subject, body="Bitte prüfen."))
    (ack,) = [m for m in sent if m.rcpt_tos == ["juergen.mueller@kunde.example"]]
    return ack.header("Subject").split("]")[0].lstrip("[")


def html_parts(m: Sent) -> tuple[str, dict[str, bytes]]:
    """The HTML body and the inline images of the multipart/related beside it, by Content-ID."""
    related = next(p for p in m.msg.walk() if p.get_content_type() == "multipart/related")
    html = related.get_body(("html",)).get_content()
    images = {
        p["Content-ID"].strip("<>"): p.get_payload(decode=True)
        for p in related.iter_parts()
        if p.get_content_type() == "image/png"
    }
    return html, images


def test_reports_and_digest_go_out_once_when_the_clock_passes_their_due_times(desk):
    # Monday 23.11.2026, 06:00: the service sees the schedules for the first time; nothing is owed
    # (last week's due times are before that).
    desk.clock.now = berlin(2026, 11, 23, 6, 0)
    assert tick(desk) == []
    case = open_case(desk, "Drucker druckt nicht")

    # 07:29 nothing; 07:30 the CSV report, in English, the file attached and read back.
    desk.clock.now = berlin(2026, 11, 23, 7, 29)
    assert tick(desk) == []
    desk.clock.now = berlin(2026, 11, 23, 7, 30)
    (csv_mail,) = tick(desk)
    assert csv_mail.rcpt_tos == [LEAD]
    subject = csv_mail.header("Subject")
    assert subject.startswith('Report "morning-csv": ') and "late" not in subject
    assert csv_mail.header("Auto-Submitted") == "auto-generated"
    (attached,) = [p for p in csv_mail.msg.iter_attachments()]
    assert attached.get_content_type() == "text/csv" and attached.get_filename().endswith(".csv")
    rows = list(csv.reader(io.StringIO(attached.get_payload(decode=True).decode("utf-8-sig"))))
    assert len(rows) == 2 and case in rows[1]
    assert "The report is attached as the file" in csv_mail.text
    # Another tick within the same minute and a minute later: nothing more.
    assert tick(desk) == []
    desk.clock.now = berlin(2026, 11, 23, 7, 31)
    assert tick(desk) == []

    # 08:00: the HTML report with its charts inline, and the digest (the calendar's business day).
    desk.clock.now = berlin(2026, 11, 23, 8, 0, 20)
    sent = tick(desk)
    assert sorted(m.header("Subject").split(":")[0] for m in sent) == ["Bericht „wochenliste“", "SLA-Übersicht morgens"]
    (report,) = [m for m in sent if "wochenliste" in m.header("Subject")]
    html, images = html_parts(report)
    # By severity: the one case opened, of severity 3, still in the backlog.
    assert '<td class="">3</td><td class="num">1</td>' in html
    cids = set(re.findall(r'src="cid:([^"]+)"', html))
    assert cids and cids == set(images), (cids, set(images))
    assert all(png.startswith(b"\x89PNG") for png in images.values())
    assert "Der Bericht steht mit seinen Diagrammen im HTML-Teil" in report.text
    assert tick(desk) == []

    # Tuesday 07:30 the CSV again (daily on weekdays), the Monday report not.
    desk.clock.now = berlin(2026, 11, 24, 7, 30)
    assert [m.header("Subject").split(":")[0] for m in tick(desk)] == ['Report "morning-csv"']
    assert runs(desk.app) == [
        ("digest:morgens", "23 08:00", "sent"),
        ("report:morning-csv", "23 07:30", "sent"),
        ("report:morning-csv", "24 07:30", "sent"),
        ("report:wochenliste", "23 08:00", "sent"),
    ]


def test_a_report_or_digest_on_a_closed_day_of_its_calendar_is_not_sent_and_not_owed_later(desk):
    # Christmas Day 2028 is a Monday and an NRW holiday: the Monday report and the digest (both on
    # the nrw calendar) skip it for good; the CSV report has only a zone and goes out.
    def on_calendar(sent: list[Sent]) -> list[Sent]:
        return [m for m in sent if "morning-csv" not in m.header("Subject")]

    desk.clock.now = berlin(2028, 12, 25, 7, 0)
    tick(desk)
    desk.clock.now = berlin(2028, 12, 25, 8, 0)
    sent = tick(desk)
    assert on_calendar(sent) == [] and len(sent) == 1
    desk.clock.now = berlin(2028, 12, 25, 12, 0)
    assert tick(desk) == []
    assert runs(desk.app) == [
        ("digest:morgens", "25 08:00", "closed_day"),
        ("report:morning-csv", "25 07:30", "late"),  # half an hour after its due time
        ("report:wochenliste", "25 08:00", "closed_day"),
    ]
    # Tuesday is a holiday too (2. Weihnachtstag); Wednesday the digest goes out again.
    desk.clock.now = berlin(2028, 12, 27, 8, 0)
    assert [m.header("Subject").split(":")[0] for m in on_calendar(tick(desk))] == ["SLA-Übersicht morgens"]


# -- the real service, stopped across the due time -------------------------------------------------


class Running:
    """``scheduler.Service`` over an App with an injected clock, in a thread of its own."""

    def __init__(self, app: App):
        self.service = Service(app)
        self.error: BaseException | None = None
        # How many runs of the service's schedules job have finished.
        self.ticks = 0
        job = self.service._schedules

        def counted() -> None:
            job()
            self.ticks += 1

        self.service._schedules = counted
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            asyncio.run(self.service.run(install_signals=False))
        except BaseException as e:  # shown by stop()
            self.error = e

    def stop(self) -> None:
        self.service.request_stop()
        self.thread.join(30)
        assert not self.thread.is_alive(), "the service did not stop"
        assert self.error is None, self.error


def wait_for(what: str, check, timeout: float = WAIT_SECONDS):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def ticked_at(app: App, now) -> bool:
    """Every scheduled thing has had a tick at ``now`` (its job_health row says so)."""
    names = {i.run for i in app.scheduled.items}
    with session_scope(app.session_factory) as s:
        rows = {j.job: j.last_run_at for j in s.scalars(select(JobHealth).where(JobHealth.job.in_(names)))}
    return set(rows) == names and all(t == now for t in rows.values())


def outbox_drained(app: App) -> bool:
    with session_scope(app.session_factory) as s:
        return not list(s.scalars(select(Outbox.id).where(Outbox.status != "sent")))


def service_at(tmp_path, imap_server, smtp_sink, db_url, now) -> tuple[Running, App]:
    d = scheduled_desk(tmp_path, imap_server, smtp_sink, db_url)
    d.app.close()
    app = App(load_settings(tmp_path / "mailbridge.toml"), clock=Clock(now))
    running = Running(app)
    wait_for("a tick of the schedules", lambda: ticked_at(app, now))
    wait_for("the outbox to drain", lambda: outbox_drained(app))
    return running, app


def test_the_service_down_across_the_due_time_sends_once_on_start_marked_late_and_not_again(
    tmp_path, imap_server, smtp_sink, db_url, imap_env
):
    # Monday 07:00: the service runs and sees the schedules; nothing is due yet. It stops at 07:10.
    running, _ = service_at(tmp_path, imap_server, smtp_sink, db_url, berlin(2026, 11, 23, 7, 0))
    running.stop()
    assert smtp_sink.received == []

    # 10:00: it starts again. The report of 07:30, the report and the digest of 08:00 fell due while it
    # was down: each goes out once, on start, and says it is late.
    running, app = service_at(tmp_path, imap_server, smtp_sink, db_url, berlin(2026, 11, 23, 10, 0))
    subjects = sorted(m.message["Subject"] for m in smtp_sink.received)
    running.stop()
    assert len(subjects) == 3, subjects
    report_subject, csv_subject, digest_subject = subjects
    assert csv_subject.startswith('Report "morning-csv"') and csv_subject.endswith("(due Mon 23 Nov 07:30, sent late)")
    assert report_subject.endswith("(fällig Mo. 23.11. 08:00, verspätet gesendet)")
    assert digest_subject.startswith("SLA-Übersicht morgens")
    assert digest_subject.endswith("(fällig Mo. 23.11. 08:00, verspätet gesendet)")
    digest = next(m.message for m in smtp_sink.received if m.message["Subject"] == digest_subject)
    assert "Fällig war sie Mo. 23.11. 08:00; der Dienst lief da nicht" in digest.get_body(("plain",)).get_content()
    assert runs(app) == [
        ("digest:morgens", "23 08:00", "late"),
        ("report:morning-csv", "23 07:30", "late"),
        ("report:wochenliste", "23 08:00", "late"),
    ]

    # A second restart at 10:05: nothing owed, nothing sent.
    running, app = service_at(tmp_path, imap_server, smtp_sink, db_url, berlin(2026, 11, 23, 10, 5))
    running.stop()
    assert len(smtp_sink.received) == 3

    # `mailbridge status` lists each scheduled entry's last check.
    from mailbridge.status import collect

    app = App(load_settings(tmp_path / "mailbridge.toml"), clock=Clock(berlin(2026, 11, 23, 10, 6)))
    try:
        jobs = {j["job"]: j for j in collect(app).jobs}
    finally:
        app.close()
    for name in ("report:wochenliste", "report:morning-csv", "digest:morgens"):
        assert jobs[name]["last_run"] == berlin(2026, 11, 23, 10, 5) and jobs[name]["error"] is None


def test_after_days_down_only_the_latest_missed_due_time_is_sent(desk):
    desk.clock.now = berlin(2026, 11, 23, 7, 0)
    tick(desk)
    # Down from Monday 07:00 to Thursday 12:00: the weekday CSV fell due four times, sent once
    # (Thursday's); the Monday report once, late.
    desk.clock.now = berlin(2026, 11, 26, 12, 0)
    sent = tick(desk)
    subjects = sorted(m.header("Subject") for m in sent)
    assert len(subjects) == 3, subjects
    assert subjects[0].endswith("(fällig Mo. 23.11. 08:00, verspätet gesendet)")
    assert subjects[1].endswith("(due Thu 26 Nov 07:30, sent late)")
    assert subjects[2].endswith("(fällig Do. 26.11. 08:00, verspätet gesendet)")


# -- two instances on one database ------------------------------------------------------------------


def test_two_instances_on_one_database_send_each_due_time_once(tmp_path, imap_server, smtp_sink, db_url, imap_env):
    first = scheduled_desk(tmp_path, imap_server, smtp_sink, db_url)
    try:
        first.clock.now = berlin(2026, 11, 23, 7, 0)
        tick(first)
        open_case(first, "Zwei Instanzen")
        second = App(load_settings(tmp_path / "mailbridge.toml"), clock=Clock(berlin(2026, 11, 23, 8, 0, 5)))
        first.clock.now = berlin(2026, 11, 23, 8, 0, 5)
        try:
            before = len(smtp_sink.received)
            barrier = threading.Barrier(2)
            errors: list[BaseException] = []

            def instance(app: App) -> None:
                try:
                    barrier.wait(10)
                    for item in app.scheduled.items:
                        app.run_schedule(item.run)
                except BaseException as e:
                    errors.append(e)

            threads = [threading.Thread(target=instance, args=(a,)) for a in (first.app, second)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            assert errors == []
            sent = first._send(before) + Desk(second, imap_server, smtp_sink, first.clock)._send(
                len(smtp_sink.received)
            )
        finally:
            second.close()
        subjects = sorted(m.header("Subject").split(":")[0] for m in sent)
        # 07:30 (late by half an hour) and 08:00 (on time), one mail each.
        assert subjects == ["Bericht „wochenliste“", 'Report "morning-csv"', "SLA-Übersicht morgens"]
        assert runs(first.app) == [
            ("digest:morgens", "23 08:00", "sent"),
            ("report:morning-csv", "23 07:30", "late"),
            ("report:wochenliste", "23 08:00", "sent"),
        ]
        with session_scope(first.app.session_factory) as s:
            assert len(list(s.scalars(select(ScheduleStart)))) == 3
            keys = sorted(s.scalars(select(Outbox.dedup_key).where(Outbox.kind.in_(("report", "digest")))))
        assert keys == [
            "digest:morgens:2026-11-23T07:00:00+00:00",
            "report:morning-csv:2026-11-23T06:30:00+00:00",
            "report:wochenliste:2026-11-23T07:00:00+00:00",
        ]
    finally:
        first.app.close()


def test_due_times_are_utc_in_the_database(desk):
    desk.clock.now = berlin(2026, 11, 23, 7, 0)
    tick(desk)
    desk.clock.now = berlin(2026, 11, 23, 7, 30)
    tick(desk)
    with session_scope(desk.app.session_factory) as s:
        (row,) = s.scalars(select(ScheduleRun))
        assert row.due_at == berlin(2026, 11, 23, 7, 30) and row.due_at.tzinfo == UTC


def test_two_running_services_on_one_database_send_each_due_time_once(
    tmp_path, imap_server, smtp_sink, db_url, imap_env
):
    # The schedules were seen at 07:00; at 08:00:05 two services start side by side.
    desk = scheduled_desk(tmp_path, imap_server, smtp_sink, db_url)
    desk.clock.now = berlin(2026, 11, 23, 7, 0)
    tick(desk)
    desk.app.close()
    now = berlin(2026, 11, 23, 8, 0, 5)
    apps = [App(load_settings(tmp_path / "mailbridge.toml"), clock=Clock(now)) for _ in range(2)]
    # The second starts once the first has migrated (Alembic's upgrade is not thread-safe, and two
    # services in one process share it; real instances are processes). The race of two claims at
    # the same moment: test_two_instances_on_one_database_send_each_due_time_once.
    services = [Running(apps[0])]
    wait_for("the first service's start", lambda: services[0].service.scheduler is not None)
    services.append(Running(apps[1]))
    try:
        for r in services:
            wait_for("both services' ticks", lambda r=r: r.ticks >= 1)
        wait_for("the outbox to drain", lambda: outbox_drained(apps[0]))
    finally:
        for s in services:
            s.stop()
    subjects = sorted(m.message["Subject"].split(":")[0] for m in smtp_sink.received)
    assert subjects == ["Bericht „wochenliste“", 'Report "morning-csv"', "SLA-Übersicht morgens"]
    assert [r[1:] for r in runs(apps[0])] == [("23 08:00", "sent"), ("23 07:30", "late"), ("23 08:00", "sent")]
