"""The group-sequential design: its boundaries against hand-computed values and against the
error rate they promise on independently simulated looks, the looks' correlation against the
textbook one, its intervals and repeated p-value, and how the analysis chooses it for an
experiment with a planned end."""

from __future__ import annotations

import math
from datetime import timedelta

import numpy as np
import polars as pl
import pytest
import scipy.stats
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from pipeline.experiments.analysis import analyse, spending_time
from pipeline.experiments.config import METRICS
from pipeline.experiments.group_sequential import (
    boundaries,
    group_sequential,
    look_correlation,
    obrien_fleming,
)
from tests.unit.experiments.units import DAY0, NET, REVENUE, experiment, simulate

pytestmark = pytest.mark.unit


def test_spending_starts_at_zero_ends_at_alpha_and_grows():
    times = np.linspace(0, 1, 41)
    spent = [obrien_fleming(float(t), 0.05) for t in times]
    assert spent[0] == 0 and spent[-1] == 0.05
    assert all(a <= b for a, b in zip(spent, spent[1:], strict=False))
    # by hand: 2 - 2 Phi(1.959964 / sqrt(0.5)) = 2 * P(Z > 2.771808)
    assert obrien_fleming(0.5, 0.05) == pytest.approx(2 * scipy.stats.norm.sf(2.771808), rel=1e-5)
    assert obrien_fleming(1.7, 0.05) == 0.05  # after the end: nothing more


def canonical(info: np.ndarray) -> np.ndarray:
    """The textbook correlation of looks that only add new units: sqrt(I_j / I_k)."""
    return np.sqrt(np.minimum.outer(info, info) / np.maximum.outer(info, info))


def test_one_look_at_the_end_is_the_fixed_test():
    [c] = boundaries([1.0], np.eye(1), 0.05)
    assert c == pytest.approx(1.959964, abs=0.02)  # 100,000 draws: the 95th percentile of |Z|


def test_the_first_boundary_spends_its_share():
    first = boundaries([0.25, 0.5, 1.0], canonical(np.array([1.0, 2.0, 4.0])), 0.05)[0]
    # O'Brien-Fleming: the first look at a quarter of the way is z_{alpha/2} / sqrt(1/4)
    assert first == pytest.approx(1.959964 / math.sqrt(0.25), abs=0.15)
    assert first == pytest.approx(scipy.stats.norm.isf(obrien_fleming(0.25, 0.05) / 2), abs=0.15)


def test_the_same_looks_give_the_same_boundaries():
    corr = canonical(np.arange(1.0, 8.0))
    times = [k / 7 for k in range(1, 8)]
    assert boundaries(times, corr, 0.05) == boundaries(times, corr, 0.05)


@pytest.mark.parametrize(
    ("looks", "growth"), [(5, 1.0), (14, 1.0), (14, 0.6)], ids=["5-even", "14-even", "14-front"]
)
def test_the_boundaries_hold_the_error_rate_on_simulated_looks(looks: int, growth: float):
    """Brownian motion observed at the looks (information growing as ``k ** growth``, so a
    front-loaded enrolment is covered too): the share of paths that ever cross is alpha."""
    info = np.arange(1, looks + 1, dtype=float) ** growth
    times = [(k + 1) / looks for k in range(looks)]  # spending by calendar time
    bounds = np.array(boundaries(times, canonical(info), 0.05))
    assert np.all(np.diff(bounds[np.isfinite(bounds)]) < 0)  # stricter early
    assert 1.96 < bounds[-1] < 2.3  # the price of looking, small at the end
    rng = np.random.default_rng(2026)  # other draws than the boundaries' own
    paths = 400_000
    steps = rng.standard_normal((paths, looks)) * np.sqrt(np.diff(info, prepend=0.0))
    z = np.cumsum(steps, axis=1) / np.sqrt(info)
    rate = float(np.mean((np.abs(z) >= bounds).any(axis=1)))
    assert rate == pytest.approx(0.05, abs=0.0015)  # 4.4 binomial standard errors
    naive = float(np.mean((np.abs(z) >= 1.959964).any(axis=1)))
    assert naive > 0.12  # what repeated fixed tests would do (14 % at 5 looks, 18 % at 14)


def test_looks_that_spend_nothing_are_no_tests():
    corr = canonical(np.array([2.0, 2.5, 4.0, 6.0]))
    bounds = boundaries([0.5, 0.5, 1.0, 1.4], corr, 0.05)
    assert math.isfinite(bounds[0]) and bounds[1] == math.inf  # no time passed
    assert math.isfinite(bounds[2]) and bounds[3] == math.inf  # after the end
    early = boundaries([0.01, 1.0], canonical(np.array([1.0, 100.0])), 0.05)
    assert early[0] == math.inf  # O'Brien-Fleming spends nothing a hundredth of the way in


