"""Fixed-horizon differences between two arms, via tea-tasting.

:class:`tea_tasting.Mean` for per-unit means, :class:`tea_tasting.RatioOfMeans` (delta method)
for ratio metrics and their covariate parameters for CUPED (the covariate is ``pre_revenue``,
the unit's revenue before the experiment). tea-tasting's log-ratio interval overflows near a
zero mean; :class:`_RatioOfMeans` keeps the absolute interval there.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import polars as pl
import scipy.stats
import tea_tasting as tt
import tea_tasting.metrics
import tea_tasting.metrics.mean

from pipeline.experiments.config import Metric
from pipeline.experiments.frames import COVARIATE, check_alpha, check_units, finite

__all__ = [
    "Difference",
    "arm_stats",
    "control_known_interval",
    "difference",
    "log_scale_relative",
    "tt_metric",
]

ArmStats = tuple[float, float, int]
"""An arm's metric value, its per-unit variance and its number of units (:func:`arm_stats`)."""


@dataclass(frozen=True)
class Difference:
    """Treatment minus control on one metric, with a two-sided interval at 1 - alpha.

    ``relative`` is ``treatment / control - 1``; its interval is tea-tasting's log-ratio
    interval (fixed) or the confidence sequence of the log ratio (msprt); NaN when the control
    value is not positive. ``significant`` is decided by the absolute interval.
    """

    metric: str
    control: str
    treatment: str
    control_value: float
    treatment_value: float
    absolute: float
    absolute_low: float
    absolute_high: float
    relative: float
    relative_low: float
    relative_high: float
    p_value: float
    n_control: int
    n_treatment: int
    method: str  # "fixed", "fixed+cuped", "msprt"

    def significant(self) -> bool:
        """Whether the absolute interval excludes 0."""
        return self.absolute_low > 0 or self.absolute_high < 0

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (non-finite numbers become None), plus ``significant``."""
        out: dict[str, Any] = {}
        for key, value in asdict(self).items():
            out[key] = finite(value) if isinstance(value, float) else value
        out["significant"] = self.significant()
        return out


class _RatioOfMeans(tt.RatioOfMeans):
    """tea-tasting's RatioOfMeans (z-test, unequal variances) that survives a mean near 0:
    its log-ratio interval overflows there, so the relative interval is left NaN and
    :func:`difference` falls back to the absolute interval over the control value."""

    def _analyze_stats(  # type: ignore[override]
        self,
        contr_mean: float,
        contr_var: float,
        contr_count: int,
        treat_mean: float,
        treat_var: float,
        treat_count: int,
    ) -> tea_tasting.metrics.mean.MeanResult:
        # rounding can leave a (CUPED-adjusted) variance a hair below 0
        contr_var, treat_var = max(0.0, contr_var), max(0.0, treat_var)
        try:
            return super()._analyze_stats(
                contr_mean, contr_var, contr_count, treat_mean, treat_var, treat_count
            )
        except (OverflowError, ZeroDivisionError, ValueError):
            scale = math.sqrt(contr_var / contr_count + treat_var / treat_count)
            effect = treat_mean - contr_mean
            half = float(scipy.stats.norm.isf((1 - self.confidence_level) / 2)) * scale
            p = 2 * float(scipy.stats.norm.sf(abs(effect) / scale)) if scale > 0 else math.nan
            return tea_tasting.metrics.mean.MeanResult(
                control=contr_mean,
                treatment=treat_mean,
                effect_size=effect,
                effect_size_ci_lower=effect - half,
                effect_size_ci_upper=effect + half,
                rel_effect_size=treat_mean / contr_mean - 1 if contr_mean else math.nan,
                rel_effect_size_ci_lower=math.nan,
                rel_effect_size_ci_upper=math.nan,
                pvalue=p,
                statistic=effect / scale if scale > 0 else math.nan,
            )


def tt_metric(metric: Metric, cuped: bool, alpha: float = 0.05) -> tt.RatioOfMeans:
    """tea-tasting's metric for ``metric`` (a per-unit mean when it has no denominator)."""
    return _RatioOfMeans(
        numer=metric.numerator,
        denom=metric.denominator,
        numer_covariate=COVARIATE if cuped else None,
        alternative="two-sided",
        confidence_level=1 - alpha,
        equal_var=False,
        use_t=False,
    )


def _p_or_degenerate(p: float, absolute: float) -> float:
    if math.isfinite(p):
        return float(p)
    return 1.0 if absolute == 0 else 0.0  # zero variance in both arms: the data decide


