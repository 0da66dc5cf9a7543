"""The clustered bootstrap: properties that must hold for any data, a reference check against
scipy's ordinary bootstrap, coverage on simulated clustered data, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from pipeline.evaluation.metrics import fit_auc
from pipeline.evaluation.significance import (
    Interval,
    bootstrap_means,
    cluster_codes,
    interval_of,
    mean_interval,
    paired_difference,
    verdict,
)

pytestmark = pytest.mark.unit

# Per-query metric values live in [0, 1]; a few distinct values make ties and skew likely.
values = st.lists(
    st.sampled_from([0.0, 0.0, 0.0, 0.1, 0.25, 0.5, 1.0]), min_size=1, max_size=60
).map(np.array)


@st.composite
def clustered(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two methods' values on the same examples and each example's cluster."""
    a = draw(values)
    b = draw(st.lists(st.sampled_from([0.0, 0.5, 1.0]), min_size=len(a), max_size=len(a)))
    groups = draw(st.integers(1, len(a)))
    clusters = draw(st.lists(st.integers(0, groups - 1), min_size=len(a), max_size=len(a)))
    return a, np.array(b), np.array(clusters)


@settings(max_examples=60, deadline=None)
@given(clustered())
def test_the_interval_contains_the_point_estimate(data):
    a, b, clusters = data
    for interval in (
        mean_interval(a, clusters, resamples=200),
        paired_difference(a, b, clusters, resamples=200),
    ):
        assert interval.low <= interval.estimate + 1e-12
        assert interval.estimate <= interval.high + 1e-12
    assert mean_interval(a, clusters).estimate == pytest.approx(a.mean())


@settings(max_examples=40, deadline=None)
@given(clustered())
def test_a_method_against_itself_is_tied_with_a_zero_width_interval(data):
    a, _, clusters = data
    same = paired_difference(a, a.copy(), clusters, resamples=200)
    assert same == Interval(0.0, 0.0, 0.0)
    assert same.verdict == "tied"


@settings(max_examples=40, deadline=None)
@given(clustered(), st.sampled_from([-0.3, 0.01, 0.125, 2.0]))
def test_shifting_one_method_shifts_the_difference_by_the_constant(data, shift):
    a, b, clusters = data
    before = paired_difference(a, b, clusters, resamples=200)
    after = paired_difference(a + shift, b, clusters, resamples=200)
    assert after.estimate == pytest.approx(before.estimate + shift, abs=1e-12)
    assert after.low == pytest.approx(before.low + shift, abs=1e-12)
    assert after.high == pytest.approx(before.high + shift, abs=1e-12)


@settings(max_examples=30, deadline=None)
@given(values)
def test_clusters_of_one_example_are_the_ordinary_bootstrap(a):
    unclustered = mean_interval(a, None, resamples=200)
    # Labels of any kind, one per example, in any order of first appearance.
    labels = [f"session-{i}" for i in range(len(a))]
    assert mean_interval(a, labels, resamples=200) == unclustered
    assert mean_interval(a, np.arange(len(a)), resamples=200) == unclustered


def test_the_ordinary_case_agrees_with_scipys_percentile_bootstrap():
    rng = np.random.default_rng(3)
    a = (rng.random(2000) < 0.3).astype(float)
    ours = mean_interval(a, None)
    theirs = stats.bootstrap(
        (a,), np.mean, method="percentile", n_resamples=4000, random_state=rng
    ).confidence_interval
    width = theirs.high - theirs.low
    # Two Monte Carlo estimates of the same quantiles: equal up to a few % of the width.
    assert ours.low == pytest.approx(theirs.low, abs=0.1 * width)
    assert ours.high == pytest.approx(theirs.high, abs=0.1 * width)


def test_clusters_widen_the_interval_when_examples_of_a_cluster_agree():
    # 200 customers of 10 examples each; a customer's examples all hit or all miss.
    rng = np.random.default_rng(4)
    customer_hit = (rng.random(200) < 0.4).astype(float)
    a = np.repeat(customer_hit, 10)
    clusters = np.repeat(np.arange(200), 10)
    naive = mean_interval(a, None)
    clustered_ = mean_interval(a, clusters)
    # The effective sample is 200 customers, not 2000 examples: about sqrt(10) wider.
    ratio = (clustered_.high - clustered_.low) / (naive.high - naive.low)
    assert 2.5 < ratio < 4.0


@settings(max_examples=20, deadline=None)
@given(clustered(), st.integers(0, 2**31 - 1))
def test_intervals_are_deterministic_for_a_seed(data, seed):
    a, b, clusters = data
    first = bootstrap_means({"a": a, "b": b}, clusters, resamples=100, seed=seed)
    again = bootstrap_means({"a": a, "b": b}, clusters, resamples=100, seed=seed)
    np.testing.assert_array_equal(first.draws, again.draws)
    assert first.difference("a", "b") == again.difference("a", "b")


