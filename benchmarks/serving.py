"""Serving latency in process and over HTTP, against the naive path, on a real Redis.

Builds (or reuses, with ``--workdir``) a catalogue of 10,000 items and 100,000 customers:
generated raw data, the nightly flow's pipeline (ingest, features, fast materialisation into
a redis-server started here, training, registration). Then, in one run:

(a) ours: ``Recommender.recommend()`` in process (customer features, live session, one model
    call over the whole catalogue, ranking and fit heads, rules);
(b) naive: Feast's SDK for the customer and 500 candidate items, then Keras ``model.predict``
    over those candidates;

and, second part, the HTTP app under uvicorn (2 workers) driven by wrk (or locust, headless)
for a fixed time at 1, 4 and 16 connections. ``--profile N``: a cProfile of N in-process page
views, by call counts (robust on a busy machine) and by own time.
Last line: ``serving p50_ms=<float> p99_ms=<float> naive_p50_ms=<float> speedup=<float>
http_rps=<float> http_p99_ms=<float>`` (HTTP at 4 connections; ``nan`` when not run).
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
# As `fitrec serve` runs each worker: a page view's small matrix products on one BLAS thread
# (a pool per product competes with the other workers, and with itself on a busy machine).
for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import numpy as np  # noqa: E402

from benchmarks.load import LOCUSTFILE, WRK_SCRIPT, run_locust, run_wrk  # noqa: E402

SUMMARY_CONNECTIONS = 4
"""The HTTP run the summary line quotes (``http_rps``, ``http_p99_ms``)."""


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


def workload(settings, rec, requests: int) -> list:
    """``requests`` page views of known customers, each in a session of two views (posted
    through the event processor, so the live session state is in Redis)."""
    import polars as pl

    from serving.events import EventProcessor, SessionEventRequest
    from serving.recommender import RecommendationRequest

    customers = pl.read_parquet(settings.raw_dir / "*" / "customers.parquet")["customer_id"]
    items = rec.model.scorer.item_ids.tolist()
    rng = random.Random(5)
    processor = EventProcessor(settings, rec.sessions)
    out = []
    for n in range(requests):
        session = f"bench-{n % 500}"
        for item in rng.sample(items, 2):
            processor.process(
                SessionEventRequest(session_id=session, event_type="view", item_id=item)
            )
        out.append(
            RecommendationRequest(customer_id=rng.choice(customers), session_id=session, k=10)
        )
    processor.close()
    return out


def timed(rec, requests: list) -> list[float]:
    """Each page view's time in ms, through ``rec.recommend``."""
    times = []
    for request in requests:
        start = time.perf_counter()
        rec.recommend(request)
        times.append((time.perf_counter() - start) * 1000)
    return times


def naive_path(settings, rec, requests: list) -> list[float]:
    """The naive path's times in ms: Feast SDK reads (customer + 500 candidate items), then
    Keras ``model.predict`` over those candidates."""
    from pipeline.features import store
    from pipeline.features.declarations import (
        CUSTOMER_FEATURES,
        CUSTOMER_VIEW,
        ITEM_FEATURES,
        ITEM_VIEW,
    )
    from pipeline.privacy import pseudonymise
    from pipeline.tfenv import tf

    scorer = rec.model.scorer
    items = scorer.item_ids.tolist()
    rng = random.Random(6)
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
    key = settings.pseudonym_key.get_secret_value()
    times = []
    for request in requests:
        start = time.perf_counter()
        who = pseudonymise(request.customer_id, key)
        row = fs.get_online_features(features=customer_refs, entity_rows=[{"customer_id": who}])
        features = {k: v[0] for k, v in row.to_dict().items()}
        candidates = rng.sample(items, min(500, len(items)))
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
        times.append((time.perf_counter() - start) * 1000)
    return times


def profile(rec, requests: list, top: int = 25) -> None:
    """cProfile of the in-process page views, the functions with the most calls first (call
    counts do not depend on how busy the machine is; times do), then by own time."""
    import cProfile
    import io
    import pstats

    rec.clear_feature_cache()
    profiler = cProfile.Profile()
    profiler.enable()
    for request in requests:
        rec.recommend(request)
    profiler.disable()
    for order in ("ncalls", "tottime"):
        text = io.StringIO()
        stats = pstats.Stats(profiler, stream=text).strip_dirs().sort_stats(order)
        stats.print_stats(top)
        print(f"profile of {len(requests)} page views by {order}:", flush=True)
        print(text.getvalue().split("\n\n", 1)[-1], flush=True)


