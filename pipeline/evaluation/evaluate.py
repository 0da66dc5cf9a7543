"""Evaluation: the model and the baselines on exactly the same test examples.

Next-item metrics (recall@k, NDCG@k, HR@20, MRR@20, MAP@12) for the model and every baseline of
:mod:`pipeline.evaluation.baselines`; the same by segment (new vs returning customers, with vs
without body data); fit AUC (mean one-vs-rest over small / fits / large, Misra et al. 2018),
its calibration and size accuracy against size baselines for the fit head
(:mod:`pipeline.evaluation.fit_report`). Results are flat dicts ready for MLflow and a
per-segment table; :mod:`pipeline.evaluation.plots` draws them.

Every number carries its 95% interval from a bootstrap over test units (customers where
known, else sessions: :func:`evaluation_units`; :mod:`pipeline.evaluation.significance`), and
for each ranking metric the model is compared with the strongest baseline on that metric by their
paired difference on the same examples (:class:`Comparison`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
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
from pipeline.evaluation.metrics import fit_auc
from pipeline.evaluation.significance import (
    MeanDraws,
    Verdict,
    bootstrap_means,
    interval_of,
    mean_interval,
)
from pipeline.features.declarations import CUSTOMER_ENTITY, ITEM_ENTITY
from pipeline.model.config import FIT_CLASSES, PAD
from pipeline.model.examples import Dataset
from pipeline.model.inputs import fit_feature_matrix, query_arrays
from pipeline.model.metrics import per_query_metrics, top_k_from_scores
from pipeline.model.scoring import Scorer

K = 50


def mlflow_name(metric: str) -> str:
    """A metric's MLflow name: ``recall@20`` -> ``recall_at_20``."""
    return metric.replace("@", "_at_")


@dataclass(frozen=True)
class Comparison:
    """The model minus the strongest baseline on one metric, paired on the same examples."""

    baseline: str
    difference: float
    low: float
    high: float
    verdict: Verdict  # "ahead", "behind" or "tied": where the 95% interval lies against 0


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
    segments: pl.DataFrame  # method, segment, examples, metric, value, ci_low, ci_high
    fit: dict[str, float] = field(default_factory=dict)
    calibration: pl.DataFrame | None = None
    size_confusion: pl.DataFrame | None = None
    intervals: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)
    comparisons: dict[str, Comparison] = field(default_factory=dict)  # metric -> comparison

    def by_method(self) -> dict[str, dict[str, float]]:
        """Each method's metrics and their ``_ci_low`` / ``_ci_high`` under MLflow names."""
        out: dict[str, dict[str, float]] = {}
        for method, values in self.metrics.items():
            named = out.setdefault(method, {})
            for name, value in values.items():
                named[mlflow_name(name)] = value
                if name in self.intervals.get(method, {}):
                    low, high = self.intervals[method][name]
                    named[f"{mlflow_name(name)}_ci_low"] = low
                    named[f"{mlflow_name(name)}_ci_high"] = high
        return out

    def flat(self) -> dict[str, float]:
        """``<method>_<metric>`` (with ``_ci_low`` / ``_ci_high``), the model against the best
        baseline as ``model_vs_best_<metric>_diff`` / ``_ci_low`` / ``_ci_high``, and the fit
        head's numbers; ``@`` spelled ``_at_`` (MLflow metric names)."""
        out = {
            f"{method}_{name}": value
            for method, values in self.by_method().items()
            for name, value in values.items()
        }
        for metric, comparison in self.comparisons.items():
            prefix = f"model_vs_best_{mlflow_name(metric)}"
            out[f"{prefix}_diff"] = comparison.difference
            out[f"{prefix}_ci_low"] = comparison.low
            out[f"{prefix}_ci_high"] = comparison.high
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


def evaluation_units(test: pl.DataFrame) -> np.ndarray:
    """The independent unit of each test example: its customer where known, else its session.

    Examples of one customer (or of one anonymous session) are not independent, so the
    bootstrap resamples these units whole.

    Args:
        test: test examples with ``customer_id`` and, for anonymous ones, ``session_id``.

    Returns:
        ``(n,)`` string labels, ``customer:<id>`` or ``session:<id>``.

    Raises:
        ValueError: when anonymous examples have no ``session_id`` to group them by.
    """
    customer = pl.col(CUSTOMER_ENTITY).cast(pl.String)
    anonymous = customer.is_null() | (customer == PAD)
    if "session_id" in test.columns:
        session = pl.lit("session:") + pl.col("session_id").cast(pl.String)
    elif test.select(anonymous.any()).item():
        raise ValueError("anonymous test examples need a session_id to be grouped by")
    else:
        session = pl.lit(None, pl.String)
    labels = pl.when(anonymous).then(session).otherwise(pl.lit("customer:") + customer)
    return test.select(labels.alias("unit")).get_column("unit").to_numpy()


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


