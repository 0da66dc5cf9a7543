"""Flow ``ingest``: validate every raw drop (and serving's event log) up to the run date."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from prefect import flow, get_run_logger, task

from pipeline.config import get_settings
from pipeline.data import ingest as ingestion
from pipeline.data.curated import days_to_ingest


@task(retries=2, retry_delay_seconds=[2, 10])
def ingest_day(drop: Path, day: date) -> dict:
    """Ingest one day's drop and serving log, unless exactly these files were ingested."""
    report, skipped = ingestion.ingest_day(drop, day, get_settings())
    if skipped:
        get_run_logger().info("%s: unchanged since last ingest, skipped", day)
        return report
    for table, counts in report["tables"].items():
        get_run_logger().info(
            "%s %s: raw=%d curated=%d quarantined=%d duplicates=%d %s",
            day,
            table,
            counts["raw"],
            counts["curated"],
            counts["quarantined"],
            counts["exact_duplicates"],
            counts["reasons"] or "",
        )
    return report


@flow(name="ingest")
def ingest(run_date: date) -> list[dict]:
    """Ingest all raw drops and serving logs dated on or before ``run_date`` (idempotent)."""
    settings = get_settings()
    days = days_to_ingest(settings.raw_dir, settings.events_dir, run_date)
    if not days:
        raise FileNotFoundError(f"no raw drops on or before {run_date} in {settings.raw_dir}")
    return [ingest_day(folder, day) for day, folder in days]
