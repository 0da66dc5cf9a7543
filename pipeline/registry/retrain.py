"""One retraining: train a candidate, evaluate it, and score it against the champion example
by example on the same test set (the promotion gate's paired difference)."""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.config import Settings
from pipeline.evaluation.artifacts import write_evaluation
from pipeline.evaluation.candidate import train_and_evaluate_candidate
from pipeline.evaluation.evaluate import evaluation_units, model_top_k
from pipeline.evaluation.significance import Interval, paired_difference
from pipeline.features.build import feature_paths
from pipeline.features.declarations import CUSTOMER_VIEW, FEATURE_SERVICE, ITEM_ENTITY, ITEM_VIEW
from pipeline.model.config import ModelConfig
from pipeline.model.examples import build_dataset
from pipeline.model.metrics import per_query_metrics
from pipeline.model.scoring import Scorer
from pipeline.model.training import SUMMARY_KEYS, validation_split
from pipeline.progress import timed
from pipeline.registry import tracking as registry
from pipeline.registry.runs import RunInputs, dataset_ref, git_commit

log = logging.getLogger(__name__)


@dataclass
class Candidate:
    bundle: Path
    metrics: dict[str, float]
    params: dict[str, object]
    example_items: list[str]
    customer_features: list[str]
    artifacts: list[Path] = field(default_factory=list)
    # What the MLflow run shows besides params and metrics (None in candidates cached before).
    run: RunInputs | None = None


def train_candidate(
    settings: Settings, run_date: date, cfg: ModelConfig, out: Path, baselines: list | None = None
) -> Candidate:
    """Train on everything before ``run_date``, evaluate on ``run_date``, export the bundle."""
    data = build_dataset(settings.curated_dir, settings.features_dir, run_date, cfg.session_len)
    note = f"{data.train.height} examples, up to {cfg.epochs} epochs"
    with timed(f"training and evaluating a candidate for {run_date}", note) as done:
        trained = train_and_evaluate_candidate(data, cfg, out / "bundle", baselines)
        done["epochs"] = int(trained.losses["epochs"][0])
    losses, scorer, evaluation = trained.losses, trained.scorer, trained.evaluation
    metrics = evaluation.flat()
    metrics |= {
        "final_loss": losses["loss"][-1],
        "examples_per_s": losses["examples_per_s"][0],
        "train_seconds": losses["train_seconds"][0],
        "epochs": losses["epochs"][0],
        "stopped_by_time_budget": losses["stopped_by_time_budget"][0],
        "train_examples": float(data.train.height),
        "test_examples": float(data.test.height),
    }
    data.test.write_parquet(out / "test.parquet")
    run = run_inputs(settings, run_date, data.train, cfg.validation_share, out, trained.losses)
    run.baselines = {m: v for m, v in evaluation.by_method().items() if m != "model"}
    table = out / "evaluation_by_segment.csv"
    evaluation.segments.write_csv(table)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    # Figures and the tables behind them, read back by notebooks/model_report.ipynb.
    artifacts = [table, out / "metrics.json", *write_evaluation(evaluation, out / "evaluation")]
    params = {
        **cfg.as_params(),
        "run_date": run_date.isoformat(),
        "items": data.items.height,
        "feature_service": FEATURE_SERVICE,
        "full_softmax": trained.model.full,
    }
    return Candidate(
        bundle=trained.bundle,
        metrics=metrics,
        params=params,
        example_items=scorer.popular[:3] or scorer.item_ids[:3].tolist(),
        customer_features=scorer.customer_features,
        artifacts=artifacts,
        run=run,
    )


