"""The statistics of an online experiment: differences with intervals, CUPED, always-valid
sequential inference, the sample-ratio-mismatch check, power planning and guardrails.

Fixed-horizon analysis is tea-tasting's: :class:`tea_tasting.Mean` for per-unit means,
:class:`tea_tasting.RatioOfMeans` (delta method) for ratio metrics, their covariate
parameters for CUPED (the covariate is ``pre_revenue``, the unit's revenue before the
experiment), its power analysis and :func:`tea_tasting.adjust_fwer` (Holm) for the guardrails.
Written here is only what tea-tasting lacks: the always-valid mixture SPRT (:func:`msprt`,
:func:`sequential`), a k-arm chi-square sample-ratio check and the verdict.

Every entry point validates its input and raises :class:`ValueError` naming the problem
(an empty frame, a missing column, a variant without units, NaN or infinity in a column, a
ratio metric whose denominator sums to zero in an arm) before any arithmetic runs.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Final

import numpy as np
import polars as pl
import scipy.stats
import tea_tasting as tt
import tea_tasting.aggr
import tea_tasting.experiment
import tea_tasting.metrics
import tea_tasting.metrics.mean

from pipeline.experiments.config import METRICS, UNIT_COLUMNS, Experiment, Metric

__all__ = [
    "Analysis",
    "Difference",
    "Plan",
    "SampleRatio",
    "analyse",
    "difference",
    "msprt",
    "plan",
    "power_at",
    "sample_ratio",
    "sequential",
]

COVARIATE: Final = "pre_revenue"
DEFAULT_RELATIVE_TAU: Final = 0.05  # the mixing scale when no tau2 is given: a 5 % lift
LATENCY_TOLERANCE: Final = 1.2  # p99 latency guardrail: breached above 1.2 x control
VERDICTS: Final = (
    "blocked: sample ratio mismatch",
    "guardrail breached",
    "treatment wins",
    "treatment loses",
    "no significant difference yet",
)


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


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
            out[key] = _finite(value) if isinstance(value, float) else value
        out["significant"] = self.significant()
        return out


@dataclass(frozen=True)
class SampleRatio:
    """A chi-square goodness-of-fit test of the units per variant against the shares."""

    p_value: float
    mismatch: bool
    counts: dict[str, int]
    expected: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


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


# --- validation ---------------------------------------------------------------------------


def _metric_columns(metric: Metric, cuped: bool = False) -> list[str]:
    cols = [metric.numerator] + ([metric.denominator] if metric.denominator else [])
    if cuped and COVARIATE not in cols:
        cols.append(COVARIATE)
    return cols


def _check_frame(frame: object, columns: Sequence[str], what: str) -> pl.DataFrame:
    if not isinstance(frame, pl.DataFrame):
        raise ValueError(f"{what}: expected a polars DataFrame, got {type(frame).__name__}")
    if frame.height == 0:
        raise ValueError(f"{what}: the frame is empty (no units)")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what}: missing columns {missing}; it has {frame.columns}")
    for col in columns:
        dtype = frame.schema[col]
        if col in {"variant", "unit", "day"}:
            if frame[col].null_count():
                raise ValueError(f"{what}: column {col!r} has {frame[col].null_count()} nulls")
            continue
        if not dtype.is_numeric():
            raise ValueError(f"{what}: column {col!r} is {dtype}, expected numbers")
        nulls = frame[col].null_count()
        if nulls:
            raise ValueError(f"{what}: column {col!r} has {nulls} nulls")
        if dtype.is_float():
            bad = frame.select((~pl.col(col).is_finite()).sum()).item()
            if bad:
                raise ValueError(f"{what}: column {col!r} has {bad} NaN or infinite values")
    return frame


def _check_units(units: object, metric: Metric, variants: Sequence[str], cuped: bool = False):
    what = f"metric {metric.name}"
    frame = _check_frame(units, ["variant", *_metric_columns(metric, cuped)], what)
    frame = frame.with_columns(pl.col("variant").cast(pl.String))
    if "unit" in frame.columns and frame["unit"].n_unique() != frame.height:
        raise ValueError(f"{what}: {frame.height - frame['unit'].n_unique()} duplicate units")
    if len(set(variants)) != len(variants):
        raise ValueError(f"{what}: control and treatment are the same variant {variants[0]!r}")
    counts = dict(frame.group_by("variant").len().iter_rows())
    for name in variants:
        n = counts.get(name, 0)
        if n < 2:
            raise ValueError(
                f"{what}: variant {name!r} has {n} units; at least 2 are needed "
                f"(variants present: {sorted(counts)})"
            )
        if metric.denominator is not None:
            total = frame.filter(pl.col("variant") == name)[metric.denominator].sum()
            if total == 0:
                raise ValueError(
                    f"{what}: denominator {metric.denominator!r} sums to 0 in variant {name!r}"
                )
    return frame.filter(pl.col("variant").is_in(list(variants)))


def _check_alpha(alpha: float) -> None:
    if not (isinstance(alpha, int | float) and 0 < alpha < 1):
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")


# --- fixed horizon -------------------------------------------------------------------------


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


def _tt_metric(metric: Metric, cuped: bool, alpha: float = 0.05) -> tt.RatioOfMeans:
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
    _check_alpha(alpha)
    frame = _check_units(units, metric, [control, treatment], cuped)
    with warnings.catch_warnings():  # scipy on a zero variance; handled below
        warnings.simplefilter("ignore", RuntimeWarning)
        result = _tt_metric(metric, cuped, alpha).analyze(
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
        # no log scale (a CUPED-adjusted mean can be <= 0): the control is taken as known
        rel_low, rel_high = low / result.control, high / result.control
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


# --- always-valid sequential ---------------------------------------------------------------


def msprt(
    estimate: np.ndarray | float,
    variance: np.ndarray | float,
    tau2: np.ndarray | float,
    alpha: float = 0.05,
) -> tuple[np.ndarray, np.ndarray]:
    """The normal-mixture SPRT of Johari, Koomen, Pekelis & Walsh (2017), vectorised.

    For an estimate ``d`` of a difference with variance ``V`` (``s_t^2/n_t + s_c^2/n_c``) and
    a N(0, tau^2) mixture over the true difference under the alternative, the mixture
    likelihood ratio against H0: difference = 0 is::

        Lambda = sqrt(V / (V + tau^2)) * exp(d^2 * tau^2 / (2 V (V + tau^2)))

    (with equal arms of n units and unit variance s^2, V = 2 s^2 / n and this is the paper's
    eq. (11)). ``1 / Lambda`` is an always-valid p-value once its running minimum over the
    looks is taken. Inverting ``Lambda < 1/alpha`` in the true difference gives the
    confidence sequence ``d +- radius`` with::

        radius = sqrt(V (V + tau^2) / tau^2 * (2 log(1/alpha) + log((V + tau^2) / V)))

    Returns:
        ``(1 / Lambda clipped to 1, radius)``, arrays of the broadcast shape.
    """
    d = np.asarray(estimate, dtype=float)
    v = np.asarray(variance, dtype=float)
    t2 = np.asarray(tau2, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        log_lambda = 0.5 * np.log(v / (v + t2)) + d * d * t2 / (2 * v * (v + t2))
        p = np.minimum(1.0, np.exp(-log_lambda))
        radius = np.sqrt(v * (v + t2) / t2 * (2 * math.log(1 / alpha) + np.log((v + t2) / v)))
    degenerate = v <= 0
    p = np.where(degenerate, np.where(d == 0, 1.0, 0.0), p)
    radius = np.where(degenerate, 0.0, radius)
    return p, radius


def _arm_stats(frame: pl.DataFrame, metric: Metric, variants: Sequence[str]):
    aggr_cols = _tt_metric(metric, False).aggr_cols
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


def sequential(
    units: pl.DataFrame,
    metric: Metric,
    control: str,
    treatment: str,
    *,
    alpha: float = 0.05,
    tau2: float | None = None,
    previous_p: float = 1.0,
) -> Difference:
    """Always-valid (mSPRT) difference at this look; see :func:`msprt` for the formula.

    Each arm's mean and variance are the per-unit mean, or for a ratio metric the ratio of
    sums with its delta-method variance (tea-tasting's aggregates). The p-value is
    ``min(previous_p, 1/Lambda)``: pass the previous look's p-value to keep the running
    minimum. The interval is the confidence sequence at this look (valid simultaneously over
    all looks); the relative interval is the confidence sequence of ``log(treatment /
    control)`` with mixing variance ``tau^2 / control^2``, exponentiated.

    tau^2 (``tau2``, in squared metric units): the mixture is most powerful for true effects
    of about the size tau, so the default is ``(0.05 * control)^2``, a 5 % lift
    (:func:`analyse` passes the experiment's minimum detectable effect instead). When the
    control value is 0 the default falls back to the current variance of the estimate.

    Raises:
        ValueError: Naming the problem with the input.
    """
    _check_alpha(alpha)
    if not (0 <= previous_p <= 1):
        raise ValueError(f"previous_p must be in [0, 1], got {previous_p!r}")
    if tau2 is not None and not (math.isfinite(tau2) and tau2 > 0):
        raise ValueError(f"tau2 must be a positive finite number, got {tau2!r}")
    frame = _check_units(units, metric, [control, treatment])
    stats = _arm_stats(frame, metric, [control, treatment])
    (mc, vc, nc), (mt, vt, nt) = stats[control], stats[treatment]
    d = mt - mc
    v = vc / nc + vt / nt
    if tau2 is None:
        tau2 = (DEFAULT_RELATIVE_TAU * mc) ** 2
        if not (math.isfinite(tau2) and tau2 > 0):  # control at (or underflowing to) 0
            tau2 = v if v > 0 else 1.0
    p, radius = msprt(d, v, tau2, alpha)
    rel = rel_low = rel_high = math.nan
    if mc > 0 and mt > 0:
        try:
            v_log = vc / (nc * mc * mc) + vt / (nt * mt * mt)
            _, r_log = msprt(math.log(mt / mc), v_log, tau2 / (mc * mc), alpha)
            ratio = mt / mc
            rel, rel_low, rel_high = (
                ratio - 1,
                ratio * math.exp(-float(r_log)) - 1,
                ratio * math.exp(float(r_log)) - 1,
            )
        except (ZeroDivisionError, OverflowError):
            rel = math.nan
    if mc > 0 and not (math.isfinite(rel) and rel_low <= rel <= rel_high):
        # no log scale (treatment at 0, or a mean near 0): the control is taken as known
        rel = d / mc
        rel_low, rel_high = (d - float(radius)) / mc, (d + float(radius)) / mc
    return Difference(
        metric=metric.name,
        control=control,
        treatment=treatment,
        control_value=mc,
        treatment_value=mt,
        absolute=d,
        absolute_low=d - float(radius),
        absolute_high=d + float(radius),
        relative=rel,
        relative_low=rel_low,
        relative_high=rel_high,
        p_value=float(min(previous_p, float(p))),
        n_control=int(nc),
        n_treatment=int(nt),
        method="msprt",
    )


# --- sample ratio ---------------------------------------------------------------------------


def sample_ratio(
    counts: Mapping[str, int],
    shares: Mapping[str, float],
    *,
    threshold: float = 0.001,
) -> SampleRatio:
    """Chi-square goodness of fit of the units per variant to the declared shares (k arms;
    for two arms it is tea-tasting's normal-approximation SampleRatio without continuity
    correction). ``mismatch`` when p < ``threshold`` (0.001 by convention: the check runs
    on every experiment and every day, so it must rarely cry wolf).

    Raises:
        ValueError: Unknown or missing variants, negative counts, non-positive shares.
    """
    if not shares or len(shares) < 2:
        raise ValueError(
            f"sample ratio: at least two variants with shares are needed, got {shares!r}"
        )
    unknown = sorted(set(counts) - set(shares))
    if unknown:
        raise ValueError(f"sample ratio: counts for undeclared variants {unknown}")
    for name, share in shares.items():
        if not (math.isfinite(share) and share > 0):
            raise ValueError(f"sample ratio: share of {name!r} must be positive, got {share!r}")
    observed = {name: int(counts.get(name, 0)) for name in shares}
    for name, n in observed.items():
        if n < 0:
            raise ValueError(f"sample ratio: count of {name!r} is negative ({n})")
    total = sum(observed.values())
    if total == 0:
        raise ValueError("sample ratio: no units in any variant")
    share_sum = sum(shares.values())
    expected = {name: total * share / share_sum for name, share in shares.items()}
    chi2 = sum((observed[k] - expected[k]) ** 2 / expected[k] for k in shares)
    p = float(scipy.stats.chi2.sf(chi2, df=len(shares) - 1))
    return SampleRatio(p_value=p, mismatch=p < threshold, counts=observed, expected=expected)


# --- power ----------------------------------------------------------------------------------


def _baseline(baseline_units: pl.DataFrame, metric: Metric) -> tuple[float, float]:
    frame = _check_frame(baseline_units, _metric_columns(metric), f"baseline for {metric.name}")
    if frame.height < 2:
        raise ValueError(f"baseline for {metric.name}: at least 2 units are needed")
    if metric.denominator is not None and frame[metric.denominator].sum() == 0:
        raise ValueError(
            f"baseline for {metric.name}: denominator {metric.denominator!r} sums to 0"
        )
    aggr = tea_tasting.aggr.read_aggregates(
        frame,
        group_col=None,
        **_tt_metric(metric, False).aggr_cols._asdict(),
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
    _check_alpha(alpha)
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
    _check_alpha(alpha)
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


# --- the whole analysis ---------------------------------------------------------------------


@dataclass
class Analysis:
    """An experiment's analysis: see :func:`analyse`."""

    experiment: str
    version: str
    srm: SampleRatio
    primary: list[Difference]
    sequential: list[Difference]
    metrics: list[Difference]
    guardrails: list[dict[str, Any]]
    cumulative: pl.DataFrame
    verdict: str
    winner: str | None
    notes: list[str] = field(default_factory=list)  # metrics that could not be computed

    def as_dict(self) -> dict[str, Any]:
        return {
            "experiment": self.experiment,
            "version": self.version,
            "verdict": self.verdict,
            "winner": self.winner,
            "srm": self.srm.as_dict(),
            "primary": [d.as_dict() for d in self.primary],
            "sequential": [d.as_dict() for d in self.sequential],
            "metrics": [d.as_dict() for d in self.metrics],
            "guardrails": [
                {k: _finite(v) if isinstance(v, float) else v for k, v in g.items()}
                for g in self.guardrails
            ],
            "cumulative": [
                {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}
                for row in self.cumulative.to_dicts()
            ],
            "notes": list(self.notes),
        }

    def to_markdown(self) -> str:
        def pct(x: float) -> str:
            return f"{x:+.2%}" if math.isfinite(x) else "n/a"

        def row(d: Difference) -> str:
            return (
                f"| {d.treatment} | {d.metric} | {d.control_value:.4g} | {d.treatment_value:.4g} "
                f"| {pct(d.relative)} [{pct(d.relative_low)}, {pct(d.relative_high)}] "
                f"| {d.p_value:.3g} | {d.method} |"
            )

        head = "| variant | metric | control | treatment | lift [interval] | p | method |\n"
        head += "|---|---|---|---|---|---|---|\n"
        lines = [
            f"# Experiment {self.experiment} (version {self.version})",
            "",
            f"**Verdict: {self.verdict}**" + (f" (winner: {self.winner})" if self.winner else ""),
            "",
            f"Sample ratio: p = {self.srm.p_value:.3g}, counts {self.srm.counts}"
            + (" **mismatch**" if self.srm.mismatch else ""),
            "",
            "## Primary metric",
            "",
            head + "\n".join(row(d) for d in [*self.primary, *self.sequential]),
            "",
            "## Guardrails",
            "",
            "| variant | guardrail | control | treatment | adjusted p | breached |",
            "|---|---|---|---|---|---|",
        ]
        for g in self.guardrails:
            p = g.get("p_adjusted")
            ptxt = f"{p:.3g}" if isinstance(p, float) and math.isfinite(p) else "-"
            cv, tv = g["control_value"], g["treatment_value"]
            lines.append(
                f"| {g['variant']} | {g['guardrail']} | {'-' if cv is None else f'{cv:.4g}'} "
                f"| {'-' if tv is None else f'{tv:.4g}'} | {ptxt} "
                f"| {'yes' if g['breached'] else 'no'} |"
            )
        lines += ["", "## All metrics", "", head + "\n".join(row(d) for d in self.metrics)]
        if self.notes:
            lines += ["", "Notes:", *[f"- {n}" for n in self.notes]]
        return "\n".join(lines) + "\n"

    def plot(self, path: Path) -> Path:
        """The cumulative relative lift of the primary metric with its always-valid band,
        one panel line per treatment, and a zero line. Written with matplotlib's Agg canvas."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        path = Path(path)
        fig = Figure(figsize=(8, 4.5))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        for name in self.cumulative["variant"].unique(maintain_order=True).to_list():
            part = self.cumulative.filter(pl.col("variant") == name).sort("day")
            days = part["day"].to_list()
            (line,) = ax.plot(days, part["relative"].to_numpy(), marker="o", label=name)
            ax.fill_between(
                days,
                part["relative_low"].to_numpy(),
                part["relative_high"].to_numpy(),
                color=line.get_color(),
                alpha=0.2,
            )
        ax.axhline(0, color="black", linewidth=1)
        primary = self.primary[0].metric if self.primary else ""
        ax.set_title(f"{self.experiment}: cumulative lift of {primary} (always-valid interval)")
        ax.set_ylabel("relative to control")
        ax.yaxis.set_major_formatter(lambda x, _pos: f"{x:.0%}")
        if self.cumulative.height:
            ax.legend()
        fig.autofmt_xdate()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100, bbox_inches="tight")
        return path


def _holm(pvalues: Mapping[str, float], alpha: float) -> dict[str, float]:
    if not pvalues:
        return {}
    result = tea_tasting.experiment.ExperimentResult(
        {name: {"pvalue": p} for name, p in pvalues.items()}  # type: ignore[misc]
    )
    adjusted = tt.adjust_fwer(result, alpha=alpha, arbitrary_dependence=True, method="bonferroni")
    return {
        name: float(r["pvalue_adj"])  # type: ignore[index]
        for name, r in adjusted[tea_tasting.multiplicity.NO_NAME_COMPARISON].items()
    }


def _two_proportions(x_c: int, n_c: int, x_t: int, n_t: int) -> float:
    if n_c <= 0 or n_t <= 0:
        raise ValueError("operational: a variant has no answers")
    pooled = (x_c + x_t) / (n_c + n_t)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_c + 1 / n_t))
    diff = x_t / n_t - x_c / n_c
    if se == 0:
        return 1.0 if diff == 0 else 0.0
    return float(2 * scipy.stats.norm.sf(abs(diff) / se))


def _guardrails(
    experiment: Experiment,
    differences: Mapping[tuple[str, str], Difference],
    operational: pl.DataFrame | None,
    control: str,
    treatment: str,
) -> list[dict[str, Any]]:
    ops: dict[str, dict[str, Any]] = {}
    if operational is not None:
        ops = {row["variant"]: row for row in operational.to_dicts()}
    rows: list[dict[str, Any]] = []
    for name in experiment.guardrails:
        row: dict[str, Any] = {"variant": treatment, "guardrail": name}
        if name in METRICS:
            d = differences.get((treatment, name))
            if d is None:
                rows.append(
                    row
                    | {
                        "control_value": None,
                        "treatment_value": None,
                        "difference": None,
                        "p_value": math.nan,
                        "worse": False,
                        "note": "could not be computed",
                    }
                )
                continue
            worse = d.absolute < 0 if METRICS[name].higher_is_better else d.absolute > 0
            rows.append(
                row
                | {
                    "control_value": d.control_value,
                    "treatment_value": d.treatment_value,
                    "difference": d.absolute,
                    "p_value": d.p_value,
                    "worse": worse,
                }
            )
            continue
        c, t = ops.get(control), ops.get(treatment)
        if c is None or t is None:
            rows.append(
                row
                | {
                    "control_value": None,
                    "treatment_value": None,
                    "difference": None,
                    "p_value": math.nan,
                    "worse": False,
                    "note": "no operational data",
                }
            )
            continue
        if name == "p99_latency_ms":
            cv, tv = float(c["p99_latency_ms"]), float(t["p99_latency_ms"])
            rows.append(
                row
                | {
                    "control_value": cv,
                    "treatment_value": tv,
                    "difference": tv - cv,
                    "p_value": math.nan,
                    "worse": tv > LATENCY_TOLERANCE * cv,
                    "note": f"no test: breached above {LATENCY_TOLERANCE} x control",
                }
            )
            continue
        col = "degraded" if name == "degraded_share" else "errors"
        cv, tv = c[col] / c["answers"], t[col] / t["answers"]
        p = _two_proportions(int(c[col]), int(c["answers"]), int(t[col]), int(t["answers"]))
        rows.append(
            row
            | {
                "control_value": cv,
                "treatment_value": tv,
                "difference": tv - cv,
                "p_value": p,
                "worse": tv > cv,
            }
        )
    tested = {r["guardrail"]: r["p_value"] for r in rows if math.isfinite(r["p_value"])}
    adjusted = _holm(tested, experiment.alpha)
    for r in rows:
        r["p_adjusted"] = adjusted.get(r["guardrail"], math.nan)
        if r["guardrail"] == "p99_latency_ms":
            r["breached"] = bool(r["worse"])
        else:
            r["breached"] = bool(r["worse"] and r["p_adjusted"] < experiment.alpha)
    return rows


def _check_operational(operational: pl.DataFrame | None, variants: Sequence[str]) -> None:
    if operational is None:
        return
    cols = ["variant", "answers", "p99_latency_ms", "degraded", "errors"]
    frame = _check_frame(operational, cols, "operational")
    for row in frame.to_dicts():
        if row["answers"] <= 0:
            raise ValueError(
                f"operational: variant {row['variant']!r} has {row['answers']} answers"
            )
        if not 0 <= row["degraded"] <= row["answers"] or not 0 <= row["errors"] <= row["answers"]:
            raise ValueError(
                f"operational: variant {row['variant']!r} has counts outside [0, answers]"
            )
    if frame["variant"].n_unique() != frame.height:
        raise ValueError("operational: one row per variant expected")
    unknown = sorted(set(frame["variant"].cast(pl.String).to_list()) - set(variants))
    if unknown:
        raise ValueError(f"operational: undeclared variants {unknown}")


def analyse(
    units: pl.DataFrame,
    experiment: Experiment,
    *,
    operational: pl.DataFrame | None = None,
    looks: Mapping[date, pl.DataFrame] | None = None,
) -> Analysis:
    """The whole analysis of an A/B experiment.

    - ``srm``: :func:`sample_ratio` of the units per variant against the declared shares.
    - ``primary``: fixed-horizon CUPED difference of the primary metric, per treatment arm
      (holdouts included: every arm is compared with the control).
    - ``sequential``: the mSPRT difference of the primary metric, tau = the experiment's
      minimum detectable effect times the control value; the p-value is the running minimum
      over the daily looks of ``cumulative``.
    - ``metrics``: every :data:`METRICS` entry, fixed, no CUPED (those that cannot be computed,
      e.g. no items bought in an arm, are named in ``notes``).
    - ``guardrails``: per arm, metric guardrails (direction from ``higher_is_better``) and the
      operational ones from ``operational`` (one row per variant: answers, p99_latency_ms,
      degraded, errors): degraded_share and error_rate by a two-proportion z-test,
      p99_latency_ms untested and breached when above 1.2 x control. Holm across the tested
      guardrails of an arm; breached = worse direction and adjusted p < alpha.
    - ``cumulative``: for each day d, the sequential interval at that day's look. With
      ``looks`` (day -> the per-unit frame of everything known by the end of that day, as
      the analysis flow builds it) these are the exact looks. Without, the units first
      exposed on or before d with their totals to the end of the data: an approximation of
      what was known on day d (later outcomes of early units are already in).
    - ``verdict``: a sample ratio mismatch blocks everything; otherwise an arm wins (loses)
      when its always-valid interval excludes 0 in the better (worse) direction; a breached
      guardrail overrides a win. ``winner``: the clean winner with the largest lift.

    Raises:
        ValueError: Naming the problem with the input.
    """
    if not isinstance(experiment, Experiment):
        raise ValueError(f"experiment: expected an Experiment, got {type(experiment).__name__}")
    if experiment.mode != "ab":
        raise ValueError(
            f"experiment {experiment.name}: analyse compares A/B arms; an {experiment.mode} "
            "experiment is analysed by pipeline.experiments.interleaving"
        )
    primary_metric = METRICS[experiment.primary_metric]
    names = [v.name for v in experiment.variants]
    control = experiment.control.name
    frame = _check_frame(
        units, ["variant", "unit", "day", *UNIT_COLUMNS], f"experiment {experiment.name}"
    )
    frame = frame.with_columns(pl.col("variant").cast(pl.String))
    if frame.schema["day"] != pl.Date:
        raise ValueError(
            f"experiment {experiment.name}: column 'day' is {frame.schema['day']}, expected Date"
        )
    if frame["day"].null_count():
        raise ValueError(f"experiment {experiment.name}: column 'day' has nulls")
    present = dict(frame.group_by("variant").len().iter_rows())
    unknown = sorted(set(present) - set(names))
    if unknown:
        raise ValueError(f"experiment {experiment.name}: units in undeclared variants {unknown}")
    empty = [n for n in names if present.get(n, 0) == 0]
    if empty:
        raise ValueError(f"experiment {experiment.name}: variants {empty} have no units")
    _check_operational(operational, names)
    treatments = names[1:]

    srm = sample_ratio(present, {v.name: v.share for v in experiment.variants})
    primary = [
        difference(frame, primary_metric, control, t, alpha=experiment.alpha, cuped=True)
        for t in treatments
    ]

    notes: list[str] = []
    metrics: list[Difference] = []
    by_key: dict[tuple[str, str], Difference] = {}
    for t in treatments:
        for metric in METRICS.values():
            try:
                d = difference(frame, metric, control, t, alpha=experiment.alpha)
            except ValueError as exc:
                notes.append(str(exc))
                continue
            metrics.append(d)
            by_key[(t, metric.name)] = d

    # Sequential looks: one per day, the running minimum of the p-value per arm.
    mde = experiment.minimum_detectable_effect
    rows = []
    final: dict[str, Difference] = {}
    days = sorted(frame["day"].unique().to_list())
    views = (
        dict(looks)
        if looks is not None
        else {day: frame.filter(pl.col("day") <= day) for day in days}
    )
    for t in treatments:
        previous = 1.0
        for day, upto in sorted(views.items()):
            try:
                stats = _arm_stats(
                    _check_units(upto, primary_metric, [control, t]), primary_metric, [control]
                )
                mc = stats[control][0]
                tau2 = (mde * mc) ** 2 if mc != 0 else None
                d = sequential(
                    upto,
                    primary_metric,
                    control,
                    t,
                    alpha=experiment.alpha,
                    tau2=tau2,
                    previous_p=previous,
                )
            except ValueError:
                continue  # too few units in an arm so far
            previous = d.p_value
            final[t] = d
            rows.append(
                {
                    "day": day,
                    "variant": t,
                    "relative": d.relative,
                    "relative_low": d.relative_low,
                    "relative_high": d.relative_high,
                    "p_value": d.p_value,
                }
            )
    cumulative = pl.DataFrame(
        rows,
        schema={
            "day": pl.Date,
            "variant": pl.String,
            "relative": pl.Float64,
            "relative_low": pl.Float64,
            "relative_high": pl.Float64,
            "p_value": pl.Float64,
        },
    )
    seq = [final[t] for t in treatments if t in final]
    if len(seq) != len(treatments):
        raise ValueError(f"experiment {experiment.name}: the primary metric cannot be computed")

    guardrails: list[dict[str, Any]] = []
    for t in treatments:
        guardrails.extend(_guardrails(experiment, by_key, operational, control, t))
    breached = {g["variant"] for g in guardrails if g["breached"]}

    def better(d: Difference) -> bool:
        return d.absolute > 0 if primary_metric.higher_is_better else d.absolute < 0

    winners = [d for d in seq if d.significant() and better(d) and d.treatment not in breached]
    losers = [d for d in seq if d.significant() and not better(d)]
    winner = None
    if srm.mismatch:
        verdict = VERDICTS[0]
    elif winners:
        verdict = VERDICTS[2]
        sign = 1 if primary_metric.higher_is_better else -1
        winner = max(winners, key=lambda d: sign * d.absolute).treatment
    elif breached:
        verdict = VERDICTS[1]
    elif losers:
        verdict = VERDICTS[3]
    else:
        verdict = VERDICTS[4]
    return Analysis(
        experiment=experiment.name,
        version=experiment.version,
        srm=srm,
        primary=primary,
        sequential=seq,
        metrics=metrics,
        guardrails=guardrails,
        cumulative=cumulative,
        verdict=verdict,
        winner=winner,
        notes=notes,
    )
