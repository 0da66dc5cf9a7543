"""A deterministic generator of the raw data a fashion retailer emits.

It writes one *drop* per day, in the formats real systems emit: ``customers.parquet``,
``items.csv`` (size chart and stock as JSON), and JSON lines for ``session_events``,
``try_ons`` and ``purchases``. Marginals are set from the RentTheRunway data (height
165.9 +- 6.8 cm, weight 62.2 +- 9.9 kg, age 33.9 +- 8.0, fit feedback ~74% fits).

Planted structure a good model can find:

* **style affinity**: each customer has a Dirichlet preference over :data:`STYLES`; a session
  has one style and draws most items from it; liking follows the preference;
* **fit**: the garment's true measurements are its size chart shifted by the item's sizing
  bias; a size fits when the body sits inside it, so fit feedback and returns follow body vs.
  chart vs. bias;
* **session order**: every item has three successors, and the next item in a session is one
  of the previous item's successors half of the time.

``dirty`` > 0 injects the faults ingest must catch (duplicates, impossible values, unknown
items, unparseable times), so quarantine is exercised on every run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.contracts import (
    AGE_BANDS,
    CATEGORIES,
    CHART_MEASURES,
    COLOURS,
    PREFERRED_FITS,
    RETURN_REASONS,
    SIZES,
    STYLES,
)

DEFAULT_END_DATE = date(2026, 11, 1)

# Base women's size chart in cm: [min, max) per measure (EU high-street shape).
BASE_CHART = {
    "XS": {"bust": (78, 82), "waist": (60, 64), "hips": (86, 90)},
    "S": {"bust": (82, 86), "waist": (64, 68), "hips": (90, 94)},
    "M": {"bust": (86, 92), "waist": (68, 74), "hips": (94, 100)},
    "L": {"bust": (92, 98), "waist": (74, 80), "hips": (100, 106)},
    "XL": {"bust": (98, 106), "waist": (80, 88), "hips": (106, 114)},
    "XXL": {"bust": (106, 116), "waist": (88, 98), "hips": (114, 124)},
}
# cm a garment's true measurements move per unit of sizing bias (bias -1: 4 cm smaller).
BIAS_CM = 4.0
# |standardised misfit| above this is felt as too small / too large: with the size choices
# below it gives 73% fits / 15% small / 12% large (RentTheRunway: 74 / 13 / 13).
FIT_TOLERANCE = 2.0
FIT_NOISE = 0.45
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


@dataclass
class World:
    """Latent truth behind the raw tables (kept in memory; tests use it as ground truth)."""

    customers: pl.DataFrame
    items: pl.DataFrame
    successors: np.ndarray  # (n_items, 3) item indices
    style_pref: np.ndarray  # (n_customers, n_styles)
    body: np.ndarray  # (n_customers, 3): true bust, waist, hips, always known to the world
    chart: np.ndarray  # (n_items, n_sizes, 3 measures, 2 bounds) nominal chart
    bias: np.ndarray  # (n_items,)


def _make_customers(cfg: GeneratorConfig, rng: np.random.Generator) -> tuple[pl.DataFrame, ...]:
    n = cfg.customers
    height = np.clip(rng.normal(165.9, 6.8, n), 142, 198)
    weight = np.clip(22.6 * (height / 100) ** 2 * np.exp(rng.normal(0, 0.15, n)), 40, 140)
    dw = weight - 62.0
    bust = 88 + 0.55 * dw + rng.normal(0, 4.0, n)
    waist = 71 + 0.75 * dw + rng.normal(0, 4.0, n)
    hips = 98 + 0.6 * dw + rng.normal(0, 3.5, n)
    inseam = 0.45 * height + rng.normal(0, 2.5, n)
    shoe = np.round((38.5 + 0.12 * (height - 166) + rng.normal(0, 0.8, n)) * 2) / 2
    age = np.clip(rng.normal(33.9, 8.0, n), 18, 80)
    band_edges = np.array([25, 35, 45, 55])
    age_band = np.array(AGE_BANDS)[np.searchsorted(band_edges, age, side="right")]
    body_type = np.select(
        [
            height < 157,
            (bust - waist > 19) & (hips - waist > 25),
            hips - bust > 12,
            bust - hips > -4,
            waist - hips > -22,
            weight / (height / 100) ** 2 < 20.5,
        ],
        ["petite", "hourglass", "pear", "full bust", "apple", "straight & narrow"],
        default="athletic",
    )
    consent = rng.random(n) < 0.85
    preferred = np.array(PREFERRED_FITS)[rng.choice(3, n, p=[0.25, 0.55, 0.2])]
    # Window customers sign up during the window; the rest up to two years before it.
    start = datetime(cfg.start_date.year, cfg.start_date.month, cfg.start_date.day, tzinfo=UTC)
    offset_days = np.where(
        rng.random(n) < 0.15, rng.uniform(0, cfg.days, n), -rng.uniform(1, 730, n)
    )
    signup = [start + timedelta(days=float(d)) for d in offset_days]

    # Some customers skip some measurements in their profile.
    def _recorded(values: np.ndarray, p_missing: float) -> np.ndarray:
        return np.where(rng.random(n) < p_missing, np.nan, np.round(values, 1))

    frame = pl.DataFrame(
        {
            "customer_id": [f"C{i:07d}" for i in range(n)],
            "signup_ts": signup,
            "age_band": age_band,
            "height_cm": _recorded(height, 0.03),
            "weight_kg": _recorded(weight, 0.1),
            "bust_cm": _recorded(bust, 0.08),
            "waist_cm": _recorded(waist, 0.08),
            "hips_cm": _recorded(hips, 0.08),
            "inseam_cm": _recorded(inseam, 0.3),
            "shoe_size_eu": _recorded(shoe, 0.2),
            "body_type": body_type,
            "preferred_fit": preferred,
            "body_data_consent": consent,
        }
    ).with_columns(pl.col(pl.Float64).fill_nan(None))
    style_pref = rng.dirichlet(np.full(len(STYLES), 0.35), n)
    body = np.stack([bust, waist, hips], axis=1)
    return frame, style_pref, body


def _make_items(cfg: GeneratorConfig, rng: np.random.Generator) -> tuple:
    n = cfg.n_items
    n_brands = max(8, min(60, n // 25))
    brand_bias = np.clip(rng.normal(0, 0.35, n_brands), -0.9, 0.9)
    brand_shift = rng.normal(0, 1.0, n_brands)
    brand = rng.integers(0, n_brands, n)
    category = rng.choice(len(CATEGORIES), n, p=CATEGORY_WEIGHTS / CATEGORY_WEIGHTS.sum())
    style = rng.integers(0, len(STYLES), n)
    bias = np.clip(brand_bias[brand] + rng.normal(0, 0.2, n), -1, 1).round(2)
    price = np.round(CATEGORY_PRICE[category] * np.exp(rng.normal(0, 0.35, n)), 2)
    base = np.array([[BASE_CHART[s][m] for m in CHART_MEASURES] for s in SIZES], dtype=float)
    chart = np.round(base[None] + brand_shift[brand][:, None, None, None], 1)
    stock = rng.poisson(lam=np.array([2, 5, 7, 6, 4, 2])[None, :] * 1.5, size=(n, len(SIZES)))
    stock[rng.random((n, len(SIZES))) < 0.08] = 0
    start = datetime(cfg.start_date.year, cfg.start_date.month, cfg.start_date.day, tzinfo=UTC)
    launch_days = np.where(
        rng.random(n) < 0.1, rng.uniform(0, cfg.days, n), -rng.uniform(1, 365, n)
    )
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
            "item_id": [f"I{i:06d}" for i in range(n)],
            "category": np.array(CATEGORIES)[category],
            "brand": [f"brand_{b:02d}" for b in brand],
            "price": price,
            "colour": np.array(COLOURS)[rng.integers(0, len(COLOURS), n)],
            "style": np.array(STYLES)[style],
            "size_chart": charts,
            "sizing_bias": bias,
            "stock": stocks,
            "launch_ts": [start + timedelta(days=float(d)) for d in launch_days],
        }
    )
    # Successors: same style twice, anything once (complements and look-alikes).
    successors = np.empty((n, 3), dtype=np.int64)
    for s in range(len(STYLES)):
        members = np.flatnonzero(style == s)
        successors[members, :2] = rng.choice(members, (len(members), 2))
    successors[:, 2] = rng.integers(0, n, n)
    return frame, chart, bias, style, popularity, successors


def fit_outcome(
    body: np.ndarray, chart: np.ndarray, bias: np.ndarray, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Fit of a garment on a body: -1 too large, 0 fits, +1 too small.

    Args:
        body: (n, 3) true bust, waist, hips in cm.
        chart: (n, 3, 2) nominal [min, max) of the chosen size per measure.
        bias: (n,) sizing bias; the garment really measures ``chart + bias * BIAS_CM``.
        rng: adds perception noise when given.
    """
    actual = chart + (bias * BIAS_CM)[:, None, None]
    centre = actual.mean(axis=2)
    half = np.maximum((actual[:, :, 1] - actual[:, :, 0]) / 2, 1.0)
    score = ((body - centre) / half).mean(axis=1)
    if rng is not None:
        score = score + rng.normal(0, FIT_NOISE, len(score))
    return np.where(score > FIT_TOLERANCE, 1, np.where(score < -FIT_TOLERANCE, -1, 0))


