"""Flow ``build_features``: daily customer, item and session feature snapshots."""

from __future__ import annotations

import uuid
from datetime import date

from prefect import flow, task
from prefect.context import TaskRunContext

from pipeline.config import get_settings
from pipeline.features.build import build_features as build_snapshot
from pipeline.features.build import missing_snapshot_days, snapshot_exists
from pipeline.report import data_fingerprint


def _snapshot_key(context: TaskRunContext, parameters: dict) -> str:
    """Same data dir, day and curated inputs, and the day's snapshot still there: the same
    features (a missing snapshot is always built)."""
    settings = get_settings()
    day = parameters["day"]
    if not snapshot_exists(settings.features_dir, day):
        return f"features-{day}-build-{uuid.uuid4().hex}"
    return f"features-{day}-{data_fingerprint(settings.curated_dir, settings.features_dir, day)}"


@task(cache_key_fn=_snapshot_key, persist_result=True, timeout_seconds=3600)
def build_day(day: date) -> dict[str, int]:
    settings = get_settings()
    return build_snapshot(settings.curated_dir, settings.features_dir, day)


@flow(name="build_features")
def build_features(run_date: date) -> dict[str, dict[str, int]]:
    """Snapshot every ingested day that has none yet, and ``run_date`` itself (skipped when
    its inputs did not change since the last run)."""
    settings = get_settings()
    days = missing_snapshot_days(settings.curated_dir, settings.features_dir, run_date)
    return {day.isoformat(): build_day(day) for day in days}
