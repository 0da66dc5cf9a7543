import math

import numpy as np
import pytest

from pipeline.features.garment_fit import fit_match

# Charts whose size rank 2 is centred exactly on the reference body (all z = 0):
# bust 94.4, waist 74, hips 99 cm.
CHART = {
    "chart_bust_lo": 84.4,
    "chart_bust_step": 5.0,
    "chart_waist_lo": 62.0,
    "chart_waist_step": 6.0,
    "chart_hips_lo": 89.0,
    "chart_hips_step": 5.0,
    "n_sizes": 6.0,
}


def _one(**values):
    columns = {
        k: [v]
        for k, v in {
            **CHART,
            "bust_z": 0.0,
            "waist_z": 0.0,
            "hips_z": 0.0,
            "sizing_bias": 0.0,
            **values,
        }.items()
    }
    return {k: float(v[0]) for k, v in fit_match(columns).items()}


def test_body_on_a_size_centre():
    got = _one()
    assert got == {"fit_rank_estimate": 2.0, "recommended_size_rank": 2.0, "fit_spread": 0.0}


def test_an_item_that_runs_small_calls_for_a_larger_size():
    got = _one(sizing_bias=-1.0)  # garment 4 cm smaller than its chart
    expected = np.mean([(94.4 - 80.4) / 5, (74 - 58) / 6, (99 - 85) / 5])
    assert got["fit_rank_estimate"] == pytest.approx(expected, rel=1e-5)
    assert got["recommended_size_rank"] == 3.0


def test_bigger_body_and_clipping_to_the_chart():
    assert _one(bust_z=1.0, waist_z=1.0, hips_z=1.0)["recommended_size_rank"] == 3.0
    assert _one(bust_z=4.0, waist_z=4.0, hips_z=4.0, n_sizes=4.0)["recommended_size_rank"] == 3.0


def test_unknowns():
    no_body = _one(bust_z=None, waist_z=None, hips_z=None)
    assert math.isnan(no_body["fit_rank_estimate"]) and no_body["recommended_size_rank"] == -1.0
    no_chart = _one(chart_bust_lo=None, chart_waist_lo=None, chart_hips_lo=None, n_sizes=None)
    assert no_chart["recommended_size_rank"] == -1.0
    partial = _one(waist_z=None, hips_z=None)  # one measure still gives an answer
    assert partial["fit_rank_estimate"] == 2.0 and partial["fit_spread"] == 0.0


def test_fit_table_equals_fit_inputs():
    import polars as pl

    from pipeline.features.garment_fit import FitTable, fit_inputs

    rng = np.random.default_rng(0)
    items = pl.DataFrame(
        {
            "item_id": ["a", "b", "c"],
            "category": ["dress", "top", "other"],
            "fit_skew": [0.1, -0.2, None],
            "sizing_bias": [0.0, -0.5, 0.3],
            "n_sizes": [3.0, 2.0, None],
            **{
                f"chart_{m}_{p}": rng.uniform(5, 90, 3).tolist()
                for m in ("bust", "waist", "hips")
                for p in ("lo", "step")
            },
        }
    )
    sizes = pl.DataFrame(
        {"item_id": ["a", "a", "a", "b", "b", "c"], "size": ["S", "M", "L", "XS", "S", "38"]}
    )
    customer = {
        "fit_size_rank": 2.0,
        "fit_size_dress": 1.0,
        "fit_size_top": -1.0,
        "bust_z": 0.5,
        "waist_z": None,
        "hips_z": -0.25,
        "tryon_small_rate": 0.2,
        "tryon_large_rate": 0.1,
    }
    table = FitTable(items, sizes, ["a", "b", "c"])
    rows = table.rows(np.array([0, 1, 2]))
    no_body = {**customer, "bust_z": None, "hips_z": None}
    one_measure = {**customer, "bust_z": None, "waist_z": -1.2}
    for who in (customer, no_body, one_measure):
        frame = sizes.join(items, on="item_id", how="left", maintain_order="left").with_columns(
            pl.lit(v, pl.Float64).alias(k) for k, v in who.items()
        )
        np.testing.assert_allclose(table.inputs(who, rows), fit_inputs(frame), rtol=1e-6)


def test_best_sizes_take_the_most_likely_size_first_on_ties():
    import polars as pl

    from pipeline.features.garment_fit import FitTable

    rng = np.random.default_rng(4)
    ids = ["a", "b", "c", "d", "e"]  # "e" has no size chart
    owners = rng.choice(ids[:4], 60)
    sizes = pl.DataFrame({"item_id": owners, "size": rng.choice(["XS", "S", "M", "L"], 60)})
    items = pl.DataFrame({"item_id": ids, "category": ["dress"] * 5, "fit_skew": [0.0] * 5})
    table = FitTable(items, sizes, ids)
    asked = np.array([3, 4, 0, 2, 1])  # in any order, one without sizes
    rows = table.rows(asked)
    fits = rng.choice([0.1, 0.5, 0.7, 0.9], len(rows))  # many ties
    expected: dict[str, tuple[str, float]] = {}
    for row, p in zip(rows.tolist(), fits.tolist(), strict=True):
        item = ids[table.item_index[row]]
        if item not in expected or p > expected[item][1]:  # the first of equals stays
            expected[item] = (str(table.sizes[row]), p)
    got = table.best_sizes([ids[i] for i in asked], asked, fits)
    assert got == expected and "e" not in got
    assert table.best_sizes([], np.zeros(0, np.int64), np.zeros(0)) == {}
