"""An experiment's MLflow run: one per experiment version, updated by every analysis.

The run lives in the MLflow experiment ``<FITREC_EXPERIMENT_NAME>-online`` (apart from the
training runs), is named ``experiment <name>`` and tagged ``fitrec.experiment``,
``fitrec.experiment_version`` and ``fitrec.verdict``. Each analysis logs the cumulative lift
of the primary metric and its always-valid interval per day as metric steps (step = days
since the start, so MLflow's chart is the cumulative-lift plot), the latest value of every
metric per arm, and replaces the artifacts: ``report.md``, ``analysis.json`` and
``cumulative_lift.png``.
"""

from __future__ import annotations

import json
import tempfile
from datetime import UTC, datetime, time
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric as MlflowMetric

from pipeline.config import Settings
from pipeline.registry.tracking import configure

__all__ = ["log_analysis", "online_experiment"]


def online_experiment(settings: Settings) -> str:
    """The MLflow experiment of online experiments (created on first use)."""
    return f"{settings.experiment_name}-online"


def _run_id(client: MlflowClient, experiment_id: str, name: str, version: str) -> str:
    runs = client.search_runs(
        [experiment_id],
        f"tags.`fitrec.experiment` = '{name}' and tags.`fitrec.experiment_version` = '{version}'",
        max_results=1,
    )
    if runs:
        return runs[0].info.run_id
    run = client.create_run(
        experiment_id,
        run_name=f"experiment {name}",
        tags={"fitrec.experiment": name, "fitrec.experiment_version": version},
    )
    return run.info.run_id


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in name)


def log_analysis(settings: Settings, analysis: Any, experiment: Any) -> str:
    """Log ``analysis`` (:class:`pipeline.experiments.analysis.Analysis`) of ``experiment``
    on the experiment's run; returns the run id."""
    client = configure(settings)
    name = online_experiment(settings)
    found = client.get_experiment_by_name(name)
    experiment_id = (
        found.experiment_id
        if found is not None
        else client.create_experiment(name, artifact_location=settings.artifact_root)
    )
    run_id = _run_id(client, experiment_id, experiment.name, experiment.version)
    logged = client.get_run(run_id).data.params
    params = {
        "mode": experiment.mode,
        "unit": experiment.unit,
        "primary_metric": experiment.primary_metric,
        "minimum_detectable_effect": str(experiment.minimum_detectable_effect),
        "alpha": str(experiment.alpha),
        **{
            f"variant.{v.name}": f"{'holdout' if v.holdout else v.model}:{v.share:g}"
            for v in experiment.variants
        },
    }
    for key, value in params.items():
        if key not in logged:
            client.log_param(run_id, key, value)
    start = experiment.start.date()
    series = []
    for row in analysis.cumulative.iter_rows(named=True):
        step = (row["day"] - start).days
        stamp = int(datetime.combine(row["day"], time(), UTC).timestamp() * 1000)
        for field in ("relative", "relative_low", "relative_high"):
            value = row[field]
            if value is None or value != value:  # NaN: nothing to chart that day
                continue
            key = _safe(f"{row['variant']}.lift_{field.removeprefix('relative').lstrip('_')}")
            series.append(MlflowMetric(key.rstrip("_"), float(value), stamp, step))
    history_steps: dict[str, set[int]] = {}
    for metric in {m.key for m in series}:
        history_steps[metric] = {h.step for h in client.get_metric_history(run_id, metric)}
    fresh = [m for m in series if m.step not in history_steps.get(m.key, set())]
    for i in range(0, len(fresh), 500):
        client.log_batch(run_id, metrics=fresh[i : i + 500])
    latest = []
    for difference in analysis.metrics:
        for field in ("relative", "relative_low", "relative_high", "p_value"):
            value = getattr(difference, field)
            if value == value and abs(value) != float("inf"):
                latest.append(
                    MlflowMetric(
                        _safe(f"{difference.treatment}.{difference.metric}.{field}"),
                        float(value),
                        0,
                        0,
                    )
                )
    for i in range(0, len(latest), 500):
        client.log_batch(run_id, metrics=latest[i : i + 500])
    client.set_tag(run_id, "fitrec.verdict", analysis.verdict)
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        (out / "report.md").write_text(analysis.to_markdown(), encoding="utf-8")
        (out / "analysis.json").write_text(
            json.dumps(analysis.as_dict(), indent=2, default=str), encoding="utf-8"
        )
        analysis.plot(out / "cumulative_lift.png")
        client.log_artifacts(run_id, str(out))
    mlflow.set_experiment(settings.experiment_name)  # back to the training runs' experiment
    return run_id
