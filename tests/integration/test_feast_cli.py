"""Stock Feast, run as its users run it (`cd feature_repo && feast ...`), on the store fitrec
materialised: a real redis-server (open, and with a hostile password given only in
FITREC_REDIS_URL), and the SQLite store of the default profile.

The `feast` executable of this environment runs in a subprocess with nothing but FITREC_*
variables: it must list fitrec's views, plan and apply without changing the checkout, and
answer (`feast serve` over HTTP, and the SDK on the same `feature_store.yaml`) the very
values fitrec's own reader returns for the same entities.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

import httpx
import polars as pl
import pytest
from feast import FeatureStore

from pipeline.config import FEATURE_REPO, PROJECT_ROOT, Settings
from pipeline.features import store
from pipeline.features.build import feature_paths
from pipeline.features.declarations import (
    CUSTOMER_ENTITY,
    CUSTOMER_FEATURES,
    CUSTOMER_VIEW,
    FIT_VIEW,
    ITEM_ENTITY,
    ITEM_FEATURES,
    ITEM_VIEW,
    SESSION_VIEW,
    TIMESTAMP,
)
from pipeline.features.online.reader import RedisFeatureReader
from tests.conftest import Environment, prepare_days, same_value
from tests.support.processes import http_ok, server_process
from tests.support.servers import free_port, redis_server

FEAST = str(Path(sys.executable).with_name("feast"))
CACHES = ("__pycache__", ".pytest_cache", ".hypothesis", ".mypy_cache", ".ruff_cache")
PASSWORD = "f3,ast@%25:p=w/"  # Feast's own connection_string could not hold it
VIEWS = {
    CUSTOMER_VIEW: (CUSTOMER_ENTITY, CUSTOMER_FEATURES),
    ITEM_VIEW: (ITEM_ENTITY, ITEM_FEATURES),
}


def feast_env(settings: Settings) -> dict[str, str]:
    """The caller's environment with only fitrec's own variables pointing at the store."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FITREC_")}
    env["FITREC_DATA_DIR"] = str(settings.data_dir)
    if settings.redis_url:
        env["FITREC_REDIS_URL"] = settings.redis_url
    # This checkout's packages (the venv may hold another checkout's editable install).
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    return env


