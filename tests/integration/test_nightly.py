"""The whole nightly flow through real Prefect, Feast (SQLite and a real Redis), MLflow."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

import polars as pl
import pytest
from mlflow import MlflowClient

from pipeline.config import CHAMPION
from pipeline.data.curated import drops_up_to
from pipeline.features import store
from pipeline.features.build import feature_paths
from pipeline.features.declarations import (
    CUSTOMER_FEATURES,
    FEATURE_SERVICE,
    SESSION_FEATURES,
    TIMESTAMP,
)
from pipeline.model.config import ModelConfig
from pipeline.registry.runs import baseline_runs, file_digest, git_commit
from serving import NoChampionError, RecommendationRequest, Recommender
from tests.conftest import Environment

FAST = ModelConfig(epochs=3, embedding_dim=16)
NIGHTLY_FLOW_RUNS: dict[str, object] = {}  # online store -> the fixture's Prefect flow run id


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def nightly_run(request, raw_drops, prefect_harness, tmp_path_factory):
    """Run the nightly flow once per online store; yields (settings, result, run_date)."""
    redis_url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    data_dir = tmp_path_factory.mktemp(f"nightly-{request.param}")
    with Environment(data_dir, redis_url) as settings:
        shutil.copytree(raw_drops, settings.raw_dir)
        run_date = drops_up_to(settings.raw_dir, date.max)[-1][0]
        from flows.nightly import nightly

        state = nightly(run_date, FAST, return_state=True)
        NIGHTLY_FLOW_RUNS[request.param] = state.state_details.flow_run_id
        result = state.result()
        yield settings, result, run_date


def test_nightly_registers_a_champion_with_metrics(nightly_run):
    settings, result, _ = nightly_run
    assert result["promoted"] and result["reason"] == "no champion yet"
    client = MlflowClient(settings.tracking_uri, settings.tracking_uri)
    champion = client.get_model_version_by_alias(settings.model_name, CHAMPION)
    assert str(champion.version) == result["version"]
    run = client.get_run(champion.run_id)
    popularity = baseline_runs(client, champion.run_id)["popularity"]
    for values in (run.data.metrics, popularity):
        for key in ("recall_at_20", "recall_at_10"):
            assert 0.0 <= values[key] <= 1.0
    assert run.data.params["embedding_dim"] == "16"
    # The model learnt the planted session structure: far better than popularity.
    assert run.data.metrics["recall_at_20"] > popularity["recall_at_20"]


def test_nightly_links_its_mlflow_run_and_tables_its_metrics(nightly_run):
    """The nightly flow run's artifacts, read back from Prefect: a link to the candidate's
    MLflow run (the `mlflow ui` address for this SQLite store) and its metrics."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterParentFlowRunId,
    )

    settings, result, run_date = nightly_run
    flow_run = NIGHTLY_FLOW_RUNS[settings.online_store]
    with get_client(sync_client=True) as prefect:
        found = prefect.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run]))
        )
        # The subflows' own: the candidate's metrics (train) and the same link (promote).
        children = FlowRunFilterParentFlowRunId(any_=[flow_run])
        subflows = prefect.read_artifacts(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=children)
        )
    artifacts = {a.key: a for a in found}
    by_subflow = {a.key: a for a in subflows}
    run = MlflowClient(settings.tracking_uri).get_run(result["run_id"])
    url = f"http://127.0.0.1:5000/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
    assert artifacts["nightly-mlflow-run"].data == f"[MLflow run {run.info.run_id}]({url})"
    table = json.loads(artifacts["nightly-metrics"].data)
    logged = {k: None if math.isnan(v) else v for k, v in run.data.metrics.items()}
    assert {row["metric"]: row["value"] for row in table} == logged
    assert logged["recall_at_20"] is not None  # the model's; baselines are child runs
    assert by_subflow["promote-mlflow-run"].data == artifacts["nightly-mlflow-run"].data
    trained = {row["metric"]: row["value"] for row in json.loads(by_subflow["train-metrics"].data)}
    assert trained["model_recall_at_20"] == logged["recall_at_20"]
    assert artifacts[f"nightly-report-{run_date.isoformat()}"].type == "markdown"


def test_online_features_equal_what_pipeline_computed(nightly_run):
    settings, _, run_date = nightly_run
    computed = pl.read_parquet(feature_paths(settings.features_dir)["customer_features"])
    latest = computed.filter(pl.col(TIMESTAMP) == pl.col(TIMESTAMP).max()).head(50)
    online = store.read_customer_features(
        store.feature_store(settings), latest["customer_id"].to_list()
    )
    assert settings.online_store == ("redis" if settings.redis_url else "sqlite")
    for row, served in zip(latest.iter_rows(named=True), online, strict=True):
        for feature in CUSTOMER_FEATURES:
            expected, got = row[feature.name], served[feature.name]
            if expected is None:
                assert got is None, feature.name
            else:
                assert got == pytest.approx(expected, rel=1e-6), feature.name


