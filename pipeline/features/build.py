"""Feature engineering in Polars, and the one declaration of every feature's name and type.

The Feast repository, the model, training and serving all build from the declarations here
(:data:`CUSTOMER_FEATURES`, :data:`ITEM_FEATURES`, :data:`SESSION_FEATURES`,
:data:`FIT_FEATURES`, :data:`FEATURE_SERVICES`); nothing else lists feature names. Each
snapshot row carries an ``event_timestamp`` (the end of the day it summarises; the last event
for sessions) for point-in-time joins.

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

from pipeline.contracts import CATEGORIES, CHART_MEASURES, STYLES, size_value
from pipeline.ingest import current_dimension, scan_curated

DType = Literal["float", "string", "string_list"]


@dataclass(frozen=True)
class Feature:
    """A served feature: its name, type, meaning, and the value used when it is missing."""

    name: str
    dtype: DType
    description: str
    default: float | str | None = 0.0


CUSTOMER_ENTITY: Final = "customer_id"
ITEM_ENTITY: Final = "item_id"
SESSION_ENTITY: Final = "session_id"
CUSTOMER_VIEW: Final = "customer_features"
ITEM_VIEW: Final = "item_features"
SESSION_VIEW: Final = "session_features"
FIT_VIEW: Final = "fit_match"
SESSION_PUSH: Final = "session_push"
TIMESTAMP: Final = "event_timestamp"
SESSION_LENGTH: Final = 10  # items kept in the live session state
# How long a customer or item snapshot stays valid (Feast TTL and the training as-of join).
SNAPSHOT_TTL: Final = timedelta(days=90)
SESSION_TTL: Final = timedelta(hours=12)

APPAREL: Final = CATEGORIES[:7]  # categories sized by bust/waist/hips charts
# Population references for standard scores (RentTheRunway, per user): mean, sd in cm/kg.
BODY_REFERENCE: Final = {
    "height_cm": (165.9, 6.8),
    "weight_kg": (62.5, 10.3),
    "bust_cm": (94.4, 5.5),
    "waist_cm": (74.0, 8.5),
    "hips_cm": (99.0, 7.5),
}
BODY_Z_STEP: Final = 0.25  # coarsening of standard scores (limits re-identification)
ENGAGEMENT_WEIGHTS: Final = {
    "view": 1.0,
    "try_on": 3.0,
    "add_to_cart": 5.0,
    "remove_from_cart": -2.0,
    "purchase": 8.0,
}

CUSTOMER_FEATURES: Final = (
    Feature("has_body", "float", "1 when consented body measurements are present"),
    *[
        Feature(f"{c.split('_')[0]}_z", "float", f"{c} standard score, quarter steps")
        for c in BODY_REFERENCE
    ],
    Feature("shape_bust_hips", "float", "body shape: (bust - hips) / 10 cm"),
    Feature("shape_waist_hips", "float", "body shape: waist-to-hips ratio minus 0.72"),
    Feature("fit_size_rank", "float", "size that fits, from kept buys and try-ons (-1)", -1.0),
    *[
        Feature(f"fit_size_{c}", "float", f"size that fits in {c} (-1 unknown)", -1.0)
        for c in APPAREL
    ],
    Feature("tryon_small_rate", "float", "smoothed share of try-ons felt too small"),
    Feature("tryon_large_rate", "float", "smoothed share of try-ons felt too large"),
    Feature("days_since_last_log", "float", "recency: log1p days since the last event", 6.0),
    Feature("sessions_30d_log", "float", "frequency: log1p sessions in 30 days"),
    Feature("browse_30d_log", "float", "log1p item views in 30 days"),
    Feature("purchases_log", "float", "log1p purchases ever"),
    Feature("spend_90d_log", "float", "log1p spend on kept items in 90 days"),
    Feature("return_rate", "float", "smoothed share of purchases returned"),
    Feature("tryon_to_purchase", "float", "smoothed purchases per try-on"),
    *[Feature(f"affinity_{c}", "float", f"share of 90-day views in {c}") for c in APPAREL],
    *[Feature(f"style_{s}", "float", f"share of 90-day views in style {s}") for s in STYLES],
)
ITEM_FEATURES: Final = (
    Feature("category", "string", "catalogue category", ""),
    Feature("style", "string", "style family", ""),
    Feature("price_log", "float", "log1p price"),
    Feature("sizing_bias", "float", "catalogue sizing bias (<0 runs small)"),
    Feature("views_1d_log", "float", "popularity: log1p views in 1 day"),
    Feature("views_7d_log", "float", "popularity: log1p views in 7 days"),
    Feature("views_30d_log", "float", "popularity: log1p views in 30 days"),
    Feature("purchases_30d_log", "float", "log1p purchases in 30 days"),
    Feature("tryon_rate", "float", "try-ons per view, smoothed"),
    Feature("conversion_rate", "float", "purchases per view, smoothed"),
    Feature("item_return_rate", "float", "smoothed share of purchases returned"),
    Feature("fit_skew", "float", "smoothed (too small - too large) / try-ons: runs small > 0"),
    Feature("sizes_in_stock", "float", "number of sizes with stock"),
    Feature("n_sizes", "float", "number of sizes in the chart"),
    *[
        Feature(f"chart_{m}_{part}", "float", f"size chart {m}: {what}", None)
        for m in CHART_MEASURES
        for part, what in (("lo", "centre of the smallest size, cm"), ("step", "cm per size"))
    ],
)
SESSION_FEATURES: Final = (
    Feature("session_items", "string_list", f"last {SESSION_LENGTH} item ids, oldest first", None),
    Feature("session_event_types", "string_list", "event type of each of those events", None),
    Feature("engagement", "float", "log1p of weighted events (view 1 ... purchase 8)"),
    Feature("session_events", "float", "events in the session"),
    Feature("session_age_s", "float", "seconds from the first to the last event"),
)
FIT_FEATURES: Final = (
    Feature("fit_rank_estimate", "float", "fractional size rank where the body meets the chart"),
    Feature("recommended_size_rank", "float", "nearest size rank (0 = smallest)", -1.0),
    Feature("fit_spread", "float", "disagreement between measures, in sizes (0 = consistent)"),
)
# One service per model generation; a model records the service it was trained with.
FEATURE_SERVICES: Final = {
    "recommender_v1": (CUSTOMER_VIEW, ITEM_VIEW),
    "recommender_v2": (CUSTOMER_VIEW, ITEM_VIEW, SESSION_VIEW, FIT_VIEW),
}
FEATURE_SERVICE: Final = "recommender_v2"
VIEW_FEATURES: Final = {
    CUSTOMER_VIEW: CUSTOMER_FEATURES,
    ITEM_VIEW: ITEM_FEATURES,
    SESSION_VIEW: SESSION_FEATURES,
    FIT_VIEW: FIT_FEATURES,
}
# Feature names are unique across views, so a service can serve them without prefixes.
_ALL_NAMES = [f.name for view in VIEW_FEATURES.values() for f in view]
if len(_ALL_NAMES) != len(set(_ALL_NAMES)):
    raise ValueError(
        f"duplicate feature names: {sorted({n for n in _ALL_NAMES if _ALL_NAMES.count(n) > 1})}"
    )


def numeric(features: tuple[Feature, ...]) -> list[str]:
    return [f.name for f in features if f.dtype == "float"]


def defaults(features: tuple[Feature, ...]) -> dict[str, float]:
    """Fill values for missing numeric features (model inputs)."""
    return {
        f.name: 0.0 if f.default is None else float(f.default)
        for f in features
        if f.dtype == "float"
    }


def snapshot_time(day: date) -> datetime:
    """Features of ``day`` summarise events before the end of that day (UTC)."""
    return datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)


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
        .sort(SESSION_ENTITY, "ts")
        .group_by(SESSION_ENTITY, maintain_order=True)
        .agg(
            pl.col(CUSTOMER_ENTITY).drop_nulls().first(),
            pl.col(ITEM_ENTITY).tail(SESSION_LENGTH).alias("session_items"),
            pl.col("event_type").tail(SESSION_LENGTH).alias("session_event_types"),
            weights.sum().alias("weight"),
            pl.len().cast(pl.Float32).alias("session_events"),
            ((pl.col("ts").max() - pl.col("ts").min()).dt.total_milliseconds() / 1000)
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
    frame.sort(TIMESTAMP, frame.columns[0]).write_parquet(tmp)
    os.replace(tmp, path)


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
        write_snapshot(frame, paths[view], rows_of_day(view, day))
    return {view: frame.height for view, frame in frames.items()}
