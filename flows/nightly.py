"""Flow ``nightly``: ingest, features, materialise, train, evaluate and promote, report.

Every stage is its own flow (run here as subflows), so an ML engineer can also run any one of
them by hand. Re-running a finished date skips what did not change and registers nothing new.
"""

from __future__ import annotations

from datetime import date

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from flows.artifacts import publish_mlflow_run
from flows.erase import purge_erased_models
from flows.features import build_features
from flows.ingest import ingest
from flows.materialize import materialize
from flows.promote import evaluate_and_promote
from flows.train import train
from pipeline.config import get_settings
from pipeline.data.curated import days_to_ingest
from pipeline.model.config import ModelConfig
from pipeline.registry import tracking as registry
from pipeline.report import nightly_report


def default_run_date() -> date:
    """The latest day with a raw drop or serving log (what a scheduled run processes)."""
    settings = get_settings()
    days = days_to_ingest(settings.raw_dir, settings.events_dir, date.max)
    if not days:
        raise FileNotFoundError(f"no raw drops in {settings.raw_dir} and no serving logs")
    return days[-1][0]


@task(retries=2, retry_delay_seconds=[2, 10])
def publish_report(run_date: date, materialized: dict[str, str], result: dict) -> str:
    """The run's report as a Prefect artifact and on the candidate's MLflow run."""
    settings = get_settings()
    text = nightly_report(
        settings.curated_dir,
        settings.features_dir,
        run_date,
        materialized,
        result.get("metrics", {}),
        result,
    )
    create_markdown_artifact(
        key=f"nightly-report-{run_date.isoformat()}", markdown=text, description="fitrec nightly"
    )
    if result.get("run_id"):
        registry.log_report(settings, result["run_id"], text)
    return text


@flow(name="nightly")
def nightly(run_date: date | None = None, cfg: ModelConfig | None = None) -> dict:
    run_date = run_date or default_run_date()
    ingest(run_date)
    build_features(run_date)
    materialized = materialize()
    candidate = train(run_date, cfg)
    result = evaluate_and_promote(candidate)
    # Erased customers: versions still holding them go once a later model is champion.
    purge_erased_models()
    publish_report(run_date, materialized, result)
    publish_mlflow_run("nightly", result["run_id"], result["version"])
    get_run_logger().info("nightly %s done: %s", run_date, result["reason"])
    return result
