"""The mSPRT's error rate under continuous peeking against naive repeated tests, its power,
and the running minimum over looks."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

from pipeline.experiments.differences import difference
from pipeline.experiments.sequential import msprt, sequential
from tests.unit.experiments.units import (
    CTR,
    simulate,
)

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