def test_live_session_features_are_online(nightly_run):
    settings, _, _ = nightly_run
    sessions = pl.read_parquet(feature_paths(settings.features_dir)["session_features"])
    sample = sessions.sort("event_timestamp").tail(20)
    fs = store.feature_store(settings)
    names = [f.name for f in SESSION_FEATURES]
    online = fs.get_online_features(
        features=[f"session_features:{n}" for n in names],
        entity_rows=[{"session_id": s} for s in sample["session_id"]],
    ).to_dict()
    for i, row in enumerate(sample.iter_rows(named=True)):
        assert online["session_items"][i] == row["session_items"]
        assert online["session_event_types"][i] == row["session_event_types"]
        assert online["engagement"][i] == pytest.approx(row["engagement"], rel=1e-6)


def test_raw_measurements_never_reach_the_online_store_or_mlflow(nightly_run):
    settings, result, _ = nightly_run
    computed = pl.read_parquet(feature_paths(settings.features_dir)["customer_features"])
    assert not {"height_cm", "weight_kg", "bust_cm"} & set(computed.columns)
    # Standard scores are coarsened to quarter steps: no raw centimetre survives.
    assert ((computed["height_z"].drop_nulls() * 4) % 1 == 0).all()
    client = MlflowClient(settings.tracking_uri, settings.tracking_uri)
    params = client.get_run(result["run_id"]).data.params
    assert not any("cm" in k or "kg" in k for k in params)


def test_serving_answers_known_unknown_and_bad_input(nightly_run, raw_drops):
    settings, result, run_date = nightly_run
    recommender = Recommender.from_registry(settings)
    events = pl.read_ndjson(raw_drops / run_date.isoformat() / "session_events.jsonl")
    row = events.filter(
        pl.col("customer_id").is_not_null() & pl.col("item_id").str.starts_with("I0")
    ).row(0, named=True)

    known = recommender.recommend(
        RecommendationRequest(customer_id=row["customer_id"], session_items=[row["item_id"]])
    )
    assert known.known_customer and not known.cold_start
    assert len(known.items) == 10 and known.model_version == result["version"]
    scores = [i.score for i in known.items]
    assert scores == sorted(scores, reverse=True)

    unknown = recommender.recommend(RecommendationRequest(customer_id="never-seen"))
    assert not unknown.known_customer and unknown.cold_start and len(unknown.items) == 10

    odd = recommender.recommend(
        RecommendationRequest(session_items=["NOPE-1", row["item_id"]], k=5)
    )
    assert odd.ignored_items == ["NOPE-1"] and len(odd.items) == 5

    with pytest.raises(ValueError, match="session_items"):
        RecommendationRequest(session_items=["bad item!"])
    with pytest.raises(ValueError, match="k"):
        RecommendationRequest(k=0)


