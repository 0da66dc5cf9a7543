"""MLflow: tracking, registration and promotion of the recommender.

Each candidate is one run (params, metrics, evaluation plots, the pyfunc of
:mod:`pipeline.registry.pyfunc`) and a new registered version with the ``challenger`` alias.
A new version becomes ``champion`` by the rule of :func:`decide` on its paired difference to
the current champion on the same test set, with a clustered 95% interval: by default only if
it is ahead beyond noise.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from pipeline.config import CHALLENGER, CHAMPION, Settings
from pipeline.evaluation.significance import Interval
from pipeline.progress import timed
from pipeline.registry import environment
from pipeline.registry.pyfunc import input_example, signature
from pipeline.registry.runs import (
    RunInputs,
    baseline_runs,
    candidate_tags,
    log_candidate,
    run_name,
)

log = logging.getLogger(__name__)


def configure(settings: Settings) -> MlflowClient:
    """Point MLflow at this environment and make sure the experiment exists."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    client = MlflowClient(settings.tracking_uri, settings.tracking_uri)
    if client.get_experiment_by_name(settings.experiment_name) is None:
        # A tracking server decides where artifacts go (it proxies them) unless told otherwise.
        remote = settings.tracking_uri.startswith(("http://", "https://"))
        location = None if remote and not settings.mlflow_artifact_root else settings.artifact_root
        client.create_experiment(settings.experiment_name, artifact_location=location)
    mlflow.set_experiment(settings.experiment_name)
    return client


@dataclass
class Registered:
    run_id: str
    version: str


def log_and_register(
    settings: Settings,
    bundle: Path,
    params: dict[str, Any],
    metrics: dict[str, float],
    customer_features: list[str],
    example_items: list[str],
    artifacts: list[Path] | None = None,
    run: RunInputs | None = None,
    tags: dict[str, str] | None = None,
    trigger: str | None = None,
) -> Registered:
    """Log params, metrics, artifacts and the pyfunc model in one run; register a new
    version and give it the ``challenger`` alias.

    With ``run`` (:mod:`pipeline.registry.runs`) the run is named by its data date and
    ``trigger``, holds the training history as steps, its datasets as inputs, the model's
    metrics under plain names and one child run per baseline; ``tags`` are added to it.
    Without it (a candidate cached before), the flat metrics are logged as they are.
    """
    configure(settings)
    example = input_example(customer_features, example_items[:3])
    name = run_name("train", run.run_date, trigger) if run else None
    all_tags = candidate_tags(run, tags) if run else tags
    with (
        timed(f"registering {settings.model_name}") as done,
        mlflow.start_run(run_name=name, tags=all_tags) as active,
    ):
        mlflow.log_params(params)
        if run is not None:
            log_candidate(run, metrics, settings.promotion_metric)
        else:
            mlflow.log_metrics(metrics)
        for path in artifacts or []:
            mlflow.log_artifact(str(path), artifact_path="evaluation")
        with tempfile.TemporaryDirectory() as scratch:
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(Path(__file__).with_name("pyfunc_entry.py")),
                artifacts={"bundle": str(bundle)},
                signature=signature(customer_features),
                input_example=example,
                registered_model_name=settings.model_name,
                # Portable: pinned requirements and constraints, fitrec's code with it.
                pip_requirements=environment.pip_requirements(Path(scratch)),
                code_paths=environment.code_paths(Path(scratch)),
            )
        done["version"] = info.registered_model_version
    version = str(info.registered_model_version)
    client = MlflowClient(settings.tracking_uri, settings.tracking_uri)
    client.set_registered_model_alias(settings.model_name, CHALLENGER, version)
    if params.get("candidate_key"):
        client.set_model_version_tag(
            settings.model_name, version, "candidate_key", str(params["candidate_key"])
        )
    run_id = active.info.run_id
    log.info("registered %s version %s (run %s)", settings.model_name, version, run_id)
    return Registered(run_id=run_id, version=version)


def champion_version(client: MlflowClient, name: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException:
        return None


def download_bundle(settings: Settings, version: str, dst: Path) -> Path:
    """Fetch a registered version's bundle (to score it on a new test set)."""
    configure(settings)
    uri = f"models:/{settings.model_name}/{version}"
    local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst))
    return Path(local) / "artifacts" / "bundle"


@dataclass
class Decision:
    promoted: bool
    reason: str
    champion_before: str | None


