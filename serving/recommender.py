"""The recommender the API layer calls on every page view.

Load the champion once (by alias) and keep it in memory; swap in a new champion atomically
when the alias moves (polled in the background; requests in flight finish on the model they
started with). Per request: customer features (online store, cached briefly), the live
session, one model call scoring the whole catalogue, ranking heads and the fit head for the
best candidates, the retailer's rules (:mod:`pipeline.rules`), top-k with sizes and reasons.
When Redis is unreachable it answers from cache or the popularity fallback, flagged
``degraded``; it never raises on a valid request.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import mlflow
import numpy as np
import polars as pl
import redis
from cachetools import TTLCache
from mlflow.exceptions import MlflowException
from prometheus_client.registry import Collector

from pipeline.config import CHAMPION, Settings, get_settings
from pipeline.experiments.interleaving import team_draft
from pipeline.features import store
from pipeline.features.declarations import CUSTOMER_VIEW, ITEM_ENTITY
from pipeline.features.session import SessionState
from pipeline.model.scoring import Scorer
from pipeline.privacy import key_id, pseudonymise
from pipeline.registry.tracking import configure
from pipeline.rules.compiled import CatalogueRules
from pipeline.rules.schema import Context, Rules, load_rules
from serving.breaker import Breaker, BreakerOpen
from serving.events import EventLog, SessionStore
from serving.experiments import Active, Arm, ExperimentRouter, exposure_record
from serving.health import HealthReport, StoreHealth
from serving.metrics import RecommenderMetrics
from serving.reasons import drivers, explain, lifts
from serving.schemas import (
    Recommendation,
    RecommendationRequest,
    ScoredItem,
    new_recommendation_id,
)

log = logging.getLogger(__name__)

INTERLEAVED = "interleaved"  # the variant of an interleaved answer (its items carry arms)


class NoChampionError(RuntimeError):
    """No model version carries the champion alias yet."""


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
        number."""
        client = configure(settings)
        try:
            version = (
                str(client.get_model_version(settings.model_name, alias).version)
                if alias.isdigit()
                else str(client.get_model_version_by_alias(settings.model_name, alias).version)
            )
        except MlflowException as exc:
            raise NoChampionError(
                f"no version of {settings.model_name!r} has alias {alias!r}: "
                "run the nightly flow (fitrec run nightly) or `fitrec demo` first"
            ) from exc
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


@dataclass
class Counters:
    """What this process's recommender counted that is not exported (tests and drills wait on
    it); the exported counts are :class:`serving.metrics.RecommenderMetrics`."""

    requests: int = 0
    errors: int = 0
    extra: dict[str, int] = field(default_factory=dict)


class CustomerFeatures:
    """Online customer features: one pipelined Redis read (Feast's layout) or Feast's SDK."""

    def __init__(self, settings: Settings):
        self.fs = store.feature_store(settings)
        self.reader = None
        if settings.redis_url:
            from pipeline.features.online.reader import RedisFeatureReader

            self.reader = RedisFeatureReader.from_store(
                self.fs, [CUSTOMER_VIEW], socket_timeout=settings.redis_timeout_seconds
            )

    def read(self, pseudonym: str) -> dict:
        if self.reader is None:
            return store.read_customer_features(self.fs, [pseudonym])[0]
        return self.read_with_session(pseudonym, None)[0] or {}

    def read_with_session(
        self, pseudonym: str | None, session_key: str | None
    ) -> tuple[dict | None, bytes | None]:
        """A customer's features and the raw value at ``session_key`` in one Redis round
        trip; None for what was not asked (or, for the session, is not stored)."""
        assert self.reader is not None, "needs the Redis online store"
        pairs = [(CUSTOMER_VIEW, pseudonym)] if pseudonym else []
        keys = [session_key.encode("utf8")] if session_key else []
        rows, values = self.reader.read_pairs_and_get(pairs, keys)
        row = rows[0] if rows else None
        if row is not None:
            row.pop("event_timestamp", None)
        return row, values[0] if values else None


