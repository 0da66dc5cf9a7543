"""Deployments are declared once: flows/prefect.yaml is what flows.deployments generates, and
`fitrec serve-flows` serves the same names, schedule and concurrency limit."""

from __future__ import annotations

from pathlib import Path

import yaml

from flows.deployments import DEPLOYMENTS, WORK_POOL, deployments, prefect_yaml
from pipeline.config import Settings, get_settings

ROOT = Path(__file__).parents[2]
DEFAULTS = Settings.model_fields


def test_committed_prefect_yaml_is_the_generated_one():
    expected = prefect_yaml(
        DEFAULTS["schedule_cron"].default, DEFAULTS["schedule_timezone"].default
    )
    committed = (ROOT / "flows" / "prefect.yaml").read_text()
    assert committed == expected, "regenerate: python -m flows.deployments > flows/prefect.yaml"


def test_prefect_yaml_entrypoints_name_existing_flows():
    document = yaml.safe_load((ROOT / "flows" / "prefect.yaml").read_text())
    for entry in document["deployments"]:
        path, function = entry["entrypoint"].split(":")
        assert (ROOT / path).is_file(), path
        assert f"def {function}(" in (ROOT / path).read_text(), entry["entrypoint"]
        assert entry["work_pool"]["name"] == WORK_POOL


def test_prefect_yaml_follows_the_schedule_setting():
    document = yaml.safe_load(prefect_yaml("30 3 * * 1-5", "Europe/Paris"))
    nightly = next(d for d in document["deployments"] if d["name"] == "nightly")
    assert nightly["schedules"] == [{"cron": "30 3 * * 1-5", "timezone": "Europe/Paris"}]
    assert nightly["concurrency_limit"] == {"limit": 1, "collision_strategy": "ENQUEUE"}
    others = [d for d in document["deployments"] if d["name"] != "nightly"]
    assert others and all(d["schedules"] == [] and "concurrency_limit" not in d for d in others)


def test_serve_flows_serves_the_same_deployments(settings, monkeypatch):
    monkeypatch.setenv("FITREC_SCHEDULE_CRON", "30 3 * * 1-5")
    monkeypatch.setenv("FITREC_SCHEDULE_TIMEZONE", "Europe/Paris")
    get_settings.cache_clear()
    served = {d.name: d for d in deployments()}
    assert list(served) == [d.flow for d in DEPLOYMENTS]
    for declared in DEPLOYMENTS:
        got = served[declared.flow]
        assert got.flow_name == declared.flow
        assert got.entrypoint == declared.entrypoint
        assert got.description == declared.description
    nightly = served["nightly"]
    (schedule,) = nightly.schedules
    assert (schedule.schedule.cron, schedule.schedule.timezone) == (
        "30 3 * * 1-5",
        "Europe/Paris",
    )
    assert nightly.concurrency_limit == 1
    assert nightly.concurrency_options.collision_strategy.value == "ENQUEUE"
    assert all(served[n].concurrency_limit is None for n in served if n != "nightly")
