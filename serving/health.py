"""Is the online store serving what the model expects? The content of ``GET /health``.

Three ways the store fails serving, each a reason code in the health answer (and a label of
the ``fitrec_store_degraded_total`` counter):

* ``redis_unreachable``: the breaker is open, or reading the store's watermark failed (the
  health read does not go through the breaker: page views alone open and close it).
* ``store_empty``: the online store holds no watermark (or zero rows) for the customer view,
  as after a Redis restarted empty: materialisation has not (re)filled it.
* ``features_missing``: of the recent lookups of customers in the model's vocabulary (at most
  :data:`WINDOW`, once there are :data:`MIN_LOOKUPS`), a share above
  ``Settings.store_missing_threshold`` found no features (a partial store).

The HTTP status of ``/health`` stays 200; the body says ``degraded`` and why. Readiness
(``/health/ready``) asks only :meth:`StoreHealth.reachable`: an empty or partial store still
answers (degraded), so a process in front of it keeps its traffic.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from pipeline.config import Settings
from pipeline.features.declarations import CUSTOMER_VIEW
from pipeline.features.online.state import Watermark, read_watermarks, state_key
from serving.breaker import OPEN, Breaker, BreakerOpen
from serving.metrics import StoreMetrics

WINDOW = 200
"""Recent lookups of vocabulary customers the missing share is taken over."""

MIN_LOOKUPS = 20
"""Fewer lookups than this in the window say nothing about the share."""

HEALTH_TIMEOUT_MAX = 1.0
"""Seconds the health check waits on Redis at most."""

REDIS_UNREACHABLE = "redis_unreachable"
STORE_EMPTY = "store_empty"
FEATURES_MISSING = "features_missing"


@dataclass(frozen=True, slots=True)
class HealthReport:
    """``ok`` or ``degraded``, with the reason codes and a sentence for each."""

    status: str
    reasons: list[str] = field(default_factory=list)
    details: list[str] = field(default_factory=list)


class MissingShare:
    """Rolling share of vocabulary customers whose features the store did not have."""

    def __init__(self, window: int = WINDOW, minimum: int = MIN_LOOKUPS):
        if window < 1 or not 0 < minimum <= window:
            raise ValueError("need window >= 1 and 0 < minimum <= window")
        self.minimum = minimum
        self._seen: deque[bool] = deque(maxlen=window)
        self._lock = threading.Lock()

    def record(self, missing: bool) -> None:
        with self._lock:
            self._seen.append(missing)

    def share(self) -> tuple[float | None, int]:
        """(share missing, lookups in the window); the share is None below the minimum."""
        with self._lock:
            n = len(self._seen)
            misses = sum(self._seen)
        return (misses / n if n >= self.minimum else None), n


class StoreHealth:
    """Checks the online store on demand (each ``/health``) and counts degraded checks."""

    def __init__(self, settings: Settings, breaker: Breaker, feast_config: Any):
        self.settings = settings
        self.breaker = breaker
        self.feast_config = feast_config
        self.threshold = settings.store_missing_threshold
        self.missing = MissingShare()
        self.metrics = StoreMetrics((REDIS_UNREACHABLE, STORE_EMPTY, FEATURES_MISSING))
        self._client: Any = None
        if settings.redis_url:
            from pipeline.redis_url import RedisTarget

            # One small read, off the event loop, never longer than HEALTH_TIMEOUT_MAX: a
            # frozen Redis must not make /health wait as long as a page view may.
            timeout = min(max(settings.redis_timeout_seconds, 0.25), HEALTH_TIMEOUT_MAX)
            self._client = RedisTarget.parse(settings.redis_url).client(
                socket_timeout=timeout, retries=0
            )

    def _customer_watermark(self) -> Watermark | None:
        if self._client is None:
            return read_watermarks(self.feast_config).get(CUSTOMER_VIEW)
        if self.breaker.state == OPEN:  # known down: no call (the breaker counts page views)
            raise BreakerOpen("the Redis breaker is open")
        return Watermark.from_json(
            self._client.hget(state_key(self.feast_config.project), CUSTOMER_VIEW)
        )

    def check(self) -> HealthReport:
        """The store's state now (blocking: call it off the event loop)."""
        reasons: list[str] = []
        details: list[str] = []
        mark: Watermark | None = None
        reachable = True
        try:
            mark = self._customer_watermark()
        except Exception as error:  # noqa: BLE001 - any failure to read is "unreachable"
            reachable = False
            reasons.append(REDIS_UNREACHABLE)
            details.append(f"online store unreachable ({type(error).__name__})")
        if reachable and (mark is None or mark.rows == 0):
            reasons.append(STORE_EMPTY)
            details.append(
                f"online store holds no watermark for {CUSTOMER_VIEW}"
                if mark is None
                else f"online store watermark for {CUSTOMER_VIEW} counts 0 rows"
            )
        share, n = self.missing.share()
        if share is not None and share > self.threshold:
            reasons.append(FEATURES_MISSING)
            details.append(
                f"{share:.0%} of the last {n} known customers found no features "
                f"(threshold {self.threshold:.0%})"
            )
        for reason in reasons:
            self.metrics.degraded.labels(reason).inc()
        return HealthReport("degraded" if reasons else "ok", reasons, details)

    def reachable(self) -> tuple[bool, str | None]:
        """Whether the online store answers now: one PING to Redis (at most
        :data:`HEALTH_TIMEOUT_MAX`), or one read of SQLite's watermarks; blocking.

        Made whatever the breaker's state: readiness must see a Redis that is back even when
        no page view (the only caller that probes the breaker) has come since.

        Returns:
            (True, None), or (False, a sentence naming the error's type).
        """
        try:
            if self._client is None:
                read_watermarks(self.feast_config)
            else:
                self._client.ping()
        except Exception as error:  # noqa: BLE001 - any failure to answer is "unreachable"
            return False, f"online store unreachable ({type(error).__name__})"
        return True, None

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
