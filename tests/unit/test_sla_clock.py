"""SLA clocks and their escalation ladders (``mailbridge.sla.clock``): which clocks run, when each
stage of a ladder goes out, catching up, re-escalation and the outbox keys.

The named tests pin times computed by hand on a Europe/Berlin calendar, Monday to Friday
08:00-17:00, with the public holidays of Bavaria (DE/BY: Epiphany on 6 January, Whit Monday, ...).
Expected instants are written in local time (``berlin(...)``); aware datetimes compare as instants.
The property tests check the invariants the escalation job relies on for random clocks.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st

from mailbridge.sla.calendar import BusinessCalendar, add_business_time, business_time_between
from mailbridge.sla.clock import (
    MAX_REPEATS,
    ClockFacts,
    ClockName,
    Firing,
    Plan,
    Running,
    next_escalation,
    plan,
    recipients_of,
    running_clocks,
    stage_time,
)
from mailbridge.sla.policy import Recipients, SeverityLevel, Stage, Target, TargetKind, due

BERLIN = ZoneInfo("Europe/Berlin")
CAL = BusinessCalendar.build(
    timezone="Europe/Berlin",
    hours={d: ["08:00-17:00"] for d in ("mon", "tue", "wed", "thu", "fri")},
    country="DE",
    subdivision="BY",
)

FOUR_HOURS = Target(TargetKind.BUSINESS_HOURS, 4)
DAILY = Target(TargetKind.BUSINESS_DAYS, 1)

# A ladder with every rank of interest: warnings to the assignee and the agents, the breach (urgent)
# to the managers.
BREACH = Stage(100, Recipients.ESCALATION, urgent=True)
LADDER = (
    Stage(50, Recipients.ASSIGNEE),
    Stage(75, Recipients.ASSIGNEE),
    Stage(90, Recipients.AGENTS),
    BREACH,
)
FR = ClockName.FIRST_RESPONSE


def berlin(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN)


def running(start: datetime, end: datetime, clock: ClockName = FR) -> Running:
    """A running clock with UTC times, as the database hands them over."""
    return Running(clock, start.astimezone(UTC), end.astimezone(UTC))


# The brief's clock: 4 business hours from Friday 20 November 2026, 15:00: 2 h on Friday (15-17),
# 2 h on Monday (08-10), due Monday 23 November 10:00.
FRI_1500 = berlin(2026, 11, 20, 15, 0)
MON_1000 = berlin(2026, 11, 23, 10, 0)
RUN = running(FRI_1500, MON_1000)


def name_of(p: Plan) -> str | None:
    return p.send.name if p.send is not None else None


# -- stage times ---------------------------------------------------------------------------------


def test_the_example_clock_falls_due_monday_at_ten():
    assert due(CAL, FRI_1500, FOUR_HOURS) == MON_1000
    assert business_time_between(CAL, RUN.start, RUN.due) == timedelta(hours=4)


@pytest.mark.parametrize(
    ("percent", "expected"),
    [
        (25, berlin(2026, 11, 20, 16, 0)),  # 1 h: Friday 16:00
        (50, berlin(2026, 11, 20, 17, 0)),  # 2 h: exactly Friday's close, not Monday 08:00
        (75, berlin(2026, 11, 23, 9, 0)),  # 3 h: 2 h Friday + 1 h Monday
        (90, berlin(2026, 11, 23, 9, 36)),  # 3 h 36 min
        (100, berlin(2026, 11, 23, 10, 0)),  # the due time itself
        (150, berlin(2026, 11, 23, 12, 0)),  # 6 h: 2 h Friday + 4 h Monday
    ],
)
def test_stage_times_are_shares_of_the_clocks_business_time(percent, expected):
    assert stage_time(CAL, RUN, percent) == expected


@pytest.mark.parametrize(
    ("now", "send", "sent_at", "next_at"),
    [
        # Before the first stage: nothing to send, the job comes back for the 50 % warning.
        (berlin(2026, 11, 19, 12, 0), None, None, berlin(2026, 11, 20, 17, 0)),
        (FRI_1500, None, None, berlin(2026, 11, 20, 17, 0)),
        (berlin(2026, 11, 20, 16, 59, 59), None, None, berlin(2026, 11, 20, 17, 0)),
        # 50 % falls exactly on Friday's close: that still counts as in hours, it goes out then.
        (berlin(2026, 11, 20, 17, 0), "50%", berlin(2026, 11, 20, 17, 0), berlin(2026, 11, 23, 9, 0)),
        (berlin(2026, 11, 21, 12, 0), "50%", berlin(2026, 11, 20, 17, 0), berlin(2026, 11, 23, 9, 0)),
        (berlin(2026, 11, 23, 9, 0), "75%", berlin(2026, 11, 23, 9, 0), berlin(2026, 11, 23, 9, 36)),
        (berlin(2026, 11, 23, 9, 36), "90%", berlin(2026, 11, 23, 9, 36), MON_1000),
        (MON_1000, "breach", MON_1000, None),
    ],
)
def test_the_ladder_of_a_four_hour_clock_from_friday_afternoon(now, send, sent_at, next_at):
    p = plan(CAL, RUN, LADDER, None, now)
    assert name_of(p) == send
    assert (p.send.at if p.send else None) == sent_at
    assert p.next_at == next_at


def test_the_firings_carry_their_clock_rank_stage_and_due():
    p = plan(CAL, RUN, LADDER, None, berlin(2026, 11, 23, 9, 36))
    assert p.send == Firing(FR, 2, LADDER[2], berlin(2026, 11, 23, 9, 36), MON_1000)
    assert p.send.repeat == 0 and not p.send.breached
    b = plan(CAL, RUN, LADDER, None, MON_1000).send
    assert b is not None and b.rank == 3 and b.stage is BREACH and b.breached and b.name == "breach"


# -- held outside the hours ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("due_at", "held_to"),
    [
        (berlin(2026, 11, 20, 17, 0), berlin(2026, 11, 20, 17, 0)),  # the very close: in hours
        (berlin(2026, 11, 20, 17, 1), berlin(2026, 11, 23, 8, 0)),  # a minute later: Monday's opening
        (berlin(2026, 11, 22, 15, 0), berlin(2026, 11, 23, 8, 0)),  # Sunday
        (berlin(2026, 11, 23, 7, 59), berlin(2026, 11, 23, 8, 0)),  # before opening
        (berlin(2026, 11, 23, 8, 0), berlin(2026, 11, 23, 8, 0)),  # at the opening
        (berlin(2026, 11, 23, 12, 34, 56), berlin(2026, 11, 23, 12, 34, 56)),  # in hours
        (berlin(2026, 1, 5, 20, 0), berlin(2026, 1, 7, 8, 0)),  # Monday evening; Tuesday is Epiphany (BY)
        (berlin(2026, 5, 23, 11, 0), berlin(2026, 5, 26, 8, 0)),  # Saturday before Whit Monday
    ],
)
def test_a_stage_outside_the_hours_is_held_unless_urgent(due_at, held_to):
    """The breach of a wall-clock target can fall at any time: not urgent, it waits for the next
    opening; urgent, it goes at once."""
    run = running(due_at - timedelta(hours=30), due_at)
    quiet = plan(CAL, run, (Stage(100, Recipients.ESCALATION),), None, held_to)
    assert quiet.send is not None and quiet.send.at == held_to and quiet.send.due == due_at
    if held_to > due_at:
        assert plan(CAL, run, (Stage(100, Recipients.ESCALATION),), None, due_at).next_at == held_to
    loud = plan(CAL, run, (Stage(100, Recipients.ESCALATION, urgent=True),), None, due_at)
    assert loud.send is not None and loud.send.at == due_at


@pytest.mark.parametrize("urgent", [False, True])
def test_a_calendar_hours_target_over_the_weekend(urgent):
    """48 calendar hours from Friday 15:00 is Sunday 15:00; the clock's business time is Friday's 2 h,
    so the warnings fall on Friday afternoon (50 % 16:00, 75 % 16:30, 90 % 16:48). The breach on
    Sunday goes out then when urgent, else at Monday's opening."""
    end = due(CAL, FRI_1500, Target(TargetKind.CALENDAR_HOURS, 48))
    assert end == berlin(2026, 11, 22, 15, 0)
    run = running(FRI_1500, end)
    assert [stage_time(CAL, run, p) for p in (50, 75, 90)] == [
        berlin(2026, 11, 20, 16, 0),
        berlin(2026, 11, 20, 16, 30),
        berlin(2026, 11, 20, 16, 48),
    ]
    ladder = (*LADDER[:3], Stage(100, Recipients.ESCALATION, urgent=urgent))
    breach_at = end if urgent else berlin(2026, 11, 23, 8, 0)

    saturday = plan(CAL, run, ladder, None, berlin(2026, 11, 21, 12, 0))
    assert name_of(saturday) == "90%" and saturday.next_at == breach_at

    sunday = plan(CAL, run, ladder, None, end)
    if urgent:
        assert name_of(sunday) == "breach" and sunday.send.at == end and sunday.next_at is None
    else:
        assert name_of(sunday) == "90%" and sunday.next_at == breach_at

    monday = plan(CAL, run, ladder, None, berlin(2026, 11, 23, 8, 0))
    assert name_of(monday) == "breach" and monday.send.at == breach_at and monday.next_at is None


