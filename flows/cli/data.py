"""Data commands: generate raw drops, ingest them, adapt a public dataset, run Feast."""

from __future__ import annotations

import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Annotated

import typer

from flows.cli.common import print_table, progress_bar
from pipeline.config import get_settings


def generate(
    customers: int = typer.Option(2_000, min=10, help="number of customers"),
    days: int = typer.Option(14, min=2, help="days of activity (one drop per day)"),
    seed: int = typer.Option(7, help="random seed; same seed, same bytes"),
    out: Path | None = typer.Option(None, help="output folder (default: <data_dir>/raw)"),
    dirty: float = typer.Option(0.005, min=0.0, max=0.5, help="share of faulty rows"),
) -> None:
    """Write deterministic raw drops (one folder per day), with progress and a summary."""
    from pipeline.data.generate import GeneratorConfig, write_drops

    target = out or get_settings().raw_dir
    config = GeneratorConfig(customers=customers, days=days, seed=seed, dirty=dirty)
    with progress_bar() as progress:
        task = progress.add_task("generating days", total=days)
        counts = write_drops(config, target, lambda d, _: progress.update(task, completed=d + 1))
    print_table(f"generated into {target}", ["table", "rows"], [[k, v] for k, v in counts.items()])


def ingest(
    run_date: Annotated[
        str | None, typer.Option("--date", help="ingest drops up to YYYY-MM-DD (default: all)")
    ] = None,
    raw: Annotated[
        Path | None, typer.Option(help="raw drops folder (default: <data_dir>/raw)")
    ] = None,
) -> None:
    """Ingest raw drops and serving's event log into curated Parquet and quarantine, with
    progress and a summary; days unchanged since their last ingest are skipped."""
    from pipeline.data.curated import days_to_ingest
    from pipeline.data.ingest import ingest_day

    settings = get_settings()
    up_to = date.fromisoformat(run_date) if run_date else date.max
    raw_dir = raw or settings.raw_dir
    # The same days and the same per-day step as the ``ingest`` flow (flows/ingest.py).
    days = days_to_ingest(raw_dir, settings.events_dir, up_to)
    if not days:
        raise typer.BadParameter(f"no raw drops in {raw_dir}")
    totals: dict[str, list[int]] = {}
    skipped = 0
    with progress_bar() as progress:
        task = progress.add_task("ingesting days", total=len(days))
        for day, folder in days:
            report, unchanged = ingest_day(folder, day, settings)
            skipped += unchanged
            for table, counts in report["tables"].items():
                row = totals.setdefault(table, [0, 0, 0, 0])
                for i, key in enumerate(("raw", "curated", "quarantined", "exact_duplicates")):
                    row[i] += counts[key]
            progress.advance(task)
    note = f" ({skipped} unchanged since their last ingest, skipped)" if skipped else ""
    print_table(
        f"ingested {len(days)} days into {settings.curated_dir}{note}",
        ["table", "raw", "curated", "quarantined", "exact duplicates"],
        [[table, *values] for table, values in totals.items()],
    )


def adapt(
    source: Annotated[
        str, typer.Argument(help="rtr | rtr-clean | modcloth | yoochoose | diginetica | hm")
    ],
    inputs: Annotated[
        list[Path], typer.Argument(help="input file(s); hm: articles customers transactions")
    ],
    out: Annotated[
        Path | None, typer.Option(help="raw drops folder (default: <data_dir>/raw)")
    ] = None,
) -> None:
    """Convert a public dataset into a raw drop that `fitrec ingest` validates."""
    from pipeline.data import adapters

    if source == "hm":
        if len(inputs) != 3:
            raise typer.BadParameter("hm needs three files: articles customers transactions")
        tables = adapters.hm(*inputs)
    elif source in adapters.ADAPTERS and len(inputs) == 1:
        tables = adapters.ADAPTERS[source](inputs[0])
    else:
        raise typer.BadParameter(f"unknown source {source!r} or wrong number of inputs")
    folder = adapters.write_drop(tables, out or get_settings().raw_dir)
    print_table(
        f"{source} -> {folder}", ["table", "rows"], [[k, v] for k, v in tables.rows().items()]
    )


def feast(ctx: typer.Context) -> None:
    """Run the Feast CLI on feature_repo/ (e.g. `fitrec feast plan`): the same as `cd
    feature_repo && feast ...`, whose feature_store.yaml resolves this environment's store."""
    from pipeline.config import FEATURE_REPO

    command = [sys.executable, "-m", "feast.cli.cli", "-c", str(FEATURE_REPO), *ctx.args]
    raise typer.Exit(subprocess.call(command))
