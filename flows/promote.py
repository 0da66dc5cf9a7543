"""Flow ``evaluate_and_promote``: score the champion and the candidate on the candidate's test
set, register the candidate (alias ``challenger``) and make it ``champion`` only if the rule
(``FITREC_PROMOTION_RULE``) allows on their paired difference and its 95% interval."""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.runtime import flow_run

from flows.artifacts import publish_mlflow_run
from pipeline.config import get_settings
from pipeline.registry import tracking as registry
from pipeline.registry.retrain import Candidate, Gate, champion_gate


@task(retries=2, retry_delay_seconds=[2, 10])
def already_registered(candidate: Candidate) -> dict | None:
    """A version registered earlier from exactly this candidate (same data and config)."""
    return registry.find_candidate(get_settings(), str(candidate.params.get("candidate_key")))


@task(retries=2, retry_delay_seconds=[2, 10])
def score_champion(candidate: Candidate) -> Gate:
    return champion_gate(get_settings(), candidate.bundle, candidate.bundle.parent / "test.parquet")


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
def register_and_decide(candidate: Candidate, gate: Gate) -> dict:
    settings = get_settings()
    metrics = dict(candidate.metrics)
    tags, trigger = prefect_tags()
    metric = settings.promotion_metric
    if gate.champion_value is not None:
        metrics[f"champion_{metric}"] = gate.champion_value
    if gate.difference is not None:
        metrics[f"vs_champion_{metric}_diff"] = gate.difference.estimate
        metrics[f"vs_champion_{metric}_ci_low"] = gate.difference.low
        metrics[f"vs_champion_{metric}_ci_high"] = gate.difference.high
    registered = registry.log_and_register(
        settings,
        candidate.bundle,
        {**candidate.params, "champion_version": gate.champion_version or "none"},
        metrics,
        candidate.customer_features,
        candidate.example_items,
        candidate.artifacts,
        run=getattr(candidate, "run", None),  # None: a candidate cached by an older fitrec
        tags=tags,
        trigger=trigger,
    )
    decision = registry.promote_if_better(
        settings, registered, gate.difference, gate.champion_version, gate.note
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
    result = register_and_decide(candidate, score_champion(candidate))
    get_run_logger().info(
        "version %s %s: %s",
        result["version"],
        "promoted" if result["promoted"] else "not promoted",
        result["reason"],
    )
    publish_mlflow_run("promote", result["run_id"], result["version"])
    return result