def ranking_evaluation(
    ranked: dict[str, np.ndarray],
    targets: np.ndarray,
    clusters: np.ndarray,
    segments: dict[str, np.ndarray],
) -> Evaluation:
    """Ranking metrics of every method with 95% intervals, by segment, and the comparisons.

    All intervals come from one clustered bootstrap per segment shared by every method and
    metric (:func:`pipeline.evaluation.significance.bootstrap_means`), so a paired difference
    is read off the same resamples. The strongest baseline on a metric is the one with the
    highest point estimate (ties: the first name in alphabetical order).

    Args:
        ranked: method -> ``(n, K)`` top-K item indices; ``"model"`` is the model.
        targets: ``(n,)`` target item index per example.
        clusters: ``(n,)`` test unit per example (:func:`evaluation_units`).
        segments: segment name -> ``(n,)`` boolean mask; empty segments are left out.

    Returns:
        An :class:`Evaluation` without fit numbers.
    """
    per_query = {name: per_query_metrics(r, targets) for name, r in ranked.items()}
    columns = {
        (name, metric): values
        for name, by_metric in per_query.items()
        for metric, values in by_metric.items()
    }
    draws = bootstrap_means(columns, clusters)
    metrics = {
        name: {m: float(v.mean()) for m, v in by_metric.items()}
        for name, by_metric in per_query.items()
    }
    intervals = {
        name: {m: _bounds(draws, (name, m)) for m in by_metric}
        for name, by_metric in per_query.items()
    }
    rows = []
    for segment, mask in segments.items():
        if not mask.any():
            continue
        part = (
            draws
            if mask.all()
            else bootstrap_means({k: v[mask] for k, v in columns.items()}, clusters[mask])
        )
        for name, metric in columns:
            interval = part.interval((name, metric))
            rows.append(
                (
                    name,
                    segment,
                    int(mask.sum()),
                    metric,
                    interval.estimate,
                    interval.low,
                    interval.high,
                )
            )
    frame = pl.DataFrame(
        rows,
        schema=["method", "segment", "examples", "metric", "value", "ci_low", "ci_high"],
        orient="row",
    )
    return Evaluation(
        metrics=metrics,
        segments=frame,
        intervals=intervals,
        comparisons=_comparisons(draws, metrics),
    )


def _bounds(draws: MeanDraws[tuple[str, str]], column: tuple[str, str]) -> tuple[float, float]:
    interval = draws.interval(column)
    return interval.low, interval.high


def _comparisons(
    draws: MeanDraws[tuple[str, str]], metrics: dict[str, dict[str, float]]
) -> dict[str, Comparison]:
    """For each metric, the model minus the baseline with the highest point estimate on it."""
    baselines = sorted(name for name in metrics if name != "model")
    if "model" not in metrics or not baselines:
        return {}
    out = {}
    for metric in metrics["model"]:
        best = max(baselines, key=lambda name: metrics[name][metric])
        diff = draws.difference(("model", metric), (best, metric))
        out[metric] = Comparison(best, diff.estimate, diff.low, diff.high, diff.verdict)
    return out


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

    evaluation = ranking_evaluation(ranked, targets, evaluation_units(test), _segments(data))
    fit = evaluate_fit(scorer, test, data.train)
    evaluation.fit, evaluation.calibration = fit.metrics, fit.calibration
    evaluation.size_confusion = fit.size_confusion
    for name in evaluation.metrics:
        evaluation.metrics[name]["test_examples"] = float(test.height)
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


def _auc_of(y: np.ndarray, proba: np.ndarray) -> Callable[[np.ndarray], float]:
    """Fit AUC of the rows a bootstrap draws, for :func:`interval_of`."""
    return lambda rows: fit_auc(y[rows], proba[rows])


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
    # The customer is the unit: one person's fit labels share a body and a taste.
    units = evaluation_units(labelled)
    fits = FIT_CLASSES.index("fits")
    calibration = calibration_table(proba[:, fits], y == fits)
    out["fit_ece"] = expected_calibration_error(calibration)
    statistics: dict[str, tuple[Callable[[np.ndarray], float], np.ndarray]] = {
        "fit_auc": (_auc_of(y, proba), units),
        "fit_ece": (
            lambda rows: expected_calibration_error(
                calibration_table(proba[rows, fits], y[rows] == fits)
            ),
            units,
        ),
    }
    if train is not None:
        seen = labelled.get_column(CUSTOMER_ENTITY).is_in(list(training_customers(train)))
        seen_mask = seen.to_numpy()
        out |= fit_auc_by_customer(y, proba, seen_mask)
        for kind, mask in (("seen", seen_mask), ("unseen", ~seen_mask)):
            if f"fit_auc_{kind}" in out:
                at = np.flatnonzero(mask)
                statistics[f"fit_auc_{kind}"] = (_auc_of(y[at], proba[at]), units[at])
    fitted = labelled.filter(pl.col("fit_label") == fits)
    sizes, confusion, per_row = size_report(scorer, fitted, train)
    out |= sizes
    size_units = evaluation_units(fitted.filter(pl.col("size").is_not_null()))
    for name, (statistic, clusters) in statistics.items():
        with contextlib.suppress(ValueError):  # too few customers to resample: no interval
            interval = interval_of(statistic, clusters)
            out |= {f"{name}_ci_low": interval.low, f"{name}_ci_high": interval.high}
    for name, values in per_row.items():
        interval = mean_interval(values, size_units)
        out |= {f"{name}_ci_low": interval.low, f"{name}_ci_high": interval.high}
    return FitEvaluation(out, calibration, confusion)
