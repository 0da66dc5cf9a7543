"""Evaluation: the model and the baselines on exactly the same test examples.

Next-item metrics (recall@k, NDCG@k, HR@20, MRR@20, MAP@12) for the model and every baseline of
:mod:`pipeline.evaluation.baselines`; the same by segment (new vs returning customers, with vs
without body data); fit AUC (mean one-vs-rest over small / fits / large, Misra et al. 2018),
its calibration and size accuracy against size baselines for the fit head
(:mod:`pipeline.evaluation.fit_report`). Results are flat dicts ready for MLflow and a
per-segment table; :mod:`pipeline.evaluation.plots` draws them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from pipeline.evaluation.fit_report import (
    calibration_table,
    expected_calibration_error,
    fit_auc_by_customer,
    size_report,
    training_customers,
)
from pipeline.evaluation.metrics import fit_auc, ranking_metrics, top_k_from_scores
from pipeline.features.declarations import CUSTOMER_ENTITY, ITEM_ENTITY
from pipeline.model.config import FIT_CLASSES, PAD
from pipeline.model.examples import Dataset
from pipeline.model.inputs import fit_feature_matrix, query_arrays
from pipeline.model.scoring import Scorer

K = 50


@dataclass
class FitEvaluation:
    """The fit head's numbers: metrics, calibration of P(fits) and the size confusion table."""

    metrics: dict[str, float] = field(default_factory=dict)
    calibration: pl.DataFrame | None = None
    size_confusion: pl.DataFrame | None = None


@dataclass
class Evaluation:
    """All numbers of one evaluation."""

    metrics: dict[str, dict[str, float]]  # method -> metric -> value
    segments: pl.DataFrame  # method, segment, metric, value
    fit: dict[str, float] = field(default_factory=dict)
    calibration: pl.DataFrame | None = None
    size_confusion: pl.DataFrame | None = None

    def flat(self) -> dict[str, float]:
        """``<method>_<metric>`` with ``@`` spelled ``_at_`` (MLflow metric names)."""
        out = {
            f"{method}_{name.replace('@', '_at_')}": value
            for method, values in self.metrics.items()
            for name, value in values.items()
        }
        out |= {f"model_{k}": v for k, v in self.fit.items()}
        return out


def model_top_k(scorer: Scorer, test: pl.DataFrame, k: int = K, batch: int = 2048) -> np.ndarray:
    """Indices (into the scorer's catalogue) of the model's top-k for each test example."""
    arrays = query_arrays(test)
    out = []
    for start in range(0, test.height, batch):
        end = start + batch
        _, scores = scorer.score(
            arrays["customer_id"][start:end],
            arrays["customer_features"][start:end],
            arrays["session_items"][start:end],
            arrays["session_events"][start:end],
        )
        out.append(top_k_from_scores(scores, k))
    return np.concatenate(out) if out else np.zeros((0, k), dtype=np.int64)


def _segments(data: Dataset) -> dict[str, np.ndarray]:
    test = data.test
    seen = set(data.train.get_column(CUSTOMER_ENTITY).to_list()) - {PAD}
    customer = test.get_column(CUSTOMER_ENTITY)
    returning = customer.is_in(list(seen)).to_numpy()
    anonymous = (customer == PAD).to_numpy()
    body = (test.get_column("has_body") > 0).to_numpy() if "has_body" in test.columns else None
    segments = {
        "all": np.ones(test.height, bool),
        "returning": returning,
        "new": ~returning & ~anonymous,
        "anonymous": anonymous,
    }
    if body is not None:
        segments |= {"with_body": body & ~anonymous, "without_body": ~body & ~anonymous}
    return segments


