"""A deterministic generator of the raw data a fashion retailer emits.

It writes one *drop* per day, in the formats real systems emit: ``customers.parquet``,
``items.csv`` (size chart and stock as JSON), and JSON lines for ``session_events``,
``try_ons`` and ``purchases``. Days are simulated one at a time, so memory follows the size
of a day and the generator scales from a thousand to a million customers.

Marginals are calibrated on RentTheRunway (one row per user, 154k reviews before 2017-07):
height 165.9 +- 6.8 cm, weight 62.5 +- 10.3 kg (right-skewed), bust 94.4 +- 5.5 cm, age
median 32 (5% 23, 95% 50), fit feedback 74% fits / 13% small / 13% large.

Planted structure a good model can find:

* **style affinity**: each customer has a Dirichlet preference over :data:`STYLES`; a session
  has one style and draws most items from it; liking follows the preference;
* **fit**: a garment's true measurements are its size chart shifted by the item's sizing
  bias (``SIZING_BIAS_CM`` per unit); a size fits when the body sits inside it, so fit feedback
  follows body vs. chart vs. bias, and customers who tried on correct their size;
* **returns** are driven by misfit (60% of misfits are returned, 7% of fits);
* **session order**: every item has three successors (two look-alikes of its style and
  category, one complement), and the next item in a session is one of the previous item's
  successors half of the time;
* **session focus**: a session browses one category within its style (60% of fresh picks).

``dirty`` > 0 injects the faults ingest must catch (exact duplicates, unknown items,
unparseable times), so quarantine is exercised on every run.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.data.contracts import (
    AGE_BANDS,
    CATEGORIES,
    CHART_MEASURES,
    COLOURS,
    PREFERRED_FITS,
    RETURN_REASONS,
    SIZES,
    SIZING_BIAS_CM,
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
# |standardised misfit| above this is felt as too small / too large: with the size choices
# below it gives ~75% fits / 14% small / 11% large (RentTheRunway: 74 / 13 / 13).
FIT_TOLERANCE = 2.0
FIT_NOISE = 0.45
CATEGORY_WEIGHTS = np.array([0.34, 0.2, 0.13, 0.1, 0.07, 0.08, 0.08])
CATEGORY_PRICE = np.array([95, 45, 70, 55, 110, 160, 80], dtype=float)
STEP_SECONDS = 90


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


def fit_outcome(
    body: np.ndarray, chart: np.ndarray, bias: np.ndarray, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Fit of a garment on a body: -1 too large, 0 fits, +1 too small.

    Args:
        body: (n, 3) true bust, waist, hips in cm.
        chart: (n, 3, 2) nominal [min, max) of the chosen size per measure.
        bias: (n,) sizing bias; the garment really measures ``chart + bias * SIZING_BIAS_CM``.
        rng: adds perception noise when given.
    """
    actual = chart + (bias * SIZING_BIAS_CM)[:, None, None]
    centre = actual.mean(axis=2)
    half = np.maximum((actual[:, :, 1] - actual[:, :, 0]) / 2, 1.0)
    score = ((body - centre) / half).mean(axis=1)
    if rng is not None:
        score = score + rng.normal(0, FIT_NOISE, len(score))
    return np.where(score > FIT_TOLERANCE, 1, np.where(score < -FIT_TOLERANCE, -1, 0))


def nominal_size(body: np.ndarray, chart: np.ndarray) -> np.ndarray:
    """The size a customer picks from the chart: the one whose centre is nearest her body."""
    centre = chart.mean(axis=3)  # (n, sizes, 3)
    return np.abs(body[:, None, :] - centre).mean(axis=2).argmin(axis=1)


