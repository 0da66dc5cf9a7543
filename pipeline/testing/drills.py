"""Fault drills against real processes, shared by the tests (which assert on them) and
``benchmarks/trust.py`` (which reports them): the HTTP fuzz of the live API from its own
OpenAPI spec, the ``kill -9`` of a serving process under load, and page views with Redis
frozen (SIGSTOP).

Each drill returns what it counted; none of them asserts.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import zlib
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from pipeline.config import PROJECT_ROOT, Settings
from pipeline.testing.servers import free_port
from serving.security import API_KEY_HEADER


@contextmanager
def live_app(app: Any, timeout: float = 120) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free port in a thread; yields its base URL."""
    import uvicorn

    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="live-app", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)


# --- HTTP fuzz ----------------------------------------------------------------------------


def _in_window(case: Any) -> None:
    """Move a valid case's event time into the accepted window (a rule JSON Schema cannot
    state; the serving trust tests test the window), keeping the case otherwise as
    generated."""
    body = case.body
    if case.operation.path == "/events" and isinstance(body, dict) and body.get("ts"):
        back = zlib.crc32(str(body["ts"]).encode()) % (29 * 86_400)
        body["ts"] = (datetime.now(UTC) - timedelta(seconds=back)).isoformat()


@dataclass
class FuzzResult:
    """Status codes of every generated case, and the cases whose answer broke the spec."""

    statuses: Counter[int] = field(default_factory=Counter)
    mismatches: list[str] = field(default_factory=list)

    @property
    def cases(self) -> int:
        return sum(self.statuses.values())

    @property
    def server_errors(self) -> int:
        return sum(n for code, n in self.statuses.items() if code >= 500)


def fuzz_api(url: str, key: str, examples: int = 200) -> FuzzResult:
    """schemathesis' positive and negative cases for every operation of the live API at
    ``url``, deterministic (``derandomize``), at most ``examples`` per operation and mode.
    schemathesis' own checks (no server error, documented status, content type, headers,
    body schema) decide a mismatch; a mismatch is recorded, not raised."""
    import schemathesis
    from hypothesis import HealthCheck, given
    from hypothesis import settings as hsettings
    from schemathesis.core.failures import FailureGroup
    from schemathesis.generation.modes import GenerationMode

    schema = schemathesis.openapi.from_url(url + "/openapi.json")
    result = FuzzResult()

    def run(operation: Any, mode: GenerationMode) -> None:
        @hsettings(
            max_examples=examples,
            derandomize=True,  # the same cases every run
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def check(case: Any) -> None:
            if mode is GenerationMode.POSITIVE:
                _in_window(case)
            response = case.call(headers={API_KEY_HEADER: key}, timeout=60)
            result.statuses[response.status_code] += 1
            try:
                case.validate_response(response)
            except FailureGroup as group:  # schemathesis' failed checks
                for failure in group.exceptions:
                    title = getattr(failure, "title", None) or type(failure).__name__
                    result.mismatches.append(
                        f"{case.operation.label} -> {response.status_code}: {title}"
                    )

        check()

    for operation in (op.ok() for op in schema.get_all_operations()):  # type: ignore[union-attr]
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            if mode is GenerationMode.NEGATIVE and operation.method.upper() == "GET":
                continue  # /health and /metrics take no input: nothing to make invalid
            run(operation, mode)
    return result


# --- kill -9 under load -------------------------------------------------------------------


@dataclass
class KillResult:
    accepted: int
    in_log: int


def kill9_drill(
    env: Mapping[str, str],
    events_dir: Path,
    key: str,
    workdir: Path,
    target: int = 1000,
    clients: int = 4,
) -> KillResult:
    """Start ``uvicorn serving.app:create_app`` with ``env``, post events from ``clients``
    threads, ``kill -9`` it once ``target`` were answered accepted (requests in flight), and
    count how many of the accepted events are in the durable log under ``events_dir``."""
    port = free_port()
    log_path = workdir / "uvicorn-kill9.log"
    command = [sys.executable, "-m", "uvicorn", "serving.app:create_app", "--factory"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    full_env = {**os.environ, **env, "PYTHONPATH": str(PROJECT_ROOT), "TF_USE_LEGACY_KERAS": "1"}
    url = f"http://127.0.0.1:{port}"
    accepted: list[str] = []
    lock = threading.Lock()
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            command, env=full_env, cwd=PROJECT_ROOT, stdout=log_file, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + 600  # loading TensorFlow and the model on a busy box
            while True:
                try:
                    if httpx.get(url + "/health", timeout=10).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        "serving did not start: " + log_path.read_text(errors="replace")[-3000:]
                    )
                time.sleep(0.5)

            def load(worker: int) -> None:
                with httpx.Client(base_url=url, headers={API_KEY_HEADER: key}, timeout=30) as c:
                    for n in range(1_000_000):
                        event_id = f"kill9-{worker}-{n}"
                        body = {
                            "event_id": event_id,
                            "session_id": f"k9-{worker}-{n % 7}",
                            "event_type": "view",
                            "item_id": "I000007",
                        }
                        try:
                            answer = c.post("/events", json=body)
                        except httpx.HTTPError:
                            return  # the server is gone
                        if answer.status_code == 200 and answer.json()["accepted"]:
                            with lock:
                                accepted.append(event_id)

            threads = [threading.Thread(target=load, args=(w,)) for w in range(clients)]
            for thread in threads:
                thread.start()
            deadline = time.monotonic() + 300
            while len(accepted) < target and time.monotonic() < deadline:
                time.sleep(0.01)
            process.send_signal(signal.SIGKILL)  # mid-load: requests are in flight
            process.wait(60)
            for thread in threads:
                thread.join(120)
        finally:
            if process.poll() is None:
                process.kill()
    logged = set()
    for path in events_dir.rglob("*.jsonl"):
        for line in path.read_bytes().splitlines():
            try:
                logged.add(json.loads(line)["event_id"])
            except (ValueError, KeyError):
                continue  # a line cut by the kill was never answered accepted
    with lock:
        answered = list(accepted)
    return KillResult(accepted=len(answered), in_log=len(set(answered) & logged))


# --- Redis frozen -------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def timed_page_views(
    url: str, key: str, requests: int = 200, session: str = "frozen"
) -> tuple[list[float], int]:
    """``requests`` page views of known-looking customers, one after another; returns the
    latencies (seconds) and how many answers said ``degraded``."""
    latencies: list[float] = []
    degraded = 0
    with httpx.Client(base_url=url, headers={API_KEY_HEADER: key}, timeout=120) as client:
        for n in range(requests):
            start = time.perf_counter()
            page = client.post(
                "/recommendations", json={"customer_id": f"C{n:07d}", "session_id": session}
            )
            latencies.append(time.perf_counter() - start)
            degraded += bool(page.status_code == 200 and page.json()["degraded"])
    return latencies, degraded


