"""Structured JSON logs: event ids and hashed customer ids, never personal data."""

from __future__ import annotations

import hashlib
import logging
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

_HASH_KEY = b"tenure-log-pseudonym"

# Extra attributes a log record may carry into the JSON line. Anything else is dropped, so a
# careless `extra={"payload": ...}` cannot leak a name or a phone number into the logs.
_ALLOWED_EXTRAS = {
    "event_id",
    "event_type",
    "customer",
    "topic",
    "partition",
    "offset",
    "reason",
    "service",
    "count",
    "seconds",
    "attempt",
    "status",
    "frames",  # where an unhandled error happened: file:line in function, never values
}


def customer_ref(customer_id: str) -> str:
    """A stable pseudonym for a customer id in logs.

    >>> customer_ref("C-1") == customer_ref("C-1") and "C-1" not in customer_ref("C-1")
    True
    """
    return hashlib.blake2b(customer_id.encode(), key=_HASH_KEY, digest_size=8).hexdigest()


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in _ALLOWED_EXTRAS:
            if key in record.__dict__:
                line[key] = record.__dict__[key]
        if record.exc_info and record.exc_info[0] is not None:
            line["error"] = record.exc_info[0].__name__
        return orjson.dumps(line, default=str).decode()


def configure_logging(level: str = "INFO") -> None:
    root = logging.getLogger()
    if any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        root.setLevel(level)
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    logging.getLogger("kafka").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