def evaluate(scorer: Scorer, data: Dataset, baselines: list | None = None) -> Evaluation:
    """Model and baselines on ``data.test``; fit head on the test rows with a fit label."""
    from pipeline.evaluation.baselines import all_baselines

    test = data.test
    items = scorer.item_ids.tolist()
    targets = np.array([scorer.item_index[i] for i in test.get_column(ITEM_ENTITY)])
    ranked = {"model": model_top_k(scorer, test)}
    train_steps = data.train.select("session_id", CUSTOMER_ENTITY, ITEM_ENTITY, "ts").with_columns(
        pl.col(CUSTOMER_ENTITY).replace(PAD, None)
    )
    histories = [[x for x in h if x != PAD] for h in test.get_column("history").to_list()]
    customers = [c or "" for c in test.get_column(CUSTOMER_ENTITY).to_list()]
    for baseline in baselines if baselines is not None else all_baselines():
        baseline.fit(train_steps, items)
        ranked[baseline.name] = baseline.recommend(histories, customers, K, times=test["ts"])

    metrics = {name: ranking_metrics(r, targets) for name, r in ranked.items()}
    rows = []
    for segment, mask in _segments(data).items():
        if not mask.any():
            continue
        for name, r in ranked.items():
            for metric, value in ranking_metrics(r[mask], targets[mask]).items():
                rows.append((name, segment, int(mask.sum()), metric, value))
    segments = pl.DataFrame(
        rows, schema=["method", "segment", "examples", "metric", "value"], orient="row"
    )
    evaluation = Evaluation(metrics=metrics, segments=segments)
    fit = evaluate_fit(scorer, test, data.train)
    evaluation.fit, evaluation.calibration = fit.metrics, fit.calibration
    evaluation.size_confusion = fit.size_confusion
    for name in metrics:
        metrics[name]["test_examples"] = float(test.height)
    return evaluation


def fit_probabilities(scorer: Scorer, rows: pl.DataFrame, batch: int = 4096) -> np.ndarray:
    """P(small, fits, large) of the fit head for labelled example rows."""
    arrays = query_arrays(rows)
    features = fit_feature_matrix(rows)
    idx = [scorer.item_index[i] for i in rows.get_column(ITEM_ENTITY)]
    out = []
    for start in range(0, rows.height, batch):
        end = start + batch
        out.append(
            scorer.fit_head(
                arrays["customer_id"][start:end],
                arrays["customer_features"][start:end],
                scorer.raw_item_vectors[idx[start:end]],
                features[start:end],
            )
        )
    return np.concatenate(out) if out else np.zeros((0, len(FIT_CLASSES)))


def evaluate_fit(
    scorer: Scorer, test: pl.DataFrame, train: pl.DataFrame | None = None
) -> FitEvaluation:
    """The fit head on the test rows that carry a fit label.

    Args:
        scorer: The bundle's scorer.
        test: Test examples; rows with ``fit_label >= 0`` are scored.
        train: The training examples. With them the fit AUC is also given for customers
            seen in training and for the rest (anonymous examples count as unseen), and the
            size accuracy beside the ``usual_size`` and ``size_chart`` baselines
            (:mod:`pipeline.evaluation.fit_report`).

    Returns:
        Metrics (``fit_auc``, ``fit_examples``, ``fit_ece``, by customer kind and size
        accuracy), the calibration of P(fits) and the size confusion table; empty with
        fewer than 10 labelled rows or a single class.
    """
    labelled = test.filter(pl.col("fit_label") >= 0)
    if labelled.height < 10 or labelled.get_column("fit_label").n_unique() < 2:
        return FitEvaluation()
    proba = fit_probabilities(scorer, labelled)
    y = labelled.get_column("fit_label").to_numpy()
    out = {"fit_auc": fit_auc(y, proba), "fit_examples": float(labelled.height)}
    fits = FIT_CLASSES.index("fits")
    calibration = calibration_table(proba[:, fits], y == fits)
    out["fit_ece"] = expected_calibration_error(calibration)
    if train is not None:
        seen = labelled.get_column(CUSTOMER_ENTITY).is_in(list(training_customers(train)))
        out |= fit_auc_by_customer(y, proba, seen.to_numpy())
    sizes, confusion = size_report(scorer, labelled.filter(pl.col("fit_label") == fits), train)
    out |= sizes
    return FitEvaluation(out, calibration, confusion)
