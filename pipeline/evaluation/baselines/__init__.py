"""Next-item baselines with one interface: Polars events in, NumPy index matrices out.

One module a family, each importing only :mod:`~pipeline.evaluation.baselines.base` (and the
session heuristics :mod:`~pipeline.evaluation.baselines.neighbourhood`) below it; this package
face gathers them in :func:`all_baselines`:

* :mod:`~pipeline.evaluation.baselines.base`: the :class:`Baseline` protocol, histories,
  catalogue indexing and batched recommending (:class:`IndexedBaseline`);
* :mod:`~pipeline.evaluation.baselines.popularity`: popularity, recent popularity;
* :mod:`~pipeline.evaluation.baselines.cooccurrence`: session item-KNN, last-item successor;
* :mod:`~pipeline.evaluation.baselines.als`: implicit ALS;
* :mod:`~pipeline.evaluation.baselines.session_neighbours`: VS-KNN, STAN, V-STAN;
* :mod:`~pipeline.evaluation.baselines.sequential_rules`: sequential rules (SR);
* :mod:`~pipeline.evaluation.baselines.tuning`: tuning the session heuristics on the latest
  part of training.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pipeline.evaluation.baselines.als import ImplicitALS
from pipeline.evaluation.baselines.base import (
    Baseline,
    Histories,
    IndexedBaseline,
    dense_codes,
    epoch_seconds,
)
from pipeline.evaluation.baselines.cooccurrence import LastItemSuccessor, SessionKNN
from pipeline.evaluation.baselines.popularity import Popularity, RecentPopularity
from pipeline.evaluation.baselines.sequential_rules import SequentialRules
from pipeline.evaluation.baselines.session_neighbours import STAN, VSKNN, VSTAN
from pipeline.evaluation.baselines.tuning import SESSION_BASELINES, Tuned, session_baselines

__all__ = [
    "STAN",
    "VSKNN",
    "VSTAN",
    "Baseline",
    "Histories",
    "ImplicitALS",
    "IndexedBaseline",
    "LastItemSuccessor",
    "Popularity",
    "RecentPopularity",
    "SequentialRules",
    "SessionKNN",
    "Tuned",
    "all_baselines",
    "dense_codes",
    "epoch_seconds",
    "session_baselines",
]


def all_baselines(
    exclude_seen: bool = False, tune_horizon: timedelta | None = None, **kwargs: Any
) -> list[Baseline]:
    """One of each baseline with default settings.

    Args:
        exclude_seen: passed to every baseline.
        tune_horizon: when given, the session-neighbour heuristics (VS-KNN, STAN, V-STAN, SR)
            are tuned on the training sessions starting in this last part of training
            (:func:`pipeline.evaluation.baselines.tuning.tune`) and named ``<name>_tuned``;
            ``None`` keeps session-rec's defaults.
        **kwargs: per-baseline overrides keyed by baseline name, e.g.
            ``implicit_als={"factors": 32}`` or ``recent_popularity={"days": 3}``.

    Returns:
        Unfitted baselines: popularity, recent popularity, session KNN, last-item successor,
        implicit ALS, VS-KNN, STAN, V-STAN and sequential rules.
    """
    classes: list[type[IndexedBaseline]] = [
        Popularity,
        RecentPopularity,
        SessionKNN,
        LastItemSuccessor,
        ImplicitALS,
    ]
    unknown = set(kwargs) - {c.name for c in classes} - set(SESSION_BASELINES)
    if unknown:
        raise ValueError(f"unknown baselines {sorted(unknown)}")
    session = {name: kwargs.pop(name) for name in SESSION_BASELINES if name in kwargs}
    return [c(exclude_seen=exclude_seen, **kwargs.get(c.name, {})) for c in classes] + (
        session_baselines(exclude_seen, tune_horizon, **session)
    )
