"""The public benchmark: retrain's train-and-evaluate sequence on an adapted dataset."""

from __future__ import annotations

from pathlib import Path

from pipeline.evaluation import candidate, public
from pipeline.model.config import ModelConfig

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
METHODS = ["model", "popularity", "recent_popularity", "session_knn", "last_item_successor"]
RANKING = {f"{m}@{k}" for m in ("recall", "ndcg", "hr", "mrr") for k in (10, 20, 50)} | {
    "map@12",
    "test_examples",
}


def test_rtr_benchmark_reports_every_method_through_the_shared_sequence(tmp_path, monkeypatch):
    calls = []

    def spy(*args, **kwargs):
        trained = candidate.train_and_evaluate_candidate(*args, **kwargs)
        calls.append(trained)
        return trained

    monkeypatch.setattr(public, "train_and_evaluate_candidate", spy)
    source = public.load("rtr", FIXTURES / "rtr_clean_sample.parquet")
    result = public.run(source, public.SPECS["rtr"], tmp_path, ModelConfig(epochs=2))

    assert len(calls) == 1 and calls[0].bundle == tmp_path / "bundle"
    assert list(result)[:7] == [
        "dataset",
        "split",
        "cutoff",
        "train_examples",
        "test_examples",
        "items",
        "examples_per_s",
    ]
    assert (result["dataset"], result["split"]) == ("rtr", "time")
    assert set(METHODS + ["implicit_als"]) <= set(result)
    # The sample's test customers are all new; RentTheRunway has no size charts, so the model
    # recommends no size while the size baselines (the population chart) still answer.
    fit = {"fit_auc", "fit_auc_ci_low", "fit_auc_ci_high", "fit_auc_unseen", "fit_ece"}
    fit |= {"fit_examples"}
    fit |= {"fit_examples_seen", "fit_examples_unseen", "size_examples"}
    fit |= {
        f"{metric}_{baseline}"
        for metric in ("size_accuracy", "size_accuracy_within_1", "size_coverage")
        for baseline in ("usual_size", "size_chart")
    }
    assert set(result["model"]) == RANKING | fit
    model = result["model"]
    assert model["fit_auc_ci_low"] <= model["fit_auc"] <= model["fit_auc_ci_high"]
    for method in METHODS:
        assert RANKING <= set(result[method])
    assert result["test_examples"] == result["model"]["test_examples"] > 0
