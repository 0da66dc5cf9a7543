"""What a candidate's MLflow run records so that a user can read it.

One run per candidate, named by what and when (``train 2026-11-01 (nightly)``): the training
history as metric steps (one per epoch), the datasets it read as inputs (Parquet files on
disk, each with its path, a content digest, its schema and row count, never values), tags
for the git commit, the Prefect flow run, the Feast feature service and the data date, the
model's test metrics under plain names with their 95% intervals (``_ci_low``, ``_ci_high``)
and how they compare with the best baseline (``model_vs_best_<metric>_diff``) and the
champion. Each baseline is a child run (``baseline popularity 2026-11-01``) with its own
metrics under the same plain names, so MLflow's charts put the model and its baselines side
by side.
"""

from __future__ import annotations

import hashlib
import subprocess
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import polars as pl
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset
from mlflow.data.polars_dataset import infer_schema
from mlflow.entities import Metric

# The tag Feast's MLflow integration reads to link a run to the features it was trained on.
FEAST_FEATURE_SERVICE_TAG = "feast.feature_service"
GIT_COMMIT_TAG = "mlflow.source.git.commit"
DATA_DATE_TAG = "fitrec.data_date"
TRAIN_WINDOW_TAG = "fitrec.train_window"
BASELINE_TAG = "fitrec.baseline"
BEST_BASELINE_TAG = "fitrec.best_baseline"
MODEL = "model"
COMPARISON_PREFIX = "model_vs_"  # the model against a baseline: kept whole on the run


@dataclass
class DatasetRef:
    """A Parquet file a candidate read, as logged to MLflow (no values)."""

    name: str
    path: str
    context: str  # train | validation | test
    digest: str
    rows: int