# -- catching up -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("repeat", "next_at"), [(DAILY, berlin(2026, 11, 24, 10, 0)), (None, None)])
def test_after_the_breach_only_the_breach_is_sent(repeat, next_at):
    """The job was down from Friday noon to Monday 11:00: of 50 %, 75 %, 90 % and the breach only the
    breach goes out; then the job comes back for the first re-escalation (Tuesday 10:00), if any."""
    p = plan(CAL, RUN, LADDER, repeat, berlin(2026, 11, 23, 11, 0))
    assert p.send is not None
    assert (p.send.name, p.send.rank, p.send.at, p.send.repeat) == ("breach", 3, MON_1000, 0)
    assert p.next_at == next_at


def test_catching_up_between_warnings_sends_the_latest_warning():
    p = plan(CAL, RUN, LADDER, DAILY, berlin(2026, 11, 23, 9, 10))
    assert name_of(p) == "75%" and p.next_at == berlin(2026, 11, 23, 9, 36)


def test_catching_up_over_several_re_escalations_sends_the_latest():
    """Re-escalations on Tuesday, Wednesday, Thursday 10:00 have passed on Thursday noon: the third
    goes out, the fourth is Friday 10:00 (and the fifth would be Monday 30 November)."""
    p = plan(CAL, RUN, LADDER, DAILY, berlin(2026, 11, 26, 12, 0))
    assert p.send is not None and p.send.name == "re-escalation 3" and p.send.at == berlin(2026, 11, 26, 10, 0)
    assert p.next_at == berlin(2026, 11, 27, 10, 0)
    weekend = plan(CAL, RUN, LADDER, DAILY, berlin(2026, 11, 28, 12, 0))
    assert name_of(weekend) == "re-escalation 4" and weekend.next_at == berlin(2026, 11, 30, 10, 0)


