"""Group-sequential inference for an experiment with a planned end: Lan-DeMets alpha spending.

An experiment that declares its ``end`` has a planned horizon, and a daily look at it can
spend the error rate by plan: the O'Brien-Fleming-type spending function

    alpha(t) = 2 - 2 Phi(z_{1 - alpha/2} / sqrt(t)),   t = elapsed / planned duration,

spends almost nothing in the first days (the novelty of a new ranker cannot stop a test) and
nearly all of alpha at the end, so the last look is almost as powerful as the fixed-horizon
test. Spending by calendar time keeps the error rate whatever the traffic does (Lan and
DeMets 1983); a look after the planned end spends nothing more.

The boundary of each look is set so that the probability, under no difference, of crossing
there for the first time is the alpha spent since the last look. That probability needs the
joint law of the looks' z-statistics. The textbook (canonical) law, correlation
``sqrt(n_j / n_k)``, holds when each look only adds new units; here a look also adds the
later outcomes of units already in (a purchase, then its return), so the looks are less
correlated than that (0.3 instead of 0.5 between the first and the fourteenth day in the
simulator) and the canonical boundaries would reject 7 % of A/A tests. So the correlation is
estimated from the units themselves: each unit's delta-method contribution at each look
(:func:`look_correlation`), and the boundaries come from 100,000 draws of that joint normal
law with a fixed seed (:func:`boundaries`): deterministic, and within about 0.001 of the
alpha spent.

Where the mixture SPRT (:mod:`.sequential`) stays valid for any number of looks and is
therefore conservative over a planned two weeks (about 1 % false positives at alpha 5 %
over 14 daily looks in ``benchmarks/experiments.py``), this design spends the whole 5 %.

The interval at each look is the repeated confidence interval ``d +- c_k sqrt(V_k)`` (valid
over all looks at once); the one reported at a look is the intersection of all of them so
far, so a crossing stays crossed. The p-value is the repeated p-value: the smallest alpha at
which some look so far would have crossed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

import numpy as np
import polars as pl
import scipy.stats

from pipeline.experiments.config import Metric
from pipeline.experiments.differences import (
    ArmStats,
    Difference,
    arm_stats,
    control_known_interval,
    log_scale_relative,
)
from pipeline.experiments.frames import check_alpha, check_units

__all__ = ["DRAWS", "boundaries", "group_sequential", "look_correlation", "obrien_fleming"]

DRAWS: Final = 100_000  # joint normal draws per boundary computation
SEED: Final = 20_261_206  # fixed: the same looks give the same boundaries everywhere


def obrien_fleming(t: float, alpha: float) -> float:
    """Lan-DeMets O'Brien-Fleming-type cumulative alpha spent by time ``t`` in [0, 1]."""
    if t <= 0:
        return 0.0
    if t >= 1:
        return alpha
    return float(2 * scipy.stats.norm.sf(scipy.stats.norm.isf(alpha / 2) / math.sqrt(t)))


def _draws(correlation: np.ndarray, draws: int) -> np.ndarray:
    """|Z| of ``draws`` paths from N(0, correlation), fixed seed (eigen-decomposed, so a
    correlation that rounding left a hair short of positive semi-definite still works)."""
    values, vectors = np.linalg.eigh(correlation)
    root = vectors * np.sqrt(np.clip(values, 0.0, None))
    rng = np.random.default_rng(SEED)
    return np.abs(rng.standard_normal((draws, len(correlation))) @ root.T)


def _bounds(paths: np.ndarray, times: Sequence[float], alpha: float) -> list[float]:
    alive = np.ones(len(paths), bool)
    spent, out = 0, []
    for k, t in enumerate(times):
        # alpha spent so far, in paths: never more than the plan allows by now
        crossing = math.floor(obrien_fleming(min(max(t, 0.0), 1.0), alpha) * len(paths)) - spent
        left = paths[alive, k]
        if crossing <= 0 or left.size == 0:
            out.append(math.inf)
            continue
        if crossing >= left.size:
            out.append(0.0)
            alive[:] = False
            continue
        # the boundary leaves exactly `crossing` of the paths still alive at or above it
        c = float(np.partition(left, left.size - crossing)[left.size - crossing])
        out.append(c)
        alive &= paths[:, k] < c
        spent = len(paths) - int(alive.sum())
    return out


