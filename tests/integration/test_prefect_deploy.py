"""``prefect deploy`` from ``flows/prefect.yaml`` against a real Prefect server, a process
worker running a deployment end to end, and nightly's concurrency limit held by the server."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest

from flows.deployments import DEPLOYMENTS, TAGS, WORK_POOL
from pipeline.config import Settings
from pipeline.data.curated import drops_up_to, partition
from tests.support.processes import http_ok, log_tail, server_process
from tests.support.servers import free_port

pytestmark = pytest.mark.slow
ROOT = Path(__file__).parents[2]
PREFECT = [sys.executable, "-m", "prefect"]


@dataclass
class Server:
    api: str
    env: dict[str, str]  # for Prefect's CLI and the worker: this server, this data dir
    data_dir: Path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A Prefect server on a free port, its own PREFECT_HOME and a SQLite database."""
    tmp = tmp_path_factory.mktemp("prefect-deploy")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "FITREC_"))}
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    log = tmp / "server.log"
    with server_process(
        [*PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        log,
        ready=http_ok(f"{api}/health"),
        env={
            **base,
            "PREFECT_HOME": str(tmp / "server-home"),
            "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{tmp / 'prefect.db'}",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_ENABLED": "false",
        },
        cwd=tmp,
        timeout=240,
    ):
        env = {
            **base,
            "PREFECT_API_URL": api,
            "PREFECT_HOME": str(tmp / "client-home"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "FITREC_DATA_DIR": str(tmp / "data"),
            "TF_USE_LEGACY_KERAS": "1",
        }
        yield Server(api, env, tmp / "data")


def _prefect(server: Server, *args: str, timeout: float = 600) -> str:
    done = subprocess.run(
        [*PREFECT, *args],
        env=server.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, f"prefect {' '.join(args)} failed:\n{out[-3000:]}"
    return out


@pytest.fixture(scope="module")
def deployed(server: Server) -> Server:
    """The work pool and every deployment of flows/prefect.yaml, as an operator makes them."""
    _prefect(server, "work-pool", "create", WORK_POOL, "--type", "process")
    _prefect(server, "--no-prompt", "deploy", "--prefect-file", "flows/prefect.yaml", "--all")
    return server


async def _read_deployments(api: str) -> dict[str, object]:
    from prefect.client.orchestration import PrefectClient

    async with PrefectClient(api=api) as client:
        return {
            d.flow: await client.read_deployment_by_name(f"{d.flow}/{d.flow}") for d in DEPLOYMENTS
        }


def test_prefect_deploy_registers_every_deployment_as_declared(deployed):
    read = asyncio.run(_read_deployments(deployed.api))
    defaults = Settings.model_fields
    for declared in DEPLOYMENTS:
        got = read[declared.flow]
        assert got.work_pool_name == WORK_POOL, declared.flow
        assert got.entrypoint == declared.entrypoint
        assert got.description == declared.description
        assert set(got.tags) == set(TAGS)
        # The worker changes into the directory `prefect deploy` ran in: the repository.
        assert got.pull_steps == [
            {"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}
        ]
        if declared.scheduled:
            (schedule,) = got.schedules
            assert schedule.schedule.cron == defaults["schedule_cron"].default
            assert schedule.schedule.timezone == defaults["schedule_timezone"].default
            assert got.global_concurrency_limit.limit == 1
            assert got.concurrency_options.collision_strategy.value == "ENQUEUE"
        else:
            assert got.schedules == []
            assert got.global_concurrency_limit is None
    assert [d.flow for d in DEPLOYMENTS if d.scheduled] == ["nightly"]


async def _second_nightly_waits(api: str) -> list[tuple[str, str | None]]:
    """Two nightly runs: the first takes the slot, the second is told to wait until the first
    ends. The worker's part (proposing PENDING) is done by hand, so nothing is trained."""
    from prefect.client.orchestration import PrefectClient
    from prefect.states import Cancelled, Completed, Pending, Running

    seen: list[tuple[str, str | None]] = []
    async with PrefectClient(api=api) as client:
        nightly = await client.read_deployment_by_name("nightly/nightly")
        first = await client.create_flow_run_from_deployment(nightly.id)
        second = await client.create_flow_run_from_deployment(nightly.id)
        for run in (first, second):
            result = await client.set_flow_run_state(run.id, Pending())
            seen.append((result.status.value, result.state.name if result.state else None))
        await client.set_flow_run_state(first.id, Running())
        await client.set_flow_run_state(first.id, Completed())
        result = await client.set_flow_run_state(second.id, Pending())
        seen.append((result.status.value, result.state.name if result.state else None))
        # Neither may reach the worker started by the next test.
        await client.set_flow_run_state(second.id, Cancelled(), force=True)
    return seen


def test_a_second_nightly_waits_for_the_first(deployed):
    first, second, after = asyncio.run(_second_nightly_waits(deployed.api))
    assert first == ("ACCEPT", "Pending")
    assert second[0] == "REJECT" and second[1] == "AwaitingConcurrencySlot"
    assert after == ("ACCEPT", "Pending")


def test_a_worker_runs_a_deployment_and_watch_returns_completed(deployed, raw_drops):
    """`prefect deployment run --watch` returns once a process worker (started outside the
    repository: the pull step moves it there) ran the ingest flow on the first day."""
    shutil.copytree(raw_drops, deployed.data_dir / "raw")
    day: date = drops_up_to(deployed.data_dir / "raw", date.max)[0][0]
    elsewhere = deployed.data_dir.parent / "worker"
    elsewhere.mkdir()
    log = elsewhere / "worker.log"
    with server_process(
        [*PREFECT, "worker", "start", "--pool", WORK_POOL, "--type", "process"],
        log,
        env=deployed.env,
        cwd=elsewhere,
    ):
        try:
            out = _prefect(
                deployed,
                "deployment",
                "run",
                "ingest/ingest",
                "--param",
                f"run_date={day.isoformat()}",
                "--watch",
                "--watch-timeout",
                "600",
                timeout=700,
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nworker log:\n{log_tail(log)}") from exc
    assert "Completed" in out, out[-2000:]
    for table in ("customers", "items", "session_events", "purchases"):
        assert partition(deployed.data_dir / "curated", table, day).exists(), table
