"""Tuning baselines on the latest part of training, and the tuned session heuristics.

:func:`tune` holds out the training sessions that start in the last ``horizon`` of the training
period, scores each setting of a small grid by MRR@20 on every step after the first of those
sessions, and refits the winner on all of training; test rows never take part. :class:`Tuned`
wraps that in the baseline interface, and :func:`session_baselines` builds VS-KNN, STAN, V-STAN
and SR default or tuned (what ``all_baselines(tune_horizon=...)`` returns).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import polars as pl

from pipeline.evaluation.baselines.base import Baseline, IndexedBaseline
from pipeline.evaluation.baselines.sequential_rules import SequentialRules
from pipeline.evaluation.baselines.session_neighbours import STAN, VSKNN, VSTAN
from pipeline.model.metrics import mrr_at_k

GRIDS: dict[str, list[dict[str, Any]]] = {
    "vsknn": [
        {"k": k, "sample_size": n, "weighting_score": w}
        for k in (50, 100)
        for n in (500, 1000)
        for w in ("div", "quadratic")
    ],
    "stan": [
        {"lambda_spw": spw, "lambda_snh": snh, "lambda_inh": inh}
        for spw in (1.02, 4.9)
        for snh in (5, 80)
        for inh in (2.05, 8)
    ],
    "vstan": [
        {"lambda_spw": spw, "lambda_snh": snh, "lambda_idf": idf}
        for spw in (1.02, 4.9)
        for snh in (5, 80)
        for idf in (0, 5)
    ],
    "sr": [
        {"steps": s, "weighting": w, "pruning": p}
        for s in (5, 10)
        for w in ("div", "quadratic")
        for p in (20, 0)
    ],
}
"""Default grids of :func:`tune` (8 settings each), around session-rec's tuned values."""

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Tuning:
    """What :func:`tune` chose and why.

    Attributes:
        best: the winning parameters.
        scores: MRR@20 on the held-out sessions, one per grid entry (in grid order).
        n_queries: held-out queries scored.
    """

    best: dict[str, Any]
    scores: list[float]
    n_queries: int


def holdout_queries(
    train: pl.DataFrame, horizon: timedelta
) -> tuple[pl.DataFrame, list[list[str]], list[str], pl.Series]:
    """Split training events: sessions starting in the last ``horizon`` become queries.

    Returns:
        The events of earlier sessions, and for every step after the first of each held-out
        session its history, target item id and time.
    """
    if horizon <= timedelta(0):
        raise ValueError(f"horizon must be positive, got {horizon}")
    frame = train.with_row_index("_order").sort("session_id", "ts", "_order")
    starts = frame.group_by("session_id").agg(pl.col("ts").min().alias("_start"))
    cut = frame.get_column("ts").max() - horizon  # type: ignore[operator]
    frame = frame.join(starts, on="session_id", how="left")
    fit = frame.filter(pl.col("_start") < cut).drop("_start", "_order")
    held = frame.filter(pl.col("_start") >= cut).sort("session_id", "ts", "_order")
    sessions = held.group_by("session_id", maintain_order=True).agg(
        pl.col("item_id").cast(pl.String), "ts"
    )
    histories: list[list[str]] = []
    targets: list[str] = []
    times: list[datetime] = []
    for items, stamps in zip(
        sessions.get_column("item_id").to_list(), sessions.get_column("ts").to_list(), strict=True
    ):
        for step in range(1, len(items)):
            histories.append(items[:step])
            targets.append(items[step])
            times.append(stamps[step])
    return fit, histories, targets, pl.Series("ts", times, dtype=train.schema["ts"])


