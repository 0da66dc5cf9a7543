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

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field

from pipeline.config import Settings, get_settings
from serving.events import EventProcessor, EventTimeError, FeastPusher, SessionEventRequest
from serving.logs import configure_logging
from serving.metrics import Metrics
from serving.middleware import REQUEST_ID_HEADER, RequestContext, document_request_id, note
from serving.recommender import Recommender
from serving.schemas import Recommendation, RecommendationRequest
from serving.security import (
    API_KEY_HEADER,
    ERROR_RESPONSES,
    PROBE_RESPONSES,
    BodyLimit,
    Guard,
    Problem,
    check_configuration,
    require_key,
    validation_error_handler,
)


class EventResponse(BaseModel):
    """An accepted event and the session as it stands after it."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"accepted": True, "degraded": False, "session_events": 4.0, "engagement": 1.79}
            ]
        }
    )

    accepted: bool = Field(
        description="Always true in a 200: the event is in the durable log (ingested nightly).",
        examples=[True],
    )
    degraded: bool = Field(
        description=(
            "The live session state in Redis could not be updated (Redis down or slow): the "
            "event is logged, but the next page view does not see it yet."
        ),
        examples=[False],
    )
    session_events: float | None = Field(
        default=None,
        description="Events in the session so far, this one included (null when degraded).",
        examples=[4.0],
    )
    engagement: float | None = Field(
        default=None,
        description=(
            "log1p of the session's weighted events (a view weighs 1, a purchase 8); "
            "unitless, null when degraded."
        ),
        examples=[1.79],
    )


class Health(BaseModel):
    """The model serving and the online store's state (HTTP 200 even when degraded)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "status": "degraded",
                    "model_version": "3",
                    "online_store": "redis",
                    "reasons": ["redis_unreachable"],
                    "details": ["online store unreachable (TimeoutError)"],
                }
            ]
        }
    )

    status: Literal["ok", "degraded"] = Field(
        description="ok, or degraded when answers are less personal than they could be.",
        examples=["ok"],
    )
    model_version: str = Field(
        description="Registry version of the champion served.", examples=["3"]
    )
    online_store: str = Field(
        description="Where online features live: redis or sqlite.", examples=["redis"]
    )
    reasons: list[str] = Field(
        default_factory=list,
        description="Why degraded: redis_unreachable, store_empty, features_missing.",
        examples=[["redis_unreachable"]],
    )
    details: list[str] = Field(
        default_factory=list,
        description="A sentence per reason.",
        examples=[["online store unreachable (TimeoutError)"]],
    )


class Liveness(BaseModel):
    """The process is up and its event loop answers."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "live"}]})

    status: Literal["live"] = Field(
        description="Always live when there is an answer.", examples=["live"]
    )


ReadinessReason = Literal["no_model", "store_unreachable"]


class Readiness(BaseModel):
    """Whether this process should get traffic: a model loaded and the online store reachable."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"ready": True, "model_version": "3", "reasons": [], "details": []},
                {
                    "ready": False,
                    "model_version": "3",
                    "reasons": ["store_unreachable"],
                    "details": ["online store unreachable (ConnectionError)"],
                },
            ]
        }
    )

    ready: bool = Field(description="True in a 200, false in a 503.", examples=[True])
    model_version: str | None = Field(
        description="Registry version of the loaded model; null when none is loaded.",
        examples=["3"],
    )
    reasons: list[ReadinessReason] = Field(
        default_factory=list,
        description="Why not ready: no_model (none loaded), store_unreachable (no answer from "
        "Redis, or SQLite, within the health timeout of at most 1 s).",
        examples=[["store_unreachable"]],
    )
    details: list[str] = Field(
        default_factory=list,
        description="A sentence per reason.",
        examples=[["online store unreachable (ConnectionError)"]],
    )


# The app's parts live on ``app.state`` from start-up (the lifespan) to shut-down; endpoints
# get them typed through these dependencies. Async so that FastAPI calls them on the event
# loop, not through its thread pool.
async def get_recommender(request: Request) -> Recommender:
    """The app's recommender."""
    return request.app.state.recommender


async def get_processor(request: Request) -> EventProcessor:
    """The app's event processor."""
    return request.app.state.processor


async def get_metrics(request: Request) -> Metrics:
    """The app's Prometheus metrics."""
    return request.app.state.metrics