@dataclass
class RunInputs:
    """What a candidate's run logs besides params and the model: history, datasets, baselines."""

    run_date: str
    train_window: str
    feature_service: str
    history: dict[str, list[float]] = field(default_factory=dict)
    epoch_end_ms: list[float] = field(default_factory=list)
    baselines: dict[str, dict[str, float]] = field(default_factory=dict)
    datasets: list[DatasetRef] = field(default_factory=list)
    git_commit: str | None = None  # of the code that trained, not the one that registers


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes, 16 hex digits (MLflow's dataset digest)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def dataset_ref(path: Path, name: str, context: str) -> DatasetRef:
    """Describe a Parquet file: digest of its bytes, row count from its metadata."""
    rows = int(pl.scan_parquet(path).select(pl.len()).collect().item())
    return DatasetRef(name, str(path.resolve()), context, file_digest(path), rows)


class ParquetDataset(MetaDataset):
    """A Parquet file on disk as an MLflow dataset: source path, digest, schema and row count.

    MLflow's own file datasets read the whole frame; this one reads only the file's schema
    and metadata, and logs no values.
    """

    def __init__(self, ref: DatasetRef):
        schema = infer_schema(pl.DataFrame(schema=pl.read_parquet_schema(ref.path)))
        self._rows = ref.rows
        with warnings.catch_warnings():
            # Local paths match the two schemes ("" and "file") of one source class.
            warnings.filterwarnings("ignore", "The specified dataset source", UserWarning)
            source = resolve_dataset_source(ref.path)
        super().__init__(source=source, name=ref.name, digest=ref.digest, schema=schema)

    @property
    def profile(self) -> dict[str, int]:
        """Row and column counts only."""
        width = len(self.schema.inputs) if self.schema else 0
        return {"num_rows": self._rows, "num_elements": self._rows * width}

    def to_dict(self) -> dict[str, str]:
        """MetaDataset's config with the profile."""
        import json

        return {**super().to_dict(), "profile": json.dumps(self.profile)}


def run_name(kind: str, run_date: str, trigger: str | None = None) -> str:
    """``train 2026-11-01 (nightly)``: what, for which data date, started by what."""
    return f"{kind} {run_date}" + (f" ({trigger})" if trigger else "")


def git_commit(start: Path | None = None) -> str | None:
    """The commit of the checkout holding fitrec's code, or None (an installed wheel, no git)."""
    where = start or Path(__file__).resolve().parent
    try:
        done = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and len(commit) == 40 else None


def candidate_tags(inputs: RunInputs, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Tags of a candidate's run: git commit (when known), feature service, data date and
    training window."""
    tags = {
        FEAST_FEATURE_SERVICE_TAG: inputs.feature_service,
        DATA_DATE_TAG: inputs.run_date,
        TRAIN_WINDOW_TAG: inputs.train_window,
    }
    if inputs.git_commit:
        tags[GIT_COMMIT_TAG] = inputs.git_commit
    return tags | (extra or {})


def parent_metrics(
    flat: dict[str, float], baselines: dict[str, dict[str, float]]
) -> dict[str, float]:
    """The run's own metrics from the flat ``<method>_<metric>`` dict: the model's under plain
    names (its comparisons, ``model_vs_...``, as they are), the baselines' left to their child
    runs, the last loss left to the history."""
    theirs = {f"{name}_{key}" for name, values in baselines.items() for key in values}
    out: dict[str, float] = {}
    for key, value in flat.items():
        if key in theirs or key == "final_loss":
            continue
        out[key if key.startswith(COMPARISON_PREFIX) else key.removeprefix(f"{MODEL}_")] = value
    return out


def best_baseline(baselines: dict[str, dict[str, float]], metric: str) -> tuple[str, float] | None:
    """The baseline with the highest ``metric`` (ties: the first name in order)."""
    scored = [(name, v[metric]) for name, v in sorted(baselines.items()) if metric in v]
    if not scored:
        return None
    return max(scored, key=lambda pair: pair[1])


def history_metrics(history: dict[str, list[float]], ends_ms: list[float]) -> list[Metric]:
    """Per-epoch values as MLflow metric steps (step = epoch, from 0), stamped with each
    epoch's end time when known."""
    out = []
    for key, values in sorted(history.items()):
        for step, value in enumerate(values):
            stamp = int(ends_ms[step]) if step < len(ends_ms) else 0
            out.append(Metric(key, float(value), stamp, step))
    return out


def log_candidate(inputs: RunInputs, flat: dict[str, float], gate_metric: str) -> None:
    """Inside the active run: history, the model's metrics, the comparison, the datasets and
    one child run per baseline."""
    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("log_candidate needs an active MLflow run")
    client = mlflow.MlflowClient()
    steps = history_metrics(inputs.history, inputs.epoch_end_ms)
    for start in range(0, len(steps), 1000):  # MLflow's batch limit
        client.log_batch(run.info.run_id, metrics=steps[start : start + 1000])
    own = parent_metrics(flat, inputs.baselines)
    best = best_baseline(inputs.baselines, gate_metric)
    if best is not None:
        own[f"best_baseline_{gate_metric}"] = best[1]
        mlflow.set_tag(BEST_BASELINE_TAG, best[0])
    mlflow.log_metrics(own)
    datasets = [ParquetDataset(ref) for ref in inputs.datasets]
    contexts: list[str | None] = [ref.context for ref in inputs.datasets]
    mlflow.log_inputs(list(datasets), contexts, [None] * len(datasets))
    test = [d for d, ref in zip(datasets, inputs.datasets, strict=True) if ref.context == "test"]
    for name, values in sorted(inputs.baselines.items()):
        tags = {BASELINE_TAG: name, DATA_DATE_TAG: inputs.run_date}
        with mlflow.start_run(
            run_name=run_name(f"baseline {name}", inputs.run_date), nested=True, tags=tags
        ):
            mlflow.log_metrics(values)
            if test:
                mlflow.log_inputs(list(test), ["test"] * len(test), [None] * len(test))


def baseline_runs(client: mlflow.MlflowClient, run_id: str) -> dict[str, dict[str, float]]:
    """The child runs of a candidate's run: baseline name -> its metrics."""
    run = client.get_run(run_id)
    children = client.search_runs(
        [run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run_id}'"
    )
    return {
        child.data.tags[BASELINE_TAG]: dict(child.data.metrics)
        for child in children
        if BASELINE_TAG in child.data.tags
    }