def nominal_size(body: np.ndarray, chart: np.ndarray) -> np.ndarray:
    """The size a customer picks from the chart: the one whose centre is nearest her body."""
    centre = chart.mean(axis=3)  # (n, sizes, 3)
    distance = np.abs(body[:, None, :] - centre).mean(axis=2)
    return distance.argmin(axis=1)


def build_world(cfg: GeneratorConfig) -> World:
    """Draw customers, items and their latent structure."""
    rng = np.random.default_rng(cfg.seed)
    customers, style_pref, body = _make_customers(cfg, rng)
    items, chart, bias, _style, popularity, successors = _make_items(cfg, rng)
    items = items.with_columns(pl.Series("__popularity", popularity))
    return World(customers, items, successors, style_pref, body, chart, bias)


def _pick_by_style(
    rng: np.random.Generator, styles: np.ndarray, item_style: np.ndarray, popularity: np.ndarray
) -> np.ndarray:
    """Draw one item per row from the given style, proportionally to popularity."""
    order = np.lexsort((np.arange(len(item_style)), item_style))
    weights = popularity[order]
    sorted_style = item_style[order]
    cum = np.zeros(len(order))
    for s in np.unique(sorted_style):
        members = sorted_style == s
        w = np.cumsum(weights[members])
        cum[members] = s + w / w[-1]
    position = np.searchsorted(cum, styles + rng.random(len(styles)) * 0.999999, side="right")
    return order[np.minimum(position, len(order) - 1)]


