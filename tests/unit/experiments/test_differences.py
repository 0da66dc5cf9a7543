"""Fixed-horizon differences on simulated data where the answer is known: the delta method
against a bootstrap, CUPED against the plain difference, and properties of the intervals."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from pipeline.experiments.differences import Difference, difference
from pipeline.experiments.sequential import sequential
from tests.unit.experiments.units import (
    CTR,
    REVENUE,
    simulate,
)

pytestmark = pytest.mark.unit


def test_delta_method_interval_agrees_with_a_bootstrap():
    units = simulate(3000, 3000, lift=0.05, seed=1)
    d = difference(units, CTR, "control", "treatment")
    rng = np.random.default_rng(2)
    diffs = np.zeros(2000)
    for name, sign in (("treatment", 1.0), ("control", -1.0)):
        arm = units.filter(pl.col("variant") == name)
        clicks, exposures = arm["clicks"].to_numpy(), arm["exposures"].to_numpy()
        idx = rng.integers(0, arm.height, (2000, arm.height))
        diffs += sign * clicks[idx].sum(axis=1) / exposures[idx].sum(axis=1)
    low, high = np.quantile(diffs, [0.025, 0.975])
    width, boot_width = d.absolute_high - d.absolute_low, high - low
    assert abs(width - boot_width) / boot_width < 0.15, (width, boot_width)
    # a ratio of sums, not a mean of per-unit ratios
    arm = units.filter(pl.col("variant") == "control")
    assert d.control_value == pytest.approx(arm["clicks"].sum() / arm["exposures"].sum())
    assert d.method == "fixed" and d.n_control == 3000 and d.n_treatment == 3000


def test_cuped_narrows_the_interval_and_stays_unbiased():
    true_lift = 0.04
    plain, adjusted = [], []
    for seed in range(60):
        units = simulate(1500, 1500, lift=true_lift, seed=100 + seed)
        plain.append(difference(units, REVENUE, "control", "treatment"))
        adjusted.append(difference(units, REVENUE, "control", "treatment", cuped=True))
    assert all(a.method == "fixed+cuped" for a in adjusted)
    width = np.mean([d.absolute_high - d.absolute_low for d in plain])
    cuped_width = np.mean([d.absolute_high - d.absolute_low for d in adjusted])
    assert cuped_width < 0.7 * width  # corr(revenue, pre) is about 0.9 here
    truth = true_lift * np.mean([d.control_value for d in plain])  # about 32 * 0.04
    estimates = np.array([d.absolute for d in adjusted])
    spread = estimates.std(ddof=1) / math.sqrt(len(estimates))
    assert abs(estimates.mean() - truth) < 4 * spread, (estimates.mean(), truth, spread)
    # and the interval covers the truth about as often as it should
    covered = np.mean([d.absolute_low <= truth <= d.absolute_high for d in adjusted])
    assert covered >= 0.85


def test_a_large_effect_is_significant_and_a_null_one_is_not():
    big = difference(simulate(4000, 4000, lift=0.15, seed=3), REVENUE, "control", "treatment")
    assert big.significant() and big.p_value < 0.001 and big.relative_low > 0
    assert big.relative == pytest.approx(big.treatment_value / big.control_value - 1)
    null = difference(simulate(4000, 4000, seed=4), REVENUE, "control", "treatment")
    assert not null.significant() and null.p_value > 0.05
    assert null.absolute_low < 0 < null.absolute_high


arm = st.lists(
    st.tuples(st.integers(1, 20), st.integers(0, 20), st.floats(0, 500)), min_size=2, max_size=30
)


def _frame(control: list, treatment: list) -> pl.DataFrame:
    rows = [("control", *r) for r in control] + [("treatment", *r) for r in treatment]
    return pl.DataFrame(
        {
            "variant": [r[0] for r in rows],
            "unit": [f"u{i}" for i in range(len(rows))],
            "exposures": [r[1] for r in rows],
            "clicks": [min(r[1], r[2]) for r in rows],
            "revenue": [r[3] for r in rows],
            "pre_revenue": [r[3] / 2 + i % 3 for i, r in enumerate(rows)],
        }
    )


def _consistent(d: Difference) -> None:
    assert d.absolute_low <= d.absolute <= d.absolute_high
    assert d.absolute == pytest.approx(d.treatment_value - d.control_value, abs=1e-9)
    assert 0 <= d.p_value <= 1
    if d.control_value > 0:
        assert d.relative_low <= d.relative + 1e-12 and d.relative <= d.relative_high + 1e-12
        # the relative estimate has the sign of the absolute one
        assert np.sign(round(d.relative, 12)) == np.sign(round(d.absolute / d.control_value, 12))
    else:
        assert math.isnan(d.relative)
    json.dumps(d.as_dict())


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(control=arm, treatment=arm, metric=st.sampled_from([CTR, REVENUE]), cuped=st.booleans())
def test_intervals_contain_the_estimate_and_relative_agrees_in_sign(
    control, treatment, metric, cuped
):
    units = _frame(control, treatment)
    for d in (
        difference(units, metric, "control", "treatment", cuped=cuped),
        sequential(units, metric, "control", "treatment"),
    ):
        _consistent(d)
