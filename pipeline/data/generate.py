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

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.data.contracts import RETURN_REASONS, SIZES, SIZING_BIAS_CM, STYLES
from pipeline.data.world import (
    BASE_CHART,
    CATEGORY_PRICE,
    CATEGORY_WEIGHTS,
    DEFAULT_END_DATE,
    GeneratorConfig,
    World,
    build_world,
)

__all__ = [
    "BASE_CHART",
    "CATEGORY_PRICE",
    "CATEGORY_WEIGHTS",
    "DEFAULT_END_DATE",
    "FIT_NOISE",
    "FIT_TOLERANCE",
    "STEP_SECONDS",
    "GeneratorConfig",
    "World",
    "build_world",
    "fit_outcome",
    "nominal_size",
    "simulate_day",
    "write_drops",
]

# |standardised misfit| above this is felt as too small / too large: with the size choices
# below it gives ~75% fits / 14% small / 11% large (RentTheRunway: 74 / 13 / 13).
FIT_TOLERANCE = 2.0
FIT_NOISE = 0.45
STEP_SECONDS = 90


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


@dataclass(frozen=True)
class _Views:
    """One day's item views, in session order: which item, in which session, at which step,
    by whom (``known``: not anonymous), and when (seconds into the day)."""

    item: np.ndarray
    sess: np.ndarray
    pos: np.ndarray
    cust: np.ndarray
    known: np.ndarray
    seconds: np.ndarray


@dataclass(frozen=True)
class _Choices:
    """What each view led to: try-on and its fit, liking, cart, purchase and return."""

    tries: np.ndarray
    size_tried: np.ndarray
    outcome: np.ndarray
    liked: np.ndarray
    cart_after_try: np.ndarray
    carted: np.ndarray
    removed: np.ndarray
    bought: np.ndarray
    size_bought: np.ndarray
    returned: np.ndarray
    reason: np.ndarray


def _browse(cfg: GeneratorConfig, world: World, d: int, rng: np.random.Generator) -> _Views | None:
    """Sessions of the day and the items they view (None when nobody browses)."""
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
        return None
    item, sess, pos = (np.concatenate(a) for a in (items, sessions, positions))
    order = np.lexsort((pos, sess))
    item, sess, pos = item[order], sess[order], pos[order]
    seconds = start_s[sess] + pos * STEP_SECONDS + rng.exponential(20, len(item))
    return _Views(item, sess, pos, customer[sess], ~anonymous[sess], seconds)


def _choose(world: World, views: _Views, rng: np.random.Generator) -> _Choices:
    """Affinity decides liking; body vs chart vs bias decides fit."""
    item, cust, known = views.item, views.cust, views.known
    n_e = len(item)
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
    return _Choices(
        tries=tries,
        size_tried=size_tried,
        outcome=outcome,
        liked=liked,
        cart_after_try=cart_after_try,
        carted=carted,
        removed=removed,
        bought=bought,
        size_bought=size_bought,
        returned=returned,
        reason=reason,
    )


def _numbered(prefix: str, name: str) -> pl.Expr:
    return (prefix + pl.int_range(pl.len()).cast(pl.String).str.zfill(9)).alias(name)


class _Tables:
    """Builds the day's raw tables from its views and choices."""

    def __init__(self, world: World, d: int, views: _Views, choices: _Choices):
        self.world, self.views, self.choices = world, views, choices
        self.prefix = f"{d:03d}"

    def frame(self, mask: np.ndarray, columns: dict) -> pl.DataFrame:
        v = self.views
        idx = np.flatnonzero(mask)
        who = pl.Series(v.cust[idx])
        base = {
            "session_id": (f"S{self.prefix}" + pl.Series(v.sess[idx]).cast(pl.String).str.zfill(8)),
            "customer_id": self.world.customers.get_column("customer_id")
            .gather(who)
            .set(pl.Series(~v.known[idx]), None),
            "item_id": self.world.items.get_column("item_id").gather(pl.Series(v.item[idx])),
        }
        return pl.DataFrame({**base, **{k: f(idx) for k, f in columns.items()}})

    def session_events(self) -> pl.DataFrame:
        c, seconds = self.choices, self.views.seconds
        kinds = [
            ("view", np.ones(len(seconds), bool), 0.0),
            ("try_on", c.tries, 20.0),
            ("add_to_cart", c.carted, 40.0),
            ("remove_from_cart", c.removed, 60.0),
            ("purchase", c.bought, 80.0),
        ]
        events = (
            pl.concat(
                [
                    self.frame(mask, {"event_type": lambda i, k=kind: [k] * len(i)}).with_columns(
                        pl.Series("__seconds", seconds[mask] + delay),
                        pl.Series("__e", np.flatnonzero(mask)),
                    )
                    for kind, mask, delay in kinds
                ]
            )
            .sort("__e", "__seconds")
            .drop("__e")
        )
        return events.select(
            _numbered(f"E{self.prefix}", "event_id"),
            "session_id",
            "customer_id",
            "event_type",
            "item_id",
            "__seconds",
        )

    def try_ons(self, rng: np.random.Generator) -> pl.DataFrame:
        c, seconds = self.choices, self.views.seconds
        fit_names = np.array(["too_large", "fits", "too_small"])
        try_ons = self.frame(
            c.tries,
            {
                "size": lambda i: np.array(SIZES)[c.size_tried[i]],
                "fit_feedback": lambda i: fit_names[c.outcome[i] + 1],
                "duration_s": lambda i: np.round(np.exp(rng.normal(3.5, 0.6, len(i))), 1),
                "liked": lambda i: c.liked[i],
                "added_to_cart": lambda i: c.cart_after_try[i],
                "__seconds": lambda i: seconds[i] + 20,
            },
        )
        return try_ons.select(
            _numbered(f"T{self.prefix}", "event_id"), pl.exclude("__seconds"), "__seconds"
        )

    def purchases(self) -> pl.DataFrame:
        c, seconds = self.choices, self.views.seconds
        prices = self.world.items.get_column("price").to_numpy()
        purchases = self.frame(
            c.bought,
            {
                "size": lambda i: np.array(SIZES)[c.size_bought[i]],
                "price": lambda i: prices[self.views.item[i]],
                "returned": lambda i: c.returned[i],
                "return_reason": lambda i: pl.Series(c.reason[i]).set(
                    pl.Series(~c.returned[i]), None
                ),
                "__seconds": lambda i: seconds[i] + 80,
            },
        ).drop("session_id")
        return purchases.select(
            _numbered(f"O{self.prefix}", "order_line_id"), pl.exclude("__seconds"), "__seconds"
        )


def simulate_day(cfg: GeneratorConfig, world: World, d: int) -> dict[str, pl.DataFrame]:
    """One day of sessions, try-ons and purchases (clean), with event seconds into the day."""
    rng = np.random.default_rng([cfg.seed, 1, d])
    views = _browse(cfg, world, d, rng)
    if views is None:
        return {name: pl.DataFrame() for name in ("session_events", "try_ons", "purchases")}
    tables = _Tables(world, d, views, _choose(world, views, rng))
    # The order of the draws is the generator's contract: try-on durations come last.
    session_events = tables.session_events()
    return {
        "session_events": session_events,
        "try_ons": tables.try_ons(rng),
        "purchases": tables.purchases(),
    }


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
