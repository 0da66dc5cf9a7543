"""Serving's Prometheus metrics: what each part counts, and the registry ``GET /metrics`` reads.

Every count is a prometheus_client ``Counter``, ``Histogram`` or ``Gauge`` incremented where
the event happens: the recommender, the event processor, the guard, the Redis breaker and the
store's health check each own theirs (the classes below), created unregistered. Nothing is
read at scrape time, so the same objects work in both of prometheus_client's modes:

* One process (``fitrec serve``, the tests): each app's :class:`Metrics` registers its parts'
  objects in its own ``CollectorRegistry`` (several apps can live in one process), with the
  process, platform and garbage-collector collectors.
* Several workers (``fitrec serve --workers N``): ``PROMETHEUS_MULTIPROC_DIR`` is set before
  the workers start (:func:`multiprocess_dir`), prometheus_client then keeps every value in a
  file per worker there, and the registry holds only a ``MultiProcessCollector`` that sums
  the workers' files: any worker answering a scrape reports the whole server. Gauges say how
  workers combine: the breaker's state is the worst of the live workers (``livemax``), the
  model info has one sample per live worker (``liveall``, a ``pid`` label), so a hot swap
  shows worker by worker. A worker's live gauges go when it stops (``mark_process_dead`` at
  shut-down) or, if it was killed, at the next scrape (:class:`LiveMultiProcessCollector`).
  The process and GC collectors are left out there: they describe only the worker that
  happens to answer, so successive scrapes would mix workers under one series.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
    values,
)
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from pipeline.config import CHAMPION

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""The variable prometheus_client reads (at import) to switch to multiprocess mode."""

PREFIX = "fitrec_"
"""Every family serving defines starts with it."""

ENDPOINTS = ("recommendations", "events")
"""The endpoints the app times and counts errors of (exported from zero)."""

BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
"""Request latency buckets (seconds): a page view takes 1.5 to 5 ms in process."""


def multiprocess_mode() -> bool:
    """Whether prometheus_client keeps this process's values in files (it decided when first
    imported, by ``PROMETHEUS_MULTIPROC_DIR``'s presence then; the variable alone says
    nothing: importing Feast sets it, see :mod:`pipeline`)."""
    return values.ValueClass is not values.MutexValue


def _counter(name: str, documentation: str, labels: Iterable[str] = ()) -> Counter:
    return Counter(name, documentation, list(labels), registry=None)


def _gauge(
    name: str,
    documentation: str,
    labels: Iterable[str] = (),
    mode: Literal["liveall", "livemax"] = "livemax",
) -> Gauge:
    return Gauge(name, documentation, list(labels), registry=None, multiprocess_mode=mode)


class RecommenderMetrics:
    """What page views and hot swaps count, and the model version answering now."""

    def __init__(self) -> None:
        self.degraded = _counter(
            "fitrec_degraded_answers",
            "Page views answered degraded (online features or session state unavailable, "
            "or the model failed)",
        )
        self.fallback = _counter(
            "fitrec_fallback_answers",
            "Page views answered with the popularity fallback because the model failed",
        )
        self.swaps = _counter("fitrec_model_swaps", "Champion model versions hot-swapped in")
        self.exposure_failed = _counter(
            "fitrec_exposures_unlogged",
            "Answers served whose exposure could not be written to the event log (disk)",
        )
        self.arms = _counter(
            "fitrec_experiment_answers",
            "Page views answered in an experiment, by experiment and variant (the split)",
            ["experiment", "variant"],
        )
        features, answers = (
            _counter(
                f"fitrec_{cache}_cache_lookups",
                f"Lookups of the {cache} cache by result (hit ratio: rate of hits over all)",
                ["result"],
            )
            for cache in ("feature", "answer")
        )
        self.feature_hit, self.feature_miss = features.labels("hit"), features.labels("miss")
        self.answer_hit, self.answer_miss = answers.labels("hit"), answers.labels("miss")
        self.model = _gauge(
            "fitrec_model_info",
            "Model version serving page views (1), and versions swapped out (0), by alias",
            ["version", "alias"],
            mode="liveall",
        )
        self.families: list[Collector] = [
            self.degraded,
            self.fallback,
            self.swaps,
            self.exposure_failed,
            self.arms,
            features,
            answers,
            self.model,
        ]

    def serving(self, version: str, previous: str | None = None, alias: str = CHAMPION) -> None:
        """``version`` answers page views now (``previous`` no longer does). The old series
        is set to 0 rather than removed: multiprocess files cannot drop a series."""
        if previous is not None and previous != version:
            self.model.labels(previous, alias).set(0)
        self.model.labels(version, alias).set(1)


class EventMetrics:
    """What ``POST /events`` counts."""

    def __init__(self) -> None:
        self.accepted = _counter(
            "fitrec_events_accepted", "Session events written to the durable event log"
        )
        self.degraded = _counter(
            "fitrec_events_degraded",
            "Accepted events whose live session state could not be updated in Redis",
        )
        self.families: list[Collector] = [self.accepted, self.degraded]