def simulate(cfg: GeneratorConfig, world: World) -> dict[str, pl.DataFrame]:
    """Simulate sessions, try-ons and purchases over the window; returns clean event tables."""
    rng = np.random.default_rng(cfg.seed + 1)
    n_c, n_i = len(world.customers), len(world.items)
    item_style = (
        world.items["style"].replace_strict(list(STYLES), list(range(len(STYLES)))).to_numpy()
    )
    popularity = world.items["__popularity"].to_numpy()
    signup = world.customers["signup_ts"].to_numpy()
    activity = np.exp(rng.normal(0, 0.7, n_c)) * cfg.sessions_per_customer_day / np.exp(0.245)

    sess_customer, sess_day = [], []
    for d in range(cfg.days):
        day = cfg.start_date + timedelta(days=d)
        day_end = np.datetime64(datetime(day.year, day.month, day.day) + timedelta(days=1), "us")
        counts = rng.poisson(activity)
        counts[signup.astype("datetime64[us]") >= day_end] = 0
        idx = np.repeat(np.arange(n_c), counts)
        sess_customer.append(idx)
        sess_day.append(np.full(len(idx), d))
    customer = np.concatenate(sess_customer)
    day_idx = np.concatenate(sess_day)
    n_s = len(customer)
    anonymous = rng.random(n_s) < cfg.anonymous_share
    cum_pref = np.cumsum(world.style_pref[customer], axis=1)
    session_style = (rng.random(n_s)[:, None] > cum_pref).sum(axis=1).clip(0, len(STYLES) - 1)
    length = np.minimum(1 + rng.geometric(0.22, n_s), 15)
    start_s = rng.uniform(0, 86_000 - 60 * 15 * 2, n_s)

    steps_item, steps_session, steps_pos = [], [], []
    prev = np.full(n_s, -1)
    for t in range(int(length.max())):
        active = np.flatnonzero(length > t)
        u = rng.random(len(active))
        fresh = _pick_by_style(rng, session_style[active], item_style, popularity)
        anywhere = rng.choice(n_i, len(active), p=popularity / popularity.sum())
        item = np.where(u < 0.85, fresh, anywhere)
        if t > 0:
            follow = u < 0.5
            succ = world.successors[prev[active], rng.integers(0, 3, len(active))]
            item = np.where(follow, succ, np.where(u < 0.88, fresh, anywhere))
        prev[active] = item
        steps_item.append(item)
        steps_session.append(active)
        steps_pos.append(np.full(len(active), t))
    item = np.concatenate(steps_item)
    sess = np.concatenate(steps_session)
    pos = np.concatenate(steps_pos)
    order = np.lexsort((pos, sess))
    item, sess, pos = item[order], sess[order], pos[order]
    cust = customer[sess]
    known = ~anonymous[sess]
    n_e = len(item)
    seconds = start_s[sess] + pos * 90 + rng.exponential(30, n_e)

    # Affinity decides liking; body vs chart vs bias decides fit.
    affinity = world.style_pref[cust, item_style[item]] * len(STYLES)
    tries = known & (rng.random(n_e) < 0.3)
    chart = world.chart[item]  # (n_e, sizes, 3, 2)
    nominal = nominal_size(world.body[cust], chart)
    preferred = world.customers["preferred_fit"].to_numpy()[cust]
    nominal = nominal + np.where(preferred == "relaxed", 1, 0) - np.where(preferred == "slim", 1, 0)
    nominal = nominal + np.where(rng.random(n_e) < 0.1, rng.choice([-1, 1], n_e), 0)
    size_tried = np.clip(nominal, 0, len(SIZES) - 1)
    outcome = fit_outcome(
        world.body[cust], chart[np.arange(n_e), size_tried], world.bias[item], rng
    )
    liked = rng.random(n_e) < 1 / (1 + np.exp(-(1.2 * affinity - 1.5)))
    cart_after_try = tries & liked & (outcome == 0) & (rng.random(n_e) < 0.7)
    cart_plain = ~tries & known & (rng.random(n_e) < 0.05 * affinity)
    carted = cart_after_try | cart_plain
    removed = carted & (rng.random(n_e) < 0.2)
    bought = carted & ~removed & (rng.random(n_e) < 0.65)
    # Who tried on corrects the size after feedback; who did not buys the nominal size.
    size_bought = np.clip(size_tried + np.where(tries, outcome, 0), 0, len(SIZES) - 1)
    bought_fit = fit_outcome(
        world.body[cust], chart[np.arange(n_e), size_bought], world.bias[item], rng
    )
    returned = bought & np.where(bought_fit != 0, rng.random(n_e) < 0.6, rng.random(n_e) < 0.07)
    reason = np.where(
        bought_fit > 0,
        "too_small",
        np.where(bought_fit < 0, "too_large", np.array(RETURN_REASONS)[rng.integers(2, 5, n_e)]),
    )

    customer_ids = world.customers["customer_id"].to_numpy()
    item_ids = world.items["item_id"].to_numpy()
    session_ids = np.array([f"S{d:03d}{i:08d}" for i, d in enumerate(day_idx)])
    event_day = day_idx[sess]
    cust_id = np.where(known, customer_ids[cust], None)

    rows = []
    kinds = [
        ("view", np.ones(n_e, bool), 0.0),
        ("try_on", tries, 20.0),
        ("add_to_cart", carted, 40.0),
        ("remove_from_cart", removed, 60.0),
        ("purchase", bought, 80.0),
    ]
    for kind, mask, delay in kinds:
        rows.append(
            pl.DataFrame(
                {
                    "e": np.flatnonzero(mask),
                    "event_type": kind,
                    "seconds": seconds[mask] + delay,
                }
            )
        )
    ev = pl.concat(rows).sort("e", "seconds")
    e = ev["e"].to_numpy()
    session_events = pl.DataFrame(
        {
            "event_id": [f"E{i:09d}" for i in range(len(ev))],
            "session_id": session_ids[sess[e]],
            "customer_id": pl.Series(cust_id[e].tolist(), dtype=pl.String),
            "event_type": ev["event_type"],
            "item_id": item_ids[item[e]],
            "__day": event_day[e],
            "__seconds": ev["seconds"],
        }
    )
    t = np.flatnonzero(tries)
    fit_names = np.array(["too_large", "fits", "too_small"])
    try_ons = pl.DataFrame(
        {
            "event_id": [f"T{i:09d}" for i in t],
            "session_id": session_ids[sess[t]],
            "customer_id": pl.Series(cust_id[t].tolist(), dtype=pl.String),
            "item_id": item_ids[item[t]],
            "size": np.array(SIZES)[size_tried[t]],
            "fit_feedback": fit_names[outcome[t] + 1],
            "duration_s": np.round(rng.lognormal(3.5, 0.6, len(t)), 1),
            "liked": liked[t],
            "added_to_cart": cart_after_try[t],
            "__day": event_day[t],
            "__seconds": seconds[t] + 20,
        }
    )
    b = np.flatnonzero(bought)
    prices = world.items["price"].to_numpy()
    purchases = pl.DataFrame(
        {
            "order_line_id": [f"O{i:09d}" for i in b],
            "customer_id": pl.Series(cust_id[b].tolist(), dtype=pl.String),
            "item_id": item_ids[item[b]],
            "size": np.array(SIZES)[size_bought[b]],
            "price": prices[item[b]],
            "returned": returned[b],
            "return_reason": pl.Series(
                np.where(returned[b], reason[b], None).tolist(), dtype=pl.String
            ),
            "__day": event_day[b],
            "__seconds": seconds[b] + 80,
        }
    )
    return {"session_events": session_events, "try_ons": try_ons, "purchases": purchases}


