"""The demo: data, the nightly flow with a stage per line, and a first answer."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import typer

from flows.cli.common import latest_drop
from flows.cli.data import generate
from flows.cli.run import run_flow
from flows.cli.serve import recommend
from flows.runtime import start_prefect_api
from pipeline.config import get_settings


def demo(
    customers: int = typer.Option(2_000, min=50),
    days: int = typer.Option(14, min=3),
) -> None:
    """Generate data (once), run the nightly flow, print recommendations for a sample session."""
    import os

    # Stage lines and a spinner instead of Prefect's per-task INFO lines (they stay in the
    # run's logs on the Prefect server); its warnings and errors still print.
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    # The temporary server's telemetry heartbeat races its own SQLite start-up on a busy
    # machine and prints a "database is locked" traceback; the demo sends no telemetry.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    settings = get_settings()
    if not any(settings.raw_dir.glob("????-??-??")):
        generate(customers=customers, days=days, seed=7, out=None, dirty=0.005)
    day = latest_drop(settings.raw_dir)
    start_prefect_api()  # the temporary Prefect server, patiently, before the spinner
    with _stages(f"nightly flow for {day}"):
        result = run_flow("nightly", day)
    metrics = result["metrics"]
    verdict = "promoted to champion" if result.get("promoted") else "not promoted"
    typer.echo(f"model version {result.get('version')} {verdict}: {result['reason']}")
    typer.echo(
        "recall@20 on {}: model {:.3f}, popularity baseline {:.3f}".format(
            day, metrics["model_recall_at_20"], metrics["popularity_recall_at_20"]
        )
    )
    customer, items = _sample_session(settings.raw_dir / day.isoformat())
    recommend(customer=customer, session=",".join(items), k=10)


@contextlib.contextmanager
def _stages(title: str) -> Iterator[None]:
    """A spinner naming the running stage of a flow, and one line per finished stage.

    Reads the "Beginning (sub)flow run" records of Prefect's run loggers, so it follows any
    flow without the flow knowing. It watches the log record factory rather than adding a
    handler: Prefect re-applies its logging config when its server starts, which drops
    handlers added before.
    """
    import logging
    import re
    import time

    from rich.console import Console

    console = Console(stderr=True)
    begins = re.compile(r"Beginning (?:sub)?flow run '[^']+' for flow '([^']+)'")
    state = {"stage": "", "since": time.monotonic()}
    make_record = logging.getLogRecordFactory()

    def finish() -> None:
        if state["stage"]:
            seconds = time.monotonic() - state["since"]
            console.print(f"  [green]done[/] {state['stage']:<22} {seconds:6.1f}s")

    from pipeline.progress import PROGRESS_LOGGER

    logging.getLogger(PROGRESS_LOGGER).setLevel(logging.INFO)
    with console.status(title) as status:

        def record(*args, **kwargs) -> logging.LogRecord:
            made = make_record(*args, **kwargs)
            if made.name == PROGRESS_LOGGER:  # epochs, registration, materialisation
                console.print(f"       {made.getMessage()}", highlight=False, soft_wrap=True)
            if made.name == "prefect.flow_runs":
                match = begins.search(str(made.msg) % made.args if made.args else str(made.msg))
                if match and match.group(1) != "nightly":
                    finish()
                    state.update(stage=match.group(1), since=time.monotonic())
                    status.update(f"{title}: {match.group(1)}")
            return made

        logging.setLogRecordFactory(record)
        try:
            yield
            finish()
        finally:
            logging.setLogRecordFactory(make_record)


def _sample_session(drop: Path) -> tuple[str, list[str]]:
    """A customer's session from the last raw drop: its first three distinct items."""
    import polars as pl

    events = pl.read_ndjson(drop / "session_events.jsonl", infer_schema_length=None)
    sessions = (
        events.filter(pl.col("customer_id").is_not_null() & pl.col("item_id").str.starts_with("I"))
        .group_by("session_id", maintain_order=True)
        .agg(pl.col("customer_id").first(), pl.col("item_id").unique(maintain_order=True))
        .filter(pl.col("item_id").list.len() >= 4)
    )
    row = sessions.row(0, named=True)
    return row["customer_id"], row["item_id"][:3]
