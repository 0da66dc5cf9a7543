"""Flow ``ingest``: validate every raw drop up to the run date into curated Parquet."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from prefect import flow, get_run_logger, task

from pipeline.config import get_settings
from pipeline.ingest import drop_fingerprint, drops_up_to, ingest_drop, previous_report


@task(retries=2, retry_delay_seconds=[2, 10])
def ingest_day(drop: Path, day: date) -> dict:
    """Ingest one drop, unless exactly this drop was ingested already."""
    settings = get_settings()
    previous = previous_report(settings.curated_dir, day)
    if previous and previous.get("fingerprint") == drop_fingerprint(drop):
        get_run_logger().info("%s: unchanged since last ingest, skipped", day)
        return previous
    report = ingest_drop(drop, day, settings).as_dict()
    for table, counts in report["tables"].items():
        get_run_logger().info(
            "%s %s: raw=%d curated=%d quarantined=%d %s",
            day,
            table,
            counts["raw"],
            counts["curated"],
            counts["quarantined"],
            counts["reasons"] or "",
        )
    return report


@flow(name="ingest")
def ingest(run_date: date) -> list[dict]:
    """Ingest all raw drops dated on or before ``run_date`` (oldest first; idempotent)."""
    settings = get_settings()
    drops = drops_up_to(settings.raw_dir, run_date)
    if not drops:
        raise FileNotFoundError(f"no raw drops on or before {run_date} in {settings.raw_dir}")
    return [ingest_day(folder, day) for day, folder in drops]