# -- re-escalation ---------------------------------------------------------------------------------

# 4 business hours from Friday 2 January 2026, 15:00: Monday 5 January 10:00. Re-escalating every
# business day skips Tuesday 6 January (Epiphany, a holiday in Bavaria) and the weekend.
JAN_RUN = running(berlin(2026, 1, 2, 15, 0), berlin(2026, 1, 5, 10, 0))
JAN_REPEATS = {
    1: berlin(2026, 1, 7, 10, 0),
    2: berlin(2026, 1, 8, 10, 0),
    3: berlin(2026, 1, 9, 10, 0),
    4: berlin(2026, 1, 12, 10, 0),
    5: berlin(2026, 1, 13, 10, 0),
}


def test_the_january_clock_falls_due_monday_at_ten():
    assert due(CAL, berlin(2026, 1, 2, 15, 0), FOUR_HOURS) == JAN_RUN.due


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_the_nth_re_escalation(n):
    at = JAN_REPEATS[n]
    p = plan(CAL, JAN_RUN, LADDER, DAILY, at)
    f = p.send
    assert f is not None
    assert f.name == f"re-escalation {n}" and f.repeat == n
    assert f.at == at and f.due == JAN_RUN.due and f.clock == FR
    assert f.stage is BREACH and f.breached
    assert p.next_at == JAN_REPEATS[n + 1]
    # A second before, the previous rung is the latest and this one is next.
    before = plan(CAL, JAN_RUN, LADDER, DAILY, at - timedelta(seconds=1))
    assert name_of(before) == ("breach" if n == 1 else f"re-escalation {n - 1}")
    assert before.next_at == at