def test_hostile_times_and_correlations_are_named():
    with pytest.raises(ValueError, match="times"):
        boundaries([0.5, math.nan], np.eye(2), 0.05)
    with pytest.raises(ValueError, match="unit diagonal"):
        boundaries([0.5, 1.0], np.full((2, 2), 0.5), 0.05)
    with pytest.raises(ValueError, match="unit diagonal"):
        boundaries([0.5, 1.0], np.array([[1.0, math.nan], [math.nan, 1.0]]), 0.05)
    with pytest.raises(ValueError, match="symmetric"):
        boundaries([0.5, 1.0], np.array([[1.0, 0.2], [0.7, 1.0]]), 0.05)
    with pytest.raises(ValueError, match="2 times but a correlation of shape"):
        boundaries([0.5, 1.0], np.eye(3), 0.05)
    with pytest.raises(ValueError, match="alpha"):
        boundaries([1.0], np.eye(1), 0.0)
    assert boundaries([], np.empty((0, 0)), 0.05) == []
    units = simulate(50, 50, seed=3)
    with pytest.raises(ValueError, match="finite"):
        group_sequential([(math.inf, units)], REVENUE, "control", "treatment")
    with pytest.raises(ValueError, match="empty"):
        group_sequential([(1.0, units.clear())], REVENUE, "control", "treatment")
    with pytest.raises(ValueError, match="'unit' column"):
        group_sequential([(1.0, units.drop("unit"))], REVENUE, "control", "treatment")


def test_looks_that_only_add_units_have_the_textbook_correlation():
    """Units that never change after they join: the estimated correlation is sqrt(n_j/n_k)."""
    units = simulate(4000, 4000, seed=4, days=4)
    looks = [units.filter(pl.col("day") <= DAY0 + timedelta(days=d)) for d in range(4)]
    sizes = np.array([float(f.height) for f in looks])
    for metric in (REVENUE, METRICS["click_through_rate"]):
        corr = look_correlation(looks, metric, "control", "treatment")
        assert np.allclose(np.diag(corr), 1.0)
        assert np.allclose(corr, canonical(sizes), atol=0.03), metric.name


def test_later_outcomes_of_the_same_units_lower_the_correlation():
    """A look that also changes the units already in (their later purchases and returns)
    is less correlated with the first than the units' count alone says."""
    units = simulate(3000, 3000, seed=9, days=1).with_columns(pl.lit(DAY0).alias("day"))
    rng = np.random.default_rng(1)
    later = units.with_columns(
        revenue=pl.col("revenue") + pl.Series(rng.gamma(2.0, 30.0, units.height))
    )
    corr = look_correlation([units, later], REVENUE, "control", "treatment")
    assert corr[0, 1] < 0.9  # the same units: the count alone says 1


def _looks(units: pl.DataFrame, days: int) -> list[tuple[float, pl.DataFrame]]:
    return [
        ((d + 1) / days, units.filter(pl.col("day") <= DAY0 + timedelta(days=d)))
        for d in range(days)
    ]


def test_a_real_lift_crosses_and_stays_crossed():
    units = simulate(3000, 3000, lift=0.3, seed=5, days=7)
    diffs = group_sequential(_looks(units, 7), REVENUE, "control", "treatment")
    assert all(d.method == "group-sequential" for d in diffs)
    crossed = [d.significant() for d in diffs]
    assert crossed[-1] and crossed == sorted(crossed)  # once crossed, crossed
    last = diffs[-1]
    assert last.absolute_low > 0 and last.relative_low > 0
    assert last.p_value < 0.05
    assert all(math.isnan(d.p_value) for d in diffs[:-1])  # only the last look's is computed


def test_the_interval_is_the_running_intersection():
    units = simulate(800, 800, lift=0.05, seed=6, days=7)
    diffs = group_sequential(_looks(units, 7), NET, "control", "treatment", p_value=False)
    for before, after in zip(diffs, diffs[1:], strict=False):
        assert after.absolute_low >= before.absolute_low
        assert after.absolute_high <= before.absolute_high


@hsettings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lift=st.sampled_from([0.0, 0.05, 0.15, 0.4]), seed=st.integers(0, 10_000))
def test_the_repeated_p_value_agrees_with_the_boundaries(lift: float, seed: int):
    """p < alpha exactly when some look crossed at alpha (away from the bisection's 1e-4)."""
    units = simulate(300, 300, lift=lift, seed=seed, days=5)
    last = group_sequential(_looks(units, 5), REVENUE, "control", "treatment")[-1]
    assert 0 < last.p_value <= 1
    if abs(last.p_value - 0.05) > 2e-4:
        assert last.significant() == (last.p_value < 0.05)


def test_analyse_spends_alpha_over_a_planned_end_and_uses_the_msprt_without_one():
    units = simulate(2000, 2000, lift=0.2, seed=8, days=7)
    planned = experiment(end="2026-12-08T00:00:00Z")  # seven days from the start
    result = analyse(units, planned)
    assert {d.method for d in result.sequential} == {"group-sequential"}
    assert result.cumulative.height == 7
    open_ended = analyse(units, experiment())
    assert {d.method for d in open_ended.sequential} == {"msprt"}
    assert spending_time(planned, DAY0) == pytest.approx(1 / 7)
    assert spending_time(planned, DAY0 + timedelta(days=6)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="no planned end"):
        spending_time(experiment(), DAY0)
