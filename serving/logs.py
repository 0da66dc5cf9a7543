"""Serving's logs: one access line per request, a JSON object (or text), with its request id.

The access line (logger :data:`ACCESS_LOGGER`, written by
:class:`serving.middleware.RequestContext`) holds ``time``, ``request_id``, ``method``,
``path`` (the route's template, never the query), ``status``, ``duration_ms``,
``model_version`` and ``degraded``; no customer id (raw or pseudonymised) and no field of any
body, by construction: the middleware never reads bodies, and endpoints note only the model
version and the degraded flag.

Formatting is the stdlib's :mod:`logging` with a small :class:`JsonFormatter` on orjson
(python-json-logger would do, but this is a dozen lines and keeps one JSON library). A
record's ``request_id`` comes from the record (``extra``) or else from the request being
served (:data:`request_id_var`), so any serving log line written with this formatter names
its request.
"""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

from pipeline.config import Settings

ACCESS_LOGGER = "serving.access"
"""The logger of the access lines (propagation off: it has its own handler)."""

ACCESS_FIELDS = (
    "request_id",
    "method",
    "path",
    "status",
    "duration_ms",
    "model_version",
    "degraded",
)
"""What an access line holds besides its time (and nothing else)."""

request_id_var: ContextVar[str | None] = ContextVar("fitrec_request_id", default=None)
"""The id of the request being served (set by the middleware, copied into thread pools)."""

_HANDLER_MARK = "_fitrec_serving_handler"


def _time(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


class JsonFormatter(logging.Formatter):
    """A record as one JSON object: time, level, logger, message and the record's
    :data:`ACCESS_FIELDS` it carries (``extra=``); exceptions as one ``exc`` string."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _time(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = record.__dict__
        for name in ACCESS_FIELDS:
            if name in fields:
                line[name] = fields[name]
        if "request_id" not in line:
            line["request_id"] = request_id_var.get()
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    """``time level logger message [request id]``, for a person at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        rid = record.__dict__.get("request_id") or request_id_var.get()
        text = f"{_time(record)} {record.levelname} {record.name} {record.getMessage()}"
        text = f"{text} [{rid}]" if rid else text
        if record.exc_info:
            text = f"{text}\n{self.formatException(record.exc_info)}"
        return text


def configure_logging(settings: Settings, stream: TextIO | None = None) -> logging.Logger:
    """Give the access logger one handler in the configured format (idempotent: a second
    call replaces the first's handler); returns the logger.

    Args:
        settings: ``log_format`` (json or text) and ``access_log`` (off: nothing is written).
        stream: Where lines go (default standard error, as uvicorn's own logs).
    """
    logger = logging.getLogger(ACCESS_LOGGER)
    for handler in [h for h in logger.handlers if getattr(h, _HANDLER_MARK, False)]:
        logger.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    setattr(handler, _HANDLER_MARK, True)
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if settings.access_log else logging.WARNING)
    logger.propagate = False
    return logger
