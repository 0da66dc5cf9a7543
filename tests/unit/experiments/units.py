"""Per-unit frames where the right answer is known, and an experiment to analyse them, for
the tests of :mod:`pipeline.experiments`' statistics."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import polars as pl

from pipeline.experiments.config import METRICS, Experiment

CTR = METRICS["click_through_rate"]
REVENUE = METRICS["revenue_per_unit"]
NET = METRICS["net_kept_revenue_per_unit"]
RETURN_RATE = METRICS["return_rate"]

DAY0 = date(2026, 12, 1)


def simulate(
    n_control: int,
    n_treatment: int,
    *,
    lift: float = 0.0,
    seed: int = 0,
    days: int = 7,
    names: tuple[str, ...] = ("control", "treatment"),
) -> pl.DataFrame:
    """Units with every UNIT_COLUMNS column; revenue correlates with pre_revenue; the
    non-control arms' revenue and clicks are multiplied by 1 + lift."""
    rng = np.random.default_rng(seed)
    counts = [n_control] + [n_treatment] * (len(names) - 1)
    variant = np.repeat(np.array(names), counts)
    n = len(variant)
    factor = np.where(variant == names[0], 1.0, 1.0 + lift)
    pre = rng.gamma(2.0, 20.0, n)
    exposures = rng.poisson(6, n) + 1
    propensity = rng.beta(2, 18, n)  # unit-level heterogeneity: clustered clicks
    clicks = rng.binomial(exposures, np.minimum(propensity * factor, 1))
    items = rng.poisson(1.2, n)
    orders = np.minimum(items, rng.poisson(0.3, n) + 1) * (items > 0)
    revenue = np.maximum(0.0, (0.8 * pre + rng.normal(0, 15, n)) * factor)
    returns = rng.binomial(items, 0.3)
    returned_revenue = returns * 12.0
    return pl.DataFrame(
        {
            "variant": variant,
            "unit": [f"u{i}" for i in range(n)],
            "exposures": exposures,
            "clicks": clicks,
            "add_to_carts": rng.binomial(clicks, 0.3),
            "orders": orders,
            "converted": (items > 0).astype(np.int64),
            "items": items,
            "revenue": revenue,
            "returns": returns,
            "size_returns": rng.binomial(returns, 0.5),
            "returned_revenue": returned_revenue,
            "net_revenue": revenue - returned_revenue,
            "pre_revenue": pre,
            "day": [DAY0 + timedelta(days=int(d)) for d in rng.integers(0, days, n)],
        }
    )


def experiment(**overrides) -> Experiment:
    data = {
        "name": "ranker-v7",
        "salt": "s",
        "start": "2026-12-01T00:00:00Z",
        "primary_metric": "net_kept_revenue_per_unit",
        "guardrails": ["return_rate", "p99_latency_ms", "degraded_share", "error_rate"],
        "minimum_detectable_effect": 0.05,
        "variants": [
            {"name": "control", "model": "champion", "share": 0.5},
            {"name": "treatment", "model": "7", "share": 0.5},
        ],
    } | overrides
    return Experiment.from_mapping(data)


def operational(degraded_treatment: int = 10, latency_treatment: float = 100.0) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "variant": ["control", "treatment"],
            "answers": [20_000, 20_000],
            "p99_latency_ms": [100.0, latency_treatment],
            "degraded": [10, degraded_treatment],
            "errors": [4, 5],
        }
    )
