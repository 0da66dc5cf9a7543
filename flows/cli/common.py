"""What several command groups share: the latest drop, a progress bar, a summary table, and
the production profile's Prefect server."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import typer

from pipeline.config import get_settings


def latest_drop(raw_dir: Path) -> date:
    """The day of the newest raw drop folder in ``raw_dir``."""
    days = sorted(p.name for p in raw_dir.glob("????-??-??") if p.is_dir())
    if not days:
        raise typer.BadParameter(f"no raw drops in {raw_dir}; run `fitrec generate` first")
    return date.fromisoformat(days[-1])


def progress_bar():
    """A progress bar with a count and the time elapsed."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=False,
    )


def print_table(title: str, columns: list[str], rows: list[list[object]]) -> None:
    """Print a summary table: the first column left-aligned, numbers with thousands commas."""
    from rich.console import Console
    from rich.table import Table

    shown = Table(title=title)
    for i, column in enumerate(columns):
        shown.add_column(column, justify="left" if i == 0 else "right")
    for row in rows:
        shown.add_row(*[f"{v:,}" if isinstance(v, int) else str(v) for v in row])
    Console().print(shown)


def apply_profile() -> None:
    """In the production profile, Prefect talks to the team's server; without a server,
    Prefect's ephemeral API is started now, patiently (see :mod:`flows.runtime`)."""
    import os

    from flows.runtime import start_prefect_api

    settings = get_settings()
    if settings.profile == "production":
        os.environ.setdefault("PREFECT_API_URL", settings.prefect_api_url)
    start_prefect_api()
