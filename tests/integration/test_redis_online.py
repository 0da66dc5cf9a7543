"""pipeline.features.online against real Redis servers (one node and a 3-node cluster) and Feast.

Every comparison is against what stock Feast does on the same server: ``store.materialize``
into one project, our fast path into another, then ``get_online_features`` and the raw
``HGETALL`` bytes key by key.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import redis
from feast import Entity, FeatureStore, FeatureView, Field, FileSource, RepoConfig
from feast.types import Array, Bool, Float32, Float64, Int32, Int64, String, UnixTimestamp
from feast.value_type import ValueType
from redis.cluster import ClusterNode, RedisCluster

from pipeline.features.online.materialize import materialize_view, read_batch_source
from pipeline.features.online.reader import RedisFeatureReader
from pipeline.features.online.writer import RedisFeatureWriter, RedisWriteError
from tests.conftest import same_value
from tests.support.servers import redis_cluster, redis_server

D1 = datetime(2024, 5, 1, 6, tzinfo=UTC)
START = D1 - timedelta(days=1)
MID = D1 + timedelta(days=2, hours=12)  # after the day-3 snapshots, before day 4
END = D1 + timedelta(days=3, hours=12)  # one row sits exactly here (Feast includes it)
CUSTOMERS = ["", "héllo", "{tag}x", *[f"c{i:02d}" for i in range(29)]]
ITEMS = [-5, 0, 1, 2, 3, 4, 5, 6, 7, 8, 2**40]
CUSTOMER_FEATURES = ["height_cm", "weight_kg", "favourite", "recent", "visits"]
ITEM_FEATURES = ["price", "discount", "stock", "active", "featured", "launched", "embedding"]


# --------------------------------------------------------------------------------------------
# Data and repositories
# --------------------------------------------------------------------------------------------


def customer_rows() -> pl.DataFrame:
    """Three daily snapshots per customer (+ day 4 for even ones, + edge rows)."""
    rows: list[dict[str, Any]] = []
    for i, cid in enumerate(CUSTOMERS):
        days = [0, 1, 2, 3] if i % 2 == 0 else [0, 1, 2]
        for day in days:
            stamp = D1 + timedelta(days=day, microseconds=123_457 * i + day)
            height: float | None = 150.0 + i + day / 10
            if (i + day) % 7 == 0:
                height = None
            elif (i + day) % 11 == 0:
                height = float("nan")
            rows.append(
                {
                    "customer_id": cid,
                    "snapshot_ts": stamp,
                    "created": stamp,
                    "height_cm_raw": height,
                    "weight_kg": [0.0, -0.0, 0.1, 71.25, None][(i + day) % 5],
                    "favourite": [None, "", "dress", "日本 ✓", "a\r\nb"][(i + day) % 5],
                    "recent": [None, [], ["sku-1"], ["", "x", None], ["a"] * 12][(i + day) % 5],
                    "visits": None if (i + day) % 6 == 0 else i * 1000 + day - 40,
                }
            )
    # An update stamped exactly at END, and a tie on event time broken by `created`.
    rows.append({**rows[4], "customer_id": CUSTOMERS[1], "snapshot_ts": END, "created": END})
    tie = D1 + timedelta(days=2, hours=1)
    for created, visits in [(tie, 1), (tie + timedelta(seconds=5), 2), (tie, 3)]:
        rows.append({**rows[0], "customer_id": "c04", "snapshot_ts": tie, "created": created})
        rows[-1]["visits"] = visits
    return pl.DataFrame(
        rows,
        schema={
            "customer_id": pl.String,
            "snapshot_ts": pl.Datetime("us", "UTC"),
            "created": pl.Datetime("us", "UTC"),
            "height_cm_raw": pl.Float32,
            "weight_kg": pl.Float32,
            "favourite": pl.String,
            "recent": pl.List(pl.String),
            "visits": pl.Int64,
        },
    )


def item_rows() -> pl.DataFrame:
    """Items keyed by an Int64 id: Float64, Int32, Bool, UnixTimestamp, Array(Float32)."""
    rows: list[dict[str, Any]] = []
    for i, item in enumerate(ITEMS):
        for day in (0, 1):
            k = i + day
            rows.append(
                {
                    "item_id": item,
                    # naive timestamps: Feast reads them as UTC
                    "event_timestamp": (D1 + timedelta(days=day, seconds=i)).replace(tzinfo=None),
                    "price": [19.99, None, float("nan"), 0.0, 1e300][k % 5],
                    "discount": [None, -0.0, 0.25][k % 3],
                    "stock": [None, -3, 0, 2**31 - 1, 42][k % 5],
                    "active": [True, False, None][k % 3],
                    "featured": [None, True, True, False][k % 4],
                    "launched": [
                        datetime(2023, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
                        None,
                        datetime(1969, 7, 20, 20, 17, 40, 500000, tzinfo=UTC),
                    ][k % 3],
                    "embedding": [[0.5, -1.25], None, [], [float("nan"), None, 3.0]][k % 4],
                }
            )
    return pl.DataFrame(
        rows,
        schema={
            "item_id": pl.Int64,
            "event_timestamp": pl.Datetime("us"),
            "price": pl.Float64,
            "discount": pl.Float64,
            "stock": pl.Int32,
            "active": pl.Boolean,
            "featured": pl.Boolean,
            "launched": pl.Datetime("us", "UTC"),
            "embedding": pl.List(pl.Float32),
        },
    )


def bulk_rows(n: int) -> pl.DataFrame:
    """One snapshot for ``n`` customers (for the chunked, resumable writes)."""
    rng = np.random.default_rng(5)
    heights = rng.normal(170, 10, n).astype(np.float32)
    return pl.DataFrame(
        {
            "customer_id": [f"bulk-{i:05d}" for i in range(n)],
            "event_timestamp": [D1 + timedelta(seconds=i, microseconds=i) for i in range(n)],
            "height_cm": pl.Series(heights).set(pl.Series(rng.random(n) < 0.05), None),
            "note": [f"note {i}" * (i % 4) for i in range(n)],
            "tags": [[f"t{i % 3}", f"t{i % 5}"] for i in range(n)],
            "score": rng.integers(-(10**12), 10**12, n),
        },
        schema_overrides={"event_timestamp": pl.Datetime("us", "UTC")},
    )


@dataclass
class Backend:
    name: str
    redis_type: str
    connection_string: str

    def nodes(self) -> list[redis.Redis]:
        """A plain client per server (every master of the cluster)."""
        return [
            redis.Redis(host=node.split(":")[0], port=int(node.split(":")[1]))
            for node in self.connection_string.split(",")
        ]

    def client(self) -> redis.Redis | RedisCluster:
        if self.redis_type == "redis_cluster":
            nodes = [
                ClusterNode(n.split(":")[0], int(n.split(":")[1]))
                for n in self.connection_string.split(",")
            ]
            return RedisCluster(startup_nodes=nodes)
        host, port = self.connection_string.split(":")
        return redis.Redis(host=host, port=int(port))


@pytest.fixture(scope="session")
def single_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    with redis_server(tmp_path_factory.mktemp("redis-single")) as url:
        port = url.rsplit(":", 1)[1].split("/")[0]
        yield Backend("single", "redis", f"127.0.0.1:{port}")


@pytest.fixture(scope="session")
def cluster_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    with redis_cluster(tmp_path_factory.mktemp("redis-cluster")) as nodes:
        yield Backend("cluster", "redis_cluster", nodes)


@pytest.fixture(params=["single", "cluster"])
def backend(request: pytest.FixtureRequest) -> Backend:
    return request.getfixturevalue(f"{request.param}_server")


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("feature-data")
    customer_rows().write_parquet(root / "customers.parquet")
    item_rows().write_parquet(root / "items.parquet")
    bulk_rows(3000).write_parquet(root / "bulk.parquet")
    return root


def feast_objects(data: Path) -> list[Any]:
    customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.STRING)
    item = Entity(name="item", join_keys=["item_id"], value_type=ValueType.INT64)
    customer_view = FeatureView(
        name="customer_features",
        entities=[customer],
        ttl=timedelta(days=90),
        schema=[
            Field(name="height_cm", dtype=Float32),
            Field(name="weight_kg", dtype=Float32),
            Field(name="favourite", dtype=String),
            Field(name="recent", dtype=Array(String)),
            Field(name="visits", dtype=Int64),
        ],
        source=FileSource(
            name="customers",
            path=str(data / "customers.parquet"),
            timestamp_field="snapshot_ts",
            created_timestamp_column="created",
            field_mapping={"height_cm_raw": "height_cm"},
        ),
        online=True,
    )
    item_view = FeatureView(
        name="item_misc",
        entities=[item],
        ttl=timedelta(days=90),
        schema=[
            # price+discount and active+featured: runs of fixed-size features, which the
            # fast path encodes as one block
            Field(name="price", dtype=Float64),
            Field(name="discount", dtype=Float64),
            Field(name="stock", dtype=Int32),
            Field(name="active", dtype=Bool),
            Field(name="featured", dtype=Bool),
            Field(name="launched", dtype=UnixTimestamp),
            Field(name="embedding", dtype=Array(Float32)),
        ],
        source=FileSource(
            name="items", path=str(data / "items.parquet"), timestamp_field="event_timestamp"
        ),
        online=True,
    )
    bulk_view = FeatureView(
        name="bulk_features",
        entities=[customer],
        ttl=timedelta(days=90),
        schema=[
            Field(name="height_cm", dtype=Float32),
            Field(name="note", dtype=String),
            Field(name="tags", dtype=Array(String)),
            Field(name="score", dtype=Int64),
        ],
        source=FileSource(
            name="bulk", path=str(data / "bulk.parquet"), timestamp_field="event_timestamp"
        ),
        online=True,
    )
    return [customer, item, customer_view, item_view, bulk_view]


def make_store(
    root: Path, data: Path, backend: Backend, project: str, ttl: int | None = None
) -> FeatureStore:
    repo = root / project
    repo.mkdir(parents=True, exist_ok=True)
    online: dict[str, Any] = {
        "type": "redis",
        "redis_type": backend.redis_type,
        "connection_string": backend.connection_string,
    }
    if ttl:
        online["key_ttl_seconds"] = ttl
    config = RepoConfig(
        project=project,
        provider="local",
        registry=str(repo / "registry.db"),
        online_store=online,
        offline_store={"type": "file"},
        entity_key_serialization_version=3,
        repo_path=str(repo),
    )
    store = FeatureStore(config=config)
    store.apply(feast_objects(data))
    return store


def stored_hashes(backend: Backend, project: str) -> dict[bytes, dict[bytes, bytes]]:
    """Every hash of a project, keyed by the entity part of the key (project suffix cut)."""
    client = backend.client()
    suffix = project.encode()
    keys = [k for k in client.scan_iter(match=b"*" + suffix, count=1000) if k.endswith(suffix)]
    return {key[: -len(suffix)]: client.hgetall(key) for key in keys}


def online(store: FeatureStore, view: str, features: list[str], rows: list[dict[str, Any]]) -> Any:
    refs = [f"{view}:{f}" for f in features]
    return store.get_online_features(features=refs, entity_rows=rows).to_dict(
        include_event_timestamps=True
    )


def assert_same_online(stock: FeatureStore, fast: FeatureStore) -> None:
    """get_online_features (values and event timestamps) equal, present and missing keys."""
    checks = [
        ("customer_features", CUSTOMER_FEATURES, "customer_id", [*CUSTOMERS, "nobody"]),
        ("item_misc", ITEM_FEATURES, "item_id", [*ITEMS, 999]),
    ]
    for view, features, key, values in checks:
        rows = [{key: v} for v in values]
        expected = online(stock, view, features, rows)
        got = online(fast, view, features, rows)
        assert expected.keys() == got.keys()
        for column in expected:
            for i, (e, g) in enumerate(zip(expected[column], got[column], strict=True)):
                assert same_value(e, g), (view, column, values[i], e, g)


def wait_for_registry(store: FeatureStore, view: str) -> list[tuple[datetime, datetime]]:
    store.refresh_registry()
    return list(store.get_feature_view(view).materialization_intervals)


# --------------------------------------------------------------------------------------------
# Encodings, checked against Feast's own functions (no server needed)
# --------------------------------------------------------------------------------------------


def test_non_redis_online_store_is_rejected(tmp_path: Path) -> None:
    config = RepoConfig(
        project="p",
        provider="local",
        registry=str(tmp_path / "registry.db"),
        online_store={"type": "sqlite", "path": str(tmp_path / "online.db")},
        offline_store={"type": "file"},
        entity_key_serialization_version=3,
    )
    with pytest.raises(ValueError, match="not Redis"):
        RedisFeatureWriter(config)
    with pytest.raises(ValueError, match="not Redis"):
        RedisFeatureReader(config, [])


# --------------------------------------------------------------------------------------------
# Against real servers and stock Feast
# --------------------------------------------------------------------------------------------


def test_materialize_equals_stock(backend: Backend, data_dir: Path, tmp_path: Path) -> None:
    stock = make_store(tmp_path, data_dir, backend, f"stock_{backend.name}")
    fast = make_store(tmp_path, data_dir, backend, f"fast_{backend.name}")
    stock.materialize(START, END, feature_views=["customer_features", "item_misc"])
    written = {
        view: materialize_view(fast, view, START, END)
        for view in ("customer_features", "item_misc")
    }
    assert written == {"customer_features": len(CUSTOMERS), "item_misc": len(ITEMS)}

    expected = stored_hashes(backend, stock.project)
    got = stored_hashes(backend, fast.project)
    assert len(expected) == len(CUSTOMERS) + len(ITEMS)
    assert got.keys() == expected.keys()
    for key, fields in expected.items():
        assert got[key] == fields, key
    assert_same_online(stock, fast)

    # The special rows: the END row is included (as Feast's file store does), and the tie on
    # event time goes to the latest `created`.
    values = online(fast, "customer_features", ["visits"], [{"customer_id": CUSTOMERS[1]}])
    assert values["visits__ts"] == [int(END.timestamp())]
    values = online(fast, "customer_features", ["visits"], [{"customer_id": "c04"}])
    assert values["visits"] == [2]

    assert wait_for_registry(fast, "item_misc") == wait_for_registry(stock, "item_misc")
    # Running the same interval again writes nothing (stored _ts is not older).
    assert materialize_view(fast, "customer_features", START, END) == 0
    assert stored_hashes(backend, fast.project) == got


def test_incremental_writes_only_newer_rows(
    backend: Backend, data_dir: Path, tmp_path: Path
) -> None:
    stock = make_store(tmp_path, data_dir, backend, f"stockinc_{backend.name}")
    fast = make_store(tmp_path, data_dir, backend, f"fastinc_{backend.name}")
    stock.materialize(START, END, feature_views=["customer_features"])

    assert materialize_view(fast, "customer_features", START, MID) == len(CUSTOMERS)
    before = stored_hashes(backend, fast.project)
    newer = sum(1 for i in range(len(CUSTOMERS)) if i % 2 == 0) + 1  # day 4 rows + END row
    assert materialize_view(fast, "customer_features", MID, END) == newer

    after = stored_hashes(backend, fast.project)
    ts_field = b"_ts:customer_features"
    changed = {key for key in after if after[key][ts_field] != before[key][ts_field]}
    assert len(changed) == newer
    untouched = [k for k in after if k not in changed]
    assert all(after[k] == before[k] for k in untouched)  # old timestamps and values kept
    assert after == stored_hashes(backend, stock.project)
    assert_same_online_customer(stock, fast)

    assert wait_for_registry(fast, "customer_features") == [(START, MID), (MID, END)]
    # A later stock incremental run starts where we ended.
    later = END + timedelta(days=1)
    fast.materialize_incremental(later, feature_views=["customer_features"])
    assert wait_for_registry(fast, "customer_features")[-1] == (END, later)
    assert stored_hashes(backend, fast.project) == after


def assert_same_online_customer(stock: FeatureStore, fast: FeatureStore) -> None:
    rows = [{"customer_id": c} for c in [*CUSTOMERS, "nobody"]]
    expected = online(stock, "customer_features", CUSTOMER_FEATURES, rows)
    got = online(fast, "customer_features", CUSTOMER_FEATURES, rows)
    for column in expected:
        assert all(same_value(e, g) for e, g in zip(expected[column], got[column], strict=True))


def test_key_ttl_like_feast(single_server: Backend, data_dir: Path, tmp_path: Path) -> None:
    stock = make_store(tmp_path, data_dir, single_server, "stockttl", ttl=3600)
    fast = make_store(tmp_path, data_dir, single_server, "fastttl", ttl=3600)
    stock.materialize(START, END, feature_views=["item_misc"])
    materialize_view(fast, "item_misc", START, END)
    client = single_server.client()
    for project in ("stockttl", "fastttl"):
        keys = list(client.scan_iter(match=f"*{project}"))
        assert len(keys) == len(ITEMS)
        assert all(0 < client.ttl(key) <= 3600 for key in keys)
    assert stored_hashes(single_server, "stockttl") == stored_hashes(single_server, "fastttl")


@pytest.mark.slow
def test_resume_after_redis_out_of_memory(backend: Backend, data_dir: Path, tmp_path: Path) -> None:
    stock = make_store(tmp_path, data_dir, backend, f"stockbulk_{backend.name}")
    fast = make_store(tmp_path, data_dir, backend, f"fastbulk_{backend.name}")
    stock.materialize(START, END, feature_views=["bulk_features"])
    view = fast.get_feature_view("bulk_features")
    frame = pl.read_parquet(data_dir / "bulk.parquet")
    total, chunk = frame.height, 500
    nodes = backend.nodes()

    # The fault is deterministic: once the first chunk's checkpoint is on disk, every node's
    # memory limit drops below what it already holds, so the next write fails with OOM
    # whatever else the machine is doing (no calibration against live memory figures).
    def starve(done: int, _total: int) -> None:
        if done == chunk:
            for node in nodes:
                node.config_set("maxmemory-policy", "noeviction")
                node.config_set("maxmemory", max(1, int(node.info("memory")["used_memory"]) // 2))

    checkpoint = tmp_path / "bulk.checkpoint.json"
    writer = RedisFeatureWriter(fast.config)
    try:
        with pytest.raises(RedisWriteError, match="OOM"):
            writer.write(
                view, frame, dedup=False, checkpoint=checkpoint, chunk_rows=chunk, on_chunk=starve
            )
        state = json.loads(checkpoint.read_text())
        done = state["rows_done"]
        assert done == chunk
        assert state["total_rows"] == total
    finally:
        for node in nodes:
            node.config_set("maxmemory", 0)

    written = writer.write(view, frame, dedup=False, checkpoint=checkpoint, chunk_rows=chunk)
    writer.close()
    assert writer.last_stats.resumed_from == done
    assert written == total - done  # without the checkpoint it would be `total`
    assert not checkpoint.exists()
    assert stored_hashes(backend, fast.project) == stored_hashes(backend, stock.project)

    # A checkpoint of other input is ignored (starts over), and dedup then skips everything.
    checkpoint.write_text(
        json.dumps({"fingerprint": "other", "rows_done": 1000, "total_rows": total})
    )
    with RedisFeatureWriter(fast.config) as again:
        assert again.write(view, frame, checkpoint=checkpoint, chunk_rows=chunk) == 0
        assert again.last_stats.resumed_from == 0
        assert again.last_stats.skipped_not_newer == total


def test_reader_returns_what_get_online_features_returns(
    backend: Backend, data_dir: Path, tmp_path: Path
) -> None:
    fast = make_store(tmp_path, data_dir, backend, f"fastread_{backend.name}")
    for view in ("customer_features", "item_misc"):
        materialize_view(fast, view, START, END)
    refs = [f"customer_features:{f}" for f in CUSTOMER_FEATURES] + [
        f"item_misc:{f}" for f in ITEM_FEATURES
    ]
    with RedisFeatureReader.from_store(fast, ["customer_features", "item_misc"]) as reader:
        pairs = list(zip([*CUSTOMERS, "nobody"], [*ITEMS, 999, 1000, *ITEMS], strict=False))
        for customer, item in pairs:
            got = reader.read({"customer_features": customer, "item_misc": item})
            expected = fast.get_online_features(
                features=refs, entity_rows=[{"customer_id": customer, "item_id": item}]
            ).to_dict(include_event_timestamps=True)
            for view, features in (
                ("customer_features", CUSTOMER_FEATURES),
                ("item_misc", ITEM_FEATURES),
            ):
                row = got[view]
                for feature in features:
                    assert same_value(row[feature], expected[feature][0]), (view, feature, row)
                stamp = row[RedisFeatureReader.TIMESTAMP_KEY]
                seconds = expected[f"{features[0]}__ts"][0]
                if stamp is None:  # missing entity: Feast reports all-null values and ts 0
                    assert seconds == 0
                    assert all(row[f] is None for f in features)
                else:
                    assert math.floor(stamp.timestamp()) == seconds
        # Several pairs of the same view in one round trip keep their order.
        rows = reader.read_pairs([("customer_features", c) for c in CUSTOMERS[:5]])
        assert [r["visits"] for r in rows] == [
            online(fast, "customer_features", ["visits"], [{"customer_id": c}])["visits"][0]
            for c in CUSTOMERS[:5]
        ]
        # Features and plain GETs (serving's session state) in one round trip; on a cluster
        # each GET goes to the node that owns its key's slot.
        client = backend.client()
        sessions = [f"fitrec:session:s{i}".encode() for i in range(6)]
        for i, key in enumerate(sessions[:5]):
            client.set(key, f'{{"n": {i}}}')
        rows, values = reader.read_pairs_and_get(
            [("customer_features", c) for c in CUSTOMERS[:3]], sessions
        )
        assert rows == reader.read_pairs([("customer_features", c) for c in CUSTOMERS[:3]])
        assert values == [f'{{"n": {i}}}'.encode() for i in range(5)] + [None]
        assert reader.read_pairs_and_get([], sessions[:1]) == ([], [b'{"n": 0}'])
        subset = RedisFeatureReader(
            fast.config, [fast.get_feature_view("item_misc")], features={"item_misc": ["price"]}
        )
        assert set(subset.read({"item_misc": ITEMS[0]})["item_misc"]) == {
            "price",
            "event_timestamp",
        }
        subset.close()


def test_read_batch_source_interval(single_server: Backend, data_dir: Path, tmp_path: Path) -> None:
    store = make_store(tmp_path, data_dir, single_server, "interval")
    view = store.get_feature_view("customer_features")
    closed = read_batch_source(store, view, START, END)
    half_open = read_batch_source(store, view, START, END, end_inclusive=False)
    assert closed.height == half_open.height + 1
    assert closed.get_column("event_timestamp").max() == END
    assert {"height_cm", "created", "event_timestamp"} <= set(closed.columns)  # field_mapping
    assert "height_cm_raw" not in closed.columns


def test_stalled_server_fails_instead_of_hanging(
    single_server: Backend, data_dir: Path, tmp_path: Path
) -> None:
    store = make_store(tmp_path, data_dir, single_server, "stalled")
    view = store.get_feature_view("bulk_features")
    frame = pl.read_parquet(data_dir / "bulk.parquet").head(200)
    node = single_server.nodes()[0]
    with RedisFeatureWriter(store.config, socket_timeout=0.3) as writer:
        node.client_pause(1500)  # the server stops answering for 1.5 s
        with pytest.raises(ConnectionError):
            writer.write(view, frame)
        node.client_unpause()
        assert writer.write(view, frame) == 200  # reconnects and completes
