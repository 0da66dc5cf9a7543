"""The generator's world: the customers and items of a window and their latent truth
(style preferences, true bodies, size charts and sizing bias, popularity, successors).

:mod:`pipeline.data.generate` simulates the days of this world and writes the drops.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np
import polars as pl

from pipeline.data.contracts import (
    AGE_BANDS,
    CATEGORIES,
    CHART_MEASURES,
    COLOURS,
    PREFERRED_FITS,
    SIZES,
    STYLES,
)

DEFAULT_END_DATE = date(2026, 11, 1)

# Base women's size chart in cm: [min, max) per measure, centred on the RentTheRunway body.
BASE_CHART = {
    "XS": {"bust": (82, 86), "waist": (62, 66), "hips": (88, 92)},
    "S": {"bust": (86, 90), "waist": (66, 70), "hips": (92, 96)},
    "M": {"bust": (90, 96), "waist": (70, 76), "hips": (96, 102)},
    "L": {"bust": (96, 102), "waist": (76, 82), "hips": (102, 108)},
    "XL": {"bust": (102, 110), "waist": (82, 90), "hips": (108, 116)},
    "XXL": {"bust": (110, 120), "waist": (90, 100), "hips": (116, 126)},
}
CATEGORY_WEIGHTS = np.array([0.34, 0.2, 0.13, 0.1, 0.07, 0.08, 0.08])
CATEGORY_PRICE = np.array([95, 45, 70, 55, 110, 160, 80], dtype=float)


@dataclass(frozen=True)
class GeneratorConfig:
    """What to generate; the same config and seed always give the same bytes."""

    customers: int = 2_000
    days: int = 14
    seed: int = 7
    end_date: date = DEFAULT_END_DATE
    items: int | None = None
    sessions_per_customer_day: float = 0.25
    anonymous_share: float = 0.1
    dirty: float = 0.0

    @property
    def n_items(self) -> int:
        return self.items or int(min(5_000, max(150, self.customers // 8)))

    @property
    def start_date(self) -> date:
        return self.end_date - timedelta(days=self.days - 1)

    @property
    def start(self) -> datetime:
        d = self.start_date
        return datetime(d.year, d.month, d.day, tzinfo=UTC)


@dataclass
class World:
    """Latent truth behind the raw tables (tests use it as ground truth)."""

    customers: pl.DataFrame
    items: pl.DataFrame
    successors: np.ndarray  # (n_items, 3) item indices
    style_pref: np.ndarray  # (n_customers, n_styles)
    body: np.ndarray  # (n_customers, 3): true bust, waist, hips, known even when not recorded
    chart: np.ndarray  # (n_items, n_sizes, 3 measures, 2 bounds) nominal chart
    bias: np.ndarray  # (n_items,)
    item_style: np.ndarray  # (n_items,) index into STYLES
    item_category: np.ndarray  # (n_items,) index into CATEGORIES
    popularity: np.ndarray  # (n_items,)
    activity: np.ndarray  # (n_customers,) expected sessions per day
    signup_day: np.ndarray  # (n_customers,) window day index of sign-up (<0: before)
    launch_day: np.ndarray  # (n_items,) window day index of launch (<0: before)


def _offsets(cfg: GeneratorConfig, rng: np.random.Generator, n: int, p_new: float, back: int):
    """Day offsets from the window start: a share within the window, the rest before it."""
    return np.where(rng.random(n) < p_new, rng.uniform(0, cfg.days, n), -rng.uniform(1, back, n))


def _timestamps(cfg: GeneratorConfig, day_offsets: np.ndarray) -> pl.Series:
    micros = (day_offsets * 86_400_000_000).astype(np.int64)
    base = np.datetime64(cfg.start.replace(tzinfo=None), "us")
    stamps = pl.Series(base + micros.astype("timedelta64[us]")).dt.truncate("1s")
    return stamps.dt.replace_time_zone("UTC")


def _make_customers(cfg: GeneratorConfig, rng: np.random.Generator):
    n = cfg.customers
    height = np.clip(rng.normal(165.9, 6.8, n), 142, 198)
    weight = np.clip(22.6 * (height / 100) ** 2 * np.exp(rng.normal(0, 0.15, n)), 40, 140)
    dw = weight - 62.5
    bust = 94.4 + 0.45 * dw + rng.normal(0, 3.3, n)
    waist = 74 + 0.7 * dw + rng.normal(0, 4.0, n)
    hips = 99 + 0.6 * dw + rng.normal(0, 3.5, n)
    inseam = 0.45 * height + rng.normal(0, 2.5, n)
    shoe = np.round((38.5 + 0.12 * (height - 166) + rng.normal(0, 0.8, n)) * 2) / 2
    age = np.clip(14 + np.exp(rng.normal(np.log(18), 0.42, n)), 18, 80)
    age_band = np.array(AGE_BANDS)[np.searchsorted(np.array([25, 35, 45, 55]), age, "right")]
    body_type = np.select(
        [
            height < 157,
            (bust - waist > 23) & (hips - waist > 28),
            hips - bust > 9,
            bust - hips > 1,
            waist - hips > -20,
            weight / (height / 100) ** 2 < 20.5,
        ],
        ["petite", "hourglass", "pear", "full bust", "apple", "straight & narrow"],
        default="athletic",
    )
    consent = rng.random(n) < 0.85
    preferred = np.array(PREFERRED_FITS)[rng.choice(3, n, p=[0.2, 0.6, 0.2])]
    signup_day = _offsets(cfg, rng, n, 0.15, 730)

    def recorded(values: np.ndarray, p_missing: float) -> np.ndarray:
        return np.where(rng.random(n) < p_missing, np.nan, np.round(values, 1))

    frame = pl.DataFrame(
        {
            "customer_id": pl.int_range(n, eager=True).cast(pl.String).str.zfill(7),
            "signup_ts": _timestamps(cfg, signup_day),
            "age_band": age_band,
            "height_cm": recorded(height, 0.03),
            "weight_kg": recorded(weight, 0.1),
            "bust_cm": recorded(bust, 0.08),
            "waist_cm": recorded(waist, 0.08),
            "hips_cm": recorded(hips, 0.08),
            "inseam_cm": recorded(inseam, 0.3),
            "shoe_size_eu": recorded(shoe, 0.2),
            "body_type": body_type,
            "preferred_fit": preferred,
            "body_data_consent": consent,
        }
    ).with_columns(
        pl.concat_str(pl.lit("C"), "customer_id").alias("customer_id"),
        pl.col(pl.Float64).fill_nan(None),
    )
    style_pref = rng.dirichlet(np.full(len(STYLES), 0.35), n)
    activity = np.exp(rng.normal(0, 0.7, n)) * cfg.sessions_per_customer_day / np.exp(0.245)
    body = np.stack([bust, waist, hips], axis=1)
    return frame, style_pref, body, activity, signup_day


def _make_items(cfg: GeneratorConfig, rng: np.random.Generator):
    n = cfg.n_items
    n_brands = max(8, min(60, n // 25))
    brand_bias = np.clip(rng.normal(0, 0.35, n_brands), -0.9, 0.9)
    brand_shift = rng.normal(0, 1.0, n_brands)
    brand = rng.integers(0, n_brands, n)
    weights = CATEGORY_WEIGHTS / CATEGORY_WEIGHTS.sum()
    category = rng.choice(len(CATEGORY_WEIGHTS), n, p=weights)
    style = rng.integers(0, len(STYLES), n)
    bias = np.clip(brand_bias[brand] + rng.normal(0, 0.2, n), -1, 1).round(2)
    price = np.round(CATEGORY_PRICE[category] * np.exp(rng.normal(0, 0.35, n)), 2)
    base = np.array([[BASE_CHART[s][m] for m in CHART_MEASURES] for s in SIZES], dtype=float)
    chart = np.round(base[None] + brand_shift[brand][:, None, None, None], 1)
    stock = rng.poisson(lam=np.array([2, 5, 7, 6, 4, 2])[None, :] * 1.5, size=(n, len(SIZES)))
    stock[rng.random((n, len(SIZES))) < 0.08] = 0
    launch_day = _offsets(cfg, rng, n, 0.1, 365)
    popularity = np.exp(rng.normal(0, 1.0, n))
    charts = [
        json.dumps(
            {
                size: {m: list(chart[i, s, k]) for k, m in enumerate(CHART_MEASURES)}
                for s, size in enumerate(SIZES)
            }
        )
        for i in range(n)
    ]
    stocks = [json.dumps(dict(zip(SIZES, map(int, row), strict=True))) for row in stock]
    frame = pl.DataFrame(
        {
            "item_id": pl.int_range(n, eager=True).cast(pl.String).str.zfill(6),
            "category": np.array(CATEGORIES)[category],
            "brand": pl.Series(brand).cast(pl.String).str.zfill(2),
            "price": price,
            "colour": np.array(COLOURS)[rng.integers(0, len(COLOURS), n)],
            "style": np.array(STYLES)[style],
            "size_chart": charts,
            "sizing_bias": bias,
            "stock": stocks,
            "launch_ts": _timestamps(cfg, launch_day),
        }
    ).with_columns(
        pl.concat_str(pl.lit("I"), "item_id").alias("item_id"),
        pl.concat_str(pl.lit("brand_"), "brand").alias("brand"),
    )
    # Successors: two look-alikes (same style and category, else same style) and one
    # complement from anywhere.
    successors = np.empty((n, 3), dtype=np.int64)
    for s in range(len(STYLES)):
        in_style = np.flatnonzero(style == s)
        if not len(in_style):
            continue
        successors[in_style, :2] = rng.choice(in_style, (len(in_style), 2))
        for c in range(len(CATEGORY_WEIGHTS)):
            members = in_style[category[in_style] == c]
            if len(members) > 1:
                successors[members, :2] = rng.choice(members, (len(members), 2))
    successors[:, 2] = rng.integers(0, n, n)
    return frame, chart, bias, style, popularity, successors, launch_day, category


def build_world(cfg: GeneratorConfig) -> World:
    """Draw customers, items and their latent structure."""
    rng = np.random.default_rng(cfg.seed)
    customers, style_pref, body, activity, signup_day = _make_customers(cfg, rng)
    items, chart, bias, style, popularity, successors, launch_day, category = _make_items(cfg, rng)
    return World(
        customers=customers,
        items=items,
        successors=successors,
        style_pref=style_pref,
        body=body,
        chart=chart,
        bias=bias,
        item_style=style,
        item_category=category,
        popularity=popularity,
        activity=activity,
        signup_day=signup_day,
        launch_day=launch_day,
    )
