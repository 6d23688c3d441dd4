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
        structlog.processors.format_exc_info,
    ]
    renderer = structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer(colors=False)
    lvl = getattr(logging, level.upper())
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    # Libraries that use stdlib logging (APScheduler, aiosmtplib, alembic) go to the same stream.
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(lvl, logging.INFO))
    # imapclient logs every command at DEBUG; keep it out of the service log unless debugging.
    logging.getLogger("imapclient").setLevel(lvl if lvl <= logging.DEBUG else logging.WARNING)
    # Alembic announces its plugins and dialect on every start; only its warnings matter here.
    logging.getLogger("alembic").setLevel(lvl if lvl <= logging.DEBUG else logging.WARNING)
