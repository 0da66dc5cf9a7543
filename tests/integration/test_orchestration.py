"""Orchestration as the people who run it see it: failures at 2 a.m. and the production
profile (PostgreSQL, a Prefect server, an MLflow server, Redis - all real processes)."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import threading
import time
import uuid
from contextlib import ExitStack
from datetime import date
from pathlib import Path

import polars as pl
import pytest
from mlflow import MlflowClient

from pipeline.config import CHAMPION
from pipeline.data.contracts import CONTRACTS
from pipeline.data.curated import drops_up_to, partition
from pipeline.data.ingest import ingest_drop
from pipeline.features import store
from pipeline.model.config import ModelConfig
from tests.conftest import Environment, prepare_days
from tests.support.processes import http_ok, server_process, wait_until
from tests.support.servers import (
    RestartableRedis,
    create_database,
    free_port,
    postgres,
    redis_server,
)

ROOT = Path(__file__).parents[2]
SMALL = ModelConfig(epochs=1, embedding_dim=8)  # a champion to keep: any will do


def test_materialize_retries_while_redis_is_down_and_succeeds_when_it_returns(
    raw_drops, prefect_harness, tmp_path
):
    server = RestartableRedis(tmp_path / "redis")
    server.start()
    try:
        with Environment(tmp_path / "data", server.url) as settings:
            prepare_days(settings, raw_drops)
            store.apply(store.feature_store(settings))
            server.kill()
            threading.Timer(1.0, server.start).start()  # back before the second retry
            from flows.materialize import materialize

            written = materialize()
            assert set(written) == {"customer_features", "item_features", "session_features"}
            customers = pl.read_parquet(settings.features_dir / "customer_features.parquet")
            online = store.read_customer_features(
                store.feature_store(settings), customers["customer_id"].head(5).to_list()
            )
            assert all(row["has_body"] is not None for row in online)
    finally:
        server.kill()


@pytest.mark.slow  # runs the nightly flow
def test_a_failing_training_leaves_the_champion_and_says_why(raw_drops, prefect_harness, tmp_path):
    with Environment(tmp_path / "data") as settings:
        last = prepare_days(settings, raw_drops)
        from flows.nightly import nightly

        good = nightly(last, SMALL)
        first_day = drops_up_to(settings.raw_dir, date.max)[0][0]
        with pytest.raises(ValueError, match="cannot train for"):
            nightly(first_day, SMALL)  # nothing to train on before the first day
        client = MlflowClient(settings.tracking_uri, settings.tracking_uri)
        champion = client.get_model_version_by_alias(settings.model_name, CHAMPION)
        assert str(champion.version) == good["version"]


def test_a_crash_mid_ingest_then_a_rerun_leaves_no_duplicates(raw_drops, tmp_path, monkeypatch):
    """A day is written whole or not at all: a crash after the first tables leaves nothing of
    the day; an unreadable feed path (a folder) is a missing file, not a crash; the re-run
    with the file back ingests every table once."""
    import pipeline.data.ingest as ingest

    with Environment(tmp_path / "data") as settings:
        day, folder = drops_up_to(raw_drops, date.max)[0]
        drop = tmp_path / "drop"
        shutil.copytree(folder, drop)
        purchases = drop / "purchases.jsonl"
        saved = purchases.read_bytes()

        # Our own code failing on the last table (customers, items, events already done).
        real = ingest._ingest_table  # (paths, table, day, settings, known, writer)

        def failing(paths, table, *args, **kwargs):
            if table == "purchases":
                raise RuntimeError("injected: a bug on the last table")
            return real(paths, table, *args, **kwargs)

        monkeypatch.setattr(ingest, "_ingest_table", failing)
        with pytest.raises(RuntimeError, match="injected"):
            ingest_drop(drop, day, settings)
        monkeypatch.setattr(ingest, "_ingest_table", real)
        for table in ("customers", "items", "session_events", "purchases"):
            assert not partition(settings.curated_dir, table, day).exists(), table

        purchases.unlink()
        purchases.mkdir()  # unreadable as a file: reported missing, the day goes on
        report = ingest_drop(drop, day, settings)
        assert report.tables["purchases"].missing_files == [f"{drop.name}/purchases.jsonl"]
        assert partition(settings.curated_dir, "session_events", day).exists()

        purchases.rmdir()
        purchases.write_bytes(saved)
        report = ingest_drop(drop, day, settings)
        assert report.tables["purchases"].curated > 0
        for table, counts in report.tables.items():
            curated = pl.read_parquet(settings.curated_dir / table / "*" / "*.parquet")
            key = list(CONTRACTS[table].key)  # each table's own key, as declared
            assert not curated.select(key).is_duplicated().any(), table
            assert curated.height == counts.curated


@pytest.mark.slow  # runs the nightly flow
def test_production_profile_runs_nightly_through_the_deployment(raw_drops, tmp_path):
    """PostgreSQL, a Prefect server and an MLflow server on it, Redis; `fitrec serve-flows`
    registers the scheduled deployment; a run triggered through the Prefect API completes,
    registers a champion in the MLflow server and fills the online store."""
    suffix = uuid.uuid4().hex[:8]
    with (
        postgres(tmp_path / "pg") as pg,
        redis_server(tmp_path / "redis") as redis_url,
        ExitStack() as servers,
    ):
        prefect_db = create_database(pg, f"fitrec_prefect_{suffix}")
        mlflow_db = create_database(pg, f"fitrec_mlflow_{suffix}")
        prefect_port, mlflow_port = free_port(), free_port()
        api = f"http://127.0.0.1:{prefect_port}/api"
        base = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "FITREC_"))}
        # Both servers start side by side; each is waited for (and stopped) by the stack.
        prefect_server = [
            *(sys.executable, "-m", "prefect", "server", "start"),
            *("--host", "127.0.0.1", "--port", str(prefect_port)),
        ]
        prefect_env = {
            **base,
            "PREFECT_HOME": str(tmp_path / "prefect-server"),
            "PREFECT_SERVER_DATABASE_CONNECTION_URL": prefect_db.replace(
                "postgresql://", "postgresql+asyncpg://"
            ),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_ENABLED": "false",
        }
        mlflow_server = [
            *(sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1"),
            *("--port", str(mlflow_port), "--workers", "1"),
            "--backend-store-uri",
            mlflow_db.replace("postgresql://", "postgresql+psycopg2://"),
            "--artifacts-destination",
            (tmp_path / "artifacts").as_uri(),
        ]
        mlflow = servers.enter_context(
            server_process(mlflow_server, tmp_path / "mlflow-server.log", env=base, cwd=ROOT)
        )
        servers.enter_context(
            server_process(
                prefect_server,
                tmp_path / "prefect-server.log",
                ready=http_ok(f"{api}/health"),
                env=prefect_env,
                cwd=ROOT,
                timeout=180,
            )
        )
        wait_until(
            http_ok(f"http://127.0.0.1:{mlflow_port}/health"),
            mlflow,
            tmp_path / "mlflow-server.log",
            timeout=180,
            what="mlflow server",
        )
        data = tmp_path / "data"
        shutil.copytree(raw_drops, data / "raw")
        env = {
            **base,
            "FITREC_PROFILE": "production",
            "FITREC_PSEUDONYM_KEY": "orchestration-test-secret",  # production requires one
            "FITREC_DATA_DIR": str(data),
            "FITREC_PREFECT_API_URL": api,
            "FITREC_MLFLOW_SERVER_URL": f"http://127.0.0.1:{mlflow_port}",
            "FITREC_PRODUCTION_REDIS_URL": redis_url,
            "FITREC_SCHEDULE_TIMEZONE": "Europe/Paris",
            "PREFECT_HOME": str(tmp_path / "prefect-client"),
            "PREFECT_API_URL": api,
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        }
        servers.enter_context(
            server_process(
                [sys.executable, "-m", "flows.cli", "serve-flows"],
                tmp_path / "serve-flows.log",
                env=env,
                cwd=ROOT,
            )
        )
        run_date = drops_up_to(data / "raw", date.max)[-1][0]
        state, deployment = asyncio.run(_trigger_nightly(api, run_date))
        log = (tmp_path / "serve-flows.log").read_text(errors="replace")
        assert state == "COMPLETED", log[-3000:]
        assert deployment["cron"] == "0 2 * * *"
        assert deployment["timezone"] == "Europe/Paris"
        # The model is in the MLflow server (on PostgreSQL), the features in Redis.
        client = MlflowClient(f"http://127.0.0.1:{mlflow_port}")
        model = client.get_registered_model("fitrec-recommender")
        assert CHAMPION in model.aliases
        with Environment(data, redis_url) as local:
            customers = pl.read_parquet(data / "features" / "customer_features.parquet")
            online = store.read_customer_features(
                store.feature_store(local), customers["customer_id"].head(5).to_list()
            )
            assert all(row["has_body"] is not None for row in online)


async def _trigger_nightly(api: str, run_date: date) -> tuple[str, dict]:
    from prefect.client.orchestration import PrefectClient

    async with PrefectClient(api=api) as client:
        deadline = time.monotonic() + 240
        deployment = None
        while deployment is None and time.monotonic() < deadline:
            try:
                deployment = await client.read_deployment_by_name("nightly/nightly")
            except Exception:  # noqa: BLE001 - not registered yet
                await asyncio.sleep(1)
        assert deployment is not None, "serve-flows did not register the nightly deployment"
        schedule = deployment.schedules[0].schedule
        run = await client.create_flow_run_from_deployment(
            deployment.id,
            parameters={
                "run_date": run_date.isoformat(),
                "cfg": {"epochs": 1, "embedding_dim": 8},
            },
        )
        while time.monotonic() < deadline + 600:
            run = await client.read_flow_run(run.id)
            if run.state is not None and run.state.is_final():
                break
            await asyncio.sleep(2)
        return run.state.type.value, {"cron": schedule.cron, "timezone": schedule.timezone}