def boundaries(
    times: Sequence[float], correlation: np.ndarray, alpha: float, draws: int = DRAWS
) -> list[float]:
    """Two-sided boundaries ``c_k`` on the looks' z-statistics (cross when ``|Z_k| >= c_k``).

    Args:
        times: Each look's spending time, elapsed over planned duration (clipped to [0, 1]).
        correlation: The looks' z-statistics' correlation matrix (K x K).
        alpha: The two-sided error rate to spend over the plan.
        draws: Paths drawn from the joint law (fixed seed).

    A look that would spend nothing (too early to spend a path's worth, no time passed since
    the last look, or past the end) gets ``inf``: it is not a test.

    Raises:
        ValueError: Shapes differ, a time is not finite, the correlation is no correlation.
    """
    check_alpha(alpha)
    corr = np.asarray(correlation, dtype=float)
    k = len(times)
    if corr.shape != (k, k):
        raise ValueError(f"{k} times but a correlation of shape {corr.shape}")
    if not all(math.isfinite(t) for t in times):
        raise ValueError(f"times must be finite, got {list(times)!r}")
    if k == 0:
        return []
    if not np.all(np.isfinite(corr)) or not np.allclose(np.diag(corr), 1.0):
        raise ValueError("correlation must be finite with a unit diagonal")
    if not np.allclose(corr, corr.T) or np.abs(corr).max() > 1 + 1e-9:
        raise ValueError("correlation must be symmetric with entries in [-1, 1]")
    return _bounds(_draws(corr, draws), times, alpha)


def _contributions(frame: pl.DataFrame, metric: Metric) -> tuple[dict[str, float], int]:
    """Each unit's delta-method contribution to its arm's value (N - R D) / mean(D)."""
    numerator = frame[metric.numerator].cast(pl.Float64).to_numpy()
    denominator = (
        np.ones(len(numerator))
        if metric.denominator is None
        else frame[metric.denominator].cast(pl.Float64).to_numpy()
    )
    ratio = numerator.sum() / denominator.sum()
    u = (numerator - ratio * denominator) / denominator.mean()
    return dict(zip(frame["unit"].cast(pl.String).to_list(), u.tolist(), strict=True)), len(u)


def look_correlation(
    looks: Sequence[pl.DataFrame], metric: Metric, control: str, treatment: str
) -> np.ndarray:
    """The correlation of the difference's estimates across looks, from the units: per arm,
    ``Cov(R_j, R_k) = sum_i u_ij u_ik / (n_j n_k)`` over the units in both looks (``u`` the
    unit's delta-method contribution at that look), the arms added (they are independent).

    Raises:
        ValueError: A look has no ``unit`` column.
    """
    k = len(looks)
    cov = np.zeros((k, k))
    for arm in (control, treatment):
        ids: dict[str, int] = {}
        columns, sizes = [], []
        for frame in looks:
            if "unit" not in frame.columns:
                raise ValueError("group-sequential looks need the 'unit' column")
            u, size = _contributions(frame.filter(pl.col("variant") == arm), metric)
            for unit in u:
                ids.setdefault(unit, len(ids))
            columns.append(u)
            sizes.append(size)
        matrix = np.zeros((len(ids), k))
        for j, u in enumerate(columns):
            matrix[[ids[unit] for unit in u], j] = list(u.values())
        counts = np.asarray(sizes, dtype=float)
        cov += matrix.T @ matrix / np.outer(counts, counts)
    scale = np.sqrt(np.diag(cov))
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = cov / np.outer(scale, scale)
    corr = np.where(np.isfinite(corr), corr, 0.0)
    np.fill_diagonal(corr, 1.0)
    return np.clip((corr + corr.T) / 2, -1.0, 1.0)


def _repeated_p(z: np.ndarray, times: Sequence[float], paths: np.ndarray) -> float:
    """The smallest alpha at which some look would cross (bisection on alpha, to 1e-4)."""

    def crosses(alpha: float) -> bool:
        return bool(np.any(np.abs(z) >= np.asarray(_bounds(paths, times, alpha))))

    if not crosses(0.999):
        return 1.0
    low, high = 0.0, 0.999
    while high - low > 1e-4:
        mid = (low + high) / 2
        low, high = (low, mid) if crosses(mid) else (mid, high)
    return high


def _log_scale(
    c: float, control: ArmStats, treatment: ArmStats
) -> tuple[float, float, float] | None:
    """This look's relative interval on the log scale, ``c`` standard errors wide."""
    return log_scale_relative(control, treatment, lambda _, v_log: c * math.sqrt(v_log))


