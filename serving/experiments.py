"""Experiments in serving: which arm answers a page view, with which model and rules.

On start-up and on every champion poll the router reads the running experiment
(:func:`pipeline.experiments.state.running`) and loads what its arms need: a model version
per arm (``champion`` means whatever the champion is at the time of the request, so a
promotion mid-experiment moves that arm too), a rule set per arm. Loading happens aside;
requests keep the previous arms until the new ones are complete, then they swap as one
object, like the champion. At most ``serving_max_models`` model versions live in a process
(the champion included): an experiment needing more is refused with an error in the log and
``/health``'s experiment field, and the champion alone keeps serving.

Per request, :meth:`ExperimentRouter.route` is one keyed hash of the unit and a bisect
(:class:`pipeline.experiments.assignment.Assigner`): the unit is the customer's pseudonym
(``unit = "customer"``; anonymous page views are outside such an experiment) or the session
id (``unit = "session"``). Nothing is stored per unit, so every worker and every restart puts
a unit in the same arm.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pipeline.config import CHAMPION, Settings
from pipeline.experiments.assignment import Assigner
from pipeline.experiments.config import Experiment, Variant
from pipeline.experiments.state import ExperimentState, running
from pipeline.rules.schema import Rules, load_rules

log = logging.getLogger(__name__)

__all__ = ["Active", "Arm", "ExperimentRouter", "ModelBudgetError", "exposure_record"]


class ModelBudgetError(RuntimeError):
    """An experiment needs more model versions than ``serving_max_models`` allows."""


@dataclass(frozen=True)
class Arm:
    """One variant as served: its model (None: the champion of the moment) and rules (None:
    serving's own)."""

    variant: Variant
    model: object | None  # serving.recommender.LoadedModel; typed loosely to avoid a cycle
    rules: Rules | None

    @property
    def name(self) -> str:
        return self.variant.name

    @property
    def holdout(self) -> bool:
        return self.variant.holdout


@dataclass(frozen=True)
class Active:
    """The running experiment with its arms loaded (replaced whole on a change)."""

    state: ExperimentState
    assigner: Assigner
    arms: dict[str, Arm]

    @property
    def experiment(self) -> Experiment:
        return self.state.experiment

    @property
    def key(self) -> tuple[str, str]:
        return self.experiment.name, self.experiment.version


class ExperimentRouter:
    """The running experiment's arms and the unit -> arm lookup."""

    def __init__(
        self,
        settings: Settings,
        load_model: Callable[[str], object],
        resolve: Callable[[str], str | None],
    ):
        """
        Args:
            settings: Where experiments are recorded; the model budget.
            load_model: Loads a model version by number (``LoadedModel.load``).
            resolve: An alias or version -> the version number it names now (None: none).
        """
        self.settings = settings
        self._load_model = load_model
        self._resolve = resolve
        self._active: Active | None = None
        self._models: dict[str, object] = {}  # version -> loaded model, arms' only
        self.error: str | None = None  # why the running experiment is not served, if so

    @property
    def active(self) -> Active | None:
        return self._active

    def refresh(self, champion: object) -> bool:
        """Read the running experiment; load its arms if it changed (or an arm's alias
        moved). ``champion`` is the loaded champion: an arm pinned to its version shares it.
        Returns True when the served arms changed."""
        champion_version = str(getattr(champion, "version", ""))
        now = running(self.settings.experiments_dir)
        if not now:
            changed = self._active is not None
            self._active, self._models, self.error = None, {}, None
            return changed
        state = now[0]
        wanted = {}
        for variant in state.experiment.variants:
            if variant.holdout or variant.model == CHAMPION:
                continue
            version = self._resolve(variant.model or "")
            if version is None:
                self._refuse(state, f"arm {variant.name!r}: no model version {variant.model!r}")
                return False
            wanted[variant.name] = version
        versions = set(wanted.values()) - {champion_version}
        budget = self.settings.serving_max_models
        if len(versions) + 1 > budget:
            self._refuse(
                state,
                f"needs {len(versions) + 1} model versions with the champion, "
                f"FITREC_SERVING_MAX_MODELS is {budget}",
            )
            return False
        current = self._active
        if (
            current is not None
            and current.key == (state.experiment.name, state.experiment.version)
            and all(getattr(current.arms[n].model, "version", None) == v for n, v in wanted.items())
        ):
            return False
        models = {v: self._models.get(v) or self._load_model(v) for v in versions}
        models[champion_version] = champion
        arms = {}
        for variant in state.experiment.variants:
            version = wanted.get(variant.name)
            model = None if version is None else models[version]
            rules = load_rules(variant.rules) if variant.rules else None
            arms[variant.name] = Arm(variant=variant, model=model, rules=rules)
        self._models = {v: m for v, m in models.items() if v != champion_version}
        self._active = Active(state=state, assigner=Assigner(state.experiment), arms=arms)
        self.error = None
        log.info(
            "experiment %s (version %s) served: %s",
            state.experiment.name,
            state.experiment.version,
            ", ".join(f"{n}={wanted.get(n, 'champion')}" for n in arms),
        )
        return True

    def _refuse(self, state: ExperimentState, why: str) -> None:
        message = f"experiment {state.experiment.name!r} not served: {why}"
        if message != self.error:
            log.error("%s", message)
        self.error = message
        self._active, self._models = None, {}

    def route(self, pseudonym: str, session_id: str | None) -> tuple[Active, Arm] | None:
        """The arm of this page view's unit, or None outside any experiment."""
        active = self._active
        if active is None:
            return None
        experiment = active.experiment
        unit = pseudonym if experiment.unit == "customer" else session_id
        if not unit:
            return None
        return active, active.arms[active.assigner.variant(unit).name]


def exposure_record(
    answer: Any,
    session_id: str | None,
    pseudonym: str,
    key_id: str,
    active: Active | None,
    latency_ms: float,
    failed: bool,
    teams: list[str] | None = None,
) -> dict[str, Any]:
    """The exposure line of one answer (:class:`serving.schemas.Recommendation`): what was
    shown (items, and for an interleaved page the arm that placed each), to whom (the
    pseudonym, never the raw id), in which experiment, version and arm, how fast, and whether
    it was degraded or the model's fallback. Clicks, purchases and returns are attributed to
    it (:func:`pipeline.experiments.metrics.attribute`)."""
    experiment = active.experiment if active else None
    return {
        "recommendation_id": answer.recommendation_id,
        "ts": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "session_id": session_id,
        "customer_pseudonym": pseudonym or None,
        "pseudonym_key_id": key_id if pseudonym else None,
        "experiment": experiment.name if experiment else None,
        "experiment_version": experiment.version if experiment else None,
        "variant": answer.variant,
        "model_version": answer.model_version,
        "items": [i.item_id for i in answer.items],
        "teams": teams,
        "latency_ms": round(latency_ms, 3),
        "degraded": answer.degraded,
        "fallback": failed,
    }
