"""Ranking metrics and top-k selection against hand-computed values."""

import math

import numpy as np
import pytest
import scipy.sparse as sp

from pipeline.model.metrics import (
    hit_rate_at_k,
    map_at_k,
    mrr_at_k,
    ndcg_at_k,
    ranking_metrics,
    recall_at_k,
    top_k_from_scores,
)

LOG2_3 = math.log2(3)  # discount denominator at rank 2
LOG2_5 = math.log2(5)  # at rank 4

# Single target: query 0 hits at rank 2, query 1 at rank 1, query 2 at rank 2 (after which
# the row is padded), query 3 misses.
RANKED = np.array([[3, 1, 2], [0, 4, 1], [2, 0, -1], [5, 6, 7]])
TARGETS = np.array([1, 0, 0, 9])

# Multi-target: query 0 hits at ranks 1 and 3 of 2 relevant, query 1 at rank 4 of 3 relevant,
# query 2 has nothing relevant.
MULTI_RANKED = np.array([[1, 2, 3, 4], [5, 6, 7, 8], [9, 1, 2, 3]])
MULTI_TARGETS = [{1, 3}, {8, 10, 11}, set()]


def test_single_target_by_hand():
    assert hit_rate_at_k(RANKED, TARGETS, 1) == pytest.approx(1 / 4)
    assert hit_rate_at_k(RANKED, TARGETS, 3) == pytest.approx(3 / 4)
    assert recall_at_k(RANKED, TARGETS, 3) == pytest.approx(3 / 4)
    assert mrr_at_k(RANKED, TARGETS, 3) == pytest.approx((1 / 2 + 1 + 1 / 2 + 0) / 4)
    assert mrr_at_k(RANKED, TARGETS, 1) == pytest.approx(1 / 4)
    assert ndcg_at_k(RANKED, TARGETS, 3) == pytest.approx((1 / LOG2_3 + 1 + 1 / LOG2_3) / 4)
    # One relevant item: AP@k is the reciprocal rank.
    assert map_at_k(RANKED, TARGETS, 3) == pytest.approx(0.5)


def test_multi_target_by_hand():
    # AP@4: query 0 (1/1 + 2/3) / 2; query 1 (1/4) / 3; query 2 is 0.
    assert map_at_k(MULTI_RANKED, MULTI_TARGETS, 4) == pytest.approx(
        ((1 + 2 / 3) / 2 + (1 / 4) / 3) / 3
    )
    # AP@2: only query 0's rank-1 hit is inside, divided by min(2, 2).
    assert map_at_k(MULTI_RANKED, MULTI_TARGETS, 2) == pytest.approx((1 / 2) / 3)
    assert recall_at_k(MULTI_RANKED, MULTI_TARGETS, 4) == pytest.approx((1 + 1 / 3) / 3)
    assert hit_rate_at_k(MULTI_RANKED, MULTI_TARGETS, 4) == pytest.approx(2 / 3)
    assert mrr_at_k(MULTI_RANKED, MULTI_TARGETS, 4) == pytest.approx((1 + 1 / 4) / 3)
    ndcg0 = (1 + 1 / 2) / (1 + 1 / LOG2_3)  # hits at ranks 1 and 3; ideal: ranks 1 and 2
    ndcg1 = (1 / LOG2_5) / (1 + 1 / LOG2_3 + 1 / 2)  # hit at rank 4; ideal: ranks 1-3
    assert ndcg_at_k(MULTI_RANKED, MULTI_TARGETS, 4) == pytest.approx((ndcg0 + ndcg1) / 3)
    # At k=2 the ideal DCG of query 0 is capped at min(|relevant|, k) = 2 places.
    assert ndcg_at_k(MULTI_RANKED, MULTI_TARGETS, 2) == pytest.approx((1 / (1 + 1 / LOG2_3)) / 3)


def test_repeated_item_counts_once_like_kaggle_apk():
    ranked = np.array([[1, 1, 3]])
    # Kaggle's apk skips the repeat at rank 2: (1/1 + 2/3) / min(2, 3).
    assert map_at_k(ranked, [{1, 3}], 3) == pytest.approx((1 + 2 / 3) / 2)
    assert recall_at_k(np.array([[1, 1]]), [{1, 2}], 2) == pytest.approx(1 / 2)
    assert ndcg_at_k(np.array([[1, 1]]), np.array([1]), 2) == pytest.approx(1.0)


def _reference_apk(actual: set[int], predicted: list[int], k: int) -> float:
    """Kaggle's ``ml_metrics.apk``, written as a plain loop."""
    predicted = predicted[:k]
    score, hits = 0.0, 0.0
    for i, p in enumerate(predicted):
        if p in actual and p not in predicted[:i]:
            hits += 1
            score += hits / (i + 1)
    return score / min(len(actual), k) if actual else 0.0


def _reference_ndcg(actual: set[int], predicted: list[int], k: int) -> float:
    seen: set[int] = set()
    dcg = 0.0
    for i, p in enumerate(predicted[:k]):
        if p in actual and p not in seen:
            dcg += 1 / math.log2(i + 2)
        seen.add(p)
    idcg = sum(1 / math.log2(i + 2) for i in range(min(len(actual), k)))
    return dcg / idcg if idcg else 0.0


