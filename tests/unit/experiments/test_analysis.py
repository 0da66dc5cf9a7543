"""The experiment statistics on simulated data where the right answer is known: the delta
method against a bootstrap, CUPED against the plain difference, the mSPRT's error rate under
continuous peeking against naive repeated tests, the sample size against the textbook formula,
and the verdicts and errors of the whole analysis."""

from __future__ import annotations

import json
import math
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import scipy.stats
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from pipeline.experiments.analysis import VERDICTS, analyse
from pipeline.experiments.config import METRICS, UNIT_COLUMNS, Experiment
from pipeline.experiments.differences import Difference, difference
from pipeline.experiments.power import plan, power_at
from pipeline.experiments.sample_ratio import sample_ratio
from pipeline.experiments.sequential import msprt, sequential

pytestmark = pytest.mark.unit

CTR = METRICS["click_through_rate"]
REVENUE = METRICS["revenue_per_unit"]
NET = METRICS["net_kept_revenue_per_unit"]
RETURN_RATE = METRICS["return_rate"]
DAY0 = date(2026, 12, 1)


def simulate(
    n_control: int,
    n_treatment: int,
    *,
    lift: float = 0.0,
    seed: int = 0,
    days: int = 7,
    names: tuple[str, ...] = ("control", "treatment"),
) -> pl.DataFrame:
    """Units with every UNIT_COLUMNS column; revenue correlates with pre_revenue; the
    non-control arms' revenue and clicks are multiplied by 1 + lift."""
    rng = np.random.default_rng(seed)
    counts = [n_control] + [n_treatment] * (len(names) - 1)
    variant = np.repeat(np.array(names), counts)
    n = len(variant)
    factor = np.where(variant == names[0], 1.0, 1.0 + lift)
    pre = rng.gamma(2.0, 20.0, n)
    exposures = rng.poisson(6, n) + 1
    propensity = rng.beta(2, 18, n)  # unit-level heterogeneity: clustered clicks
    clicks = rng.binomial(exposures, np.minimum(propensity * factor, 1))
    items = rng.poisson(1.2, n)
    orders = np.minimum(items, rng.poisson(0.3, n) + 1) * (items > 0)
    revenue = np.maximum(0.0, (0.8 * pre + rng.normal(0, 15, n)) * factor)
    returns = rng.binomial(items, 0.3)
    returned_revenue = returns * 12.0
    return pl.DataFrame(
        {
            "variant": variant,
            "unit": [f"u{i}" for i in range(n)],
            "exposures": exposures,
            "clicks": clicks,
            "add_to_carts": rng.binomial(clicks, 0.3),
            "orders": orders,
            "converted": (items > 0).astype(np.int64),
            "items": items,
            "revenue": revenue,
            "returns": returns,
            "size_returns": rng.binomial(returns, 0.5),
            "returned_revenue": returned_revenue,
            "net_revenue": revenue - returned_revenue,
            "pre_revenue": pre,
            "day": [DAY0 + timedelta(days=int(d)) for d in rng.integers(0, days, n)],
        }
    )


def experiment(**overrides) -> Experiment:
    data = {
        "name": "ranker-v7",
        "salt": "s",
        "start": "2026-12-01T00:00:00Z",
        "primary_metric": "net_kept_revenue_per_unit",
        "guardrails": ["return_rate", "p99_latency_ms", "degraded_share", "error_rate"],
        "minimum_detectable_effect": 0.05,
        "variants": [
            {"name": "control", "model": "champion", "share": 0.5},
            {"name": "treatment", "model": "7", "share": 0.5},
        ],
    } | overrides
    return Experiment.from_mapping(data)


def operational(degraded_treatment: int = 10, latency_treatment: float = 100.0) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "variant": ["control", "treatment"],
            "answers": [20_000, 20_000],
            "p99_latency_ms": [100.0, latency_treatment],
            "degraded": [10, degraded_treatment],
            "errors": [4, 5],
        }
    )


def test_simulated_frame_has_every_unit_column():
    assert set(UNIT_COLUMNS) <= set(simulate(10, 10).columns)


# --- fixed horizon ------------------------------------------------------------------------


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


# --- sample ratio -------------------------------------------------------------------------


def test_sample_ratio_catches_a_mismatch_and_passes_noise():
    broken = sample_ratio({"control": 5000, "treatment": 5400}, {"control": 0.5, "treatment": 0.5})
    assert broken.mismatch and broken.p_value < 0.001
    assert broken.expected == {"control": 5200.0, "treatment": 5200.0}
    fine = sample_ratio({"control": 5000, "treatment": 5050}, {"control": 0.5, "treatment": 0.5})
    assert not fine.mismatch and fine.p_value > 0.5


