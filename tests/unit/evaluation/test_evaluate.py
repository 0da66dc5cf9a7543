"""Intervals and comparisons of an evaluation, on hand-made rankings (no model needed)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from pipeline.evaluation.evaluate import (
    Evaluation,
    ranking_evaluation,
)
from pipeline.evaluation.evaluate import (
    evaluation_units as units_of,
)
from pipeline.model.metrics import ranking_metrics

pytestmark = pytest.mark.unit

N, ITEMS = 400, 60


def _rankings() -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    targets = rng.integers(0, ITEMS, N)
    noise = np.argsort(rng.random((N, ITEMS)), axis=1)[:, :50]

    def hitting(share: float) -> np.ndarray:
        ranked = noise.copy()
        hit = rng.random(N) < share
        ranked[hit, 0] = targets[hit]  # the target first on a share of the rows
        ranked[hit, 1:] = np.where(ranked[hit, 1:] == targets[hit, None], -1, ranked[hit, 1:])
        return ranked

    ranked = {"model": hitting(0.6), "popularity": hitting(0.2), "random": noise}
    clusters = np.repeat([f"customer:{i}" for i in range(100)], 4)
    segments = {
        "all": np.ones(N, bool),
        "first_half": np.arange(N) < N // 2,
        "none": np.zeros(N, bool),
    }
    return ranked, targets, clusters, segments


def test_point_estimates_are_todays_numbers_and_every_one_has_an_interval():
    ranked, targets, clusters, segments = _rankings()
    evaluation = ranking_evaluation(ranked, targets, clusters, segments)
    for method, r in ranked.items():
        assert evaluation.metrics[method] == pytest.approx(ranking_metrics(r, targets))
        for metric, value in evaluation.metrics[method].items():
            low, high = evaluation.intervals[method][metric]
            assert low <= value <= high
    # The model puts the target first on 60% of the rows, the best baseline on 20%.
    comparison = evaluation.comparisons["recall@20"]
    assert comparison.baseline == "popularity"
    assert comparison.verdict == "ahead" and comparison.low > 0.15
    assert comparison.difference == pytest.approx(
        evaluation.metrics["model"]["recall@20"] - evaluation.metrics["popularity"]["recall@20"]
    )


def test_segments_carry_intervals_and_leave_empty_segments_out():
    ranked, targets, clusters, segments = _rankings()
    frame = ranking_evaluation(ranked, targets, clusters, segments).segments
    assert frame.columns == [
        "method",
        "segment",
        "examples",
        "metric",
        "value",
        "ci_low",
        "ci_high",
    ]
    assert set(frame["segment"]) == {"all", "first_half"}
    assert frame.filter(
        (pl.col("ci_low") > pl.col("value")) | (pl.col("value") > pl.col("ci_high"))
    ).is_empty()
    half = frame.filter(pl.col("segment") == "first_half", pl.col("method") == "model")
    expected = ranking_metrics(ranked["model"][: N // 2], targets[: N // 2])
    assert dict(zip(half["metric"], half["value"], strict=True)) == pytest.approx(expected)
    # Fewer examples, wider intervals.
    whole = frame.filter(pl.col("segment") == "all", pl.col("method") == "model")
    assert ((half["ci_high"] - half["ci_low"]) >= (whole["ci_high"] - whole["ci_low"]) * 0.9).all()


def test_flat_names_are_mlflow_names_with_bounds_and_comparisons():
    ranked, targets, clusters, segments = _rankings()
    evaluation = ranking_evaluation(ranked, targets, clusters, segments)
    evaluation.fit = {"fit_auc": 0.7, "fit_auc_ci_low": 0.6, "fit_auc_ci_high": 0.8}
    flat = evaluation.flat()
    assert flat["model_recall_at_20"] == evaluation.metrics["model"]["recall@20"]
    assert (flat["popularity_map_at_12_ci_low"], flat["popularity_map_at_12_ci_high"]) == (
        evaluation.intervals["popularity"]["map@12"]
    )
    comparison = evaluation.comparisons["ndcg@10"]
    assert flat["model_vs_best_ndcg_at_10_diff"] == comparison.difference
    assert flat["model_vs_best_ndcg_at_10_ci_low"] == comparison.low
    assert flat["model_fit_auc_ci_high"] == 0.8
    assert not any("@" in key for key in flat)
    # 13 metrics x 3 values x 3 methods, 13 x 3 comparisons, 3 fit numbers: a modest run.
    assert len(flat) == 13 * 3 * 3 + 13 * 3 + 3


def test_an_evaluation_without_intervals_flattens_as_before():
    evaluation = Evaluation(metrics={"model": {"recall@20": 0.5}}, segments=pl.DataFrame())
    assert evaluation.flat() == {"model_recall_at_20": 0.5}


def test_units_are_customers_where_known_else_sessions():
    test = pl.DataFrame(
        {"customer_id": ["c1", "", "c1", ""], "session_id": ["s1", "s2", "s3", "s2"]}
    )
    assert units_of(test).tolist() == ["customer:c1", "session:s2", "customer:c1", "session:s2"]
    with pytest.raises(ValueError, match="need a session_id"):
        units_of(test.drop("session_id"))
    assert units_of(pl.DataFrame({"customer_id": ["a", "b"]})).tolist() == [
        "customer:a",
        "customer:b",
    ]