def test_vectorised_matches_reference_loops_on_random_data():
    rng = np.random.default_rng(0)
    ranked = rng.integers(-1, 30, size=(200, 15))
    targets = [set(rng.integers(0, 30, size=rng.integers(0, 6)).tolist()) for _ in range(200)]
    pairs = list(zip(targets, [r.tolist() for r in ranked], strict=True))
    for k in (1, 5, 12):
        expected_map = np.mean([_reference_apk(t, r, k) for t, r in pairs])
        expected_ndcg = np.mean([_reference_ndcg(t, r, k) for t, r in pairs])
        assert map_at_k(ranked, targets, k) == pytest.approx(expected_map)
        assert ndcg_at_k(ranked, targets, k) == pytest.approx(expected_ndcg)


def test_ranking_metrics_keys_and_values():
    rng = np.random.default_rng(1)
    ranked = np.stack([rng.permutation(100)[:50] for _ in range(40)])
    targets = rng.integers(0, 100, size=40)
    metrics = ranking_metrics(ranked, targets)
    expected = {f"{m}@{k}" for m in ("recall", "ndcg", "hr", "mrr") for k in (10, 20, 50)}
    assert set(metrics) == expected | {"map@12"}
    assert metrics["recall@20"] == pytest.approx(recall_at_k(ranked, targets, 20))
    assert metrics["hr@20"] == metrics["recall@20"]  # one target per query
    assert metrics["mrr@20"] == pytest.approx(mrr_at_k(ranked, targets, 20))
    assert metrics["ndcg@10"] == pytest.approx(ndcg_at_k(ranked, targets, 10))
    assert metrics["map@12"] == pytest.approx(mrr_at_k(ranked, targets, 12))
    assert metrics["recall@10"] <= metrics["recall@20"] <= metrics["recall@50"]


def test_metric_guards():
    with pytest.raises(ValueError, match="fewer than k"):
        recall_at_k(RANKED, TARGETS, 5)
    with pytest.raises(ValueError, match="targets"):
        recall_at_k(RANKED, TARGETS[:2], 2)
    assert recall_at_k(np.empty((0, 3), dtype=int), np.empty(0, dtype=int), 3) == 0.0


def test_top_k_orders_and_breaks_ties_by_index():
    scores = np.array([[0.1, 0.5, 0.5, 0.2, 0.9], [1.0, 1.0, 1.0, 1.0, 1.0]])
    assert top_k_from_scores(scores, 3).tolist() == [[4, 1, 2], [0, 1, 2]]
    # A tie straddling the k-th place goes to the lower index.
    assert top_k_from_scores(np.array([[0.5, 0.9, 0.5, 0.5]]), 2).tolist() == [[1, 0]]
    assert top_k_from_scores(scores, 5).tolist() == [[4, 1, 2, 3, 0], [0, 1, 2, 3, 4]]
    # Long tied rows (past numpy's small-array insertion sort) keep index order too.
    flat = np.zeros((3, 1000))
    flat[:, 700] = 1.0
    expected = [700, *range(99)]
    assert top_k_from_scores(flat, 100).tolist() == [expected] * 3


def test_top_k_exclusions_in_every_form():
    scores = np.array([[0.1, 0.5, 0.5, 0.2, 0.9], [1.0, 1.0, 1.0, 1.0, 1.0]])
    expected = [[1, 2, 3], [1, 3, 4]]
    lists = [[4], [0, 2]]
    mask = np.zeros(scores.shape, dtype=bool)
    mask[0, 4] = mask[1, 0] = mask[1, 2] = True
    assert top_k_from_scores(scores, 3, exclude=lists).tolist() == expected
    assert top_k_from_scores(scores, 3, exclude=[{4}, {0, 2}]).tolist() == expected
    assert top_k_from_scores(scores, 3, exclude=mask).tolist() == expected
    assert top_k_from_scores(scores, 3, exclude=sp.csr_array(mask)).tolist() == expected
    assert scores[0, 4] == 0.9  # the caller's array is untouched


def _reference_top_k(scores: np.ndarray, k: int, exclude: list[set[int]]) -> list[list[int]]:
    """Plain sort by (-score, index) of the eligible columns, padded with -1."""
    out = []
    for row, excluded in zip(scores, exclude, strict=True):
        eligible = [
            (-v, j) for j, v in enumerate(row) if v > -np.inf and j not in excluded
        ]  # NaN > -inf is False, so NaN drops out too
        top = [j for _, j in sorted(eligible)[:k]]
        out.append(top + [-1] * (k - len(top)))
    return out


def test_top_k_matches_a_plain_sort_on_tie_heavy_random_scores():
    rng = np.random.default_rng(2)
    for _ in range(200):
        n, m, k = rng.integers(1, 6), rng.integers(1, 25), int(rng.integers(1, 30))
        scores = rng.integers(0, 4, size=(n, m)).astype(float)  # few values: many ties
        scores[rng.random((n, m)) < 0.1] = np.nan
        scores[rng.random((n, m)) < 0.1] = -np.inf
        exclude = [set(rng.integers(0, m, size=rng.integers(0, 4)).tolist()) for _ in range(n)]
        assert top_k_from_scores(scores, k, exclude).tolist() == _reference_top_k(
            scores, k, exclude
        )


def test_top_k_pads_when_too_few_items_are_eligible():
    scores = np.array([[1.0, 2.0, -np.inf], [np.nan, 0.0, 3.0]])
    assert top_k_from_scores(scores, 3).tolist() == [[1, 0, -1], [2, 1, -1]]
    assert top_k_from_scores(scores, 3, exclude=[[0], []]).tolist() == [[1, -1, -1], [2, 1, -1]]
    assert top_k_from_scores(scores, 5).tolist() == [[1, 0, -1, -1, -1], [2, 1, -1, -1, -1]]