def _pick_in_group(
    rng: np.random.Generator, styles: np.ndarray, item_style: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """Draw one item per row from its group (a style, or a style and category), in proportion
    to ``weights``; a row whose group has no items gets one from the next group."""
    order = np.lexsort((np.arange(len(item_style)), item_style))
    sorted_style, w_sorted = item_style[order], weights[order]
    cum = np.zeros(len(order))
    for s in np.unique(sorted_style):
        members = sorted_style == s
        w = np.cumsum(w_sorted[members])
        cum[members] = s + (w / w[-1] if w[-1] > 0 else np.linspace(0, 1, len(w)))
    position = np.searchsorted(cum, styles + rng.random(len(styles)) * 0.999999, side="right")
    return order[np.minimum(position, len(order) - 1)]


def simulate_day(cfg: GeneratorConfig, world: World, d: int) -> dict[str, pl.DataFrame]:
    """One day of sessions, try-ons and purchases (clean), with event seconds into the day."""
    rng = np.random.default_rng([cfg.seed, 1, d])
    n_i = len(world.bias)
    counts = rng.poisson(world.activity)
    counts[world.signup_day >= d] = 0  # only customers signed up before the day
    customer = np.repeat(np.arange(len(counts)), counts)
    n_s = len(customer)
    available = world.launch_day < d  # launched before the day starts
    weights = world.popularity * available
    anonymous = rng.random(n_s) < cfg.anonymous_share
    cum_pref = np.cumsum(world.style_pref[customer], axis=1)
    session_style = (rng.random(n_s)[:, None] > cum_pref).sum(axis=1).clip(0, len(STYLES) - 1)
    length = np.minimum(rng.geometric(0.27, n_s), 15)
    # Shoppers browse a category (dresses, tops, ...) within their style most of the time.
    n_cat = len(CATEGORY_WEIGHTS)
    session_category = rng.choice(n_cat, n_s, p=CATEGORY_WEIGHTS / CATEGORY_WEIGHTS.sum())
    session_group = session_style * n_cat + session_category
    item_group = world.item_style * n_cat + world.item_category
    start_s = rng.uniform(0, 86_000 - STEP_SECONDS * 15 - 200, n_s)

    items, sessions, positions = [], [], []
    prev = np.zeros(n_s, dtype=np.int64)
    for t in range(int(length.max()) if n_s else 0):
        active = np.flatnonzero(length > t)
        u = rng.random(len(active))
        in_style = _pick_in_group(rng, session_style[active], world.item_style, weights)
        in_group = _pick_in_group(rng, session_group[active], item_group, weights)
        fresh = np.where(rng.random(len(active)) < 0.6, in_group, in_style)
        anywhere = rng.choice(n_i, len(active), p=weights / weights.sum())
        item = np.where(u < 0.85, fresh, anywhere)
        if t > 0:
            succ = world.successors[prev[active], rng.integers(0, 3, len(active))]
            follow = (u < 0.5) & available[succ]
            item = np.where(follow, succ, np.where(u < 0.88, fresh, anywhere))
        prev[active] = item
        items.append(item)
        sessions.append(active)
        positions.append(np.full(len(active), t))
    if not items:
        return {name: pl.DataFrame() for name in ("session_events", "try_ons", "purchases")}
    item, sess, pos = (np.concatenate(a) for a in (items, sessions, positions))
    order = np.lexsort((pos, sess))
    item, sess, pos = item[order], sess[order], pos[order]
    cust = customer[sess]
    known = ~anonymous[sess]
    n_e = len(item)
    seconds = start_s[sess] + pos * STEP_SECONDS + rng.exponential(20, n_e)

    # Affinity decides liking; body vs chart vs bias decides fit.
    affinity = world.style_pref[cust, world.item_style[item]] * len(STYLES)
    tries = known & (rng.random(n_e) < 0.3)
    chart = world.chart[item]  # (n_e, sizes, 3, 2)
    preferred = world.customers.get_column("preferred_fit").to_numpy()[cust]
    nominal = nominal_size(world.body[cust], chart)
    nominal += np.where(preferred == "relaxed", 1, 0) - np.where(preferred == "slim", 1, 0)
    nominal += np.where(rng.random(n_e) < 0.1, rng.choice([-1, 1], n_e), 0)
    size_tried = np.clip(nominal, 0, len(SIZES) - 1)
    rows = np.arange(n_e)
    outcome = fit_outcome(world.body[cust], chart[rows, size_tried], world.bias[item], rng)
    liked = rng.random(n_e) < 1 / (1 + np.exp(-(1.2 * affinity - 1.5)))
    cart_after_try = tries & liked & (outcome == 0) & (rng.random(n_e) < 0.7)
    carted = cart_after_try | (~tries & known & (rng.random(n_e) < 0.05 * affinity))
    removed = carted & (rng.random(n_e) < 0.2)
    bought = carted & ~removed & (rng.random(n_e) < 0.65)
    # Who tried on corrects the size after feedback; who did not buys the nominal size.
    size_bought = np.clip(size_tried + np.where(tries, outcome, 0), 0, len(SIZES) - 1)
    bought_fit = fit_outcome(world.body[cust], chart[rows, size_bought], world.bias[item], rng)
    returned = bought & np.where(bought_fit != 0, rng.random(n_e) < 0.6, rng.random(n_e) < 0.07)
    reason = np.where(
        bought_fit > 0,
        "too_small",
        np.where(bought_fit < 0, "too_large", np.array(RETURN_REASONS)[rng.integers(2, 5, n_e)]),
    )

    customer_ids = world.customers.get_column("customer_id")
    item_ids = world.items.get_column("item_id")
    prefix = f"{d:03d}"

    def frame(mask: np.ndarray, columns: dict) -> pl.DataFrame:
        idx = np.flatnonzero(mask)
        who = pl.Series(cust[idx])
        base = {
            "session_id": (f"S{prefix}" + pl.Series(sess[idx]).cast(pl.String).str.zfill(8)),
            "customer_id": customer_ids.gather(who).set(pl.Series(~known[idx]), None),
            "item_id": item_ids.gather(pl.Series(item[idx])),
        }
        return pl.DataFrame({**base, **{k: v(idx) for k, v in columns.items()}})

    kinds = [
        ("view", np.ones(n_e, bool), 0.0),
        ("try_on", tries, 20.0),
        ("add_to_cart", carted, 40.0),
        ("remove_from_cart", removed, 60.0),
        ("purchase", bought, 80.0),
    ]
    session_events = (
        pl.concat(
            [
                frame(mask, {"event_type": lambda i, k=kind: [k] * len(i)}).with_columns(
                    pl.Series("__seconds", seconds[mask] + delay),
                    pl.Series("__e", np.flatnonzero(mask)),
                )
                for kind, mask, delay in kinds
            ]
        )
        .sort("__e", "__seconds")
        .drop("__e")
    )
    session_events = session_events.select(
        (f"E{prefix}" + pl.int_range(pl.len()).cast(pl.String).str.zfill(9)).alias("event_id"),
        "session_id",
        "customer_id",
        "event_type",
        "item_id",
        "__seconds",
    )
    fit_names = np.array(["too_large", "fits", "too_small"])
    try_ons = frame(
        tries,
        {
            "size": lambda i: np.array(SIZES)[size_tried[i]],
            "fit_feedback": lambda i: fit_names[outcome[i] + 1],
            "duration_s": lambda i: np.round(np.exp(rng.normal(3.5, 0.6, len(i))), 1),
            "liked": lambda i: liked[i],
            "added_to_cart": lambda i: cart_after_try[i],
            "__seconds": lambda i: seconds[i] + 20,
        },
    )
    try_ons = try_ons.select(
        (f"T{prefix}" + pl.int_range(pl.len()).cast(pl.String).str.zfill(9)).alias("event_id"),
        pl.exclude("__seconds"),
        "__seconds",
    )
    prices = world.items.get_column("price").to_numpy()
    purchases = frame(
        bought,
        {
            "size": lambda i: np.array(SIZES)[size_bought[i]],
            "price": lambda i: prices[item[i]],
            "returned": lambda i: returned[i],
            "return_reason": lambda i: pl.Series(reason[i]).set(pl.Series(~returned[i]), None),
            "__seconds": lambda i: seconds[i] + 80,
        },
    ).drop("session_id")
    purchases = purchases.select(
        (f"O{prefix}" + pl.int_range(pl.len()).cast(pl.String).str.zfill(9)).alias("order_line_id"),
        pl.exclude("__seconds"),
        "__seconds",
    )
    return {"session_events": session_events, "try_ons": try_ons, "purchases": purchases}


def _dirty(frame: pl.DataFrame, key: str, share: float, rng: np.random.Generator) -> pl.DataFrame:
    """Inject the faults real feeds carry: exact re-sends, unknown items, unparseable times."""
    if share <= 0 or frame.is_empty():
        return frame
    n = len(frame)
    k = max(1, int(n * share))
    duplicates = frame[rng.choice(n, k, replace=False).tolist()]
    unknown = frame[rng.choice(n, k, replace=False).tolist()].with_columns(
        pl.col(key) + "-x", pl.lit("I999999").alias("item_id")
    )
    bad_time = frame[rng.choice(n, 1).tolist()].with_columns(
        pl.col(key) + "-t", pl.lit("yesterday-ish").alias("ts")
    )
    return pl.concat([frame, duplicates, unknown, bad_time])


def write_drops(
    cfg: GeneratorConfig,
    out: Path,
    progress: Callable[[int, dict[str, int]], None] | None = None,
) -> dict[str, int]:
    """Generate the window and write one drop folder per day under ``out``.

    Returns the number of rows written per table (including injected faults); ``progress``
    is called after each day with its index and its row counts.
    """
    world = build_world(cfg)
    rng = np.random.default_rng([cfg.seed, 2])
    totals = dict.fromkeys(("customers", "items", "session_events", "try_ons", "purchases"), 0)
    for d in range(cfg.days):
        day = cfg.start_date + timedelta(days=d)
        folder = out / day.isoformat()
        folder.mkdir(parents=True, exist_ok=True)
        counts = {}
        # Dimensions: everything existing before the window arrives in the first drop.
        joined = (world.signup_day < d + 1) & ((world.signup_day >= d) | (d == 0))
        customers = world.customers.filter(pl.Series(joined))
        if cfg.dirty > 0 and len(customers) > 0:
            impossible = customers.head(max(1, int(len(customers) * cfg.dirty)))
            customers = pl.concat([customers, impossible.with_columns(height_cm=pl.lit(999.0))])
        customers.write_parquet(folder / "customers.parquet")
        launched = (world.launch_day < d + 1) & ((world.launch_day >= d) | (d == 0))
        items = world.items.filter(pl.Series(launched))
        items.with_columns(pl.col("launch_ts").dt.strftime("%Y-%m-%dT%H:%M:%SZ")).write_csv(
            folder / "items.csv"
        )
        counts["customers"], counts["items"] = len(customers), len(items)
        base = datetime(day.year, day.month, day.day, tzinfo=UTC)
        for name, frame in simulate_day(cfg, world, d).items():
            if frame.is_empty():
                frame = pl.DataFrame()
            else:
                frame = frame.with_columns(
                    (pl.lit(base) + pl.duration(seconds=pl.col("__seconds").floor()))
                    .dt.strftime("%Y-%m-%dT%H:%M:%SZ")
                    .alias("ts")
                ).drop("__seconds")
                frame = _dirty(frame, frame.columns[0], cfg.dirty, rng)
            frame.write_ndjson(folder / f"{name}.jsonl")
            counts[name] = len(frame)
        for name, n in counts.items():
            totals[name] += n
        if progress is not None:
            progress(d, counts)
    return totals