def difference(
    units: pl.DataFrame,
    metric: Metric,
    control: str,
    treatment: str,
    *,
    alpha: float = 0.05,
    cuped: bool = False,
) -> Difference:
    """Fixed-horizon difference of ``metric`` (treatment minus control), via tea-tasting.

    A per-unit mean (``denominator`` None) is a Welch z-test; a ratio metric uses the delta
    method; ``cuped=True`` adjusts by ``pre_revenue`` (CUPED, Deng et al. 2013), which keeps
    the estimate unbiased and narrows the interval by the squared correlation.

    Args:
        units: One row per unit: ``variant`` and the metric's columns (and ``pre_revenue``).

    Raises:
        ValueError: Naming the problem with the input.
    """
    check_alpha(alpha)
    frame = check_units(units, metric, [control, treatment], cuped)
    with warnings.catch_warnings():  # scipy on a zero variance; handled below
        warnings.simplefilter("ignore", RuntimeWarning)
        result = tt_metric(metric, cuped, alpha).analyze(
            frame, control, treatment, variant="variant"
        )
    counts = dict(frame.group_by("variant").len().iter_rows())
    absolute = float(result.effect_size)
    low, high = float(result.effect_size_ci_lower), float(result.effect_size_ci_upper)
    if not (math.isfinite(low) and math.isfinite(high)):
        low = high = absolute
    rel = float(result.rel_effect_size)
    rel_low, rel_high = (
        float(result.rel_effect_size_ci_lower),
        float(result.rel_effect_size_ci_upper),
    )
    if not result.control > 0:
        rel = rel_low = rel_high = math.nan
    elif not (result.treatment > 0 and math.isfinite(rel_low) and math.isfinite(rel_high)):
        # no log scale (a CUPED-adjusted mean can be <= 0)
        rel_low, rel_high = control_known_interval(low, high, float(result.control))
    return Difference(
        metric=metric.name,
        control=control,
        treatment=treatment,
        control_value=float(result.control),
        treatment_value=float(result.treatment),
        absolute=absolute,
        absolute_low=low,
        absolute_high=high,
        relative=rel,
        relative_low=rel_low,
        relative_high=rel_high,
        p_value=_p_or_degenerate(float(result.pvalue), absolute),
        n_control=int(counts[control]),
        n_treatment=int(counts[treatment]),
        method="fixed+cuped" if cuped else "fixed",
    )


def log_scale_relative(
    control: ArmStats, treatment: ArmStats, radius: Callable[[float, float], float]
) -> tuple[float, float, float] | None:
    """``treatment / control - 1`` with an interval built on the log scale of the ratio.

    The log ratio's variance is the delta method's, ``var_c / (n_c m_c^2) + var_t / (n_t
    m_t^2)``; the interval ``log ratio +- radius`` is exponentiated back, so it is never
    symmetric and never reaches -100 %.

    Args:
        control: The control arm's value, per-unit variance and units.
        treatment: The treatment arm's, likewise.
        radius: The interval's half-width on the log scale from the log ratio and its
            variance (a fixed critical value times the standard error, or an mSPRT radius).

    Returns:
        ``(relative, low, high)``, or None where there is no log scale (an arm at or below 0).
    """
    mc, vc, nc = control
    mt, vt, nt = treatment
    if not (mc > 0 and mt > 0):
        return None
    ratio = mt / mc
    r = float(radius(math.log(ratio), vc / (nc * mc * mc) + vt / (nt * mt * mt)))
    return ratio - 1, ratio * math.exp(-r) - 1, ratio * math.exp(r) - 1


def control_known_interval(low: float, high: float, control: float) -> tuple[float, float]:
    """The relative interval of the absolute one ``[low, high]`` with the control value taken
    as known: the fallback where there is no log scale (an arm at or near 0)."""
    return low / control, high / control


def arm_stats(frame: pl.DataFrame, metric: Metric, variants: Sequence[str]) -> dict[str, ArmStats]:
    """Per variant: the metric's value (a ratio of sums for a ratio metric), its per-unit
    variance (delta-method linearised) and the number of units, by tea-tasting's aggregates."""
    aggr_cols = tt_metric(metric, False).aggr_cols
    aggr = tea_tasting.metrics.aggregate_by_variants(frame, aggr_cols=aggr_cols, variant="variant")
    stats = {}
    for name in variants:
        a = aggr[name]
        mean = a.mean(metric.numerator) / a.mean(metric.denominator)
        stats[name] = (
            float(mean),
            max(0.0, float(a.ratio_var(metric.numerator, metric.denominator))),
            a.count(),
        )
    return stats
