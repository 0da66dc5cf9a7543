"""Business rules: every filter, boost and bury, MMR, caps, reasons, loading, and a property test.

Expected values are computed by hand in the comments; the property test checks every response
against an independent, row-by-row reference of the same rules.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np
import polars as pl
import pytest
import yaml
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from pipeline.data.contracts import SIZES
from pipeline.rules.compiled import CatalogueRules
from pipeline.rules.schema import (
    EXAMPLE_YAML,
    CategoryFilter,
    Context,
    PriceFilter,
    Rules,
    RulesError,
    load_rules,
)
from tests.unit.rules.reference import OUTPUT_SCHEMA, apply_rules

SCHEMA = pl.Schema(
    {
        "item_id": pl.String(),
        "score": pl.Float64(),
        "category": pl.String(),
        "brand": pl.String(),
        "style": pl.String(),
        "colour": pl.String(),
        "price": pl.Float64(),
        "recommended_size": pl.String(),
        "sizes_in_stock": pl.List(pl.String()),
    }
)
DEFAULTS: dict[str, Any] = {
    "category": "dress",
    "brand": "brand_01",
    "style": "classic",
    "colour": "black",
    "price": 50.0,
    "recommended_size": "M",
    "sizes_in_stock": ["M"],
}
NOBODY = Context()


def frame(*rows: dict[str, Any]) -> pl.DataFrame:
    """Candidates from partial rows; unspecified columns take DEFAULTS."""
    return pl.DataFrame([{**DEFAULTS, **row} for row in rows], schema=SCHEMA)


def ids(result: pl.DataFrame) -> list[str]:
    return result["item_id"].to_list()


def rules(**fields: Any) -> Rules:
    return Rules.from_mapping(fields)


# --- the model and its defaults -------------------------------------------------------------


def test_defaults_switch_everything_off_but_purchases():
    default = Rules()
    assert default.exclude_purchased is True
    assert not default.in_stock_in_recommended_size and not default.exclude_returned
    assert default.categories.include is None and default.categories.exclude == []
    assert default.price.min is None and default.price.max is None
    assert default.boost == [] and default.bury == []
    assert default.diversity.method == "none"
    assert default.max_per_brand is None and default.max_per_category is None
    assert Rules.from_mapping({}) == default
    assert all(f.description for f in Rules.model_fields.values())


def test_example_yaml_loads_and_round_trips(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text(EXAMPLE_YAML)
    loaded = load_rules(path)
    assert loaded == Rules.from_mapping(yaml.safe_load(EXAMPLE_YAML))
    assert loaded.diversity.method == "mmr" and loaded.diversity.lambda_ == 0.7
    assert loaded.boost[0].values == ["brand_03", "brand_07"] and loaded.bury[0].factor == 0.5
    assert loaded.categories.exclude == ["accessories"] and loaded.price.min == 10.0
    assert Rules.from_mapping(loaded.model_dump(by_alias=True)) == loaded


def test_toml_equals_yaml(tmp_path):
    path = tmp_path / "rules.toml"
    path.write_text(
        """
in_stock_in_recommended_size = true
exclude_returned = true
max_per_brand = 3
max_per_category = 4

[categories]
exclude = ["accessories"]

[price]
min = 10.0

[[boost]]
attribute = "brand"
values = ["brand_03", "brand_07"]
factor = 1.5

[[bury]]
attribute = "colour"
values = ["pink"]
factor = 0.5

