"""Feature engineering in Polars, and the one declaration of every feature's name and type.

The Feast repository, the model and serving all build from :data:`CUSTOMER_FEATURES` and
:data:`ITEM_FEATURES`; nothing else lists feature names. Each snapshot carries an
``event_timestamp`` (the end of the day it summarises) for point-in-time joins.

Body measurements reach features only for customers who consented, and only as coarse
standard scores against fixed population references, never as raw centimetres.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Final, Literal

import polars as pl

from pipeline.contracts import SIZES
from pipeline.ingest import current_dimension, scan_curated

DType = Literal["float", "string"]


@dataclass(frozen=True)
class Feature:
    """A served feature: its name, type, meaning, and the value used when it is missing."""

    name: str
    dtype: DType
    description: str
    default: float | str = 0.0


CUSTOMER_ENTITY: Final = "customer_id"
ITEM_ENTITY: Final = "item_id"
CUSTOMER_VIEW: Final = "customer_features"
ITEM_VIEW: Final = "item_features"
FEATURE_SERVICE: Final = "recommender_v1"
TIMESTAMP: Final = "event_timestamp"

# Population references for standard scores (RentTheRunway, women's apparel): mean, sd in cm/kg.
BODY_REFERENCE: Final = {
    "height_cm": (165.9, 6.8),
    "weight_kg": (62.2, 9.9),
    "bust_cm": (88.0, 6.8),
    "waist_cm": (71.0, 8.5),
    "hips_cm": (98.0, 7.0),
}
BODY_Z_STEP: Final = 0.25  # coarsening of standard scores (limits re-identification)

CUSTOMER_FEATURES: Final = (
    Feature("has_body", "float", "1 when consented body measurements are present"),
    Feature("height_z", "float", "height standard score, coarsened"),
    Feature("weight_z", "float", "weight standard score, coarsened"),
    Feature("bust_z", "float", "bust standard score, coarsened"),
    Feature("waist_z", "float", "waist standard score, coarsened"),
    Feature("hips_z", "float", "hips standard score, coarsened"),
    Feature("shape_bust_hips", "float", "body shape: (bust - hips) / 10 cm"),
    Feature("shape_waist_hips", "float", "body shape: waist-to-hips ratio minus 0.72"),
    Feature("sessions_30d_log", "float", "log1p sessions in the last 30 days"),
    Feature("views_30d_log", "float", "log1p item views in the last 30 days"),
    Feature("purchases_log", "float", "log1p purchases ever"),
    Feature("return_rate", "float", "smoothed share of purchases returned"),
    Feature("tryon_small_rate", "float", "smoothed share of try-ons felt too small"),
    Feature("tryon_large_rate", "float", "smoothed share of try-ons felt too large"),
    Feature("kept_size_rank", "float", "mean size rank of kept purchases (-1 none)", -1.0),
    Feature("days_since_last_log", "float", "log1p days since the last event (capped)", 6.0),
)
ITEM_FEATURES: Final = (
    Feature("category", "string", "catalogue category", ""),
    Feature("style", "string", "style family", ""),
    Feature("price_log", "float", "log1p price"),
    Feature("sizing_bias", "float", "catalogue sizing bias (<0 runs small)"),
    Feature("views_7d_log", "float", "log1p views in the last 7 days"),
    Feature("views_30d_log", "float", "log1p views in the last 30 days"),
    Feature("purchases_30d_log", "float", "log1p purchases in the last 30 days"),
    Feature("tryon_rate", "float", "try-ons per view, smoothed"),
    Feature("return_rate", "float", "smoothed share of purchases returned"),
    Feature("fit_skew", "float", "smoothed (too small - too large) / try-ons: runs small > 0"),
    Feature("sizes_in_stock", "float", "number of sizes with stock"),
)


def numeric(features: tuple[Feature, ...]) -> list[str]:
    return [f.name for f in features if f.dtype == "float"]


def snapshot_time(day: date) -> datetime:
    """Features of ``day`` summarise events before the end of that day (UTC)."""
    return datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)


def _smoothed(hits: pl.Expr, total: pl.Expr, prior: float, strength: float = 5.0) -> pl.Expr:
    return ((hits.fill_null(0) + prior * strength) / (total.fill_null(0) + strength)).cast(
        pl.Float32
    )


def _log1p(expr: pl.Expr) -> pl.Expr:
    return expr.fill_null(0).cast(pl.Float64).log1p().cast(pl.Float32)


def body_scores(customers: pl.DataFrame) -> pl.DataFrame:
    """Coarse standard scores and shape descriptors; nulls for customers without consent."""
    consent = pl.col("body_data_consent").fill_null(False)
    exprs = []
    for column, (mean, sd) in BODY_REFERENCE.items():
        z = ((pl.col(column) - mean) / sd).clip(-4, 4) / BODY_Z_STEP
        exprs.append(
            pl.when(consent)
            .then(z.round() * BODY_Z_STEP)
            .otherwise(None)
            .cast(pl.Float32)
            .alias(column.split("_")[0] + "_z")
        )
    shape = [
        pl.when(consent)
        .then(((pl.col("bust_cm") - pl.col("hips_cm")) / 10).round(1))
        .cast(pl.Float32)
        .alias("shape_bust_hips"),
        pl.when(consent)
        .then((pl.col("waist_cm") / pl.col("hips_cm") - 0.72).round(2))
        .cast(pl.Float32)
        .alias("shape_waist_hips"),
    ]
    has_body = (
        pl.when(consent & pl.any_horizontal(pl.col(c).is_not_null() for c in BODY_REFERENCE))
        .then(1.0)
        .otherwise(0.0)
        .cast(pl.Float32)
        .alias("has_body")
    )
    return customers.select(CUSTOMER_ENTITY, has_body, *exprs, *shape)


def customer_features(curated_dir: Path, day: date) -> pl.DataFrame:
    """One row per known customer summarising everything up to the end of ``day``."""
    as_of = snapshot_time(day)
    customers = current_dimension(curated_dir, "customers", day)
    events = scan_curated(curated_dir, "session_events", day).filter(pl.col("ts") < as_of)
    try_ons = scan_curated(curated_dir, "try_ons", day).filter(pl.col("ts") < as_of)
    purchases = scan_curated(curated_dir, "purchases", day).filter(pl.col("ts") < as_of)
    sizes = {s: i for i, s in enumerate(SIZES)}
    since_30d = as_of - timedelta(days=30)

    activity = (
        events.filter(pl.col(CUSTOMER_ENTITY).is_not_null())
        .group_by(CUSTOMER_ENTITY)
        .agg(
            pl.col("session_id").filter(pl.col("ts") >= since_30d).n_unique().alias("s30"),
            ((pl.col("event_type") == "view") & (pl.col("ts") >= since_30d)).sum().alias("v30"),
            pl.col("ts").max().alias("last_ts"),
        )
    )
    fit = try_ons.group_by(CUSTOMER_ENTITY).agg(
        pl.len().alias("tries"),
        (pl.col("fit_feedback") == "too_small").sum().alias("small"),
        (pl.col("fit_feedback") == "too_large").sum().alias("large"),
    )
    bought = purchases.group_by(CUSTOMER_ENTITY).agg(
        pl.len().alias("bought"),
        pl.col("returned").sum().alias("returned"),
        pl.col("size")
        .replace_strict(sizes, return_dtype=pl.Float32)
        .filter(~pl.col("returned"))
        .mean()
        .alias("kept_size_rank"),
    )
    behaviour = (
        pl.LazyFrame(customers.select(CUSTOMER_ENTITY))
        .join(activity, on=CUSTOMER_ENTITY, how="left")
        .join(fit, on=CUSTOMER_ENTITY, how="left")
        .join(bought, on=CUSTOMER_ENTITY, how="left")
        .select(
            CUSTOMER_ENTITY,
            _log1p(pl.col("s30")).alias("sessions_30d_log"),
            _log1p(pl.col("v30")).alias("views_30d_log"),
            _log1p(pl.col("bought")).alias("purchases_log"),
            _smoothed(pl.col("returned"), pl.col("bought"), 0.15).alias("return_rate"),
            _smoothed(pl.col("small"), pl.col("tries"), 0.13).alias("tryon_small_rate"),
            _smoothed(pl.col("large"), pl.col("tries"), 0.13).alias("tryon_large_rate"),
            pl.col("kept_size_rank").fill_null(-1.0).cast(pl.Float32),
            _log1p(((pl.lit(as_of) - pl.col("last_ts")).dt.total_hours() / 24).clip(0, 365))
            .fill_null(6.0)
            .alias("days_since_last_log"),
        )
        .collect()
    )
    frame = body_scores(customers).join(behaviour, on=CUSTOMER_ENTITY, how="left")
    return _finish(frame, CUSTOMER_ENTITY, CUSTOMER_FEATURES, as_of)


def item_features(curated_dir: Path, day: date) -> pl.DataFrame:
    """One row per catalogue item summarising everything up to the end of ``day``."""
    as_of = snapshot_time(day)
    items = current_dimension(curated_dir, "items", day)
    sizes = current_dimension(curated_dir, "item_sizes", day)
    events = scan_curated(curated_dir, "session_events", day).filter(pl.col("ts") < as_of)
    try_ons = scan_curated(curated_dir, "try_ons", day).filter(pl.col("ts") < as_of)
    purchases = scan_curated(curated_dir, "purchases", day).filter(pl.col("ts") < as_of)

    views = events.group_by(ITEM_ENTITY).agg(
        ((pl.col("event_type") == "view") & (pl.col("ts") >= as_of - timedelta(days=7)))
        .sum()
        .alias("v7"),
        ((pl.col("event_type") == "view") & (pl.col("ts") >= as_of - timedelta(days=30)))
        .sum()
        .alias("v30"),
        (pl.col("event_type") == "view").sum().alias("views"),
    )
    fit = try_ons.group_by(ITEM_ENTITY).agg(
        pl.len().alias("tries"),
        (pl.col("fit_feedback") == "too_small").sum().alias("small"),
        (pl.col("fit_feedback") == "too_large").sum().alias("large"),
    )
    bought = purchases.group_by(ITEM_ENTITY).agg(
        pl.len().alias("bought"),
        (pl.col("ts") >= as_of - timedelta(days=30)).sum().alias("b30"),
        pl.col("returned").sum().alias("returned"),
    )
    stock = sizes.group_by(ITEM_ENTITY).agg((pl.col("stock") > 0).sum().alias("in_stock"))
    frame = (
        pl.LazyFrame(items)
        .join(views, on=ITEM_ENTITY, how="left")
        .join(fit, on=ITEM_ENTITY, how="left")
        .join(bought, on=ITEM_ENTITY, how="left")
        .join(stock.lazy(), on=ITEM_ENTITY, how="left")
        .select(
            ITEM_ENTITY,
            "category",
            pl.col("style").fill_null(""),
            _log1p(pl.col("price")).alias("price_log"),
            pl.col("sizing_bias").cast(pl.Float32),
            _log1p(pl.col("v7")).alias("views_7d_log"),
            _log1p(pl.col("v30")).alias("views_30d_log"),
            _log1p(pl.col("b30")).alias("purchases_30d_log"),
            _smoothed(pl.col("tries"), pl.col("views"), 0.25).alias("tryon_rate"),
            _smoothed(pl.col("returned"), pl.col("bought"), 0.15).alias("return_rate"),
            _smoothed(
                pl.col("small").cast(pl.Int64) - pl.col("large").cast(pl.Int64),
                pl.col("tries"),
                0.0,
            ).alias("fit_skew"),
            pl.col("in_stock").fill_null(0).cast(pl.Float32).alias("sizes_in_stock"),
        )
        .collect()
    )
    return _finish(frame, ITEM_ENTITY, ITEM_FEATURES, as_of)


def _finish(
    frame: pl.DataFrame, entity: str, features: tuple[Feature, ...], as_of: datetime
) -> pl.DataFrame:
    """Order and type the columns exactly as declared, add the snapshot timestamp."""
    return frame.select(
        entity,
        *[pl.col(f.name).cast(pl.String if f.dtype == "string" else pl.Float32) for f in features],
        pl.lit(as_of).cast(pl.Datetime("us", "UTC")).alias(TIMESTAMP),
    ).sort(entity)


def write_snapshot(frame: pl.DataFrame, path: Path) -> None:
    """Add (or replace) this snapshot in the feature table at ``path``; idempotent per day."""
    as_of = frame.get_column(TIMESTAMP).max()
    if path.exists():
        previous = pl.read_parquet(path).filter(pl.col(TIMESTAMP) != as_of)
        frame = pl.concat([previous, frame.select(previous.columns)])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    frame.sort(TIMESTAMP, frame.columns[0]).write_parquet(tmp)
    os.replace(tmp, path)


def feature_paths(features_dir: Path) -> dict[str, Path]:
    """Where each feature view's offline table lives (Feast's file sources read these)."""
    return {
        CUSTOMER_VIEW: features_dir / f"{CUSTOMER_VIEW}.parquet",
        ITEM_VIEW: features_dir / f"{ITEM_VIEW}.parquet",
    }


def missing_snapshot_days(curated_dir: Path, features_dir: Path, run_date: date) -> list[date]:
    """Ingested days up to ``run_date`` without a snapshot yet, plus ``run_date`` itself."""
    path = feature_paths(features_dir)[CUSTOMER_VIEW]
    done: set[datetime] = set()
    if path.exists():
        done = set(pl.read_parquet(path, columns=[TIMESTAMP]).get_column(TIMESTAMP).unique())
    ingested = sorted(
        date.fromisoformat(p.stem) for p in (curated_dir / "_reports").glob("????-??-??.json")
    )
    days = [d for d in ingested if d < run_date and snapshot_time(d) not in done]
    return [*days, run_date]


def build_features(curated_dir: Path, features_dir: Path, day: date) -> dict[str, int]:
    """Compute and store the customer and item snapshots of ``day``; returns rows per view."""
    paths = feature_paths(features_dir)
    customers = customer_features(curated_dir, day)
    items = item_features(curated_dir, day)
    write_snapshot(customers, paths[CUSTOMER_VIEW])
    write_snapshot(items, paths[ITEM_VIEW])
    return {CUSTOMER_VIEW: len(customers), ITEM_VIEW: len(items)}