RecommenderDep = Annotated[Recommender, Depends(get_recommender)]
ProcessorDep = Annotated[EventProcessor, Depends(get_processor)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]


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
    # Added innermost first: RequestContext is outermost, so a 413 of BodyLimit and a CORS
    # preflight carry the request id and are logged too.
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
    app.add_exception_handler(RequestValidationError, validation_error_handler)

    async def event_time_error(request: Request, exc: Exception) -> JSONResponse:
        detail = [{"loc": ["body", "ts"], "msg": str(exc), "type": "event_time", "input": None}]
        return JSONResponse({"detail": detail}, status_code=422)

    app.add_exception_handler(EventTimeError, event_time_error)
    protected = [Depends(require_key)]
    probes = protected if settings.api_protect_probes else []
    probe_responses = PROBE_RESPONSES if probes else {}

    def observe(metrics: Metrics, endpoint: str, start: float) -> None:
        metrics.latency.labels(endpoint).observe(time.perf_counter() - start)

    # The page view runs in the thread pool: its Redis read may wait up to the timeout, and
    # on the event loop that wait stalled every other request (a frozen Redis took the app
    # from about 170 to 17 requests/s). The answer is serialised once, by pydantic-core,
    # instead of validated again against response_model.
    @app.post(
        "/recommendations",
        response_model=Recommendation,
        dependencies=protected,
        responses=ERROR_RESPONSES,
        tags=["recommendations"],
        summary="Recommend items for a page view",
        response_description="The top k items, best first.",
    )
    async def recommendations(
        request: RecommendationRequest,
        http: Request,
        recommender: RecommenderDep,
        metrics: MetricsDep,
    ) -> Response:
        """The top k items for this shopper and session, each with a recommended size,
        P(fits) and reasons, after the retailer's rules. Never fails on a valid request:
        when the online store is down the answer is flagged `degraded` (and may be the
        popularity fallback, `cold_start`). Items the model does not know are ignored and
        listed in `ignored_items`."""
        start = time.perf_counter()
        try:
            answer = await run_in_threadpool(recommender.recommend, request)
            note(http, model_version=answer.model_version, degraded=answer.degraded)
            return Response(answer.model_dump_json(), media_type="application/json")
        except Exception:
            metrics.errors.labels("recommendations").inc()
            raise
        finally:
            observe(metrics, "recommendations", start)

    @app.post(
        "/events",
        response_model=EventResponse,
        dependencies=protected,
        responses=ERROR_RESPONSES,
        tags=["events"],
        summary="Record a shopper's event",
        response_description="Logged durably; the session as it stands now.",
    )
    def events(
        event: SessionEventRequest, http: Request, processor: ProcessorDep, metrics: MetricsDep
    ) -> EventResponse:
        """Append the event to the durable event log (fsynced within
        FITREC_EVENTS_SYNC_SECONDS, 0.2 s by default; the nightly ingest reads it), update the
        session's live state in Redis and push its features to Feast. An event time outside
        the accepted window is a 422 on `ts`. `degraded`: logged, but the live session state
        could not be updated."""
        start = time.perf_counter()
        processor.event_time(event)  # refused (422) outside the window the ingest reads
        try:
            state, degraded = processor.process(event)
        except Exception:
            metrics.errors.labels("events").inc()
            raise
        finally:
            observe(metrics, "events", start)
        note(http, degraded=degraded)
        features = state.features() if state else {}
        # Validated, not passed as keywords: the features dict's values are typed object.
        return EventResponse.model_validate(
            {
                "accepted": True,
                "degraded": degraded,
                "session_events": features.get("session_events"),
                "engagement": features.get("engagement"),
            }
        )

    @app.get(
        "/health",
        response_model=Health,
        dependencies=probes,
        responses=probe_responses,
        tags=["probes"],
        summary="Health of the model and the online store",
        response_description="ok or degraded, with the reasons.",
    )
    async def health(http: Request, recommender: RecommenderDep) -> Health:
        """Always HTTP 200 (kept for monitors that read the body): `status` is `degraded`,
        with reason codes and a sentence each, when Redis is unreachable, the online store
        is empty or too many known customers found no features. For a load balancer use
        `/health/ready`."""
        report = await run_in_threadpool(recommender.health)  # one Redis read, off the loop
        note(http, model_version=recommender.version, degraded=report.status == "degraded")
        return Health(
            status="degraded" if report.status == "degraded" else "ok",
            model_version=recommender.version,
            online_store=settings.online_store,
            reasons=report.reasons,
            details=report.details,
        )

    @app.get(
        "/health/live",
        response_model=Liveness,
        dependencies=probes,
        responses=probe_responses,
        tags=["probes"],
        summary="Liveness: the process answers",
        response_description="The process is up.",
    )
    async def live() -> Liveness:
        """200 whenever the event loop answers; touches neither the model nor Redis (a
        liveness probe that failed with Redis would restart healthy processes)."""
        return Liveness(status="live")

    @app.get(
        "/health/ready",
        response_model=Readiness,
        dependencies=probes,
        responses={
            503: {"model": Readiness, "description": "Not ready, with the reasons."},
            **probe_responses,
        },
        tags=["probes"],
        summary="Readiness: a model loaded and the online store reachable",
        response_description="Ready for traffic.",
    )
    async def ready(http: Request) -> JSONResponse:
        """200 only while a model is loaded and the online store answers (one PING to Redis,
        or one read of SQLite, made whatever the circuit breaker's state so that a Redis
        back up is seen without page views); 503 with the reasons otherwise. An empty or
        partial store is still ready (its answers are degraded, see `/health`)."""
        recommender: Recommender | None = getattr(http.app.state, "recommender", None)
        reasons: list[ReadinessReason] = []
        details: list[str] = []
        version = None
        if recommender is None:
            reasons.append("no_model")
            details.append("no model loaded yet")
        else:
            version = recommender.version
            reachable, why = await run_in_threadpool(recommender.store_health.reachable)
            if not reachable:
                reasons.append("store_unreachable")
                details.append(why or "online store unreachable")
        note(http, model_version=version, degraded=bool(reasons))
        answer = Readiness(
            ready=not reasons, model_version=version, reasons=reasons, details=details
        )
        return JSONResponse(answer.model_dump(), status_code=503 if reasons else 200)

    @app.get(
        "/metrics",
        dependencies=probes,
        response_class=Response,
        responses={
            200: {
                "content": {
                    CONTENT_TYPE_LATEST.split(";")[0]: {
                        "schema": {"type": "string"},
                        "example": "# HELP fitrec_model_swaps_total Champion model versions "
                        "hot-swapped in\n# TYPE fitrec_model_swaps_total counter\n"
                        "fitrec_model_swaps_total 0.0\n",
                    }
                },
                "description": "Prometheus text exposition format (version 0.0.4).",
            },
            **probe_responses,
        },
        tags=["probes"],
        summary="Prometheus metrics",
    )
    def metrics(metrics: MetricsDep) -> Response:
        """Serving's counters, latency histograms (seconds) and the breaker's state, in
        Prometheus' text format; no customer data in any label (see README, Serving)."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_request_id(default_openapi())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented extension
    return app
