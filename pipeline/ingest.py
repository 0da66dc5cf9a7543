"""Ingest: validate one day's raw drop into curated Parquet and quarantine, losing nothing.

For every raw table of a drop: read it (JSON lines, CSV or Parquet), type it by its
:mod:`pipeline.contracts` contract, pseudonymise customer ids, check references and
duplicates, then write ``curated/<table>/date=<day>/part-0.parquet`` and
``quarantine/<table>/date=<day>/part-0.parquet`` (every rejected row with its reasons).
Raw rows = curated rows + quarantined rows, always; re-running a day rewrites the same files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import orjson
import polars as pl

from pipeline.config import Settings
from pipeline.contracts import (
    CHART_MEASURES,
    CONTRACTS,
    CUSTOMERS,
    SIZES,
    Contract,
    conform,
)
from pipeline.privacy import pseudonymise_column

log = logging.getLogger(__name__)

# Raw file name per table, in the order tables must be ingested (references first).
RAW_FILES: dict[str, str] = {
    "customers": "customers.parquet",
    "items": "items.csv",
    "session_events": "session_events.jsonl",
    "try_ons": "try_ons.jsonl",
    "purchases": "purchases.jsonl",
}
DIMENSIONS = ("customers", "items")
# Events may arrive late (any time before the drop) but not from after the drop's day.
FUTURE_GRACE = timedelta(hours=1)


@dataclass
class TableReport:
    """What happened to one raw table of one drop; ``raw == curated + quarantined``."""

    raw: int = 0
    curated: int = 0
    quarantined: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    redacted_body: int = 0


@dataclass
class IngestReport:
    """Per-table counts for one drop."""

    day: str
    fingerprint: str = ""
    tables: dict[str, TableReport] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "day": self.day,
            "fingerprint": self.fingerprint,
            "tables": {k: asdict(v) for k, v in self.tables.items()},
        }


def drop_fingerprint(drop: Path) -> str:
    """Content hash of a raw drop folder: a changed drop is ingested again, an unchanged one not."""
    digest = hashlib.sha256()
    for name in sorted(RAW_FILES.values()):
        path = drop / name
        digest.update(name.encode())
        if path.exists():
            with path.open("rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
    return digest.hexdigest()


def report_path(curated_dir: Path, day: date) -> Path:
    return curated_dir / "_reports" / f"{day.isoformat()}.json"


def previous_report(curated_dir: Path, day: date) -> dict | None:
    path = report_path(curated_dir, day)
    return json.loads(path.read_text()) if path.exists() else None


def partition(root: Path, table: str, day: date) -> Path:
    return root / table / f"date={day.isoformat()}" / "part-0.parquet"


def _write_atomic(frame: pl.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    frame.write_parquet(tmp)
    os.replace(tmp, path)


def read_raw(path: Path, contract: Contract) -> pl.DataFrame:
    """Read a raw file as all-string columns; unreadable JSON lines become ``__bad_json`` rows."""
    if not path.exists():
        return pl.DataFrame(schema=dict.fromkeys(contract.names, pl.String))
    if path.suffix == ".parquet":
        frame = pl.read_parquet(path)
        return frame.with_columns(pl.all().cast(pl.String))
    if path.suffix == ".csv":
        return pl.read_csv(path, infer_schema=False)
    columns: dict[str, list[str | None]] = {n: [] for n in (*contract.names, "__bad_json")}
    with path.open("rb") as handle:
        for line in handle:
            if not line.strip():
                continue
            try:
                record = orjson.loads(line)
                if not isinstance(record, dict):
                    raise ValueError("not an object")
            except (orjson.JSONDecodeError, ValueError):
                record = {"__bad_json": line.decode("utf-8", "replace")[:500]}
            for name, values in columns.items():
                value = record.get(name)
                values.append(
                    None
                    if value is None
                    else value
                    if isinstance(value, str)
                    else json.dumps(value)
                    if isinstance(value, dict | list)
                    else str(value).lower()
                    if isinstance(value, bool)
                    else str(value)
                )
    return pl.DataFrame(columns, schema=dict.fromkeys(columns, pl.String))


def parse_size_chart(items: pl.DataFrame) -> tuple[pl.DataFrame, pl.Series]:
    """Explode ``size_chart`` and ``stock`` JSON into one row per (item, size).

    Returns the long table and a per-item reason (null when both parse and agree).
    """
    rows: list[dict] = []
    reasons: list[str | None] = []
    for item_id, chart_text, stock_text in items.select("item_id", "size_chart", "stock").rows():
        try:
            chart = json.loads(chart_text) if chart_text else None
            stock = json.loads(stock_text) if stock_text else None
            if not isinstance(chart, dict) or not chart:
                raise ValueError
            sizes = []
            for size, ranges in chart.items():
                if size not in SIZES:
                    raise ValueError
                row = {"item_id": item_id, "size": size, "size_rank": SIZES.index(size)}
                for m in CHART_MEASURES:
                    low, high = ranges[m]
                    if not (0 < float(low) < float(high) < 300):
                        raise ValueError
                    row[f"{m}_min"], row[f"{m}_max"] = float(low), float(high)
                units = int((stock or {}).get(size, 0))
                if units < 0:
                    raise ValueError
                row["stock"] = units
                sizes.append(row)
            rows.extend(sizes)
            reasons.append(None)
        except (ValueError, TypeError, KeyError, json.JSONDecodeError):
            reasons.append("bad_size_chart")
    schema = {
        "item_id": pl.String,
        "size": pl.String,
        "size_rank": pl.Int8,
        **{f"{m}_{b}": pl.Float64 for m in CHART_MEASURES for b in ("min", "max")},
        "stock": pl.Int32,
    }
    return pl.DataFrame(rows, schema=schema), pl.Series("reason", reasons, dtype=pl.String)


def _add_reason(frame: pl.DataFrame, condition: pl.Expr, reason: str) -> pl.DataFrame:
    return frame.with_columns(
        pl.when(condition)
        .then(pl.concat_str([pl.col("reason"), pl.lit(reason)], separator=";", ignore_nulls=True))
        .otherwise(pl.col("reason"))
        .alias("reason")
    )


def _known_keys(root: Path, table: str, key: str, before: date) -> pl.Series:
    """Keys of ``table`` curated on days before ``before`` (for references and duplicates)."""
    paths = sorted((root / table).glob("date=*/part-0.parquet"))
    paths = [p for p in paths if p.parent.name.removeprefix("date=") < before.isoformat()]
    if not paths:
        return pl.Series(key, [], dtype=pl.String)
    return pl.scan_parquet(paths).select(key).unique().collect().get_column(key)


def ingest_drop(drop: Path, day: date, settings: Settings) -> IngestReport:
    """Ingest one day's raw drop folder; idempotent for the same inputs."""
    report = IngestReport(day=day.isoformat(), fingerprint=drop_fingerprint(drop))
    key = settings.pseudonym_key.get_secret_value()
    cutoff = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1) + FUTURE_GRACE
    curated_here: dict[str, pl.DataFrame] = {}

    for table, filename in RAW_FILES.items():
        contract = CONTRACTS[table]
        raw = read_raw(drop / filename, contract)
        frame = _validate(raw, contract, key)
        if contract.timestamp and table not in DIMENSIONS:
            frame = _add_reason(frame, pl.col(contract.timestamp) > cutoff, "future_timestamp")
        sizes: pl.DataFrame | None = None
        if table == "items":
            sizes, chart_reason = parse_size_chart(frame)
            frame = _add_reason(frame, chart_reason.is_not_null(), "bad_size_chart")
        for column, target in contract.references.items():
            target_key = CONTRACTS[target].key[0]
            known = pl.concat(
                [
                    _known_keys(settings.curated_dir, target, target_key, day),
                    curated_here[target].get_column(target_key),
                ]
            )
            frame = _add_reason(
                frame,
                pl.col(column).is_not_null() & ~pl.col(column).is_in(known.implode()),
                f"unknown_{target.removesuffix('s')}",
            )
        # Duplicates: a second valid row with a key seen earlier in this drop, or (for
        # events, which are immutable) a key curated on an earlier day.
        valid = pl.col("reason").is_null()
        frame = _add_reason(
            frame, valid & (valid.cum_sum().over(list(contract.key)) > 1), "duplicate_key"
        )
        if table not in DIMENSIONS:
            seen = _known_keys(settings.curated_dir, table, contract.key[0], day)
            frame = _add_reason(
                frame, pl.col(contract.key[0]).is_in(seen.implode()), "duplicate_key"
            )

        good = frame.filter(pl.col("reason").is_null()).select(contract.names)
        bad = _quarantine_rows(frame.filter(pl.col("reason").is_not_null()), contract, day)
        table_report = TableReport(raw=len(raw), curated=len(good), quarantined=len(bad))
        table_report.reasons = dict(
            sorted(bad.get_column("reason").str.split(";").explode().value_counts().iter_rows())
        )
        if table == "customers":
            good, table_report.redacted_body = redact_without_consent(good)
        if sizes is not None:
            sizes = sizes.filter(pl.col("item_id").is_in(good.get_column("item_id").implode()))
            _write_atomic(sizes, partition(settings.curated_dir, "item_sizes", day))
        curated_here[table] = good
        _write_atomic(good, partition(settings.curated_dir, table, day))
        _write_atomic(bad, partition(settings.quarantine_dir, table, day))
        report.tables[table] = table_report
        log.info(
            "ingest %s %s: raw=%d curated=%d quarantined=%d",
            day,
            table,
            table_report.raw,
            table_report.curated,
            table_report.quarantined,
        )
    path = report_path(settings.curated_dir, day)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.as_dict(), indent=2, sort_keys=True))
    return report


