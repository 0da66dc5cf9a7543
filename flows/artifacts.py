"""Prefect artifacts of the training flows: a link to the MLflow run and tables of metrics.

Keys name the flow that made them (``<flow>-mlflow-run``, ``<flow>-metrics``), so the
Artifacts page keeps one history per flow; each flow run's page shows its own.
"""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_link_artifact, create_table_artifact

from pipeline.config import get_settings
from pipeline.registry.links import run_link


def metric_rows(metrics: dict[str, float]) -> list[dict[str, object]]:
    return [{"metric": name, "value": metrics[name]} for name in sorted(metrics)]


@task
def publish_metrics(key: str, metrics: dict[str, float], description: str) -> None:
    create_table_artifact(key=key, table=metric_rows(metrics), description=description)


@task(retries=2, retry_delay_seconds=[2, 10])
def publish_mlflow_run(flow: str, run_id: str, version: str | None = None) -> str:
    """Link the MLflow run and table the metrics MLflow holds for it; returns the address."""
    link = run_link(get_settings(), run_id)
    model = f", model version {version}" if version else ""
    create_link_artifact(
        key=f"{flow}-mlflow-run",
        link=link.url,
        link_text=f"MLflow run {run_id}",
        description=f"The candidate's MLflow run{model}. {link.how_to_open}",
    )
    create_table_artifact(
        key=f"{flow}-metrics",
        table=metric_rows(link.metrics),
        description=f"Metrics of MLflow run {run_id}{model}, as MLflow holds them.",
    )
    return link.url
