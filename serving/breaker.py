"""A circuit breaker for serving's Redis calls: a frozen Redis costs microseconds, not a
timeout, per request.

Closed, every call goes through; ``failures`` consecutive connection failures or timeouts
open it. Open, calls fail at once with :class:`BreakerOpen` (a :class:`ConnectionError`, so
callers that answer degraded on a lost connection need no new branch). After
``reset_seconds`` one call, the probe, goes through (half-open) while the others still fail
fast: its success closes the breaker, its failure opens it for another cool-down.

Written here rather than taken from pybreaker: pybreaker holds one lock around the whole
guarded call, which would queue every request's Redis round trip behind the others'; this
one holds its lock only to read or change the state.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import redis

from pipeline.config import Settings
from serving.metrics import BreakerMetrics

log = logging.getLogger(__name__)

T = TypeVar("T")

CLOSED, HALF_OPEN, OPEN = "closed", "half_open", "open"
STATE_CODES = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}

# What counts as Redis being unreachable or frozen (an error reply means it is alive).
FAILURES: tuple[type[BaseException], ...] = (
    ConnectionError,
    TimeoutError,
    OSError,
    redis.ConnectionError,
    redis.TimeoutError,
)


class BreakerOpen(ConnectionError):
    """The breaker is open: the call was not made."""


class Breaker:
    """Thread-safe circuit breaker (closed -> open -> half-open probe -> closed)."""

    def __init__(
        self,
        failures: int = 3,
        reset_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        name: str = "redis",
    ):
        self.threshold = failures
        self.reset_seconds = reset_seconds
        self.clock = clock
        self.name = name
        self.state = CLOSED
        self.failures = 0
        self.opened = 0  # times it opened (a metric)
        self.short_circuited = 0  # calls refused while open (a metric)
        self._opened_at = 0.0
        self._lock = threading.Lock()
        self.metrics = BreakerMetrics()  # exported; the ints above are this process's

    @classmethod
    def from_settings(cls, settings: Settings) -> Breaker:
        return cls(settings.redis_breaker_failures, settings.redis_breaker_reset_seconds)

    @property
    def code(self) -> int:
        """The state as a number for a gauge: 0 closed, 1 half-open, 2 open."""
        return STATE_CODES[self.state]

    def _admit(self) -> bool:
        with self._lock:
            if self.state == CLOSED:
                return True
            if self.state == OPEN and self.clock() - self._opened_at >= self.reset_seconds:
                self.state = HALF_OPEN  # this caller is the probe
                self.metrics.state.set(STATE_CODES[HALF_OPEN])
                return True
            self.short_circuited += 1
            self.metrics.short_circuited.inc()
            return False

    def _succeeded(self) -> None:
        with self._lock:
            if self.state != CLOSED:
                log.warning("%s breaker closed: the probe succeeded", self.name)
                self.metrics.state.set(STATE_CODES[CLOSED])
            self.state = CLOSED
            self.failures = 0

    def _failed(self) -> None:
        with self._lock:
            self.failures += 1
            if self.state == HALF_OPEN or (
                self.state == CLOSED and self.failures >= self.threshold
            ):
                if self.state == CLOSED:
                    log.warning(
                        "%s breaker open after %d failures; probing every %.1fs",
                        self.name,
                        self.failures,
                        self.reset_seconds,
                    )
                self.state = OPEN
                self._opened_at = self.clock()
                self.opened += 1
                self.metrics.opened.inc()
                self.metrics.state.set(STATE_CODES[OPEN])

    def call(self, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
        """``fn(*args, **kwargs)`` through the breaker.

        Raises:
            BreakerOpen: The breaker is open (or another caller is probing).
            Exception: Whatever ``fn`` raised (connection failures are counted).
        """
        if not self._admit():
            raise BreakerOpen(f"{self.name} circuit open")
        try:
            result = fn(*args, **kwargs)
        except FAILURES:
            self._failed()
            raise
        except BaseException:
            self._succeeded()  # Redis answered (an error reply, a bad value): it is alive
            raise
        self._succeeded()
        return result
