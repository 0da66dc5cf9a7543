"""``fitrec erase``: customers erased everywhere, or their consent to body data withdrawn."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from flows.cli.common import apply_profile
from pipeline.config import get_settings


def erase(
    customer: Annotated[
        list[str] | None, typer.Option("--customer", help="customer id (repeatable)")
    ] = None,
    ids_file: Annotated[
        Path | None, typer.Option("--file", help="a file of customer ids, one a line (flow)")
    ] = None,
    body_only: Annotated[
        bool, typer.Option("--body-only", help="consent withdrawal: drop only body data")
    ] = False,
    purge_models: Annotated[
        bool,
        typer.Option("--purge-models", help="only delete superseded versions holding erased ids"),
    ] = False,
) -> None:
    """Erase customers everywhere (GDPR Art. 17), or withdraw consent to body data; prints
    the audit record (counts only). ``--file`` runs the ``erase`` flow through Prefect."""
    from dataclasses import asdict

    from pipeline import erasure

    settings = get_settings()
    if purge_models:
        typer.echo(json.dumps(erasure.purge_models(settings), indent=2))
        return
    if bool(customer) == bool(ids_file):
        raise typer.BadParameter("give --customer ID (one or more) or --file PATH")
    if ids_file is not None:
        apply_profile()
        from flows.erase import erase as erase_flow

        record = erase_flow(ids_file, body_only)
    else:
        record = asdict(erasure.erase_customers(settings, customer or [], body_only=body_only))
    typer.echo(json.dumps(record, indent=2, sort_keys=True))
