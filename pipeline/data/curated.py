"""Reading what ingest wrote: curated partitions, dimensions as of a day, which days to ingest.

Curated tables live at ``curated/<table>/date=<day>/part-0.parquet``; the stages after ingest
(features, examples, evaluation, reports) read them only through these functions. A day
being written sits in ``<data_dir>/_staging/`` (:mod:`pipeline.data.staging`) until it is
whole; these readers glob only ``curated/<table>/date=*/part-0.parquet`` and the reports, so
they never see a staged or half-written day.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import polars as pl

from pipeline.data.contracts import CHART_MEASURES, CONTRACTS
from pipeline.data.sizes import item_sizes_schema

# Serving's event log: a file's name says which table its lines belong to (anything else is
# session events, ``serving-<host>-<pid>.jsonl``).
LOG_PREFIXES: dict[str, str] = {"exposures-": "exposures", "outcomes-": "outcomes"}
LOG_TABLES = ("session_events", *LOG_PREFIXES.values())


def serving_logs(events_dir: Path, day: date) -> dict[str, list[Path]]:
    """What serving logged on ``day`` (its durable log), as extra sources per table:
    ``exposures-*.jsonl`` (answers served), ``outcomes-*.jsonl`` (clicks, carts, purchases,
    returns) and every other ``*.jsonl`` (session events).

    A missing or empty day folder gives no files; anything there that is not a regular
    ``*.jsonl`` file (a stray folder of that name) is not serving's and is left alone.
    """
    logs = sorted(p for p in (events_dir / day.isoformat()).glob("*.jsonl") if p.is_file())
    routed: dict[str, list[Path]] = {table: [] for table in LOG_TABLES}
    for path in logs:
        table = next(
            (t for prefix, t in LOG_PREFIXES.items() if path.name.startswith(prefix)),
            "session_events",
        )
        routed[table].append(path)
    return routed


def days_to_ingest(raw_dir: Path, events_dir: Path, up_to: date) -> list[tuple[date, Path]]:
    """Days with a raw drop or a serving log, on or before ``up_to``; oldest first."""
    days = dict(drops_up_to(raw_dir, up_to))
    for folder in events_dir.glob("????-??-??") if events_dir.exists() else []:
        try:
            day = date.fromisoformat(folder.name)
        except ValueError:
            continue
        if day <= up_to and any(serving_logs(events_dir, day).values()):
            days.setdefault(day, raw_dir / day.isoformat())
    return sorted(days.items())


def report_path(curated_dir: Path, day: date) -> Path:
    return curated_dir / "_reports" / f"{day.isoformat()}.json"


def previous_report(curated_dir: Path, day: date) -> dict | None:
    path = report_path(curated_dir, day)
    return json.loads(path.read_text()) if path.exists() else None


def partition(root: Path, table: str, day: date) -> Path:
    return root / table / f"date={day.isoformat()}" / "part-0.parquet"


ITEM_SIZES_SCHEMA = item_sizes_schema(CHART_MEASURES)

# --- reading curated tables -----------------------------------------------------------------


def drops_up_to(raw_dir: Path, day: date) -> list[tuple[date, Path]]:
    """Raw drop folders (named YYYY-MM-DD) dated on or before ``day``, oldest first."""
    drops = []
    for folder in sorted(raw_dir.glob("????-??-??")):
        try:
            drop_day = date.fromisoformat(folder.name)
        except ValueError:
            continue
        if drop_day <= day:
            drops.append((drop_day, folder))
    return drops


def scan_curated(curated_dir: Path, table: str, up_to: date | None = None) -> pl.LazyFrame:
    """All curated partitions of a table (optionally only days <= ``up_to``)."""
    paths = sorted((curated_dir / table).glob("date=*/part-0.parquet"))
    if up_to is not None:
        paths = [p for p in paths if p.parent.name.removeprefix("date=") <= up_to.isoformat()]
    if not paths:
        schema = ITEM_SIZES_SCHEMA if table == "item_sizes" else CONTRACTS[table].schema
        return pl.LazyFrame(schema=schema)
    return pl.scan_parquet(paths, hive_partitioning=True).with_columns(
        pl.col("date").cast(pl.String)
    )


DIMENSION_KEYS = {
    "customers": ["customer_id"],
    "items": ["item_id"],
    "item_sizes": ["item_id", "size"],
}


def current_dimension(curated_dir: Path, table: str, up_to: date | None = None) -> pl.DataFrame:
    """The latest version of each customer, item or item size as of ``up_to``."""
    scanned = scan_curated(curated_dir, table, up_to)
    if "date" not in scanned.collect_schema().names():
        return scanned.collect()
    return (
        scanned.sort("date")
        .group_by(DIMENSION_KEYS[table], maintain_order=True)
        .last()
        .drop("date")
        .collect()
    )