def test_re_escalations_of_a_quiet_breach_are_held_too():
    """A breach stage that is not urgent, repeated every 12 calendar hours from Monday 10:00: the
    repeat at 22:00 waits for Tuesday 08:00 (Epiphany does not apply in November)."""
    ladder = (Stage(100, Recipients.ESCALATION),)
    p = plan(CAL, RUN, ladder, Target(TargetKind.CALENDAR_HOURS, 12), berlin(2026, 11, 23, 23, 0))
    assert name_of(p) == "breach" and p.next_at == berlin(2026, 11, 24, 8, 0)
    q = plan(CAL, RUN, ladder, Target(TargetKind.CALENDAR_HOURS, 12), berlin(2026, 11, 24, 8, 0))
    assert q.send is not None and q.send.repeat == 1 and q.send.at == berlin(2026, 11, 24, 8, 0)
    assert q.next_at == berlin(2026, 11, 24, 10, 0)


def test_no_re_escalation_without_a_breach_stage_at_100():
    ladder = (Stage(50, Recipients.ASSIGNEE), Stage(75, Recipients.ASSIGNEE))
    p = plan(CAL, RUN, ladder, DAILY, berlin(2026, 11, 30, 12, 0))
    assert name_of(p) == "75%" and p.next_at is None


# -- outbox keys -----------------------------------------------------------------------------------


def _walk(run: Running, stages, repeat, now: datetime, steps: int) -> list[Firing]:
    """The firings the job sends when it comes back at every ``next_at`` from ``now`` on."""
    out = []
    for _ in range(steps):
        p = plan(CAL, run, stages, repeat, now)
        if p.send is not None:
            out.append(p.send)
        if p.next_at is None:
            break
        now = p.next_at
    return out


def test_the_key_names_case_clock_due_and_stage():
    b = plan(CAL, RUN, LADDER, DAILY, MON_1000).send
    assert b is not None
    assert b.key(42) == "esc:42:first_response:2026-11-23T09:00:00+00:00:breach"
    r = plan(CAL, RUN, LADDER, DAILY, berlin(2026, 11, 24, 10, 0)).send
    assert r is not None
    assert r.key(42) == "esc:42:first_response:2026-11-23T09:00:00+00:00:re-escalation 1"


def test_keys_differ_per_stage_and_are_stable():
    fired = _walk(RUN, LADDER, DAILY, FRI_1500, steps=10)
    assert [f.name for f in fired] == [
        "50%",
        "75%",
        "90%",
        "breach",
        "re-escalation 1",
        "re-escalation 2",
        "re-escalation 3",
        "re-escalation 4",
        "re-escalation 5",
    ]
    keys = [f.key(7) for f in fired]
    assert len(set(keys)) == len(keys)
    # The same stage seen by a later run of the job (before the next one) has the same key.
    for f in fired:
        again = plan(CAL, RUN, LADDER, DAILY, f.at + timedelta(minutes=10)).send
        assert again is not None and again.key(7) == f.key(7)
    # Another case, another clock: other keys.
    assert fired[3].key(8) != fired[3].key(7)
    other_clock = plan(CAL, dataclasses.replace(RUN, clock=ClockName.RESOLUTION), LADDER, DAILY, MON_1000).send
    assert other_clock is not None and other_clock.key(7) != fired[3].key(7)


