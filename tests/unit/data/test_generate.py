import hashlib
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from pipeline.data.generate import (
    GeneratorConfig,
    build_world,
    fit_outcome,
    simulate_day,
    write_drops,
)

FIXTURES = Path(__file__).parents[2] / "fixtures"


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            h.update(path.relative_to(folder).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes(tmp_path):
    cfg = GeneratorConfig(customers=150, days=3, seed=3, dirty=0.01)
    write_drops(cfg, tmp_path / "a")
    write_drops(cfg, tmp_path / "b")
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    write_drops(GeneratorConfig(customers=150, days=3, seed=4), tmp_path / "c")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def _days(cfg, world, name):
    return pl.concat([simulate_day(cfg, world, d)[name] for d in range(cfg.days)])


def test_fit_feedback_mix_is_calibrated_to_rent_the_runway():
    reference = json.loads((FIXTURES / "rtr_reference.json").read_text())["fit_mix"]
    cfg = GeneratorConfig(customers=3000, days=5, seed=1)
    tries = _days(cfg, build_world(cfg), "try_ons")
    mix = tries["fit_feedback"].value_counts(normalize=True)
    share = dict(zip(mix["fit_feedback"], mix["proportion"], strict=True))
    assert share["fits"] == pytest.approx(reference["fit"], abs=0.04)
    assert share["too_small"] == pytest.approx(reference["small"], abs=0.04)
    assert share["too_large"] == pytest.approx(reference["large"], abs=0.04)


@pytest.mark.parametrize("column", ["height_cm", "weight_kg", "bust_cm"])
def test_body_marginals_match_rent_the_runway(column):
    reference = json.loads((FIXTURES / "rtr_reference.json").read_text())["marginals"][column]
    cfg = GeneratorConfig(customers=20_000, days=2, seed=5)
    world = build_world(cfg)
    values = world.customers[column].drop_nulls()
    assert values.mean() == pytest.approx(reference["mean"], abs=1.5)
    assert values.std() == pytest.approx(reference["std"], rel=0.15)
    for q, expected in zip(
        (0.05, 0.5, 0.95), (reference["q"][0], reference["q"][2], reference["q"][4]), strict=True
    ):
        assert values.quantile(q) == pytest.approx(expected, abs=0.06 * expected)


def test_age_bands_follow_rent_the_runway_ages():
    cfg = GeneratorConfig(customers=20_000, days=2, seed=5)
    bands = build_world(cfg).customers["age_band"].value_counts(normalize=True)
    share = dict(zip(bands["age_band"], bands["proportion"], strict=True))
    # RentTheRunway ages: median 32, 5% below 23, 5% above 50.
    assert share["25-34"] > 0.45 and share["18-24"] < 0.15 and share["55+"] < 0.04


def test_fit_outcome_follows_body_against_chart():
    chart = np.array([[[86.0, 92.0], [68.0, 74.0], [94.0, 100.0]]])  # size M
    on = fit_outcome(np.array([[89.0, 71.0, 97.0]]), chart, np.array([0.0]))
    big = fit_outcome(np.array([[100.0, 82.0, 106.0]]), chart, np.array([0.0]))
    small = fit_outcome(np.array([[80.0, 62.0, 88.0]]), chart, np.array([0.0]))
    body = np.array([[92.0, 74.0, 100.0]])
    runs_small = fit_outcome(body, chart, np.array([-1.0]))
    assert (on[0], big[0], small[0]) == (0, 1, -1)
    assert fit_outcome(body, chart, np.array([0.0]))[0] == 0
    assert runs_small[0] == 1  # same body, garment 4 cm smaller: too small


def test_returns_are_driven_by_misfit():
    cfg = GeneratorConfig(customers=3000, days=5, seed=2)
    p = _days(cfg, build_world(cfg), "purchases")
    misfit = p.filter(pl.col("return_reason").is_in(["too_small", "too_large"])).height
    assert misfit > 0.5 * p["returned"].sum()


def test_sessions_follow_successors_and_events_respect_launch_dates():
    cfg = GeneratorConfig(customers=2000, days=4, seed=9)
    world = build_world(cfg)
    events = _days(cfg, world, "session_events").filter(pl.col("event_type") == "view")
    ids = {item: i for i, item in enumerate(world.items["item_id"])}
    pairs = events.with_columns(pl.col("item_id").shift().over("session_id").alias("prev"))
    pairs = pairs.drop_nulls("prev")
    follows = [
        ids[cur] in world.successors[ids[prev]]
        for prev, cur in pairs.select("prev", "item_id").iter_rows()
    ]
    assert np.mean(follows) > 0.4  # planted: half the steps follow a successor
    launched_in_window = world.launch_day >= 0
    late_items = set(world.items.filter(pl.Series(launched_in_window))["item_id"])
    day0 = simulate_day(cfg, world, 0)["session_events"]
    assert not set(day0["item_id"]) & late_items
