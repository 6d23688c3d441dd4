"""The subtle rules of the health conditions (``mailbridge/alerts.py``): which fault alerts at once
and which only after a while, one mail per condition and period, and the back-to-normal mail."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from mailbridge.alerts import Action, Level, Snapshot, decide, evaluate
from mailbridge.settings import load_settings
from mailbridge.store.health import OutboxSummary
from tests.support import IMAP_PASSWORD_ENV, write_config

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
REPEAT = timedelta(minutes=60)


@pytest.fixture
def settings(tmp_path):
    path = write_config(
        tmp_path / "m.toml",
        imap_port=1143,
        smtp_port=1025,
        db_url="sqlite:///x.db",
        var_dir=tmp_path,
        extra='\n[alerts]\nrecipients = ["ops@it.example"]\naccount_failing_minutes = 10\n'
        "outbox_failing_minutes = 10\nquarantine_growth = 3\nrepeat_minutes = 60\n",
    )
    return load_settings(path, {IMAP_PASSWORD_ENV: "x"})


def _account(kind=None, since=None, error=None, updated=NOW):
    return SimpleNamespace(
        account="main", connected=kind is None, mode="idle", last_fetch_at=NOW, last_error=error,
        error_kind=kind, failing_since=since, waiting=0, updated_at=updated,
    )  # fmt: skip


def _snap(account=None, smtp=None, outbox=None, recent_q=0, open_q=0):
    return Snapshot(
        accounts={"main": account} if account else {},
        jobs={"outbox": smtp} if smtp else {},
        outbox=outbox or OutboxSummary(0, 0, 0, 0, None, None, None),
        open_quarantine=open_q,
        recent_quarantine=recent_q,
    )


def _by(findings):
    return {f.condition: f for f in findings}


def test_a_refused_login_or_untrusted_certificate_alerts_at_once(settings):
    for kind in ("login", "tls"):
        f = _by(evaluate(settings, _snap(_account(kind, NOW - timedelta(seconds=5), "denied")), NOW))["account:main"]
        assert (f.level, f.alert, f.kind) == (Level.CRITICAL, True, f"account_{kind}")
        assert f.facts["user"] == "support" and f.facts["host"] == "127.0.0.1" and f.facts["error"] == "denied"


def test_a_transient_fault_alerts_only_after_account_failing_minutes(settings):
    short = _by(evaluate(settings, _snap(_account("transient", NOW - timedelta(minutes=9))), NOW))["account:main"]
    assert (short.level, short.alert) == (Level.WARNING, False)
    long = _by(evaluate(settings, _snap(_account("transient", NOW - timedelta(minutes=10))), NOW))["account:main"]
    assert (long.level, long.alert) == (Level.CRITICAL, True)


def test_a_working_account_is_no_finding_and_a_database_nobody_ran_on_is_a_warning(settings):
    assert evaluate(settings, _snap(_account()), NOW) == []
    (f,) = evaluate(settings, _snap(), NOW)
    assert (f.condition, f.level, f.alert) == ("service", Level.WARNING, False)


def test_the_outbox_alerts_when_smtp_fails_or_a_mail_is_retried_longer_than_the_limit(settings):
    smtp = SimpleNamespace(failing_since=NOW - timedelta(minutes=11), last_error="Connection refused")
    f = _by(evaluate(settings, _snap(_account(), smtp=smtp), NOW))["outbox"]
    assert (f.level, f.alert, f.facts["error"]) == (Level.CRITICAL, True, "Connection refused")
    retried = OutboxSummary(2, 1, 0, 0, NOW - timedelta(minutes=3), NOW - timedelta(minutes=3), "451 later")
    f = _by(evaluate(settings, _snap(_account(), outbox=retried), NOW))["outbox"]
    assert (f.level, f.alert) == (Level.WARNING, False)
    # Failed for good is a warning for the operator, not an alert (a customer's dead address).
    failed = OutboxSummary(0, 0, 4, 1, None, None, "550 no such user")
    f = _by(evaluate(settings, _snap(_account(), outbox=failed), NOW))["outbox:failed"]
    assert (f.level, f.alert) == (Level.WARNING, False)


def test_the_quarantine_alerts_only_above_its_growth_threshold(settings):
    f = _by(evaluate(settings, _snap(_account(), recent_q=3, open_q=3), NOW))["quarantine:open"]
    assert (f.level, f.alert) == (Level.WARNING, False)
    f = _by(evaluate(settings, _snap(_account(), recent_q=4, open_q=4), NOW))["quarantine"]
    assert (f.level, f.alert, f.facts["recent"]) == (Level.WARNING, True, 4)


def _state(since, last_sent):
    return SimpleNamespace(firing_since=since, last_sent_at=last_sent, sent=1, detail={})


def test_one_mail_per_condition_and_period_and_one_back_to_normal():
    finding = object()
    assert decide(None, finding, NOW, REPEAT) is Action.FIRE
    assert decide(_state(None, NOW - timedelta(days=1)), finding, NOW, REPEAT) is Action.FIRE  # fires again
    firing = _state(NOW - timedelta(minutes=30), NOW - timedelta(minutes=30))
    assert decide(firing, finding, NOW, REPEAT) is None  # within the period: nothing
    assert decide(firing, finding, NOW + timedelta(minutes=30), REPEAT) is Action.REPEAT
    assert decide(firing, None, NOW, REPEAT) is Action.CLEAR  # cleared: the back-to-normal mail
    assert decide(_state(None, NOW), None, NOW, REPEAT) is None  # normal and staying so: nothing
    assert decide(None, None, NOW, REPEAT) is None


def test_an_account_the_service_no_longer_writes_is_critical_in_status_but_sends_no_alert(settings):
    """No service fetches it (stopped, crashed, hung): its last word was fine, but it is old."""
    poll = settings.accounts[0].poll_interval
    fresh = NOW - timedelta(seconds=2 * max(poll, 15))
    assert evaluate(settings, _snap(_account(updated=fresh)), NOW) == []
    old = NOW - timedelta(seconds=2 * max(poll, 15) + 121)
    (f,) = evaluate(settings, _snap(_account(updated=old)), NOW)
    assert (f.condition, f.level, f.alert, f.kind) == ("account:main:silent", Level.CRITICAL, False, "account_silent")
    assert "is mailbridge run running?" in f.summary
    # A failing account retries slowly (a refused login: permanent_fault_retry): not silent yet.
    retry = settings.accounts[0].permanent_fault_retry
    slow = NOW - timedelta(seconds=2 * retry)
    (f,) = evaluate(settings, _snap(_account("login", slow, "denied", updated=slow)), NOW)
    assert (f.condition, f.kind) == ("account:main", "account_login")
