"""Aliases after a promotion and after a rollback, read back from a real MLflow registry
(SQLite): the champion never also carries ``challenger``."""

from __future__ import annotations

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from pipeline.config import CHALLENGER, CHAMPION, Settings
from pipeline.registry import tracking as registry

pytestmark = pytest.mark.unit


def _aliases(client: MlflowClient, name: str) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for alias in (CHAMPION, CHALLENGER):
        try:
            found[alias] = str(client.get_model_version_by_alias(name, alias).version)
        except MlflowException:
            found[alias] = None
    return found


def test_promotion_moves_challenger_off_and_rollback_puts_it_back(tmp_path):
    settings = Settings(data_dir=tmp_path)
    client = registry.configure(settings)
    name = settings.model_name
    client.create_registered_model(name)
    for _ in range(2):
        with mlflow.start_run() as run:
            pass
        client.create_model_version(name, str(tmp_path / "model"), run.info.run_id)

    registry.promote(settings, "1")
    assert _aliases(client, name) == {CHAMPION: "1", CHALLENGER: None}

    # Version 2 waits as challenger (what the gate does when it keeps the champion) ...
    client.set_registered_model_alias(name, CHALLENGER, "2")
    assert _aliases(client, name) == {CHAMPION: "1", CHALLENGER: "2"}
    # ... then wins: it is champion only, no longer challenger too.
    assert registry.promote(settings, "2") == "1"
    assert _aliases(client, name) == {CHAMPION: "2", CHALLENGER: None}

    # Rolled back: the previous champion is back, the rolled-back one is the challenger.
    assert registry.rollback(settings) == "1"
    assert _aliases(client, name) == {CHAMPION: "1", CHALLENGER: "2"}
