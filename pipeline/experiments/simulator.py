"""Simulated shoppers to prove the experiment statistics on: the generator's customers, with
their planted tastes and bodies, shopping from what a ranker shows them.

The shoppers are :func:`pipeline.data.generate.build_world`'s customers and items. A day
brings each shopper a Poisson number of sessions (her ``activity``); a session has an intent
style (drawn from her Dirichlet style preference) and a geometric number of page views; each
page view browses a category and shows the arm's top ``k`` of that category. Per shown item:

* **click** with probability ``sigmoid(CLICK_BASE + 0.55 * affinity + 0.9 * [intent style]
  + 0.3 * appeal) * 1 / log2(position + 2)``: rising with the shopper's true affinity (her
  preference for the item's style, scaled to mean 1 as in the generator), decaying with
  position;
* **add to cart** a clicked item with ``sigmoid(CART_BASE + 0.35 * affinity)``, **buy** a
  carted one with ``BUY_RATE * multiplier`` (the multiplier is the arm's planted uplift);
* **size**: the ranker's recommended size when it recommends one (the truly best size for
  her body and the garment's real measurements, plus the ranker's ``size_offset``), else the
  size she would pick from the chart (nearest nominal centre, shifted by her preferred fit,
  one size off 10 % of the time, as in the generator);
* **return** by the generator's fit logic (:func:`~pipeline.data.generate.fit_outcome` with
  perception noise): 60 % of misfits come back for size, 7 % of fits for style or quality.

Returns are attributed to the day of the purchase (no return lag). Revenue is the item's price.

A planted uplift multiplies the buy probability, so the *true* relative effect on revenue,
net kept revenue and items per unit is exactly ``multiplier - 1`` (every expected amount
scales by it; returns are independent of the buy draw) as long as ``BUY_RATE * multiplier <=
1``: :func:`planted_effect`.

Everything is vectorised over page views; a ranker's top-``k`` per customer and category is
computed once when it is built (a ranker is a fixed model), so an experiment of ~40k sessions
takes a few tens of milliseconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Final

import numpy as np
import polars as pl

from pipeline.data.contracts import SIZES, SIZING_BIAS_CM
from pipeline.data.generate import (
    CATEGORY_WEIGHTS,
    GeneratorConfig,
    World,
    build_world,
    fit_outcome,
    nominal_size,
)
from pipeline.experiments.config import UNIT_COLUMNS
from pipeline.experiments.interleaving import team_draft

__all__ = [
    "Arm",
    "Events",
    "Ranker",
    "Shoppers",
    "affinity_ranker",
    "planted_effect",
    "popularity_ranker",
    "pre_revenue",
    "session_clicks",
    "simulate",
    "simulate_interleaved",
]

CLICK_BASE: Final = -3.4
CART_BASE: Final = -1.4
BUY_RATE: Final = 0.6
MISFIT_RETURN: Final = 0.6
BASE_RETURN: Final = 0.07
PAGE_CONTINUE: Final = 0.5  # chance of another page view in the session
MAX_PAGES: Final = 6
START: Final = date(2026, 12, 1)
_COUNTS = tuple(c for c in UNIT_COLUMNS if c != "pre_revenue")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


class Shoppers:
    """The generator's world, with the quantities the behaviour model reads precomputed."""

    def __init__(self, customers: int = 12_000, items: int = 400, seed: int = 7, k: int = 10):
        cfg = GeneratorConfig(customers=customers, items=items, seed=seed)
        self.world: World = build_world(cfg)
        w = self.world
        self.k = k
        self.n_customers, self.n_items = len(w.activity), len(w.bias)
        self.n_styles = w.style_pref.shape[1]
        self.n_categories = len(CATEGORY_WEIGHTS)
        self.affinity = (w.style_pref * self.n_styles).astype(np.float32)  # (customers, styles)
        self.appeal = (np.log(w.popularity) - np.log(w.popularity).mean()).astype(np.float32)
        self.price = w.items.get_column("price").to_numpy()
        self.item_ids = w.items.get_column("item_id").to_list()
        self.category_p = CATEGORY_WEIGHTS / CATEGORY_WEIGHTS.sum()
        preferred = w.customers.get_column("preferred_fit").to_numpy()
        self.fit_shift = (preferred == "relaxed").astype(int) - (preferred == "slim").astype(int)
        self.cum_pref = np.cumsum(w.style_pref, axis=1)

    def true_score(self) -> np.ndarray:
        """What a perfect model would rank by, without the session's intent: (customers, items)."""
        return 0.55 * self.affinity[:, self.world.item_style] + 0.3 * self.appeal[None, :]

    def best_size(self, customer: np.ndarray, item: np.ndarray) -> np.ndarray:
        """The size whose real measurements (chart shifted by the sizing bias) are nearest her."""
        actual = (
            self.world.chart[item] + (self.world.bias[item] * SIZING_BIAS_CM)[:, None, None, None]
        )
        return nominal_size(self.world.body[customer], actual)

    def chart_size(
        self, customer: np.ndarray, item: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """The size she picks alone: nearest nominal centre, her preferred fit, 10 % one off."""
        size = nominal_size(self.world.body[customer], self.world.chart[item])
        size = size + self.fit_shift[customer]
        size = size + np.where(rng.random(len(size)) < 0.1, rng.choice([-1, 1], len(size)), 0)
        return np.clip(size, 0, len(SIZES) - 1)


@dataclass
class Ranker:
    """A fixed model: per customer and browsed category, its top ``k`` items (best first),
    and whether (and how well) it recommends a size."""

    name: str
    top: np.ndarray  # (customers, categories, k) item indices
    recommends_size: bool = True
    size_offset: int = 0
    ids: Sequence[str] = field(default_factory=list, repr=False)

    def __call__(self, customer: int, category: int) -> list[str]:
        """The ranked item ids for a customer's page view in ``category`` (the session context)."""
        return [self.ids[i] for i in self.top[customer, category]]


def _ranker_from_scores(
    shoppers: Shoppers, name: str, scores: np.ndarray, recommends_size: bool, size_offset: int
) -> Ranker:
    k = shoppers.k
    order = np.argsort(-scores, axis=1, kind="stable")
    cat_sorted = shoppers.world.item_category[order]
    top = np.empty((scores.shape[0], shoppers.n_categories, k), dtype=np.int32)
    for c in range(shoppers.n_categories):
        # the first k items of the category in the ranker's order (others fill a short one)
        first = np.argsort(cat_sorted != c, axis=1, kind="stable")[:, :k]
        top[:, c, :] = np.take_along_axis(order, first, axis=1)
    if top.shape[0] == 1:
        top = np.broadcast_to(top, (shoppers.n_customers, *top.shape[1:]))
    return Ranker(name, top, recommends_size, size_offset, shoppers.item_ids)


def affinity_ranker(
    shoppers: Shoppers,
    quality: float,
    seed: int = 0,
    *,
    recommends_size: bool = True,
    size_offset: int = 0,
    name: str | None = None,
) -> Ranker:
    """A model of the shoppers' true taste: its score correlates ``quality`` (0..1) with the
    true score (style affinity and item appeal) per customer and item, the rest is the
    model's fixed noise (drawn from ``seed``)."""
    if not 0 <= quality <= 1:
        raise ValueError("quality must be in [0, 1]")
    truth = shoppers.true_score()
    truth = (truth - truth.mean()) / truth.std()
    noise = np.random.default_rng([seed, 17]).standard_normal(truth.shape, dtype=np.float32)
    scores = quality * truth + np.sqrt(1 - quality**2) * noise
    return _ranker_from_scores(
        shoppers, name or f"affinity-{quality:g}", scores, recommends_size, size_offset
    )


def popularity_ranker(shoppers: Shoppers, *, recommends_size: bool = False) -> Ranker:
    """The same popular items for everyone (the holdout); it recommends no size."""
    scores = shoppers.world.popularity[None, :]
    return _ranker_from_scores(shoppers, "popularity", scores, recommends_size, 0)


@dataclass(frozen=True)
class Arm:
    """A variant as the simulator serves it: a ranker and a planted buy-probability uplift."""

    name: str
    ranker: Ranker
    multiplier: float = 1.0


def planted_effect(multiplier: float) -> float:
    """The true relative effect of a buy-probability multiplier on revenue, net kept revenue
    and items per unit (exact while ``BUY_RATE * multiplier <= 1``)."""
    if not 0 <= BUY_RATE * multiplier <= 1:
        raise ValueError("the multiplier makes the buy probability leave [0, 1]")
    return multiplier - 1


@dataclass
class Events:
    """Per (unit, day) sums of the unit columns (``pre_revenue`` excluded), with the arm."""

    unit: np.ndarray  # customer index
    day: np.ndarray
    values: dict[str, np.ndarray]
    arm_of: np.ndarray  # (customers,) arm index, -1 not enrolled
    arm_names: tuple[str, ...]
    days: int
    start: date
    unit_ids: pl.Series  # the customers' ids (the experiment's unit)

    def units(
        self, through_day: int | None = None, pre_revenue: np.ndarray | None = None
    ) -> pl.DataFrame:
        """The per-unit frame of every unit exposed by ``through_day`` (inclusive; None: all):
        columns ``variant``, ``unit``, ``day`` (first exposure, a date) and UNIT_COLUMNS."""
        keep = np.ones(len(self.day), bool) if through_day is None else self.day <= through_day
        unit, day = self.unit[keep], self.day[keep]
        n = len(self.arm_of)
        exposed = np.bincount(unit, minlength=n) > 0
        first = np.full(n, np.iinfo(np.int32).max)
        np.minimum.at(first, unit, day)
        idx = np.flatnonzero(exposed)
        columns: dict[str, object] = {
            "variant": np.array(self.arm_names)[self.arm_of[idx]],
            "unit": self.unit_ids.gather(idx),
            "day": pl.Series(
                np.datetime64(self.start, "D") + first[idx].astype("timedelta64[D]")
            ).cast(pl.Date),
        }
        for name in _COUNTS:
            if name == "converted":
                continue
            total = np.bincount(unit, weights=self.values[name][keep], minlength=n)[idx]
            columns[name] = total if name.endswith("revenue") else total.astype(np.int64)
        columns["converted"] = (np.asarray(columns["items"]) > 0).astype(np.int64)
        pre = np.zeros(n) if pre_revenue is None else pre_revenue
        columns["pre_revenue"] = pre[idx]
        frame = pl.DataFrame(columns)
        return frame.select("variant", "unit", "day", *UNIT_COLUMNS)


def _sessions(
    shoppers: Shoppers, customers: np.ndarray, days: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Sessions of ``customers`` over ``days``: (customer, day) per session."""
    activity = shoppers.world.activity[customers]
    counts = rng.poisson(activity[None, :], (days, len(customers)))
    day, who = np.nonzero(counts)
    reps = counts[day, who]
    return np.repeat(customers[who], reps), np.repeat(day, reps)


def _pages(
    shoppers: Shoppers, session_customer: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Page views: (session index, category, intent style of the session) per view."""
    n = len(session_customer)
    pages = np.minimum(rng.geometric(1 - PAGE_CONTINUE, n), MAX_PAGES)
    u = rng.random(n)[:, None]
    intent = (u > shoppers.cum_pref[session_customer]).sum(axis=1).clip(0, shoppers.n_styles - 1)
    session = np.repeat(np.arange(n), pages)
    category = rng.choice(shoppers.n_categories, len(session), p=shoppers.category_p)
    return session, category, intent[session]


def _click_p(
    shoppers: Shoppers, customer: np.ndarray, shown: np.ndarray, intent: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Click probability per shown item (views, k), and the shopper's affinity for it."""
    style = shoppers.world.item_style[shown]
    affinity = shoppers.affinity[customer[:, None], style]
    logit = (
        CLICK_BASE
        + 0.55 * affinity
        + 0.9 * (style == intent[:, None])
        + 0.3 * shoppers.appeal[shown]
    )
    decay = 1 / np.log2(np.arange(shown.shape[1]) + 2)
    return _sigmoid(logit) * decay[None, :], affinity


def _purchases(
    shoppers: Shoppers,
    customer: np.ndarray,
    item: np.ndarray,
    ranker_of: Sequence[Ranker],
    arm: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Size, fit and return per bought item: (returned, returned for size)."""
    size = shoppers.chart_size(customer, item, rng)
    for a, ranker in enumerate(ranker_of):
        mine = (arm == a) & ranker.recommends_size
        if mine.any():
            best = shoppers.best_size(customer[mine], item[mine]) + ranker.size_offset
            size[mine] = np.clip(best, 0, len(SIZES) - 1)
    w = shoppers.world
    chart = w.chart[item, size]
    fit = fit_outcome(w.body[customer], chart, w.bias[item], rng)
    misfit = fit != 0
    returned = rng.random(len(item)) < np.where(misfit, MISFIT_RETURN, BASE_RETURN)
    return returned, returned & misfit


def simulate(
    shoppers: Shoppers,
    arms: Sequence[Arm],
    arm_of: np.ndarray,
    *,
    days: int = 14,
    seed: int | Sequence[int] = 0,
    start: date = START,
) -> Events:
    """Run an experiment: each enrolled customer (``arm_of[c] >= 0``) shops for ``days`` from
    her arm's ranker. Returns per (unit, day) sums; ``Events.units`` makes the frame."""
    rng = np.random.default_rng(seed)
    arm_of = np.asarray(arm_of)
    enrolled = np.flatnonzero(arm_of >= 0)
    s_customer, s_day = _sessions(shoppers, enrolled, days, rng)
    session, category, intent = _pages(shoppers, s_customer, rng)
    customer, day = s_customer[session], s_day[session]
    arm = arm_of[customer]
    shown = np.empty((len(session), shoppers.k), dtype=np.int32)
    for a, spec in enumerate(arms):
        mine = arm == a
        shown[mine] = spec.ranker.top[customer[mine], category[mine]]
    p_click, affinity = _click_p(shoppers, customer, shown, intent)
    clicked = rng.random(p_click.shape) < p_click
    carted = clicked & (rng.random(p_click.shape) < _sigmoid(CART_BASE + 0.35 * affinity))
    multiplier = np.array([a.multiplier for a in arms])[arm]
    bought = carted & (rng.random(p_click.shape) < (BUY_RATE * multiplier)[:, None])
    view, position = np.nonzero(bought)
    item = shown[view, position]
    returned, size_returned = _purchases(
        shoppers, customer[view], item, [a.ranker for a in arms], arm[view], rng
    )
    price = shoppers.price[item]

    # page views -> sessions -> (unit, day) rows
    n_views = len(session)

    def per_view(weights: np.ndarray | None = None, at: np.ndarray | None = None) -> np.ndarray:
        return np.bincount(view if at is None else at, weights=weights, minlength=n_views)

    view_values = {
        "exposures": np.ones(n_views),
        "clicks": clicked.sum(axis=1).astype(float),
        "add_to_carts": carted.sum(axis=1).astype(float),
        "items": per_view(),
        "revenue": per_view(price),
        "returns": per_view(returned.astype(float)),
        "size_returns": per_view(size_returned.astype(float)),
        "returned_revenue": per_view(price * returned),
    }
    view_values["net_revenue"] = view_values["revenue"] - view_values["returned_revenue"]
    bought_in_session = np.bincount(session, weights=view_values["items"], minlength=len(s_day))
    order_view = np.zeros(n_views)
    first_view = np.r_[0, np.flatnonzero(np.diff(session)) + 1]  # sessions are contiguous
    order_view[first_view] = bought_in_session[session[first_view]] > 0
    view_values["orders"] = order_view
    view_values["converted"] = np.zeros(n_views)  # derived per unit
    key = customer.astype(np.int64) * days + day
    uniq, inverse = np.unique(key, return_inverse=True)
    values = {
        name: np.bincount(inverse, weights=v, minlength=len(uniq))
        for name, v in view_values.items()
    }
    return Events(
        unit=(uniq // days).astype(np.int64),
        day=(uniq % days).astype(np.int64),
        values=values,
        arm_of=arm_of,
        arm_names=tuple(a.name for a in arms),
        days=days,
        start=start,
        unit_ids=shoppers.world.customers.get_column("customer_id"),
    )


def pre_revenue(
    shoppers: Shoppers, ranker: Ranker, enrolled: np.ndarray, *, days: int = 14, seed: int = 0
) -> np.ndarray:
    """Revenue per customer in a pre-period of ``days`` served by ``ranker`` (the CUPED
    covariate): the same shoppers, an independent draw of their behaviour."""
    arm_of = np.where(enrolled, 0, -1)
    events = simulate(shoppers, [Arm("pre", ranker)], arm_of, days=days, seed=[seed, 99])
    return np.bincount(
        events.unit, weights=events.values["revenue"], minlength=shoppers.n_customers
    )


def _session_sample(
    shoppers: Shoppers, sessions: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    activity = shoppers.world.activity
    s_customer = rng.choice(shoppers.n_customers, sessions, p=activity / activity.sum())
    session, category, intent = _pages(shoppers, s_customer, rng)
    return s_customer, session, category, intent


def session_clicks(shoppers: Shoppers, ranker: Ranker, sessions: int, seed: int = 0) -> np.ndarray:
    """Clicks per session for ``sessions`` sessions (shoppers drawn by activity) served by
    ``ranker`` alone: what an A/B test split by session compares."""
    rng = np.random.default_rng([seed, 5])
    s_customer, session, category, intent = _session_sample(shoppers, sessions, rng)
    customer = s_customer[session]
    shown = ranker.top[customer, category]
    p_click, _ = _click_p(shoppers, customer, shown, intent)
    clicks = (rng.random(p_click.shape) < p_click).sum(axis=1)
    return np.bincount(session, weights=clicks, minlength=sessions)


def simulate_interleaved(
    shoppers: Shoppers, ranker_a: Ranker, ranker_b: Ranker, sessions: int, seed: int = 0
) -> pl.DataFrame:
    """``sessions`` sessions whose page views show the team-draft merge of both rankers
    (seeded by the view's id, as serving would); clicks are credited per team.

    Returns one row per session: ``session``, ``clicks_a``, ``clicks_b``.
    """
    rng = np.random.default_rng([seed, 6])
    s_customer, session, category, intent = _session_sample(shoppers, sessions, rng)
    customer = s_customer[session]
    k = shoppers.k
    shown = np.empty((len(session), k), dtype=np.int32)
    team_is_a = np.zeros((len(session), k), dtype=bool)
    top_a, top_b = ranker_a.top, ranker_b.top
    for v in range(len(session)):
        c, g = customer[v], category[v]
        # item indices as strings: team_draft works on ids
        items, teams = team_draft(
            [str(i) for i in top_a[c, g]], [str(i) for i in top_b[c, g]], k, f"{seed}-view-{v}"
        )
        shown[v] = [int(i) for i in items]
        team_is_a[v] = [t == "a" for t in teams]
    p_click, _ = _click_p(shoppers, customer, shown, intent)
    clicked = rng.random(p_click.shape) < p_click
    clicks_a = np.bincount(session, weights=(clicked & team_is_a).sum(axis=1), minlength=sessions)
    clicks_b = np.bincount(session, weights=(clicked & ~team_is_a).sum(axis=1), minlength=sessions)
    return pl.DataFrame(
        {
            "session": np.arange(sessions),
            "clicks_a": clicks_a.astype(np.int64),
            "clicks_b": clicks_b.astype(np.int64),
        }
    )
