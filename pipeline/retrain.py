"""One retraining: train a candidate, evaluate it and the champion on the same test set."""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from pipeline import registry
from pipeline.config import Settings
from pipeline.evaluate import evaluate, model_ranks, recall_at
from pipeline.model import ModelConfig
from pipeline.scoring import Scorer
from pipeline.train import build_dataset, export_bundle, fit

log = logging.getLogger(__name__)


@dataclass
class Candidate:
    bundle: Path
    metrics: dict[str, float]
    params: dict[str, object]
    example_items: list[str]
    customer_features: list[str]


def train_candidate(settings: Settings, run_date: date, cfg: ModelConfig, out: Path) -> Candidate:
    """Train on everything before ``run_date``, evaluate on ``run_date``, export the bundle."""
    data = build_dataset(settings.curated_dir, settings.features_dir, run_date, cfg)
    model, losses = fit(data, cfg)
    bundle = export_bundle(model, data, cfg, out / "bundle")
    scorer = Scorer(bundle)
    metrics = evaluate(scorer, data.train, data.test)
    metrics["final_loss"] = losses[-1]
    test_path = out / "test.parquet"
    data.test.write_parquet(test_path)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    params = {**cfg.as_params(), "run_date": run_date.isoformat(), "items": len(data.items)}
    example_items = scorer.popular[:3] or scorer.item_ids[:3].tolist()
    return Candidate(
        bundle=bundle,
        metrics=metrics,
        params=params,
        example_items=example_items,
        customer_features=scorer.customer_features,
    )


def champion_metric(settings: Settings, test_path: Path) -> tuple[str | None, float | None]:
    """The current champion's gate metric on this run's test set (None without a champion)."""
    import polars as pl

    client = registry.configure(settings)
    version = registry.champion_version(client, settings.model_name)
    if version is None:
        return None, None
    with tempfile.TemporaryDirectory() as tmp:
        scorer = Scorer(registry.download_bundle(settings, version, Path(tmp)))
        test = pl.read_parquet(test_path)
        known = test.filter(pl.col("item_id").is_in(list(scorer.item_index)))
        ranks = model_ranks(scorer, known)
    # Targets the old champion has never heard of count as misses.
    hits = recall_at(ranks)[settings.promotion_metric] * len(ranks)
    return version, hits / max(len(test), 1)
