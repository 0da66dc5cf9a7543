"""One Redis URL with a hostile password works for every component, on a real
password-protected server and a real password-protected 3-node cluster: Feast's SDK (apply
and ``get_online_features``), the fast writer, the serving reader and the session store.

Both also know ACL users: ``alice`` (every permission, a hostile password too) works for
every component with ``user:password@`` in the URL, and ``reader`` (read commands only)
reads but is refused every write, with errors that name the permission, not the password."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import cast
from urllib.parse import quote

import polars as pl
import pytest
import redis
from redis.exceptions import NoPermissionError, RedisClusterException

from pipeline.config import Settings
from pipeline.features import store
from pipeline.features.build import feature_paths
from pipeline.features.declarations import CUSTOMER_FEATURES, CUSTOMER_VIEW, TIMESTAMP
from pipeline.features.online.materialize import materialize_view
from pipeline.features.online.reader import RedisFeatureReader
from pipeline.features.online.writer import RedisWriteError
from pipeline.features.session import SessionState
from pipeline.redis_url import RedisTarget
from serving.events import SessionStore
from tests.conftest import Environment, prepare_days
from tests.support.servers import redis_cluster, redis_server, with_credentials

# Commas break Feast's connection_string, "@" and "%" break naive URL parsing.
PASSWORD = "s3,cr@t%25,x=y:z/"
ALICE_PASSWORD = 'al1ce "q" \\ ,@%2C:/ pw'
READER_PASSWORD = "r3,ad@%only"
# Read commands only, plus what a client needs to connect and (cluster) learn the slots.
READER_ACL = (
    f"reader on >{READER_PASSWORD} ~* &* -@all +@read +@connection +cluster +info +acl|whoami"
)
USERS = {"alice": ALICE_PASSWORD}


@pytest.fixture(scope="module", params=["single", "cluster"])
def protected(request, raw_drops, tmp_path_factory) -> Iterator[Settings]:
    work = tmp_path_factory.mktemp(f"auth-{request.param}")
    if request.param == "single":
        server = redis_server(work / "redis", password=PASSWORD, users=USERS, acl=[READER_ACL])
    else:
        server = redis_cluster(work / "redis", password=PASSWORD, users=USERS, acl=[READER_ACL])
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


def as_user(settings: Settings, user: str | None, password: str) -> str:
    """The server's URL for an ACL user, with a generous timeout (serving's own is 50 ms,
    too short to be sure of on a loaded machine)."""
    return with_credentials(settings.redis_url or "", user, password) + "?socket_timeout=60"


def customer_window(settings: Settings) -> tuple[pl.DataFrame, datetime, datetime]:
    """The customer features computed, and their first and last event times."""
    computed = pl.read_parquet(feature_paths(settings.features_dir)[CUSTOMER_VIEW])
    stamps = computed[TIMESTAMP]
    return computed, cast(datetime, stamps.min()), cast(datetime, stamps.max())


def test_an_acl_user_materialises_and_serves(protected: Settings) -> None:
    url = as_user(protected, "alice", ALICE_PASSWORD)
    target = RedisTarget.parse(url)
    assert target.options["username"] == "alice" and target.password == ALICE_PASSWORD
    with Environment(protected.data_dir, url) as settings:
        client = target.client()
        assert client.acl_whoami() == "alice"
        client.flushdb()  # every primary of a cluster
        fs = store.feature_store(settings)
        store.apply(fs)
        computed, start, end = customer_window(settings)
        rows = materialize_view(fs, CUSTOMER_VIEW, start, end)
        assert rows == computed["customer_id"].n_unique()

        latest = computed.filter(pl.col(TIMESTAMP) == end).head(20)
        ids = latest["customer_id"].to_list()
        through_feast = store.read_customer_features(fs, ids)
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
        state = SessionState(session_id="s-alice", items=["I9"], event_types=["view"])
        sessions.put(state)
        assert sessions.get("s-alice") == state


def test_a_read_only_acl_user_is_refused_every_write(protected: Settings, caplog) -> None:
    admin = RedisTarget.parse(as_user(protected, "alice", ALICE_PASSWORD))
    admin.client().flushdb()  # nothing stored: the writer must try to write every row
    url = as_user(protected, "reader", READER_PASSWORD)
    caplog.set_level(logging.DEBUG)
    with Environment(protected.data_dir, url) as settings:
        reader_client = RedisTarget.parse(url).client()
        assert reader_client.acl_whoami() == "reader"  # connected and authenticated
        assert reader_client.get("fitrec:none") is None  # reads are allowed
        with pytest.raises(NoPermissionError):
            reader_client.set("fitrec:none", "x")
        fs = store.feature_store(settings)
        _, start, end = customer_window(settings)
        with pytest.raises(RedisWriteError, match="NOPERM .*'hset'") as refused:
            materialize_view(fs, CUSTOMER_VIEW, start, end + timedelta(seconds=1))
        sessions = SessionStore(settings)
        with pytest.raises(NoPermissionError) as session_refused:
            sessions.put(SessionState(session_id="s-ro", items=["I1"], event_types=["view"]))
    assert admin.client().dbsize() == 0  # nothing got through
    for text in (str(refused.value), str(session_refused.value), caplog.text):
        for secret in (READER_PASSWORD, ALICE_PASSWORD, PASSWORD):
            assert secret not in text and quote(secret, safe="") not in text


@pytest.mark.parametrize("user", ["alice", "reader", "nobody", None])
def test_a_wrong_password_is_refused_without_showing_it(protected: Settings, user) -> None:
    wrong = (ALICE_PASSWORD if user == "alice" else READER_PASSWORD) + ",x"
    target = RedisTarget.parse(as_user(protected, user, wrong))
    # A cluster client wraps the node's AuthenticationError in RedisClusterException.
    with pytest.raises((redis.AuthenticationError, RedisClusterException)) as raised:
        target.client(retries=0).ping()
    assert "invalid username-password pair" in str(raised.value)
    for text in (str(raised.value), target.redacted()):
        assert wrong not in text and quote(wrong, safe="") not in text
