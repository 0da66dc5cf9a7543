"""Always-valid sequential inference: the mixture SPRT and its confidence sequence.

A daily look at an experiment with a fixed-horizon test inflates its false positives (14
looks at alpha 0.05 reject about one A/A test in five); the p-value and interval here stay
valid however often, and whenever, they are looked at (Johari et al. 2017). tea-tasting has
no sequential test, so this is written here on its aggregates.
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np
import polars as pl

from pipeline.experiments.config import Metric
from pipeline.experiments.differences import (
    Difference,
    arm_stats,
    control_known_interval,
    log_scale_relative,
)
from pipeline.experiments.frames import check_alpha, check_units

__all__ = ["DEFAULT_RELATIVE_TAU", "msprt", "sequential"]

DEFAULT_RELATIVE_TAU: Final = 0.05  # the mixing scale when no tau2 is given: a 5 % lift


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


def sequential(
    units: pl.DataFrame,
    metric: Metric,
    control: str,
    treatment: str,
    *,
    alpha: float = 0.05,
    tau2: float | None = None,
    relative_tau: float = DEFAULT_RELATIVE_TAU,
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
    of about the size tau, so without ``tau2`` it is ``(relative_tau * control)^2``, a 5 %
    lift by default (:func:`analyse` passes the experiment's minimum detectable effect as
    ``relative_tau``). When that is 0 (the control value is, or underflows to, 0) it falls
    back to the current variance of the estimate.

    Raises:
        ValueError: Naming the problem with the input.
    """
    check_alpha(alpha)
    if not (0 <= previous_p <= 1):
        raise ValueError(f"previous_p must be in [0, 1], got {previous_p!r}")
    if tau2 is not None and not (math.isfinite(tau2) and tau2 > 0):
        raise ValueError(f"tau2 must be a positive finite number, got {tau2!r}")
    if not (math.isfinite(relative_tau) and relative_tau > 0):
        raise ValueError(f"relative_tau must be a positive finite number, got {relative_tau!r}")
    frame = check_units(units, metric, [control, treatment])
    stats = arm_stats(frame, metric, [control, treatment])
    (mc, vc, nc), (mt, vt, nt) = stats[control], stats[treatment]
    d = mt - mc
    v = vc / nc + vt / nt
    if tau2 is None:
        tau2 = (relative_tau * mc) ** 2
        if not (math.isfinite(tau2) and tau2 > 0):  # control at (or underflowing to) 0
            tau2 = v if v > 0 else 1.0
    p, radius = msprt(d, v, tau2, alpha)
    rel = rel_low = rel_high = math.nan
    try:
        # the mixing variance of the log ratio: tau's share of the control, squared
        log_tau2 = tau2 / (mc * mc) if mc > 0 else math.nan
        scaled = log_scale_relative(
            stats[control],
            stats[treatment],
            lambda log_ratio, v_log: float(msprt(log_ratio, v_log, log_tau2, alpha)[1]),
        )
        if scaled is not None:
            rel, rel_low, rel_high = scaled
    except (ZeroDivisionError, OverflowError):
        rel = math.nan
    if mc > 0 and not (math.isfinite(rel) and rel_low <= rel <= rel_high):
        # no log scale (treatment at 0, or a mean near 0)
        rel = d / mc
        rel_low, rel_high = control_known_interval(d - float(radius), d + float(radius), mc)
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
