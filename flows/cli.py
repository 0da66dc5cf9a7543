"""The ``fitrec`` command line: generate data, run flows, ask for recommendations."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Annotated

import typer

from pipeline.config import get_settings

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)


@app.callback()
def _start() -> None:
    # Every command: third-party notices and INFO chatter out, errors and the rest kept.
    from pipeline.quiet import quiet_third_parties

    quiet_third_parties()


FLOWS = (
    "ingest",
    "build_features",
    "materialize",
    "train",
    "evaluate_and_promote",
    "nightly",
    "backfill",
)


def _latest_drop(raw_dir: Path) -> date:
    days = sorted(p.name for p in raw_dir.glob("????-??-??") if p.is_dir())
    if not days:
        raise typer.BadParameter(f"no raw drops in {raw_dir}; run `fitrec generate` first")
    return date.fromisoformat(days[-1])


def _progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=False,
    )


def _table(title: str, columns: list[str], rows: list[list[object]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*[f"{v:,}" if isinstance(v, int) else str(v) for v in row])
    Console().print(table)


@app.command()
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
    with _progress() as progress:
        task = progress.add_task("generating days", total=days)
        counts = write_drops(config, target, lambda d, _: progress.update(task, completed=d + 1))
    _table(f"generated into {target}", ["table", "rows"], [[k, v] for k, v in counts.items()])


@app.command()
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
    with _progress() as progress:
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
    _table(
        f"ingested {len(days)} days into {settings.curated_dir}{note}",
        ["table", "raw", "curated", "quarantined", "exact duplicates"],
        [[table, *values] for table, values in totals.items()],
    )


@app.command()
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
    _table(f"{source} -> {folder}", ["table", "rows"], [[k, v] for k, v in tables.rows().items()])


@app.command()
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
    _apply_profile()
    day = date.fromisoformat(run_date) if run_date else _latest_drop(get_settings().raw_dir)
    first = date.fromisoformat(start) if start else None
    result = _run_flow(flow_name, day, first)
    typer.echo(json.dumps(result, default=str, indent=2))


def _apply_profile() -> None:
    """In the production profile, Prefect talks to the team's server."""
    import os

    settings = get_settings()
    if settings.profile == "production":
        os.environ.setdefault("PREFECT_API_URL", settings.prefect_api_url)


def _run_flow(flow_name: str, day: date, start: date | None = None) -> object:
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


@app.command("serve-flows")
def serve_flows() -> None:
    """Serve every flow as a Prefect deployment (nightly on its cron schedule) until stopped."""
    _apply_profile()
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


@app.command()
def recommend(
    customer: Annotated[str | None, typer.Option(help="customer id (omit: anonymous)")] = None,
    session: Annotated[str, typer.Option(help="comma-separated item ids, oldest first")] = "",
    k: Annotated[int, typer.Option(min=1, max=100)] = 10,
) -> None:
    """Print the top-k for a customer and session from the champion model, with sizes."""
    from pydantic import ValidationError

    from pipeline.quiet import import_quietly

    import_quietly()
    from serving import NoChampionError, RecommendationRequest, Recommender

    try:
        request = RecommendationRequest(
            customer_id=customer, session_items=[s for s in session.split(",") if s], k=k
        )
    except ValidationError as exc:
        for error in exc.errors():
            field = ".".join(str(p) for p in error["loc"])
            typer.echo(f"invalid {field}: {error['msg']}", err=True)
        raise typer.Exit(2) from None
    try:
        recommender = Recommender.from_registry()
    except NoChampionError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    _print(recommender, recommender.recommend(request), request)


def _print(recommender, result, request) -> None:
    """The answer as a table: what each item is, its size and why it was picked."""
    from rich.console import Console
    from rich.table import Table

    shown = [*request.session_items, *(i.item_id for i in result.items)]
    about = recommender.describe(shown)

    def name(item_id: str) -> str:
        row = about.get(item_id)
        return f"{item_id} ({row['category']}, {row['brand']})" if row else item_id

    who = request.customer_id or "anonymous"
    state = "known customer" if result.known_customer else "unknown customer (cold start)"
    console = Console()
    if not console.is_terminal:  # piped or logged: rich would assume 80 columns
        console = Console(width=120)
    console.print(f"model version {result.model_version}; {who}: {state}")
    console.print(f"session: {', '.join(map(name, request.session_items)) or '(empty)'}")
    if result.ignored_items:
        console.print(f"ignored unknown items: {', '.join(result.ignored_items)}")
    if result.degraded:
        console.print("(degraded: answered without the online store)")
    table = Table(title=f"top {len(result.items)} for {who}", title_justify="left")
    for column in ("#", "item", "category", "brand", "price", "size (fit)", "why"):
        table.add_column(column, justify="right" if column in ("#", "price") else "left")
    for rank, item in enumerate(result.items, 1):
        row = about.get(item.item_id, {})
        price = row.get("price")
        size = item.recommended_size
        fit = f"{size} ({item.fit_confidence:.0%})" if size and item.fit_confidence else size
        # The size column already says how well it fits: the reason column need not.
        why = [r for r in item.reasons if not r.startswith("fits you in")] or item.reasons
        table.add_row(
            str(rank),
            item.item_id,
            row.get("category") or "",
            row.get("brand") or "",
            f"{price:,.2f}" if price is not None else "",
            fit or "",
            "; ".join(why),
        )
    console.print(table)


