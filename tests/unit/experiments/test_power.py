"""The sample size against the textbook formula, equal and unequal shares."""

from __future__ import annotations

import pytest
import scipy.stats

from pipeline.experiments.power import plan, power_at
from tests.unit.experiments.units import (
    CTR,
    REVENUE,
    simulate,
)

pytestmark = pytest.mark.unit


def test_plan_matches_the_textbook_sample_size():
    baseline = simulate(20_000, 0, seed=8).drop("variant")
    mde, alpha, power = 0.05, 0.05, 0.8
    p = plan(
        baseline,
        REVENUE,
        minimum_detectable_effect=mde,
        alpha=alpha,
        power=power,
        shares=[0.5, 0.5],
        units_per_day=1000,
    )
    sigma, mean = baseline["revenue"].std(), baseline["revenue"].mean()
    z = scipy.stats.norm.isf(alpha / 2) + scipy.stats.norm.ppf(power)
    textbook = 2 * z * z * sigma * sigma / (mde * mean) ** 2
    assert abs(p.units_per_variant - textbook) / textbook < 0.02, (p.units_per_variant, textbook)
    assert p.total_units == 2 * p.units_per_variant
    assert p.days == pytest.approx(p.total_units / 1000)
    assert power <= p.power < power + 0.01
    at = power_at(
        baseline,
        REVENUE,
        relative_effect=mde,
        alpha=alpha,
        units_per_variant=p.units_per_variant,
    )
    assert at == pytest.approx(p.power)
    assert (
        power_at(
            baseline,
            REVENUE,
            relative_effect=mde,
            alpha=alpha,
            units_per_variant=p.units_per_variant // 2,
        )
        < 0.6
    )


def test_plan_sizes_the_smallest_arm_with_unequal_shares():
    baseline = simulate(20_000, 0, seed=8).drop("variant")
    kwargs = {"minimum_detectable_effect": 0.05, "alpha": 0.05, "power": 0.8, "units_per_day": 1e3}
    equal = plan(baseline, CTR, shares=[0.5, 0.5], **kwargs)
    skewed = plan(baseline, CTR, shares=[0.8, 0.1, 0.1], **kwargs)
    # a larger control lets the treatment arm be smaller, but the whole test is longer
    assert skewed.units_per_variant < equal.units_per_variant
    assert skewed.total_units > equal.total_units
    assert skewed.power >= 0.8
