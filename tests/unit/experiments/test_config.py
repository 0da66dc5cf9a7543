"""Experiment files: validated at load, errors naming the field; versions; assignment; the
started-experiments record (issue 16, items 1 and 2)."""

from __future__ import annotations

import math
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare

from pipeline.experiments.assignment import Assigner, bucket
from pipeline.experiments.config import Experiment, ExperimentError, load_experiment
from pipeline.experiments.state import StateError, load_state, running, start, stop

pytestmark = pytest.mark.unit

GOOD = """
name = "ranker-v7"
salt = "ranker-v7-2026-12"
start = 2026-12-01T00:00:00Z
end = 2026-12-15T00:00:00Z
primary_metric = "net_kept_revenue_per_unit"
guardrails = ["return_rate", "p99_latency_ms"]
minimum_detectable_effect = 0.05

[[variants]]
name = "control"
model = "champion"
share = 0.45

[[variants]]
name = "treatment"
model = "7"
share = 0.45

[[variants]]
name = "holdout"
holdout = true
share = 0.1
"""


def _mapping(**changes: object) -> dict:
    base: dict = {
        "name": "x",
        "salt": "s",
        "start": datetime(2026, 12, 1, tzinfo=UTC),
        "primary_metric": "conversion",
        "minimum_detectable_effect": 0.05,
        "variants": [
            {"name": "control", "model": "champion", "share": 0.5},
            {"name": "treatment", "model": "3", "share": 0.5},
        ],
    }
    return base | changes


def test_a_good_file_loads_in_toml_and_yaml_to_the_same_version(tmp_path: Path):
    toml = tmp_path / "e.toml"
    toml.write_text(GOOD)
    experiment = load_experiment(toml)
    assert [v.name for v in experiment.variants] == ["control", "treatment", "holdout"]
    assert experiment.control.name == "control" and experiment.variants[2].holdout
    assert experiment.variants[1].version == "7" and experiment.variants[0].version is None
    yaml = tmp_path / "e.yaml"
    yaml.write_text(
        "name: ranker-v7\nsalt: ranker-v7-2026-12\nstart: 2026-12-01T00:00:00Z\n"
        "end: 2026-12-15T00:00:00Z\nprimary_metric: net_kept_revenue_per_unit\n"
        "guardrails: [return_rate, p99_latency_ms]\nminimum_detectable_effect: 0.05\n"
        "variants:\n  - {name: control, model: champion, share: 0.45}\n"
        "  - {name: treatment, model: '7', share: 0.45}\n"
        "  - {name: holdout, holdout: true, share: 0.1}\n"
    )
    assert load_experiment(yaml).version == experiment.version
    changed = Experiment.model_validate(experiment.model_dump() | {"salt": "other"})
    assert changed.version != experiment.version


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"primary_metric": "ctr"}, "primary_metric"),
        ({"guardrails": ["p50_latency"]}, "guardrails"),
        ({"minimum_detectable_effect": 0}, "minimum_detectable_effect"),
        ({"minimum_detectable_effect": math.nan}, "minimum_detectable_effect"),
        ({"alpha": 0.7}, "alpha"),
        ({"salt": ""}, "salt"),
        ({"name": "has space"}, "name"),
        ({"unit": "household"}, "unit"),
        ({"end": datetime(2026, 11, 1, tzinfo=UTC)}, "<root>"),
        ({"variants": [{"name": "control", "model": "champion", "share": 1.0}]}, "variants"),
        (
            {
                "variants": [
                    {"name": "control", "model": "champion", "share": 0.5},
                    {"name": "treatment", "model": "3", "share": 0.6},
                ]
            },
            "add up to",
        ),
        (
            {
                "variants": [
                    {"name": "control", "model": "champion", "share": 0.5},
                    {"name": "control", "model": "3", "share": 0.5},
                ]
            },
            "unique",
        ),
        (
            {
                "variants": [
                    {"name": "control", "share": 0.5},
                    {"name": "treatment", "model": "3", "share": 0.5},
                ]
            },
            "variants[0]",
        ),
        (
            {
                "variants": [
                    {"name": "control", "model": "champion", "share": 0.5},
                    {"name": "h", "holdout": True, "model": "3", "share": 0.5},
                ]
            },
            "variants[1]",
        ),
        ({"surprise": 1}, "surprise"),
        (
            {
                "mode": "interleaving",
                "variants": [
                    {"name": "a", "model": "champion", "share": 0.4},
                    {"name": "b", "model": "3", "share": 0.4},
                    {"name": "c", "model": "4", "share": 0.2},
                ],
            },
            "interleaving",
        ),
    ],
)
def test_a_bad_field_is_named(changes: dict, field: str):
    with pytest.raises(ExperimentError) as caught:
        Experiment.from_mapping(_mapping(**changes))
    assert field in str(caught.value)


