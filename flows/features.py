"""Flow ``build_features``: daily customer and item feature snapshots."""

from __future__ import annotations

from datetime import date

from prefect import flow, task

from pipeline.config import get_settings
from pipeline.features import build_features as build_snapshot
from pipeline.features import missing_snapshot_days


@task
def build_day(day: date) -> dict[str, int]:
    settings = get_settings()
    return build_snapshot(settings.curated_dir, settings.features_dir, day)


@flow(name="build_features")
def build_features(run_date: date) -> dict[str, dict[str, int]]:
    """Snapshot every ingested day that has none yet, and always ``run_date`` itself."""
    settings = get_settings()
    days = missing_snapshot_days(settings.curated_dir, settings.features_dir, run_date)
    return {day.isoformat(): build_day(day) for day in days}
