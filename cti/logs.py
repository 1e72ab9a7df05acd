"""JSON log lines on stderr, one object per line, for both services.

Secrets (passwords, a1-hashes, tokens) are never passed to the logger by our code; the
filter here is the second line of defence for anything that formats a whole config.
"""

from __future__ import annotations

import logging
import os
import re

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


def configure_logging(service: str, level: str | None = None) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "asctime": "time", "name": "logger"},
            static_fields={"service": service},
        )
    )
    handler.addFilter(RedactSecrets())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel((level or os.environ.get("CTI_LOG_LEVEL", "INFO")).upper())
