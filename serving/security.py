"""Who may call the API, how often, and with how much: API keys, rate limits, body caps.

* **API keys** travel in the ``X-API-Key`` header (FastAPI's :class:`APIKeyHeader`, so the
  OpenAPI spec documents the scheme). Settings hold only their SHA-256 digests
  (``FITREC_API_KEY_HASHES``, comma-separated, several at once so a key can be rotated: add
  the new digest, move the callers, drop the old one). A presented key is hashed and compared
  with every digest in constant time. Hash a key with
  ``python -m serving.security hash-key`` (reads the key from standard input).
* **No keys configured**: the embedded (laptop, demo) profile serves openly and warns at
  start-up; the production profile refuses to start.
* **Rate limits** per key (per client address when open) with `limits`
  (the library behind slowapi, used directly: one sliding-window counter in memory per
  process, no decorator per endpoint); over the limit is a 429 with ``Retry-After``.
* **Bodies** are capped before anything parses them (:class:`BodyLimit`): a
  ``Content-Length`` over the cap, or a streamed body that grows past it, is a 413.
* **422 answers** keep each error's ``loc``, ``msg`` and ``type`` and at most a short,
  JSON-safe prefix of the offending input (NaN, Infinity and 1e400 included), never the body.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import sys
import time
from collections.abc import Sequence
from typing import Annotated, Any

import orjson
from fastapi import HTTPException, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader
from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage
from limits.strategies import SlidingWindowCounterRateLimiter
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipeline.config import Settings
from serving.metrics import GuardMetrics

log = logging.getLogger(__name__)

API_KEY_HEADER = "X-API-Key"
INPUT_PREFIX = 40  # characters of an offending input a 422 may echo

api_key_scheme = APIKeyHeader(
    name=API_KEY_HEADER,
    auto_error=False,
    description="An API key; the server keeps only its SHA-256 digest.",
)


class Problem(BaseModel):
    """An error answer (401, 413, 429, 500): what went wrong, in a sentence."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"detail": "rate limit 1000 per 1 second exceeded"}]}
    )

    detail: str = Field(
        description="What went wrong, for the caller's logs (no personal data).",
        examples=["a valid API key is required in the X-API-Key header"],
    )


class FieldError(BaseModel):
    """One reason a request was refused: where, why, and a short prefix of the input."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "loc": ["body", "k"],
                    "msg": "Input should be less than or equal to 100",
                    "type": "less_than_equal",
                    "input": "500",
                }
            ]
        }
    )

    loc: list[str | int] = Field(
        description="Where: body, query or header, then the field's path (names, list indices).",
        examples=[["body", "session_items", 3]],
    )
    msg: str = Field(
        description="Why, in a sentence (at most 200 characters).",
        examples=["Input should be less than or equal to 100"],
    )
    type: str = Field(
        description="The error's code (pydantic's, or event_time for an event time outside "
        "the accepted window).",
        examples=["less_than_equal"],
    )
    input: str | None = Field(
        default=None,
        description=f"At most {INPUT_PREFIX} characters of the refused value (then ...).",
        examples=["500"],
    )


class ValidationProblem(BaseModel):
    """A 422: the request's fields that were refused."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "detail": [
                        {
                            "loc": ["body", "k"],
                            "msg": "Input should be less than or equal to 100",
                            "type": "less_than_equal",
                            "input": "500",
                        }
                    ]
                }
            ]
        }
    )

    detail: list[FieldError] = Field(description="Each refused field, with the reason.")


def hash_key(key: str) -> str:
    """The SHA-256 hex digest settings keep for ``key``."""
    return hashlib.sha256(key.encode("utf8")).hexdigest()


def check_configuration(settings: Settings) -> None:
    """Refuse to serve production without API keys; warn when the embedded profile is open.

    Raises:
        RuntimeError: Production profile and no ``FITREC_API_KEY_HASHES``.
    """
    if settings.api_key_hashes:
        return
    if settings.profile == "production":
        raise RuntimeError(
            "FITREC_API_KEY_HASHES is empty: the production profile does not serve an open API "
            "(hash a key with `python -m serving.security hash-key`)"
        )
    log.warning("no FITREC_API_KEY_HASHES: the API is open to anyone who can reach it")


class Guard:
    """Authenticates a request's key and charges its rate limit (one per app)."""

    def __init__(self, settings: Settings):
        self.digests = [bytes.fromhex(h) for h in settings.api_key_hashes]
        self.limits: list[RateLimitItem] = parse_many(settings.api_rate_limit)
        self.limiter = SlidingWindowCounterRateLimiter(MemoryStorage())
        self.refused = 0
        self.limited = 0
        self.metrics = GuardMetrics()  # exported; the ints above are this process's

    @property
    def open(self) -> bool:
        """No keys configured: anyone may call (embedded profile only)."""
        return not self.digests

    def caller(self, key: str | None, address: str) -> str:
        """Who is calling: a key's short digest, or ``addr:<address>`` when the API is open.

        Raises:
            HTTPException: 401 for a missing or unknown key.
        """
        if self.open:
            return f"addr:{address}"
        if key:
            digest = hashlib.sha256(key.encode("utf8")).digest()
            # Every digest is compared (no early exit) in constant time.
            found = 0
            for known in self.digests:
                found |= hmac.compare_digest(digest, known)
            if found:
                return "key:" + digest.hex()[:16]
        self.refused += 1
        self.metrics.refused.inc()
        raise HTTPException(
            status_code=401,
            detail=f"a valid API key is required in the {API_KEY_HEADER} header",
            headers={"WWW-Authenticate": API_KEY_HEADER},
        )

    def charge(self, caller: str) -> None:
        """Count one request against ``caller``'s limits.

        Raises:
            HTTPException: 429 with ``Retry-After`` (whole seconds) over the limit.
        """
        for item in self.limits:
            if not self.limiter.hit(item, caller):
                self.limited += 1
                self.metrics.limited.inc()
                reset = self.limiter.get_window_stats(item, caller).reset_time
                wait = max(1, math.ceil(reset - time.time()))
                raise HTTPException(
                    status_code=429,
                    detail=f"rate limit {item} exceeded",
                    headers={"Retry-After": str(wait)},
                )