def feast(settings: Settings, *args: str) -> str:
    """Run the stock `feast` CLI in feature_repo/; returns its standard output."""
    done = subprocess.run(
        [FEAST, *args],
        cwd=FEATURE_REPO,
        env=feast_env(settings),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"feast {' '.join(args)} failed:\n{done.stderr[-3000:]}"
    return done.stdout


def checkout_state() -> list[str]:
    """`git status` of the checkout, ignored files included (var/ is ignored: a registry
    written there must show), bytecode and tool caches left out."""
    out = subprocess.run(
        ["git", "status", "--porcelain", "--ignored", "--untracked-files=all"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sorted(line for line in out.splitlines() if not any(c in line for c in CACHES))


@pytest.fixture(scope="module")
def prepared(raw_drops: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir with curated tables and features built (no Feast state yet)."""
    data = tmp_path_factory.mktemp("feast-cli") / "data"
    with Environment(data) as settings:
        prepare_days(settings, raw_drops)
    return data


@pytest.fixture(scope="module", params=["open", "password"])
def materialised(
    request: pytest.FixtureRequest, prepared: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settings]:
    """fitrec's apply and materialisation into a redis-server of its own."""
    work = tmp_path_factory.mktemp(f"feast-cli-{request.param}")
    data = work / "data"
    shutil.copytree(prepared, data)
    password = PASSWORD if request.param == "password" else None
    with redis_server(work / "redis", password=password) as url:
        if password is not None:
            assert quote(PASSWORD, safe="") in url
        with Environment(data, url) as settings:
            fs = store.feature_store(settings)
            store.apply(fs)
            done = store.materialize_new(fs, settings.features_dir, settings.feast_dir / "ckpt")
            assert done and all("fast" in line for line in done.values()), done
            yield settings


def latest_ids(settings: Settings, view: str, entity: str, n: int = 25) -> list[Any]:
    """Entities of ``view``'s latest snapshot (every one of them is in the online store)."""
    frame = pl.read_parquet(feature_paths(settings.features_dir)[view])
    latest = frame.filter(pl.col(TIMESTAMP) == pl.col(TIMESTAMP).max())
    return latest.get_column(entity).head(n).to_list()


def fitrec_values(settings: Settings, view: str, ids: list[Any]) -> list[dict[str, Any]]:
    """What fitrec's own reader (the serving path) returns for ``ids``."""
    with RedisFeatureReader.from_store(store.feature_store(settings), [view]) as reader:
        return reader.read_pairs([(view, i) for i in ids])


def assert_same(view: str, ours: list[dict[str, Any]], theirs: dict[str, list[Any]]) -> None:
    _, features = VIEWS[view]
    for feature in features:
        got = theirs[feature.name]
        want = [row[feature.name] for row in ours]
        assert len(got) == len(want)
        for a, b in zip(got, want, strict=True):
            assert same_value(a, b), (view, feature.name, a, b)


def names_column(table: str) -> set[str]:
    """The NAME column of a `feast ... list` table."""
    return set(states(table))


def states(table: str) -> dict[str, str]:
    """NAME -> STATE (the last column) of a `feast ... list` table."""
    rows = [line.split() for line in table.splitlines()[1:] if line.strip()]
    return {row[0]: row[-1] for row in rows}


def test_feature_views_list_shows_fitrecs_views(materialised: Settings, tmp_path: Path) -> None:
    listed = feast(materialised, "feature-views", "list")
    assert names_column(listed) == {CUSTOMER_VIEW, ITEM_VIEW, FIT_VIEW}, listed
    for view in (CUSTOMER_VIEW, ITEM_VIEW):  # fitrec's materialisation, as Feast sees it
        assert states(listed)[view] == "AVAILABLE_ONLINE", listed
    streams = feast(materialised, "stream-feature-views", "list")
    assert names_column(streams) == {SESSION_VIEW}, streams
    # `fitrec feast ...` is the same CLI on the same resolution, from any directory.
    through_fitrec = subprocess.run(
        [sys.executable, "-m", "flows.cli", "feast", "feature-views", "list"],
        cwd=tmp_path,
        env=feast_env(materialised),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert through_fitrec.returncode == 0, through_fitrec.stderr[-3000:]
    assert states(through_fitrec.stdout) == states(listed)  # (entity sets print in any order)


def test_plan_and_apply_change_nothing_in_the_checkout(materialised: Settings) -> None:
    before = checkout_state()
    registry = materialised.feast_dir / "registry.db"
    applied = registry.read_bytes()
    planned = feast(materialised, "plan")
    # Feast's plan diffs its own stream views even right after its own apply, so the test is
    # that it planned against fitrec's registry (an empty one would create every view) ...
    assert "Created feature view" not in planned and "customer_features" in planned, planned
    assert registry.read_bytes() == applied  # ... and wrote nothing, not even the registry
    feast(materialised, "apply")
    assert checkout_state() == before
    for path in materialised.data_dir.rglob("*"):  # the password is in no file
        if path.is_file():
            data = path.read_bytes()
            assert PASSWORD.encode() not in data and quote(PASSWORD, safe="").encode() not in data


def test_materialize_incremental_starts_where_fitrec_ended(materialised: Settings) -> None:
    """Stock `feast materialize-incremental` reads fitrec's registry: it starts at the end of
    fitrec's (fast) materialisation, not at *now* minus the TTL, and writes into the same
    Redis (the values are checked by the tests below)."""
    fs = store.feature_store(materialised)
    ended = fs.get_feature_view(CUSTOMER_VIEW).most_recent_end_time
    assert ended is not None
    until = ended + timedelta(days=1)
    out = feast(materialised, "materialize-incremental", until.isoformat(), "-v", CUSTOMER_VIEW)
    plain = re.sub(r"\x1b\[[0-9;]*m", "", out)  # Feast colours its output even in a pipe
    assert f"{CUSTOMER_VIEW} from {ended.astimezone(UTC)} to {until}" in plain, plain
    assert "redis" in plain.lower()  # Feast names the online store it wrote into


def test_stock_sdk_reads_fitrecs_values(materialised: Settings) -> None:
    fs = FeatureStore(repo_path=str(FEATURE_REPO))  # the committed feature_store.yaml
    for view, (entity, features) in VIEWS.items():
        ids = latest_ids(materialised, view, entity)
        response = fs.get_online_features(
            features=[f"{view}:{f.name}" for f in features],
            entity_rows=[{entity: i} for i in ids],
        ).to_dict()
        assert response[entity] == ids
        assert_same(view, fitrec_values(materialised, view, ids), response)


@pytest.fixture(scope="module")
def feast_server(materialised: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`feast serve` on a free port; yields its base URL."""
    port = free_port()
    log = tmp_path_factory.mktemp("feast-serve") / "serve.log"
    url = f"http://127.0.0.1:{port}"
    with server_process(
        [FEAST, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        log,
        ready=http_ok(f"{url}/health", timeout=5),
        env=feast_env(materialised),
        cwd=FEATURE_REPO,
        group=True,  # gunicorn's workers are stopped with it
    ):
        yield url


def test_feast_serve_answers_fitrecs_values(materialised: Settings, feast_server: str) -> None:
    for view, (entity, features) in VIEWS.items():
        ids = latest_ids(materialised, view, entity)
        answer = httpx.post(
            f"{feast_server}/get-online-features",
            json={"features": [f"{view}:{f.name}" for f in features], "entities": {entity: ids}},
            timeout=60,
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        names = body["metadata"]["feature_names"]
        columns = {
            name: result["values"] for name, result in zip(names, body["results"], strict=True)
        }
        assert columns[entity] == ids
        assert_same(view, fitrec_values(materialised, view, ids), columns)


def test_stock_materialize_fills_fitrecs_sqlite_store(prepared: Path, tmp_path: Path) -> None:
    """The default profile: no Redis; fitrec applies, stock `feast materialize` loads the
    SQLite store, and fitrec's own Feast store reads the computed features back."""
    data = tmp_path / "data"
    shutil.copytree(prepared, data)
    with Environment(data) as settings:
        store.apply(store.feature_store(settings))
        computed = pl.read_parquet(feature_paths(settings.features_dir)[CUSTOMER_VIEW])
        stamps = computed.get_column(TIMESTAMP)
        start = cast(Any, stamps.min()) - timedelta(seconds=1)
        end = cast(Any, stamps.max()) + timedelta(seconds=1)
        before = checkout_state()
        out = feast(
            settings, "materialize", start.isoformat(), end.isoformat(), "-v", CUSTOMER_VIEW
        )
        assert CUSTOMER_VIEW in out
        assert checkout_state() == before
        assert (settings.feast_dir / "online_store.db").stat().st_size > 0
        latest = computed.filter(pl.col(TIMESTAMP) == stamps.max()).head(25)
        ids = latest.get_column(CUSTOMER_ENTITY).to_list()
        read = store.read_customer_features(store.feature_store(settings), ids)
        for row, got in zip(latest.iter_rows(named=True), read, strict=True):
            for feature in CUSTOMER_FEATURES:
                want = row[feature.name]
                assert (want is None and got[feature.name] is None) or got[
                    feature.name
                ] == pytest.approx(want), feature.name