def tune(
    factory: Callable[..., IndexedBaseline],
    grid: Sequence[Mapping[str, Any]],
    train: pl.DataFrame,
    items: list[str],
    horizon: timedelta,
    k: int = 20,
) -> tuple[IndexedBaseline, Tuning]:
    """Pick parameters by MRR@``k`` on the latest training sessions, then refit on all.

    Sessions starting in the last ``horizon`` of ``train`` are held out; each setting is fitted
    on the earlier sessions and scored on every step after the first of the held-out ones
    (targets among items seen in the earlier sessions, as in the click-stream protocol). Only
    ``train`` is read: test rows never take part.

    Args:
        factory: builds an unfitted baseline from keyword parameters (e.g. ``VSTAN``).
        grid: the settings to try (keep it small: each is one fit and one scoring pass).
        train: training events (``session_id``, ``customer_id``, ``item_id``, ``ts``).
        items: the catalogue.
        horizon: the held-out tail of the training period.
        k: cut-off of the MRR.

    Returns:
        The best setting refitted on all of ``train``, and the :class:`Tuning` record.

    Raises:
        ValueError: on an empty grid, a non-positive horizon, or no held-out queries.
    """
    if not grid:
        raise ValueError("grid is empty")
    fit, histories, targets, times = holdout_queries(train, horizon)
    seen = set(fit.get_column("item_id").cast(pl.String).unique().to_list())
    index = {item: i for i, item in enumerate(items)}
    keep = [i for i, t in enumerate(targets) if t in seen and t in index]
    if not keep or fit.height == 0:
        raise ValueError(f"no held-out queries in the last {horizon} of training")
    histories = [histories[i] for i in keep]
    target_index = np.array([index[targets[i]] for i in keep])
    when = times.gather(keep)
    scores = []
    for params in grid:
        model = factory(**params).fit(fit, items)
        ranked = model.recommend(histories, None, k, times=when)
        scores.append(mrr_at_k(ranked, target_index, k))
    best = dict(grid[int(np.argmax(scores))])
    return factory(**best).fit(train, items), Tuning(best, scores, len(keep))


class Tuned:
    """A baseline whose :meth:`fit` runs :func:`tune` (see there) before refitting on all."""

    def __init__(
        self,
        factory: Callable[..., IndexedBaseline],
        grid: Sequence[Mapping[str, Any]],
        horizon: timedelta,
        name: str,
    ) -> None:
        """Configure the tuner.

        Args:
            factory: builds the baseline from keyword parameters.
            grid: settings to try.
            horizon: held-out tail of the training period.
            name: the name results are reported under.
        """
        self.factory = factory
        self.grid = list(grid)
        self.horizon = horizon
        self.name = name
        self.tuning: Tuning | None = None
        self.model: IndexedBaseline | None = None

    def fit(self, train: pl.DataFrame, items: list[str]) -> Tuned:
        """Tune on the latest ``horizon`` of ``train``, refit the best on all of it.

        Training too small to hold anything out (no held-out query) keeps the factory's
        defaults, logged as such: a benchmark on a small sample still runs.
        """
        try:
            self.model, self.tuning = tune(self.factory, self.grid, train, items, self.horizon)
        except ValueError as exc:
            if "no held-out queries" not in str(exc):
                raise
            log.warning("%s: %s; keeping the defaults", self.name, exc)
            self.model, self.tuning = self.factory().fit(train, items), None
        return self

    def recommend(
        self,
        histories: list[list[str]],
        customers: list[str] | None = None,
        k: int = 20,
        *,
        times: Sequence[datetime] | np.ndarray | pl.Series | None = None,
    ) -> np.ndarray:
        """The tuned baseline's recommendations (see ``IndexedBaseline.recommend``)."""
        if self.model is None:
            raise RuntimeError(f"{self.name} is not fitted: call fit() first")
        return self.model.recommend(histories, customers, k, times=times)

    def __repr__(self) -> str:
        return f"Tuned({self.name}, best={None if self.tuning is None else self.tuning.best})"


SESSION_BASELINES = ("vsknn", "stan", "vstan", "sr")
"""Names of the baselines :func:`session_baselines` builds."""


def session_baselines(
    exclude_seen: bool = False, tune_horizon: timedelta | None = None, **kwargs: Any
) -> list[Baseline]:
    """VS-KNN, STAN, V-STAN and SR, with session-rec's defaults or tuned.

    Args:
        exclude_seen: passed to every baseline.
        tune_horizon: when given, each is tuned on the sessions starting in this last part of
            training (:func:`tune` over :data:`GRIDS`) and reported as ``<name>_tuned``.
        **kwargs: per-baseline overrides keyed by name (fixed parameters, also under tuning).

    Returns:
        Unfitted baselines.
    """
    unknown = set(kwargs) - set(SESSION_BASELINES)
    if unknown:
        raise ValueError(f"unknown session baselines {sorted(unknown)}")
    out: list[Baseline] = []
    for cls in (VSKNN, STAN, VSTAN, SequentialRules):
        fixed = {"exclude_seen": exclude_seen, **kwargs.get(cls.name, {})}
        if tune_horizon is None:
            out.append(cls(**fixed))
        else:
            # Grid parameters override the fixed ones (partial's keywords are defaults).
            factory = functools.partial(cls, **fixed)
            out.append(Tuned(factory, GRIDS[cls.name], tune_horizon, f"{cls.name}_tuned"))
    return out
