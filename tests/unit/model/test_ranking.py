"""pipeline.model.ranking: the rules compiled once per catalogue and rule set, and the
popularity answer (the scored path is held by the serving tests on a trained model)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import polars as pl

from pipeline.model.ranking import POPULAR_REASON, Ranked, Ranker, popular
from pipeline.rules.schema import Rules

CATALOGUE = pl.DataFrame(
    {
        "item_id": ["I1", "I2", "I3"],
        "category": ["dress", "top", "dress"],
        "brand": ["a", "b", "c"],
        "style": ["x", "y", "z"],
        "colour": ["red", "blue", "green"],
        "price": [10.0, 20.0, 30.0],
        "sizes_in_stock": [["M"], ["S"], ["L"]],
    }
)


def test_rules_compile_once_per_catalogue_and_rule_set():
    ranker = Ranker(candidates=10, weight=0.3)
    rules = Rules()
    first = ranker.compiled(CATALOGUE, rules)
    assert ranker.compiled(CATALOGUE, rules) is first
    assert ranker.compiled(CATALOGUE, Rules()) is not first  # new rules: compiled afresh
    assert ranker.compiled(CATALOGUE.clone(), rules) is not first  # a swapped catalogue


def test_popular_answers_in_popularity_order_with_its_reason():
    scorer = SimpleNamespace(item_ids=np.array(["I1", "I2", "I3"]))
    answer = popular(scorer, np.array([2, 0, 1]), 2)  # type: ignore[arg-type]
    assert answer == [
        Ranked("I3", 2.0, None, None, [POPULAR_REASON]),
        Ranked("I1", 1.0, None, None, [POPULAR_REASON]),
    ]