def run_inputs(
    settings: Settings,
    run_date: date,
    train: pl.DataFrame,
    validation_share: float,
    out: Path,
    losses: dict[str, list[float]],
) -> RunInputs:
    """The training history and the datasets a candidate read, for its MLflow run.

    The training examples are written next to the test set (``examples/``) in the same split
    :func:`pipeline.model.training.fit` made, so each logged dataset is a file a user can open.
    """
    fit_part, valid = validation_split(train, validation_share)
    (out / "examples").mkdir(parents=True, exist_ok=True)
    fit_part.write_parquet(out / "examples" / "train.parquet")
    refs = [dataset_ref(out / "examples" / "train.parquet", "training examples", "train")]
    if not valid.is_empty():
        valid.write_parquet(out / "examples" / "validation.parquet")
        path = out / "examples" / "validation.parquet"
        refs.append(dataset_ref(path, "validation examples", "validation"))
    refs.append(dataset_ref(out / "test.parquet", "test examples", "test"))
    paths = feature_paths(settings.features_dir)
    refs += [dataset_ref(paths[view], view, "train") for view in (CUSTOMER_VIEW, ITEM_VIEW)]
    days = train.get_column("session_start").dt.date()
    return RunInputs(
        run_date=run_date.isoformat(),
        train_window=f"{days.min()!s}/{days.max()!s}",
        feature_service=FEATURE_SERVICE,
        history={k: v for k, v in losses.items() if k not in SUMMARY_KEYS},
        epoch_end_ms=losses.get("epoch_end_ms", []),
        datasets=refs,
        git_commit=git_commit(),
    )


def per_example_scores(bundle: Path, test: pl.DataFrame, metric: str) -> np.ndarray:
    """A bundle's gate metric for each test example, in the test set's order.

    Args:
        bundle: a serving bundle (the candidate's, or the champion's downloaded).
        test: test examples.
        metric: gate metric in MLflow spelling (``recall_at_20``).

    Returns:
        ``(test.height,)`` values; a target the bundle has never heard of is a miss (0).
    """
    scorer = Scorer(bundle)
    known = test.get_column(ITEM_ENTITY).is_in(list(scorer.item_index)).to_numpy()
    out = np.zeros(test.height)
    if known.any():
        rows = test.filter(pl.Series(known))
        targets = np.array([scorer.item_index[i] for i in rows.get_column(ITEM_ENTITY)])
        values = per_query_metrics(model_top_k(scorer, rows), targets)
        out[known] = values[metric.replace("_at_", "@")]
    return out


def score_bundle(bundle: Path, test: pl.DataFrame, metric: str) -> float:
    """A bundle's gate metric on a test set; targets it has never heard of count as misses."""
    return float(per_example_scores(bundle, test, metric).mean()) if test.height else 0.0


@dataclass
class Gate:
    """What the promotion gate compares: the candidate and the champion on the same rows."""

    champion_version: str | None
    champion_value: float | None  # the champion's gate metric on the candidate's test set
    difference: Interval | None  # candidate minus champion, paired, clustered 95% interval
    note: str


def champion_gate(settings: Settings, candidate_bundle: Path, test_path: Path) -> Gate:
    """Score the champion and the candidate on the candidate's test set, example by example,
    and bootstrap their paired difference on the gate metric over test units (customers,
    else sessions).

    Args:
        settings: where the registry is and which metric gates.
        candidate_bundle: the candidate's serving bundle.
        test_path: the candidate's ``test.parquet``.

    Returns:
        No champion: a gate without a difference. A champion that cannot score these
        examples (an older feature schema): its version, no difference, and a note saying so.
    """
    client = registry.configure(settings)
    version = registry.champion_version(client, settings.model_name)
    if version is None:
        return Gate(None, None, None, "")
    metric = settings.promotion_metric
    test = pl.read_parquet(test_path)
    with tempfile.TemporaryDirectory() as tmp:
        bundle = registry.download_bundle(settings, version, Path(tmp))
        try:
            champion = per_example_scores(bundle, test, metric)
        except (KeyError, ValueError, TypeError) as exc:
            # A champion from an older feature schema cannot score today's examples.
            log.warning("champion %s cannot be scored on this test set: %s", version, exc)
            note = f"champion {version} incompatible with this test set ({exc})"
            return Gate(version, None, None, note)
    candidate = per_example_scores(candidate_bundle, test, metric)
    units = evaluation_units(test)
    difference = paired_difference(candidate, champion, units)
    note = f"paired on {test.height} test examples of {len(set(units))} customers or sessions"
    return Gate(version, float(champion.mean()), difference, note)
