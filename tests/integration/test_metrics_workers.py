"""``fitrec serve --workers 2`` against the served run: whichever worker answers a scrape
reports the whole server (prometheus_client's multiprocess mode), and the model info follows
a hot swap in both workers (issue 14, item 4)."""

from __future__ import annotations

import hashlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from pipeline.config import CHAMPION, PROJECT_ROOT, Settings
from pipeline.registry import tracking as registry
from serving.security import API_KEY_HEADER
from tests.support.processes import server_process
from tests.support.servers import free_port

pytestmark = pytest.mark.slow

KEY = "metrics-workers-test-key"
LATENCY = "fitrec_request_seconds"
EVENTS = 12
SCRAPES = 8


@contextmanager
def two_workers(prom_dir: Path, log_path: Path) -> Iterator[httpx.Client]:
    """``fitrec serve --workers 2`` on a free port (the current FITREC_* environment, an API
    key, metrics in ``prom_dir``); yields a client with the key, once both workers serve."""
    port = free_port()
    command = [sys.executable, "-m", "flows.cli", "serve", "--workers", "2", "--port", str(port)]
    env = {
        **os.environ,
        "PYTHONPATH": str(PROJECT_ROOT),
        "TF_USE_LEGACY_KERAS": "1",
        "PROMETHEUS_MULTIPROC_DIR": str(prom_dir),
        "FITREC_API_KEY_HASHES": hashlib.sha256(KEY.encode()).hexdigest(),
        "FITREC_SERVING_POLL_SECONDS": "1",
    }
    url = f"http://127.0.0.1:{port}"
    with (
        server_process(command, log_path, env=env, cwd=PROJECT_ROOT, stop_timeout=60),
        httpx.Client(base_url=url, headers={API_KEY_HEADER: KEY}, timeout=60) as client,
    ):
        # Both workers have loaded the champion once each has its info sample.
        _until(
            lambda: len(_info_pids(scrape(client))) == 2,
            600,
            lambda: log_path.read_text(errors="replace")[-3000:],
        )
        yield client


def scrape(client: httpx.Client) -> dict:
    """``GET /metrics`` on a new connection (so either worker may answer), parsed; {} while
    the server does not answer yet."""
    try:
        answer = httpx.get(str(client.base_url) + "/metrics", timeout=30)
    except httpx.HTTPError:
        return {}
    if answer.status_code != 200:
        return {}
    return {f.name: f for f in text_string_to_metric_families(answer.text)}


def _until(ok: Callable[[], bool], seconds: float, why: Callable[[], str] = str) -> None:
    deadline = time.monotonic() + seconds
    while not ok():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds}s: {why()}")
        time.sleep(0.5)


def _info_pids(families: dict) -> set[str]:
    info = families.get("fitrec_model_info")
    return {s.labels["pid"] for s in info.samples if s.value == 1} if info else set()


def _value(families: dict, name: str, sample: str, **labels: str) -> float:
    return sum(
        s.value
        for s in families[name].samples
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())
    )


def page_views_by_worker(prom_dir: Path) -> dict[str, float]:
    """Page views each worker counted, from its own file (the server exports only sums)."""
    counts = {}
    for path in prom_dir.glob("histogram_*.db"):
        [family] = [f for f in MultiProcessCollector.merge([str(path)]) if f.name == LATENCY] or [
            None
        ]
        if family is not None:
            counts[path.stem.split("_")[1]] = sum(
                s.value
                for s in family.samples
                if s.name == LATENCY + "_count" and s.labels["endpoint"] == "recommendations"
            )
    return counts


def _stale_values(prom_dir: Path) -> None:
    """A previous start's file, as prometheus_client writes it: 1000 page views of a worker
    long gone. A server that did not empty the directory would count them."""
    values = MmapedDict(str(prom_dir / "histogram_999999.db"))
    key = mmap_key(LATENCY, LATENCY + "_count", ["endpoint"], ["recommendations"], "stale")
    values.write_value(key, 1000.0, 0.0)
    values.close()


