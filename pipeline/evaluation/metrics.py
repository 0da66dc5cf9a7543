"""Fit metrics: how well the fit head separates too small, fits and too large, and size accuracy.

The ranking metrics live in :mod:`pipeline.model.metrics`, below both training and evaluation.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

FIT_CLASSES = (0, 1, 2)
"""Fit labels: 0 too small, 1 fits, 2 too large."""


# --------------------------------------------------------------------------------------------
# Fit metrics.
# --------------------------------------------------------------------------------------------


def fit_auc(y_true: np.ndarray, proba: np.ndarray) -> float:
    """Average one-vs-rest ROC AUC over the three fit classes (Misra, Wan, McAuley, RecSys 2018).

    For each class ``c`` in 0 (too small), 1 (fits), 2 (too large) the AUC of
    ``proba[:, c]`` separating ``y_true == c`` from the rest is computed, and the AUCs are
    averaged with equal weight. A class absent from ``y_true`` (or the only class present) has
    no AUC and is skipped: the mean is then over the remaining classes.

    Args:
        y_true: ``(n,)`` labels in ``{0, 1, 2}``.
        proba: ``(n, 3)`` class scores (probabilities or any monotone scores per class).

    Returns:
        Mean AUC over the classes that have both positives and negatives.

    Raises:
        ValueError: on bad shapes or labels, or when no class has an AUC.
    """
    y_true = np.asarray(y_true)
    proba = np.asarray(proba, dtype=np.float64)
    if y_true.ndim != 1 or proba.shape != (len(y_true), len(FIT_CLASSES)):
        raise ValueError(
            f"need y_true (n,) and proba (n, {len(FIT_CLASSES)}); "
            f"got {y_true.shape} and {proba.shape}"
        )
    if not np.isin(y_true, FIT_CLASSES).all():
        raise ValueError(f"fit labels must be in {FIT_CLASSES}")
    aucs = []
    for c in FIT_CLASSES:
        positive = y_true == c
        if positive.any() and not positive.all():
            aucs.append(roc_auc_score(positive, proba[:, c]))
    if not aucs:
        raise ValueError("fit AUC needs at least two distinct classes in y_true")
    return float(np.mean(aucs))


def size_accuracy(predicted_rank: np.ndarray, true_rank: np.ndarray, tolerance: int = 0) -> float:
    """Share of predictions within ``tolerance`` size steps of the size actually kept.

    Args:
        predicted_rank: ``(n,)`` predicted size ranks (0 = smallest size). NaN or a negative
            rank (``-1`` is "unknown" in :func:`pipeline.features.garment_fit.fit_match`)
            counts as wrong.
        true_rank: ``(n,)`` size ranks that fitted.
        tolerance: allowed absolute difference in size steps (0: exact size).

    Returns:
        Accuracy in ``[0, 1]``; 0.0 for empty input.
    """
    predicted = np.asarray(predicted_rank, dtype=np.float64)
    true = np.asarray(true_rank, dtype=np.float64)
    if predicted.shape != true.shape or predicted.ndim != 1:
        raise ValueError(f"need two (n,) arrays, got {predicted.shape} and {true.shape}")
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    known = np.isfinite(predicted) & (predicted >= 0)
    with np.errstate(invalid="ignore"):
        correct = known & (np.abs(predicted - true) <= tolerance)
    correct_share = correct.astype(np.float64)
    return float(correct_share.mean()) if correct_share.size else 0.0
