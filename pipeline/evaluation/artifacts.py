"""An evaluation as files: the figures of :mod:`pipeline.evaluation.plots` and the tables
behind them, written for a candidate's MLflow run (under ``evaluation/``) and read back by a
notebook (``notebooks/model_report.ipynb``).

Tables are Parquet (segments, calibration, size confusion) and the fit head's metrics JSON,
so a reader gets the same numbers that were drawn.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from pipeline.evaluation.evaluate import Evaluation
from pipeline.evaluation.plots import plots

SEGMENTS = "segments.parquet"
CALIBRATION = "fit_calibration.parquet"
SIZE_CONFUSION = "size_confusion.parquet"
FIT_METRICS = "fit_metrics.json"
FIGURES = (
    "metrics_vs_baselines.png",
    "recall_by_segment.png",
    "fit_calibration.png",
    "size_confusion.png",
)


def write_evaluation(evaluation: Evaluation, out: Path) -> list[Path]:
    """Write an evaluation's tables and figures into ``out``.

    Args:
        evaluation: The evaluation of a candidate.
        out: A folder (created if missing).

    Returns:
        The files written: the tables present in ``evaluation``, then the figures.
    """
    out.mkdir(parents=True, exist_ok=True)
    evaluation.segments.write_parquet(out / SEGMENTS)
    paths = [out / SEGMENTS]
    for name, table in (
        (CALIBRATION, evaluation.calibration),
        (SIZE_CONFUSION, evaluation.size_confusion),
    ):
        if table is not None:
            table.write_parquet(out / name)
            paths.append(out / name)
    (out / FIT_METRICS).write_text(json.dumps(evaluation.fit, indent=2, sort_keys=True))
    paths.append(out / FIT_METRICS)
    return [*paths, *plots(evaluation, out)]


def read_evaluation(folder: Path) -> Evaluation:
    """An evaluation back from the files of :func:`write_evaluation`.

    ``metrics`` are rebuilt from the segments table (segment ``all``); a table that was not
    written (no fit feedback, no sizes) is None.

    Args:
        folder: The folder written by :func:`write_evaluation` (e.g. a run's downloaded
            ``evaluation/`` artifacts).

    Returns:
        The evaluation.

    Raises:
        FileNotFoundError: when ``folder`` holds no segments table.
    """
    if not (folder / SEGMENTS).exists():
        raise FileNotFoundError(f"{folder} holds no {SEGMENTS}: not an evaluation folder")
    segments = pl.read_parquet(folder / SEGMENTS)
    metrics: dict[str, dict[str, float]] = {}
    for method, metric, value in (
        segments.filter(pl.col("segment") == "all").select("method", "metric", "value").iter_rows()
    ):
        metrics.setdefault(method, {})[metric] = value

    def table(name: str) -> pl.DataFrame | None:
        return pl.read_parquet(folder / name) if (folder / name).exists() else None

    fit_path = folder / FIT_METRICS
    fit = json.loads(fit_path.read_text()) if fit_path.exists() else {}
    return Evaluation(
        metrics=metrics,
        segments=segments,
        fit=fit,
        calibration=table(CALIBRATION),
        size_confusion=table(SIZE_CONFUSION),
    )