@contextmanager
def frozen(pid: int) -> Iterator[None]:
    """SIGSTOP a process for the block (SIGCONT after, whatever happens)."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


# --- erasure ------------------------------------------------------------------------------


def serve_events(settings: Settings, day: date, customers: list[str]) -> None:
    """Live events through serving's event path: the durable log and Redis session keys."""
    from pipeline.data.curated import current_dimension
    from serving.events import EventLog, EventProcessor, SessionEventRequest, SessionStore

    log = EventLog(settings.events_dir)
    processor = EventProcessor(settings, SessionStore(settings), event_log=log)
    items = sorted(current_dimension(settings.curated_dir, "items", day)["item_id"])
    noon = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
    try:
        for n, customer in enumerate(customers * 3):
            _, degraded = processor.process(
                SessionEventRequest(
                    session_id=f"live-{n % len(customers)}",
                    customer_id=customer,
                    event_type="view",
                    item_id=items[n],
                    ts=noon + timedelta(seconds=n),
                )
            )
            if degraded:
                raise RuntimeError("serving's session store did not answer")
    finally:
        log.close()


def customer_in_every_table(settings: Settings) -> str:
    """The raw id of the busiest customer found in every event table (the model's vocabulary
    holds only customers with enough examples): one who is in every store after a night."""
    import polars as pl

    from pipeline.data.curated import scan_curated
    from pipeline.privacy import pseudonymise

    key = settings.pseudonym_key.get_secret_value()
    common: set[str] | None = None
    for table in ("session_events", "try_ons", "purchases"):
        ids = set(
            scan_curated(settings.curated_dir, table)
            .select("customer_id")
            .collect()["customer_id"]
            .drop_nulls()
        )
        common = ids if common is None else common & ids
    raws = pl.concat(
        pl.read_parquet(p, columns=["customer_id"])
        for p in sorted(settings.raw_dir.glob("*/customers.parquet"))
    )["customer_id"].unique()
    # The busiest of them: the model's vocabulary holds only customers with enough examples.
    busiest = (
        scan_curated(settings.curated_dir, "session_events")
        .group_by("customer_id")
        .len()
        .sort(["len", "customer_id"], descending=[True, False])
        .collect()["customer_id"]
    )
    by_pseudonym = {pseudonymise(r, key): r for r in raws.drop_nulls()}
    for pseudonym in busiest:
        if pseudonym in (common or set()) and pseudonym in by_pseudonym:
            return by_pseudonym[pseudonym]
    raise LookupError("no customer in every table")