def test_a_new_due_time_starts_a_new_ladder():
    """A severity change moves the due time: every stage has a new key, so the new ladder is sent
    again from the start."""
    moved = running(FRI_1500, berlin(2026, 11, 23, 12, 0))
    old = _walk(RUN, LADDER, DAILY, FRI_1500, steps=5)
    new = _walk(moved, LADDER, DAILY, FRI_1500, steps=5)
    assert [f.name for f in old] == [f.name for f in new]
    assert not {f.key(7) for f in old} & {f.key(7) for f in new}


# -- start and due without business time between -------------------------------------------------


def test_start_equal_to_due_puts_warnings_on_the_start():
    at = berlin(2026, 11, 23, 10, 0)
    run = running(at, at)
    assert [stage_time(CAL, run, p) for p in (50, 75, 90, 100)] == [at] * 4
    p = plan(CAL, run, LADDER, None, at)
    assert name_of(p) == "breach" and p.next_at is None
    early = plan(CAL, run, LADDER, None, at - timedelta(minutes=1))
    assert early.send is None and early.next_at == at


def test_due_before_start_puts_warnings_on_the_start_and_breach_on_the_due():
    start, end = berlin(2026, 11, 23, 10, 0), berlin(2026, 11, 23, 9, 0)
    run = running(start, end)
    assert [stage_time(CAL, run, p) for p in (50, 75, 90)] == [start] * 3
    assert stage_time(CAL, run, 100) == end
    assert stage_time(CAL, run, 150) == end
    p = plan(CAL, run, LADDER, DAILY, start)
    assert name_of(p) == "breach" and p.send.at == end
    assert p.next_at == berlin(2026, 11, 24, 9, 0)


def test_a_clock_entirely_outside_the_hours():
    """24 calendar hours from Saturday 10:00: no business time at all. The (quiet) warnings fall on
    the start and wait for Monday 08:00; the (urgent) breach goes on Sunday 10:00 and supersedes
    them."""
    start = berlin(2026, 11, 21, 10, 0)
    run = running(start, due(CAL, start, Target(TargetKind.CALENDAR_HOURS, 24)))
    assert run.due == berlin(2026, 11, 22, 10, 0)
    assert [stage_time(CAL, run, p) for p in (50, 75, 90, 100)] == [start, start, start, run.due]
    sat = plan(CAL, run, LADDER, None, berlin(2026, 11, 21, 11, 0))
    assert sat.send is None and sat.next_at == run.due
    sun = plan(CAL, run, LADDER, None, run.due)
    assert name_of(sun) == "breach" and sun.next_at is None
    mon = plan(CAL, run, LADDER, None, berlin(2026, 11, 23, 9, 0))
    assert name_of(mon) == "breach" and mon.next_at is None


# -- which clocks run ------------------------------------------------------------------------------

CREATED = berlin(2026, 11, 23, 9, 0)  # Monday
LEVEL = SeverityLevel(
    "1",
    "Fehlerklasse 1",
    "Severity 1",
    first_response=FOUR_HOURS,
    resolution=Target(TargetKind.BUSINESS_DAYS, 5),
    follow_up=DAILY,
    stages=LADDER,
)
FR_DUE = berlin(2026, 11, 23, 13, 0)
UPD_DUE = berlin(2026, 11, 24, 9, 0)
RES_DUE = berlin(2026, 11, 30, 9, 0)


def facts(**kw) -> ClockFacts:
    values = {
        "status": "new",
        "created_at": CREATED,
        "first_response_at": None,
        "first_response_due": FR_DUE,
        "update_due": UPD_DUE,
        "last_answer_at": None,
        "resolution_due": RES_DUE,
        "paused_at": None,
    }
    values.update(kw)
    return ClockFacts(**values)


def test_the_dues_of_the_fixture_case():
    assert due(CAL, CREATED, FOUR_HOURS) == FR_DUE
    assert due(CAL, CREATED, DAILY) == UPD_DUE
    assert due(CAL, CREATED, LEVEL.resolution) == RES_DUE


def test_a_new_case_runs_all_three_clocks():
    assert running_clocks(facts()) == [
        Running(ClockName.FIRST_RESPONSE, CREATED, FR_DUE),
        Running(ClockName.UPDATE, CREATED, UPD_DUE),
        Running(ClockName.RESOLUTION, CREATED, RES_DUE),
    ]


