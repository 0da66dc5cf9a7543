"""HTTP adapter: a thin FastAPI app around the recommender and the event processor.

``POST /recommendations``, ``POST /events``, ``GET /health`` and ``GET /metrics``
(Prometheus). Its OpenAPI spec (``/openapi.json``) is the contract with the API layer; a
request with bad fields gets a 422 naming them.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel

from pipeline.config import Settings, get_settings
from serving.events import EventProcessor, FeastPusher, SessionEventRequest
from serving.recommender import Recommendation, RecommendationRequest, Recommender

BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class EventResponse(BaseModel):
    accepted: bool
    degraded: bool
    session_events: float | None = None
    engagement: float | None = None


class Health(BaseModel):
    status: str
    model_version: str
    online_store: str


class Metrics:
    """Prometheus metrics of one app (own registry: several apps can live in one process)."""

    def __init__(self, recommender: Recommender, processor: EventProcessor):
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
        counters = recommender.counters
        gauges = {
            "fitrec_degraded_answers_total": lambda: counters.degraded,
            "fitrec_fallback_answers_total": lambda: counters.fallback,
            "fitrec_model_swaps_total": lambda: counters.swaps,
            "fitrec_feature_cache_hit_ratio": lambda: (
                counters.feature_hits / max(counters.feature_hits + counters.feature_misses, 1)
            ),
            "fitrec_answer_cache_hit_ratio": lambda: (
                counters.answer_hits / max(counters.answer_hits + counters.answer_misses, 1)
            ),
            "fitrec_events_accepted_total": lambda: processor.accepted,
            "fitrec_events_degraded_total": lambda: processor.degraded,
        }
        for name, read in gauges.items():
            Gauge(name, name.replace("_", " "), registry=self.registry).set_function(read)


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
    with a clear error when there is none)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        rec = recommender or Recommender.from_registry(settings)
        pusher = FeastPusher(rec.features.fs) if settings.redis_url else None
        proc = processor or EventProcessor(settings, rec.sessions, pusher)
        if watch:
            rec.watch()
        app.state.recommender = rec
        app.state.processor = proc
        app.state.metrics = Metrics(rec, proc)
        yield
        rec.close()
        proc.log.close()

    app = FastAPI(
        title="fitrec serving",
        version="1",
        description="Fit-aware, session-aware recommendations for every page view.",
        lifespan=lifespan,
    )

    def observe(metrics: Metrics, endpoint: str, start: float) -> None:
        metrics.latency.labels(endpoint).observe(time.perf_counter() - start)

    # Async on purpose: a page view is about a millisecond of CPU with one short Redis read,
    # so it runs on the event loop; a thread-pool hop per request costs more than it saves
    # and worker processes (``fitrec serve --workers N``) give the parallelism. The answer is
    # serialised once, by pydantic-core, instead of validated again against response_model.
    @app.post("/recommendations", response_model=Recommendation)
    async def recommendations(
        request: RecommendationRequest, recommender: RecommenderDep, metrics: MetricsDep
    ) -> Response:
        start = time.perf_counter()
        try:
            answer = recommender.recommend(request)
            return Response(answer.model_dump_json(), media_type="application/json")
        except Exception:
            metrics.errors.labels("recommendations").inc()
            raise
        finally:
            observe(metrics, "recommendations", start)

    @app.post("/events", response_model=EventResponse)
    def events(
        event: SessionEventRequest, processor: ProcessorDep, metrics: MetricsDep
    ) -> EventResponse:
        start = time.perf_counter()
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

    @app.get("/health", response_model=Health)
    async def health(recommender: RecommenderDep) -> Health:
        return Health(
            status="ok", model_version=recommender.version, online_store=settings.online_store
        )

    @app.get("/metrics")
    def metrics(metrics: MetricsDep) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
