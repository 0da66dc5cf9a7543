"""Serving latency in process and over HTTP, against the naive path, on a real Redis.

Builds (or reuses, with ``--workdir``) a catalogue of 10,000 items and 100,000 customers:
generated raw data, the nightly flow's pipeline (ingest, features, fast materialisation into
a redis-server started here, training, registration). Then, in one run:

(a) ours: ``Recommender.recommend()`` in process (customer features, live session, one model
    call over the whole catalogue, ranking and fit heads, rules);
(b) naive: Feast's SDK for the customer and 500 candidate items, then Keras ``model.predict``
    over those candidates;

and, second part, the HTTP app under uvicorn driven by locust (headless) for a fixed time.
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
    from pipeline.config import get_settings

    get_settings.cache_clear()
    settings = get_settings()
    from pipeline import registry, store
    from pipeline.features import build_features, missing_snapshot_days
    from pipeline.generate import GeneratorConfig, write_drops
    from pipeline.ingest import drops_up_to, ingest_drop
    from pipeline.model import ModelConfig
    from pipeline.retrain import train_candidate

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
    store.materialize_new(fs, settings.features_dir, settings.feast_dir / "checkpoints")


def in_process(requests: int) -> dict[str, float]:
    """Ours and the naive path on the same requests; medians and p99 in ms."""
    import polars as pl

    from pipeline import store
    from pipeline.config import get_settings
    from pipeline.features import CUSTOMER_FEATURES, CUSTOMER_VIEW, ITEM_FEATURES, ITEM_VIEW
    from pipeline.tfenv import tf
    from serving.events import EventProcessor, SessionEventRequest
    from serving.recommender import RecommendationRequest, Recommender

    settings = get_settings()
    rec = Recommender.from_registry(settings)
    scorer = rec._model.scorer
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
    rec._feature_cache.clear()
    for request in workload[:50]:
        rec.recommend(request)  # warm up
    rec._feature_cache.clear()
    ours = []
    for request in workload:
        start = time.perf_counter()
        rec.recommend(request)
        ours.append((time.perf_counter() - start) * 1000)

    # Naive: Feast SDK reads (customer + 500 candidate items), then Keras model.predict.
    fs = store.feature_store(settings)
    model = rec._model
    query_model = scorer._module  # the exported towers, wrapped below in a Keras model

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
        pseudonym = rec._model.scorer  # noqa: F841 - same work as ours: pseudonymise below
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
    del model
    return {
        "p50": p50,
        "p99": p99,
        "naive_p50": n50,
        "naive_p99": n99,
        "requests": len(ours),
        "naive_requests": len(naive),
    }


LOCUSTFILE = """
import random
from locust import FastHttpUser, task, constant
ITEMS = {items!r}
class Shopper(FastHttpUser):
    wait_time = constant(0)
    @task
    def page_view(self):
        self.client.post("/recommendations", json={{
            "session_items": random.sample(ITEMS, 2), "k": 10}})
"""


def over_http(seconds: int, users: int) -> dict[str, float]:
    """uvicorn (two workers) + the app in a subprocess; locust headless for ``seconds``."""
    from pipeline.config import get_settings
    from tests.servers import free_port

    settings = get_settings()
    port = free_port()
    env = {**os.environ}
    server = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "serve", "--port", str(port), "--workers", "2"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        import httpx

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        import polars as pl

        items = pl.read_parquet(settings.curated_dir / "items" / "*" / "*.parquet")["item_id"]
        with tempfile.TemporaryDirectory() as tmp:
            locustfile = Path(tmp) / "locustfile.py"
            locustfile.write_text(LOCUSTFILE.format(items=items.head(2000).to_list()))
            prefix = Path(tmp) / "stats"
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
                    f"http://127.0.0.1:{port}",
                    "--csv",
                    str(prefix),
                    "--only-summary",
                ],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            stats = (prefix.parent / "stats_stats.csv").read_text().splitlines()
            header = stats[0].split(",")
            total = dict(zip(header, stats[-1].split(","), strict=False))
        return {
            "requests": float(total["Request Count"]),
            "failures": float(total["Failure Count"]),
            "rps": float(total["Requests/s"]),
            "p50_ms": float(total["50%"]),
            "p99_ms": float(total["99%"]),
        }
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
    parser.add_argument("--users", type=int, default=16)
    args = parser.parse_args()
    from tests.servers import redis_server

    with redis_server(args.workdir.parent / "fitrec-bench-redis") as url:
        prepare(args.workdir, url, args.customers, args.items, args.days)
        result = in_process(args.requests)
        print(json.dumps({"in_process_ms": result}, indent=1), flush=True)
        try:
            http = over_http(args.http_seconds, args.users)
            print(
                f"http rps={http['rps']:.0f} p50_ms={http['p50_ms']:.1f} "
                f"p99_ms={http['p99_ms']:.1f} failures={http['failures']:.0f} "
                f"({args.users} locust users, {args.http_seconds}s)",
                flush=True,
            )
        except (FileNotFoundError, subprocess.CalledProcessError, ModuleNotFoundError) as exc:
            print(f"http part not run: {exc} (pip install locust)", flush=True)
    print(
        f"serving p50_ms={result['p50']:.3f} p99_ms={result['p99']:.3f} "
        f"naive_p50_ms={result['naive_p50']:.3f} speedup={result['naive_p50'] / result['p50']:.1f}"
    )


if __name__ == "__main__":
    main()