async def require_key(
    request: Request, key: Annotated[str | None, Security(api_key_scheme)] = None
) -> str:
    """Dependency of every protected endpoint: the caller, authenticated and charged."""
    guard: Guard = request.app.state.guard
    address = request.client.host if request.client else "unknown"
    caller = guard.caller(key, address)
    guard.charge(caller)
    return caller


def _problem(description: str, example: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": Problem,
        "description": description,
        "content": {"application/json": {"example": {"detail": example}}},
        **extra,
    }


UNAUTHORIZED = _problem(
    f"Missing or unknown API key (send it in {API_KEY_HEADER}).",
    f"a valid API key is required in the {API_KEY_HEADER} header",
    headers={
        "WWW-Authenticate": {
            "schema": {"type": "string"},
            "description": f"The scheme: {API_KEY_HEADER}.",
        }
    },
)
RATE_LIMITED = _problem(
    "Rate limit exceeded (FITREC_API_RATE_LIMIT, per key or per client address).",
    "rate limit 1000 per 1 second exceeded",
    headers={
        "Retry-After": {
            "schema": {"type": "integer", "minimum": 1},
            "description": "Seconds to wait before the next request is allowed.",
        }
    },
)
TOO_LARGE = _problem(
    "Request body larger than FITREC_API_MAX_BODY_BYTES (refused before parsing).",
    "request body over 65536 bytes",
)
PROBE_RESPONSES: dict[int | str, dict[str, Any]] = {401: UNAUTHORIZED, 429: RATE_LIMITED}
"""The answers of a probe (/health*, /metrics) besides its own, when probes need a key."""

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: UNAUTHORIZED,
    413: TOO_LARGE,
    422: {
        "model": ValidationProblem,
        "description": "Fields refused, with the reasons (each with a short input prefix).",
    },
    429: RATE_LIMITED,
}
"""The error answers of a protected endpoint with a body."""


def _safe_input(value: Any) -> str | None:
    """A short, JSON-safe prefix of an offending input (never the whole body)."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value
    elif isinstance(value, float) and not math.isfinite(value):
        text = "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    elif isinstance(value, bool | int | float):
        text = repr(value)
    else:
        # Containers: their JSON, non-finite floats as null, cut short below.
        try:
            text = orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
        except (TypeError, orjson.JSONEncodeError):  # an integer past 64 bits, say
            text = repr(value)
    return text if len(text) <= INPUT_PREFIX else text[:INPUT_PREFIX] + "..."


def field_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """Pydantic/FastAPI errors as :class:`FieldError` dicts (``loc``, ``msg``, ``type``,
    a short ``input``)."""
    out = []
    for error in errors:
        out.append(
            {
                "loc": [p if isinstance(p, int) else str(p) for p in error.get("loc", ())],
                "msg": str(error.get("msg", ""))[:200],
                "type": str(error.get("type", "")),
                "input": _safe_input(error.get("input")),
            }
        )
    return out


async def validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """422 for a refused request: where and why, never more than a prefix of the input."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    return JSONResponse({"detail": field_errors(errors)}, status_code=422)


async def send_detail(send: Send, status: int, detail: str, *headers: tuple[bytes, bytes]) -> None:
    """Answer ``{"detail": ...}`` with ``status`` straight on the ASGI channel, for
    middleware that must answer before (or instead of) the app."""
    payload = orjson.dumps({"detail": detail})
    start = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        *headers,
    ]
    await send({"type": "http.response.start", "status": status, "headers": start})
    await send({"type": "http.response.body", "body": payload})


class BodyLimit:
    """ASGI middleware: refuse a body over ``max_bytes`` with a 413 before anything parses it.

    A declared ``Content-Length`` over the cap is refused unread; otherwise the body is read
    (at most ``max_bytes`` plus one chunk) and replayed to the app, so a chunked body that
    grows past the cap is refused too.
    """

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared < 0 or declared > self.max_bytes:
                    await self._refuse(send)
                    return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break  # the client left: let the app see the disconnect
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send) -> None:
        detail = f"request body over {self.max_bytes} bytes"
        await send_detail(send, 413, detail, (b"connection", b"close"))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m serving.security hash-key``: print the digest of the key on stdin."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args != ["hash-key"]:
        print("usage: python -m serving.security hash-key  (the key on standard input)")
        return 2
    key = sys.stdin.readline().rstrip("\r\n")
    if not key:
        print("no key on standard input", file=sys.stderr)
        return 1
    print(hash_key(key))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