class GuardMetrics:
    """Requests the guard refused."""

    def __init__(self) -> None:
        self.refused = _counter(
            "fitrec_auth_refused", "Requests refused for a missing or unknown API key"
        )
        self.limited = _counter(
            "fitrec_rate_limited", "Requests refused by the per-key rate limit (HTTP 429)"
        )
        self.families: list[Collector] = [self.refused, self.limited]


class BreakerMetrics:
    """The Redis circuit breaker's openings, refused calls and state."""

    def __init__(self) -> None:
        self.opened = _counter(
            "fitrec_redis_breaker_opened",
            "Times serving's Redis circuit breaker opened after repeated failures",
        )
        self.short_circuited = _counter(
            "fitrec_redis_short_circuited",
            "Redis calls not made because the circuit breaker was open",
        )
        self.state = _gauge(
            "fitrec_redis_breaker_state",
            "Serving's Redis circuit breaker: 0 closed, 1 probing (half-open), 2 open "
            "(with several workers: the worst of them)",
        )
        self.families: list[Collector] = [self.opened, self.short_circuited, self.state]


class StoreMetrics:
    """Health checks that found the online store degraded."""

    def __init__(self, reasons: Iterable[str]) -> None:
        self.degraded = _counter(
            "fitrec_store_degraded",
            "Health checks that found the online store degraded, by reason (a check with "
            "two reasons counts once under each)",
            ["reason"],
        )
        for reason in reasons:  # each exported from zero
            self.degraded.labels(reason)
        self.families: list[Collector] = [self.degraded]


class LiveMultiProcessCollector(multiprocess.MultiProcessCollector):
    """The workers' files summed: fitrec's own families only (libraries that count in
    prometheus_client's default registry, Feast's SDK among them, write to the same files;
    one process does not export them either), without the live gauges of workers that no
    longer run (a worker killed without its shut-down leaves them behind)."""

    def __init__(self, registry: CollectorRegistry | None, path: str | None = None):
        self.path = path or os.environ[MULTIPROC_ENV]
        super().__init__(registry, self.path)  # registering collects: self.path first

    def collect(self) -> Iterable[Metric]:
        for path in Path(self.path).glob("gauge_live*_*.db"):
            pid = path.stem.rsplit("_", 1)[-1]
            if pid.isdigit() and not _alive(int(pid)):
                multiprocess.mark_process_dead(int(pid), self.path)
        return [family for family in super().collect() if family.name.startswith(PREFIX)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


class Metrics:
    """The Prometheus metrics of one app: request latency and errors, its parts' counts, and
    the registry ``GET /metrics`` exports (see the module's docstring for the two modes).

    The parts hand their families in (``families``: each part's ``metrics.families``), so
    this module knows none of the parts and each of them can import it: the import graph
    stays a tree (breaker, events, health, recommender and security all sit above it).
    """

    def __init__(self, families: Iterable[Collector]):
        self.latency = Histogram(
            "fitrec_request_seconds",
            "Request latency by endpoint",
            ["endpoint"],
            buckets=BUCKETS,
            registry=None,
        )
        self.errors = _counter("fitrec_errors", "Requests that failed", ["endpoint"])
        for endpoint in ENDPOINTS:
            self.latency.labels(endpoint)
            self.errors.labels(endpoint)
        self.multiprocess = multiprocess_mode()
        self.registry = CollectorRegistry()
        if self.multiprocess:
            LiveMultiProcessCollector(self.registry)
            self.registry.register(PLATFORM_COLLECTOR)  # the same in every worker
            return
        for collector in (self.latency, self.errors, *families):
            self.registry.register(collector)
        for default in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            self.registry.register(default)

    def close(self) -> None:
        """At the worker's shut-down: its live gauges leave the multiprocess files."""
        if self.multiprocess:
            multiprocess.mark_process_dead(os.getpid())


@contextmanager
def multiprocess_dir(workers: int, given: str | None) -> Iterator[Path | None]:
    """The multiprocess directory for one server start, emptied before the workers start.

    Args:
        workers: The server's worker processes.
        given: ``PROMETHEUS_MULTIPROC_DIR`` as the process was started with (read before
            anything imported Feast, which sets it).

    ``given``: that directory, its ``*.db`` files (a previous start's values) deleted. None
    and more than one worker: a fresh temporary directory, removed afterwards. Either is
    exported to the workers through the variable. One worker and none given: None (values
    in memory, one process's registry).
    """
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink()
        os.environ[MULTIPROC_ENV] = str(path)
        yield path
        return
    if workers <= 1:
        yield None
        return
    path = Path(tempfile.mkdtemp(prefix="fitrec-metrics-"))
    before = os.environ.get(MULTIPROC_ENV)
    os.environ[MULTIPROC_ENV] = str(path)
    try:
        yield path
    finally:
        if before is None:
            os.environ.pop(MULTIPROC_ENV, None)
        else:
            os.environ[MULTIPROC_ENV] = before
        shutil.rmtree(path, ignore_errors=True)
