"""A candidate's MLflow run as a user reads it: steps, inputs, tags, baselines as child runs
(logged into a real MLflow tracking store on SQLite)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import mlflow
import polars as pl
import pytest

from pipeline.config import Settings
from pipeline.registry import runs
from pipeline.registry import tracking as registry

pytestmark = pytest.mark.unit


def test_run_name_says_what_and_when():
    assert runs.run_name("train", "2026-11-01", "nightly") == "train 2026-11-01 (nightly)"
    assert runs.run_name("evaluate", "2026-11-01") == "evaluate 2026-11-01"


def test_parent_metrics_keep_the_models_under_plain_names():
    flat = {
        "model_recall_at_20": 0.5,
        "model_recall_at_20_ci_low": 0.45,
        "model_vs_best_recall_at_20_diff": 0.2,
        "model_fit_auc": 0.7,
        "model_fit_auc_ci_low": 0.6,
        "popularity_recall_at_20": 0.1,
        "popularity_recall_at_20_ci_low": 0.05,
        "popularity_test_examples": 9.0,
        "session_knn_recall_at_20": 0.3,
        "final_loss": 1.5,
        "train_seconds": 3.0,
        "champion_recall_at_20": 0.4,
    }
    baselines = {
        "popularity": {"recall_at_20": 0.1, "recall_at_20_ci_low": 0.05, "test_examples": 9.0},
        "session_knn": {"recall_at_20": 0.3},
    }
    assert runs.parent_metrics(flat, baselines) == {
        "recall_at_20": 0.5,
        "recall_at_20_ci_low": 0.45,
        "model_vs_best_recall_at_20_diff": 0.2,  # a comparison keeps its whole name
        "fit_auc": 0.7,
        "fit_auc_ci_low": 0.6,
        "train_seconds": 3.0,
        "champion_recall_at_20": 0.4,
    }
    assert runs.best_baseline(baselines, "recall_at_20") == ("session_knn", 0.3)
    assert runs.best_baseline(baselines, "mrr_at_20") is None


def test_history_is_one_step_per_epoch_stamped_with_epoch_ends():
    steps = runs.history_metrics({"loss": [3.0, 2.0], "val_loss": [3.5, 2.5]}, [1000.0, 2000.0])
    assert [(m.key, m.step, m.value, m.timestamp) for m in steps] == [
        ("loss", 0, 3.0, 1000),
        ("loss", 1, 2.0, 2000),
        ("val_loss", 0, 3.5, 1000),
        ("val_loss", 1, 2.5, 2000),
    ]


def test_git_commit_of_a_checkout_and_none_outside(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "x"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
    assert runs.git_commit(repo) == head.stdout.strip()
    outside = tmp_path / "plain"
    outside.mkdir()
    assert runs.git_commit(outside) is None


def test_dataset_digest_follows_the_bytes(tmp_path):
    path = tmp_path / "a.parquet"
    pl.DataFrame({"x": [1, 2, 3]}).write_parquet(path)
    first = runs.dataset_ref(path, "a", "train")
    assert first.rows == 3 and len(first.digest) == 16
    pl.DataFrame({"x": [1, 2, 4]}).write_parquet(path)
    assert runs.dataset_ref(path, "a", "train").digest != first.digest


def _inputs(tmp_path: Path) -> tuple[runs.RunInputs, list[str]]:
    secrets = ["pseudo-c0ffee", "pseudo-beef42"]
    frame = pl.DataFrame({"customer_id": secrets, "height_z": [0.25, -0.5], "item_id": ["a", "b"]})
    refs = []
    for context in ("train", "validation", "test"):
        path = tmp_path / f"{context}.parquet"
        frame.write_parquet(path)
        refs.append(runs.dataset_ref(path, f"{context} examples", context))
    inputs = runs.RunInputs(
        run_date="2026-11-01",
        train_window="2026-10-18/2026-10-31",
        feature_service="recommender_v2",
        history={"loss": [3.0, 2.0, 1.5], "val_retrieval_loss": [3.1, 2.2, 2.0]},
        epoch_end_ms=[1_000.0, 2_000.0, 3_000.0],
        baselines={
            "popularity": {"recall_at_20": 0.1, "recall_at_20_ci_high": 0.12, "mrr_at_20": 0.05},
            "session_knn": {"recall_at_20": 0.3, "recall_at_20_ci_high": 0.33, "mrr_at_20": 0.2},
        },
        datasets=refs,
        git_commit=runs.git_commit(),
    )
    return inputs, secrets


def test_candidate_run_reads_back_with_steps_inputs_tags_and_child_runs(tmp_path):
    settings = Settings(data_dir=tmp_path / "var")
    client = registry.configure(settings)
    inputs, secrets = _inputs(tmp_path)
    flat = {
        "model_recall_at_20": 0.5,
        "model_recall_at_20_ci_high": 0.55,
        "model_mrr_at_20": 0.25,
        "model_vs_best_recall_at_20_diff": 0.2,
        "popularity_recall_at_20": 0.1,
        "popularity_recall_at_20_ci_high": 0.12,
        "popularity_mrr_at_20": 0.05,
        "session_knn_recall_at_20": 0.3,
        "session_knn_recall_at_20_ci_high": 0.33,
        "session_knn_mrr_at_20": 0.2,
        "model_fit_auc": 0.7,
        "model_fit_auc_ci_high": 0.8,
        "final_loss": 1.5,
    }
    name = runs.run_name("train", inputs.run_date, "nightly")
    with mlflow.start_run(run_name=name, tags=runs.candidate_tags(inputs)) as run:
        runs.log_candidate(inputs, flat, "recall_at_20")
    run_id = run.info.run_id
    got = client.get_run(run_id)

    assert got.info.run_name == "train 2026-11-01 (nightly)"
    assert got.data.tags["feast.feature_service"] == "recommender_v2"
    assert got.data.tags["fitrec.data_date"] == "2026-11-01"
    assert got.data.tags["fitrec.best_baseline"] == "session_knn"
    # Run from this checkout: the commit is the checkout's.
    assert got.data.tags["mlflow.source.git.commit"] == runs.git_commit()
    assert got.data.metrics["recall_at_20"] == 0.5
    assert got.data.metrics["best_baseline_recall_at_20"] == 0.3
    assert got.data.metrics["recall_at_20_ci_high"] == 0.55
    assert got.data.metrics["model_vs_best_recall_at_20_diff"] == 0.2
    own = [k for k in got.data.metrics if not k.startswith("model_vs_")]
    assert not any(k.startswith(("popularity_", "model_")) for k in own)
    history = client.get_metric_history(run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(0, 3.0), (1, 2.0), (2, 1.5)]

    logged = {d.dataset.name: d for d in got.inputs.dataset_inputs}
    assert set(logged) == {"train examples", "validation examples", "test examples"}
    for ref in inputs.datasets:
        entry = logged[ref.name]
        assert entry.dataset.digest == ref.digest
        assert {t.key: t.value for t in entry.tags}["mlflow.data.context"] == ref.context
        assert json.loads(entry.dataset.profile) == {"num_rows": 2, "num_elements": 6}
        assert ref.path in entry.dataset.source
        # Schema and profile only: no value of the frame reaches MLflow.
        text = json.dumps(entry.dataset.to_dictionary())
        assert "customer_id" in text and not any(s in text for s in secrets)

    children = client.search_runs(
        [got.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run_id}'"
    )
    assert sorted(c.info.run_name for c in children) == [
        "baseline popularity 2026-11-01",
        "baseline session_knn 2026-11-01",
    ]
    for child in children:
        assert child.data.metrics == inputs.baselines[child.data.tags["fitrec.baseline"]]
        contexts = [{t.key: t.value for t in d.tags} for d in child.inputs.dataset_inputs]
        assert [c["mlflow.data.context"] for c in contexts] == ["test"]
    assert runs.baseline_runs(client, run_id) == inputs.baselines

    # What the report reads back for a candidate registered before: the flat names.
    flat_back = registry.flat_metrics(client, run_id)
    assert {k: flat_back[k] for k in flat} == flat


def test_a_benchmark_logs_every_value_interval_and_paired_difference(settings):
    result = {
        "dataset": "rtr",
        "split": "time",
        "test_examples": 10,
        "rows": {"train": {"try_ons": {"file": 5, "curated": 5}}},
        "model": {
            "recall@20": {"value": 0.3, "ci_low": 0.2, "ci_high": 0.4},
            "fit_examples": 8,
            "vs_best": {
                "recall@20": {
                    "baseline": "vstan",
                    "difference": 0.05,
                    "ci_low": -0.01,
                    "ci_high": 0.1,
                    "verdict": "tied",
                }
            },
        },
        "vstan": {"recall@20": {"value": 0.25, "ci_low": 0.15, "ci_high": 0.35}},
    }
    run_id = registry.log_benchmark(settings, "rtr", result)
    logged = mlflow.MlflowClient(settings.tracking_uri).get_run(run_id).data
    assert logged.metrics == {
        "model_recall_at_20": 0.3,
        "model_recall_at_20_ci_low": 0.2,
        "model_recall_at_20_ci_high": 0.4,
        "model_fit_examples": 8.0,
        "model_vs_best_recall_at_20_difference": 0.05,
        "model_vs_best_recall_at_20_ci_low": -0.01,
        "model_vs_best_recall_at_20_ci_high": 0.1,
        "vstan_recall_at_20": 0.25,
        "vstan_recall_at_20_ci_low": 0.15,
        "vstan_recall_at_20_ci_high": 0.35,
    }
    assert logged.params["split"] == "time" and logged.params["test_examples"] == "10"