def in_process(requests: int, profiled: int = 0) -> dict[str, float]:
    """Ours, ours through the SavedModel's signatures and the naive path on the same
    requests; medians and p99 in ms (with ``profiled`` > 0, a cProfile of that many)."""
    from pipeline.config import get_settings
    from serving.recommender import Recommender

    settings = get_settings()
    rec = Recommender.from_registry(settings)
    scorer = rec.model.scorer
    views = workload(settings, rec, requests)
    rec.clear_feature_cache()
    timed(rec, views[:50])  # warm up
    rec.clear_feature_cache()
    ours = timed(rec, views)
    if profiled:
        profile(rec, views[:profiled])
    # The same path through the SavedModel's signatures instead of the NumPy fast path.
    fast, scorer.fast = scorer.fast, None
    signatures = timed(rec, views[: max(requests // 4, 50)])
    scorer.fast = fast
    naive = naive_path(settings, rec, views[: max(requests // 5, 50)])
    rec.close()
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


def over_http(seconds: int, users: list[int], workers: int) -> list[dict[str, float | str]]:
    """uvicorn (``workers`` processes) + the app in a subprocess, driven for ``seconds`` by
    wrk when it is installed (C, light on the shared cores), else by locust (headless)."""
    from pipeline.config import get_settings
    from tests.support.servers import free_port

    settings = get_settings()
    port = free_port()
    server_log = open(settings.data_dir / "bench-serve.log", "wb")  # noqa: SIM115 - below
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
        stdout=server_log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        import polars as pl

        wait_ready(url, server, Path(server_log.name))
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
        server_log.close()


def wait_ready(url: str, server: subprocess.Popen, log: Path, seconds: float = 300) -> None:
    """Until ``/health`` answers 200.

    Raises:
        RuntimeError: The server exited, or did not answer in time (with its log's tail).
    """
    import httpx

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and server.poll() is None:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    tail = log.read_text(errors="replace").splitlines()[-15:]
    raise RuntimeError("the server did not start:\n" + "\n".join(tail))


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
        default="1,4,16",
        help="HTTP connections (closed loop), comma-separated: one run per value (the "
        f"summary's http_ figures are at {SUMMARY_CONNECTIONS}, added when missing)",
    )
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument(
        "--profile", type=int, default=0, help="cProfile this many in-process page views"
    )
    args = parser.parse_args()
    from tests.support.servers import redis_server

    with redis_server(args.workdir.parent / "fitrec-bench-redis") as url:
        prepare(args.workdir, url, args.customers, args.items, args.days)
        result = in_process(args.requests, args.profile)
        print(json.dumps({"in_process_ms": result}, indent=1), flush=True)
        deltas = model_memory_mb()
        print(
            f"experiment arms: each further model version adds {np.median(deltas):.0f} MB "
            f"resident (median of {[round(d) for d in deltas]} MB; {args.items} items); "
            "FITREC_SERVING_MAX_MODELS bounds how many a process holds",
            flush=True,
        )
        summary = {"rps": float("nan"), "p99_ms": float("nan")}
        try:
            users = sorted({*(int(n) for n in args.users.split(",")), SUMMARY_CONNECTIONS})
            for http in over_http(args.http_seconds, users, args.workers):
                if http["connections"] == SUMMARY_CONNECTIONS:
                    summary = {"rps": float(http["rps"]), "p99_ms": float(http["p99_ms"])}
                print(
                    f"http rps={http['rps']:.0f} p50_ms={http['p50_ms']:.1f} "
                    f"p99_ms={http['p99_ms']:.1f} failures={http['failures']:.0f} "
                    f"({http['tool']}, {http['connections']} connections, {args.workers} "
                    f"workers, {args.http_seconds}s)",
                    flush=True,
                )
        except (
            FileNotFoundError,
            subprocess.CalledProcessError,
            ModuleNotFoundError,
            RuntimeError,
        ) as exc:
            print(f"http part not run: {exc} (install wrk, or pip install locust)", flush=True)
    print(
        f"serving p50_ms={result['p50']:.3f} p99_ms={result['p99']:.3f} "
        f"naive_p50_ms={result['naive_p50']:.3f} speedup={result['naive_p50'] / result['p50']:.1f} "
        f"http_rps={summary['rps']:.0f} http_p99_ms={summary['p99_ms']:.1f}"
    )


if __name__ == "__main__":
    main()
