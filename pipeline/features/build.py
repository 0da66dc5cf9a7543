"""Feature engineering in Polars: the daily customer, item and session snapshots.

What each feature is (name, type, default, TTL) is declared once in
:mod:`pipeline.features.declarations`; this module computes them from the curated tables.
Each snapshot row carries an ``event_timestamp`` (the end of the day it summarises; the last
event for sessions) for point-in-time joins.

Body measurements reach features only for customers who consented, and only as coarse
standard scores against fixed population references, never as raw centimetres.
"""

from __future__ import annotations

import os
from datetime import date, datetime, timedelta
from pathlib import Path

import polars as pl

from pipeline.data.contracts import CHART_MEASURES, STYLES, size_value
from pipeline.data.curated import current_dimension, scan_curated
from pipeline.data.staging import write_parquet
from pipeline.errors import storage_errors
from pipeline.features.declarations import (
    APPAREL,
    BODY_REFERENCE,
    BODY_Z_STEP,
    CUSTOMER_ENTITY,
    CUSTOMER_FEATURES,
    CUSTOMER_VIEW,
    ENGAGEMENT_WEIGHTS,
    ITEM_ENTITY,
    ITEM_FEATURES,
    ITEM_VIEW,
    SESSION_ENTITY,
    SESSION_FEATURES,
    SESSION_LENGTH,
    SESSION_VIEW,
    TIMESTAMP,
    Feature,
    snapshot_time,
)


def _smoothed(hits: pl.Expr, total: pl.Expr, prior: float, strength: float = 5.0) -> pl.Expr:
    return ((hits.fill_null(0) + prior * strength) / (total.fill_null(0) + strength)).cast(
        pl.Float32
    )


def _log1p(expr: pl.Expr) -> pl.Expr:
    return expr.fill_null(0).cast(pl.Float64).clip(lower_bound=0).log1p().cast(pl.Float32)


