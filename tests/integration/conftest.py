"""Fixtures shared by the serving test modules: one nightly run for the whole session.

Training a model is the expensive part, so it happens once (``served_run``); each module gets
the run's environment for its own duration (``served``), so FITREC_* never leak past it.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from pipeline.config import Settings
from pipeline.model.config import ModelConfig
from tests.conftest import Environment
from tests.support.drills import live_app  # noqa: F401  (re-exported for the modules)
from tests.support.servers import RestartableRedis

FAST = ModelConfig(epochs=3, embedding_dim=16)


@pytest.fixture(scope="session")
def served_run(
    raw_drops: Path, prefect_harness: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, date, RestartableRedis]]:
    """A nightly run into a Redis we can kill; yields (data dir, run date, redis handle)."""
    from pipeline.data.curated import drops_up_to

    server = RestartableRedis(tmp_path_factory.mktemp("redis-serving"))
    server.start()
    data_dir = tmp_path_factory.mktemp("serving")
    try:
        with Environment(data_dir, server.url) as settings:
            shutil.copytree(raw_drops, settings.raw_dir)
            run_date = drops_up_to(settings.raw_dir, date.max)[-1][0]
            from flows.nightly import nightly

            nightly(run_date, FAST)
        yield data_dir, run_date, server
    finally:
        server.kill()


def copy_champion(settings: Settings, name: str | None = None) -> str:
    """Register a copy of the world's champion (MLflow ``copy_model_version``) as a new version
    of ``name`` (default: the served model itself), so a test gets a version of its own
    without training one; returns the new version. The champion alias does not move."""
    from mlflow import MlflowClient

    from pipeline.config import CHAMPION

    client = MlflowClient(settings.tracking_uri, settings.tracking_uri)
    champion = client.get_model_version_by_alias(settings.model_name, CHAMPION)
    copied = client.copy_model_version(
        f"models:/{settings.model_name}/{champion.version}", name or settings.model_name
    )
    return str(copied.version)


@pytest.fixture(scope="module")
def served(
    served_run: tuple[Path, date, RestartableRedis],
) -> Iterator[tuple[Settings, date, RestartableRedis]]:
    """The nightly run's environment for one module; yields (settings, run date, redis)."""
    data_dir, run_date, server = served_run
    if server.process is None:  # a module before this one left it killed
        server.start()
    with Environment(data_dir, server.url) as settings:
        yield settings, run_date, server


@pytest.fixture(scope="module")
def recommender(served):
    from serving.recommender import Recommender

    settings, _, _ = served
    rec = Recommender.from_registry(settings)
    yield rec
    rec.close()