def test_champion_loads_with_the_standard_loader_in_a_clean_process(nightly_run):
    settings, _, _ = nightly_run
    code = (
        "import mlflow, json, pandas as pd;"
        f"mlflow.set_tracking_uri({settings.tracking_uri!r});"
        f"m = mlflow.pyfunc.load_model('models:/{settings.model_name}@champion');"
        "out = m.predict(pd.DataFrame({'customer_id': [''], 'session_items': [[]]}));"
        "print(json.dumps(out['item_ids'][0]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    assert len(json.loads(done.stdout.strip().splitlines()[-1])) == 10


def test_rerun_same_date_is_idempotent_and_gates_promotion(nightly_run):
    settings, first, run_date = nightly_run
    curated = {p: p.read_bytes() for p in settings.curated_dir.rglob("*.parquet")}
    from flows.nightly import nightly

    client = MlflowClient(settings.tracking_uri, settings.tracking_uri)
    versions = len(client.search_model_versions(f"name='{settings.model_name}'"))
    second = nightly(run_date, FAST)
    assert {p: p.read_bytes() for p in curated} == curated
    # A finished date: training comes from cache, the candidate is not registered again.
    assert second["version"] == first["version"]
    assert second["reason"].startswith("already registered")
    assert len(client.search_model_versions(f"name='{settings.model_name}'")) == versions


def test_no_champion_is_a_clear_error(tmp_path):
    with Environment(tmp_path / "empty") as settings:
        with pytest.raises(NoChampionError, match="nightly"):
            Recommender.from_registry(settings)


# The gate does not depend on the online store: exercised once, on SQLite.
@pytest.mark.parametrize("nightly_run", ["sqlite"], indirect=True)
def test_a_worse_model_stays_challenger_and_rollback_works(nightly_run):
    settings, first, run_date = nightly_run
    from flows.promote import evaluate_and_promote
    from flows.train import train
    from pipeline.config import CHALLENGER
    from pipeline.registry import tracking as registry

    client = MlflowClient(settings.tracking_uri, settings.tracking_uri)
    champion_before = client.get_model_version_by_alias(settings.model_name, CHAMPION).version
    # Barely trained and blind to the transition memory: clearly worse.
    worse = ModelConfig(epochs=1, learning_rate=1e-6, embedding_dim=4, memory_top_m=1)
    result = evaluate_and_promote(train(run_date, worse))
    assert not result["promoted"], result["reason"]
    # Scored example by example against the champion on the same rows: clearly behind.
    assert f"behind (superior), champion {champion_before} kept" in result["reason"]
    assert result["metrics"]["vs_champion_recall_at_20_ci_high"] < 0
    low, high = (result["metrics"][f"vs_champion_recall_at_20_ci_{s}"] for s in ("low", "high"))
    assert low <= result["metrics"]["vs_champion_recall_at_20_diff"] <= high
    assert client.get_model_version_by_alias(settings.model_name, CHAMPION).version == (
        champion_before
    )
    assert (
        str(client.get_model_version_by_alias(settings.model_name, CHALLENGER).version)
        == (result["version"])
    )
    # By hand: promote the challenger, then roll back to the previous champion.
    assert registry.promote(settings, result["version"]) == str(champion_before)
    assert (
        str(client.get_model_version_by_alias(settings.model_name, CHAMPION).version)
        == (result["version"])
    )
    assert registry.rollback(settings) == str(champion_before)
    assert client.get_model_version_by_alias(settings.model_name, CHAMPION).version == (
        champion_before
    )


# What a user reads in MLflow after a nightly run; the run's layout does not depend on the
# online store: read once, on SQLite.
@pytest.mark.parametrize("nightly_run", ["sqlite"], indirect=True)
def test_the_candidate_run_reads_as_a_story(nightly_run):
    settings, result, run_date = nightly_run
    client = MlflowClient(settings.tracking_uri, settings.tracking_uri)
    run = client.get_run(result["run_id"])
    day = run_date.isoformat()
    assert run.info.run_name == f"train {day} (nightly)"

    tags = run.data.tags
    assert tags["feast.feature_service"] == FEATURE_SERVICE
    assert tags["fitrec.data_date"] == day
    first, last = tags["fitrec.train_window"].split("/")
    assert first <= last < day
    assert tags["mlflow.source.git.commit"] == git_commit()
    assert len(tags["prefect.flow_run_id"]) == 36 and tags["prefect.flow_name"] == (
        "evaluate_and_promote"
    )
    assert tags["prefect.root_flow_run_id"] != tags["prefect.flow_run_id"]

    epochs = int(run.data.metrics["epochs"])
    assert 1 <= epochs <= FAST.epochs
    for key in ("loss", "val_retrieval_loss"):
        history = client.get_metric_history(run.info.run_id, key)
        assert [m.step for m in history] == list(range(epochs)), key
        assert len({m.timestamp for m in history}) == epochs  # stamped at each epoch's end

    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    contexts = {
        n: {t.key: t.value for t in d.tags}["mlflow.data.context"] for n, d in inputs.items()
    }
    assert contexts == {
        "training examples": "train",
        "validation examples": "validation",
        "test examples": "test",
        "customer_features": "train",
        "item_features": "train",
    }
    test_path = settings.data_dir / "training" / day / "test.parquet"
    assert inputs["test examples"].dataset.digest == file_digest(test_path)
    customers = pl.read_parquet(test_path).get_column("customer_id").unique().to_list()
    for entry in inputs.values():
        source = json.loads(entry.dataset.source)
        assert Path(source["uri"]).exists()
        profile = json.loads(entry.dataset.profile)
        assert (
            profile["num_rows"] == pl.scan_parquet(source["uri"]).select(pl.len()).collect().item()
        )
        # The schema and counts, no values: no pseudonym, no measurement.
        text = json.dumps(entry.dataset.to_dictionary())
        assert not any(c and c in text for c in customers)
        assert "height_cm" not in text and "weight_kg" not in text

    children = client.search_runs(
        [run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'"
    )
    names = {c.data.tags["fitrec.baseline"]: c for c in children}
    assert {"popularity", "session_knn", "last_item_successor"} <= set(names)
    for name, child in names.items():
        assert child.info.run_name == f"baseline {name} {day}"
        assert 0.0 <= child.data.metrics["recall_at_20"] <= 1.0
        assert child.data.tags["mlflow.parentRunId"] == run.info.run_id
    best = max(names, key=lambda n: names[n].data.metrics["recall_at_20"])
    assert tags["fitrec.best_baseline"] == best
    assert (
        run.data.metrics["best_baseline_recall_at_20"] == (names[best].data.metrics["recall_at_20"])
    )
    # Each number with its 95% interval, on the run and on each child run.
    for values in (run.data.metrics, *(c.data.metrics for c in names.values())):
        assert values["recall_at_20_ci_low"] <= values["recall_at_20"]
        assert values["recall_at_20"] <= values["recall_at_20_ci_high"]
    comparison = [
        run.data.metrics[f"model_vs_best_recall_at_20_{s}"] for s in ("ci_low", "ci_high")
    ]
    assert comparison[0] <= run.data.metrics["model_vs_best_recall_at_20_diff"] <= comparison[1]
    # The model's metrics sit on the run under plain names; no baseline's name prefixes one.
    assert not any(k.startswith(tuple(f"{n}_" for n in names)) for k in run.data.metrics)
    assert (
        result["metrics"]["popularity_recall_at_20"]
        == (names["popularity"].data.metrics["recall_at_20"])
    )
