"""The one Redis URL parser: every component reads the same URL the same way."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.features.online.feast_store import RedisURLOnlineStore
from pipeline.redis_url import (
    FEAST_STORE_TYPE,
    RedisTarget,
    feast_connection_target,
)

HARD = "p,w@r%d:x/y?z#=&"


def test_single_node_url_with_every_part() -> None:
    target = RedisTarget.parse(
        f"rediss://alice:{quote(HARD, safe='')}@cache:6380/3?ssl_cert_reqs=none"
    )
    assert target.nodes == (("cache", 6380),)
    assert not target.cluster
    assert target.password == HARD
    assert target.options["username"] == "alice"
    assert target.options["db"] == 3
    assert target.options["ssl"] is True
    assert target.options["ssl_cert_reqs"] == "none"
    assert HARD not in target.redacted() and quote(HARD, safe="") not in target.redacted()
    assert target.redacted().startswith("rediss://alice:***@cache:6380/3")


def test_cluster_url_names_every_node_and_has_no_db() -> None:
    target = RedisTarget.parse(f"redis+cluster://:{quote(HARD, safe='')}@a:7000,b:7001,[::1]:7002")
    assert target.cluster
    assert target.nodes == (("a", 7000), ("b", 7001), ("::1", 7002))
    assert target.password == HARD
    assert "db" not in target.options
    with pytest.raises(ValueError, match="database 0"):
        RedisTarget.parse("redis+cluster://a:7000/2")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://host:6379", "must start with"),
        ("host:6379", "must start with"),
        ("redis://", "needs host:port"),
        ("redis://a:1,b:2", "redis\\+cluster"),
        ("redis://host:notaport", "bad port"),
        ("redis://host:70000", "bad Redis node"),
    ],
)
def test_bad_urls_say_what_is_wrong(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RedisTarget.parse(url)


@given(password=st.text(min_size=1, max_size=40), db=st.integers(0, 15))
def test_any_password_round_trips(password: str, db: int) -> None:
    url = f"redis://:{quote(password, safe='')}@127.0.0.1:6390/{db}"
    target = RedisTarget.parse(url)
    assert target.password == password
    assert target.options["db"] == db
    assert target.redacted() == f"redis://:***@127.0.0.1:6390/{db}"
    # Feast's store parses the same URL into the same redis-py arguments.
    nodes, kwargs = RedisURLOnlineStore._parse_connection_string(url)
    assert nodes == [{"host": "127.0.0.1", "port": 6390}]
    assert kwargs["password"] == password


def test_feast_online_store_section_carries_the_url() -> None:
    url = f"redis+cluster://:{quote(HARD, safe='')}@a:7000,b:7001"
    section = RedisTarget.parse(url).feast_online_store()
    assert section == {
        "type": FEAST_STORE_TYPE,
        "redis_type": "redis_cluster",
        "connection_string": url,
    }


def test_feast_connection_strings_still_parse() -> None:
    target = feast_connection_target("h1:7000,h2:7001,password=s3cret,ssl=true", cluster=True)
    assert target.nodes == (("h1", 7000), ("h2", 7001))
    assert target.options == {"password": "s3cret", "ssl": True}
    single = feast_connection_target("cache:6379,db=2,socket_timeout=0.5", cluster=False)
    assert single.options == {"db": 2, "socket_timeout": 0.5}
    assert feast_connection_target("redis://:x@h:1/0", cluster=False).password == "x"
    with pytest.raises(ValueError, match="redis_type"):
        feast_connection_target("redis://h:1/0", cluster=True)


def test_an_explicit_timeout_wins_over_the_urls() -> None:
    target = RedisTarget.parse("redis://h:1/0?socket_timeout=5")
    kept = target.client().connection_pool.connection_kwargs
    assert kept["socket_timeout"] == 5
    given = target.client(socket_timeout=0.05).connection_pool.connection_kwargs
    assert given["socket_timeout"] == 0.05
    assert given["db"] == 0


@given(
    option=st.sampled_from(["ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs"]),
    value=st.text(alphabet="abcdefghijklmnopqrstuvwxyz/._-", min_size=1, max_size=20),
    cluster=st.booleans(),
)
def test_tls_options_in_a_plain_url_are_refused(option: str, value: str, cluster: bool) -> None:
    scheme = "redis+cluster" if cluster else "redis"
    with pytest.raises(ValueError, match="rediss://"):
        RedisTarget.parse(f"{scheme}://:pw@h:1/?{option}={quote(value)}")
    tls = RedisTarget.parse(f"rediss{scheme[5:]}://:pw@h:1/?{option}=none")
    assert tls.options["ssl"] is True and tls.options[option] == "none"


@given(
    mode=st.sampled_from(["none", "optional", "required", "REQUIRED", "yes"])
    | st.text(min_size=1, max_size=12)
)
def test_only_known_verification_modes_pass(mode: str) -> None:
    url = f"rediss://h:1/0?ssl_cert_reqs={quote(mode, safe='')}"
    if mode in ("none", "optional", "required"):
        assert RedisTarget.parse(url).options["ssl_cert_reqs"] == mode
    else:
        with pytest.raises(ValueError, match="ssl_cert_reqs"):
            RedisTarget.parse(url)


def test_a_verified_tls_url_passes_its_files_to_redis_py_and_feast() -> None:
    url = (
        "rediss://alice:p%2Cw@127.0.0.1:6380/0?ssl_cert_reqs=required&ssl_ca_certs=/tls/ca.crt"
        "&ssl_certfile=/tls/client.crt&ssl_keyfile=/tls/client.key"
    )
    target = RedisTarget.parse(url)
    expected = {
        "ssl": True,
        "ssl_cert_reqs": "required",
        "ssl_ca_certs": "/tls/ca.crt",
        "ssl_certfile": "/tls/client.crt",
        "ssl_keyfile": "/tls/client.key",
        "username": "alice",
        "password": "p,w",
    }
    assert expected.items() <= target.options.items()
    nodes, kwargs = RedisURLOnlineStore._parse_connection_string(url)
    assert nodes == [{"host": "127.0.0.1", "port": 6380}]
    assert expected.items() <= kwargs.items()
    client = target.client()
    assert client.connection_pool.connection_kwargs["ssl_ca_certs"] == "/tls/ca.crt"
    assert target.redacted().startswith("rediss://alice:***@127.0.0.1:6380/0?")


@given(
    user=st.sampled_from(["", "alice", "ü ser"]),
    password=st.text(min_size=1, max_size=30),
    key_password=st.text(min_size=1, max_size=30),
    cluster=st.booleans(),
)
def test_redacted_masks_every_secret(
    user: str, password: str, key_password: str, cluster: bool
) -> None:
    scheme = "rediss+cluster" if cluster else "rediss"
    hosts = "h1:7000,h2:7001" if cluster else "h1:7000/2"
    template = (
        f"{scheme}://{quote(user, safe='')}:{{pw}}@{hosts}?ssl_ca_certs=/etc/ca.pem"
        "&ssl_password={kpw}&ssl_cert_reqs=required"
    )
    url = template.format(pw=quote(password, safe=""), kpw=quote(key_password, safe=""))
    target = RedisTarget.parse(url)
    assert target.password == password
    assert target.options["ssl_password"] == key_password
    assert target.redacted() == template.format(pw="***", kpw="***")


def test_redacted_masks_a_password_given_only_as_an_option() -> None:
    target = RedisTarget.parse("redis://h:1/0?password=s3cret&socket_timeout=2")
    assert target.password == "s3cret"
    assert target.redacted() == "redis://h:1/0?password=***&socket_timeout=2"
    feast = feast_connection_target("h:1,password=s3cret,ssl_password=k3y,ssl=true", False)
    assert feast.redacted() == "h:1,password=***,ssl_password=***,ssl=true"
