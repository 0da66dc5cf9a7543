"""Running flows now or as deployments, and moving the champion alias by hand."""

from __future__ import annotations

import json
from datetime import date
from typing import Annotated

import typer

from flows.cli.common import apply_profile, latest_drop
from pipeline.config import get_settings

FLOWS = (
    "ingest",
    "build_features",
    "materialize",
    "train",
    "evaluate_and_promote",
    "nightly",
    "backfill",
)


def run(
    flow_name: Annotated[str, typer.Argument(metavar="FLOW", help=" | ".join(FLOWS))],
    run_date: Annotated[
        str | None, typer.Option("--date", help="YYYY-MM-DD (default: latest drop)")
    ] = None,
    start: Annotated[str | None, typer.Option(help="backfill: first day, YYYY-MM-DD")] = None,
) -> None:
    """Run one flow now (through Prefect) for a date."""
    if flow_name not in FLOWS:
        raise typer.BadParameter(f"unknown flow {flow_name!r}; choose from {', '.join(FLOWS)}")
    apply_profile()
    day = date.fromisoformat(run_date) if run_date else latest_drop(get_settings().raw_dir)
    first = date.fromisoformat(start) if start else None
    result = run_flow(flow_name, day, first)
    typer.echo(json.dumps(result, default=str, indent=2))


def run_flow(flow_name: str, day: date, start: date | None = None) -> object:
    from dataclasses import asdict

    from pipeline.quiet import import_quietly

    import_quietly()  # the flows import TensorFlow and Feast: load them first, quietly
    from flows.backfill import backfill
    from flows.features import build_features
    from flows.ingest import ingest
    from flows.materialize import materialize
    from flows.nightly import nightly
    from flows.promote import evaluate_and_promote
    from flows.train import train

    if flow_name == "materialize":
        return materialize()
    if flow_name == "backfill":
        return backfill(start or day, day)
    if flow_name == "train":
        return asdict(train(day))
    if flow_name == "evaluate_and_promote":
        return evaluate_and_promote(train(day))
    flow = {"ingest": ingest, "build_features": build_features, "nightly": nightly}
    return flow[flow_name](day)


def serve_flows() -> None:
    """Serve every flow as a Prefect deployment (nightly on its cron schedule) until stopped."""
    apply_profile()
    from prefect.settings import get_current_settings

    if not get_current_settings().api.url:
        # Prefect's ephemeral API does not run its scheduler service: nothing is scheduled.
        typer.echo(
            "warning: no PREFECT_API_URL: on Prefect's ephemeral API the nightly schedule "
            "never fires (runs triggered by hand still run); point PREFECT_API_URL at a "
            "Prefect server",
            err=True,
        )
    from flows.deployments import serve_all

    serve_all()


def promote(version: Annotated[str, typer.Argument(help="model version to make champion")]) -> None:
    """Make a registered version the champion by hand (the previous one is kept for rollback)."""
    from pipeline.registry.tracking import promote as promote_version

    before = promote_version(get_settings(), version)
    typer.echo(f"champion: version {version} (was {before})")


def rollback() -> None:
    """Give the champion alias back to the version the current champion replaced."""
    from pipeline.registry.tracking import rollback as roll_back

    try:
        previous = roll_back(get_settings())
    except ValueError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    typer.echo(f"champion: version {previous} (rolled back)")
