"""HTTP adapter: a thin FastAPI app around the recommender and the event processor.

``POST /recommendations``, ``POST /events``, ``GET /health``, ``GET /health/live``,
``GET /health/ready`` and ``GET /metrics`` (Prometheus). Its OpenAPI spec (``/openapi.json``)
is the contract with the API layer: every field described, with examples, and every answer
included (401, 413, 422, 429, 503): a request with bad fields gets a 422 naming them. Every
answer carries ``X-Request-ID`` and every request leaves one access line
(:mod:`serving.middleware`, :mod:`serving.logs`); CORS only for ``FITREC_CORS_ORIGINS``.

Who may call and how much is :mod:`serving.security` (API keys, rate limits, body caps);
Redis calls go through one circuit breaker (:mod:`serving.breaker`) and never run on the event
loop, so a frozen Redis neither stalls other requests nor costs more than microseconds per
request once the breaker is open.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware

from pipeline.config import Settings, get_settings
from serving.api import events, metrics, probes, recommendations
from serving.events import EventProcessor, EventTimeError, FeastPusher
from serving.logs import configure_logging
from serving.metrics import Metrics
from serving.middleware import REQUEST_ID_HEADER, RequestContext, document_request_id
from serving.recommender import Recommender
from serving.security import (
    API_KEY_HEADER,
    PROBE_RESPONSES,
    BodyLimit,
    Guard,
    Problem,
    check_configuration,
    require_key,
    validation_error_handler,
)

TAGS = [
    {"name": "recommendations", "description": "Top-k items for a page view."},
    {"name": "events", "description": "What shoppers do, as it happens."},
    {
        "name": "probes",
        "description": "Health, liveness, readiness and Prometheus metrics (no customer data).",
    },
]

DESCRIPTION = """Fit-aware, session-aware recommendations for every page view.

Callers send an API key in `X-API-Key` (unless the embedded profile runs open). Every answer
carries `X-Request-ID`: the caller's own when it is 1 to 128 characters of
`A-Z a-z 0-9 . _ : -`, else a new one (uuid4, hex); the access log line of the request holds
the same id. Errors: 401 (key), 413 (body too large), 422 (fields refused, each named),
429 (rate limit, with `Retry-After` in seconds), 503 (`/health/ready` only: not ready).
"""


def create_app(
    settings: Settings | None = None,
    recommender: Recommender | None = None,
    processor: EventProcessor | None = None,
    watch: bool = True,
) -> FastAPI:
    """The app; without a recommender it loads the champion at start-up (or refuses to start
    with a clear error when there is none).

    Raises:
        RuntimeError: The production profile without API keys (see :mod:`serving.security`).
    """
    settings = settings or get_settings()
    check_configuration(settings)
    configure_logging(settings)
    guard = Guard(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        rec = recommender or Recommender.from_registry(settings)
        pusher = FeastPusher(rec.features.fs) if settings.redis_url else None
        proc = processor or EventProcessor(settings, rec.sessions, pusher)
        if watch:
            rec.watch()
        app.state.recommender = rec
        app.state.processor = proc
        app.state.metrics = Metrics(
            [*rec.metric_families(), *proc.metrics.families, *guard.metrics.families]
        )
        yield
        app.state.metrics.close()
        rec.close()
        proc.close()

    app = FastAPI(
        title="fitrec serving",
        version="1",
        description=DESCRIPTION,
        openapi_tags=TAGS,
        lifespan=lifespan,
        responses={400: {"model": Problem, "description": "Body could not be read."}},
    )
    app.state.guard = guard
    app.state.settings = settings
    _middleware(app, settings)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(EventTimeError, events.event_time_error)
    protected = [Depends(require_key)]
    app.include_router(recommendations.router, dependencies=protected)
    app.include_router(events.router, dependencies=protected)
    probes_protected = protected if settings.api_protect_probes else []
    for router in (probes.router, metrics.router):
        app.include_router(
            router,
            dependencies=probes_protected,
            responses=PROBE_RESPONSES if probes_protected else None,
        )
    _document_request_id(app)
    return app


def _middleware(app: FastAPI, settings: Settings) -> None:
    """Added innermost first: RequestContext is outermost, so a 413 of BodyLimit and a CORS
    preflight carry the request id and are logged too."""
    app.add_middleware(BodyLimit, max_bytes=settings.api_max_body_bytes)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=[API_KEY_HEADER, REQUEST_ID_HEADER, "Content-Type"],
            expose_headers=[REQUEST_ID_HEADER, "Retry-After"],
            max_age=600,
        )
    app.add_middleware(RequestContext)


def _document_request_id(app: FastAPI) -> None:
    """``X-Request-ID`` in every operation of the OpenAPI document (built once, on demand)."""
    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_request_id(default_openapi())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented extension
