"""The whole analysis: verdicts (a sample ratio mismatch blocks, a breached guardrail
overrides a win, losses, holdouts) on simulated data where the answer is known."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.experiments.analysis import VERDICTS, analyse
from pipeline.experiments.config import METRICS, UNIT_COLUMNS
from tests.unit.experiments.units import (
    experiment,
    operational,
    simulate,
)

pytestmark = pytest.mark.unit


def test_simulated_frame_has_every_unit_column():
    assert set(UNIT_COLUMNS) <= set(simulate(10, 10).columns)


def test_analyse_blocks_on_a_sample_ratio_mismatch():
    units = simulate(5000, 5400, lift=0.3, seed=9)
    result = analyse(units, experiment(), operational=operational())
    assert result.srm.mismatch
    assert result.verdict == "blocked: sample ratio mismatch" and result.winner is None
    # the differences are still reported
    assert result.primary[0].significant()


def test_analyse_declares_a_clean_winner():
    result = analyse(
        simulate(3000, 3000, lift=0.15, seed=10), experiment(), operational=operational()
    )
    assert result.verdict == "treatment wins" and result.winner == "treatment"
    assert [d.method for d in result.primary] == ["fixed+cuped"]
    assert [d.method for d in result.sequential] == ["msprt"]
    assert {d.metric for d in result.metrics} == set(METRICS)
    assert not any(g["breached"] for g in result.guardrails)
    cumulative = result.cumulative
    assert cumulative.columns[:5] == ["day", "variant", "relative", "relative_low", "relative_high"]
    assert cumulative.height == 7 and cumulative["day"].is_sorted()
    assert (cumulative["p_value"].diff().drop_nulls() <= 0).all()  # running minimum
    last = cumulative.row(-1, named=True)
    assert last["relative_low"] == pytest.approx(result.sequential[0].relative_low)
    json.dumps(result.as_dict())


def test_a_breached_guardrail_overrides_a_win():
    units = simulate(3000, 3000, lift=0.15, seed=10)
    degraded = analyse(units, experiment(), operational=operational(degraded_treatment=80))
    assert degraded.verdict == "guardrail breached" and degraded.winner is None
    row = next(g for g in degraded.guardrails if g["guardrail"] == "degraded_share")
    assert row["breached"] and row["p_adjusted"] >= row["p_value"]
    slow = analyse(units, experiment(), operational=operational(latency_treatment=125.0))
    assert slow.verdict == "guardrail breached"
    within = analyse(units, experiment(), operational=operational(latency_treatment=115.0))
    assert within.verdict == "treatment wins"


def test_analyse_reports_a_loss_and_no_difference():
    worse = analyse(simulate(3000, 3000, lift=-0.15, seed=11), experiment())
    assert worse.verdict == "treatment loses"
    flat = analyse(simulate(3000, 3000, seed=12), experiment())
    assert flat.verdict == "no significant difference yet"
    # operational guardrails without operational data are reported, not breached
    assert any(g.get("note") == "no operational data" for g in flat.guardrails)


def test_holdout_arms_are_compared_with_the_control(tmp_path: Path):
    exp = experiment(
        variants=[
            {"name": "control", "model": "champion", "share": 0.4},
            {"name": "treatment", "model": "7", "share": 0.4},
            {"name": "holdout", "holdout": True, "share": 0.2},
        ]
    )
    units = simulate(2000, 2000, seed=13, names=("control", "treatment", "holdout"))
    # 2000 / 2000 / 2000 against 40 / 40 / 20 is itself a mismatch
    result = analyse(units, exp)
    assert [d.treatment for d in result.primary] == ["treatment", "holdout"]
    assert result.verdict == "blocked: sample ratio mismatch"
    out = result.plot(tmp_path / "lift.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = result.to_markdown()
    assert "holdout" in markdown and "blocked: sample ratio mismatch" in markdown


def test_verdicts_are_the_declared_ones():
    assert len(VERDICTS) == 5 and VERDICTS[0] == "blocked: sample ratio mismatch"
