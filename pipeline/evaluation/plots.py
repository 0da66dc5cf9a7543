"""The evaluation's pictures (logged to the candidate's MLflow run): calibration of P(fits)
and recall@20 by method and segment.

Readable first: legends sit outside the axes, never over the data, and every count a bar or
point stands for is on the figure.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from pipeline.evaluation.evaluate import Evaluation

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def calibration_figure(calibration: pl.DataFrame) -> Figure:
    """Observed share that fits against predicted P(fits), one point per bin; light bars on a
    second axis count the test rows behind each point (kept in the lower third)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], "--", color="grey", linewidth=1)
    ax.text(0.97, 0.9, "perfectly\ncalibrated", color="grey", ha="right", fontsize=8)
    counts = ax.twinx()
    counts.bar(calibration["predicted"], calibration["n"], width=0.04, color="lightgrey")
    counts.set_ylim(0, 3 * max([*calibration["n"].to_list(), 1]))
    counts.set_ylabel("test rows per bin (bars)", color="grey")
    counts.tick_params(axis="y", colors="grey")
    ax.set_zorder(counts.get_zorder() + 1)  # the points over the bars
    ax.patch.set_visible(False)
    ax.plot(calibration["predicted"], calibration["observed"], "o-")
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.02, 1.05)
    ax.set_xlabel("predicted P(fits)")
    ax.set_ylabel("observed share that fits")
    ax.set_title("fit head calibration (test rows with fit feedback)")
    return fig


def recall_by_segment_figure(table: pl.DataFrame) -> Figure:
    """Grouped bars of recall@20 (``table``: method, segment, examples, value): one group per
    method, the model first, then by overall recall; one bar per segment; the legend, with
    each segment's example count, below the axes."""
    plt = _pyplot()
    overall = table.filter(pl.col("segment") == "all")
    ranked = overall.sort([pl.col("method") != "model", pl.col("value")], descending=[False, True])
    methods = ranked.get_column("method").to_list()
    methods += [
        m for m in table.get_column("method").unique(maintain_order=True) if m not in methods
    ]
    segments = table.get_column("segment").unique(maintain_order=True).to_list()
    counts = dict(table.select("segment", "examples").unique().iter_rows())
    width = 0.8 / len(segments)
    fig, ax = plt.subplots(figsize=(8, 4))
    for j, segment in enumerate(segments):
        part = table.filter(pl.col("segment") == segment).select("method", "value")
        values = dict(part.iter_rows())
        xs = [i + (j - (len(segments) - 1) / 2) * width for i in range(len(methods))]
        heights = [values.get(m, float("nan")) for m in methods]
        ax.bar(xs, heights, width, label=f"{segment.replace('_', ' ')} (n={counts[segment]})")
    ax.set_xticks(range(len(methods)), [m.replace("_", "\n") for m in methods])
    ax.set_ylabel("recall@20")
    ax.set_ylim(0, 1)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.set_title("next-item recall@20 by method and segment (same test set)")
    ax.legend(
        loc="upper center",
        bbox_to_anchor=(0.5, -0.2),
        ncol=min(len(segments), 3),
        frameon=False,
        title="segment (test examples)",
    )
    return fig


def plots(evaluation: Evaluation, out: Path) -> list[Path]:
    """The evaluation's figures as PNG files in ``out``."""
    plt = _pyplot()
    out.mkdir(parents=True, exist_ok=True)
    figures: list[tuple[str, Figure]] = []
    if evaluation.calibration is not None:
        figures.append(("fit_calibration.png", calibration_figure(evaluation.calibration)))
    table = evaluation.segments.filter(pl.col("metric") == "recall@20")
    if not table.is_empty():
        figures.append(("recall_by_segment.png", recall_by_segment_figure(table)))
    paths = []
    for name, fig in figures:
        fig.savefig(out / name, bbox_inches="tight", dpi=120)
        plt.close(fig)
        paths.append(out / name)
    return paths