def _validate(raw: pl.DataFrame, contract: Contract, key: str) -> pl.DataFrame:
    """Typed columns, ``reason``, and the raw strings as ``raw_<column>`` for quarantine."""
    typed = conform(raw, contract)
    raw_cols = raw.select(
        pl.col(n).alias(f"raw_{n}")
        if n in raw.columns
        else pl.lit(None, pl.String).alias(f"raw_{n}")
        for n in (*contract.names, "__bad_json")
    )
    frame = pl.concat([typed, raw_cols], how="horizontal").with_columns(
        pl.when(pl.col("raw___bad_json").is_not_null())
        .then(pl.lit("bad_json"))
        .otherwise(pl.col("reason"))
        .alias("reason")
    )
    if "customer_id" in contract.names:
        frame = pseudonymise_column(frame, "customer_id", key)
    return frame


def _quarantine_rows(bad: pl.DataFrame, contract: Contract, day: date) -> pl.DataFrame:
    """Rejected rows as they arrived (strings), with the reasons and the drop's day.

    The customer id is kept only as its pseudonym; body values of customers who did not
    consent are not kept at all.
    """
    columns = []
    for name in contract.names:
        value = pl.col(f"raw_{name}")
        if name == "customer_id":
            value = pl.col("customer_id")
        elif name in contract.sensitive:
            consent = pl.col("raw_body_data_consent").str.to_lowercase().is_in(["true", "1"])
            value = pl.when(consent).then(value).otherwise(None)
        columns.append(value.alias(name))
    return bad.select(
        *columns,
        pl.col("raw___bad_json").alias("raw_line"),
        "reason",
        pl.lit(day.isoformat()).alias("day"),
    )


def redact_without_consent(customers: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """Drop body measurements of customers who did not consent; returns (frame, rows redacted)."""
    sensitive = CUSTOMERS.sensitive
    no_consent = ~pl.col("body_data_consent")
    redacted = customers.with_columns(
        pl.when(no_consent).then(None).otherwise(pl.col(c)).alias(c) for c in sensitive
    )
    return redacted, int(customers.select(no_consent.sum()).item())


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
    contract = CONTRACTS.get(table)
    paths = sorted((curated_dir / table).glob("date=*/part-0.parquet"))
    if up_to is not None:
        paths = [p for p in paths if p.parent.name.removeprefix("date=") <= up_to.isoformat()]
    if not paths:
        if contract is None:
            raise FileNotFoundError(f"no curated partitions of {table} under {curated_dir}")
        return pl.LazyFrame(schema=contract.schema)
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
