"""Flow ``train``: train a candidate on data before the run date, evaluate it on the run date
against the baselines. Training is never retried; a finished date is served from cache."""

from __future__ import annotations

import hashlib
import json
from datetime import date

from prefect import flow, task
from prefect.context import TaskRunContext

from flows.artifacts import publish_metrics
from pipeline.config import get_settings
from pipeline.model.config import ModelConfig
from pipeline.registry.retrain import Candidate, train_candidate
from pipeline.report import data_fingerprint


def candidate_key(run_date: date, cfg: ModelConfig) -> str:
    settings = get_settings()
    data = data_fingerprint(settings.curated_dir, settings.features_dir, run_date)
    config = hashlib.sha256(json.dumps(cfg.as_params(), sort_keys=True).encode()).hexdigest()
    return f"train-{run_date}-{data}-{config[:16]}"


def _train_key(context: TaskRunContext, parameters: dict) -> str:
    return candidate_key(parameters["run_date"], parameters["cfg"])


@task(cache_key_fn=_train_key, persist_result=True, timeout_seconds=3 * 3600)
def train_and_evaluate(run_date: date, cfg: ModelConfig) -> Candidate:
    settings = get_settings()
    out = settings.data_dir / "training" / run_date.isoformat()
    candidate = train_candidate(settings, run_date, cfg, out)
    candidate.params["candidate_key"] = candidate_key(run_date, cfg)
    return candidate


@flow(name="train")
def train(run_date: date, cfg: ModelConfig | None = None) -> Candidate:
    """Train on data before ``run_date`` and evaluate on ``run_date``."""
    candidate = train_and_evaluate(run_date, cfg or ModelConfig())
    # Not yet in MLflow: evaluate_and_promote registers it (and links its run).
    publish_metrics(
        "train-metrics", candidate.metrics, f"Candidate for {run_date}, before registration."
    )
    return candidate
