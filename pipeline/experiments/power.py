"""Power and sample size of a fixed-horizon two-sided test, by tea-tasting's power analysis."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import polars as pl
import scipy.stats
import tea_tasting as tt
import tea_tasting.aggr

from pipeline.experiments.config import Metric
from pipeline.experiments.differences import tt_metric
from pipeline.experiments.frames import check_alpha, check_frame, metric_columns

__all__ = ["Plan", "plan", "power_at"]


@dataclass(frozen=True)
class Plan:
    """The sample size of a fixed-horizon two-sided test.

    ``units_per_variant`` is the number of units in the smallest treatment arm (in every arm
    when the shares are equal); ``total_units`` all arms together; ``days`` at
    ``units_per_day``; ``power`` the power achieved at that size (>= the requested power).
    ``std`` is the per-unit standard deviation (delta-method linearised for a ratio metric).
    """

    metric: str
    baseline: float
    std: float
    minimum_detectable_effect: float
    units_per_variant: int
    total_units: int
    days: float
    power: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _baseline(baseline_units: pl.DataFrame, metric: Metric) -> tuple[float, float]:
    frame = check_frame(baseline_units, metric_columns(metric), f"baseline for {metric.name}")
    if frame.height < 2:
        raise ValueError(f"baseline for {metric.name}: at least 2 units are needed")
    if metric.denominator is not None and frame[metric.denominator].sum() == 0:
        raise ValueError(
            f"baseline for {metric.name}: denominator {metric.denominator!r} sums to 0"
        )
    aggr = tea_tasting.aggr.read_aggregates(
        frame,
        group_col=None,
        **tt_metric(metric, False).aggr_cols._asdict(),
    )
    mean = float(aggr.mean(metric.numerator) / aggr.mean(metric.denominator))
    var = float(aggr.ratio_var(metric.numerator, metric.denominator))
    if mean == 0:
        raise ValueError(f"baseline for {metric.name}: the baseline value is 0; no relative effect")
    if not var > 0:
        raise ValueError(f"baseline for {metric.name}: the metric has zero variance")
    return mean, math.sqrt(var)


def _arms(shares: Sequence[float]) -> tuple[float, float]:
    shares = [float(s) for s in shares]
    if len(shares) < 2 or any(not (math.isfinite(s) and s > 0) for s in shares):
        raise ValueError(f"shares: at least two positive shares are needed, got {shares!r}")
    return shares[0], min(shares[1:])


def _power(effect: float, std: float, n_control: float, n_treatment: float, alpha: float) -> float:
    se = std * math.sqrt(1 / n_control + 1 / n_treatment)
    z = scipy.stats.norm.isf(alpha / 2)
    shift = abs(effect) / se
    return float(scipy.stats.norm.sf(z - shift) + scipy.stats.norm.cdf(-z - shift))


def power_at(
    baseline_units: pl.DataFrame,
    metric: Metric,
    *,
    relative_effect: float,
    alpha: float,
    units_per_variant: int,
    shares: Sequence[float] = (0.5, 0.5),
) -> float:
    """Analytic power of the fixed two-sided z-test for a relative effect, with
    ``units_per_variant`` units in the smallest treatment arm (the control has
    ``units_per_variant * shares[0] / min(shares[1:])``)."""
    check_alpha(alpha)
    if not (math.isfinite(relative_effect) and relative_effect != 0):
        raise ValueError(f"relative_effect must be finite and non-zero, got {relative_effect!r}")
    if units_per_variant < 2:
        raise ValueError(f"units_per_variant must be at least 2, got {units_per_variant!r}")
    mean, std = _baseline(baseline_units, metric)
    s0, s1 = _arms(shares)
    n_t = float(units_per_variant)
    return _power(relative_effect * mean, std, n_t * s0 / s1, n_t, alpha)


def plan(
    baseline_units: pl.DataFrame,
    metric: Metric,
    *,
    minimum_detectable_effect: float,
    alpha: float,
    power: float,
    shares: Sequence[float],
    units_per_day: float,
) -> Plan:
    """Sample size to detect a relative lift ``minimum_detectable_effect`` between the
    control (``shares[0]``) and the smallest other arm, two-sided at ``alpha`` with
    ``power``, by tea-tasting's power analysis (z-test, the baseline's variance in both arms).

    Raises:
        ValueError: Naming the problem with the input.
    """
    check_alpha(alpha)
    if not (0 < power < 1):
        raise ValueError(f"power must be in (0, 1), got {power!r}")
    if not (math.isfinite(minimum_detectable_effect) and minimum_detectable_effect != 0):
        raise ValueError(
            f"minimum_detectable_effect must be non-zero, got {minimum_detectable_effect!r}"
        )
    if not (math.isfinite(units_per_day) and units_per_day > 0):
        raise ValueError(f"units_per_day must be positive, got {units_per_day!r}")
    mean, std = _baseline(baseline_units, metric)
    s0, s1 = _arms(shares)
    solver = tt.RatioOfMeans(
        numer=metric.numerator,
        denom=metric.denominator,
        alternative="two-sided",
        alpha=alpha,
        power=power,
        ratio=s1 / s0,
        equal_var=False,
        use_t=False,
        rel_effect_size=minimum_detectable_effect,
    )
    n_pair = solver.solve_power(baseline_units, "n_obs")[0].n_obs
    n_t = max(2, math.ceil(n_pair * s1 / (s0 + s1)))
    effect = minimum_detectable_effect * mean
    achieved = _power(effect, std, n_t * s0 / s1, n_t, alpha)
    while achieved < power:  # rounding in the solver
        n_t += 1
        achieved = _power(effect, std, n_t * s0 / s1, n_t, alpha)
    total = math.ceil(n_t / s1 * sum(float(s) for s in shares) - 1e-9)
    return Plan(
        metric=metric.name,
        baseline=mean,
        std=std,
        minimum_detectable_effect=minimum_detectable_effect,
        units_per_variant=n_t,
        total_units=total,
        days=total / units_per_day,
        power=achieved,
    )
