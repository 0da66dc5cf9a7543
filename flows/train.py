"""Flow ``train``: train a candidate, evaluate it against the champion, register, promote."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from prefect import flow, get_run_logger, task

from pipeline import registry
from pipeline.config import get_settings
from pipeline.model import ModelConfig
from pipeline.retrain import Candidate, champion_metric, train_candidate


@task(timeout_seconds=3600)
def train_and_evaluate(run_date: date, cfg: ModelConfig, out: Path) -> Candidate:
    return train_candidate(get_settings(), run_date, cfg, out)


@task(retries=2, retry_delay_seconds=[2, 10])
def score_champion(test_path: Path) -> tuple[str | None, float | None, str]:
    return champion_metric(get_settings(), test_path)


@task(retries=2, retry_delay_seconds=[2, 10])
def register(
    candidate: Candidate, champion: float | None, champion_version: str | None, note: str
) -> dict:
    settings = get_settings()
    metrics = dict(candidate.metrics)
    if champion is not None:
        metrics[f"champion_{settings.promotion_metric}"] = champion
    registered = registry.log_and_register(
        settings,
        candidate.bundle,
        {**candidate.params, "champion_version": champion_version or "none"},
        metrics,
        candidate.customer_features,
        candidate.example_items,
        candidate.artifacts,
    )
    decision = registry.promote_if_better(
        settings,
        registered,
        candidate.metrics[f"model_{settings.promotion_metric}"],
        champion,
        note,
    )
    return {
        "version": registered.version,
        "run_id": registered.run_id,
        "promoted": decision.promoted,
        "reason": decision.reason,
        "metrics": candidate.metrics,
    }


@flow(name="train")
def train(run_date: date, cfg: ModelConfig | None = None) -> dict:
    """Train on data before ``run_date``, test on ``run_date``; champion only if not worse."""
    settings = get_settings()
    out = settings.data_dir / "training" / run_date.isoformat()
    candidate = train_and_evaluate(run_date, cfg or ModelConfig(), out)
    champion_version, champion, note = score_champion(out / "test.parquet")
    result = register(candidate, champion, champion_version, note)
    get_run_logger().info(
        "version %s %s: %s",
        result["version"],
        "promoted" if result["promoted"] else "not promoted",
        result["reason"],
    )
    return result