[diversity]
method = "mmr"
lambda = 0.7
"""
    )
    assert load_rules(path) == Rules.from_mapping(yaml.safe_load(EXAMPLE_YAML))


# --- load errors name the file and the field ------------------------------------------------


def test_bad_yaml_field_names_file_and_field(tmp_path):
    path = tmp_path / "retailer.yaml"
    path.write_text("boost:\n  - attribute: size\n    values: [M]\n    factor: 2\n")
    with pytest.raises(RulesError) as info:
        load_rules(path)
    message = str(info.value)
    assert str(path) in message and "boost[0].attribute" in message
    assert "Traceback" not in message and info.value.__cause__ is None
    assert isinstance(info.value, ValueError)


def test_bad_toml_field_names_file_and_field(tmp_path):
    path = tmp_path / "retailer.toml"
    path.write_text('[diversity]\nmethod = "mmr"\nlambda = 1.5\n')
    with pytest.raises(RulesError) as info:
        load_rules(path)
    assert str(path) in str(info.value) and "diversity.lambda" in str(info.value)
    assert info.value.problems == (
        "diversity.lambda: Input should be less than or equal to 1 (got 1.5)",
    )


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("max_per_brnad: 2\n", "max_per_brnad: Extra inputs are not permitted"),
        ("max_per_brand: 0\n", "max_per_brand"),
        ("bury: [{attribute: colour, values: [pink], factor: 2}]\n", "bury[0].factor"),
        ("boost: [{attribute: brand, values: [b], factor: 0.5}]\n", "boost[0].factor"),
        ("boost: [{attribute: brand, values: [], factor: 2}]\n", "boost[0].values"),
        ("boost: [{attribute: category, values: [dres], factor: 2}]\n", "boost[0]: unknown"),
        ("categories: {include: [dress], exclude: [dress]}\n", "categories: categories"),
        ("categories: {include: []}\n", "categories.include"),
        ("price: {min: 50, max: 10}\n", "price: min (50.0) is above max"),
        ("diversity: {method: greedy}\n", "diversity.method"),
        ("exclude_purchased: maybe\n", "exclude_purchased"),
        ("- just a list\n", "<root>: expected a mapping"),
        ("boost: [\n", "not valid YAML"),
    ],
)
def test_each_bad_field_is_named(tmp_path, text, field):
    path = tmp_path / "r.yml"
    path.write_text(text)
    with pytest.raises(RulesError, match=r"r\.yml") as info:
        load_rules(path)
    assert field in str(info.value)


def test_unreadable_files(tmp_path):
    with pytest.raises(RulesError, match="cannot read"):
        load_rules(tmp_path / "missing.yaml")
    (tmp_path / "rules.json").write_text("{}")
    with pytest.raises(RulesError, match="unsupported suffix"):
        load_rules(tmp_path / "rules.json")
    (tmp_path / "broken.toml").write_text("[price\n")
    with pytest.raises(RulesError, match=r"broken\.toml.*not valid TOML"):
        load_rules(tmp_path / "broken.toml")
    (tmp_path / "empty.yaml").write_text("")
    assert load_rules(tmp_path / "empty.yaml") == Rules()


# --- filters ---------------------------------------------------------------------------------


def test_in_stock_in_recommended_size():
    candidates = frame(
        {"item_id": "a", "score": 5.0, "recommended_size": "M", "sizes_in_stock": ["M", "L"]},
        {"item_id": "b", "score": 4.0, "recommended_size": "S", "sizes_in_stock": ["M"]},
        {"item_id": "c", "score": 3.0, "recommended_size": None, "sizes_in_stock": ["L"]},
        {"item_id": "d", "score": 2.0, "recommended_size": None, "sizes_in_stock": []},
        {"item_id": "e", "score": 1.0, "recommended_size": "M", "sizes_in_stock": None},
    )
    assert ids(apply_rules(candidates, Rules(), NOBODY, 10)) == ["a", "b", "c", "d", "e"]
    result = apply_rules(candidates, rules(in_stock_in_recommended_size=True), NOBODY, 10)
    assert ids(result) == ["a", "c"]  # b: no S; d: nothing in stock; e: unknown stock
    assert result["reasons"].to_list() == [["in stock in your size M"], ["in stock"]]


def test_purchased_and_returned():
    candidates = frame({"item_id": "a", "score": 2.0}, {"item_id": "b", "score": 1.0})
    context = Context(purchased=frozenset({"a", "b"}), returned=frozenset({"b"}))
    assert ids(apply_rules(candidates, Rules(), context, 10)) == []
    only_returns = rules(exclude_purchased=False, exclude_returned=True)
    assert ids(apply_rules(candidates, only_returns, context, 10)) == ["a"]
    assert ids(apply_rules(candidates, rules(exclude_purchased=False), context, 10)) == ["a", "b"]


def test_categories_include_and_exclude():
    candidates = frame(
        {"item_id": "a", "score": 3.0, "category": "dress"},
        {"item_id": "b", "score": 2.0, "category": "top"},
        {"item_id": "c", "score": 1.0, "category": None},
    )
    include = rules(categories={"include": ["dress", "skirt"]})
    assert ids(apply_rules(candidates, include, NOBODY, 10)) == ["a"]  # null fails include
    exclude = rules(categories={"exclude": ["dress"]})
    assert ids(apply_rules(candidates, exclude, NOBODY, 10)) == ["b", "c"]  # null passes


def test_price_range_is_inclusive_and_drops_unknown_prices():
    candidates = frame(
        {"item_id": "a", "score": 5.0, "price": 9.99},
        {"item_id": "b", "score": 4.0, "price": 10.0},
        {"item_id": "c", "score": 3.0, "price": 20.0},
        {"item_id": "d", "score": 2.0, "price": 20.01},
        {"item_id": "e", "score": 1.0, "price": None},
        {"item_id": "f", "score": 0.0, "price": float("nan")},
    )
    assert ids(apply_rules(candidates, rules(price={"min": 10, "max": 20}), NOBODY, 9)) == [
        "b",
        "c",
    ]
    assert ids(apply_rules(candidates, rules(price={"min": 10}), NOBODY, 9)) == ["b", "c", "d"]
    assert len(apply_rules(candidates, Rules(), NOBODY, 9)) == 6  # no range: prices unread


def test_unrankable_and_repeated_rows():
    candidates = frame(
        {"item_id": "a", "score": float("nan")},
        {"item_id": None, "score": 9.0},
        {"item_id": "b", "score": 1.0, "category": "top"},
        {"item_id": "b", "score": 8.0, "category": "dress"},
        {"item_id": "c", "score": float("inf")},
    )
    assert ids(apply_rules(candidates, Rules(), NOBODY, 10)) == ["b"]
    result = apply_rules(candidates, rules(categories={"exclude": ["top"]}), NOBODY, 10)
    assert result.rows() == [("b", 8.0, [])]  # the first *passing* row of a repeated id


# --- boosts and buries -----------------------------------------------------------------------


def test_boost_moves_up_and_bury_down_even_for_negative_scores():
    candidates = frame(
        {"item_id": "a", "score": -3.0, "brand": "brand_03"},
        {"item_id": "b", "score": -2.5},
        {"item_id": "c", "score": -2.0, "colour": "pink"},
    )
    assert ids(apply_rules(candidates, Rules(), NOBODY, 3)) == ["c", "b", "a"]
    boosted = rules(
        boost=[{"attribute": "brand", "values": ["brand_03"], "factor": 2.0}],
        bury=[{"attribute": "colour", "values": ["pink"], "factor": 0.5}],
    )
    result = apply_rules(candidates, boosted, NOBODY, 3)
    # a: -3 + ln 2 = -2.3069; b: -2.5; c: -2 + ln 0.5 = -2.6931. (Multiplying the raw negative
    # score by 2 would have moved a *down*, to -6.)
    assert ids(result) == ["a", "b", "c"]
    assert result["score"].to_list() == pytest.approx([-3 + math.log(2), -2.5, -2 - math.log(2)])
    assert result["reasons"].to_list() == [["boosted: brand brand_03"], [], ["buried: colour pink"]]


def test_matching_rules_multiply_and_nulls_never_match():
    candidates = frame(
        {"item_id": "a", "score": 0.0, "brand": "brand_02", "style": "boho"},
        {"item_id": "b", "score": 0.0, "brand": None, "style": None},
    )
    stacked = rules(
        boost=[
            {"attribute": "brand", "values": ["brand_02"], "factor": 2.0},
            {"attribute": "style", "values": ["boho", "edgy"], "factor": 3.0},
            {"attribute": "brand", "values": ["brand_02"], "factor": 1.5},
        ]
    )
    result = apply_rules(candidates, stacked, NOBODY, 2)
    assert ids(result) == ["a", "b"]
    assert result["score"].to_list() == pytest.approx([math.log(2 * 3 * 1.5), 0.0])
    # The two brand rules give one reason, not two.
    assert result["reasons"][0].to_list() == ["boosted: brand brand_02", "boosted: style boho"]


def test_ties_keep_input_order():
    # 60 rows so NumPy would use an unstable introsort if the sort were not asked to be stable.
    candidates = frame(*({"item_id": f"i{i}", "score": float(i % 3 == 0)} for i in range(60)))
    expected = [f"i{i}" for i in range(0, 60, 3)] + ["i1", "i2", "i4"]
    assert ids(apply_rules(candidates, Rules(), NOBODY, 23)) == expected
    capped = rules(max_per_brand=100, diversity={"method": "mmr", "lambda": 1.0})
    assert ids(apply_rules(candidates, capped, NOBODY, 23)) == expected


# --- diversity -------------------------------------------------------------------------------

NEAR_DUPLICATES = frame(
    {"item_id": "a", "score": 1.0},
    {"item_id": "b", "score": 0.99},
    {"item_id": "c", "score": 0.5},
)
# b is almost a; c is orthogonal to both.
VECTORS = np.array([[1.0, 0.0], [0.999, 0.045], [0.0, 1.0]])


def mmr(lam: float) -> Rules:
    return rules(diversity={"method": "mmr", "lambda": lam})


def test_mmr_prefers_a_diverse_item_when_lambda_is_low():
    # Relevance (min-max): a 1, b 0.98, c 0. After a, with lambda 0.3:
    # b: 0.3 * 0.98 - 0.7 * cos(a, b) = 0.294 - 0.7 * 0.999 < 0;  c: 0.3 * 0 - 0.7 * 0 = 0.
    result = apply_rules(NEAR_DUPLICATES, mmr(0.3), NOBODY, 2, VECTORS)
    assert ids(result) == ["a", "c"]
    assert result["reasons"].to_list() == [[], ["more variety"]]
    assert result["score"].to_list() == [1.0, 0.5]  # MMR reorders; it does not rescore


def test_mmr_with_lambda_one_is_pure_relevance():
    result = apply_rules(NEAR_DUPLICATES, mmr(1.0), NOBODY, 3, VECTORS)
    assert ids(result) == ["a", "b", "c"]
    assert result["reasons"].to_list() == [[], [], []]


def test_mmr_without_vectors_uses_category_and_brand():
    candidates = frame(
        {"item_id": "a", "score": 1.0, "category": "dress", "brand": "brand_01"},
        {"item_id": "b", "score": 0.9, "category": "dress", "brand": "brand_01"},
        {"item_id": "c", "score": 0.5, "category": "top", "brand": "brand_02"},
    )
    # Relevance a 1, b 0.8, c 0. After a, lambda 0.5: b 0.4 - 0.5 * 1 = -0.1; c 0 - 0 = 0.
    assert ids(apply_rules(candidates, mmr(0.5), NOBODY, 2)) == ["a", "c"]
    # lambda 0.9: b 0.72 - 0.1 = 0.62 beats c's 0.
    assert ids(apply_rules(candidates, mmr(0.9), NOBODY, 2)) == ["a", "b"]


def test_mmr_first_pick_is_the_most_relevant_even_at_lambda_zero():
    result = apply_rules(NEAR_DUPLICATES, mmr(0.0), NOBODY, 1, VECTORS[::-1].copy())
    assert ids(result) == ["a"]


# --- caps ------------------------------------------------------------------------------------


def test_caps_per_brand_and_per_category():
    candidates = frame(
        {"item_id": "a", "score": 5.0, "brand": "brand_01", "category": "dress"},
        {"item_id": "b", "score": 4.0, "brand": "brand_01", "category": "top"},
        {"item_id": "c", "score": 3.0, "brand": "brand_02", "category": "dress"},
        {"item_id": "d", "score": 2.0, "brand": None, "category": "dress"},
        {"item_id": "e", "score": 1.0, "brand": None, "category": "top"},
    )
    assert ids(apply_rules(candidates, rules(max_per_brand=1), NOBODY, 5)) == ["a", "c", "d", "e"]
    assert ids(apply_rules(candidates, rules(max_per_category=1), NOBODY, 5)) == ["a", "b"]
    both = rules(max_per_brand=1, max_per_category=2)
    assert ids(apply_rules(candidates, both, NOBODY, 5)) == ["a", "c", "e"]
    # b is skipped for its brand, so it does not use up a "top" slot: e gets it.
    assert ids(apply_rules(candidates, both, NOBODY, 2)) == ["a", "c"]


def test_caps_apply_with_mmr_too():
    capped = rules(max_per_brand=1, diversity={"method": "mmr", "lambda": 1.0})
    assert ids(apply_rules(NEAR_DUPLICATES, capped, NOBODY, 3, VECTORS)) == ["a"]


# --- inputs ----------------------------------------------------------------------------------


def test_empty_results_keep_the_schema_and_bad_inputs_fail():
    candidates = frame({"item_id": "a", "score": 1.0})
    assert apply_rules(candidates, Rules(), NOBODY, 0).schema == OUTPUT_SCHEMA
    assert apply_rules(candidates.clear(), Rules(), NOBODY, 5).schema == OUTPUT_SCHEMA
    assert apply_rules(candidates, Rules(), NOBODY, 5).schema == OUTPUT_SCHEMA
    with pytest.raises(ValueError, match="k must be"):
        apply_rules(candidates, Rules(), NOBODY, -1)
    with pytest.raises(ValueError, match=r"\['brand'\]"):
        apply_rules(candidates.drop("brand"), rules(max_per_brand=1), NOBODY, 5)
    with pytest.raises(ValueError, match="shape"):
        apply_rules(candidates, mmr(0.5), NOBODY, 5, np.ones((2, 3)))
    with pytest.raises(ValueError, match="finite"):
        apply_rules(candidates, mmr(0.5), NOBODY, 5, np.full((1, 3), np.nan))
    # Columns no active rule reads may be absent.
    minimal = pl.DataFrame({"item_id": ["x", "y"], "score": [0.0, 1.0]})
    assert ids(apply_rules(minimal, Rules(), NOBODY, 5)) == ["y", "x"]


# --- property: the rules hold on every response ----------------------------------------------

POOL = [f"i{i:02d}" for i in range(14)]
VOCAB = {
    "category": ["dress", "top", "skirt"],
    "brand": ["brand_01", "brand_02", "brand_03"],
    "style": ["classic", "boho"],
    "colour": ["black", "pink"],
}
SHOP_SIZES = list(SIZES[:3])


@st.composite
def rule_sets(draw: st.DrawFn) -> Rules:
    """Random valid rule sets, built as plain data and validated through the pydantic model."""
    include = draw(st.none() | st.sets(st.sampled_from(VOCAB["category"]), min_size=1))
    # Include and exclude must be disjoint (the model rejects overlaps).
    others = [c for c in VOCAB["category"] if c not in (include or ())]
    exclude = draw(st.sets(st.sampled_from(others))) if others else set()
    low, high = draw(st.none() | st.floats(0, 200)), draw(st.none() | st.floats(0, 200))
    if low is not None and high is not None and low > high:
        low, high = high, low

    def score_rules(factors: st.SearchStrategy[float]) -> st.SearchStrategy[list[dict]]:
        attribute = st.sampled_from(sorted(VOCAB))
        rule = attribute.flatmap(
            lambda a: st.fixed_dictionaries(
                {
                    "attribute": st.just(a),
                    "values": st.lists(st.sampled_from(VOCAB[a]), min_size=1, max_size=2),
                    "factor": factors,
                }
            )
        )
        return st.lists(rule, max_size=2)

    data = {
        "in_stock_in_recommended_size": draw(st.booleans()),
        "exclude_purchased": draw(st.booleans()),
        "exclude_returned": draw(st.booleans()),
        "categories": {"include": sorted(include) if include else None, "exclude": sorted(exclude)},
        "price": {"min": low, "max": high},
        "boost": draw(score_rules(st.floats(1.01, 20))),
        "bury": draw(score_rules(st.floats(0.05, 0.99))),
        "diversity": {
            "method": draw(st.sampled_from(["none", "mmr"])),
            "lambda": draw(st.floats(0, 1)),
        },
        "max_per_brand": draw(st.none() | st.integers(1, 3)),
        "max_per_category": draw(st.none() | st.integers(1, 3)),
    }
    return Rules.from_mapping(data)


@st.composite
def candidate_tables(draw: st.DrawFn) -> pl.DataFrame:
    """Random candidates with unique ids, ties, negative scores, nulls and NaN prices."""
    n = draw(st.integers(0, len(POOL)))
    item_ids = draw(st.permutations(POOL))[:n]
    rows = []
    for item_id in item_ids:
        row: dict[str, Any] = {
            "item_id": item_id,
            "score": draw(st.sampled_from([-1.0, 0.0, 1.0]) | st.floats(-5, 5)),
            "price": draw(st.none() | st.just(float("nan")) | st.floats(0, 200)),
            "recommended_size": draw(st.none() | st.sampled_from(SHOP_SIZES)),
            "sizes_in_stock": draw(
                st.none() | st.lists(st.sampled_from(SHOP_SIZES), unique=True, max_size=3)
            ),
        }
        for column, values in VOCAB.items():
            row[column] = draw(st.none() | st.sampled_from(values))
        rows.append(row)
    return pl.DataFrame(rows, schema=SCHEMA)


def passes(row: dict[str, Any], rules: Rules, context: Context) -> bool:
    """A row-by-row reference of the filters, written independently of pipeline.rules."""
    if rules.in_stock_in_recommended_size:
        stock = row["sizes_in_stock"] or []
        size = row["recommended_size"]
        if not (size in stock if size is not None else len(stock) > 0):
            return False
    if rules.exclude_purchased and row["item_id"] in context.purchased:
        return False
    if rules.exclude_returned and row["item_id"] in context.returned:
        return False
    include, exclude = rules.categories.include, rules.categories.exclude
    if include is not None and row["category"] not in include:
        return False
    if row["category"] is not None and row["category"] in exclude:
        return False
    if rules.price.min is not None or rules.price.max is not None:
        price = row["price"]
        if price is None or math.isnan(price):
            return False
        if rules.price.min is not None and price < rules.price.min:
            return False
        if rules.price.max is not None and price > rules.price.max:
            return False
    return True


def boosted(row: dict[str, Any], rules: Rules) -> float:
    score = row["score"]
    for rule in [*rules.boost, *rules.bury]:
        if row[rule.attribute] is not None and row[rule.attribute] in rule.values:
            score += math.log(rule.factor)
    return score


def capped_out(row: dict[str, Any], rules: Rules, picked: list[dict[str, Any]]) -> bool:
    """Whether a cap stops ``row`` from joining ``picked`` (null brands/categories are uncapped)."""
    for column, cap in (("brand", rules.max_per_brand), ("category", rules.max_per_category)):
        if cap is not None and row[column] is not None:
            if sum(p[column] == row[column] for p in picked) >= cap:
                return True
    return False


# Derandomized so CI sees the same 150 cases every run; no deadline because the first call
# pays Polars' one-off start-up.
PROPERTY_CASES = hsettings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)


@st.composite
def lenient_rule_sets(draw: st.DrawFn) -> Rules:
    """:func:`rule_sets` with the category and price filters cleared in half the cases:
    random filters alone often leave no answer to check."""
    filters = draw(st.sampled_from(["cleared", "as drawn"]))
    rule_set = draw(rule_sets())
    if filters == "cleared":
        rule_set = rule_set.model_copy(
            update={"categories": CategoryFilter(), "price": PriceFilter()}
        )
    return rule_set


def item_vectors(seed: int | None, n: int) -> np.ndarray | None:
    """Random MMR vectors (every fourth one zero: zero vectors must not break the cosine)."""
    if seed is None:
        return None
    vectors = np.random.default_rng(seed).normal(size=(n, 3))
    vectors[::4] = 0.0
    return vectors


@PROPERTY_CASES
@given(
    rule_set=lenient_rule_sets(),
    candidates=candidate_tables(),
    purchased=st.sets(st.sampled_from(POOL), max_size=4),
    returned=st.sets(st.sampled_from(POOL), max_size=4),
    k=st.integers(0, 8),
    vector_seed=st.none() | st.integers(0, 2**16),
)
def test_rules_hold_on_every_response(rule_set, candidates, purchased, returned, k, vector_seed):
    context = Context(purchased=frozenset(purchased), returned=frozenset(returned))
    vectors = item_vectors(vector_seed, candidates.height)
    result = apply_rules(candidates, rule_set, context, k, vectors)

    assert result.schema == OUTPUT_SCHEMA
    assert result.height <= k
    assert result["item_id"].n_unique() == result.height  # no duplicates
    by_id = {row["item_id"]: row for row in candidates.iter_rows(named=True)}
    picked = [by_id[item_id] for item_id in result["item_id"]]
    for row, score, reasons in zip(picked, result["score"], result["reasons"], strict=True):
        assert passes(row, rule_set, context)
        if rule_set.exclude_purchased:
            assert row["item_id"] not in context.purchased
        assert score == pytest.approx(boosted(row, rule_set), abs=1e-9)
        assert all(isinstance(reason, str) and reason for reason in reasons)
        if rule_set.in_stock_in_recommended_size:
            assert reasons[0].startswith("in stock")
    for column, cap in (("brand", rule_set.max_per_brand), ("category", rule_set.max_per_category)):
        if cap is not None:
            counts = Counter(row[column] for row in picked if row[column] is not None)
            assert max(counts.values(), default=0) <= cap

    eligible = [row for row in candidates.iter_rows(named=True) if passes(row, rule_set, context)]
    if eligible and k > 0:
        # Every method starts from the top boosted score (first in input order among ties).
        top = max(eligible, key=lambda row: boosted(row, rule_set))
        assert picked[0]["item_id"] == top["item_id"]
    if result.height < k:
        # Nothing eligible was left out except by a cap.
        chosen = set(result["item_id"])
        assert all(
            capped_out(row, rule_set, picked) for row in eligible if row["item_id"] not in chosen
        )
    if rule_set.diversity.method == "none":
        # By score, input order among ties, skipping capped items: an exact reference.
        expected: list[dict[str, Any]] = []
        for row in sorted(eligible, key=lambda row: -boosted(row, rule_set)):
            if len(expected) < k and not capped_out(row, rule_set, expected):
                expected.append(row)
        assert [row["item_id"] for row in expected] == result["item_id"].to_list()


@PROPERTY_CASES
@given(
    rule_set=lenient_rule_sets(),
    catalogue=candidate_tables().filter(lambda table: table.height >= 3),
    data=st.data(),
    purchased=st.sets(st.sampled_from(POOL), max_size=3),
    returned=st.sets(st.sampled_from(POOL), max_size=3),
    k=st.integers(1, 8),
    vector_seed=st.none() | st.integers(0, 2**16),
)
def test_catalogue_rules_equal_apply_rules(
    rule_set, catalogue, data, purchased, returned, k, vector_seed
):
    """Serving's precompiled rules give exactly what apply_rules gives on the gathered frame:
    same items in the same order, bit-equal scores, same reasons."""
    n = catalogue.height
    indices = np.array(data.draw(st.permutations(range(n))), dtype=np.int64)
    indices = indices[: data.draw(st.integers(max(n - 2, 0), n))]
    scores = np.array(
        data.draw(st.lists(st.floats(-5, 5), min_size=len(indices), max_size=len(indices)))
    )
    sizes = data.draw(
        st.lists(
            st.none() | st.sampled_from(SHOP_SIZES), min_size=len(indices), max_size=len(indices)
        )
    )
    candidates = catalogue[indices.tolist()].with_columns(
        pl.Series("score", scores, pl.Float64), pl.Series("recommended_size", sizes, pl.String)
    )
    context = Context(purchased=frozenset(purchased), returned=frozenset(returned))
    vectors = item_vectors(vector_seed, len(indices))

    expected = apply_rules(candidates, rule_set, context, k, vectors)
    ids, got_scores, reasons = CatalogueRules(rule_set, catalogue).apply(
        indices, scores, sizes, context, k, vectors
    )

    assert list(ids) == expected["item_id"].to_list()
    assert got_scores.tolist() == expected["score"].to_list()
    assert reasons == expected["reasons"].to_list()