@pytest.mark.parametrize("status", ["solved", "closed"])
def test_no_clock_runs_on_a_solved_or_closed_case(status):
    assert running_clocks(facts(status=status)) == []
    assert next_escalation(CAL, facts(status=status), LEVEL, berlin(2026, 12, 1, 12, 0)) == ([], None)


@pytest.mark.parametrize("status", ["new", "open", "pending"])
def test_no_clock_runs_while_paused(status):
    f = facts(status=status, paused_at=berlin(2026, 11, 23, 10, 0))
    assert running_clocks(f) == []
    assert next_escalation(CAL, f, LEVEL, berlin(2026, 12, 1, 12, 0)) == ([], None)


def test_pending_without_a_pause_stops_only_the_follow_up_clock():
    assert [r.clock for r in running_clocks(facts(status="pending"))] == [
        ClockName.FIRST_RESPONSE,
        ClockName.RESOLUTION,
    ]


def test_the_first_response_clock_stops_with_the_answer():
    answered = berlin(2026, 11, 23, 10, 0)
    clocks = running_clocks(facts(status="open", first_response_at=answered, last_answer_at=answered))
    assert [r.clock for r in clocks] == [ClockName.UPDATE, ClockName.RESOLUTION]


def test_the_follow_up_clock_starts_at_the_last_answer():
    first, last = berlin(2026, 11, 23, 10, 0), berlin(2026, 11, 24, 11, 0)
    f = facts(status="open", first_response_at=first, last_answer_at=last, update_due=berlin(2026, 11, 25, 11, 0))
    upd = next(r for r in running_clocks(f) if r.clock == ClockName.UPDATE)
    assert upd == Running(ClockName.UPDATE, last, berlin(2026, 11, 25, 11, 0))
    # Without a recorded last answer: the first response, else the creation.
    f = facts(status="open", first_response_at=first, last_answer_at=None)
    assert next(r for r in running_clocks(f) if r.clock == ClockName.UPDATE).start == first


def test_clocks_without_a_due_time_do_not_run():
    f = facts(first_response_due=None, update_due=None, resolution_due=None)
    assert running_clocks(f) == []
    assert next_escalation(CAL, f, LEVEL, berlin(2026, 12, 1, 12, 0)) == ([], None)


def test_no_plans_without_a_calendar_or_a_level():
    now = berlin(2026, 12, 1, 12, 0)
    assert next_escalation(None, facts(), LEVEL, now) == ([], None)
    assert next_escalation(CAL, facts(), None, now) == ([], None)


def test_a_case_answered_in_time_never_gets_a_first_response_stage():
    """Created Monday 09:00, first response due 13:00, answered at 10:00; the follow-up is due
    Tuesday 10:00. Whenever the job looks, it sees only the follow-up and resolution clocks: at
    14:00 (after the first-response due) nothing is sent and the next stage is the follow-up's 50 %
    (4.5 business hours after 10:00: Monday 14:30)."""
    answered = berlin(2026, 11, 23, 10, 0)
    f = facts(
        status="open",
        first_response_at=answered,
        last_answer_at=answered,
        update_due=due(CAL, answered, DAILY),
    )
    assert f.update_due == berlin(2026, 11, 24, 10, 0)
    now = berlin(2026, 11, 23, 14, 0)
    plans, next_at = next_escalation(CAL, f, LEVEL, now)
    upd, res = running(answered, f.update_due, ClockName.UPDATE), running(CREATED, RES_DUE, ClockName.RESOLUTION)
    assert plans == [plan(CAL, upd, LADDER, DAILY, now), plan(CAL, res, LADDER, DAILY, now)]
    assert all(p.send is None for p in plans)
    assert next_at == berlin(2026, 11, 23, 14, 30)
    # The same case unanswered: the first-response breach goes out at 14:00 (and the follow-up
    # clock, running since the creation, is at its 50 %: 13:30).
    unanswered, _ = next_escalation(CAL, facts(status="open"), LEVEL, now)
    assert [(p.send.clock, p.send.name) for p in unanswered if p.send] == [
        (FR, "breach"),
        (ClockName.UPDATE, "50%"),
    ]
    # Whenever the job looks in the following weeks: never a first-response firing.
    for hours in range(0, 24 * 21, 5):
        plans, _ = next_escalation(CAL, f, LEVEL, now + timedelta(hours=hours))
        assert all(p.send is None or p.send.clock != FR for p in plans)


