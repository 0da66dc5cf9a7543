"""Which experiments are started, stopped and decided: one JSON file per experiment.

``fitrec experiment start FILE`` validates the file and writes
``<data_dir>/experiments/<name>.json``: the validated experiment itself (so serving never
re-reads the retailer's file, and an edit to it changes nothing until started again), its
version (:attr:`Experiment.version`), ``running`` and the start time. Serving reads the
running ones at start-up and on every champion poll, so all workers switch together within
one poll. ``stop`` marks it stopped (serving goes back to the champion alone); ``analyse``
records the verdict. Writes are atomic (a temporary file renamed over the old one).

At most one experiment runs at a time: two would fight over the same page views.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import orjson

from pipeline.experiments.config import Experiment

__all__ = [
    "ExperimentState",
    "StateError",
    "load_state",
    "record_verdict",
    "running",
    "save_state",
    "start",
    "states",
    "stop",
]

Status = Literal["running", "stopped"]


class StateError(RuntimeError):
    """An experiment cannot be started, stopped or found as asked."""


@dataclass(frozen=True)
class ExperimentState:
    """One experiment's record."""

    experiment: Experiment
    status: Status
    started_at: datetime
    stopped_at: datetime | None = None
    verdict: dict[str, Any] | None = None  # the last analysis: verdict, winner, when, run id

    @property
    def version(self) -> str:
        return self.experiment.version

    def as_dict(self) -> dict[str, Any]:
        return {
            "experiment": self.experiment.model_dump(mode="json"),
            "version": self.version,
            "status": self.status,
            "started_at": self.started_at.isoformat(),
            "stopped_at": self.stopped_at.isoformat() if self.stopped_at else None,
            "verdict": self.verdict,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExperimentState:
        stopped = data.get("stopped_at")
        return cls(
            experiment=Experiment.model_validate(data["experiment"]),
            status=data["status"],
            started_at=datetime.fromisoformat(data["started_at"]),
            stopped_at=datetime.fromisoformat(stopped) if stopped else None,
            verdict=data.get("verdict"),
        )


def _path(root: Path, name: str) -> Path:
    return root / f"{name}.json"


def save_state(root: Path, state: ExperimentState) -> Path:
    """Write ``state`` atomically."""
    root.mkdir(parents=True, exist_ok=True)
    target = _path(root, state.experiment.name)
    fd, tmp = tempfile.mkstemp(dir=root, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(orjson.dumps(state.as_dict(), option=orjson.OPT_INDENT_2))
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def load_state(root: Path, name: str) -> ExperimentState:
    """The record of experiment ``name``.

    Raises:
        StateError: None was started under that name, or its record is unreadable.
    """
    path = _path(root, name)
    if not path.is_file():
        known = sorted(p.stem for p in root.glob("*.json")) if root.exists() else []
        raise StateError(f"no experiment {name!r} was started; known: {known or 'none'}")
    try:
        return ExperimentState.from_dict(orjson.loads(path.read_bytes()))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        problem = f"the record of experiment {name!r} ({path}) is unreadable: {exc}"
        raise StateError(problem) from None


def states(root: Path) -> list[ExperimentState]:
    """Every readable record, by name (an unreadable one is skipped: serving must go on)."""
    found = []
    for path in sorted(root.glob("*.json")) if root.exists() else []:
        try:
            found.append(load_state(root, path.stem))
        except StateError:
            continue
    return found


def running(root: Path, when: datetime | None = None) -> list[ExperimentState]:
    """Experiments running now: started, not stopped, and ``when`` within [start, end)."""
    when = when or datetime.now(UTC)
    return [s for s in states(root) if s.status == "running" and s.experiment.running_at(when)]


def start(root: Path, experiment: Experiment, now: datetime | None = None) -> ExperimentState:
    """Start ``experiment``.

    Raises:
        StateError: Another experiment is running, or this one runs already in another
            version (stop it first: changing an experiment in flight breaks its analysis).
    """
    now = now or datetime.now(UTC)
    for other in states(root):
        if other.status != "running":
            continue
        if other.experiment.name == experiment.name:
            if other.version == experiment.version:
                return other  # started already: starting again changes nothing
            raise StateError(
                f"experiment {experiment.name!r} is running in version {other.version}; "
                f"stop it before starting version {experiment.version}"
            )
        raise StateError(
            f"experiment {other.experiment.name!r} is running: one experiment at a time "
            "(stop it first)"
        )
    state = ExperimentState(experiment=experiment, status="running", started_at=now)
    save_state(root, state)
    return state


def stop(root: Path, name: str, now: datetime | None = None) -> ExperimentState:
    """Stop experiment ``name`` (stopping a stopped one changes nothing)."""
    state = load_state(root, name)
    if state.status == "stopped":
        return state
    stopped = ExperimentState(
        experiment=state.experiment,
        status="stopped",
        started_at=state.started_at,
        stopped_at=now or datetime.now(UTC),
        verdict=state.verdict,
    )
    save_state(root, stopped)
    return stopped


def record_verdict(root: Path, name: str, verdict: dict[str, Any]) -> ExperimentState:
    """Record the last analysis's verdict (the promotion gate reads it)."""
    state = load_state(root, name)
    updated = ExperimentState(
        experiment=state.experiment,
        status=state.status,
        started_at=state.started_at,
        stopped_at=state.stopped_at,
        verdict=verdict,
    )
    save_state(root, updated)
    return updated
