"""The sample-ratio check: a broken split caught, noise passed, every declared arm counted."""

from __future__ import annotations

import pytest

from pipeline.experiments.sample_ratio import sample_ratio

pytestmark = pytest.mark.unit


def test_sample_ratio_catches_a_mismatch_and_passes_noise():
    broken = sample_ratio({"control": 5000, "treatment": 5400}, {"control": 0.5, "treatment": 0.5})
    assert broken.mismatch and broken.p_value < 0.001
    assert broken.expected == {"control": 5200.0, "treatment": 5200.0}
    fine = sample_ratio({"control": 5000, "treatment": 5050}, {"control": 0.5, "treatment": 0.5})
    assert not fine.mismatch and fine.p_value > 0.5


def test_sample_ratio_uses_the_declared_shares_and_every_arm():
    shares = {"a": 0.5, "b": 0.25, "c": 0.25}
    assert not sample_ratio({"a": 5000, "b": 2500, "c": 2480}, shares).mismatch
    assert sample_ratio({"a": 5000, "b": 5000, "c": 2500}, shares).mismatch
    # a variant that got nothing is a mismatch, not a crash
    assert sample_ratio({"a": 5000, "b": 2500}, shares).counts["c"] == 0
    assert sample_ratio({"a": 5000, "b": 2500}, shares).mismatch
