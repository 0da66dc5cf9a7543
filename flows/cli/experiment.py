"""``fitrec experiment``: validate, plan, start, stop, status and analyse online experiments."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flows.cli.common import apply_profile, print_table
from pipeline.config import get_settings

experiment_app = typer.Typer(
    no_args_is_help=True,
    help="Online experiments: plan, start, stop, status, analyse (see README, Experiments).",
)


def _experiment_file(path: Path):
    from pipeline.experiments.config import ExperimentError, load_experiment

    try:
        return load_experiment(path)
    except ExperimentError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None


@experiment_app.command("validate")
def experiment_validate(
    path: Annotated[Path, typer.Argument(help="the experiment file (.toml or .yaml)")],
) -> None:
    """Check an experiment file; print its version (a hash of what it means)."""
    experiment = _experiment_file(path)
    typer.echo(f"{experiment.name}: valid, version {experiment.version}")


@experiment_app.command("plan")
def experiment_plan(
    path: Annotated[Path, typer.Argument(help="the experiment file (.toml or .yaml)")],
    days: Annotated[int, typer.Option(min=1, help="recent traffic to plan from, days")] = 14,
) -> None:
    """Sample size and duration for the primary metric's minimum detectable effect, from the
    recent traffic (the curated exposures and outcomes) and the metric's variance there."""
    from pipeline.experiments.plan import PlanError, plan_from_traffic

    experiment = _experiment_file(path)
    try:
        planned = plan_from_traffic(get_settings(), experiment, days)
    except PlanError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    print_table(
        f"plan: {experiment.name} ({experiment.primary_metric}, "
        f"{experiment.minimum_detectable_effect:+.1%} at alpha {experiment.alpha:g}, "
        f"power {experiment.power:.0%})",
        ["baseline", "std per unit", "units per arm", "units", "days", "power"],
        [
            [
                f"{planned.baseline:.4g}",
                f"{planned.std:.4g}",
                planned.units_per_variant,
                planned.total_units,
                f"{planned.days:.1f}",
                f"{planned.power:.3f}",
            ]
        ],
    )


@experiment_app.command("analyse")
def experiment_analyse(
    name: Annotated[str, typer.Argument(help="the experiment's name")],
    promote: Annotated[
        bool | None,
        typer.Option(
            "--promote/--no-promote",
            help="promote a winning arm's model (default: FITREC_PROMOTION_REQUIRES_ONLINE_WIN)",
        ),
    ] = None,
) -> None:
    """Run the analyse_experiment flow (ingest, attribute, analyse) and print the report."""
    apply_profile()
    from pipeline.experiments.state import StateError, load_state
    from pipeline.quiet import import_quietly

    try:
        load_state(get_settings().experiments_dir, name)
    except StateError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    import_quietly()
    from flows.experiment import analyse_experiment

    result = analyse_experiment(name, promote)
    typer.echo(Path(result["report"]).read_text(encoding="utf-8"))
    typer.echo(f"cumulative lift plot: {result['plot']}")
    typer.echo(f"verdict: {result['verdict']} (MLflow run {result['run_id']})")
    if result.get("promoted"):
        typer.echo(f"champion: version {result['promoted']} (online win)")


@experiment_app.command("start")
def experiment_start(
    path: Annotated[Path, typer.Argument(help="the experiment file (.toml or .yaml)")],
) -> None:
    """Start an experiment: serving picks it up on its next poll (FITREC_SERVING_POLL_SECONDS)."""
    from pipeline.experiments.state import StateError, start

    experiment = _experiment_file(path)
    try:
        state = start(get_settings().experiments_dir, experiment)
    except StateError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    shares = ", ".join(f"{v.name} {v.share:.0%}" for v in experiment.variants)
    typer.echo(
        f"started {experiment.name} version {state.version} at {state.started_at:%Y-%m-%d %H:%M} "
        f"UTC ({shares}; runs from {experiment.start:%Y-%m-%d %H:%M})"
    )


@experiment_app.command("stop")
def experiment_stop(name: Annotated[str, typer.Argument(help="the experiment's name")]) -> None:
    """Stop an experiment: serving goes back to the champion alone on its next poll."""
    from pipeline.experiments.state import StateError, stop

    try:
        state = stop(get_settings().experiments_dir, name)
    except StateError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    typer.echo(f"stopped {name} (version {state.version})")


@experiment_app.command("status")
def experiment_status() -> None:
    """Every experiment started here: status, version, arms, the last verdict."""
    from pipeline.experiments.state import states

    found = states(get_settings().experiments_dir)
    if not found:
        typer.echo("no experiment started yet (fitrec experiment start FILE)")
        return
    rows = []
    for state in found:
        experiment = state.experiment
        arms = ", ".join(
            f"{v.name}={'holdout' if v.holdout else v.model}:{v.share:.0%}"
            for v in experiment.variants
        )
        verdict = (state.verdict or {}).get("verdict", "not analysed")
        rows.append([experiment.name, state.status, state.version, experiment.mode, arms, verdict])
    print_table("experiments", ["name", "status", "version", "mode", "arms", "last verdict"], rows)