def group_sequential(
    looks: Sequence[tuple[float, pl.DataFrame]],
    metric: Metric,
    control: str,
    treatment: str,
    *,
    alpha: float = 0.05,
    p_value: bool = True,
) -> list[Difference]:
    """The group-sequential difference at each look, in order.

    Args:
        looks: ``(spending time, units known then)`` per look, in time order; the time is
            elapsed over planned duration (a look after the end has time >= 1). The units
            need a ``unit`` column (the looks' correlation is estimated from them).
        metric: The metric; a ratio metric uses its delta-method variance.
        p_value: Compute the repeated p-value of the last look (a bisection over alpha, some
            tenths of a second); the earlier looks' p-values are NaN, as are all of them
            without it (the benchmark needs only the decision).

    Returns:
        One :class:`Difference` per look (``method="group-sequential"``): its interval is the
        intersection of the repeated confidence intervals up to that look, the relative one
        likewise on the log scale (the control taken as known where there is none).

    Raises:
        ValueError: Naming the problem with a look's frame or the times.
    """
    check_alpha(alpha)
    stats, frames = _look_stats(looks, metric, control, treatment)
    times = [t for t, _ in looks]
    tested = [k for k, st in enumerate(stats) if st[2] > 0]
    bounds, paths = _look_bounds(frames, times, tested, metric, control, treatment, alpha)
    out: list[Difference] = []
    for k, (st, interval) in enumerate(zip(stats, _intervals(stats, bounds), strict=True)):
        (mc, mt, _, _, nc, _, nt), (low, high, rel, rel_low, rel_high) = st, interval
        p = math.nan
        if p_value and k == len(stats) - 1:
            p = _last_look_p(stats, tested, times, paths)
        out.append(
            Difference(
                metric=metric.name,
                control=control,
                treatment=treatment,
                control_value=mc,
                treatment_value=mt,
                absolute=mt - mc,
                absolute_low=low,
                absolute_high=high,
                relative=rel,
                relative_low=rel_low,
                relative_high=rel_high,
                p_value=p,
                n_control=int(nc),
                n_treatment=int(nt),
                method="group-sequential",
            )
        )
    return out


LookStats = tuple[float, float, float, float, int, float, int]
"""A look's control and treatment values, the difference's variance, and each arm's per-unit
variance and units: ``(mc, mt, v, vc, nc, vt, nt)``."""


def _look_stats(
    looks: Sequence[tuple[float, pl.DataFrame]], metric: Metric, control: str, treatment: str
) -> tuple[list[LookStats], list[pl.DataFrame]]:
    """Each look's arm statistics and its checked units."""
    stats, frames = [], []
    for t, frame in looks:
        if not math.isfinite(t):
            raise ValueError(f"a look's time must be finite, got {t!r}")
        units = check_units(frame, metric, [control, treatment])
        s = arm_stats(units, metric, [control, treatment])
        (mc, vc, nc), (mt, vt, nt) = s[control], s[treatment]
        stats.append((mc, mt, vc / nc + vt / nt, vc, nc, vt, nt))
        frames.append(units)
    return stats, frames


def _look_bounds(
    frames: Sequence[pl.DataFrame],
    times: Sequence[float],
    tested: Sequence[int],
    metric: Metric,
    control: str,
    treatment: str,
    alpha: float,
) -> tuple[list[float], np.ndarray]:
    """The boundary at each look (``inf`` where it is no test) and the drawn paths."""
    bounds = [math.inf] * len(frames)
    paths = np.empty((0, 0))
    if tested:
        corr = look_correlation([frames[k] for k in tested], metric, control, treatment)
        paths = _draws(corr, DRAWS)
        for k, c in zip(tested, _bounds(paths, [times[k] for k in tested], alpha), strict=True):
            bounds[k] = c
    return bounds, paths


def _intervals(
    stats: Sequence[LookStats], bounds: Sequence[float]
) -> list[tuple[float, float, float, float, float]]:
    """Per look: the absolute interval, the relative difference and its interval, each the
    intersection of the repeated confidence intervals up to that look."""
    out = []
    low, high = -math.inf, math.inf
    rel_low, rel_high = -math.inf, math.inf
    for (mc, mt, v, vc, nc, vt, nt), c in zip(stats, bounds, strict=True):
        d = mt - mc
        if v <= 0:  # no variance in either arm: the data decide
            low, high = max(low, d), min(high, d)
        elif math.isfinite(c):
            low, high = max(low, d - c * math.sqrt(v)), min(high, d + c * math.sqrt(v))
        rel = d / mc if mc else math.nan
        scaled = _log_scale(c, (mc, vc, nc), (mt, vt, nt)) if math.isfinite(c) else None
        if scaled is not None:
            rel = scaled[0]
            rel_low, rel_high = max(rel_low, scaled[1]), min(rel_high, scaled[2])
        elif mc > 0 and math.isfinite(c) and v > 0:
            look_low, look_high = control_known_interval(
                d - c * math.sqrt(v), d + c * math.sqrt(v), mc
            )
            rel_low, rel_high = max(rel_low, look_low), min(rel_high, look_high)
        out.append((low, high, rel, rel_low, rel_high))
    return out


def _last_look_p(
    stats: Sequence[LookStats], tested: Sequence[int], times: Sequence[float], paths: np.ndarray
) -> float:
    """The repeated p-value at the last look."""
    if not tested:
        return 1.0 if stats[-1][1] - stats[-1][0] == 0 else 0.0  # no variance: the data decide
    z = np.array([(stats[j][1] - stats[j][0]) / math.sqrt(stats[j][2]) for j in tested])
    return _repeated_p(z, [times[j] for j in tested], paths)
