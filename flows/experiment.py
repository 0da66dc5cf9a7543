"""Flow ``analyse_experiment``: ingest serving's logs, attribute, measure, analyse, report.

1. ``ingest`` (the nightly's own flow, idempotent) curates every serving log up to now, so
   exposures and outcomes are validated, quarantined and reconciled like every other event.
2. :func:`pipeline.experiments.metrics.unit_metrics` attributes the outcomes and sums them
   per unit and arm; the unit's purchases in the 28 days before the start are its CUPED
   covariate.
3. :func:`pipeline.experiments.analysis.analyse` gives the differences, the always-valid
   sequential result, the sample-ratio check, the guardrails and the verdict.
4. The report goes to a Prefect markdown artifact (with the cumulative-lift plot inlined),
   the experiment's MLflow run (:mod:`pipeline.experiments.tracking`) and the experiment's
   record (the promotion gate reads the verdict). With ``FITREC_PROMOTION_REQUIRES_ONLINE_WIN``
   (or ``promote=True``) a winning arm's model version becomes champion, recorded with the
   experiment's id.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.ingest import ingest
from pipeline.config import get_settings
from pipeline.data.curated import scan_curated
from pipeline.experiments import analysis as stats
from pipeline.experiments import metrics
from pipeline.experiments.state import load_state, record_verdict
from pipeline.experiments.tracking import log_analysis
from pipeline.registry import tracking as registry


def _curated(table: str) -> pl.DataFrame:
    return scan_curated(get_settings().curated_dir, table).collect()


@task(retries=2, retry_delay_seconds=[2, 10])
def measure(name: str) -> dict:
    """Per-unit metrics, the daily looks and per-arm operational figures of ``name``."""
    experiment = load_state(get_settings().experiments_dir, name).experiment
    exposures, outcomes = _curated("exposures"), _curated("outcomes")
    pre = metrics.pre_period(_curated("purchases"), experiment)
    window = timedelta(hours=experiment.attribution_window_hours)
    return {
        "units": metrics.unit_metrics(exposures, outcomes, experiment, pre_outcomes=pre),
        "looks": metrics.daily_looks(exposures, outcomes, experiment, pre_outcomes=pre),
        "operational": metrics.operational(exposures, experiment),
        "attributed": metrics.attribute(exposures, outcomes, window=window),
    }


@task
def analyse_units(name: str, measured: dict) -> stats.Analysis:
    experiment = load_state(get_settings().experiments_dir, name).experiment
    return stats.analyse(
        measured["units"],
        experiment,
        operational=measured["operational"],
        looks=measured["looks"],
    )


def _inline_png(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


@task(retries=2, retry_delay_seconds=[2, 10])
def publish(name: str, analysis: stats.Analysis, measured: dict) -> dict:
    """Artifact, MLflow run, the experiment's record; returns the summary."""
    settings = get_settings()
    state = load_state(settings.experiments_dir, name)
    experiment = state.experiment
    run_id = log_analysis(settings, analysis, experiment)
    folder = settings.experiments_dir / "reports" / name
    folder.mkdir(parents=True, exist_ok=True)
    plot = analysis.plot(folder / "cumulative_lift.png")
    text = analysis.to_markdown()
    (folder / "report.md").write_text(text, encoding="utf-8")
    create_markdown_artifact(
        key=f"experiment-{name}".lower().replace("_", "-").replace(".", "-"),
        markdown=f"{text}\n\n![cumulative lift]({_inline_png(plot)})\n",
        description=f"fitrec experiment {name} (version {experiment.version})",
    )
    summary = metrics.variant_summary(measured["units"])
    create_table_artifact(
        key=f"experiment-{name}-arms".lower().replace("_", "-").replace(".", "-"),
        table=summary.to_dicts(),
        description=f"Per-arm metrics of experiment {name}",
    )
    attributed = measured["attributed"]
    unattributed = (
        int(attributed.get_column("recommendation_id").null_count())
        if "recommendation_id" in attributed.columns
        else 0
    )
    verdict = {
        "verdict": analysis.verdict,
        "winner": analysis.winner,
        "analysed_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "run_id": run_id,
        "version": experiment.version,
        "outcomes": attributed.height,
        "unattributed": unattributed,
    }
    record_verdict(settings.experiments_dir, name, verdict)
    return {**verdict, "report": str(folder / "report.md"), "plot": str(plot)}


@task
def promote_winner(name: str, analysis: stats.Analysis) -> str | None:
    """The winning arm's model version becomes champion (recorded with the experiment's
    id); None when there is no winner or the winner serves no pinned model."""
    settings = get_settings()
    experiment = load_state(settings.experiments_dir, name).experiment
    if analysis.verdict != "treatment wins" or analysis.winner is None:
        return None
    arm = next(v for v in experiment.variants if v.name == analysis.winner)
    if arm.holdout or arm.model is None:
        return None
    client = registry.configure(settings)
    version = (
        arm.model
        if arm.model.isdigit()
        else str(client.get_model_version_by_alias(settings.model_name, arm.model).version)
    )
    [primary] = [d for d in analysis.primary if d.treatment == arm.name]
    reason = (
        f"{primary.metric} {primary.relative:+.1%} [{primary.relative_low:+.1%}, "
        f"{primary.relative_high:+.1%}] vs {primary.control} (version {experiment.version})"
    )
    registry.promote_online_winner(settings, version, experiment.name, experiment.version, reason)
    return version


@flow(name="analyse_experiment")
def analyse_experiment(name: str, promote: bool | None = None) -> dict:
    """Analyse experiment ``name`` on everything served up to now (safe to run daily: the
    sequential result stays valid however often it is looked at)."""
    settings = get_settings()
    load_state(settings.experiments_dir, name)  # a clear error for an unknown name, first
    ingest(datetime.now(UTC).date())
    measured = measure(name)
    analysis = analyse_units(name, measured)
    result = publish(name, analysis, measured)
    if settings.promotion_requires_online_win if promote is None else promote:
        result["promoted"] = promote_winner(name, analysis)
    get_run_logger().info("experiment %s: %s", name, analysis.verdict)
    return result