def body_scores(customers: pl.DataFrame) -> pl.DataFrame:
    """Coarse standard scores and shape descriptors; nulls for customers without consent."""
    consent = pl.col("body_data_consent").fill_null(False)
    scores = []
    for column, (mean, sd) in BODY_REFERENCE.items():
        z = ((pl.col(column) - mean) / sd).clip(-4, 4) / BODY_Z_STEP
        scores.append(
            pl.when(consent)
            .then(z.round() * BODY_Z_STEP)
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
    return customers.select(CUSTOMER_ENTITY, has_body, *scores, *shape)


def _fit_evidence(try_ons: pl.LazyFrame, purchases: pl.LazyFrame) -> pl.LazyFrame:
    """Size ranks that fit, implied by each try-on and each purchase of a letter size.

    A try-on felt too small says the next size up fits; a purchase kept says its size fits; a
    return for size says the next size over fits.
    """
    shift = {"too_small": 1.0, "too_large": -1.0, "fits": 0.0}
    tried = try_ons.select(
        CUSTOMER_ENTITY,
        ITEM_ENTITY,
        (
            size_value(pl.col("size")) + pl.col("fit_feedback").replace_strict(shift, default=None)
        ).alias("fits_rank"),
    )
    bought = purchases.select(
        CUSTOMER_ENTITY,
        ITEM_ENTITY,
        (
            size_value(pl.col("size"))
            + pl.when(~pl.col("returned"))
            .then(0.0)
            .otherwise(pl.col("return_reason").replace_strict(shift, default=None))
        ).alias("fits_rank"),
    )
    return pl.concat([tried, bought]).drop_nulls("fits_rank")


def customer_features(curated_dir: Path, day: date, as_of: datetime | None = None) -> pl.DataFrame:
    """One row per known customer summarising everything up to the end of ``day`` (or up to
    ``as_of``, for snapshots at other times, e.g. monthly over years of public data)."""
    as_of = as_of or snapshot_time(day)
    customers = current_dimension(curated_dir, "customers", day)
    items = pl.LazyFrame(
        current_dimension(curated_dir, "items", day).select(ITEM_ENTITY, "category", "style")
    )
    events = scan_curated(curated_dir, "session_events", day).filter(pl.col("ts") < as_of)
    try_ons = scan_curated(curated_dir, "try_ons", day).filter(pl.col("ts") < as_of)
    purchases = scan_curated(curated_dir, "purchases", day).filter(pl.col("ts") < as_of)
    in_30d = pl.col("ts") >= as_of - timedelta(days=30)
    in_90d = pl.col("ts") >= as_of - timedelta(days=90)
    known = events.filter(pl.col(CUSTOMER_ENTITY).is_not_null())

    activity = known.group_by(CUSTOMER_ENTITY).agg(
        pl.col("session_id").filter(in_30d).n_unique().alias("s30"),
        ((pl.col("event_type") == "view") & in_30d).sum().alias("v30"),
        pl.col("ts").max().alias("last_ts"),
    )
    views = known.filter((pl.col("event_type") == "view") & in_90d).join(
        items, on=ITEM_ENTITY, how="left"
    )
    shares = views.group_by(CUSTOMER_ENTITY).agg(
        *[(pl.col("category") == c).mean().alias(f"affinity_{c}") for c in APPAREL],
        *[(pl.col("style") == s).mean().alias(f"style_{s}") for s in STYLES],
    )
    fit = try_ons.group_by(CUSTOMER_ENTITY).agg(
        pl.len().alias("tries"),
        (pl.col("fit_feedback") == "too_small").sum().alias("small"),
        (pl.col("fit_feedback") == "too_large").sum().alias("large"),
    )
    bought = purchases.group_by(CUSTOMER_ENTITY).agg(
        pl.len().alias("bought"),
        pl.col("returned").sum().alias("returned"),
        pl.col("price").filter(in_90d & ~pl.col("returned")).sum().alias("spend90"),
    )
    evidence = _fit_evidence(try_ons, purchases).join(items, on=ITEM_ENTITY, how="left")
    sizes = evidence.group_by(CUSTOMER_ENTITY).agg(
        pl.col("fits_rank").mean().alias("fit_size_rank"),
        *[
            pl.col("fits_rank").filter(pl.col("category") == c).mean().alias(f"fit_size_{c}")
            for c in APPAREL
        ],
    )
    behaviour = (
        pl.LazyFrame(customers.select(CUSTOMER_ENTITY))
        .join(activity, on=CUSTOMER_ENTITY, how="left")
        .join(shares, on=CUSTOMER_ENTITY, how="left")
        .join(fit, on=CUSTOMER_ENTITY, how="left")
        .join(bought, on=CUSTOMER_ENTITY, how="left")
        .join(sizes, on=CUSTOMER_ENTITY, how="left")
        .with_columns(
            _log1p(((pl.lit(as_of) - pl.col("last_ts")).dt.total_hours() / 24).clip(0, 365))
            .fill_null(6.0)
            .alias("days_since_last_log"),
            _log1p(pl.col("s30")).alias("sessions_30d_log"),
            _log1p(pl.col("v30")).alias("browse_30d_log"),
            _log1p(pl.col("bought")).alias("purchases_log"),
            _log1p(pl.col("spend90")).alias("spend_90d_log"),
            _smoothed(pl.col("returned"), pl.col("bought"), 0.15).alias("return_rate"),
            _smoothed(pl.col("small"), pl.col("tries"), 0.13).alias("tryon_small_rate"),
            _smoothed(pl.col("large"), pl.col("tries"), 0.13).alias("tryon_large_rate"),
            _smoothed(pl.col("bought"), pl.col("tries"), 0.2).alias("tryon_to_purchase"),
        )
        .collect()
    )
    frame = body_scores(customers).join(behaviour, on=CUSTOMER_ENTITY, how="left")
    return _finish(frame, CUSTOMER_ENTITY, CUSTOMER_FEATURES, as_of)


def chart_summary(sizes: pl.DataFrame) -> pl.DataFrame:
    """Per item: centre of the smallest size and cm per size step, for each measure.

    A least-squares line through the size centres, so charts with uneven steps still get
    one step per measure; an item with a single size has no step.
    """
    rank = pl.col("size_rank").cast(pl.Float64)
    exprs = [pl.len().cast(pl.Float32).alias("n_sizes")]
    for m in CHART_MEASURES:
        centre = (pl.col(f"{m}_min") + pl.col(f"{m}_max")) / 2
        step = pl.cov(rank, centre) / rank.var()
        exprs += [
            step.cast(pl.Float32).alias(f"chart_{m}_step"),
            (centre.mean() - step * rank.mean()).cast(pl.Float32).alias(f"chart_{m}_lo"),
        ]
    return sizes.group_by(ITEM_ENTITY).agg(*exprs)


def item_features(curated_dir: Path, day: date, as_of: datetime | None = None) -> pl.DataFrame:
    """One row per catalogue item summarising everything up to the end of ``day`` (or up to
    ``as_of``)."""
    as_of = as_of or snapshot_time(day)
    items = current_dimension(curated_dir, "items", day)
    sizes = current_dimension(curated_dir, "item_sizes", day)
    events = scan_curated(curated_dir, "session_events", day).filter(pl.col("ts") < as_of)
    try_ons = scan_curated(curated_dir, "try_ons", day).filter(pl.col("ts") < as_of)
    purchases = scan_curated(curated_dir, "purchases", day).filter(pl.col("ts") < as_of)
    view = pl.col("event_type") == "view"

    def since(days: int) -> pl.Expr:
        return pl.col("ts") >= as_of - timedelta(days=days)

    popularity = events.group_by(ITEM_ENTITY).agg(
        *[(view & since(d)).sum().alias(f"v{d}") for d in (1, 7, 30)],
        view.sum().alias("views"),
    )
    fit = try_ons.group_by(ITEM_ENTITY).agg(
        pl.len().alias("tries"),
        (pl.col("fit_feedback") == "too_small").sum().cast(pl.Int64).alias("small"),
        (pl.col("fit_feedback") == "too_large").sum().cast(pl.Int64).alias("large"),
    )
    bought = purchases.group_by(ITEM_ENTITY).agg(
        pl.len().alias("bought"),
        since(30).sum().alias("b30"),
        pl.col("returned").sum().alias("returned"),
    )
    stock = sizes.group_by(ITEM_ENTITY).agg((pl.col("stock") > 0).sum().alias("in_stock"))
    frame = (
        pl.LazyFrame(items)
        .join(popularity, on=ITEM_ENTITY, how="left")
        .join(fit, on=ITEM_ENTITY, how="left")
        .join(bought, on=ITEM_ENTITY, how="left")
        .join(stock.lazy(), on=ITEM_ENTITY, how="left")
        .join(chart_summary(sizes).lazy(), on=ITEM_ENTITY, how="left")
        .with_columns(
            pl.col("style").fill_null(""),
            _log1p(pl.col("price")).alias("price_log"),
            pl.col("sizing_bias").fill_null(0.0),
            *[_log1p(pl.col(f"v{d}")).alias(f"views_{d}d_log") for d in (1, 7, 30)],
            _log1p(pl.col("b30")).alias("purchases_30d_log"),
            _smoothed(pl.col("tries"), pl.col("views"), 0.25).alias("tryon_rate"),
            _smoothed(pl.col("bought"), pl.col("views"), 0.05).alias("conversion_rate"),
            _smoothed(pl.col("returned"), pl.col("bought"), 0.15).alias("item_return_rate"),
            _smoothed(pl.col("small") - pl.col("large"), pl.col("tries"), 0.0).alias("fit_skew"),
            pl.col("in_stock").fill_null(0).alias("sizes_in_stock"),
            pl.col("n_sizes").fill_null(0),
        )
        .collect()
    )
    return _finish(frame, ITEM_ENTITY, ITEM_FEATURES, as_of)


def session_state(events: pl.LazyFrame | pl.DataFrame) -> pl.DataFrame:
    """Live session features from session events: what serving keeps per session.

    One row per session with its last :data:`SESSION_LENGTH` items and event types, an
    engagement score, event count and age; ``event_timestamp`` is the last event's time.
    """
    weights = pl.col("event_type").replace_strict(ENGAGEMENT_WEIGHTS, default=0.0)
    frame = (
        events.lazy()
        .sort(SESSION_ENTITY, "ts", maintain_order=True)
        .group_by(SESSION_ENTITY, maintain_order=True)
        .agg(
            pl.col(CUSTOMER_ENTITY).drop_nulls().first(),
            pl.col(ITEM_ENTITY).tail(SESSION_LENGTH).alias("session_items"),
            pl.col("event_type").tail(SESSION_LENGTH).alias("session_event_types"),
            weights.sum().alias("weight"),
            pl.len().cast(pl.Float32).alias("session_events"),
            ((pl.col("ts").max() - pl.col("ts").min()).dt.total_microseconds() / 1e6)
            .cast(pl.Float32)
            .alias("session_age_s"),
            pl.col("ts").max().alias(TIMESTAMP),
        )
        .with_columns(_log1p(pl.col("weight")).alias("engagement"))
        .collect()
    )
    return frame.select(
        SESSION_ENTITY,
        CUSTOMER_ENTITY,
        *[f.name for f in SESSION_FEATURES],
        pl.col(TIMESTAMP).cast(pl.Datetime("us", "UTC")),
    )


def session_features(curated_dir: Path, day: date) -> pl.DataFrame:
    """Final state of every session with events on ``day`` (the push source's batch data)."""
    start = snapshot_time(day) - timedelta(days=1)
    events = scan_curated(curated_dir, "session_events", day).filter(
        (pl.col("ts") >= start) & (pl.col("ts") < snapshot_time(day))
    )
    return session_state(events)


def _finish(
    frame: pl.DataFrame, entity: str, features: tuple[Feature, ...], as_of: datetime
) -> pl.DataFrame:
    """Order and type the columns exactly as declared, add the snapshot timestamp."""
    return frame.select(
        entity,
        *[pl.col(f.name).cast(pl.String if f.dtype == "string" else pl.Float32) for f in features],
        pl.lit(as_of).cast(pl.Datetime("us", "UTC")).alias(TIMESTAMP),
    ).sort(entity)


def write_snapshot(frame: pl.DataFrame, path: Path, own: pl.Expr) -> None:
    """Replace the rows ``own`` selects in the feature table at ``path`` by ``frame``.

    Rewriting a day therefore leaves every other day's rows as they were (idempotent).
    """
    if path.exists():
        previous = pl.read_parquet(path).filter(~own)
        frame = pl.concat([previous, frame.select(previous.columns)])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    try:
        write_parquet(frame.sort(TIMESTAMP, frame.columns[0]), tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk leaves no partial file behind
        raise


def rows_of_day(view: str, day: date) -> pl.Expr:
    """Which rows of a view's table a day owns: its snapshot, or the sessions that ended on it."""
    end = snapshot_time(day)
    if view == SESSION_VIEW:
        return (pl.col(TIMESTAMP) >= end - timedelta(days=1)) & (pl.col(TIMESTAMP) < end)
    return pl.col(TIMESTAMP) == end


def feature_paths(features_dir: Path) -> dict[str, Path]:
    """Where each batch feature view's offline table lives (Feast's file sources read these)."""
    return {
        view: features_dir / f"{view}.parquet" for view in (CUSTOMER_VIEW, ITEM_VIEW, SESSION_VIEW)
    }


def snapshot_exists(features_dir: Path, day: date) -> bool:
    """Whether the customer table holds ``day``'s snapshot."""
    path = feature_paths(features_dir)[CUSTOMER_VIEW]
    if not path.exists():
        return False
    stamps = pl.read_parquet(path, columns=[TIMESTAMP]).get_column(TIMESTAMP)
    return bool((stamps == snapshot_time(day)).any())


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
    """Compute and store the customer, item and session features of ``day``."""
    paths = feature_paths(features_dir)
    frames = {
        CUSTOMER_VIEW: customer_features(curated_dir, day),
        ITEM_VIEW: item_features(curated_dir, day),
        SESSION_VIEW: session_features(curated_dir, day),
    }
    for view, frame in frames.items():
        # Each table is old or new, never half-written; a re-run rewrites the day's rows.
        with storage_errors(f"build_features of {day}", paths[view]):
            write_snapshot(frame, paths[view], rows_of_day(view, day))
    return {view: frame.height for view, frame in frames.items()}
