"""The recommender the API layer calls on every page view.

Load the champion once (by alias, :mod:`serving.loading`) and keep it in memory; swap in a new
champion atomically when the alias moves (polled in the background; requests in flight finish
on the model they started with). Per request: customer features and the live session
(:mod:`serving.lookups`), the experiment's arm, then the ranking (:mod:`pipeline.model.ranking`:
one model call scoring the whole catalogue, the ranking heads, the retailer's rules, sizes and
reasons), and one exposure line. When Redis is unreachable it answers from cache or the
popularity fallback, flagged ``degraded``; it never raises on a valid request.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import polars as pl
from cachetools import TTLCache
from prometheus_client.registry import Collector

from pipeline.config import CHAMPION, Settings, get_settings
from pipeline.experiments.interleaving import team_draft
from pipeline.features.declarations import ITEM_ENTITY
from pipeline.model.ranking import Ranked, Ranker, popular
from pipeline.privacy import key_id, pseudonymise
from pipeline.rules.schema import Rules, load_rules
from serving.breaker import Breaker
from serving.events import SessionStore
from serving.experiments import Active, Arm, ExperimentRouter, exposure_record
from serving.exposures import ExposureLog
from serving.health import HealthReport, StoreHealth
from serving.loading import LoadedModel, NoChampionError, Watcher, resolve
from serving.lookups import CustomerFeatures, Lookups
from serving.metrics import RecommenderMetrics
from serving.schemas import (
    Recommendation,
    RecommendationRequest,
    ScoredItem,
    new_recommendation_id,
)

__all__ = [
    "LoadedModel",
    "NoChampionError",
    "Recommendation",
    "RecommendationRequest",
    "Recommender",
    "ScoredItem",
]

log = logging.getLogger(__name__)

INTERLEAVED = "interleaved"  # the variant of an interleaved answer (its items carry arms)


@dataclass
class Counters:
    """What this process's recommender counted that is not exported (tests and drills wait on
    it); the exported counts are :class:`serving.metrics.RecommenderMetrics`."""

    requests: int = 0
    errors: int = 0
    extra: dict[str, int] = field(default_factory=dict)


class Recommender:
    """Champion model + online features + rules; construct once per process."""

    def __init__(self, settings: Settings, model: LoadedModel, rules: Rules | None = None):
        self.settings = settings
        self._model = model  # replaced as a whole on swap: readers see old or new, never half
        self._rules = rules or (load_rules(settings.rules_path) if settings.rules_path else Rules())
        self.features = CustomerFeatures(settings)
        # One breaker for both Redis paths (features and sessions live in the same Redis).
        self.breaker = Breaker.from_settings(settings)
        self.sessions = SessionStore(settings, self.breaker)
        self.store_health = StoreHealth(settings, self.breaker, self.features.fs.config)
        self.counters = Counters()
        self.metrics = RecommenderMetrics()
        self.metrics.serving(model.version)
        self.lookups = Lookups(settings, self.features, self.sessions, self.breaker, self.metrics)
        self.ranker = Ranker(settings.serving_candidates, settings.serving_ranking_weight)
        ttl = settings.serving_cache_seconds
        self._answer_cache: TTLCache = TTLCache(maxsize=1_000, ttl=max(ttl, 0.001))
        self._key = settings.pseudonym_key.get_secret_value()
        self._key_id = key_id(self._key)
        self._watcher = Watcher(self.refresh, self.refresh_experiments, self._experiment_error)
        self.exposures = (
            ExposureLog(
                settings.events_dir,
                settings.events_sync_seconds,
                on_lost=self.metrics.exposure_failed.inc,
            )
            if settings.serving_log_exposures
            else None
        )
        self.experiments = ExperimentRouter(
            settings,
            lambda version: LoadedModel.load(settings, version),
            lambda reference: resolve(settings, reference),
        )
        try:
            self.experiments.refresh(model)
        except Exception as exc:  # noqa: BLE001 - a broken experiment must not stop serving
            log.error("experiment not served: %s", exc)
            self.experiments.error = str(exc)

    @classmethod
    def from_registry(cls, settings: Settings | None = None, rules: Rules | None = None):
        settings = settings or get_settings()
        return cls(settings, LoadedModel.load(settings), rules)

    def metric_families(self) -> list[Collector]:
        """The Prometheus families this recommender and its parts count in (for
        :class:`serving.metrics.Metrics`)."""
        return [
            *self.metrics.families,
            *self.breaker.metrics.families,
            *self.store_health.metrics.families,
        ]

    @property
    def model(self) -> LoadedModel:
        """The model version requests are answered with now (a swap replaces it whole)."""
        return self._model

    @property
    def version(self) -> str:
        return self._model.version

    def describe(self, item_ids: list[str]) -> dict[str, dict]:
        """Catalogue attributes (category, brand, style, colour, price, sizes in stock) of
        the known ``item_ids`` in the current model, by id (for people, not page views)."""
        frame = self._model.attributes.filter(pl.col(ITEM_ENTITY).is_in(item_ids))
        return {row[ITEM_ENTITY]: row for row in frame.iter_rows(named=True)}

    @property
    def rules(self) -> Rules:
        return self._rules

    @rules.setter
    def rules(self, rules: Rules) -> None:
        """New rules: cached answers were made under the old ones."""
        self._rules = rules
        self._answer_cache.clear()

    # --- hot swap ---------------------------------------------------------------------

    def refresh(self) -> bool:
        """Load the champion if the alias moved; swap atomically. Returns True on a swap."""
        current = resolve(self.settings, CHAMPION)
        if current is None or current == self._model.version:
            return False
        model = LoadedModel.load(self.settings)  # loaded aside; requests keep the old one
        previous, self._model = self._model, model
        self._answer_cache.clear()
        self.metrics.swaps.inc()
        self.metrics.serving(model.version, previous.version)
        return True

    def refresh_experiments(self) -> bool:
        """Serve the running experiment's arms (loaded aside, swapped whole); True on a
        change. Cached cold-start answers were made for other arms: cleared on a change."""
        changed = self.experiments.refresh(self._model)
        if changed:
            self._answer_cache.clear()
        return changed

    def watch(self, interval: float | None = None) -> None:
        """Poll the registry in the background and swap when the champion moves; pick up a
        started or stopped experiment on the same poll."""
        self._watcher.start(interval or self.settings.serving_poll_seconds)

    def _experiment_error(self, error: str) -> None:
        self.experiments.error = error

    def close(self) -> None:
        self._watcher.stop()
        self.store_health.close()
        if self.exposures is not None:
            self.exposures.close()

    def health(self) -> HealthReport:
        """The online store's health now (blocking: one small Redis read, call it off the
        event loop); see :mod:`serving.health`."""
        return self.store_health.check()

    def clear_feature_cache(self) -> None:
        """Forget the cached customer features: the next request of each customer reads the
        online store (benchmarks and tests measure or break that read)."""
        self.lookups.cache.clear()

    # --- a page view --------------------------------------------------------------------

    def recommend(self, request: RecommendationRequest) -> Recommendation:
        began = time.perf_counter()
        self.counters.requests += 1
        champion = self._model  # one version for the whole request, whatever swaps meanwhile
        pseudonym = pseudonymise(request.customer_id, self._key) if request.customer_id else ""
        routed = self.experiments.route(pseudonym, request.session_id)
        arm = routed[1] if routed else None
        model = arm.model if arm is not None and arm.model is not None else champion
        assert isinstance(model, LoadedModel)
        rules = arm.rules if arm is not None and arm.rules is not None else self._rules
        teams: list[str] | None = None
        interleave = routed is not None and routed[0].experiment.mode == "interleaving"
        if routed is not None and interleave and not routed[1].holdout:
            answer, failed, teams = self._interleaved(request, pseudonym, routed[0], champion)
        else:
            answer, failed = self._answer(request, pseudonym, model, rules, arm)
        # Set on every answer: a cached one may have been made for another arm.
        answer.experiment = routed[0].experiment.name if routed else None
        answer.variant = INTERLEAVED if teams is not None else routed[1].name if routed else None
        if routed is not None:
            self.metrics.arms.labels(answer.experiment, answer.variant).inc()
        if self.exposures is not None:
            self._expose(answer, request, pseudonym, routed, began, failed, teams)
        return answer

    def _interleaved(
        self,
        request: RecommendationRequest,
        pseudonym: str,
        active: Active,
        champion: LoadedModel,
    ) -> tuple[Recommendation, bool, list[str]]:
        """Both rankers of an interleaving experiment answer; team draft merges their lists
        (seeded by the answer's id, so the logged id replays the same page). Returns the
        answer ("variant" is ``interleaved``), whether a model failed, and each item's arm."""
        arms = [a for a in active.arms.values() if not a.holdout]
        answers = []
        for arm in arms:
            model = arm.model if isinstance(arm.model, LoadedModel) else champion
            answers.append(self._answer(request, pseudonym, model, arm.rules or self._rules, arm))
        (first, failed_a), (second, failed_b) = answers
        answer_id = new_recommendation_id()
        ids, teams = team_draft(
            [i.item_id for i in first.items],
            [i.item_id for i in second.items],
            request.k,
            answer_id,
        )
        placed = {
            "a": {i.item_id: i for i in first.items},
            "b": {i.item_id: i for i in second.items},
        }
        merged = [placed[team][item] for item, team in zip(ids, teams, strict=True)]
        answer = first.model_copy(
            update={
                "items": merged,
                "recommendation_id": answer_id,
                "model_version": f"{first.model_version}+{second.model_version}",
                "degraded": first.degraded or second.degraded,
                "known_customer": first.known_customer or second.known_customer,
            }
        )
        names = {"a": arms[0].name, "b": arms[1].name}
        return answer, failed_a or failed_b, [names[t] for t in teams]

    def _answer(
        self,
        request: RecommendationRequest,
        pseudonym: str,
        model: LoadedModel,
        rules: Rules,
        arm: Arm | None,
    ) -> tuple[Recommendation, bool]:
        """The answer with ``model`` and ``rules`` (a holdout arm: popularity), and whether
        the model failed (the popularity fallback)."""
        scorer = model.scorer
        found = self.lookups.find(request.customer_id, pseudonym, request.session_id)
        features, state, degraded, pseudonym = (
            found.features,
            found.state,
            found.degraded,
            found.pseudonym,
        )
        known = found.known
        if pseudonym and not degraded and model.in_vocabulary(pseudonym):
            # The model was trained on this customer, so the store should hold their
            # features: without them the answer is a cold start by fault, not by design.
            self.store_health.missing.record(not known)
            degraded = not known
        known_items = scorer.item_index
        session = [i for i in state.items if i in known_items] if state is not None else []
        purchased = state.purchased if state is not None else []
        ignored: list[str] = []
        for item in request.session_items:  # one pass: kept for the session, or ignored
            (session if item in known_items else ignored).append(item)
        cold = not known and not session
        holdout = arm is not None and arm.holdout
        cache_key = (request.k, model.version, id(rules), holdout)
        if (cold or holdout) and not degraded:
            cached = self._answer_cache.get(cache_key)
            if cached is not None:
                self.metrics.answer_hit.inc()
                fresh = {"ignored_items": ignored, "recommendation_id": new_recommendation_id()}
                return cached.model_copy(update=fresh), False
            self.metrics.answer_miss.inc()

        failed = False
        if holdout:  # no personalisation: what is popular now, under no rules
            items = self._popular(model, request.k)
        else:
            try:
                ranked = self.ranker.rank(
                    scorer,
                    model.ordered,
                    rules,
                    pseudonym if known else "",
                    features,
                    session,
                    request.k,
                    purchased,
                )
                items = _scored(ranked)
            except Exception as exc:  # noqa: BLE001 - never fail a page view: popular instead
                log.warning("model failed, popularity fallback: %s", exc)
                self.metrics.fallback.inc()
                self.counters.errors += 1
                items, degraded, failed = self._popular(model, request.k), True, True
        if degraded:
            self.metrics.degraded.inc()
        answer = Recommendation(
            items=items,
            model_version=model.version,
            known_customer=known,
            cold_start=cold,
            degraded=degraded,
            ignored_items=ignored,
        )
        if (cold or holdout) and not degraded:
            self._answer_cache[cache_key] = answer
        return answer, failed

    def _expose(
        self,
        answer: Recommendation,
        request: RecommendationRequest,
        pseudonym: str,
        routed: tuple[Active, Arm] | None,
        began: float,
        failed: bool,
        teams: list[str] | None = None,
    ) -> None:
        """One exposure line, handed to the exposure log's writer thread
        (:func:`exposure_record`; a line it cannot write is counted, never raised here)."""
        assert self.exposures is not None
        record = exposure_record(
            answer,
            request.session_id,
            pseudonym,
            self._key_id,
            routed[0] if routed else None,
            (time.perf_counter() - began) * 1000,
            failed,
            teams,
        )
        self.exposures.append(record)

    def _popular(self, model: LoadedModel, k: int) -> list[ScoredItem]:
        return _scored(popular(model.scorer, model.popular, k))


def _scored(ranked: list[Ranked]) -> list[ScoredItem]:
    """The ranking's picks as the API's items: built, not validated again (the ranking's
    fields are typed, rounded and checked where they are made)."""
    return [
        ScoredItem.model_construct(
            item_id=r.item_id,
            score=r.score,
            recommended_size=r.recommended_size,
            fit_confidence=r.fit_confidence,
            reasons=r.reasons,
        )
        for r in ranked
    ]