def decide(
    difference: Interval | None,
    rule: str,
    tolerance: float,
    metric: str,
    champion: str | None = None,
) -> tuple[bool, str]:
    """Promotion rule on the paired difference (candidate minus champion) and its 95% interval.

    ``superior`` promotes only when the interval lies above 0: a candidate that merely ties
    the champion (noise) keeps the champion. ``non_inferior`` promotes unless the interval
    lies below ``-tolerance``. No difference (no champion, or one that cannot score this test
    set) promotes.

    Args:
        difference: the paired difference on the gate metric, or None.
        rule: ``"superior"`` or ``"non_inferior"``.
        tolerance: how far behind a non-inferior candidate may be (``non_inferior`` only).
        metric: the gate metric's name, for the reason.
        champion: the champion's version, for the reason.

    Returns:
        Whether to promote, and the reason, e.g. ``recall_at_20 +0.0123 [+0.0051, +0.0190]
        vs champion 7: ahead (superior)``.

    Raises:
        ValueError: on an unknown rule.
    """
    if rule not in ("superior", "non_inferior"):
        raise ValueError(f"unknown promotion rule {rule!r}: superior or non_inferior")
    if difference is None:
        return True, "no champion yet"
    d, who = difference, f"champion {champion}" if champion else "the champion"
    reason = f"{metric} {d.estimate:+.4f} [{d.low:+.4f}, {d.high:+.4f}] vs {who}: {d.verdict}"
    if rule == "superior":
        promoted = d.low > 0
        reason += " (superior)"
    else:
        promoted = not d.high < -tolerance
        reason += f" (non_inferior, tolerance {tolerance:g})"
    if not promoted:
        reason += f", {who} kept"
    return promoted, reason


def promote_if_better(
    settings: Settings,
    registered: Registered,
    difference: Interval | None,
    champion: str | None = None,
    note: str = "",
) -> Decision:
    """Move ``champion`` to the new version when the rule (``settings.promotion_rule``) allows
    on the paired difference to the champion; otherwise it stays the ``challenger``. The
    decision and its reason are tagged on the run and the version."""
    client = configure(settings)
    before = champion_version(client, settings.model_name)
    promoted, reason = decide(
        difference,
        settings.promotion_rule,
        settings.promotion_tolerance,
        settings.promotion_metric,
        champion,
    )
    if note:
        reason = f"{reason} ({note})"
    if promoted and before is not None and settings.promotion_requires_online_win:
        promoted = False
        reason += (
            "; passed offline, stays challenger until an experiment's verdict says it wins "
            "online (FITREC_PROMOTION_REQUIRES_ONLINE_WIN)"
        )
    if promoted:
        set_champion(client, settings.model_name, registered.version, before)
    client.set_tag(registered.run_id, "promotion", "promoted" if promoted else "rejected")
    client.set_tag(registered.run_id, "promotion_reason", reason)
    client.set_model_version_tag(
        settings.model_name, registered.version, "promotion_reason", reason
    )
    log.info("version %s: %s (%s)", registered.version, "champion" if promoted else "kept", reason)
    return Decision(promoted=promoted, reason=reason, champion_before=before)


def set_champion(client: MlflowClient, name: str, version: str, previous: str | None) -> None:
    """Point ``champion`` at ``version``, remembering the previous one for rollback."""
    if previous and previous != version:
        client.set_model_version_tag(name, version, "previous_champion", previous)
    client.set_registered_model_alias(name, CHAMPION, version)
    try:
        # ModelVersion.version is an int in MLflow 3, the caller's version a string.
        if str(client.get_model_version_by_alias(name, CHALLENGER).version) == str(version):
            client.delete_registered_model_alias(name, CHALLENGER)
    except MlflowException:
        pass


def promote_online_winner(
    settings: Settings, version: str, experiment: str, experiment_version: str, reason: str
) -> str:
    """Make ``version`` champion on an experiment's win, recorded on the version: tags
    ``fitrec.experiment`` (name), ``fitrec.experiment_version`` and ``promotion_reason``.
    Returns the version it replaced (or "none"); promoting the champion changes nothing."""
    client = configure(settings)
    client.get_model_version(settings.model_name, version)
    before = champion_version(client, settings.model_name)
    if before == version:
        return before
    set_champion(client, settings.model_name, version, before)
    for key, value in (
        ("fitrec.experiment", experiment),
        ("fitrec.experiment_version", experiment_version),
        ("promotion_reason", f"online win in experiment {experiment}: {reason}"),
    ):
        client.set_model_version_tag(settings.model_name, version, key, value)
    log.info("version %s: champion on an online win in %s (%s)", version, experiment, reason)
    return before or "none"


