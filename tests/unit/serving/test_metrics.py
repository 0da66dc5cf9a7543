"""serving.metrics: one app's registry in one process, the multiprocess directory per server
start, and the pruning of killed workers' live gauges (the two-worker server itself is
tests/integration/test_metrics_workers.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client import generate_latest
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.parser import text_string_to_metric_families

from serving.breaker import Breaker
from serving.metrics import (
    MULTIPROC_ENV,
    EventMetrics,
    GuardMetrics,
    LiveMultiProcessCollector,
    Metrics,
    RecommenderMetrics,
    StoreMetrics,
    multiprocess_dir,
    multiprocess_mode,
)


def _parts(breaker: Breaker) -> tuple[SimpleNamespace, SimpleNamespace, SimpleNamespace]:
    """What :class:`Metrics` reads of a recommender, processor and guard: their metrics."""
    recommender = SimpleNamespace(
        metrics=RecommenderMetrics(),
        breaker=breaker,
        store_health=SimpleNamespace(metrics=StoreMetrics(("store_empty", "features_missing"))),
    )
    return (
        recommender,
        SimpleNamespace(metrics=EventMetrics()),
        SimpleNamespace(metrics=GuardMetrics()),
    )


def _handed_in(recommender, processor, guard) -> list:
    """The families the app hands to :class:`Metrics`: each part's."""
    parts = (
        recommender.metrics,
        recommender.breaker.metrics,
        recommender.store_health.metrics,
        processor.metrics,
        guard.metrics,
    )
    return [family for part in parts for family in part.families]


def _families(metrics: Metrics) -> dict:
    text = generate_latest(metrics.registry).decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def _value(family, **labels) -> float:
    """The sample a counter (``_total``), histogram (``_count``) or gauge reports."""
    suffix = {"counter": "_total", "histogram": "_count"}.get(family.type, "")
    [sample] = [s for s in family.samples if s.name == family.name + suffix and s.labels == labels]
    return sample.value


def test_one_process_exports_the_parts_counts_and_the_default_collectors():
    assert not multiprocess_mode()  # importing Feast (serving does) did not switch it
    now = [0.0]
    breaker = Breaker(failures=1, reset_seconds=5, clock=lambda: now[0])
    recommender, processor, guard = _parts(breaker)
    metrics = Metrics(_handed_in(recommender, processor, guard))

    recommender.metrics.serving("7")
    recommender.metrics.feature_hit.inc(3)
    recommender.metrics.feature_miss.inc()
    processor.metrics.accepted.inc(2)
    guard.metrics.refused.inc()
    metrics.latency.labels("recommendations").observe(0.004)
    with pytest.raises(ConnectionError):
        breaker.call(_refused)  # one failure opens it
    families = _families(metrics)

    # Counters are counters (*_total), help texts explain, the caches count hits and misses.
    for family in families.values():
        assert family.documentation.replace(" ", "_") != family.name, family.name
        if any(s.name.endswith("_total") for s in family.samples):
            assert family.type == "counter", family.name
    assert _value(families["fitrec_feature_cache_lookups"], result="hit") == 3
    assert _value(families["fitrec_feature_cache_lookups"], result="miss") == 1
    assert _value(families["fitrec_events_accepted"]) == 2
    assert _value(families["fitrec_auth_refused"]) == 1
    assert _value(families["fitrec_rate_limited"]) == 0
    assert _value(families["fitrec_store_degraded"], reason="store_empty") == 0
    assert families["fitrec_request_seconds"].type == "histogram"
    assert _value(families["fitrec_request_seconds"], endpoint="recommendations") == 1  # _count
    assert _value(families["fitrec_redis_breaker_opened"]) == 1
    assert _value(families["fitrec_redis_breaker_state"]) == 2  # open
    info = families["fitrec_model_info"]
    assert info.type == "gauge" and _value(info, version="7", alias="champion") == 1
    # The default collectors: process (Linux), platform, garbage collector.
    assert {"process_cpu_seconds", "process_resident_memory_bytes", "python_info"} <= set(families)
    assert "python_gc_objects_collected" in families

    now[0] = 10.0  # past the cool-down: the next call is the probe, and it succeeds
    assert breaker.call(lambda: "pong") == "pong"
    assert _value(_families(metrics)["fitrec_redis_breaker_state"]) == 0


def _refused() -> None:
    raise ConnectionRefusedError("redis down")


def test_two_apps_in_one_process_count_apart():
    first, second = (Metrics(_handed_in(*_parts(Breaker()))) for _ in range(2))
    first.errors.labels("events").inc()
    assert _value(_families(first)["fitrec_errors"], endpoint="events") == 1
    assert _value(_families(second)["fitrec_errors"], endpoint="events") == 0


def test_a_hot_swap_moves_the_info_metric():
    metrics = RecommenderMetrics()
    metrics.serving("3")
    metrics.serving("4", previous="3")
    [family] = metrics.model.collect()
    values = {s.labels["version"]: s.value for s in family.samples}
    assert values == {"3": 0, "4": 1}
    assert {s.labels["alias"] for s in family.samples} == {"champion"}


def test_a_given_directory_is_emptied_at_start(monkeypatch, tmp_path):
    given = tmp_path / "prom"
    given.mkdir()
    (given / "counter_123.db").write_bytes(b"stale")
    (given / "README").write_text("not ours")
    monkeypatch.setenv(MULTIPROC_ENV, "restored-after-the-test")
    with multiprocess_dir(2, str(given)) as path:
        assert path == given and os.environ[MULTIPROC_ENV] == str(given)
        assert sorted(p.name for p in given.iterdir()) == ["README"]
    assert given.is_dir()  # the caller's directory stays


def test_several_workers_get_a_fresh_directory_removed_at_exit(monkeypatch):
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    with multiprocess_dir(2, None) as path:
        assert path is not None and path.is_dir() and not list(path.iterdir())
        assert os.environ[MULTIPROC_ENV] == str(path)
    assert not path.exists() and MULTIPROC_ENV not in os.environ
    with multiprocess_dir(1, None) as none:
        assert none is None and MULTIPROC_ENV not in os.environ


def _write_gauge(path: Path, pid: int, version: str, name: str = "fitrec_model_info") -> None:
    """One worker's info sample as prometheus_client writes it (a liveall gauge)."""
    values = MmapedDict(str(path / f"gauge_liveall_{pid}.db"))
    key = mmap_key(name, name, ["version", "alias"], [version, "champion"], "x")
    values.write_value(key, 1.0, 0.0)
    values.close()


def test_a_killed_workers_live_gauges_leave_and_only_fitrec_families_are_exported(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    dead_pid = int(dead.stdout)
    _write_gauge(tmp_path, os.getpid(), "5")
    _write_gauge(tmp_path, dead_pid, "4")
    _write_gauge(tmp_path, os.getpid(), "1", name="feast_info")  # a library's, not ours

    collector = LiveMultiProcessCollector(None, str(tmp_path))
    [family] = collector.collect()
    assert [(s.labels["pid"], s.labels["version"]) for s in family.samples] == [
        (str(os.getpid()), "5")
    ]
    assert not (tmp_path / f"gauge_liveall_{dead_pid}.db").exists()
