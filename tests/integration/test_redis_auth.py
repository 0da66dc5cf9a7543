"""One Redis URL with a hostile password works for every component, on a real
password-protected server and a real password-protected 3-node cluster: Feast's SDK (apply
and ``get_online_features``), the fast writer, the serving reader and the session store."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

import polars as pl
import pytest
import redis

from pipeline.config import Settings
from pipeline.features import store
from pipeline.features.build import feature_paths
from pipeline.features.declarations import CUSTOMER_FEATURES, CUSTOMER_VIEW, TIMESTAMP
from pipeline.features.online.connection import RedisTarget
from pipeline.features.online.reader import RedisFeatureReader
from pipeline.features.session import SessionState
from pipeline.testing.servers import redis_cluster, redis_server
from serving.events import SessionStore
from tests.conftest import Environment, prepare_days

# Commas break Feast's connection_string, "@" and "%" break naive URL parsing.
PASSWORD = "s3,cr@t%25,x=y:z/"


@pytest.fixture(scope="module", params=["single", "cluster"])
def protected(request, raw_drops, tmp_path_factory) -> Iterator[Settings]:
    work = tmp_path_factory.mktemp(f"auth-{request.param}")
    if request.param == "single":
        server = redis_server(work / "redis", password=PASSWORD)
    else:
        server = redis_cluster(work / "redis", password=PASSWORD)
    with server as address:
        if request.param == "single":
            url = address
        else:
            url = f"redis+cluster://:{quote(PASSWORD, safe='')}@{address}"
        with Environment(work / "data", url) as settings:
            prepare_days(settings, raw_drops)
            yield settings


def test_the_url_really_needs_the_password(protected: Settings) -> None:
    target = RedisTarget.parse(protected.redis_url or "")
    assert target.password == PASSWORD
    host, port = target.nodes[0]
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host=host, port=port).ping()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host=host, port=port, password=PASSWORD[:-1]).ping()
    assert target.client().ping()


def test_every_component_reads_and_writes_with_one_url(protected: Settings) -> None:
    settings = protected
    fs = store.feature_store(settings)
    store.apply(fs)  # Feast's SDK connects (online tables) with the URL
    written = store.materialize_new(fs, settings.features_dir, settings.feast_dir / "ckpt")
    assert written and all("fast" in v for v in written.values()), written

    computed = pl.read_parquet(feature_paths(settings.features_dir)[CUSTOMER_VIEW])
    latest = computed.filter(pl.col(TIMESTAMP) == pl.col(TIMESTAMP).max()).head(25)
    ids = latest["customer_id"].to_list()
    through_feast = store.read_customer_features(fs, ids)  # Feast's own redis-py client
    with RedisFeatureReader.from_store(fs, [CUSTOMER_VIEW]) as reader:
        through_reader = reader.read_pairs([(CUSTOMER_VIEW, c) for c in ids])
    for row, sdk, fast in zip(
        latest.iter_rows(named=True), through_feast, through_reader, strict=True
    ):
        for feature in CUSTOMER_FEATURES:
            expected = row[feature.name]
            for got in (sdk[feature.name], fast[feature.name]):
                assert (expected is None and got is None) or got == pytest.approx(expected)

    sessions = SessionStore(settings)
    state = SessionState(session_id="s-auth", items=["I1", "I2"], event_types=["view", "view"])
    sessions.put(state)
    assert sessions.get("s-auth") == state
