"""The one declaration of every served feature: entities, views, names, types, TTLs, defaults.

The Feast repository, the model, training and serving all build from the declarations here
(:data:`CUSTOMER_FEATURES`, :data:`ITEM_FEATURES`, :data:`SESSION_FEATURES`,
:data:`FIT_FEATURES`, :data:`FEATURE_SERVICES`); nothing else lists feature names. Their
computation is in :mod:`pipeline.features.build`. Each snapshot row carries an
``event_timestamp`` (the end of the day it summarises; the last event for sessions) for
point-in-time joins.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Final, Literal

from pipeline.data.contracts import CATEGORIES, CHART_MEASURES, STYLES

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
