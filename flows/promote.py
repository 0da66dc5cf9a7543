"""Flow ``evaluate_and_promote``: score the champion on the candidate's test set, register the
candidate (alias ``challenger``) and make it ``champion`` only if it is not worse."""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.runtime import flow_run

from flows.artifacts import publish_mlflow_run
from pipeline.config import get_settings
from pipeline.registry import tracking as registry
from pipeline.registry.retrain import Candidate, champion_metric


@task(retries=2, retry_delay_seconds=[2, 10])
def already_registered(candidate: Candidate) -> dict | None:
    """A version registered earlier from exactly this candidate (same data and config)."""
    return registry.find_candidate(get_settings(), str(candidate.params.get("candidate_key")))


@task(retries=2, retry_delay_seconds=[2, 10])
def score_champion(candidate: Candidate) -> tuple[str | None, float | None, str]:
    return champion_metric(get_settings(), candidate.bundle.parent / "test.parquet")


def prefect_tags() -> tuple[dict[str, str], str]:
    """The Prefect flow run that registers (its id and name, the root run's id), as MLflow
    tags, and what started it: the root flow's name (``nightly``), or "by hand"."""
    from prefect.client.orchestration import get_client

    tags = {
        "prefect.flow_run_id": str(flow_run.id),
        "prefect.flow_run_name": str(flow_run.name),
        "prefect.flow_name": str(flow_run.flow_name),
        "prefect.root_flow_run_id": str(flow_run.root_flow_run_id),
    }
    trigger = "by hand"
    if flow_run.root_flow_run_id and str(flow_run.root_flow_run_id) != str(flow_run.id):
        with get_client(sync_client=True) as client:
            root = client.read_flow_run(flow_run.root_flow_run_id)
            trigger = client.read_flow(root.flow_id).name
    return tags, trigger


@task(retries=2, retry_delay_seconds=[2, 10])
def register_and_decide(
    candidate: Candidate, champion: float | None, champion_version: str | None, note: str
) -> dict:
    settings = get_settings()
    metrics = dict(candidate.metrics)
    tags, trigger = prefect_tags()
    if champion is not None:
        metrics[f"champion_{settings.promotion_metric}"] = champion
    registered = registry.log_and_register(
        settings,
        candidate.bundle,
        {**candidate.params, "champion_version": champion_version or "none"},
        metrics,
        candidate.customer_features,
        candidate.example_items,
        candidate.artifacts,
        run=getattr(candidate, "run", None),  # None: a candidate cached by an older fitrec
        tags=tags,
        trigger=trigger,
    )
    decision = registry.promote_if_better(
        settings,
        registered,
        candidate.metrics[f"model_{settings.promotion_metric}"],
        champion,
        note,
    )
    return {
        "version": registered.version,
        "run_id": registered.run_id,
        "promoted": decision.promoted,
        "reason": decision.reason,
        "metrics": metrics,
    }


@flow(name="evaluate_and_promote")
def evaluate_and_promote(candidate: Candidate) -> dict:
    """Register and gate a candidate; a candidate already registered is not registered again."""
    existing = already_registered(candidate)
    if existing is not None:
        get_run_logger().info("candidate already registered as version %s", existing["version"])
        publish_mlflow_run("promote", existing["run_id"], existing["version"])
        return existing
    champion_version, champion, note = score_champion(candidate)
    result = register_and_decide(candidate, champion, champion_version, note)
    get_run_logger().info(
        "version %s %s: %s",
        result["version"],
        "promoted" if result["promoted"] else "not promoted",
        result["reason"],
    )
    publish_mlflow_run("promote", result["run_id"], result["version"])
    return result
