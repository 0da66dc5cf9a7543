"""``GET /metrics``: serving's Prometheus metrics (:mod:`serving.metrics`)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from serving.api.deps import MetricsDep

router = APIRouter(tags=["probes"])


@router.get(
    "/metrics",
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
    },
    summary="Prometheus metrics",
)
def metrics(metrics: MetricsDep) -> Response:
    """Serving's counters, latency histograms (seconds) and the breaker's state, in
    Prometheus' text format; no customer data in any label (see README, Serving)."""
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
