"""Request ids and access logs, as one pure ASGI middleware (:class:`RequestContext`).

* **Request id**: a caller's ``X-Request-ID`` is kept when it is 1 to
  :data:`MAX_REQUEST_ID` characters of ``A-Z a-z 0-9 . _ : -`` (safe in a header, a log line
  and a file name); otherwise, or when absent, the request gets a new one (uuid4, 32 hex
  digits). It is echoed on every answer, errors included (401, 413, 422, 429, 503, and a 500
  this middleware sends itself when the app fails before answering), and set in
  :data:`serving.logs.request_id_var` for the request's duration.
* **Access log**: one line per request on :data:`serving.logs.ACCESS_LOGGER` (see
  :mod:`serving.logs` for its fields), written after the answer is sent. Endpoints add the
  model version and the degraded flag with :func:`note`.

Pure ASGI rather than Starlette's ``BaseHTTPMiddleware``, which runs the app in a task
behind a memory stream (tens of microseconds and a task per request); here the cost is a
header scan, a regex match or ``uuid4``, and one wrapped ``send``.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.logs import ACCESS_LOGGER, request_id_var
from serving.security import send_detail

REQUEST_ID_HEADER = "X-Request-ID"
MAX_REQUEST_ID = 128
REQUEST_ID_PATTERN = r"^[A-Za-z0-9._:\-]{1,128}$"
_VALID = re.compile(REQUEST_ID_PATTERN)
_HEADER = REQUEST_ID_HEADER.lower().encode()
UNMATCHED = "<unmatched>"
"""The path logged for a request no route matched (its raw path could be anything)."""

access_log = logging.getLogger(ACCESS_LOGGER)


def request_id(presented: bytes | None) -> str:
    """The presented id if it is valid, else a new uuid4 (hex)."""
    if presented is not None and len(presented) <= MAX_REQUEST_ID:
        text = presented.decode("latin-1")
        if _VALID.match(text):
            return text
    return uuid.uuid4().hex


def note(
    request: Request, *, model_version: str | None = None, degraded: bool | None = None
) -> None:
    """Add the answer's model version and degraded flag to the request's access line."""
    state = request.scope.setdefault("state", {})
    if model_version is not None:
        state["model_version"] = model_version
    if degraded is not None:
        state["degraded"] = degraded


def _path(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


class RequestContext:
    """ASGI middleware: request id in and out, one access line per request."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        presented = None
        for name, value in scope["headers"]:
            if name == _HEADER:
                presented = value
                break
        rid = request_id(presented)
        encoded = rid.encode()
        status = 500
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (_HEADER, encoded)]
            await send(message)

        token = request_id_var.set(rid)
        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            # Starlette's error middleware answers a 500 without our header; answer it here
            # (the server still logs the traceback: the exception goes on).
            if not started:
                await _internal_error(send, encoded)
            raise
        finally:
            request_id_var.reset(token)
            if access_log.isEnabledFor(logging.INFO):
                _log(scope, rid, status, start)


def _log(scope: Scope, rid: str, status: int, start: float) -> None:
    state: dict[str, Any] = scope.get("state") or {}
    duration_ms = round((time.perf_counter() - start) * 1000, 3)
    method, path = scope["method"], _path(scope)
    access_log.info(
        "%s %s %d %.1fms",
        method,
        path,
        status,
        duration_ms,
        extra={
            "request_id": rid,
            "method": method,
            "path": path,
            "status": status,
            "duration_ms": duration_ms,
            "model_version": state.get("model_version"),
            "degraded": state.get("degraded"),
        },
    )


async def _internal_error(send: Send, rid: bytes) -> None:
    await send_detail(send, 500, "internal server error", (_HEADER, rid))


def document_request_id(schema: dict[str, Any]) -> dict[str, Any]:
    """Add ``X-Request-ID`` to every operation of an OpenAPI ``schema``: an optional header
    parameter and a header of every response (changed in place and returned)."""
    parameter = {
        "name": REQUEST_ID_HEADER,
        "in": "header",
        "required": False,
        "description": (
            f"The caller's id of this request, echoed in the answer's {REQUEST_ID_HEADER}: "
            f"1 to {MAX_REQUEST_ID} characters of A-Z a-z 0-9 . _ : - (anything else is "
            "replaced by a new id). Absent: the server makes one (uuid4, 32 hex digits)."
        ),
        # Unconstrained on purpose: an invalid id is replaced, not refused, so no value of
        # this header makes a request wrong (a fuzzer's "negative" ids get answers too).
        "schema": {"type": "string"},
        "example": "3f2c9a7e5b8d4c1fa0e6b2d9c8f7a1e4",
    }
    header = {
        "description": "The request's id: the caller's when valid, else a new uuid4 (hex).",
        "schema": {"type": "string", "pattern": REQUEST_ID_PATTERN},
    }
    for item in schema.get("paths", {}).values():
        for operation in item.values():
            params = operation.setdefault("parameters", [])
            if not any(p.get("name") == REQUEST_ID_HEADER for p in params):
                params.append(parameter)
            for response in operation.get("responses", {}).values():
                response.setdefault("headers", {})[REQUEST_ID_HEADER] = header
    return schema
