"""HTTP adapter: a thin FastAPI app around the recommender and the event processor.

``POST /recommendations``, ``POST /events``, ``GET /health`` and ``GET /metrics``
(Prometheus). Its OpenAPI spec (``/openapi.json``) is the contract with the API layer, every
answer included (401, 413, 422, 429): a request with bad fields gets a 422 naming them.

Who may call and how much is :mod:`serving.security` (API keys, rate limits, body caps);
Redis calls go through one circuit breaker (:mod:`serving.breaker`) and never run on the event
loop, so a frozen Redis neither stalls other requests nor costs more than microseconds per
request once the breaker is open.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from pydantic import BaseModel, Field

from pipeline.config import Settings, get_settings
from serving.events import EventProcessor, EventTimeError, FeastPusher, SessionEventRequest
from serving.health import StoreDegradedCollector
from serving.recommender import Recommendation, RecommendationRequest, Recommender
from serving.security import (
    ERROR_RESPONSES,
    BodyLimit,
    Guard,
    Problem,
    check_configuration,
    require_key,
    validation_error_handler,
)

BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class EventResponse(BaseModel):
    accepted: bool
    degraded: bool
    session_events: float | None = None
    engagement: float | None = None


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    model_version: str
    online_store: str
    reasons: list[str] = Field(
        default_factory=list,
        description="Why degraded: redis_unreachable, store_empty, features_missing.",
    )
    details: list[str] = Field(default_factory=list, description="A sentence per reason.")


class ServingCollector(Collector):
    """The recommender's, event processor's, breaker's and guard's own counts, read at scrape
    time: counters as counters (``*_total``), the cache as hit and miss counters (a rate of
    the two is the hit ratio over any window), the breaker's state as a gauge."""

    def __init__(self, recommender: Recommender, processor: EventProcessor, guard: Guard):
        self.recommender, self.processor, self.guard = recommender, processor, guard

    def collect(self) -> Iterator[Metric]:
        counts = self.recommender.counters
        breaker = self.recommender.breaker
        totals = {
            "fitrec_degraded_answers": (
                "Page views answered degraded (online features or session state unavailable, "
                "or the model failed)",
                counts.degraded,
            ),
            "fitrec_fallback_answers": (
                "Page views answered with the popularity fallback because the model failed",
                counts.fallback,
            ),
            "fitrec_model_swaps": ("Champion model versions hot-swapped in", counts.swaps),
            "fitrec_events_accepted": (
                "Session events written to the durable event log",
                self.processor.accepted,
            ),
            "fitrec_events_degraded": (
                "Accepted events whose live session state could not be updated in Redis",
                self.processor.degraded,
            ),
            "fitrec_redis_breaker_opened": (
                "Times serving's Redis circuit breaker opened after repeated failures",
                breaker.opened,
            ),
            "fitrec_redis_short_circuited": (
                "Redis calls not made because the circuit breaker was open",
                breaker.short_circuited,
            ),
            "fitrec_auth_refused": (
                "Requests refused for a missing or unknown API key",
                self.guard.refused,
            ),
            "fitrec_rate_limited": (
                "Requests refused by the per-key rate limit (HTTP 429)",
                self.guard.limited,
            ),
        }
        for name, (text, value) in totals.items():
            yield CounterMetricFamily(name, text, value=value)
        for cache, hits, misses in (
            ("feature", counts.feature_hits, counts.feature_misses),
            ("answer", counts.answer_hits, counts.answer_misses),
        ):
            lookups = CounterMetricFamily(
                f"fitrec_{cache}_cache_lookups",
                f"Lookups of the {cache} cache by result (hit ratio: rate of hits over all)",
                labels=["result"],
            )
            lookups.add_metric(["hit"], hits)
            lookups.add_metric(["miss"], misses)
            yield lookups
        yield GaugeMetricFamily(
            "fitrec_redis_breaker_state",
            "Serving's Redis circuit breaker: 0 closed, 1 probing (half-open), 2 open",
            value=breaker.code,
        )


class Metrics:
    """Prometheus metrics of one app (own registry: several apps can live in one process)."""

    def __init__(self, recommender: Recommender, processor: EventProcessor, guard: Guard):
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "fitrec_request_seconds",
            "Request latency by endpoint",
            ["endpoint"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.errors = Counter(
            "fitrec_errors_total", "Requests that failed", ["endpoint"], registry=self.registry
        )
        self.registry.register(ServingCollector(recommender, processor, guard))
        self.registry.register(StoreDegradedCollector(recommender.store_health))


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
        app.state.metrics = Metrics(rec, proc, guard)
        yield
        rec.close()
        proc.log.close()

    app = FastAPI(
        title="fitrec serving",
        version="1",
        description="Fit-aware, session-aware recommendations for every page view.",
        lifespan=lifespan,
        responses={400: {"model": Problem, "description": "Body could not be read."}},
    )
    app.state.guard = guard
    app.add_middleware(BodyLimit, max_bytes=settings.api_max_body_bytes)
    app.add_exception_handler(RequestValidationError, validation_error_handler)

    async def event_time_error(request: Request, exc: Exception) -> JSONResponse:
        detail = [{"loc": ["body", "ts"], "msg": str(exc), "type": "event_time", "input": None}]
        return JSONResponse({"detail": detail}, status_code=422)

    app.add_exception_handler(EventTimeError, event_time_error)
    protected = [Depends(require_key)]
    probes = protected if settings.api_protect_probes else []

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
    )
    async def recommendations(
        request: RecommendationRequest, recommender: RecommenderDep, metrics: MetricsDep
    ) -> Response:
        start = time.perf_counter()
        try:
            answer = await run_in_threadpool(recommender.recommend, request)
            return Response(answer.model_dump_json(), media_type="application/json")
        except Exception:
            metrics.errors.labels("recommendations").inc()
            raise
        finally:
            observe(metrics, "recommendations", start)

    @app.post(
        "/events", response_model=EventResponse, dependencies=protected, responses=ERROR_RESPONSES
    )
    def events(
        event: SessionEventRequest, processor: ProcessorDep, metrics: MetricsDep
    ) -> EventResponse:
        start = time.perf_counter()
        processor.event_time(event)  # refused (422) outside the window the ingest reads
        try:
            state, degraded = processor.process(event)
        except Exception:
            metrics.errors.labels("events").inc()
            raise
        finally:
            observe(metrics, "events", start)
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

    probe_responses: dict[int | str, dict[str, Any]] = (
        {k: ERROR_RESPONSES[k] for k in (401, 429)} if probes else {}
    )

    @app.get("/health", response_model=Health, dependencies=probes, responses=probe_responses)
    async def health(recommender: RecommenderDep) -> Health:
        report = await run_in_threadpool(recommender.health)  # one Redis read, off the loop
        return Health(
            status="degraded" if report.status == "degraded" else "ok",
            model_version=recommender.version,
            online_store=settings.online_store,
            reasons=report.reasons,
            details=report.details,
        )

    @app.get(
        "/metrics",
        dependencies=probes,
        response_class=Response,
        responses={
            200: {
                "content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}},
                "description": "Prometheus text exposition.",
            },
            **probe_responses,
        },
    )
    def metrics(metrics: MetricsDep) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
