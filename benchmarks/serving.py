"""Serving latency in process and over HTTP, against the naive path, on a real Redis.

Builds (or reuses, with ``--workdir``) a catalogue of 10,000 items and 100,000 customers:
generated raw data, the nightly flow's pipeline (ingest, features, fast materialisation into
a redis-server started here, training, registration). Then, in one run:

(a) ours: ``Recommender.recommend()`` in process (customer features, live session, one model
    call over the whole catalogue, ranking and fit heads, rules);
(b) naive: Feast's SDK for the customer and 500 candidate items, then Keras ``model.predict``
    over those candidates;

and, second part, the HTTP app under uvicorn driven by wrk (or locust, headless) for a fixed
time.
Last line: ``serving p50_ms=<float> p99_ms=<float> naive_p50_ms=<float> speedup=<float>``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402


def percentiles(values: list[float]) -> tuple[float, float]:
    return float(np.percentile(values, 50)), float(np.percentile(values, 99))


def prepare(workdir: Path, redis_url: str, customers: int, items: int, days: int) -> None:
    """Generate, ingest, build features, materialise, train and register (once per workdir)."""
    os.environ["FITREC_DATA_DIR"] = str(workdir)
    os.environ["FITREC_REDIS_URL"] = redis_url
    import polars as pl

    from pipeline.config import get_settings

    get_settings.cache_clear()
    settings = get_settings()
    from pipeline.data.curated import drops_up_to
    from pipeline.data.generate import GeneratorConfig, write_drops
    from pipeline.data.ingest import ingest_drop
    from pipeline.features import store
    from pipeline.features.build import build_features, missing_snapshot_days
    from pipeline.model.config import ModelConfig
    from pipeline.registry import tracking as registry
    from pipeline.registry.retrain import train_candidate

    if not (workdir / "prepared").exists():
        shutil.rmtree(workdir, ignore_errors=True)
        t = time.perf_counter()
        write_drops(
            GeneratorConfig(customers=customers, items=items, days=days, seed=3), settings.raw_dir
        )
        for day, folder in drops_up_to(settings.raw_dir, date.max):
            ingest_drop(folder, day, settings)
        for d in missing_snapshot_days(settings.curated_dir, settings.features_dir, day):
            build_features(settings.curated_dir, settings.features_dir, d)
        candidate = train_candidate(settings, day, ModelConfig(epochs=2), workdir / "training")
        registered = registry.log_and_register(
            settings,
            candidate.bundle,
            candidate.params,
            candidate.metrics,
            candidate.customer_features,
            candidate.example_items,
        )
        registry.promote(settings, registered.version)
        (workdir / "prepared").write_text(str(time.perf_counter() - t))
    fs = store.feature_store(settings)
    store.apply(fs)
    # The redis-server is new on every run, a reused workdir's registry is not: write every
    # snapshot (the registry's "materialised up to" would otherwise skip them all).
    from pipeline.features.build import feature_paths
    from pipeline.features.declarations import TIMESTAMP
    from pipeline.features.online.materialize import materialize_view

    paths = feature_paths(settings.features_dir)
    for view in fs.list_feature_views():
        if view.name in paths and paths[view.name].exists():
            stamps = pl.read_parquet(paths[view.name], columns=[TIMESTAMP])[TIMESTAMP]
            materialize_view(fs, view.name, stamps.min(), stamps.max())


def in_process(requests: int) -> dict[str, float]:
    """Ours and the naive path on the same requests; medians and p99 in ms."""
    import polars as pl

    from pipeline.config import get_settings
    from pipeline.features import store
    from pipeline.features.declarations import (
        CUSTOMER_FEATURES,
        CUSTOMER_VIEW,
        ITEM_FEATURES,
        ITEM_VIEW,
    )
    from pipeline.tfenv import tf
    from serving.events import EventProcessor, SessionEventRequest
    from serving.recommender import RecommendationRequest, Recommender

    settings = get_settings()
    rec = Recommender.from_registry(settings)
    scorer = rec.model.scorer
    customers = pl.read_parquet(settings.raw_dir / "*" / "customers.parquet")["customer_id"]
    items = scorer.item_ids.tolist()
    rng = random.Random(5)
    processor = EventProcessor(settings, rec.sessions)
    workload = []
    for n in range(requests):
        session = f"bench-{n % 500}"
        for item in rng.sample(items, 2):
            processor.process(
                SessionEventRequest(session_id=session, event_type="view", item_id=item)
            )
        workload.append(
            RecommendationRequest(customer_id=rng.choice(customers), session_id=session, k=10)
        )
    rec.clear_feature_cache()
    for request in workload[:50]:
        rec.recommend(request)  # warm up
    rec.clear_feature_cache()
    ours = []
    for request in workload:
        start = time.perf_counter()
        rec.recommend(request)
        ours.append((time.perf_counter() - start) * 1000)

    # The same path through the SavedModel's signatures instead of the NumPy fast path.
    fast, scorer.fast = scorer.fast, None
    signatures = []
    for request in workload[: max(requests // 4, 50)]:
        start = time.perf_counter()
        rec.recommend(request)
        signatures.append((time.perf_counter() - start) * 1000)
    scorer.fast = fast

    # Naive: Feast SDK reads (customer + 500 candidate items), then Keras model.predict.
    fs = store.feature_store(settings)
    query_model = scorer.module  # the exported towers, wrapped below in a Keras model

    class Naive(tf.keras.Model):
        def call(self, inputs):
            q = query_model.encode(
                inputs["customer_id"],
                inputs["customer_features"],
                inputs["session_items"],
                inputs["session_events"],
            )["query"]
            return tf.matmul(inputs["candidates"], q, transpose_b=True)

    naive_model = Naive()
    customer_refs = [f"{CUSTOMER_VIEW}:{f.name}" for f in CUSTOMER_FEATURES]
    item_refs = [f"{ITEM_VIEW}:{f.name}" for f in ITEM_FEATURES]
    naive = []
    for request in workload[: max(requests // 5, 50)]:
        start = time.perf_counter()
        from pipeline.privacy import pseudonymise

        who = pseudonymise(request.customer_id, settings.pseudonym_key.get_secret_value())
        row = fs.get_online_features(features=customer_refs, entity_rows=[{"customer_id": who}])
        features = {k: v[0] for k, v in row.to_dict().items()}
        candidates = rng.sample(items, 500)
        fs.get_online_features(
            features=item_refs, entity_rows=[{"item_id": i} for i in candidates]
        ).to_dict()
        state = rec.sessions.get(request.session_id)
        sessions, kinds = scorer.pad_sessions([state.items if state else []])
        vectors = scorer.raw_item_vectors[[scorer.item_index[i] for i in candidates]]
        naive_model.predict(
            {
                "customer_id": np.array([who], dtype=object),
                "customer_features": scorer.feature_matrix([features]),
                "session_items": sessions,
                "session_events": kinds,
                "candidates": vectors[None],
            },
            verbose=0,
        )
        naive.append((time.perf_counter() - start) * 1000)
    p50, p99 = percentiles(ours)
    n50, n99 = percentiles(naive)
    return {
        "p50": p50,
        "p99": p99,
        "signatures_p50": float(np.percentile(signatures, 50)),
        "naive_p50": n50,
        "naive_p99": n99,
        "requests": len(ours),
        "naive_requests": len(naive),
    }


def model_memory_mb(loads: int = 3) -> list[float]:
    """Resident memory each further model version adds to a serving process (what an
    experiment's arm costs beside the champion): the champion's version loaded again
    ``loads`` times, each kept alive, the process's RSS (``/proc/self/statm``) read before and
    after each load, after a garbage collection. TensorFlow's runtime is already up (the
    in-process part loaded the champion), so each delta is one version's own weight."""
    import gc

    from pipeline.config import get_settings
    from serving.recommender import LoadedModel

    settings = get_settings()
    page = os.sysconf("SC_PAGE_SIZE")

    def rss() -> int:
        return int(Path("/proc/self/statm").read_text().split()[1]) * page

    kept, deltas = [], []
    for _ in range(loads):
        gc.collect()
        before = rss()
        kept.append(LoadedModel.load(settings))
        gc.collect()
        deltas.append((rss() - before) / 2**20)
    return deltas


