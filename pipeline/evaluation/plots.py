"""The evaluation's pictures (logged to the candidate's MLflow run): the model against its
baselines (with confidence intervals when the segments table has them), recall@20 by method
and segment, the reliability diagram of P(fits) with its ECE, and the size confusion matrix.

Readable first: legends sit outside the axes, never over the data, and every count a bar or
point stands for is on the figure.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from pipeline.evaluation.evaluate import Evaluation

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def calibration_figure(calibration: pl.DataFrame, ece: float | None = None) -> Figure:
    """Reliability diagram: observed share that fits against predicted P(fits), one point per
    bin; light bars on a second axis count the test rows behind each point (kept in the lower
    third). With ``ece`` the title gives the expected calibration error."""
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
    title = "fit head calibration (test rows with fit feedback)"
    if ece is not None:
        title += f"\nexpected calibration error {ece:.3f} (10 bins)"
    ax.set_title(title)
    return fig


BASELINE_METRICS = ("recall@20", "mrr@20")


def baselines_figure(segments: pl.DataFrame, metrics: tuple[str, ...] = BASELINE_METRICS) -> Figure:
    """The model and each baseline on all test examples, one panel per metric, the model
    first and the baselines by value; error bars from ``ci_low`` / ``ci_high`` when the
    table has those columns (a method without an interval has no bar drawn)."""
    plt = _pyplot()
    overall = segments.filter(pl.col("segment") == "all")
    has_ci = {"ci_low", "ci_high"} <= set(overall.columns)
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.5), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        part = overall.filter(pl.col("metric") == metric).sort(
            [pl.col("method") != "model", pl.col("value")], descending=[False, True]
        )
        methods = part.get_column("method").to_list()
        values = part.get_column("value").to_numpy()
        colours = ["tab:blue" if m == "model" else "tab:grey" for m in methods]
        ax.bar(range(len(methods)), values, color=colours)
        if has_ci and methods:
            low = part.get_column("ci_low").cast(pl.Float64).fill_null(float("nan")).to_numpy()
            high = part.get_column("ci_high").cast(pl.Float64).fill_null(float("nan")).to_numpy()
            known = ~(np.isnan(low) | np.isnan(high))
            spans = np.stack([values - low, high - values])[:, known]
            ax.errorbar(
                np.arange(len(methods))[known],
                values[known],
                yerr=spans,
                fmt="none",
                ecolor="black",
                capsize=3,
            )
        ax.set_xticks(range(len(methods)), [m.replace("_", "\n") for m in methods], fontsize=8)
        ax.set_title(metric)
        ax.set_ylim(0, max([*values.tolist(), 0.0]) * 1.25 or 1.0)
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    counted = "examples" in overall.columns and not overall.is_empty()
    suffix = (
        f", {int(overall.select(pl.col('examples').max()).item())} test examples" if counted else ""
    )
    ci = "; black bars: confidence interval" if has_ci else ""
    fig.suptitle(f"model against baselines (same test set{suffix}{ci})")
    fig.tight_layout()
    return fig


def size_confusion_figure(confusion: pl.DataFrame) -> Figure:
    """True size (rows) against the recommended size (columns), smallest first; every cell
    shows its count, and a last "none" column counts rows without a recommendation."""
    plt = _pyplot()
    true = confusion.select("true_size", "true_rank").unique().sort("true_rank", nulls_last=True)
    given = (
        confusion.filter(pl.col("recommended_size").is_not_null())
        .select("recommended_size", "recommended_rank")
        .unique()
        .sort("recommended_rank")
    )
    rows = true.get_column("true_size").to_list()
    columns = given.get_column("recommended_size").to_list()
    if confusion.get_column("recommended_size").null_count():
        columns.append(None)
    matrix = np.zeros((len(rows), len(columns)), dtype=np.int64)
    for t, r, n in confusion.select("true_size", "recommended_size", "n").iter_rows():
        matrix[rows.index(t), columns.index(r)] += n
    fig, ax = plt.subplots(figsize=(1 + 0.6 * max(len(columns), 3), 1 + 0.5 * max(len(rows), 3)))
    ax.imshow(matrix, cmap="Blues")
    top = matrix.max() or 1
    for (i, j), n in np.ndenumerate(matrix):
        colour = "white" if n > top / 2 else "black"
        ax.text(j, i, str(n), ha="center", va="center", fontsize=8, color=colour)
    ax.set_xticks(range(len(columns)), ["none" if c is None else c for c in columns])
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("recommended size")
    ax.set_ylabel("size that fitted")
    total = int(matrix.sum())
    right = int(sum(matrix[i, columns.index(t)] for i, t in enumerate(rows) if t in columns))
    ax.set_title(f"recommended vs fitting size ({right} of {total} exact)")
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
    if not evaluation.segments.filter(pl.col("metric").is_in(BASELINE_METRICS)).is_empty():
        figures.append(("metrics_vs_baselines.png", baselines_figure(evaluation.segments)))
    if evaluation.calibration is not None:
        ece = evaluation.fit.get("fit_ece")
        figures.append(("fit_calibration.png", calibration_figure(evaluation.calibration, ece)))
    table = evaluation.segments.filter(pl.col("metric") == "recall@20")
    if not table.is_empty():
        figures.append(("recall_by_segment.png", recall_by_segment_figure(table)))
    if evaluation.size_confusion is not None and not evaluation.size_confusion.is_empty():
        figures.append(("size_confusion.png", size_confusion_figure(evaluation.size_confusion)))
    paths = []
    for name, fig in figures:
        fig.savefig(out / name, bbox_inches="tight", dpi=120)
        plt.close(fig)
        paths.append(out / name)
    return paths