def _page_views(url: str, n: int) -> None:
    """``n`` page views from 4 threads, each on a new connection (so both workers answer)."""
    failures: list[int] = []

    def views(count: int) -> None:
        for _ in range(count):
            answer = httpx.post(
                url + "/recommendations",
                json={"session_items": ["I000005", "I000011"], "k": 5},
                headers={API_KEY_HEADER: KEY},
                timeout=60,
            )
            if answer.status_code != 200:
                failures.append(answer.status_code)

    threads = [threading.Thread(target=views, args=(n // 4,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures


def test_a_scrape_of_any_worker_counts_every_worker(served, tmp_path: Path):
    settings: Settings = served[0]
    client_mlflow = registry.configure(settings)
    champion = str(client_mlflow.get_model_version_by_alias(settings.model_name, CHAMPION).version)
    prom_dir = tmp_path / "prometheus"
    prom_dir.mkdir()
    _stale_values(prom_dir)
    copy = None
    try:
        with two_workers(prom_dir, tmp_path / "serve.log") as client:
            url = str(client.base_url)
            # Page views until both workers answered some (the kernel picks the worker).
            sent = 0
            while sent < 200:
                _page_views(url, 20)
                sent += 20
                by_worker = page_views_by_worker(prom_dir)
                if len([n for n in by_worker.values() if n > 0]) == 2:
                    break
            print(f"page views by worker {sorted(by_worker.values())}, {sent} sent")
            assert len(by_worker) == 2 and all(n > 0 for n in by_worker.values()), by_worker
            assert sum(by_worker.values()) == sent
            for n in range(EVENTS):
                body = {"session_id": f"mw-{n % 3}", "event_type": "view", "item_id": "I000007"}
                assert client.post("/events", json=body).json()["accepted"]
            refused = httpx.post(url + "/events", json=body, timeout=30)
            assert refused.status_code == 401

            for _ in range(SCRAPES):  # new connections: either worker answers each
                families = scrape(client)
                # The sum over workers, exactly (each worker alone has fewer: see above).
                assert (
                    _value(families, LATENCY, LATENCY + "_count", endpoint="recommendations")
                    == sent
                )
                bucket = _value(
                    families, LATENCY, LATENCY + "_bucket", endpoint="recommendations", le="+Inf"
                )
                assert bucket == sent
                assert (
                    _value(families, "fitrec_events_accepted", "fitrec_events_accepted_total")
                    == EVENTS
                )
                assert _value(families, "fitrec_auth_refused", "fitrec_auth_refused_total") == 1
                assert _value(families, "fitrec_errors", "fitrec_errors_total") == 0
                # Conventions: *_total are counters, latency a histogram, state and info
                # gauges; help texts explain.
                for family in families.values():
                    assert family.documentation.replace(" ", "_") != family.name, family.name
                    if any(s.name.endswith("_total") for s in family.samples):
                        assert family.type == "counter", family.name
                assert families[LATENCY].type == "histogram"
                assert families["fitrec_redis_breaker_state"].type == "gauge"
                assert (
                    _value(families, "fitrec_redis_breaker_state", "fitrec_redis_breaker_state")
                    == 0
                )
                assert "python_info" in families
                # The champion's version, one sample per live worker (both).
                info = families["fitrec_model_info"]
                assert info.type == "gauge"
                assert {
                    (s.labels["version"], s.labels["alias"], s.value) for s in info.samples
                } == {(champion, CHAMPION, 1.0)}
                assert _info_pids(families) == set(by_worker)

            # A new champion: each worker swaps on its own poll; the info follows in both.
            copy = str(
                client_mlflow.copy_model_version(
                    f"models:/{settings.model_name}/{champion}", settings.model_name
                ).version
            )
            registry.promote(settings, copy)

            def swapped() -> bool:
                families = scrape(client)
                info = families.get("fitrec_model_info")
                if info is None:
                    return False
                now = {(s.labels["pid"], s.labels["version"]) for s in info.samples if s.value == 1}
                return now == {(pid, copy) for pid in by_worker}

            _until(swapped, 180, lambda: str(scrape(client).get("fitrec_model_info")))
            families = scrape(client)
            old = {
                s.labels["pid"]
                for s in families["fitrec_model_info"].samples
                if s.labels["version"] == champion and s.value == 0
            }
            assert old == set(by_worker)
            assert _value(families, "fitrec_model_swaps", "fitrec_model_swaps_total") == 2
    finally:
        if copy is not None:
            client_mlflow.set_registered_model_alias(settings.model_name, CHAMPION, champion)
            client_mlflow.delete_model_version(settings.model_name, copy)
