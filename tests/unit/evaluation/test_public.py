"""The public benchmark: retrain's train-and-evaluate sequence on an adapted dataset."""

from __future__ import annotations

from pathlib import Path

import pytest

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
    assert list(result)[:8] == [
        "dataset",
        "split",
        "cutoff",
        "test_until",
        "train_examples",
        "test_examples",
        "items",
        "examples_per_s",
    ]
    assert (result["dataset"], result["split"]) == ("rtr", "time")
    assert result["test_until"] is None  # the default horizon: the data's end
    assert set(METHODS + ["implicit_als", "vsknn", "stan", "vstan", "sr"]) <= set(result)
    assert {"vsknn_tuned", "stan_tuned", "vstan_tuned", "sr_tuned"} <= set(result)
    model = result["model"]
    # Every metric of every method is a value with its 95% interval around it.
    for method, values in result.items():
        if method in METHODS + ["implicit_als", "gbdt_fit"]:
            for name, metric in values.items():
                if isinstance(metric, dict) and "value" in metric:
                    assert metric["ci_low"] <= metric["value"] <= metric["ci_high"], (method, name)
    assert RANKING - {"test_examples"} <= set(model)
    assert {"fit_auc", "fit_ece", "fit_auc_unseen"} <= set(model)
    assert model["fit_examples"] > 0 and isinstance(model["fit_examples"], int)
    # The model against the strongest baseline of each ranking metric, paired.
    for metric in RANKING - {"test_examples"}:
        versus = model["vs_best"][metric]
        assert versus["baseline"] in result and versus["baseline"] != "model"
        baselines = {
            k: v[metric]["value"]
            for k, v in result.items()
            if k not in ("model", "gbdt_fit") and isinstance(v, dict) and metric in v
        }
        best = result[versus["baseline"]][metric]["value"]
        assert best == max(baselines.values())
        assert versus["ci_low"] <= versus["difference"] <= versus["ci_high"]
        assert versus["difference"] == pytest.approx(model[metric]["value"] - best)
        expected = (
            "ahead" if versus["ci_low"] > 0 else "behind" if versus["ci_high"] < 0 else "tied"
        )
        assert versus["verdict"] == expected
    assert result["test_examples"] == result["test_events"]["examples"] > 0
