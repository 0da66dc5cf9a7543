"""Materialisation into Redis: Feast's stock ``materialize`` against pipeline.features.online.

Starts a throwaway redis-server, builds a temporary Feast repository and

1. materialises an item view (100,000 items x 30 Float32 features, ~1% nulls) with stock
   ``FeatureStore.materialize``, keeps a sample of the raw hashes, flushes, then runs
   ``materialize_view`` three times (flushing before each; the median counts) and checks the
   sample is byte-identical;
2. runs ``materialize_view`` alone on 1,000,000 customers x 30 features;
3. times the serving read of one customer (30 features) plus one session (a session-like
   view) with ``RedisFeatureReader`` and with ``FeatureStore.get_online_features``.

Last line:

    materialize fast_rows_per_s=<float> feast_rows_per_s=<float> speedup=<float>

measured on the 100,000-item case (rows = entities written; time = the whole call, Parquet
read and registry update included).

    python benchmarks/materialize.py [--items 100000] [--customers 1000000] [--calls 2000]
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from contextlib import redirect_stdout
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from feast import Entity, FeatureStore, FeatureView, Field, FileSource, RepoConfig  # noqa: E402
from feast.types import Array, Float32, String  # noqa: E402
from feast.value_type import ValueType  # noqa: E402

from pipeline.features.online.materialize import materialize_view  # noqa: E402
from pipeline.features.online.reader import RedisFeatureReader  # noqa: E402
from tests.support.servers import redis_server  # noqa: E402

DAY = datetime(2024, 3, 1, tzinfo=UTC)
START = DAY - timedelta(days=1)
END = DAY + timedelta(days=1)
N_FEATURES = 30


def feature_frame(key: str, n: int, seed: int, prefix: str) -> pl.DataFrame:
    """``n`` entities, 30 random Float32 features with ~1% nulls, one snapshot each."""
    rng = np.random.default_rng(seed)
    columns: dict[str, pl.Series] = {key: pl.Series(key, [f"{prefix}{i:07d}" for i in range(n)])}
    for j in range(N_FEATURES):
        values = rng.standard_normal(n).astype(np.float32)
        nulls = rng.random(n) < 0.01
        columns[f"f{j:02d}"] = pl.Series(f"f{j:02d}", values).set(pl.Series(nulls), None)
    micros = rng.integers(0, 86_400_000_000, n)
    columns["event_timestamp"] = pl.Series(
        "event_timestamp", (DAY.timestamp() * 1_000_000 + micros).astype(np.int64)
    ).cast(pl.Datetime("us", "UTC"))
    return pl.DataFrame(columns)


def session_frame(n: int) -> pl.DataFrame:
    rng = np.random.default_rng(3)
    return pl.DataFrame(
        {
            "session_id": [f"s{i:06d}" for i in range(n)],
            "clicks": rng.integers(0, 50, n).astype(np.float32),
            "dwell_s": rng.random(n).astype(np.float32) * 600,
            "last_category": [f"cat{i % 17}" for i in range(n)],
            "recent_items": [[f"i{(i + k) % 1000:07d}" for k in range(5)] for i in range(n)],
            "event_timestamp": [DAY + timedelta(seconds=i) for i in range(n)],
        },
        schema_overrides={"event_timestamp": pl.Datetime("us", "UTC")},
    )


def build_repo(workdir: Path, connection_string: str, sizes: dict[str, int]) -> FeatureStore:
    data = workdir / "data"
    data.mkdir(parents=True, exist_ok=True)
    objects: list[object] = []
    for name, key, prefix, seed in [
        ("item", "item_id", "i", 1),
        ("customer", "customer_id", "c", 2),
    ]:
        path = data / f"{name}.parquet"
        feature_frame(key, sizes[name], seed, prefix).write_parquet(path)
        entity = Entity(name=name, join_keys=[key], value_type=ValueType.STRING)
        view = FeatureView(
            name=f"{name}_bench",
            entities=[entity],
            ttl=timedelta(days=30),
            schema=[Field(name=f"f{j:02d}", dtype=Float32) for j in range(N_FEATURES)],
            source=FileSource(path=str(path), timestamp_field="event_timestamp"),
            online=True,
        )
        objects += [entity, view]
    path = data / "session.parquet"
    session_frame(sizes["session"]).write_parquet(path)
    session = Entity(name="session", join_keys=["session_id"], value_type=ValueType.STRING)
    objects += [
        session,
        FeatureView(
            name="session_bench",
            entities=[session],
            ttl=timedelta(hours=12),
            schema=[
                Field(name="clicks", dtype=Float32),
                Field(name="dwell_s", dtype=Float32),
                Field(name="last_category", dtype=String),
                Field(name="recent_items", dtype=Array(String)),
            ],
            source=FileSource(path=str(path), timestamp_field="event_timestamp"),
            online=True,
        ),
    ]
    config = RepoConfig(
        project="bench",
        provider="local",
        registry=str(workdir / "registry.db"),
        online_store={"type": "redis", "connection_string": connection_string},
        offline_store={"type": "file"},
        entity_key_serialization_version=3,
        repo_path=str(workdir),
    )
    store = FeatureStore(config=config)
    store.apply(objects)
    return store


def sample_hashes(client: redis.Redis, keys: list[bytes]) -> list[dict[bytes, bytes]]:
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.hgetall(key)
    return pipe.execute()


def timed(fn: object, *args: object, **kwargs: object) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn(*args, **kwargs)  # type: ignore[operator]
    return time.perf_counter() - start, result


def latency(fn: object, calls: int) -> tuple[float, float]:
    samples = []
    for _ in range(calls):
        start = time.perf_counter_ns()
        fn()  # type: ignore[operator]
        samples.append((time.perf_counter_ns() - start) / 1e6)
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.99))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        workdir = Path(tmp)
        with redis_server(workdir / "redis") as url:
            client = redis.Redis.from_url(url)
            port = client.connection_pool.connection_kwargs["port"]
            sizes = {"item": args.items, "customer": args.customers, "session": args.sessions}
            setup, store = timed(build_repo, workdir / "repo", f"127.0.0.1:{port}", sizes)
            print(f"repo with {args.items:,} items, {args.customers:,} customers: {setup:.1f}s")
            feast_rows, feast_rate, sample, stock = stock_items(store, client)
            fast_rate = fast_items(store, client, args, feast_rows, sample, stock)
            fast_customers(store)
            reads(store, args)
            print(
                f"materialize fast_rows_per_s={fast_rate:.1f} feast_rows_per_s={feast_rate:.1f} "
                f"speedup={fast_rate / feast_rate:.1f}"
            )


def stock_items(
    store: FeatureStore, client: redis.Redis
) -> tuple[int, float, list[bytes], list[dict[bytes, bytes]]]:
    """1. Stock Feast on the items: rows, rows/s, and a sample of keys with their hashes."""
    with redirect_stdout(io.StringIO()):  # Feast prints a progress banner
        feast_s, _ = timed(store.materialize, START, END, feature_views=["item_bench"])
    feast_rows = client.dbsize()
    feast_rate = feast_rows / feast_s
    print(f"feast materialize: {feast_rows:,} items in {feast_s:.2f}s = {feast_rate:,.0f}/s")
    keys = sorted(client.scan_iter(count=10_000))
    rng = np.random.default_rng(7)
    sample = [keys[i] for i in rng.choice(len(keys), size=min(500, len(keys)), replace=False)]
    return feast_rows, feast_rate, sample, sample_hashes(client, sample)


def fast_items(
    store: FeatureStore,
    client: redis.Redis,
    args: argparse.Namespace,
    feast_rows: int,
    sample: list[bytes],
    stock: list[dict[bytes, bytes]],
) -> float:
    """2. Ours on the same items, ``--repeats`` times (median): rows/s."""
    times = []
    for _ in range(args.repeats):
        client.flushall()
        client.config_resetstat()
        seconds, written = timed(materialize_view, store, "item_bench", START, END)
        assert written == feast_rows, (written, feast_rows)
        times.append(seconds)
    hset_us = float(client.info("commandstats")["cmdstat_hset"]["usec_per_call"])
    fast_s = statistics.median(times)
    fast_rate = args.items / fast_s
    identical = sample_hashes(client, sample) == stock
    print(
        f"fast materialize:  {args.items:,} items in "
        f"{', '.join(f'{t:.2f}' for t in times)}s (median {fast_s:.2f}s) "
        f"= {fast_rate:,.0f}/s; {len(sample)} sampled hashes byte-identical to "
        f"Feast's: {'yes' if identical else 'NO'}"
    )
    share = hset_us * args.items / 1e6 / (sum(times) / len(times))
    print(
        f"redis-server spent {hset_us:.2f} us executing each HSET (one 31-field hash "
        f"per row, Feast's layout) = {share:.0%} of the fast path's wall time"
    )
    return fast_rate


def fast_customers(store: FeatureStore) -> None:
    """3. Ours alone on the customers (+ the sessions for the read path)."""
    seconds, written = timed(materialize_view, store, "customer_bench", START, END)
    print(
        f"fast materialize:  {written:,} customers x {N_FEATURES} features in "
        f"{seconds:.2f}s = {written / seconds:,.0f}/s"
    )
    materialize_view(store, "session_bench", START, END)


def reads(store: FeatureStore, args: argparse.Namespace) -> None:
    """4. Serving read: one customer + one session per call, ours against Feast's SDK."""
    reader = RedisFeatureReader.from_store(store, ["customer_bench", "session_bench"])
    pick = np.random.default_rng(11)
    customers = [f"c{i:07d}" for i in pick.integers(0, args.customers, args.calls)]
    sessions = [f"s{i:06d}" for i in pick.integers(0, args.sessions, args.calls)]
    calls = iter(zip(customers * 2, sessions * 2, strict=True))

    def fast_read() -> None:
        customer, session = next(calls)
        reader.read({"customer_bench": customer, "session_bench": session})

    refs = [f"customer_bench:f{j:02d}" for j in range(N_FEATURES)] + [
        f"session_bench:{n}" for n in ("clicks", "dwell_s", "last_category", "recent_items")
    ]
    feast_calls = iter(zip(customers * 2, sessions * 2, strict=True))

    def feast_read() -> None:
        customer, session = next(feast_calls)
        store.get_online_features(
            features=refs, entity_rows=[{"customer_id": customer, "session_id": session}]
        ).to_dict()

    # Same answers first (one call each), then timings.
    customer, session = customers[0], sessions[0]
    ours = reader.read({"customer_bench": customer, "session_bench": session})
    theirs = store.get_online_features(
        features=refs, entity_rows=[{"customer_id": customer, "session_id": session}]
    ).to_dict()
    flat = {**ours["customer_bench"], **ours["session_bench"]}
    same = all(flat[ref.split(":")[1]] == theirs[ref.split(":")[1]][0] for ref in refs)
    fast_p50, fast_p99 = latency(fast_read, args.calls)
    feast_p50, feast_p99 = latency(feast_read, args.calls)
    reader.close()
    print(
        f"read 1 customer + 1 session: RedisFeatureReader median {fast_p50:.3f} ms, "
        f"p99 {fast_p99:.3f} ms; get_online_features median {feast_p50:.3f} ms, "
        f"p99 {feast_p99:.3f} ms ({args.calls} calls each; same values: "
        f"{'yes' if same else 'NO'})"
    )


if __name__ == "__main__":
    main()
