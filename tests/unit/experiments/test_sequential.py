"""The mSPRT's error rate under continuous peeking against naive repeated tests, its power,
and the running minimum over looks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats

from pipeline.experiments.differences import difference
from pipeline.experiments.sequential import DEFAULT_RELATIVE_TAU, msprt, sequential
from tests.unit.experiments.units import CTR, REVENUE, simulate

pytestmark = pytest.mark.unit


def _peeking(effect: float, sims: int = 300, looks: int = 10, per_look: int = 200, seed: int = 7):
    """Cumulative means and variances of `sims` experiments at each look, vectorised."""
    rng = np.random.default_rng(seed)
    mean, sd = 10.0, 10.0
    n = looks * per_look
    c = rng.exponential(sd, (sims, n)) + (mean - sd)  # skewed, like revenue
    t = rng.exponential(sd, (sims, n)) + (mean - sd) + effect
    k = np.arange(1, looks + 1) * per_look
    stats = []
    for x in (c, t):
        s1, s2 = np.cumsum(x, axis=1)[:, k - 1], np.cumsum(x * x, axis=1)[:, k - 1]
        m = s1 / k
        stats.append((m, (s2 - k * m * m) / (k - 1)))
    (mc, vc), (mt, vt) = stats
    return mt - mc, vc / k + vt / k, (0.05 * mc) ** 2


def test_msprt_controls_the_error_under_continuous_peeking_where_naive_tests_do_not():
    d, v, tau2 = _peeking(effect=0.0)
    p, radius = msprt(d, v, tau2, alpha=0.05)
    always_valid = np.minimum.accumulate(p, axis=1)
    ever_rejected = (always_valid[:, -1] < 0.05).mean()
    naive = (2 * scipy.stats.norm.sf(np.abs(d) / np.sqrt(v)) < 0.05).any(axis=1).mean()
    assert ever_rejected <= 0.08, ever_rejected
    assert naive > 0.08, naive  # about 0.19 for 10 looks
    # the confidence sequence excludes 0 exactly when 1/Lambda < alpha
    np.testing.assert_array_equal(np.abs(d) > radius, p < 0.05)


def test_msprt_has_power_against_a_real_effect():
    d, v, tau2 = _peeking(effect=1.5, sims=200)  # +15 %
    p, _ = msprt(d, v, tau2, alpha=0.05)
    assert (np.minimum.accumulate(p, axis=1)[:, -1] < 0.05).mean() > 0.8


def test_sequential_is_the_msprt_on_the_arms_and_keeps_the_running_minimum():
    units = simulate(2000, 2000, lift=0.02, seed=5)
    s = sequential(units, CTR, "control", "treatment", tau2=1e-5)
    f = difference(units, CTR, "control", "treatment")
    assert s.method == "msprt"
    assert s.absolute == pytest.approx(f.absolute)
    v = ((f.absolute_high - f.absolute_low) / (2 * scipy.stats.norm.isf(0.025))) ** 2
    p, radius = msprt(f.absolute, v, 1e-5)
    assert s.p_value == pytest.approx(float(p), rel=1e-6)
    assert s.absolute_high - s.absolute == pytest.approx(float(radius), rel=1e-6)
    # wider than the fixed interval: the price of peeking
    assert s.absolute_high - s.absolute_low > f.absolute_high - f.absolute_low
    assert sequential(units, CTR, "control", "treatment", previous_p=1e-4).p_value == 1e-4


def test_relative_tau_is_tau_in_units_of_the_control():
    units = simulate(1500, 1500, lift=0.05, seed=6)
    mc = difference(units, REVENUE, "control", "treatment").control_value

    def same(a, b) -> None:  # Polars' parallel sums may differ in the last bit
        x, y = a.as_dict(), b.as_dict()
        assert x.keys() == y.keys()
        for key in x:
            if isinstance(x[key], float):
                assert x[key] == pytest.approx(y[key], rel=1e-9), key
            else:
                assert x[key] == y[key], key

    same(
        sequential(units, REVENUE, "control", "treatment", relative_tau=0.1),
        sequential(units, REVENUE, "control", "treatment", tau2=(0.1 * mc) ** 2),
    )
    same(
        sequential(units, REVENUE, "control", "treatment"),
        sequential(units, REVENUE, "control", "treatment", tau2=(DEFAULT_RELATIVE_TAU * mc) ** 2),
    )
    for bad in (0.0, -0.1, math.nan, math.inf):
        with pytest.raises(ValueError, match="relative_tau"):
            sequential(units, REVENUE, "control", "treatment", relative_tau=bad)