WRK_SCRIPT = """
math.randomseed(7)
local items = {{{items}}}
local customers = {{{customers}}}
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  local a = items[math.random(#items)]
  local b = items[math.random(#items)]
  local c = customers[math.random(#customers)]
  local body = '{{"customer_id":"' .. c .. '","session_items":["' .. a
    .. '","' .. b .. '"],"k":10}}'
  return wrk.format(nil, "/recommendations", nil, body)
end
"""

LOCUSTFILE = """
import random
from locust import FastHttpUser, task, constant
ITEMS = {items!r}
CUSTOMERS = {customers!r}
class Shopper(FastHttpUser):
    wait_time = constant(0)
    @task
    def page_view(self):
        self.client.post("/recommendations", json={{
            "customer_id": random.choice(CUSTOMERS),
            "session_items": random.sample(ITEMS, 2), "k": 10}})
"""


def _ms(text: str) -> float:
    """wrk's latency figures ("870.00us", "3.21ms", "1.02s") in milliseconds."""
    for unit, factor in (("us", 1e-3), ("ms", 1.0), ("s", 1e3)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    return float(text)


def run_wrk(url: str, script: Path, seconds: int, connections: int) -> dict[str, float]:
    out = subprocess.run(
        [
            "wrk",
            "-t",
            "1",
            "-c",
            str(connections),
            "-d",
            f"{seconds}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    fields: dict[str, float] = {"failures": 0.0}
    for line in out.splitlines():
        parts = line.split()
        if line.strip().startswith(("50%", "99%")) and len(parts) == 2:
            fields[f"p{parts[0][:-1]}_ms"] = _ms(parts[1])
        elif line.startswith("Requests/sec:"):
            fields["rps"] = float(parts[1])
        elif "requests in" in line:
            fields["requests"] = float(parts[0])
        elif line.strip().startswith(("Non-2xx", "Socket errors")):
            fields["failures"] += sum(float(p.strip(",")) for p in parts if p.strip(",").isdigit())
    return fields


def run_locust(url: str, locustfile: Path, seconds: int, users: int) -> dict[str, float]:
    prefix = locustfile.parent / "stats"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "locust",
            "-f",
            str(locustfile),
            "--headless",
            "-u",
            str(users),
            "-r",
            str(users),
            "-t",
            f"{seconds}s",
            "--host",
            url,
            "--csv",
            str(prefix),
            "--only-summary",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    stats = (prefix.parent / "stats_stats.csv").read_text().splitlines()
    total = dict(zip(stats[0].split(","), stats[-1].split(","), strict=False))
    return {
        "requests": float(total["Request Count"]),
        "failures": float(total["Failure Count"]),
        "rps": float(total["Requests/s"]),
        "p50_ms": float(total["50%"]),
        "p99_ms": float(total["99%"]),
    }


def over_http(seconds: int, users: list[int], workers: int) -> list[dict[str, float | str]]:
    """uvicorn (``workers`` processes) + the app in a subprocess, driven for ``seconds`` by
    wrk when it is installed (C, light on the shared cores), else by locust (headless)."""
    from pipeline.config import get_settings
    from tests.support.servers import free_port

    settings = get_settings()
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flows.cli",
            "serve",
            "--port",
            str(port),
            "--workers",
            str(workers),
        ],
        cwd=ROOT,
        env={**os.environ},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        import httpx
        import polars as pl

        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        items = pl.read_parquet(settings.curated_dir / "items" / "*" / "*.parquet")["item_id"]
        items = items.unique(maintain_order=True).head(2000).to_list()
        customers = pl.read_parquet(settings.raw_dir / "*" / "customers.parquet")["customer_id"]
        customers = customers.head(2000).to_list()
        with tempfile.TemporaryDirectory() as tmp:
            if shutil.which("wrk"):
                script = Path(tmp) / "page_views.lua"
                script.write_text(
                    WRK_SCRIPT.format(
                        items=",".join(f'"{i}"' for i in items),
                        customers=",".join(f'"{c}"' for c in customers),
                    )
                )
                run_wrk(url, script, 3, max(users))  # warm-up: every worker has seen requests
                return [
                    {**run_wrk(url, script, seconds, n), "tool": "wrk", "connections": n}
                    for n in users
                ]
            locustfile = Path(tmp) / "locustfile.py"
            locustfile.write_text(LOCUSTFILE.format(items=items, customers=customers))
            return [
                {**run_locust(url, locustfile, seconds, n), "tool": "locust", "connections": n}
                for n in users
            ]
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "fitrec-bench-serving"
    )
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--requests", type=int, default=2_000)
    parser.add_argument("--http-seconds", type=int, default=20)
    parser.add_argument(
        "--users",
        default="4,8,16",
        help="HTTP connections (closed loop), comma-separated: one run per value",
    )
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    args = parser.parse_args()
    from tests.support.servers import redis_server

    with redis_server(args.workdir.parent / "fitrec-bench-redis") as url:
        prepare(args.workdir, url, args.customers, args.items, args.days)
        result = in_process(args.requests)
        print(json.dumps({"in_process_ms": result}, indent=1), flush=True)
        deltas = model_memory_mb()
        print(
            f"experiment arms: each further model version adds {np.median(deltas):.0f} MB "
            f"resident (median of {[round(d) for d in deltas]} MB; {args.items} items); "
            "FITREC_SERVING_MAX_MODELS bounds how many a process holds",
            flush=True,
        )
        try:
            users = [int(n) for n in args.users.split(",")]
            for http in over_http(args.http_seconds, users, args.workers):
                print(
                    f"http rps={http['rps']:.0f} p50_ms={http['p50_ms']:.1f} "
                    f"p99_ms={http['p99_ms']:.1f} failures={http['failures']:.0f} "
                    f"({http['tool']}, {http['connections']} connections, {args.workers} "
                    f"workers, {args.http_seconds}s)",
                    flush=True,
                )
        except (FileNotFoundError, subprocess.CalledProcessError, ModuleNotFoundError) as exc:
            print(f"http part not run: {exc} (install wrk, or pip install locust)", flush=True)
    print(
        f"serving p50_ms={result['p50']:.3f} p99_ms={result['p99']:.3f} "
        f"naive_p50_ms={result['naive_p50']:.3f} speedup={result['naive_p50'] / result['p50']:.1f}"
    )


if __name__ == "__main__":
    main()
