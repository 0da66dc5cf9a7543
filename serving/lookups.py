"""The online lookups of a page view: the customer's features and the live session state.

With both in Redis they are one pipelined round trip through the breaker; with Feast's SDK
(the SQLite online store) a read each. Features are cached briefly per pseudonym. During a
key rotation a customer whose features are not found under the current key is looked up
under the previous keys, newest first (until the rebuild under the new key, the store and
the model's vocabulary still use the old pseudonym). Redis down, slow or behind an open
breaker: the lookup answers what it has and says ``degraded``; it never raises.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import redis
from cachetools import TTLCache

from pipeline.config import Settings
from pipeline.features import store
from pipeline.features.declarations import CUSTOMER_VIEW
from pipeline.features.session import SessionState
from pipeline.privacy import pseudonymise
from serving.breaker import Breaker, BreakerOpen
from serving.events import SessionStore
from serving.metrics import RecommenderMetrics

log = logging.getLogger(__name__)

FEATURE_CACHE_SIZE = 100_000


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


@dataclass(frozen=True)
class Found:
    """What the lookups found: the features (empty when none), the session state (None when
    none or unavailable), whether anything was unavailable, and the pseudonym they are
    stored under (a previous key's during a rotation)."""

    features: dict
    state: SessionState | None
    degraded: bool
    pseudonym: str

    @property
    def known(self) -> bool:
        """Whether the store holds features of this customer."""
        return any(v is not None for v in self.features.values())


class Lookups:
    """The customer's features (cached briefly) and the session's state for a page view."""

    def __init__(
        self,
        settings: Settings,
        features: CustomerFeatures,
        sessions: SessionStore,
        breaker: Breaker,
        metrics: RecommenderMetrics,
    ):
        self.features = features
        self.sessions = sessions
        self.breaker = breaker
        self.metrics = metrics
        ttl = max(settings.serving_cache_seconds, 0.001)
        self.cache: TTLCache = TTLCache(maxsize=FEATURE_CACHE_SIZE, ttl=ttl)
        # Keys being rotated out (newest first).
        self.previous_keys: Sequence[str] = settings.pseudonym_keys[1:]

    def find(self, customer_id: str | None, pseudonym: str, session_id: str | None) -> Found:
        """Features and session of a page view; under a previous key when the current one
        finds nothing (during a rotation)."""
        features, state, degraded = self.lookup(pseudonym, session_id)
        found = Found(features, state, degraded, pseudonym)
        if customer_id and not found.known and not degraded and self.previous_keys:
            old, features, degraded = self._under_previous_keys(customer_id, pseudonym, features)
            found = Found(features, state, degraded, old)
        return found

    def _under_previous_keys(
        self, customer_id: str, pseudonym: str, features: dict
    ) -> tuple[str, dict, bool]:
        """During a key rotation: the customer's features under the first previous key that
        has them (pseudonym, features, degraded); the current pseudonym if none has."""
        for key in self.previous_keys:
            old = pseudonymise(customer_id, key)
            found, _, degraded = self.lookup(old, None)
            if degraded:
                return pseudonym, features, True
            if any(v is not None for v in found.values()):
                return old, found, False
        return pseudonym, features, False

    def lookup(
        self, pseudonym: str, session_id: str | None
    ) -> tuple[dict, SessionState | None, bool]:
        """The customer's online features (cached briefly) and the stored session state, and
        whether either was unavailable (degraded). With both in Redis: one round trip."""
        features: dict | None = None
        if pseudonym:
            features = self.cache.get(pseudonym)
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
                features = self.cache[pseudonym] = row
            return features or {}, SessionState.from_json(raw) if raw else None, False
        return self._with_sdk(pseudonym if want_features else "", features, session_id)

    def _with_sdk(
        self, pseudonym: str, features: dict | None, session_id: str | None
    ) -> tuple[dict, SessionState | None, bool]:
        """Feast's SDK (SQLite online store) for the features (``pseudonym``: "" when they
        are cached or not asked), the session store for the state."""
        degraded = False
        if pseudonym:
            try:
                features = self.cache[pseudonym] = self.features.read(pseudonym)
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