def test_chunking_bounds_memory_and_keeps_results_sane():
    rng = np.random.default_rng(5)
    a = rng.random(500)
    clusters = rng.integers(0, 100, 500)
    small = bootstrap_means({"a": a}, clusters, chunk_elements=100)  # one resample per chunk
    big = bootstrap_means({"a": a}, clusters)
    assert small.draws.shape == big.draws.shape == (1000, 1)
    assert small.interval("a").low == pytest.approx(big.interval("a").low, abs=0.01)


def test_coverage_on_simulated_clustered_data_is_near_95_percent():
    """300 test sets from a known model (customers with their own hit rate, 1-8 examples
    each): the interval of the mean covers the true mean 90-99% of the time; the same
    interval ignoring clusters covers it less often (it treats 4.5 examples as 4.5 people)."""
    rng = np.random.default_rng(6)
    truth, covered, naive, repetitions = 0.3, 0, 0, 300
    for _ in range(repetitions):
        customers = 150
        rate = rng.beta(0.3 * 4, 0.7 * 4, customers)  # mean 0.3, strongly clustered
        sizes = rng.integers(1, 9, customers)
        clusters = np.repeat(np.arange(customers), sizes)
        hits = (rng.random(len(clusters)) < rate[clusters]).astype(float)
        # The mean over examples estimates the size-weighted rate; sizes are independent of
        # rates, so its expectation is the population mean.
        interval = mean_interval(hits, clusters, resamples=400)
        covered += interval.low <= truth <= interval.high
        unclustered = mean_interval(hits, None, resamples=400)
        naive += unclustered.low <= truth <= unclustered.high
    assert 0.90 <= covered / repetitions <= 0.99
    assert naive < covered


def test_interval_of_a_statistic_that_is_not_a_mean():
    rng = np.random.default_rng(7)
    n = 600
    customers = rng.integers(0, 150, n)
    y = rng.integers(0, 3, n)
    proba = rng.dirichlet([1, 1, 1], n)
    proba[np.arange(n), y] += 0.5  # informative
    proba /= proba.sum(axis=1, keepdims=True)
    auc = interval_of(lambda rows: fit_auc(y[rows], proba[rows]), customers, resamples=100)
    assert auc.estimate == pytest.approx(fit_auc(y, proba))
    assert 0.5 < auc.low < auc.estimate < auc.high <= 1.0
    again = interval_of(lambda rows: fit_auc(y[rows], proba[rows]), customers, resamples=100)
    assert again == auc


def test_interval_of_a_mean_matches_the_ratio_bootstrap_in_distribution():
    rng = np.random.default_rng(8)
    a = rng.random(400)
    clusters = rng.integers(0, 80, 400)
    by_rows = interval_of(lambda rows: float(a[rows].mean()), clusters, resamples=1000)
    by_sums = mean_interval(a, clusters)
    width = by_sums.high - by_sums.low
    assert by_rows.low == pytest.approx(by_sums.low, abs=0.15 * width)
    assert by_rows.high == pytest.approx(by_sums.high, abs=0.15 * width)


def test_verdicts():
    assert verdict(0.001, 0.02) == "ahead"
    assert verdict(-0.02, -0.001) == "behind"
    assert verdict(-0.01, 0.01) == "tied"
    assert verdict(0.0, 0.01) == "tied"  # a bound at 0 is not evidence
    with pytest.raises(ValueError, match="not an interval"):
        verdict(0.2, 0.1)
    with pytest.raises(ValueError, match="not an interval"):
        verdict(float("nan"), 0.1)


def test_hostile_inputs_give_clear_errors():
    with pytest.raises(ValueError, match="no examples"):
        mean_interval(np.array([]))
    with pytest.raises(ValueError, match="NaN"):
        mean_interval(np.array([0.1, np.nan]))
    with pytest.raises(ValueError, match="differ in length"):
        paired_difference(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="3 cluster labels for 4"):
        mean_interval(np.ones(4), [1, 2, 3])
    with pytest.raises(ValueError, match="must not be None"):
        mean_interval(np.ones(2), ["a", None])
    with pytest.raises(ValueError, match="at least one column"):
        bootstrap_means({})
    with pytest.raises(ValueError, match="'b' has 2 values, expected 3"):
        bootstrap_means({"a": np.ones(3), "b": np.ones(2)})
    with pytest.raises(ValueError, match="confidence"):
        mean_interval(np.ones(3), confidence=95)
    with pytest.raises(KeyError, match="no column 'c'"):
        bootstrap_means({"a": np.ones(3)}).interval("c")
    with pytest.raises(ValueError, match="no examples"):
        interval_of(lambda rows: 0.0, [])

    def all_distinct(rows: np.ndarray) -> float:
        if len(np.unique(rows)) < len(rows):
            raise ValueError("undefined on a repeat")
        return 1.0

    with pytest.raises(ValueError, match="defined on only 0 of 50"):
        interval_of(all_distinct, list(range(20)), resamples=50)


def test_cluster_codes_are_dense():
    assert cluster_codes(["b", "a", "b", "c"], 4).tolist() == [0, 1, 0, 2]
    assert cluster_codes(np.array([7, 3, 7]), 3).tolist() == [0, 1, 0]
