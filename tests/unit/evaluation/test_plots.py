"""The evaluation's figures are readable: legends outside the data, counts on the figure."""

from __future__ import annotations

import polars as pl
import pytest

from pipeline.evaluation.evaluate import Evaluation
from pipeline.evaluation.plots import calibration_figure, plots, recall_by_segment_figure

pytestmark = pytest.mark.unit

SEGMENTS = pl.DataFrame(
    [
        (method, segment, n, "recall@20", value)
        for method, base in (("popularity", 0.3), ("model", 0.6), ("session_knn", 0.62))
        for segment, n, value in (
            ("all", 100, base),
            ("new", 30, base - 0.1),
            ("returning", 70, 0.9),
        )
    ],
    schema=["method", "segment", "examples", "metric", "value"],
    orient="row",
)
CALIBRATION = pl.DataFrame(
    {"bin": [1, 5], "predicted": [0.15, 0.55], "observed": [0.1, 0.6], "n": [12, 40]}
)


def test_recall_legend_is_outside_the_bars_and_names_counts():
    fig = recall_by_segment_figure(SEGMENTS)
    fig.canvas.draw()
    ax = fig.axes[0]
    legend = ax.get_legend()
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    assert not legend.get_window_extent(renderer).overlaps(ax.get_window_extent(renderer))
    assert [t.get_text() for t in legend.get_texts()] == [
        "all (n=100)",
        "new (n=30)",
        "returning (n=70)",
    ]
    # The model first, then the baselines by overall recall.
    assert [t.get_text() for t in ax.get_xticklabels()] == ["model", "session\nknn", "popularity"]


def test_calibration_shows_rows_per_bin_and_no_legend_over_points():
    fig = calibration_figure(CALIBRATION)
    ax, counts = fig.axes
    assert ax.get_legend() is None
    assert [round(p.get_height()) for p in counts.patches] == [12, 40]
    assert counts.get_ylim()[1] == 120  # the bars stay in the lower third


def test_plots_write_both_pngs(tmp_path):
    evaluation = Evaluation(metrics={}, segments=SEGMENTS, calibration=CALIBRATION)
    paths = plots(evaluation, tmp_path)
    assert [p.name for p in paths] == ["fit_calibration.png", "recall_by_segment.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)