def test_unreadable_files_are_clear_errors(tmp_path: Path):
    for name, content in [
        ("e.json", b"{}"),
        ("e.toml", b"name = "),
        ("e.yaml", b"a: [unclosed"),
        ("e.toml", b"\xff\xfe\x00bad"),
        ("e.yaml", b"- a list\n- not a mapping\n"),
    ]:
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(ExperimentError, match=str(path).replace(".", r"\.")):
            load_experiment(path)
    with pytest.raises(ExperimentError, match="cannot read"):
        load_experiment(tmp_path / "missing.toml")


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["name", "salt", "start", "primary_metric", "variants", "alpha", "x"]),
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(),
            st.floats(allow_nan=True, allow_infinity=True),
            st.text(max_size=20),
            st.lists(st.dictionaries(st.text(max_size=5), st.integers()), max_size=3),
        ),
    )
)
def test_any_mapping_is_valid_or_a_named_error(data: dict):
    try:
        Experiment.from_mapping(_mapping(**data))
    except ExperimentError as error:
        assert error.problems and all(":" in p for p in error.problems)


def test_assignment_is_deterministic_uniform_and_follows_the_shares():
    experiment = Experiment.from_mapping(
        _mapping(
            variants=[
                {"name": "control", "model": "champion", "share": 0.45},
                {"name": "treatment", "model": "3", "share": 0.45},
                {"name": "holdout", "holdout": True, "share": 0.1},
            ]
        )
    )
    units = [f"p{i:06d}" for i in range(20_000)]
    arms = [Assigner(experiment).variant(u).name for u in units]
    again = [Assigner(experiment).variant(u).name for u in units]  # a new process's view
    assert arms == again
    counts = Counter(arms)
    observed = [counts["control"], counts["treatment"], counts["holdout"]]
    expected = [0.45 * len(units), 0.45 * len(units), 0.1 * len(units)]
    assert chisquare(observed, expected).pvalue > 0.001
    # A new salt reshuffles: about half of the units change arm between two 50/50 tests.
    a = Experiment.from_mapping(_mapping(salt="one"))
    b = Experiment.from_mapping(_mapping(salt="two"))
    moved = sum(Assigner(a).variant(u).name != Assigner(b).variant(u).name for u in units)
    assert 0.45 < moved / len(units) < 0.55


@given(st.text(max_size=200), st.text(min_size=1, max_size=300))
def test_buckets_are_in_the_unit_interval_for_any_text(unit: str, salt: str):
    assert 0.0 <= bucket(salt, unit) < 1.0


def test_the_record_starts_stops_and_refuses_a_second_experiment(tmp_path: Path):
    now = datetime(2026, 12, 2, tzinfo=UTC)
    one = Experiment.from_mapping(_mapping(name="one"))
    two = Experiment.from_mapping(_mapping(name="two"))
    state = start(tmp_path, one, now)
    assert start(tmp_path, one, now) == state  # starting again changes nothing
    assert [s.experiment.name for s in running(tmp_path, now)] == ["one"]
    with pytest.raises(StateError, match="one experiment at a time"):
        start(tmp_path, two, now)
    edited = Experiment.from_mapping(_mapping(name="one", salt="new"))
    with pytest.raises(StateError, match="stop it before"):
        start(tmp_path, edited, now)
    # Not running before its start or after its end, whatever the record says.
    assert running(tmp_path, datetime(2026, 11, 30, tzinfo=UTC)) == []
    stop(tmp_path, "one", now + timedelta(days=1))
    assert running(tmp_path, now) == []
    assert load_state(tmp_path, "one").status == "stopped"
    start(tmp_path, two, now)
    with pytest.raises(StateError, match="no experiment 'three'"):
        load_state(tmp_path, "three")
    (tmp_path / "broken.json").write_text("{not json")
    assert [s.experiment.name for s in running(tmp_path, now)] == ["two"]
    with pytest.raises(StateError, match="unreadable"):
        load_state(tmp_path, "broken")
