"""The evaluation's figures are readable: legends outside the data, counts on the figure."""

from __future__ import annotations

import polars as pl
import pytest

from pipeline.evaluation.evaluate import Evaluation
from pipeline.evaluation.plots import (
    baselines_figure,
    calibration_figure,
    plots,
    recall_by_segment_figure,
    size_confusion_figure,
)

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


def test_calibration_title_gives_the_ece():
    fig = calibration_figure(CALIBRATION, ece=0.0423)
    assert "expected calibration error 0.042" in fig.axes[0].get_title()
    assert "calibration error" not in calibration_figure(CALIBRATION).axes[0].get_title()


BOTH = pl.concat([SEGMENTS, SEGMENTS.with_columns(pl.lit("mrr@20").alias("metric"))])


def test_baselines_figure_without_intervals_draws_bars_only():
    fig = baselines_figure(BOTH)
    recall, mrr = fig.axes
    assert recall.get_title() == "recall@20" and mrr.get_title() == "mrr@20"
    assert [round(p.get_height(), 2) for p in recall.patches] == [0.6, 0.62, 0.3]
    assert not recall.collections  # no error bars
    assert "interval" not in fig.get_suptitle()


def test_baselines_figure_draws_intervals_where_the_table_has_them():
    with_ci = BOTH.with_columns(
        (pl.col("value") - 0.05).alias("ci_low"),
        pl.when(pl.col("method") == "popularity")
        .then(None)
        .otherwise(pl.col("value") + 0.1)
        .alias("ci_high"),
    )
    fig = baselines_figure(with_ci)
    recall = fig.axes[0]
    (bars,) = recall.collections  # one set of error bars: model and session_knn only
    segments = bars.get_segments()
    assert [(round(s[0][1], 2), round(s[1][1], 2)) for s in segments] == [(0.55, 0.7), (0.57, 0.72)]
    assert "interval" in fig.get_suptitle()


CONFUSION = pl.DataFrame(
    {
        "true_size": ["S", "S", "M", "L"],
        "recommended_size": ["S", "M", "M", None],
        "true_rank": [0, 0, 1, 2],
        "recommended_rank": [0, 1, 1, None],
        "n": [5, 2, 7, 1],
    }
)


def test_size_confusion_matrix_counts_every_cell_and_the_unanswered():
    ax = size_confusion_figure(CONFUSION).axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["S", "M", "none"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["S", "M", "L"]
    assert [t.get_text() for t in ax.texts] == ["5", "2", "0", "0", "7", "0", "0", "0", "1"]
    assert ax.get_title() == "recommended vs fitting size (12 of 15 exact)"


def test_plots_write_every_png(tmp_path):
    evaluation = Evaluation(
        metrics={},
        segments=BOTH,
        fit={"fit_ece": 0.1},
        calibration=CALIBRATION,
        size_confusion=CONFUSION,
    )
    paths = plots(evaluation, tmp_path)
    assert [p.name for p in paths] == [
        "metrics_vs_baselines.png",
        "fit_calibration.png",
        "recall_by_segment.png",
        "size_confusion.png",
    ]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)


def test_plots_without_fit_feedback_leave_out_its_figures(tmp_path):
    paths = plots(Evaluation(metrics={}, segments=SEGMENTS), tmp_path)
    assert [p.name for p in paths] == ["metrics_vs_baselines.png", "recall_by_segment.png"]