def _in_vocabulary(model: LoadedModel, pseudonym: str) -> bool:
    """Whether the model's customer embedding knows ``pseudonym`` (False if it cannot say)."""
    ids = getattr(getattr(model.scorer, "fast", None), "customer", None)
    return ids is not None and pseudonym in ids.index


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
        ttl = settings.serving_cache_seconds
        self._feature_cache: TTLCache = TTLCache(maxsize=100_000, ttl=max(ttl, 0.001))
        self._answer_cache: TTLCache = TTLCache(maxsize=1_000, ttl=max(ttl, 0.001))
        self._key = settings.pseudonym_key.get_secret_value()
        # Keys being rotated out (newest first): until the rebuild under the new key, a
        # customer's features and the model's vocabulary still use the old pseudonym.
        self._previous_keys = settings.pseudonym_keys[1:]
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._compiled: dict[tuple[int, int], tuple[LoadedModel, Rules, CatalogueRules]] = {}
        self._key_id = key_id(self._key)
        self.exposures = (
            EventLog(settings.events_dir, settings.events_sync_seconds, prefix="exposures")
            if settings.serving_log_exposures
            else None
        )
        self.experiments = ExperimentRouter(
            settings, lambda version: LoadedModel.load(settings, version), self._resolve
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
        client = configure(self.settings)
        try:
            current = str(
                client.get_model_version_by_alias(self.settings.model_name, CHAMPION).version
            )
        except MlflowException:
            return False
        if current == self._model.version:
            return False
        model = LoadedModel.load(self.settings)  # loaded aside; requests keep the old one
        previous, self._model = self._model, model
        self._answer_cache.clear()
        self.metrics.swaps.inc()
        self.metrics.serving(model.version, previous.version)
        return True

    def _resolve(self, reference: str) -> str | None:
        """The version an alias (or a version number) names now; None if none."""
        client = configure(self.settings)
        try:
            if reference.isdigit():
                return str(client.get_model_version(self.settings.model_name, reference).version)
            return str(
                client.get_model_version_by_alias(self.settings.model_name, reference).version
            )
        except MlflowException:
            return None

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
        interval = interval or self.settings.serving_poll_seconds

        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    self.refresh()
                except Exception as exc:  # noqa: BLE001 - a registry hiccup must not kill it
                    log.warning("champion refresh failed: %s", exc)
                try:
                    self.refresh_experiments()
                except Exception as exc:  # noqa: BLE001 - nor a broken experiment
                    self.experiments.error = str(exc)
                    log.warning("experiment refresh failed: %s", exc)

        self._watcher = threading.Thread(target=loop, name="champion-watch", daemon=True)
        self._watcher.start()

    def close(self) -> None:
        self._stop.set()
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
        self._feature_cache.clear()

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
        features, state, degraded = self._lookups(pseudonym, request.session_id)
        known = any(v is not None for v in features.values())
        if request.customer_id and not known and not degraded and self._previous_keys:
            pseudonym, features, degraded = self._under_previous_keys(
                request.customer_id, pseudonym, features
            )
            known = any(v is not None for v in features.values())
        if pseudonym and not degraded and _in_vocabulary(model, pseudonym):
            # The model was trained on this customer, so the store should hold their
            # features: without them the answer is a cold start by fault, not by design.
            self.store_health.missing.record(not known)
            degraded = not known
        session_items, purchased = list(request.session_items), []
        if state is not None:
            session_items = [*state.items, *request.session_items]
            purchased = state.purchased
        ignored = [i for i in request.session_items if i not in scorer.item_index]
        session = [i for i in session_items if i in scorer.item_index]
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
                items = self._rank(
                    model,
                    rules,
                    pseudonym if known else "",
                    features,
                    session,
                    request.k,
                    purchased,
                )
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
        """One exposure line in the durable event log (:func:`exposure_record`)."""
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
        try:
            self.exposures.append(record)
        except OSError as exc:  # a full disk: the page view is answered, the miss is logged
            self.metrics.exposure_failed.inc()
            log.error("exposure not logged: %s", exc)

    def _under_previous_keys(
        self, customer_id: str, pseudonym: str, features: dict
    ) -> tuple[str, dict, bool]:
        """During a key rotation: the customer's features under the first previous key that
        has them (pseudonym, features, degraded); the current pseudonym if none has."""
        for key in self._previous_keys:
            old = pseudonymise(customer_id, key)
            found, _, degraded = self._lookups(old, None)
            if degraded:
                return pseudonym, features, True
            if any(v is not None for v in found.values()):
                return old, found, False
        return pseudonym, features, False

    def _lookups(
        self, pseudonym: str, session_id: str | None
    ) -> tuple[dict, SessionState | None, bool]:
        """The customer's online features (cached briefly) and the stored session state, and
        whether either was unavailable (degraded). With both in Redis: one round trip."""
        features: dict | None = None
        if pseudonym:
            features = self._feature_cache.get(pseudonym)
            if features is not None:
                self.metrics.feature_hit.inc()
            else:
                self.metrics.feature_miss.inc()
        want_features = bool(pseudonym) and features is None
        if self.features.reader is not None and self.sessions.client is not None:
            if not want_features and not session_id:
                return features or {}, None, False
            try:
                row, raw = self.breaker.call(
                    self.features.read_with_session,
                    pseudonym if want_features else None,
                    self.sessions.key(session_id) if session_id else None,
                )
            except BreakerOpen:  # Redis known down: no call made, answer degraded at once
                return features or {}, None, True
            except Exception as exc:  # noqa: BLE001 - Redis down, timeouts: serve without
                log.warning("online features or session unavailable: %s", exc)
                return features or {}, None, True
            if want_features and row is not None:
                features = self._feature_cache[pseudonym] = row
            return features or {}, SessionState.from_json(raw) if raw else None, False
        degraded = False
        if want_features:  # Feast's SDK (SQLite online store)
            try:
                features = self._feature_cache[pseudonym] = self.features.read(pseudonym)
            except Exception as exc:  # noqa: BLE001 - serve without them
                log.warning("customer features unavailable: %s", exc)
                degraded = True
        state = None
        if session_id:
            try:
                state = self.sessions.get(session_id)
            except (redis.RedisError, OSError):
                degraded = True
        return features or {}, state, degraded

    def _rank(
        self,
        model: LoadedModel,
        rules: Rules,
        customer: str,
        features: dict,
        session: list[str],
        k: int,
        purchased: list[str],
    ) -> list[ScoredItem]:
        scorer = model.scorer
        items, kinds = scorer.pad_sessions([session])
        row = scorer.feature_matrix([features])
        out = scorer.serve(
            customer,
            row,
            items,
            kinds,
            self.settings.serving_candidates,
        )
        top = out["indices"]
        ids = scorer.item_ids[top].tolist()
        # Relevance first, nudged by how likely the item is bought and kept (returns cost the
        # retailer twice); a full weight let purchase propensity override the session's
        # intent (share of dresses after a dress session: 0.5 -> 0.3).
        weight = self.settings.serving_ranking_weight
        log_purchase, log_keep = np.log(out["purchase"] + 1e-6), np.log(out["keep"] + 1e-6)
        final = out["scores"] + weight * (log_purchase + log_keep)
        # Sizes before the rules when a rule reads them (for the best candidates), else only
        # for the picks.
        by_size = rules.in_stock_in_recommended_size
        who = out.get("customer")
        sizes = (
            scorer.best_sizes(customer, features, ids[: max(3 * k, 30)], who, row[0])
            if by_size
            else {}
        )
        mmr = rules.diversity.method == "mmr"
        picked_ids, scores, reasons_of = self._compiled_rules(model, rules).apply(
            top,
            final,
            [sizes.get(i, (None,))[0] for i in ids] if by_size else None,
            Context(purchased=frozenset(purchased), returned=frozenset()),
            k,
            scorer.raw_item_vectors[top] if mmr else None,
        )
        if not by_size:
            sizes = scorer.best_sizes(customer, features, picked_ids.tolist(), who, row[0])
        # Why each pick: the largest contribution to its final score (only the k picks).
        position = dict(zip(ids, range(len(ids)), strict=True))
        at = [position[i] for i in picked_ids.tolist()]
        parts = scorer.score_parts(out, items, top[at])
        leads: list[list[str]] = [[] for _ in at]
        if parts is not None:
            leads = drivers(lifts(parts, at, log_purchase, log_keep, weight, scores - final[at]))
        anchored = any("also_viewed" in keys for keys in leads)
        anchors = scorer.memory_anchors(items, top[at]) if anchored else [None] * len(at)
        answer = []
        picks = zip(picked_ids.tolist(), scores.tolist(), reasons_of, leads, anchors, strict=True)
        for item_id, score, rule_reasons, lead, anchor in picks:
            size, confidence = sizes.get(item_id, (None, None))
            reasons = explain(
                lead, rule_reasons, size, confidence, bool(customer), bool(session), anchor
            )
            answer.append(
                ScoredItem(
                    item_id=item_id,
                    score=round(score, 6),
                    recommended_size=size,
                    fit_confidence=None if confidence is None else round(confidence, 4),
                    reasons=reasons,
                )
            )
        return answer

    def _compiled_rules(self, model: LoadedModel, rules: Rules) -> CatalogueRules:
        """The rules compiled against this model's catalogue (once per model and rule set:
        the champion's and each experiment arm's; a swap or new rules compile afresh, a race
        at worst compiles twice)."""
        key = (id(model), id(rules))
        compiled = self._compiled.get(key)
        if compiled is None or compiled[0] is not model or compiled[1] is not rules:
            if len(self._compiled) >= 16:  # arms come and go: keep only recent ones
                self._compiled.clear()
            compiled = self._compiled[key] = (model, rules, CatalogueRules(rules, model.ordered))
        return compiled[2]

    def _popular(self, model: LoadedModel, k: int) -> list[ScoredItem]:
        ids = model.scorer.item_ids[model.popular[:k]].tolist()
        return [
            ScoredItem(item_id=i, score=float(k - r), reasons=["popular now"])
            for r, i in enumerate(ids)
        ]
