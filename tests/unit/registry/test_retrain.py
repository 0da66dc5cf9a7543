"""A training run logs its evaluation as files: every figure and the tables behind them."""

from __future__ import annotations

import json

import pytest

from pipeline.evaluation.artifacts import (
    CALIBRATION,
    FIGURES,
    FIT_METRICS,
    SEGMENTS,
    SIZE_CONFUSION,
    read_evaluation,
)
from pipeline.evaluation.baselines import Popularity
from pipeline.model.config import ModelConfig
from pipeline.registry.retrain import train_candidate
from tests.conftest import prepare_days

pytestmark = pytest.mark.slow  # trains a (one-epoch) model


def test_a_training_run_logs_each_plot_and_its_tables(settings, raw_drops, tmp_path):
    last = prepare_days(settings, raw_drops)
    cfg = ModelConfig(epochs=1, embedding_dim=8)
    candidate = train_candidate(settings, last, cfg, tmp_path / "run", [Popularity()])

    names = [p.name for p in candidate.artifacts]
    assert set(FIGURES) <= set(names), names
    assert {SEGMENTS, CALIBRATION, SIZE_CONFUSION, FIT_METRICS} <= set(names)
    assert all(p.exists() for p in candidate.artifacts)
    for path in candidate.artifacts:
        if path.suffix == ".png":
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # What a notebook reads back is what the run measured.
    folder = next(p for p in candidate.artifacts if p.name == SEGMENTS).parent
    back = read_evaluation(folder)
    assert back.fit == json.loads((folder / FIT_METRICS).read_text())
    assert back.fit["fit_ece"] == candidate.metrics["model_fit_ece"]
    assert set(back.metrics) == {"model", "popularity"}
    assert (
        back.size_confusion is not None
        and back.size_confusion["n"].sum() == (back.fit["size_examples"])
    )