def test_the_clocks_are_independent():
    """Moving one clock's due time (a new follow-up period, a pause of the first response) leaves the
    other clocks' plans exactly as they were."""
    base = facts(status="open")
    for now in (berlin(2026, 11, 23, 12, 0), berlin(2026, 11, 23, 16, 0), berlin(2026, 11, 25, 9, 0)):
        plans, _ = next_escalation(CAL, base, LEVEL, now)
        moved_update, _ = next_escalation(
            CAL, dataclasses.replace(base, update_due=berlin(2026, 11, 26, 9)), LEVEL, now
        )
        moved_fr, _ = next_escalation(
            CAL, dataclasses.replace(base, first_response_due=berlin(2026, 11, 24, 9)), LEVEL, now
        )
        assert [plans[0], plans[2]] == [moved_update[0], moved_update[2]]
        assert plans[1] != moved_update[1]
        assert plans[1:] == moved_fr[1:]
        assert plans[0] != moved_fr[0]


def test_next_escalation_is_the_earliest_next_stage_of_all_clocks():
    now = berlin(2026, 11, 23, 9, 30)
    plans, next_at = next_escalation(CAL, facts(status="open"), LEVEL, now)
    # first response: 50 % of 09:00-13:00 is 11:00; follow-up: 50 % of 9 h is 13:30; resolution later.
    assert [p.next_at for p in plans][:2] == [berlin(2026, 11, 23, 11, 0), berlin(2026, 11, 23, 13, 30)]
    assert next_at == berlin(2026, 11, 23, 11, 0)


# -- small helpers -----------------------------------------------------------------------------------


def test_labels_and_recipients():
    assert ClockName.UPDATE.label("de") == "Zwischenstand"
    assert ClockName.FIRST_RESPONSE.label("fr") == "first response"
    assert recipients_of(BREACH) == "escalation"
    assert recipients_of(Stage(120, "chef@example.com")) == "chef@example.com"
    assert Stage(120, "chef@example.com").name == "120%"


# -- suspected bugs ----------------------------------------------------------------------------------


def test_a_stage_after_the_breach_still_goes_out_between_re_escalations():
    """Resolution clock of 2 business days from Monday 23 November 10:00 (due Wednesday 10:00, 18
    business hours); a 175 % stage to the head of development (31.5 business hours: Thursday 14:30);
    re-escalations every business day (Thursday 10:00, Friday 10:00). At Thursday 14:30 the 175 %
    stage is due and has never been sent; the plan says re-escalation 1 (already sent at 10:00) and
    comes back only on Friday."""
    run = running(berlin(2026, 11, 23, 10, 0), berlin(2026, 11, 25, 10, 0), ClockName.RESOLUTION)
    late = Stage(175, "head@example.com", urgent=True)
    ladder = (Stage(75, Recipients.ASSIGNEE), BREACH, late)
    assert stage_time(CAL, run, 175) == berlin(2026, 11, 26, 14, 30)
    fired = [f.name for f in _walk(run, ladder, DAILY, run.start, steps=6)]
    assert "175%" in fired


def test_re_escalations_end_after_max_repeats():
    """The documented limit: a deadline gets at most MAX_REPEATS re-escalations (the settings ask
    for a cadence of at least 15 minutes: more than three months of them). A breach repeated every
    36 seconds, looked at 200 hours after the due time, has used them all: the job is not called
    back for this clock."""
    now = MON_1000 + timedelta(hours=200)
    p = plan(CAL, RUN, LADDER, Target(TargetKind.CALENDAR_HOURS, 0.01), now)
    assert p.send is not None and p.send.repeat == MAX_REPEATS and p.next_at is None


# -- properties --------------------------------------------------------------------------------------

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)  # the year covers both clock changes and the BY holidays

