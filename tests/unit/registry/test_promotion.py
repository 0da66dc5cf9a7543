"""The promotion gate on the paired difference to the champion: the rule, its reason, and what
a real MLflow registry (SQLite) records."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest

from pipeline.config import CHALLENGER, CHAMPION, Settings
from pipeline.evaluation.significance import Interval, paired_difference
from pipeline.registry import tracking as registry

pytestmark = pytest.mark.unit

AHEAD = Interval(0.0123, 0.0051, 0.0190)
TIED = Interval(0.0020, -0.0030, 0.0071)
SLIGHTLY_BEHIND = Interval(-0.0040, -0.0080, -0.0005)
BEHIND = Interval(-0.0300, -0.0400, -0.0200)


def test_superior_promotes_only_a_candidate_ahead_beyond_noise():
    promoted, reason = registry.decide(AHEAD, "superior", 0.0, "recall_at_20", "7")
    assert promoted
    assert reason == "recall_at_20 +0.0123 [+0.0051, +0.0190] vs champion 7: ahead (superior)"
    promoted, reason = registry.decide(TIED, "superior", 0.01, "recall_at_20", "7")
    assert not promoted
    assert reason == (
        "recall_at_20 +0.0020 [-0.0030, +0.0071] vs champion 7: tied (superior), champion 7 kept"
    )
    assert not registry.decide(BEHIND, "superior", 0.0, "recall_at_20", "7")[0]


def test_non_inferior_promotes_unless_clearly_behind_by_more_than_the_tolerance():
    assert registry.decide(TIED, "non_inferior", 0.0, "recall_at_20", "7")[0]
    promoted, reason = registry.decide(SLIGHTLY_BEHIND, "non_inferior", 0.0, "recall_at_20", "7")
    assert not promoted and reason.endswith("behind (non_inferior, tolerance 0), champion 7 kept")
    # Behind, but not by more than the tolerance: within what the user accepts.
    assert registry.decide(SLIGHTLY_BEHIND, "non_inferior", 0.001, "recall_at_20", "7")[0]
    assert not registry.decide(BEHIND, "non_inferior", 0.01, "recall_at_20", "7")[0]


def test_no_champion_promotes_and_an_unknown_rule_is_refused():
    assert registry.decide(None, "superior", 0.0, "recall_at_20") == (True, "no champion yet")
    with pytest.raises(ValueError, match="unknown promotion rule 'lenient'"):
        registry.decide(AHEAD, "lenient", 0.0, "recall_at_20", "7")


def test_a_retrain_that_only_matches_the_champion_keeps_it():
    """Two models of the same quality (each customer's hit rate is the same for both, each
    example a fresh draw): their per-example recall differs by noise only, so they tie."""
    rng = np.random.default_rng(0)
    units = np.repeat(np.arange(1000), 3)
    rate = rng.beta(1.2, 2.8, 1000)[units]
    champion = (rng.random(3000) < rate).astype(float)
    candidate = (rng.random(3000) < rate).astype(float)
    difference = paired_difference(candidate, champion, units)
    assert difference.verdict == "tied"
    promoted, reason = registry.decide(difference, "superior", 0.0, "recall_at_20", "3")
    assert not promoted and "tied (superior), champion 3 kept" in reason


def test_the_decision_and_its_reason_are_recorded_on_the_run_and_the_version(tmp_path):
    settings = Settings(data_dir=tmp_path, promotion_rule="superior")
    client = registry.configure(settings)
    name = settings.model_name
    client.create_registered_model(name)
    runs = []
    for _ in range(3):
        with mlflow.start_run() as run:
            runs.append(run.info.run_id)
        client.create_model_version(name, str(tmp_path / "model"), run.info.run_id)
    registry.promote(settings, "1")

    client.set_registered_model_alias(name, CHALLENGER, "2")
    tied = registry.promote_if_better(
        settings, registry.Registered(runs[1], "2"), TIED, "1", "paired on 9 test examples"
    )
    assert not tied.promoted and tied.champion_before == "1"
    assert tied.reason.endswith("champion 1 kept (paired on 9 test examples)")
    assert str(client.get_model_version_by_alias(name, CHAMPION).version) == "1"
    assert client.get_run(runs[1]).data.tags["promotion"] == "rejected"
    assert client.get_model_version(name, "2").tags["promotion_reason"] == tied.reason

    ahead = registry.promote_if_better(settings, registry.Registered(runs[2], "3"), AHEAD, "1")
    assert ahead.promoted
    assert str(client.get_model_version_by_alias(name, CHAMPION).version) == "3"
    assert client.get_run(runs[2]).data.tags["promotion_reason"] == ahead.reason
    assert "ahead (superior)" in ahead.reason
