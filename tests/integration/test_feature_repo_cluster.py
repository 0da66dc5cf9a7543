"""fitrec's own feature repository on a real 3-node Redis Cluster: apply, fast materialise,
and read back what pipeline.features computed, through Feast."""

from __future__ import annotations

import polars as pl
import pytest

from pipeline.features import store
from pipeline.features.build import feature_paths
from pipeline.features.declarations import CUSTOMER_FEATURES, TIMESTAMP
from tests.conftest import Environment, prepare_days
from tests.support.servers import redis_cluster


@pytest.fixture(scope="module")
def cluster_env(raw_drops, tmp_path_factory):
    with redis_cluster(tmp_path_factory.mktemp("cluster")) as nodes:
        data = tmp_path_factory.mktemp("cluster-data")
        with Environment(data, f"redis+cluster://{nodes}") as settings:
            prepare_days(settings, raw_drops)
            yield settings


def test_repository_materialises_into_a_cluster_and_reads_back(cluster_env):
    settings = cluster_env
    assert settings.redis_cluster
    fs = store.feature_store(settings)
    assert fs.config.online_store.redis_type == "redis_cluster"
    store.apply(fs)
    written = store.materialize_new(fs, settings.features_dir, settings.feast_dir / "ckpt")
    assert all("fast" in v for v in written.values()), written
    computed = pl.read_parquet(feature_paths(settings.features_dir)["customer_features"])
    latest = computed.filter(pl.col(TIMESTAMP) == pl.col(TIMESTAMP).max()).head(40)
    online = store.read_customer_features(fs, latest["customer_id"].to_list())
    for row, served in zip(latest.iter_rows(named=True), online, strict=True):
        for feature in CUSTOMER_FEATURES:
            expected, got = row[feature.name], served[feature.name]
            assert (expected is None and got is None) or got == pytest.approx(expected), (
                feature.name
            )
    # A second run has nothing new to write.
    again = store.materialize_new(fs, settings.features_dir, settings.feast_dir / "ckpt")
    assert set(again.values()) == {"up to date"}
