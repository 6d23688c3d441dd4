"""APScheduler's log sentences through the service's logging (``mailbridge/logging.py``): a skipped
run (a long fetch cycle) is no warning; a job that raised stays an error, with the job's id."""

from __future__ import annotations

import io
import json
import logging
from types import SimpleNamespace

import pytest
import structlog

from mailbridge.logging import configure_logging


@pytest.fixture
def logs():
    def configure(level):
        buf = io.StringIO()
        configure_logging(level=level, fmt="json", stream=buf)
        return buf

    yield configure
    structlog.reset_defaults()
    logging.getLogger().handlers[:] = []
    logging.getLogger().setLevel(logging.WARNING)


def _events(buf):
    return [json.loads(line) for line in buf.getvalue().splitlines()]


JOB = SimpleNamespace(id="fetch:main", __str__=lambda self: "Service._tick (trigger: interval[0:00:30])")


def _skipped():
    # The exact call of APScheduler 3's BaseScheduler._process_jobs.
    logging.getLogger("apscheduler.scheduler").warning(
        'Execution of job "%s" skipped: maximum number of running instances reached (%d)', JOB, 1
    )


def test_a_skipped_run_is_not_a_warning_and_at_debug_a_structured_event(logs):
    buf = logs("info")
    _skipped()
    assert _events(buf) == []
    buf = logs("debug")
    _skipped()
    (e,) = _events(buf)
    assert (e["event"], e["level"], e["job"], e["max_instances"]) == ("job_skipped", "debug", "fetch:main", 1)


def test_a_job_that_raised_stays_an_error_with_its_id_and_traceback(logs):
    buf = logs("info")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("apscheduler.executors.imap").exception('Job "%s" raised an exception', JOB)
    logging.getLogger("apscheduler.scheduler").warning("Something new from APScheduler")
    failed, other = _events(buf)
    assert (failed["event"], failed["level"], failed["job"]) == ("job_failed", "error", "fetch:main")
    assert "RuntimeError: boom" in failed["exception"]
    assert (other["event"], other["level"]) == ("Something new from APScheduler", "warning")
