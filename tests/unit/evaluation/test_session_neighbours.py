"""VS-KNN, STAN, V-STAN and SR: the same scores as session-rec's own code, and their edges."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from pipeline.evaluation.baselines import all_baselines
from pipeline.evaluation.baselines.sequential_rules import SequentialRules
from pipeline.evaluation.baselines.session_neighbours import STAN, VSKNN, VSTAN
from pipeline.evaluation.baselines.tuning import Tuned, holdout_queries, session_baselines, tune
from pipeline.model.metrics import top_k_from_scores

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
REFERENCE = json.loads((FIXTURES / "session_rec_reference.json").read_text())
CLASSES = {"vsknn": VSKNN, "stan": STAN, "vstan": VSTAN, "sr": SequentialRules}
# The reference divides by the row maximum (a monotone rescaling) in these two.
NORMALISED = {"vsknn", "sr"}


def _epoch(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC).replace(tzinfo=None)


@pytest.fixture(scope="module")
def case() -> tuple[pl.DataFrame, list[str]]:
    raw = pl.read_csv(
        FIXTURES / REFERENCE["case"],
        separator="\t",
        schema_overrides={"SessionId": pl.String, "ItemId": pl.String},
    )
    train = raw.filter(pl.col("Split") == "train").select(
        pl.col("SessionId").alias("session_id"),
        pl.lit(None, pl.String).alias("customer_id"),
        pl.col("ItemId").alias("item_id"),
        pl.from_epoch((pl.col("Time") * 1_000_000).round().cast(pl.Int64), time_unit="us").alias(
            "ts"
        ),
    )
    items = sorted(train.get_column("item_id").unique().to_list())
    return train, items


@pytest.mark.parametrize("config", sorted(REFERENCE["results"]))
def test_scores_and_rankings_equal_session_rec(
    case: tuple[pl.DataFrame, list[str]], config: str
) -> None:
    train, items = case
    result = REFERENCE["results"][config]
    name = config.split("/")[0]
    model = CLASSES[name](**result["params"]).fit(train, items)
    queries = REFERENCE["queries"]
    histories = [q["history"] for q in queries]
    times = [_epoch(q["time"]) for q in queries]
    scores = model.score(histories, times)
    ranked = model.recommend(histories, None, REFERENCE["top"], times=times)
    index = {item: i for i, item in enumerate(items)}
    compared = 0
    for row, step in enumerate(result["steps"]):
        if step["ambiguous"]:
            continue  # the reference's neighbours depend on set iteration order here
        compared += 1
        expected = np.array(step["scores"])
        ours = scores[row]
        if name in NORMALISED and ours.max() > 0:
            ours = ours / ours.max()
        got = ours[[index[i] for i in step["items"]]]
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12, err_msg=f"{row}")
        # Our ranking: the same scores rank by rank (items may differ only among ties), and
        # every unscored place is backfill.
        m = len(expected)
        np.testing.assert_allclose(ours[ranked[row, :m]], expected, rtol=1e-9, atol=1e-12)
        assert np.all(ours[ranked[row, m:]] <= 1e-12)
    assert compared >= 0.8 * len(result["steps"])


def test_unusual_queries_are_answered(case: tuple[pl.DataFrame, list[str]]) -> None:
    train, items = case
    popular = train.group_by("item_id").len().sort(["len", "item_id"], descending=[True, False])
    most_popular = items.index(popular.get_column("item_id")[0])
    known = train.get_column("item_id")[0]
    histories = [[], ["not-an-item"], [known], ["not-an-item", known, "nope"]]
    for cls in CLASSES.values():
        model = cls().fit(train, items)
        ranked = model.recommend(histories, None, len(items) + 5)
        # k beyond the catalogue: every item once, then -1 padding.
        assert ranked.shape == (4, len(items) + 5)
        assert np.all(ranked[:, len(items) :] == -1)
        assert all(sorted(row[: len(items)]) == list(range(len(items))) for row in ranked)
        # Empty and all-unknown histories get the popularity backfill.
        assert ranked[0, 0] == most_popular and ranked[1, 0] == most_popular
        np.testing.assert_array_equal(ranked[2], ranked[3])  # unknown items are ignored
        assert model.score(histories[:2]).max() == 0.0


def test_single_item_sessions_and_time_default(case: tuple[pl.DataFrame, list[str]]) -> None:
    train, items = case
    # The prepared clicks have no one-click sessions: keep the first click of each.
    only = train.group_by("session_id", maintain_order=True).first()
    model = STAN().fit(only, items)
    end = only.get_column("ts").max()
    history = [[only.get_column("item_id")[0]]]
    # Without times, a query is asked at the end of training.
    np.testing.assert_allclose(model.score(history), model.score(history, [end]))
    assert not np.allclose(model.score(history), model.score(history, [end + timedelta(days=9)]))
    # Single-item sessions give SR no rules: pure popularity.
    rules = SequentialRules().fit(only, items)
    assert rules.score(history).max() == 0.0


@pytest.mark.parametrize(
    ("cls", "params", "word"),
    [
        (VSKNN, {"k": 0}, "k"),
        (VSKNN, {"k": 2.5}, "k"),
        (VSKNN, {"sample_size": -1}, "sample_size"),
        (VSKNN, {"similarity": "jaccard"}, "similarity"),
        (VSKNN, {"weighting": "cubic"}, "weighting"),
        (VSKNN, {"weighting_score": "cubic"}, "weighting_score"),
        (VSKNN, {"idf_weighting": -1}, "idf_weighting"),
        (STAN, {"k": True}, "k"),
        (STAN, {"lambda_spw": 0}, "lambda_spw"),
        (STAN, {"lambda_snh": -5}, "lambda_snh"),
        (STAN, {"lambda_inh": float("nan")}, "lambda_inh"),
        (VSTAN, {"lambda_ipw": 0}, "lambda_ipw"),
        (VSTAN, {"lambda_idf": -0.1}, "lambda_idf"),
        (VSTAN, {"sample_size": 1.5}, "sample_size"),
        (SequentialRules, {"steps": 0}, "steps"),
        (SequentialRules, {"weighting": "exp"}, "weighting"),
        (SequentialRules, {"pruning": -1}, "pruning"),
        (SequentialRules, {"last_in_session": -1}, "last_in_session"),
        (SequentialRules, {"session_weighting": None}, "session_weighting"),
    ],
)
def test_bad_parameters_are_refused_by_name(cls: type, params: dict, word: str) -> None:
    with pytest.raises(ValueError, match=word):
        cls(**params)


def test_bad_times_are_refused(case: tuple[pl.DataFrame, list[str]]) -> None:
    train, items = case
    model = VSTAN().fit(train, items)
    with pytest.raises(ValueError, match="times"):
        model.recommend([["a"], ["b"]], None, 5, times=[datetime(2014, 4, 1)])
    with pytest.raises(ValueError, match="datetimes"):
        model.recommend([["a"]], None, 5, times=["yesterday"])


def test_tuning_holds_out_the_latest_sessions(case: tuple[pl.DataFrame, list[str]]) -> None:
    train, items = case
    horizon = timedelta(days=1)
    fit, histories, targets, times = holdout_queries(train, horizon)
    cut = train.get_column("ts").max() - horizon
    assert fit.get_column("ts").min() < cut and len(histories) == len(targets) == len(times)
    assert all(len(h) >= 1 for h in histories) and times.min() >= cut
    grid = [{"steps": 1}, {"steps": 10, "pruning": 0}]
    model, tuning = tune(SequentialRules, grid, train, items, horizon)
    assert tuning.best == grid[int(np.argmax(tuning.scores))] and tuning.n_queries > 0
    assert model.steps == tuning.best["steps"]
    with pytest.raises(ValueError, match="grid"):
        tune(SequentialRules, [], train, items, horizon)
    with pytest.raises(ValueError, match="horizon"):
        tune(SequentialRules, grid, train, items, timedelta(0))


def test_all_baselines_offer_them_default_or_tuned() -> None:
    names = [b.name for b in all_baselines(stan={"k": 50})]
    assert names[-4:] == ["vsknn", "stan", "vstan", "sr"]
    tuned = all_baselines(tune_horizon=timedelta(days=1))
    assert [b.name for b in tuned[-4:]] == ["vsknn_tuned", "stan_tuned", "vstan_tuned", "sr_tuned"]
    assert all(isinstance(b, Tuned) for b in tuned[-4:])
    with pytest.raises(ValueError, match="unknown"):
        session_baselines(knn={})


@pytest.mark.parametrize("cls", [VSKNN, STAN, VSTAN, SequentialRules])
def test_sparse_ranking_equals_the_dense_one(
    case: tuple[pl.DataFrame, list[str]], cls: type
) -> None:
    train, items = case
    model = cls().fit(train, items)
    histories = [q["history"] for q in REFERENCE["queries"]] + [[]]
    k = len(items) + 3
    sparse = model.recommend(histories, None, k)
    # The dense path: all scores in popularity-rank space, ties by lower column.
    dense = top_k_from_scores(model.score(histories)[:, model.order], k)
    np.testing.assert_array_equal(sparse, np.where(dense >= 0, model.order[dense], -1))
