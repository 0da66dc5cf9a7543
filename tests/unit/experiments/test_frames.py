"""Hostile inputs: every statistic refuses a bad frame with an error naming the problem."""

from __future__ import annotations

import polars as pl
import pytest

from pipeline.experiments.analysis import analyse
from pipeline.experiments.differences import difference
from pipeline.experiments.power import plan
from pipeline.experiments.sample_ratio import sample_ratio
from pipeline.experiments.sequential import sequential
from tests.unit.experiments.units import (
    CTR,
    RETURN_RATE,
    REVENUE,
    experiment,
    operational,
    simulate,
)

pytestmark = pytest.mark.unit


def test_empty_frames_are_refused_by_name():
    empty = simulate(10, 10).clear()
    with pytest.raises(ValueError, match="empty"):
        difference(empty, REVENUE, "control", "treatment")
    with pytest.raises(ValueError, match="empty"):
        sequential(empty, REVENUE, "control", "treatment")
    with pytest.raises(ValueError, match="empty"):
        analyse(empty, experiment())
    with pytest.raises(ValueError, match="empty"):
        plan(
            empty.drop("variant"),
            REVENUE,
            minimum_detectable_effect=0.05,
            alpha=0.05,
            power=0.8,
            shares=[0.5, 0.5],
            units_per_day=10,
        )


def test_a_variant_without_units_is_named():
    units = simulate(50, 0, seed=15)
    with pytest.raises(ValueError, match="'treatment' has 0 units"):
        difference(units, REVENUE, "control", "treatment")
    with pytest.raises(ValueError, match="'treatment' has 0 units"):
        sequential(units, CTR, "control", "treatment")
    with pytest.raises(ValueError, match=r"\['treatment'\] have no units"):
        analyse(units, experiment())


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_nan_and_infinity_are_named(bad: float):
    units = simulate(50, 50, seed=16)
    units = units.with_columns(
        pl.when(pl.col("unit") == "u3").then(bad).otherwise(pl.col("revenue")).alias("revenue")
    )
    for call in (difference, sequential):
        with pytest.raises(ValueError, match="'revenue' has 1 NaN or infinite"):
            call(units, REVENUE, "control", "treatment")
    with pytest.raises(ValueError, match="'revenue' has 1 NaN or infinite"):
        analyse(units.with_columns(net_revenue=pl.col("revenue")), experiment())


def test_a_zero_denominator_is_named():
    units = simulate(50, 50, seed=17).with_columns(items=pl.lit(0), returns=pl.lit(0))
    for call in (difference, sequential):
        with pytest.raises(ValueError, match="denominator 'items' sums to 0 in variant 'control'"):
            call(units, RETURN_RATE, "control", "treatment")
    # a secondary metric that cannot be computed is a note, not a failure of the analysis
    result = analyse(units, experiment())
    assert any("return_rate" in n for n in result.notes)
    assert "return_rate" not in {d.metric for d in result.metrics}


def test_other_hostile_inputs_are_value_errors():
    units = simulate(50, 50, seed=18)
    with pytest.raises(ValueError, match="missing columns"):
        difference(units.drop("clicks"), CTR, "control", "treatment")
    with pytest.raises(ValueError, match="duplicate units"):
        difference(pl.concat([units, units.head(3)]), CTR, "control", "treatment")
    with pytest.raises(ValueError, match="same variant"):
        difference(units, CTR, "control", "control")
    with pytest.raises(ValueError, match="alpha"):
        difference(units, CTR, "control", "treatment", alpha=1.5)
    with pytest.raises(ValueError, match="tau2"):
        sequential(units, CTR, "control", "treatment", tau2=-1.0)
    with pytest.raises(ValueError, match="undeclared variants"):
        analyse(units.with_columns(variant=pl.lit("other")), experiment())
    with pytest.raises(ValueError, match="nulls"):
        difference(units.with_columns(clicks=pl.lit(None, pl.Int64)), CTR, "control", "treatment")
    with pytest.raises(ValueError, match="expected a polars DataFrame"):
        difference(units.to_pandas(), CTR, "control", "treatment")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="interleaving"):
        analyse(units, experiment(mode="interleaving"))
    with pytest.raises(ValueError, match="undeclared variants"):
        sample_ratio({"x": 1}, {"a": 0.5, "b": 0.5})
    with pytest.raises(ValueError, match="no units"):
        sample_ratio({"a": 0, "b": 0}, {"a": 0.5, "b": 0.5})
    with pytest.raises(ValueError, match="answers"):
        analyse(units, experiment(), operational=operational().with_columns(answers=pl.lit(0)))
    with pytest.raises(ValueError, match="zero variance"):
        plan(
            units.drop("variant").with_columns(revenue=pl.lit(1.0)),
            REVENUE,
            minimum_detectable_effect=0.05,
            alpha=0.05,
            power=0.8,
            shares=[0.5, 0.5],
            units_per_day=10,
        )
