"""One model candidate: train it, export its serving bundle, load that back and evaluate it.

Retraining (:func:`pipeline.registry.retrain.train_candidate`) and the public benchmarks
(:func:`pipeline.evaluation.public.run`) run exactly this sequence on their own datasets, so a
benchmark number describes the model a nightly retrain would register. Nothing here needs
MLflow.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.evaluation.evaluate import Evaluation, evaluate
from pipeline.model.bundle import export_bundle
from pipeline.model.config import ModelConfig
from pipeline.model.examples import Dataset
from pipeline.model.scoring import Scorer
from pipeline.model.towers import RecommenderModel
from pipeline.model.training import fit


@dataclass
class TrainedCandidate:
    """A trained model, its exported bundle, the bundle's scorer and their evaluation."""

    model: RecommenderModel
    losses: dict[str, list[float]]
    bundle: Path
    scorer: Scorer
    evaluation: Evaluation


def train_and_evaluate_candidate(
    data: Dataset, cfg: ModelConfig, bundle_dir: Path, baselines: list | None = None
) -> TrainedCandidate:
    """Train on ``data.train``, export to ``bundle_dir``, evaluate on ``data.test``.

    The evaluation scores the exported bundle, not the in-memory model, so it measures what
    serving will load.

    Args:
        data: Training and test examples and the item table.
        cfg: Model hyper-parameters.
        bundle_dir: Where the serving bundle is written.
        baselines: Unfitted baselines to evaluate on the same test examples (None: every
            baseline with default settings).

    Returns:
        The model, its per-epoch losses, the bundle path, its scorer and the evaluation.
    """
    model, losses = fit(data, cfg)
    bundle = export_bundle(model, data, cfg, bundle_dir)
    scorer = Scorer(bundle)
    evaluation = evaluate(scorer, data, baselines)
    return TrainedCandidate(model, losses, bundle, scorer, evaluation)
