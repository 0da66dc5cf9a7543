"""Deployments: ``nightly`` on a cron schedule, every other flow on demand.

``fitrec serve-flows`` serves them from this process with a Prefect runner (no work pool
needed); ML engineers trigger any of them from the UI, with
``prefect deployment run 'nightly/nightly' -p run_date=2026-11-01``, or run a flow directly
with ``fitrec run <flow> --date ...``.
"""

from __future__ import annotations

from prefect import serve
from prefect.schedules import Cron

from flows.backfill import backfill
from flows.features import build_features
from flows.ingest import ingest
from flows.materialize import materialize
from flows.nightly import nightly
from flows.promote import evaluate_and_promote
from flows.train import train
from pipeline.config import get_settings


def deployments() -> list:
    """One deployment per flow, all named after their flow; nightly carries the schedule."""
    settings = get_settings()
    scheduled = nightly.to_deployment(
        name="nightly",
        schedules=[Cron(settings.schedule_cron, timezone=settings.schedule_timezone)],
        description="Ingest, features, materialise, train, evaluate and promote, report.",
        tags=["fitrec"],
    )
    on_demand = [
        flow.to_deployment(name=flow.name, tags=["fitrec"])
        for flow in (ingest, build_features, materialize, train, evaluate_and_promote, backfill)
    ]
    return [scheduled, *on_demand]


def serve_all() -> None:
    serve(*deployments())
