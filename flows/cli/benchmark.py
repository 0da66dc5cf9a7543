"""``fitrec benchmark``: public datasets through the real pipeline, printed as JSON."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from pipeline.config import get_settings

benchmark_app = typer.Typer(help="Public benchmarks through the real pipeline; print JSON.")

TestUntil = Annotated[
    datetime | None,
    typer.Option(
        help="time split: where the test horizon ends (later rows are left out; default: the "
        "data's end)"
    ),
]


def _benchmark(
    dataset: str,
    train: Path,
    test: Path | None,
    log_to_mlflow: bool,
    split_at: datetime | None = None,
    test_until: datetime | None = None,
) -> None:
    import dataclasses
    import tempfile

    from pipeline.evaluation import public as benchmark

    if test is not None and split_at is not None:
        raise typer.BadParameter("--split-at cuts one file; with --test the files are the split")
    if test is not None and test_until is not None:
        raise typer.BadParameter("--test-until cuts one file; a given test file is used whole")
    spec = dataclasses.replace(benchmark.SPECS[dataset], split_at=split_at, test_until=test_until)
    with tempfile.TemporaryDirectory(prefix=f"fitrec-{dataset}-") as workdir:
        try:
            result = benchmark.run(
                benchmark.load(dataset, train, namespace="train" if test else None),
                spec,
                Path(workdir),
                test_source=benchmark.load(dataset, test, namespace="test") if test else None,
            )
        except ValueError as exc:
            typer.echo(f"benchmark {dataset}: {exc}", err=True)
            raise typer.Exit(2) from None
    if log_to_mlflow:
        from pipeline.registry.tracking import log_benchmark

        result["mlflow_run_id"] = log_benchmark(get_settings(), dataset, result)
    typer.echo(json.dumps(result, indent=2, default=float))


@benchmark_app.command("rtr")
def benchmark_rtr(
    train: Annotated[Path, typer.Option(help="RentTheRunway cleaned Parquet or raw JSON lines")],
    test: Annotated[Path | None, typer.Option(help="a separate test file")] = None,
    split: Annotated[str, typer.Option(help="time | random (80/10/10, Misra et al.)")] = "time",
    split_at: Annotated[
        datetime | None,
        typer.Option(
            help="time split: rows from this date on are the test set (default: last 60 days)"
        ),
    ] = None,
    test_until: TestUntil = None,
    mlflow: Annotated[bool, typer.Option(help="log to MLflow experiment 'benchmark-rtr'")] = True,
) -> None:
    """RentTheRunway: fit AUC of the fit head (and a GBDT), next-rental retrieval vs baselines."""
    if split not in ("time", "random"):
        raise typer.BadParameter("split must be time or random")
    if split == "random" and (split_at is not None or test_until is not None):
        raise typer.BadParameter("--split-at and --test-until are for the time split")
    dataset = "rtr" if split == "time" else "rtr-random"
    _benchmark(dataset, train, test, mlflow, split_at, test_until)


@benchmark_app.command("sessions")
def benchmark_sessions(
    format: Annotated[str, typer.Option("--format", help="yoochoose | diginetica")],
    train: Annotated[Path, typer.Option(help="click file")],
    test: Annotated[Path | None, typer.Option(help="a separate test file")] = None,
    split_at: Annotated[
        datetime | None,
        typer.Option(
            help="sessions starting from this time on are the test set (default: last day / week)"
        ),
    ] = None,
    test_until: TestUntil = None,
    mlflow: Annotated[
        bool, typer.Option(help="log to MLflow experiment 'benchmark-<format>'")
    ] = True,
) -> None:
    """Session click streams: HR@20, MRR@20, NDCG of the model and every baseline."""
    if format not in ("yoochoose", "diginetica"):
        raise typer.BadParameter("format must be yoochoose or diginetica")
    _benchmark(format, train, test, mlflow, split_at, test_until)
