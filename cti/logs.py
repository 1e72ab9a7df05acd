"""JSON log lines on stderr, one object per line, for both services.

Every line is JSON, whoever writes it: our loggers, granian's (through
:func:`granian_log_config`), and uncaught exceptions in any thread (through the except
hooks), so a log pipeline never has to parse a traceback. Timestamps are ISO 8601 in UTC.

Secrets (passwords, a1-hashes, tokens) are never passed to the logger by our code; the
filter here is the second line of defence for anything that formats a whole config.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from pythonjsonlogger.json import JsonFormatter

_SECRET = re.compile(
    r"""((?:password|a1-hash|token|secret|passwd)["']?\s*[:=]\s*["']?)[^"',\s}&]+""",
    re.IGNORECASE,
)


class RedactSecrets(logging.Filter):
    """Masks ``password=...``-like fragments in the rendered message."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = _SECRET.sub(r"\1***", message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


class UtcJsonFormatter(JsonFormatter):
    """``{"time": "2026-12-01T04:01:02.022Z", "level": ..., "service": ..., ...}``."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        moment = datetime.fromtimestamp(record.created, tz=UTC)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def json_formatter(service: str) -> logging.Formatter:
    return UtcJsonFormatter(
        "%(asctime)s %(levelname)s %(name)s %(message)s",
        rename_fields={"levelname": "level", "asctime": "time", "name": "logger"},
        static_fields={"service": service},
    )


def json_handler(service: str) -> logging.Handler:
    handler = logging.StreamHandler()  # stderr
    handler.setFormatter(json_formatter(service))
    handler.addFilter(RedactSecrets())
    return handler


def configure_logging(service: str, level: str | None = None) -> None:
    root = logging.getLogger()
    root.handlers[:] = [json_handler(service)]
    root.setLevel((level or os.environ.get("CTI_LOG_LEVEL", "INFO")).upper())
    _log_uncaught_exceptions()


def granian_log_config(service: str) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for granian (its ``log_dictconfig``): its own
    loggers write through our JSON handler instead of its plain-text stdout format."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": json_formatter, "service": service}},
        "filters": {"redact": {"()": RedactSecrets}},
        "handlers": {
            "json": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "filters": ["redact"],
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "_granian": {"handlers": ["json"], "level": "WARNING", "propagate": False},
            "granian.access": {"handlers": ["json"], "level": "WARNING", "propagate": False},
        },
    }


def _log_uncaught_exceptions() -> None:
    """Uncaught exceptions (main thread and others) become one CRITICAL JSON line each."""
    log = logging.getLogger("uncaught")

    def main_hook(
        kind: type[BaseException], error: BaseException, tb: TracebackType | None
    ) -> None:
        if issubclass(kind, KeyboardInterrupt):
            sys.__excepthook__(kind, error, tb)
            return
        log.critical("uncaught exception: %s", error, exc_info=(kind, error, tb))

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is None or isinstance(args.exc_value, SystemExit):
            return
        name = args.thread.name if args.thread is not None else "?"
        log.critical(
            "uncaught exception in thread %s: %s",
            name,
            args.exc_value,
            exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
        )

    sys.excepthook = main_hook
    threading.excepthook = thread_hook
