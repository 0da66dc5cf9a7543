"""Shared fixtures: generated data, settings per test environment, real servers, Prefect."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

# One thread per pytest-xdist worker for TensorFlow (and the BLAS under NumPy): set before
# anything imports them, inherited by the flows and servers the tests start. Two workers on two
# cores each spinning up a pool per core would only fight over them.
for _name in (
    "TF_NUM_INTRAOP_THREADS",
    "TF_NUM_INTEROP_THREADS",
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
):
    os.environ.setdefault(_name, "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# prometheus_client's mode as the suite was started (see serving.metrics); importing Feast sets
# the variable in this process when unset, and xdist's workers inherit this environment.
_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_MULTIPROC_AT_START = os.environ.get(_MULTIPROC_ENV)

import pytest  # noqa: E402
from hypothesis import HealthCheck  # noqa: E402
from hypothesis import settings as hypothesis_settings  # noqa: E402

from pipeline.config import Settings, get_settings  # noqa: E402
from tests.support.servers import redis_server  # noqa: E402

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

# Property tests: the same examples on every run ("ci", the default: no wall-clock deadline
# and no too-slow health check on a loaded machine, no example database) or, with
# HYPOTHESIS_PROFILE=dev, fresh random examples as Hypothesis normally draws them. A test's
# own @settings(max_examples=...) still bounds its count.
hypothesis_settings.register_profile(
    "ci",
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
hypothesis_settings.register_profile("dev", deadline=None)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# Fixtures whose (session-scoped) world is built once per worker: every test using one runs on
# the same pytest-xdist worker (``--dist loadgroup``), so the world is built once per session.
SHARED_WORLDS = {"served_run": "served-world"}
# Fixtures that train a model (or are the trained world): every test using one is ``slow``.
TRAINING_FIXTURES = {"served_run", "nightly_run"}

SMALL = {"customers": 1000, "days": 7, "seed": 11, "dirty": 0.01}


@pytest.hookimpl(tryfirst=True)  # before xdist's (trylast) hook starts the workers
def pytest_sessionstart(session: pytest.Session) -> None:
    """Start the xdist workers in the environment the suite was started with. The conftest
    files of the paths on the command line are imported first, here in the controller;
    when one imports Feast (tests/integration's does), Feast sets PROMETHEUS_MULTIPROC_DIR
    to a directory of its own, and every worker would then import prometheus_client in
    multiprocess mode: /metrics of an app in a test would read files its gauges are not in
    (``pytest tests/unit/data tests/integration/test_serving_trust.py`` failed that way)."""
    if _MULTIPROC_AT_START is None:
        os.environ.pop(_MULTIPROC_ENV, None)
    else:
        os.environ[_MULTIPROC_ENV] = _MULTIPROC_AT_START


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests by folder, as NVIDIA-Merlin does: tests/unit -> unit, tests/integration ->
    integration; tests needing a trained model -> slow; group the tests sharing a session
    world onto one xdist worker."""
    for item in items:
        path = Path(str(item.fspath))
        if "unit" in path.parts:
            item.add_marker(pytest.mark.unit)
        if "integration" in path.parts:
            item.add_marker(pytest.mark.integration)
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & TRAINING_FIXTURES:
            item.add_marker(pytest.mark.slow)
        for fixture, group in SHARED_WORLDS.items():
            if fixture in fixtures and not item.get_closest_marker("xdist_group"):
                item.add_marker(pytest.mark.xdist_group(group))
        # An integration module's own (module-scoped) servers and models are built once: the
        # module stays on one worker. Unit tests spread freely.
        if "integration" in path.parts and not item.get_closest_marker("xdist_group"):
            item.add_marker(pytest.mark.xdist_group(f"module-{path.stem}"))
    if config.getoption("loadgroup", False):  # set on xdist workers under --dist loadgroup
        _name_groups(items)


def _name_groups(items: list[pytest.Item]) -> None:
    """Append ``@group`` to each grouped test's id, which is how the xdist controller learns
    the groups. pytest-xdist 3.8 does it by setting ``item._nodeid``, which pytest 9 no longer
    reads (the id is ``item._id``), so every group was silently spread over the workers."""
    from _pytest.nodeid import NodeId

    for item in items:
        names = {
            str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
            for mark in item.iter_markers("xdist_group")
        }
        if names and hasattr(item, "_id") and "@" not in item.nodeid:
            item._id = NodeId.parse(f"{item.nodeid}@{'_'.join(sorted(names))}")


@pytest.fixture(scope="session")
def raw_drops(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small generated window of raw drops (read-only for tests: copy before changing)."""
    from pipeline.data.generate import GeneratorConfig, write_drops

    out = tmp_path_factory.mktemp("raw")
    write_drops(GeneratorConfig(**SMALL), out)
    return out


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One Prefect test server for the whole session (start-up can be slow on 2 cores)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


class Environment:
    """Points FITREC_* at one data dir (and optionally Redis) for the flows and serving."""

    def __init__(self, data_dir: Path, redis_url: str | None = None):
        self.data_dir = data_dir
        self.redis_url = redis_url
        self._saved: dict[str, str | None] = {}

    def __enter__(self) -> Settings:
        values = {"FITREC_DATA_DIR": str(self.data_dir), "FITREC_REDIS_URL": self.redis_url or ""}
        for key, value in values.items():
            self._saved[key] = os.environ.get(key)
            os.environ[key] = value
        get_settings.cache_clear()
        return get_settings()

    def __exit__(self, *exc: object) -> None:
        for key, value in self._saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        get_settings.cache_clear()


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[Settings]:
    """Settings for a fresh data dir (SQLite online store)."""
    with Environment(tmp_path / "var") as s:
        yield s


# Ingested worlds, one per raw window and ingest-relevant settings, built once per worker under
# the raw window's base folder: (data dir, last day, each day's ingest report).
_INGESTED: dict[tuple[Path, str], tuple[Path, date, list[Any]]] = {}


def _ingest_key(settings: Settings, raw_drops: Path) -> tuple[Path, str]:
    """What an ingest's output depends on besides the raw drops: every setting but the data
    dir and the servers (the pseudonym key in clear, as ``model_dump`` masks it)."""
    fields = settings.model_dump(exclude={"data_dir", "redis_url", "production_redis_url"})
    return raw_drops, repr(sorted(fields.items())) + settings.pseudonym_key.get_secret_value()


def ingested_template(settings: Settings, raw_drops: Path) -> tuple[Path, date, list[Any]]:
    """A data dir holding ``raw_drops`` copied, every day ingested and every day's features
    built, as ``settings`` would write it; built on first use, then reused (read-only: copy
    it). Returns (data dir, last day, the ingest reports in day order)."""
    import shutil

    from pipeline.data.curated import drops_up_to
    from pipeline.data.ingest import ingest_drop
    from pipeline.features.build import build_features, missing_snapshot_days

    key = _ingest_key(settings, raw_drops)
    if key not in _INGESTED:
        root = raw_drops.parent / f"ingested-{raw_drops.name}-{len(_INGESTED)}"
        if root.exists():  # a build that failed half-way
            shutil.rmtree(root)
        template = settings.model_copy(update={"data_dir": root})
        shutil.copytree(raw_drops, template.raw_dir)
        drops = drops_up_to(template.raw_dir, date.max)
        reports = [ingest_drop(folder, day, template) for day, folder in drops]
        last = drops[-1][0]
        for day in missing_snapshot_days(template.curated_dir, template.features_dir, last):
            build_features(template.curated_dir, template.features_dir, day)
        _INGESTED[key] = (root, last, reports)
    return _INGESTED[key]


def prepare_days(settings: Settings, raw_drops: Path) -> date:
    """Give ``settings``' data dir the raw drops, every day ingested and every day's features
    built (copied from :func:`ingested_template`, byte for byte what ingesting here writes);
    returns the last day."""
    import shutil

    root, last, _ = ingested_template(settings, raw_drops)
    shutil.copytree(root, settings.data_dir, dirs_exist_ok=True)
    return last


def same_value(a: Any, b: Any) -> bool:
    """Equal values of equal types, NaN equal to NaN, lists element by element (Feast's
    Python values against ours)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b