def _dirty(frame: pl.DataFrame, key: str, share: float, rng: np.random.Generator) -> pl.DataFrame:
    """Inject the faults real feeds carry: exact duplicates, unknown items, unparseable times."""
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


def write_drops(cfg: GeneratorConfig, out: Path) -> dict[str, int]:
    """Generate the window and write one drop folder per day under ``out``.

    Returns the number of rows written per table (including injected faults).
    """
    world = build_world(cfg)
    events = simulate(cfg, world)
    rng = np.random.default_rng(cfg.seed + 2)
    counts = dict.fromkeys(("customers", "items", *events), 0)
    start = datetime(cfg.start_date.year, cfg.start_date.month, cfg.start_date.day, tzinfo=UTC)
    for d in range(cfg.days):
        day = cfg.start_date + timedelta(days=d)
        folder = out / day.isoformat()
        folder.mkdir(parents=True, exist_ok=True)
        lo = start + timedelta(days=d)
        hi = lo + timedelta(days=1)
        first = pl.lit(d == 0)
        customers = world.customers.filter(
            (pl.col("signup_ts") < hi) & (first | (pl.col("signup_ts") >= lo))
        )
        if cfg.dirty > 0 and len(customers) > 0:
            bad = customers.head(max(1, int(len(customers) * cfg.dirty))).with_columns(
                pl.lit(999.0).alias("height_cm")
            )
            customers = pl.concat([customers, bad])
        customers.write_parquet(folder / "customers.parquet")
        items = world.items.drop("__popularity").filter(
            (pl.col("launch_ts") < hi) & (first | (pl.col("launch_ts") >= lo))
        )
        items.with_columns(pl.col("launch_ts").dt.strftime("%Y-%m-%dT%H:%M:%SZ")).write_csv(
            folder / "items.csv"
        )
        counts["customers"] += len(customers)
        counts["items"] += len(items)
        for name, frame in events.items():
            today = frame.filter(pl.col("__day") == d)
            today = today.with_columns(
                (
                    pl.lit(datetime(day.year, day.month, day.day, tzinfo=UTC))
                    + pl.duration(milliseconds=(pl.col("__seconds") * 1000).round().cast(pl.Int64))
                )
                .dt.strftime("%Y-%m-%dT%H:%M:%SZ")
                .alias("ts")
            ).drop("__day", "__seconds")
            today = _dirty(today, today.columns[0], cfg.dirty, rng)
            today.write_ndjson(folder / f"{name}.jsonl")
            counts[name] += len(today)
    return counts
