import numpy as np
import polars as pl
import pytest

from pipeline.evaluate import popularity_ranks, ranks_from_scores, recall_at


def test_ranks_and_recall_by_hand():
    scores = np.array([[0.9, 0.1, 0.5], [0.2, 0.3, 0.1], [0.5, 0.5, 0.0]])
    ranks = ranks_from_scores(scores, np.array([0, 0, 1]))
    # row 0: target best; row 1: target second; row 2: tie counts against the target.
    assert ranks.tolist() == [0, 1, 1]
    metrics = recall_at(ranks, ks=(1, 2))
    assert metrics["recall_at_1"] == pytest.approx(1 / 3)
    assert metrics["recall_at_2"] == 1.0
    assert metrics["mrr_at_20"] == pytest.approx((1 + 0.5 + 0.5) / 3)


def test_popularity_baseline_ranks():
    train = pl.DataFrame({"item_id": ["a", "a", "b", "c", "c", "c"]})
    test = pl.DataFrame({"item_id": ["c", "a", "b", "z"]})
    ranks = popularity_ranks(train, test, ["a", "b", "c", "z"])
    assert ranks.tolist() == [0, 1, 2, 3]