def promote(settings: Settings, version: str) -> str:
    """By hand: make ``version`` the champion. Returns the version it replaced (or "none")."""
    client = configure(settings)
    client.get_model_version(settings.model_name, version)  # clear error if it does not exist
    before = champion_version(client, settings.model_name)
    set_champion(client, settings.model_name, version, before)
    client.set_model_version_tag(
        settings.model_name, version, "promotion_reason", "promoted by hand"
    )
    return before or "none"


def rollback(settings: Settings) -> str:
    """By hand: give ``champion`` back to the version it replaced. Returns that version."""
    client = configure(settings)
    current = champion_version(client, settings.model_name)
    if current is None:
        raise ValueError(f"{settings.model_name} has no champion to roll back")
    previous = client.get_model_version(settings.model_name, current).tags.get("previous_champion")
    if not previous:
        raise ValueError(f"champion version {current} has no previous champion to roll back to")
    client.set_registered_model_alias(settings.model_name, CHAMPION, previous)
    client.set_registered_model_alias(settings.model_name, CHALLENGER, current)
    client.set_model_version_tag(settings.model_name, current, "rolled_back", "true")
    return previous


def _flat_metrics(prefix: str, values: dict[str, Any]) -> dict[str, float]:
    """Numeric leaves of a benchmark entry as MLflow metrics: ``model`` / ``recall@20`` /
    ``value`` -> ``model_recall_at_20``, its ``ci_low`` -> ``model_recall_at_20_ci_low``, the
    paired difference -> ``model_vs_best_recall_at_20_difference``."""
    out: dict[str, float] = {}
    for key, value in values.items():
        name = prefix if key == "value" else f"{prefix}_{key.replace('@', '_at_')}"
        if isinstance(value, dict):
            out |= _flat_metrics(name, value)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def log_benchmark(settings: Settings, dataset: str, result: dict[str, Any]) -> str:
    """Log a public benchmark's metrics to the experiment ``benchmark-<dataset>``."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(settings.tracking_uri)
    name = f"benchmark-{dataset}"
    client = MlflowClient(settings.tracking_uri)
    if client.get_experiment_by_name(name) is None:
        client.create_experiment(name, artifact_location=settings.artifact_root)
    mlflow.set_experiment(name)
    with mlflow.start_run() as run:
        mlflow.log_params({k: v for k, v in result.items() if not isinstance(v, dict)})
        metrics = {
            name: value
            for method, values in result.items()
            if isinstance(values, dict) and method != "rows"
            for name, value in _flat_metrics(method, values).items()
        }
        mlflow.log_metrics(metrics)
        mlflow.log_dict(result, "benchmark.json")
    return run.info.run_id


def find_candidate(settings: Settings, key: str) -> dict[str, Any] | None:
    """The version registered from candidate ``key``, with its recorded decision, if any."""
    if not key or key == "None":
        return None
    client = configure(settings)
    found = client.search_model_versions(
        f"name='{settings.model_name}' and tags.candidate_key='{key}'"
    )
    if not found:
        return None
    version = max(found, key=lambda v: int(v.version))
    run = client.get_run(str(version.run_id))
    return {
        "version": str(version.version),
        "run_id": version.run_id,
        "promoted": run.data.tags.get("promotion") == "promoted",
        "reason": f"already registered: {run.data.tags.get('promotion_reason', '')}",
        "metrics": flat_metrics(client, str(version.run_id)),
    }


def flat_metrics(client: MlflowClient, run_id: str) -> dict[str, float]:
    """A candidate run's metrics as the flat ``<method>_<metric>`` dict the report reads: the
    model's from the run (``model_`` added back where a baseline has the same metric, and for
    the fit head), each baseline's from its child run. Runs logged before baselines became
    child runs already hold the flat names."""
    own = dict(client.get_run(run_id).data.metrics)
    baselines = baseline_runs(client, run_id)
    if not baselines:
        return own
    shared = {key for values in baselines.values() for key in values}
    out = {
        f"model_{k}" if k in shared or k.startswith(("fit_", "size_")) else k: v
        for k, v in own.items()
    }
    if "loss" in own:
        out["final_loss"] = own["loss"]
    for name, values in baselines.items():
        out |= {f"{name}_{k}": v for k, v in values.items()}
    return out


def log_report(settings: Settings, run_id: str, text: str) -> None:
    """Attach a run report (markdown) to an MLflow run."""
    configure(settings)
    MlflowClient(settings.tracking_uri).log_text(run_id, text, "nightly_report.md")