@app.command()
def demo(
    customers: int = typer.Option(2_000, min=50),
    days: int = typer.Option(14, min=3),
) -> None:
    """Generate data (once), run the nightly flow, print recommendations for a sample session."""
    import os

    # Stage lines and a spinner instead of Prefect's per-task INFO lines (they stay in the
    # run's logs on the Prefect server); its warnings and errors still print.
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    # The temporary Prefect server can take longer than Prefect's 20 s to start on a busy
    # laptop; a first run should wait rather than fail.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    # The temporary server's telemetry heartbeat races its own SQLite start-up on a busy
    # machine and prints a "database is locked" traceback; the demo sends no telemetry.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    settings = get_settings()
    if not any(settings.raw_dir.glob("????-??-??")):
        generate(customers=customers, days=days, seed=7, out=None, dirty=0.005)
    day = _latest_drop(settings.raw_dir)
    with _stages(f"nightly flow for {day}"):
        result = _run_flow("nightly", day)
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


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="processes (each loads the model)")] = 1,
) -> None:
    """Run the HTTP serving app (POST /recommendations, POST /events, GET /health, /metrics).

    With several workers, /metrics is prometheus_client's multiprocess mode: the workers'
    values in PROMETHEUS_MULTIPROC_DIR (if set, emptied first; else a fresh temporary
    directory, removed at exit), summed by whichever worker answers the scrape.
    """
    import os

    # Read before serving imports Feast, which sets the variable when unset (feast.metrics).
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")

    import uvicorn

    from serving import NoChampionError
    from serving.metrics import multiprocess_dir

    # One process per core: a page view's small matrix products must not each fan out to a
    # BLAS thread pool that competes with the other workers.
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, "1")

    # Before the workers start: each reads the variable when it imports prometheus_client.
    with multiprocess_dir(workers, given):
        try:
            uvicorn.run(
                "serving.app:create_app",
                factory=True,
                host=host,
                port=port,
                workers=workers,
                log_level="warning",
                access_log=False,
            )
        except NoChampionError as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(1) from None


benchmark_app = typer.Typer(help="Public benchmarks through the real pipeline; print JSON.")
app.add_typer(benchmark_app, name="benchmark")


def _benchmark(
    dataset: str,
    train: Path,
    test: Path | None,
    log_to_mlflow: bool,
    split_at: datetime | None = None,
) -> None:
    import dataclasses
    import tempfile

    from pipeline.evaluation import public as benchmark

    if test is not None and split_at is not None:
        raise typer.BadParameter("--split-at cuts one file; with --test the files are the split")
    spec = dataclasses.replace(benchmark.SPECS[dataset], split_at=split_at)
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
    mlflow: Annotated[bool, typer.Option(help="log to MLflow experiment 'benchmark-rtr'")] = True,
) -> None:
    """RentTheRunway: fit AUC of the fit head (and a GBDT), next-rental retrieval vs baselines."""
    if split not in ("time", "random"):
        raise typer.BadParameter("split must be time or random")
    if split == "random" and split_at is not None:
        raise typer.BadParameter("--split-at is for the time split")
    _benchmark("rtr" if split == "time" else "rtr-random", train, test, mlflow, split_at)


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
    mlflow: Annotated[
        bool, typer.Option(help="log to MLflow experiment 'benchmark-<format>'")
    ] = True,
) -> None:
    """Session click streams: HR@20, MRR@20, NDCG of the model and every baseline."""
    if format not in ("yoochoose", "diginetica"):
        raise typer.BadParameter("format must be yoochoose or diginetica")
    _benchmark(format, train, test, mlflow, split_at)


experiment_app = typer.Typer(
    no_args_is_help=True,
    help="Online experiments: plan, start, stop, status, analyse (see README, Experiments).",
)
app.add_typer(experiment_app, name="experiment")


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
    _table(
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
    _apply_profile()
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
    _table("experiments", ["name", "status", "version", "mode", "arms", "last verdict"], rows)


@app.command()
def promote(version: Annotated[str, typer.Argument(help="model version to make champion")]) -> None:
    """Make a registered version the champion by hand (the previous one is kept for rollback)."""
    from pipeline.registry.tracking import promote as promote_version

    before = promote_version(get_settings(), version)
    typer.echo(f"champion: version {version} (was {before})")


@app.command()
def rollback() -> None:
    """Give the champion alias back to the version the current champion replaced."""
    from pipeline.registry.tracking import rollback as roll_back

    try:
        previous = roll_back(get_settings())
    except ValueError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    typer.echo(f"champion: version {previous} (rolled back)")


@app.command()
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
        _apply_profile()
        from flows.erase import erase as erase_flow

        record = erase_flow(ids_file, body_only)
    else:
        record = asdict(erasure.erase_customers(settings, customer or [], body_only=body_only))
    typer.echo(json.dumps(record, indent=2, sort_keys=True))


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def feast(ctx: typer.Context) -> None:
    """Run the Feast CLI on feature_repo/ (e.g. `fitrec feast plan`): the same as `cd
    feature_repo && feast ...`, whose feature_store.yaml resolves this environment's store."""
    from pipeline.config import FEATURE_REPO

    command = [sys.executable, "-m", "feast.cli.cli", "-c", str(FEATURE_REPO), *ctx.args]
    raise typer.Exit(subprocess.call(command))


if __name__ == "__main__":
    app()
