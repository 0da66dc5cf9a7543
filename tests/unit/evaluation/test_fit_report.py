"""The fit head's report on hand-made rows: calibration, customer kinds, size baselines."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from pipeline.evaluation.fit_report import (
    calibration_table,
    expected_calibration_error,
    fit_auc_by_customer,
    item_chart_sizes,
    population_chart,
    population_chart_sizes,
    size_confusion,
    size_ranks,
    training_customers,
    usual_sizes,
)
from pipeline.model.config import PAD

CATEGORIES = pl.DataFrame({"item_id": ["d1", "d2", "t1"], "category": ["dress", "dress", "top"]})


def test_ece_is_the_row_weighted_gap_per_bin():
    # Bin 1: 0.1 and 0.15 predicted, 1 of 2 fits (gap |0.5 - 0.125| = 0.375);
    # bin 9: 0.9 predicted three times, all fit (gap 0.1). Weighted: (2 * .375 + 3 * .1) / 5.
    predicted = np.array([0.1, 0.15, 0.9, 0.9, 0.9])
    observed = np.array([True, False, True, True, True])
    table = calibration_table(predicted, observed)
    assert table.get_column("bin").to_list() == [1, 9]
    assert table.get_column("n").to_list() == [2, 3]
    assert expected_calibration_error(table) == pytest.approx((2 * 0.375 + 3 * 0.1) / 5)


def test_probability_one_lands_in_the_last_bin_and_bad_input_is_refused():
    assert calibration_table(np.array([1.0]), np.array([True])).get_column("bin").to_list() == [9]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        calibration_table(np.array([np.nan]), np.array([True]))
    with pytest.raises(ValueError, match="two"):
        calibration_table(np.array([0.5, 0.5]), np.array([True]))
    assert expected_calibration_error(calibration_table(np.zeros(0), np.zeros(0, bool))) == 0.0


def test_fit_auc_by_customer_kind():
    # Seen: perfectly ranked; unseen: inverted for "fits" and the two others.
    y = np.array([1, 0] * 10 + [1, 0] * 10)
    good = np.where(y[:, None] == np.arange(3), 0.8, 0.1)
    bad = np.where(y[:, None] == np.arange(3), 0.1, 0.8)
    seen = np.arange(40) < 20
    out = fit_auc_by_customer(y, np.where(seen[:, None], good, bad), seen)
    assert out == {
        "fit_examples_seen": 20.0,
        "fit_auc_seen": 1.0,
        "fit_examples_unseen": 20.0,
        "fit_auc_unseen": 0.0,
    }
    # Too few unseen examples: the count, no AUC.
    few = fit_auc_by_customer(y[:25], good[:25], np.arange(25) < 20)
    assert few["fit_examples_unseen"] == 5.0 and "fit_auc_unseen" not in few


def test_training_customers_leave_out_the_anonymous_pad():
    train = pl.DataFrame({"customer_id": ["a", PAD, "b", "a"]})
    assert training_customers(train) == {"a", "b"}


def test_usual_size_prefers_the_category_then_overall_and_has_no_answer_for_strangers():
    train = pl.DataFrame(
        {
            "customer_id": ["a", "a", "a", "a", "b", PAD],
            "item_id": ["d1", "d2", "t1", "t1", "t1", "d1"],
            "size": ["M", "M", "S", "S", None, "XL"],
        }
    )
    # a: dresses M (2), tops S (2): ties overall go to the smaller size (S).
    rows = pl.DataFrame(
        {"customer_id": ["a", "a", "b", "c", PAD], "item_id": ["d2", "t1", "d1", "d1", "d1"]}
    )
    got = usual_sizes(rows, train, CATEGORIES).to_list()
    assert got == ["M", "S", None, None, None]


def test_usual_size_falls_back_to_overall_for_a_new_category():
    train = pl.DataFrame({"customer_id": ["a"], "item_id": ["t1"], "size": ["L"]})
    rows = pl.DataFrame({"customer_id": ["a"], "item_id": ["d1"]})
    assert usual_sizes(rows, train, CATEGORIES).to_list() == ["L"]


def test_item_chart_reads_the_size_whose_ranges_hold_the_body():
    sizes = pl.DataFrame(
        {
            "item_id": ["d1", "d1", "d1"],
            "size": ["S", "M", "L"],
            "bust_min": [84.0, 90.0, 96.0],
            "bust_max": [90.0, 96.0, 102.0],
            "hips_min": [90.0, 96.0, 102.0],
            "hips_max": [96.0, 102.0, 108.0],
        }
    )
    # bust_z 0 -> 94.4 cm (M); hips_z 0 -> 99 cm (M). bust_z 2 -> 105.4 cm (outside L by 3.4).
    rows = pl.DataFrame(
        {
            "item_id": ["d1", "d1", "d1", "t1"],
            "bust_z": [0.0, 2.0, None, 0.0],
            "hips_z": [0.0, None, None, 0.0],
        }
    )
    assert item_chart_sizes(rows, sizes).to_list() == ["M", "L", None, None]
    assert item_chart_sizes(rows, None).to_list() == [None] * 4


def test_population_chart_is_the_most_common_fitting_size_per_category_and_band():
    train = pl.DataFrame(
        {
            "item_id": ["d1", "d2", "d1", "t1", "d1"],
            "fit_label": [1, 1, 1, 1, 0],  # the "small" row does not count
            "size": ["8", "8", "10", "4", "2"],
            "bust_z": [0.2, 0.9, 0.5, 0.2, 0.1],
            "weight_z": [None, None, None, None, None],
        }
    )
    chart = population_chart(train, CATEGORIES)
    assert sorted(chart.get_column("size").to_list()) == ["4", "8"]
    rows = pl.DataFrame(
        {
            "item_id": ["d2", "t1", "d1", "d1"],
            "bust_z": [0.7, 0.0, -1.5, None],
            "weight_z": [None, None, None, None],
        }
    )
    # Same band as the training dresses; a top; a band nobody was in; no body data.
    assert population_chart_sizes(rows, chart, CATEGORIES).to_list() == ["8", "4", None, None]


def test_size_ranks_share_one_scale_and_confusion_counts_pairs():
    true = pl.Series(["S", "M", "M", "L"])
    recommended = pl.Series(["S", "L", "M", None])
    ranks = size_ranks(true, recommended)
    assert ranks[0].tolist() == [0, 1, 1, 2]
    assert ranks[1][:3].tolist() == [0, 2, 1] and np.isnan(ranks[1][3])
    numeric = size_ranks(pl.Series(["2", "6"]), pl.Series(["4", "58"]))
    assert [r.tolist() for r in numeric] == [[0, 2], [1, 3]]
    table = size_confusion(true, recommended)
    assert table.select("true_size", "recommended_size", "n").rows() == [
        ("S", "S", 1),
        ("M", "M", 1),
        ("M", "L", 1),
        ("L", None, 1),
    ]
