"""The whole analysis: verdicts (a sample ratio mismatch blocks, a breached guardrail
overrides a win, losses, holdouts) on simulated data where the answer is known."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest

from pipeline.experiments.analysis import VERDICTS, analyse, lift_chart
from pipeline.experiments.config import METRICS, UNIT_COLUMNS
from tests.unit.experiments.units import (
    DAY0,
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


def test_the_report_draws_the_cumulative_lift_in_text():
    """The terminal report shows the lift over time: one line per look, the estimate inside
    its interval on an axis shared by every line, with zero marked."""
    cumulative = pl.DataFrame(
        {
            "day": [DAY0, DAY0 + timedelta(days=1), DAY0 + timedelta(days=2)],
            "variant": ["treatment"] * 3,
            "relative": [0.10, 0.06, float("nan")],
            "relative_low": [-0.30, -0.05, float("nan")],
            "relative_high": [0.50, 0.17, float("nan")],
            "p_value": [1.0, 0.4, 0.4],
        }
    )
    header, *rows = lift_chart(cumulative, width=41)
    assert "-30%" in header and "+50%" in header
    axes = [row[len(header) - len("-30% .. +50%") :].ljust(41) for row in rows]
    zero = round(0.30 / 0.80 * 40)  # 0 on an axis from -30 % to +50 %
    assert all(axis[zero] == "|" for axis in axes)
    first, second, third = axes
    assert first.index("o") == round(0.40 / 0.80 * 40)
    assert first.strip(" ").startswith("-") and first.rstrip(" ").endswith("-")
    assert len(second.strip(" ")) < len(first.strip(" "))  # the band narrows
    assert "o" not in third and "n/a" in rows[2]  # nothing drawn for an undefined look
    assert lift_chart(cumulative.clear()) == ["(no finite interval yet)"]

    result = analyse(simulate(400, 400, lift=0.3, seed=21), experiment())
    report = result.to_markdown()
    assert "## Cumulative lift" in report
    assert report.count("\n2026-12-") == result.cumulative.height
