"""The only place that configures structlog (and routes stdlib logging through it).

JSON lines when stderr is not a terminal (a service under systemd or Docker), readable lines on
a terminal. Context bound with ``structlog.contextvars`` (account, uid, message_id, case) is
merged into every line.
"""

from __future__ import annotations

import logging
import sys

import structlog


def configure_logging(level: str = "info", fmt: str = "auto", stream=None) -> None:
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
                renderer,
            ],
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        )
    )
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
