"""Loading model versions from the registry, and the background watch that hot-swaps them.

:class:`LoadedModel` is everything a request needs from one version, loaded aside and
swapped in as one object (requests in flight finish on the model they started with).
:class:`Watcher` polls the registry on a daemon thread and calls the recommender's refresh
hooks; a registry hiccup or a broken experiment is logged, never raised into it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import mlflow
import numpy as np
import polars as pl
from mlflow.exceptions import MlflowException

from pipeline.config import CHAMPION, Settings
from pipeline.features.declarations import ITEM_ENTITY
from pipeline.model.scoring import Scorer
from pipeline.registry.tracking import configure

log = logging.getLogger(__name__)


class NoChampionError(RuntimeError):
    """No model version carries the champion alias yet."""


def resolve(settings: Settings, reference: str) -> str | None:
    """The version an alias (or a version number) names now; None if none."""
    client = configure(settings)
    try:
        if reference.isdigit():
            return str(client.get_model_version(settings.model_name, reference).version)
        return str(client.get_model_version_by_alias(settings.model_name, reference).version)
    except MlflowException:
        return None


@dataclass
class LoadedModel:
    """Everything a request needs from one model version (swapped as one object)."""

    version: str
    scorer: Scorer
    attributes: pl.DataFrame  # item_id, category, brand, style, colour, price, sizes_in_stock
    popular: np.ndarray  # catalogue indices, most popular first
    ordered: pl.DataFrame = field(default_factory=pl.DataFrame)  # attributes by catalogue index

    @classmethod
    def load(cls, settings: Settings, alias: str = CHAMPION) -> LoadedModel:
        """The version the alias names now, or the version itself when ``alias`` is a
        number.

        Raises:
            NoChampionError: No version answers to ``alias``.
        """
        version = resolve(settings, alias)
        if version is None:
            raise NoChampionError(
                f"no version of {settings.model_name!r} has alias {alias!r}: "
                "run the nightly flow (fitrec run nightly) or `fitrec demo` first"
            )
        model = mlflow.pyfunc.load_model(f"models:/{settings.model_name}/{version}")
        scorer: Scorer = model.unwrap_python_model().scorer
        attributes = scorer.catalogue_attributes()
        popular = np.array(
            [scorer.item_index[i] for i in scorer.popular if i in scorer.item_index], np.int64
        )
        log.info("loaded %s version %s", settings.model_name, version)
        ordered = pl.DataFrame({ITEM_ENTITY: scorer.item_ids.tolist()}).join(
            attributes, on=ITEM_ENTITY, how="left", maintain_order="left"
        )
        return cls(
            version=version, scorer=scorer, attributes=attributes, popular=popular, ordered=ordered
        )

    def in_vocabulary(self, pseudonym: str) -> bool:
        """Whether the model's customer embedding knows ``pseudonym`` (False if it cannot
        say)."""
        ids = getattr(getattr(self.scorer, "fast", None), "customer", None)
        return ids is not None and pseudonym in ids.index


class Watcher:
    """Calls ``refresh`` (the champion) then ``refresh_experiments`` every ``interval``
    seconds on a daemon thread until :meth:`stop`; ``on_experiment_error`` hears why an
    experiment could not be served."""

    def __init__(
        self,
        refresh: Callable[[], object],
        refresh_experiments: Callable[[], object],
        on_experiment_error: Callable[[str], None],
    ):
        self._refresh = refresh
        self._refresh_experiments = refresh_experiments
        self._on_experiment_error = on_experiment_error
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, interval: float) -> None:
        self._thread = threading.Thread(
            target=self._loop, args=(interval,), name="champion-watch", daemon=True
        )
        self._thread.start()

    def _loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self._refresh()
            except Exception as exc:  # noqa: BLE001 - a registry hiccup must not kill it
                log.warning("champion refresh failed: %s", exc)
            try:
                self._refresh_experiments()
            except Exception as exc:  # noqa: BLE001 - nor a broken experiment
                self._on_experiment_error(str(exc))
                log.warning("experiment refresh failed: %s", exc)

    def stop(self) -> None:
        self._stop.set()
