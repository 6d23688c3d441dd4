"""The only place that configures structlog (and routes stdlib logging through it).

JSON lines when stderr is not a terminal (a service under systemd or Docker), readable lines on
a terminal. Context bound with ``structlog.contextvars`` (account, uid, message_id, case) is
merged into every line.

What a log event may carry: never a message's text or subject, nor a header other than the
Message-ID; an address only where the event is about it (``to`` of a queued, sent or suppressed mail, the
``sender`` of an unproven agent mail, the ``recipients`` of a bounce, the address whose suppression was
lifted). With ``logging.redact_addresses = true`` :class:`RedactAddresses` replaces every address in
every field (also in exceptions and in other libraries' lines) by ``addr-<12 hex>``, the same for the
same address, so a log can still be followed without naming anyone.
"""

from __future__ import annotations

import hashlib
import logging
import re
import sys
from datetime import timedelta

import structlog

# APScheduler 3 logs sentences (``Execution of job "Service._tick …" skipped: maximum number of running
# instances reached (1)``). Its known ones become events with fields: (start of the format string,
# event, level or None to keep the record's own).
_APSCHEDULER_EVENTS = (
    # Expected: a fetch run that works a long backlog outlasts its interval; the next one waits.
    ('Execution of job "%s" skipped: maximum number of running', "job_skipped", logging.DEBUG),
    ('Run time of job "%s" was missed by', "job_missed", logging.WARNING),
    ('Job "%s" raised an exception', "job_failed", None),
    ("Error running job %s", "job_failed", None),
)


def _job_id(arg) -> str:
    return str(getattr(arg, "id", arg))


class _ApschedulerEvents(logging.Filter):
    """Turns APScheduler's known sentences into structured events (``job_skipped`` at debug,
    ``job_missed``, ``job_failed`` with the job id) before the handler formats them; a record demoted
    below the configured level is dropped. Anything else passes unchanged."""

    def __init__(self, level: int):
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("apscheduler") or not isinstance(record.msg, str):
            return True
        for start, event, level in _APSCHEDULER_EVENTS:
            if not record.msg.startswith(start):
                continue
            args = record.args if isinstance(record.args, tuple) else ()
            fields: dict = {"job": _job_id(args[0]) if args else None}
            if event == "job_skipped" and len(args) > 1:
                fields["max_instances"] = args[1]
            if event == "job_missed" and len(args) > 1 and isinstance(args[1], timedelta):
                fields["late_seconds"] = round(args[1].total_seconds(), 1)
            record.msg, record.args = event, ()
            record.mailbridge_fields = fields
            if level is not None:
                record.levelno, record.levelname = level, logging.getLevelName(level)
            return record.levelno >= self.level
        return True


def _record_fields(logger, method_name, event_dict):
    """Fields a filter attached to a stdlib record (see _ApschedulerEvents) become event fields."""
    record = event_dict.get("_record")
    fields = getattr(record, "mailbridge_fields", None)
    if fields:
        event_dict.update(fields)
    return event_dict


# An address in a log field's text: a scan for redaction, not a parser of mail.
_ADDRESS = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+", re.UNICODE)


def address_pseudonym(address: str) -> str:
    """The stable pseudonym of an address in the log: ``addr-`` and 12 hex digits of its sha256
    (lower-cased). Not anonymous: whoever knows an address can compute it, so a log can be searched
    for one person, and nobody reading the log learns the address."""
    return "addr-" + hashlib.sha256(address.lower().encode()).hexdigest()[:12]


def _redact(value):
    if isinstance(value, str):
        return _ADDRESS.sub(lambda m: address_pseudonym(m.group(0)), value) if "@" in value else value
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact(v) for v in value]
    if isinstance(value, dict):
        return {k: _redact(v) for k, v in value.items()}
    return value


class RedactAddresses:
    """structlog processor: every address in the event's fields becomes its :func:`address_pseudonym`.
    Runs after exceptions are formatted, so a traceback naming an address is redacted too."""

    def __call__(self, logger, method_name, event_dict):
        return {k: _redact(v) if k not in ("_record", "_from_structlog") else v for k, v in event_dict.items()}


def configure_logging(level: str = "info", fmt: str = "auto", stream=None, *, redact_addresses: bool = False) -> None:
    stream = stream or sys.stderr
    as_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    renderer = structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer(colors=False)
    lvl = getattr(logging, level.upper())
    # One writer for everything: structlog hands its events to the stdlib handler below, whose lock
    # covers a whole line. Two writers (structlog's PrintLogger and a stdlib handler) interleave
    # lines from different threads into one.
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                *([RedactAddresses()] if redact_addresses else []),
                renderer,
            ],
            foreign_pre_chain=[structlog.stdlib.add_logger_name, _record_fields, *shared],
        )
    )
    handler.addFilter(_ApschedulerEvents(lvl))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(lvl)
    # Libraries log through the same handler, at INFO at most unless we debug.
    for noisy in ("imapclient", "alembic", "apscheduler"):
        logging.getLogger(noisy).setLevel(lvl if lvl <= logging.DEBUG else logging.WARNING)
    # mail-parser warns of every MIME type it does not render ("Email content 'jpeg' not handled")
    # and flufl.bounce logs a traceback whenever one of its detectors trips over a mail; the
    # pipeline records what matters (defects, the mail's class) itself.
    for chatty in ("mailparser", "flufl.bounce"):
        logging.getLogger(chatty).setLevel(lvl if lvl <= logging.DEBUG else logging.ERROR)