targets = st.one_of(
    st.builds(Target, st.just(TargetKind.BUSINESS_HOURS), st.integers(1, 160).map(lambda q: q / 4)),
    st.builds(Target, st.just(TargetKind.BUSINESS_DAYS), st.integers(1, 5)),
    st.builds(Target, st.just(TargetKind.CALENDAR_HOURS), st.integers(0, 400).map(lambda h: h / 2)),
)
repeats = st.one_of(
    st.none(),
    st.builds(Target, st.just(TargetKind.BUSINESS_HOURS), st.integers(1, 16).map(lambda q: q / 2)),
    st.builds(Target, st.just(TargetKind.BUSINESS_DAYS), st.integers(1, 2)),
    st.builds(Target, st.just(TargetKind.CALENDAR_HOURS), st.integers(1, 48)),
)


@st.composite
def ladders(draw) -> tuple[Stage, ...]:
    ats = draw(st.sets(st.sampled_from([10, 25, 50, 75, 90, 120, 200]), max_size=4))
    ats = sorted(ats | ({100} if draw(st.booleans()) or not ats else set()))
    return tuple(Stage(at, Recipients.ASSIGNEE, urgent=draw(st.booleans())) for at in ats)


@st.composite
def clocks(draw) -> tuple[Running, tuple[Stage, ...], Target | None]:
    start = EPOCH + timedelta(seconds=draw(st.integers(0, 360 * 86400)))
    if draw(st.integers(0, 9)) == 0:  # now and then a due before the start (a resumed, moved clock)
        end = start - timedelta(minutes=draw(st.integers(0, 3000)))
    else:
        end = due(CAL, start, draw(targets))
    return Running(FR, start, end), draw(ladders()), draw(repeats)


@settings(max_examples=150, deadline=None)
@given(clocks(), st.integers(-86400, 30 * 86400))
def test_next_at_is_always_after_now(clock, offset):
    run, ladder, repeat = clock
    now = run.start + timedelta(seconds=offset)
    note(f"{run=} {ladder=} {repeat=} {now=}")
    p = plan(CAL, run, ladder, repeat, now)
    if p.next_at is not None:
        assert p.next_at > now
    if p.send is not None:
        assert p.send.at <= now and p.send.due == run.due
    if repeat is not None and any(s.at == 100 for s in ladder):
        assert p.next_at is not None  # a repeating breach always comes back


@settings(max_examples=100, deadline=None)
@given(clocks())
def test_the_job_walks_the_ladder_in_rank_order(clock):
    """Coming back at every ``next_at`` from the start, the job finds a stage each time, exactly at
    that time and never one it sent before (each key once); without repeats it ends with the last
    stage of the ladder (the breach when there is one)."""
    run, ladder, repeat = clock
    last = None
    sent: set[str] = set()
    first = plan(CAL, run, ladder, repeat, run.start)
    if first.send is not None:
        last = first.send
        sent.add(last.key(1))
    now = first.next_at
    for _ in range(len(ladder) + 4):
        if now is None:
            break
        p = plan(CAL, run, ladder, repeat, now)
        assert p.send is not None and p.send.at == now and p.send.key(1) not in sent
        sent.add(p.send.key(1))
        last, now = p.send, p.next_at
    if repeat is None:
        assert now is None and last is not None and last.stage == ladder[-1]


@settings(max_examples=150, deadline=None)
@given(clocks(), st.floats(0.5, 99.5))
def test_warning_times_lie_in_hours_between_start_and_due(clock, percent):
    run = clock[0]
    total = business_time_between(CAL, run.start, run.due) if run.due > run.start else timedelta(0)
    at = stage_time(CAL, run, percent)
    if total <= timedelta(0):
        assert at == run.start
        return
    assert run.start <= at <= run.due
    assert CAL.is_open(at - timedelta(microseconds=1))  # open just before: in hours or at a close
    passed = business_time_between(CAL, run.start, at)
    assert abs(passed - total * (percent / 100)) <= timedelta(microseconds=1)
    assert at == add_business_time(CAL, run.start, passed)
