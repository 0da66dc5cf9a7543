"""The shopper simulator: a better ranker earns more clicks, a wrong size more size returns,
counts reconcile, a planted uplift moves revenue, and the benchmark's summary line has its
shape (a tiny --quick run)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from pipeline.experiments.config import UNIT_COLUMNS
from pipeline.experiments.simulator import (
    Arm,
    Shoppers,
    affinity_ranker,
    planted_effect,
    popularity_ranker,
    pre_revenue,
    session_clicks,
    simulate,
    simulate_interleaved,
)

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def shoppers() -> Shoppers:
    return Shoppers(customers=2000, items=200, seed=3)


@pytest.fixture(scope="module")
def good(shoppers):
    return affinity_ranker(shoppers, 0.9, seed=1)


def _halves(shoppers) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 2, shoppers.n_customers)


def test_rankers_are_well_formed(shoppers, good):
    pop = popularity_ranker(shoppers)
    for ranker in (good, pop):
        assert ranker.top.shape == (shoppers.n_customers, shoppers.n_categories, shoppers.k)
        assert all(len(set(row)) == shoppers.k for row in ranker.top[:50].reshape(-1, shoppers.k))
        ids = ranker(5, 0)
        assert len(ids) == shoppers.k and all(i.startswith("I") for i in ids)
    with pytest.raises(ValueError):
        affinity_ranker(shoppers, 1.5)


def test_a_better_ranker_yields_more_clicks(shoppers, good):
    arms = [Arm("control", popularity_ranker(shoppers)), Arm("treatment", good)]
    units = simulate(shoppers, arms, _halves(shoppers), days=7, seed=1).units()
    ctr = units.group_by("variant").agg(pl.col("clicks").sum() / pl.col("exposures").sum())
    rate = dict(ctr.iter_rows())
    assert rate["treatment"] > 1.2 * rate["control"]
    worse = affinity_ranker(shoppers, 0.2, seed=2)
    assert (
        session_clicks(shoppers, good, 4000).mean() > session_clicks(shoppers, worse, 4000).mean()
    )
    pool = simulate_interleaved(shoppers, good, worse, 1500, seed=4)
    a, b = pool["clicks_a"].to_numpy(), pool["clicks_b"].to_numpy()
    assert (a > b).sum() > 1.3 * (a < b).sum()


def test_a_misfit_size_yields_more_size_returns(shoppers, good):
    wrong = affinity_ranker(shoppers, 0.9, seed=1, size_offset=2)
    arms = [Arm("control", good), Arm("treatment", wrong)]
    units = simulate(shoppers, arms, _halves(shoppers), days=14, seed=2).units()
    rate = dict(
        units.group_by("variant")
        .agg(pl.col("size_returns").sum() / pl.col("items").sum())
        .iter_rows()
    )
    assert rate["treatment"] > 2 * rate["control"]


def test_counts_reconcile(shoppers, good):
    enrolled = _halves(shoppers)
    enrolled[:300] = -1  # not in the experiment
    events = simulate(shoppers, [Arm("control", good), Arm("treatment", good)], enrolled, days=5)
    pre = pre_revenue(shoppers, good, enrolled >= 0, days=5)
    units = events.units(None, pre)
    assert units.columns == ["variant", "unit", "day", *UNIT_COLUMNS]
    assert units.schema["day"] == pl.Date
    assert units["unit"].n_unique() == units.height
    assert not units["unit"].is_in([f"C{i:07d}" for i in range(300)]).any()
    assert set(units["converted"].unique()) <= {0, 1}
    assert (units["converted"] == (units["items"] > 0).cast(pl.Int64)).all()
    assert (units["exposures"] >= 1).all()
    assert (units["clicks"] <= units["exposures"] * shoppers.k).all()
    assert (units["add_to_carts"] <= units["clicks"]).all()
    assert (units["items"] <= units["add_to_carts"]).all()
    assert (units["orders"] <= units["items"]).all()
    assert (units["items"] >= units["returns"]).all()
    assert (units["returns"] >= units["size_returns"]).all()
    net = units["revenue"] - units["returned_revenue"]
    assert np.allclose(units["net_revenue"].to_numpy(), net.to_numpy())
    assert units["day"].min() >= events.start
    assert np.corrcoef(units["pre_revenue"], units["revenue"])[0, 1] > 0.1
    # daily looks are cumulative: a later look holds every unit of an earlier one, with more
    early, late = events.units(1), events.units(3)
    assert set(early["unit"]) <= set(late["unit"])
    joined = early.join(late, on="unit", suffix="_late")
    assert (joined["exposures_late"] >= joined["exposures"]).all()
    # the same seed gives the same experiment
    again = simulate(shoppers, [Arm("control", good), Arm("treatment", good)], enrolled, days=5)
    assert again.units(None, pre).equals(units)


def test_planted_uplift_moves_revenue(shoppers, good):
    assert planted_effect(1.1) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        planted_effect(2.0)
    arms = [Arm("control", good), Arm("treatment", good, 1.5)]
    units = simulate(shoppers, arms, _halves(shoppers), days=14, seed=3).units()
    mean = dict(units.group_by("variant").agg(pl.col("net_revenue").mean()).iter_rows())
    assert mean["treatment"] > 1.2 * mean["control"]


def test_benchmark_quick_summary_line():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_USE_LEGACY_KERAS": "1"}
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "experiments.py"), "--quick"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    last = out.stdout.strip().splitlines()[-1]
    number = r"\d+\.\d{3}"
    pattern = (
        rf"experiments aa_fpr={number} aa_peeking_fpr={number} naive_peeking_fpr={number} "
        rf"ab_power={number} planned_power={number} srm_caught=(true|false) "
        rf"interleaving_session_ratio={number} cuped_ci_shrink=-?{number} "
        rf"assignment_overhead_ms=-?{number}"
    )
    assert re.fullmatch(pattern, last), last
