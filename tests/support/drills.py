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
from serving.security import API_KEY_HEADER
from tests.support.processes import http_ok, server_process
from tests.support.servers import free_port


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
                    sent = {"body": case.body, "query": case.query, "headers": case.headers}
                    result.mismatches.append(
                        f"{case.operation.label} -> {response.status_code}: {title}"
                        f" (sent {str(sent)[:300]})"
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
    with server_process(
        command,
        log_path,
        ready=http_ok(url + "/health", timeout=10),
        env=full_env,
        cwd=PROJECT_ROOT,
        timeout=600,  # loading TensorFlow and the model on a busy box
    ) as process:

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


# --- hostile ingest input -----------------------------------------------------------------


def _mutate_items(column: str, value: str) -> Any:
    def apply(path: Path) -> None:
        import polars as pl

        frame = pl.read_csv(path, infer_schema=False)
        rows = frame.with_columns(
            pl.when(pl.int_range(pl.len()) == 1).then(pl.lit(value)).otherwise(pl.col(column))
        )
        rows.write_csv(path)

    return apply


def _middle_line(path: Path, change: Any) -> None:
    lines = path.read_bytes().split(b"\n")
    middle = min(max(1, len(lines) // 2), len(lines) - 1) if len(lines) > 1 else 0
    lines[middle] = change(lines[middle])
    path.write_bytes(b"\n".join(lines))


def _list_column(path: Path) -> None:
    import polars as pl

    frame = pl.read_parquet(path)
    frame.with_columns(pl.concat_list("height_cm", "waist_cm").alias("height_cm")).write_parquet(
        path
    )


def ingest_mutations() -> dict[str, tuple[str, Any]]:
    """Named file-level and value-level mutations of one raw drop: name -> (file, change)."""
    import random

    garbage = bytes(random.Random(7).randrange(256) for _ in range(4096))
    files = ["customers.parquet", "items.csv", "session_events.jsonl"]
    files += ["try_ons.jsonl", "purchases.jsonl"]
    cases: dict[str, tuple[str, Any]] = {}
    for name in files:
        cases[f"{name}:empty"] = (name, lambda p: p.write_bytes(b""))
        cases[f"{name}:truncated"] = (
            name,
            lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
        )
        cases[f"{name}:garbage"] = (name, lambda p, g=garbage: p.write_bytes(g))
        cases[f"{name}:missing"] = (name, lambda p: p.unlink())
        if not name.endswith(".parquet"):
            cases[f"{name}:latin1_byte"] = (
                name,
                lambda p: _middle_line(p, lambda line: line.replace(b"e", b"\xe9", 1)),
            )
            cases[f"{name}:duplicated_line"] = (
                name,
                lambda p: _middle_line(p, lambda line: line + b"\n" + line),
            )
            cases[f"{name}:utf16"] = (
                name,
                lambda p: p.write_bytes(p.read_text("utf-8").encode("utf-16")),
            )
    cases["items.csv:stock_1e400"] = ("items.csv", _mutate_items("stock", '{"S": 1e400}'))
    cases["items.csv:stock_beyond_int32"] = (
        "items.csv",
        _mutate_items("stock", '{"S": 99999999999999999999}'),
    )
    cases["items.csv:stock_fraction"] = ("items.csv", _mutate_items("stock", '{"S": 1.5}'))
    big_chart = json.dumps({f"S{i}": {"bust": [80, 84]} for i in range(129)})
    cases["items.csv:chart_129_sizes"] = ("items.csv", _mutate_items("size_chart", big_chart))
    cases["items.csv:price_nan"] = ("items.csv", _mutate_items("price", "NaN"))
    cases["items.csv:extra_field"] = (
        "items.csv",
        lambda p: p.write_bytes(p.read_bytes().rstrip(b"\n") + b",surplus,fields\n"),
    )
    cases["customers.parquet:list_column"] = ("customers.parquet", _list_column)
    for token in ("NaN", "Infinity", "1e400", "99999999999999999999"):
        cases[f"try_ons.jsonl:duration_{token}"] = (
            "try_ons.jsonl",
            lambda p, t=token: _middle_line(
                p, lambda line: re_sub_value(line, b"duration_s", t.encode())
            ),
        )
    cases["session_events.jsonl:duplicate_key"] = (
        "session_events.jsonl",
        lambda p: _middle_line(p, lambda line: line.rstrip(b"}") + b',"item_id":"I999999"}'),
    )
    return cases


def re_sub_value(line: bytes, field_name: bytes, token: bytes) -> bytes:
    """``line`` (a JSON object's text) with the value of ``field_name`` replaced by ``token``
    verbatim (a token ``json.dumps`` would never write)."""
    import re

    pattern = re.compile(b'("' + re.escape(field_name) + b'"\\s*:\\s*)[^,}]+')
    return pattern.sub(lambda m: m.group(1) + token, line, count=1)


def _raw_rows(path: Path) -> int:
    """Rows a raw file holds, counted without ingest: non-blank lines (after a CSV's header)
    or Parquet rows. A file that cannot give rows at all (a 0-byte CSV or Parquet file, an
    unreadable Parquet file) counts as one, its quarantined file; an empty JSON lines file is
    a day without such events (0)."""
    if not path.is_file():
        return 0
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            return pq.ParquetFile(path).metadata.num_rows
        except Exception:  # noqa: BLE001 - unreadable: one quarantined file
            return 1
    lines = [line for line in path.read_bytes().split(b"\n") if line.strip(b" \t\r")]
    if path.suffix == ".csv":
        return len(lines) - 1 if lines else 1
    return len(lines)


@dataclass
class IngestDrill:
    cases: int = 0
    crashes: int = 0
    reconciled: int = 0
    failures: list[str] = field(default_factory=list)


def ingest_drill(workdir: Path) -> IngestDrill:
    """Each mutation of :func:`ingest_mutations` on a fresh copy of a generated day, ingested
    into its own data dir. A case is reconciled when, for every table, the rows counted in
    the raw file (one for a file quarantined whole) equal the report's raw rows, and those
    equal the rows written to curated and quarantine (read back from disk) plus the
    duplicates and erased rows; and a re-run changes no byte of the output."""
    import logging
    import shutil

    import polars as pl
    from pydantic import SecretStr

    from pipeline.data.curated import partition
    from pipeline.data.generate import GeneratorConfig, write_drops
    from pipeline.data.ingest import RAW_FILES, trust_case

    base = workdir / "ingest-base"
    shutil.rmtree(base, ignore_errors=True)
    write_drops(GeneratorConfig(customers=40, days=1, items=20, seed=3, dirty=0.05), base)
    (folder,) = sorted(p for p in base.iterdir() if p.is_dir())
    day = date.fromisoformat(folder.name)
    result = IngestDrill()
    logging.getLogger("pipeline.data").setLevel(logging.ERROR)  # each case warns by design
    for n, (name, (filename, change)) in enumerate(sorted(ingest_mutations().items())):
        case_dir = workdir / f"ingest-case-{n}"
        shutil.rmtree(case_dir, ignore_errors=True)
        drop = case_dir / "raw" / folder.name
        shutil.copytree(folder, drop)
        change(drop / filename)
        settings = Settings(data_dir=case_dir, pseudonym_key=SecretStr("trust-drill-key"))
        result.cases += 1
        first = trust_case(drop, day, settings)
        if first["crashed"]:
            result.crashes += 1
            result.failures.append(f"{name}: crashed ({first['error']})")
            continue
        outputs = sorted(p for p in case_dir.rglob("*.parquet") if "raw" not in p.parts)
        before = {p: p.read_bytes() for p in outputs}
        # Forget the fingerprint, so that the re-run really ingests again.
        shutil.rmtree(case_dir / "curated" / "_reports", ignore_errors=True)
        second = trust_case(drop, day, settings)
        after = {p: p.read_bytes() for p in outputs if p.exists()}
        problems = []
        if second["crashed"] or after != before:
            problems.append("re-run differs")
        for table, counts in first["report"]["tables"].items():
            if table in RAW_FILES:
                path = drop / RAW_FILES[table]
                # A file ingest could not take rows from (its report names it) is one row.
                whole = f"{drop.name}/{path.name}" in counts.get("quarantined_files", {})
                file_rows = 1 if whole else _raw_rows(path)
            else:  # fed only by serving's event log, which the drill leaves empty
                file_rows = 0
            on_disk = sum(
                pl.read_parquet(partition(root, table, day)).height
                for root in (settings.curated_dir, settings.quarantine_dir)
                if partition(root, table, day).is_file()
            )
            accounted = on_disk + counts["exact_duplicates"] + counts.get("erased", 0)
            if not (file_rows == counts["raw"] == accounted):
                problems.append(f"{table}: file {file_rows}, raw {counts['raw']}, {accounted}")
        if problems:
            result.failures.append(f"{name}: " + "; ".join(problems))
        else:
            result.reconciled += 1
        shutil.rmtree(case_dir, ignore_errors=True)
    return result
