"""Fit metrics against hand-computed values."""

import numpy as np
import pytest

from pipeline.evaluation.metrics import fit_auc, size_accuracy

# Class scores for labels [0, 0, 1, 1, 2, 2].
PROBA = np.array(
    [
        [0.7, 0.2, 0.1],
        [0.3, 0.4, 0.3],
        [0.4, 0.5, 0.1],
        [0.2, 0.6, 0.2],
        [0.1, 0.3, 0.6],
        [0.5, 0.2, 0.3],
    ]
)


def test_fit_auc_is_mean_of_one_vs_rest_aucs_by_hand():
    # Counting positive-over-negative pairs (ties 1/2) out of 2 x 4 per class:
    # class 0: 0.7 beats all 4, 0.3 beats 0.2 and 0.1 -> 6/8;
    # class 1: 0.5 and 0.6 beat 0.2, 0.4, 0.3, 0.2 -> 8/8;
    # class 2: 0.6 beats all 4, 0.3 beats 0.1, 0.1, 0.2 and ties 0.3 -> 7.5/8.
    y = np.array([0, 0, 1, 1, 2, 2])
    assert fit_auc(y, PROBA) == pytest.approx((6 / 8 + 8 / 8 + 7.5 / 8) / 3)


def test_fit_auc_skips_a_class_absent_from_labels():
    # Class 0: 0.7 beats 0.4 and 0.2, 0.3 beats 0.2 -> 3/4; class 1: 4/4; class 2 absent.
    assert fit_auc(np.array([0, 0, 1, 1]), PROBA[:4]) == pytest.approx((3 / 4 + 1) / 2)
    with pytest.raises(ValueError, match="two distinct"):
        fit_auc(np.array([1, 1]), PROBA[:2])
    with pytest.raises(ValueError):
        fit_auc(np.array([0, 3]), PROBA[:2])


def test_size_accuracy_with_tolerance_and_unknown_predictions():
    predicted = np.array([0, 1, 2, -1, 3.0])
    true = np.array([0, 2, 2, 0, 5])
    assert size_accuracy(predicted, true) == pytest.approx(2 / 5)
    # -1 is "unknown", not one size below 0, so it stays wrong at tolerance 1.
    assert size_accuracy(predicted, true, tolerance=1) == pytest.approx(3 / 5)
    assert size_accuracy(predicted, true, tolerance=2) == pytest.approx(4 / 5)
    assert size_accuracy(np.array([np.nan]), np.array([1.0]), tolerance=5) == 0.0
