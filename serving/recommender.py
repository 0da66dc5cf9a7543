"""The recommender the API layer calls on every page view.

It loads ``models:/fitrec-recommender@champion`` once, reads the customer's online features
from Feast, and scores the live session against the whole catalogue. Unknown customers and
empty sessions get cold-start answers; unknown item ids are reported, not fatal.
"""

from __future__ import annotations

import logging
from typing import Annotated

import mlflow
from mlflow.exceptions import MlflowException
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from pipeline import store
from pipeline.config import CHAMPION, Settings, get_settings
from pipeline.privacy import pseudonymise
from pipeline.registry import configure
from pipeline.scoring import Scorer

log = logging.getLogger(__name__)

ItemId = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[\w.\-:]+$")]


class NoChampionError(RuntimeError):
    """No model version carries the champion alias yet."""


class RecommendationRequest(BaseModel):
    """One page view: who (optional) and what they have looked at in this session."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    customer_id: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = None
    session_items: list[ItemId] = Field(default_factory=list, max_length=200)
    k: int = Field(default=10, ge=1, le=100)


class ScoredItem(BaseModel):
    item_id: str
    score: float


class Recommendation(BaseModel):
    items: list[ScoredItem]
    model_version: str
    known_customer: bool
    cold_start: bool
    ignored_items: list[str]


class Recommender:
    """Champion model + online features; construct once per process."""

    def __init__(self, settings: Settings, scorer: Scorer, version: str):
        self.settings = settings
        self.scorer = scorer
        self.version = version
        self.features = store.feature_store(settings)
        self._key = settings.pseudonym_key.get_secret_value()

    @classmethod
    def from_registry(cls, settings: Settings | None = None, alias: str = CHAMPION) -> Recommender:
        settings = settings or get_settings()
        client = configure(settings)
        try:
            version = client.get_model_version_by_alias(settings.model_name, alias).version
        except MlflowException as exc:
            raise NoChampionError(
                f"no version of {settings.model_name!r} has alias {alias!r}: "
                "run the nightly flow (fitrec run nightly) or `fitrec demo` first"
            ) from exc
        model = mlflow.pyfunc.load_model(f"models:/{settings.model_name}@{alias}")
        scorer = model.unwrap_python_model().scorer
        log.info("loaded %s version %s (%s)", settings.model_name, version, alias)
        return cls(settings, scorer, str(version))

    def recommend(self, request: RecommendationRequest) -> Recommendation:
        pseudonym = pseudonymise(request.customer_id, self._key) if request.customer_id else ""
        features = store.read_customer_features(self.features, [pseudonym])[0] if pseudonym else {}
        known_customer = any(v is not None for v in features.values())
        ignored = [i for i in request.session_items if i not in self.scorer.item_index]
        session = [i for i in request.session_items if i in self.scorer.item_index]
        scored = self.scorer.recommend(
            [pseudonym if known_customer else ""], [features], [session], k=request.k
        )[0]
        return Recommendation(
            items=[
                ScoredItem(item_id=i, score=round(s, 6))
                for i, s in zip(scored.item_ids, scored.scores, strict=True)
            ],
            model_version=self.version,
            known_customer=known_customer,
            cold_start=not known_customer and not session,
            ignored_items=ignored,
        )
