"""Probes: ``GET /health`` (the body says ok or degraded), ``/health/live`` (the process
answers) and ``/health/ready`` (a model loaded and the online store reachable, else 503).

Touch no customer data; protected by an API key only when ``FITREC_API_PROTECT_PROBES`` is
set (:func:`serving.app.create_app` adds the dependency when it includes this router).
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from serving.api.deps import LoadedRecommenderDep, RecommenderDep, SettingsDep
from serving.middleware import note

router = APIRouter(tags=["probes"])


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


@router.get(
    "/health",
    response_model=Health,
    summary="Health of the model and the online store",
    response_description="ok or degraded, with the reasons.",
)
async def health(http: Request, recommender: RecommenderDep, settings: SettingsDep) -> Health:
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


@router.get(
    "/health/live",
    response_model=Liveness,
    summary="Liveness: the process answers",
    response_description="The process is up.",
)
async def live() -> Liveness:
    """200 whenever the event loop answers; touches neither the model nor Redis (a
    liveness probe that failed with Redis would restart healthy processes)."""
    return Liveness(status="live")


@router.get(
    "/health/ready",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Not ready, with the reasons."}},
    summary="Readiness: a model loaded and the online store reachable",
    response_description="Ready for traffic.",
)
async def ready(http: Request, recommender: LoadedRecommenderDep) -> JSONResponse:
    """200 only while a model is loaded and the online store answers (one PING to Redis,
    or one read of SQLite, made whatever the circuit breaker's state so that a Redis
    back up is seen without page views); 503 with the reasons otherwise. An empty or
    partial store is still ready (its answers are degraded, see `/health`)."""
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
    answer = Readiness(ready=not reasons, model_version=version, reasons=reasons, details=details)
    return JSONResponse(answer.model_dump(), status_code=503 if reasons else 200)
