"""Experiment metrics: attribution (by id, last touch, returns after their purchase), per-unit
metrics worked out by hand, per-variant summaries and operational guardrails; hostile frames
never lose or duplicate an outcome."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import polars as pl
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from pipeline.data.contracts import EXPOSURES, OUTCOMES
from pipeline.experiments.config import METRICS, UNIT_COLUMNS, Experiment
from pipeline.experiments.metrics import attribute, operational, unit_metrics, variant_summary

pytestmark = pytest.mark.unit

T0 = datetime(2026, 12, 4, 18, tzinfo=UTC)
DAY = timedelta(hours=24)


def rid(n: int) -> str:
    return f"r-{n:032x}"


def experiment(**over) -> Experiment:
    data = {
        "name": "ranker-v7",
        "salt": "s",
        "start": datetime(2026, 12, 1, tzinfo=UTC),
        "end": datetime(2026, 12, 15, tzinfo=UTC),
        "primary_metric": "net_kept_revenue_per_unit",
        "minimum_detectable_effect": 0.05,
        "variants": [
            {"name": "control", "model": "champion", "share": 0.5},
            {"name": "treatment", "model": "7", "share": 0.5},
        ],
        **over,
    }
    return Experiment.from_mapping(data)


def exposures(*rows: dict) -> pl.DataFrame:
    base = {
        "session_id": "s1",
        "customer_id": "c1",
        "experiment": "ranker-v7",
        "experiment_version": "v",
        "variant": "control",
        "model_version": "3",
        "teams": None,
        "latency_ms": 10.0,
        "degraded": False,
        "fallback": False,
        "ts": T0,
    }
    full = []
    for row in rows:
        merged = {**base, **row}
        merged["items"] = json.dumps(merged.get("items", ["I1", "I2"]), separators=(",", ":"))
        full.append(merged)
    return pl.DataFrame(full, schema=EXPOSURES.schema)


def outcomes(*rows: dict) -> pl.DataFrame:
    base = {
        "session_id": "s1",
        "customer_id": "c1",
        "event_type": "click",
        "item_id": "I1",
        "recommendation_id": None,
        "order_id": None,
        "quantity": 1,
        "price": None,
        "return_reason": None,
        "ts": T0 + timedelta(minutes=5),
    }
    return pl.DataFrame(
        [{**base, "event_id": f"o{n}", **row} for n, row in enumerate(rows)],
        schema=OUTCOMES.schema,
    )


def credited(exp: pl.DataFrame, out: pl.DataFrame, window: timedelta = DAY) -> list:
    result = attribute(exp, out, window=window)
    return list(zip(result["recommendation_id"], result["attribution"], strict=True))


def test_attribution_by_id():
    exp = exposures({"recommendation_id": rid(1)}, {"recommendation_id": rid(2), "ts": T0})
    out = outcomes({"recommendation_id": rid(1), "item_id": "I9"})  # item not in the answer
    assert credited(exp, out) == [(rid(1), "id")]


def test_attribution_by_id_outside_the_window_falls_back_to_last_touch():
    exp = exposures(
        {"recommendation_id": rid(1), "ts": T0 - 2 * DAY},
        {"recommendation_id": rid(2), "ts": T0},
    )
    out = outcomes({"recommendation_id": rid(1)})
    assert credited(exp, out) == [(rid(2), "last_touch")]


def test_last_touch_takes_the_latest_answer_with_the_item_within_the_window():
    exp = exposures(
        {"recommendation_id": rid(1), "ts": T0 - timedelta(hours=2)},
        {"recommendation_id": rid(2), "ts": T0 - timedelta(hours=1)},
        {"recommendation_id": rid(3), "ts": T0, "items": ["I7"]},  # latest, not the item
        {"recommendation_id": rid(4), "ts": T0 + timedelta(hours=1)},  # after the outcome
        {"recommendation_id": rid(5), "ts": T0, "customer_id": "c2"},  # someone else
    )
    out = outcomes({"ts": T0 + timedelta(minutes=1)})
    assert credited(exp, out) == [(rid(2), "last_touch")]


def test_anonymous_outcomes_are_matched_by_session():
    exp = exposures(
        {"recommendation_id": rid(1), "customer_id": None, "session_id": "anon"},
        {"recommendation_id": rid(2), "customer_id": None, "session_id": "other"},
    )
    out = outcomes({"customer_id": None, "session_id": "anon"})
    assert credited(exp, out) == [(rid(1), "last_touch")]


def test_outside_the_window_is_unattributed_and_kept():
    exp = exposures({"recommendation_id": rid(1), "ts": T0})
    out = outcomes(
        {"ts": T0 + DAY + timedelta(seconds=1)},
        {"ts": T0 - timedelta(seconds=1)},  # before any exposure
        {"recommendation_id": rid(99)},  # an id never served: last touch
        {"customer_id": "c3"},
    )
    assert credited(exp, out) == [(None, None), (None, None), (rid(1), "last_touch"), (None, None)]


def test_a_return_inherits_its_purchase_attribution():
    exp = exposures({"recommendation_id": rid(1)}, {"recommendation_id": rid(2), "ts": T0 + DAY})
    out = outcomes(
        {"event_type": "purchase", "recommendation_id": rid(1), "order_id": "A", "price": 10.0},
        # 3 days later, long after the window, with a newer answer showing the item
        {
            "event_type": "return",
            "return_reason": "too_small",
            "ts": T0 + 3 * DAY,
            "session_id": None,
        },
        # a return of an item never bought: last touch (none within the window)
        {"event_type": "return", "item_id": "I2", "return_reason": "style", "ts": T0 + 3 * DAY},
    )
    assert credited(exp, out) == [(rid(1), "id"), (rid(1), "purchase"), (None, None)]


def test_a_return_of_an_unattributed_purchase_stays_unattributed():
    exp = exposures({"recommendation_id": rid(1), "ts": T0 + timedelta(hours=1)})
    out = outcomes(
        {"event_type": "purchase", "ts": T0},  # before the answer
        {"event_type": "return", "return_reason": "other", "ts": T0 + timedelta(hours=2)},
    )
    assert credited(exp, out) == [(None, None), (None, None)]


def test_unit_metrics_by_hand():
    t = T0
    exp = exposures(
        {"recommendation_id": rid(1), "customer_id": "c1", "ts": t},
        {"recommendation_id": rid(2), "customer_id": "c1", "ts": t + timedelta(hours=1)},
        {"recommendation_id": rid(3), "customer_id": "c2", "variant": "treatment"},
        {"recommendation_id": rid(4), "customer_id": "c3", "variant": "treatment"},
        {"recommendation_id": rid(5), "customer_id": None, "session_id": "anon"},  # no unit
        {"recommendation_id": rid(6), "customer_id": "c1", "experiment": "other", "ts": t - DAY},
        {
            "recommendation_id": rid(7),
            "customer_id": "c4",
            "ts": datetime(2026, 12, 20, tzinfo=UTC),
        },
    )
    minute = timedelta(minutes=1)
    out = outcomes(
        {"customer_id": "c1", "recommendation_id": rid(1), "ts": t + minute},
        {"customer_id": "c1", "event_type": "add_to_cart", "ts": t + 2 * minute},
        {
            "customer_id": "c1",
            "event_type": "purchase",
            "order_id": "A",
            "quantity": 2,
            "price": 10.0,
            "ts": t + 2 * timedelta(hours=1),
        },
        {
            "customer_id": "c1",
            "event_type": "purchase",
            "item_id": "I2",
            "order_id": "A",
            "price": 30.0,
            "ts": t + 2 * timedelta(hours=1),
        },
        {
            "customer_id": "c1",
            "event_type": "purchase",
            "item_id": "I2",
            "price": 5.0,
            "ts": t + 3 * timedelta(hours=1),
        },  # no order id: an order of its own
        {
            "customer_id": "c1",
            "event_type": "return",
            "item_id": "I1",
            "return_reason": "too_large",
            "price": 10.0,
            "ts": t + 5 * DAY,
        },
        {
            "customer_id": "c1",
            "event_type": "return",
            "item_id": "I2",
            "return_reason": "style",
            "price": 5.0,
            "ts": t + 5 * DAY,
        },
        {"customer_id": "c2", "ts": t + minute},
        {"customer_id": "c9", "event_type": "purchase", "price": 99.0},  # nobody's
    )
    pre = outcomes(
        {"customer_id": "c2", "event_type": "purchase", "price": 20.0, "quantity": 3},
        {"customer_id": "c2", "event_type": "click"},
    )
    units = unit_metrics(exp, out, experiment(), pre_outcomes=pre)
    assert units.columns == ["variant", "unit", "day", *UNIT_COLUMNS]
    rows = {(r["variant"], r["unit"]): r for r in units.iter_rows(named=True)}
    assert set(rows) == {("control", "c1"), ("treatment", "c2"), ("treatment", "c3")}
    c1 = rows["control", "c1"]
    assert c1 == {
        "variant": "control",
        "unit": "c1",
        "day": date(2026, 12, 4),
        "exposures": 2,
        "clicks": 1,
        "add_to_carts": 1,
        "orders": 2,
        "converted": 1,
        "items": 4,
        "revenue": 55.0,
        "returns": 2,
        "size_returns": 1,
        "returned_revenue": 15.0,
        "net_revenue": 40.0,
        "pre_revenue": 0.0,
    }
    c2 = rows["treatment", "c2"]
    assert (c2["exposures"], c2["clicks"], c2["converted"], c2["pre_revenue"]) == (1, 1, 0, 60.0)
    assert rows["treatment", "c3"]["clicks"] == 0

    summary = variant_summary(units)
    assert summary.columns == ["variant", "units", *METRICS]
    control = summary.row(0, named=True)
    assert control["units"] == 1 and control["click_through_rate"] == 0.5
    assert control["items_per_order"] == 2.0 and control["return_rate"] == 0.5
    treatment = summary.row(1, named=True)
    assert treatment["units"] == 2 and treatment["conversion"] == 0.0
    assert treatment["return_rate"] is None  # no item bought

    by_session = unit_metrics(exp, out, experiment(unit="session"))
    sessions = {(r["variant"], r["unit"]): r["exposures"] for r in by_session.iter_rows(named=True)}
    assert sessions == {("control", "s1"): 2, ("control", "anon"): 1, ("treatment", "s1"): 2}


def test_operational_guardrails():
    exp = exposures(
        *[{"recommendation_id": rid(n), "latency_ms": float(n)} for n in range(1, 101)],
        {"recommendation_id": rid(200), "variant": "treatment", "degraded": True},
        {"recommendation_id": rid(201), "variant": "treatment", "fallback": True},
    )
    ops = operational(exp, experiment())
    control, treatment = ops.row(0, named=True), ops.row(1, named=True)
    assert control["answers"] == 100 and control["p99_latency_ms"] == pytest.approx(99.01)
    assert (treatment["degraded"], treatment["errors"], treatment["error_rate"]) == (1, 1, 0.5)


ids = st.sampled_from([None, rid(1), rid(2), rid(3), "junk"])
people = st.sampled_from([None, "c1", "c2"])
sessions = st.sampled_from([None, "s1", "s2"])
items = st.sampled_from([None, "I1", "I2"])
times = st.one_of(
    st.none(),
    st.integers(-72, 72).map(lambda h: T0 + timedelta(hours=h)),
)


@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    exposure_rows=st.lists(
        st.fixed_dictionaries(
            {
                "recommendation_id": ids,
                "customer_id": people,
                "session_id": sessions,
                "items": st.one_of(
                    st.none(), st.just("not json"), st.lists(items.filter(bool)).map(json.dumps)
                ),
                "variant": st.sampled_from([None, "control", "treatment"]),
                "ts": times,
            }
        ),
        max_size=8,
    ),
    outcome_rows=st.lists(
        st.fixed_dictionaries(
            {
                "event_id": st.sampled_from([None, "e1", "e2"]),  # duplicate ids
                "recommendation_id": ids,
                "customer_id": people,
                "session_id": sessions,
                "item_id": items,
                "event_type": st.sampled_from([None, "click", "purchase", "return", "junk"]),
                "order_id": st.sampled_from([None, "A"]),
                "quantity": st.sampled_from([None, 1, 3]),
                "price": st.sampled_from([None, 0.0, 12.5]),
                "return_reason": st.sampled_from([None, "too_small", "style"]),
                "ts": times,
            }
        ),
        max_size=10,
    ),
)
def test_hostile_frames_keep_every_outcome(exposure_rows, outcome_rows):
    exp = pl.DataFrame(
        exposure_rows,
        schema={
            "recommendation_id": pl.String,
            "customer_id": pl.String,
            "session_id": pl.String,
            "items": pl.String,
            "variant": pl.String,
            "ts": pl.Datetime("us", "UTC"),
        },
    ).with_columns(pl.lit("ranker-v7").alias("experiment"))
    out = pl.DataFrame(outcome_rows, schema={k: OUTCOMES.schema[k] for k in OUTCOMES.names})
    result = attribute(exp, out, window=DAY)
    assert result.height == out.height  # attributed + unattributed == outcomes
    assert result["event_id"].to_list() == out["event_id"].to_list()
    attributed = result.filter(pl.col("recommendation_id").is_not_null())
    assert attributed.height == result["attribution"].is_not_null().sum()
    served = set(exp["recommendation_id"].drop_nulls())
    assert set(attributed["recommendation_id"]) <= served
    units = unit_metrics(exp, out, experiment())
    assert units.columns == ["variant", "unit", "day", *UNIT_COLUMNS]
    assert units.select(pl.col("converted").is_in([0, 1]).all()).item() in (True, None)
    summary = variant_summary(units)
    assert summary["units"].sum() == units.height
    operational(exp, experiment())


def test_empty_frames():
    empty_exp = pl.DataFrame(schema=EXPOSURES.schema)
    empty_out = pl.DataFrame(schema=OUTCOMES.schema)
    assert attribute(empty_exp, empty_out, window=DAY).is_empty()
    assert attribute(pl.DataFrame(), pl.DataFrame(), window=DAY).is_empty()
    assert unit_metrics(empty_exp, empty_out, experiment()).is_empty()
    assert variant_summary(unit_metrics(empty_exp, empty_out, experiment())).is_empty()
    assert operational(empty_exp, experiment()).is_empty()
    lists = exposures({"recommendation_id": rid(1)}).with_columns(
        pl.col("items").str.json_decode(pl.List(pl.String))
    )
    assert credited(lists, outcomes({})) == [(rid(1), "last_touch")]