def test_sample_ratio_uses_the_declared_shares_and_every_arm():
    shares = {"a": 0.5, "b": 0.25, "c": 0.25}
    assert not sample_ratio({"a": 5000, "b": 2500, "c": 2480}, shares).mismatch
    assert sample_ratio({"a": 5000, "b": 5000, "c": 2500}, shares).mismatch
    # a variant that got nothing is a mismatch, not a crash
    assert sample_ratio({"a": 5000, "b": 2500}, shares).counts["c"] == 0
    assert sample_ratio({"a": 5000, "b": 2500}, shares).mismatch


# --- sequential ---------------------------------------------------------------------------


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


# --- planning -----------------------------------------------------------------------------


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


# --- the whole analysis -------------------------------------------------------------------


def test_analyse_blocks_on_a_sample_ratio_mismatch():
    units = simulate(5000, 5400, lift=0.3, seed=9)
    result = analyse(units, experiment(), operational=operational())
    assert result.srm.mismatch
    assert result.verdict == "blocked: sample ratio mismatch" and result.winner is None
    # the differences are still reported
    assert result.primary[0].significant()


def test_analyse_declares_a_clean_winner():
    result = analyse(
        simulate(3000, 3000, lift=0.15, seed=10), experiment(), operational=operational()
    )
    assert result.verdict == "treatment wins" and result.winner == "treatment"
    assert [d.method for d in result.primary] == ["fixed+cuped"]
    assert [d.method for d in result.sequential] == ["msprt"]
    assert {d.metric for d in result.metrics} == set(METRICS)
    assert not any(g["breached"] for g in result.guardrails)
    cumulative = result.cumulative
    assert cumulative.columns[:5] == ["day", "variant", "relative", "relative_low", "relative_high"]
    assert cumulative.height == 7 and cumulative["day"].is_sorted()
    assert (cumulative["p_value"].diff().drop_nulls() <= 0).all()  # running minimum
    last = cumulative.row(-1, named=True)
    assert last["relative_low"] == pytest.approx(result.sequential[0].relative_low)
    json.dumps(result.as_dict())


def test_a_breached_guardrail_overrides_a_win():
    units = simulate(3000, 3000, lift=0.15, seed=10)
    degraded = analyse(units, experiment(), operational=operational(degraded_treatment=80))
    assert degraded.verdict == "guardrail breached" and degraded.winner is None
    row = next(g for g in degraded.guardrails if g["guardrail"] == "degraded_share")
    assert row["breached"] and row["p_adjusted"] >= row["p_value"]
    slow = analyse(units, experiment(), operational=operational(latency_treatment=125.0))
    assert slow.verdict == "guardrail breached"
    within = analyse(units, experiment(), operational=operational(latency_treatment=115.0))
    assert within.verdict == "treatment wins"


def test_analyse_reports_a_loss_and_no_difference():
    worse = analyse(simulate(3000, 3000, lift=-0.15, seed=11), experiment())
    assert worse.verdict == "treatment loses"
    flat = analyse(simulate(3000, 3000, seed=12), experiment())
    assert flat.verdict == "no significant difference yet"
    # operational guardrails without operational data are reported, not breached
    assert any(g.get("note") == "no operational data" for g in flat.guardrails)


def test_holdout_arms_are_compared_with_the_control(tmp_path: Path):
    exp = experiment(
        variants=[
            {"name": "control", "model": "champion", "share": 0.4},
            {"name": "treatment", "model": "7", "share": 0.4},
            {"name": "holdout", "holdout": True, "share": 0.2},
        ]
    )
    units = simulate(2000, 2000, seed=13, names=("control", "treatment", "holdout"))
    # 2000 / 2000 / 2000 against 40 / 40 / 20 is itself a mismatch
    result = analyse(units, exp)
    assert [d.treatment for d in result.primary] == ["treatment", "holdout"]
    assert result.verdict == "blocked: sample ratio mismatch"
    out = result.plot(tmp_path / "lift.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = result.to_markdown()
    assert "holdout" in markdown and "blocked: sample ratio mismatch" in markdown


def test_verdicts_are_the_declared_ones():
    assert len(VERDICTS) == 5 and VERDICTS[0] == "blocked: sample ratio mismatch"


# --- hostile inputs -----------------------------------------------------------------------


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


# --- properties ---------------------------------------------------------------------------

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
