"""One Redis URL, parsed once, for every component: the fast writer, the serving reader, the
session store and Feast's own online store. It sits at the bottom of the house (it imports
nothing of ours), so the settings validate the URL and every layer above reads it.

``redis://[user:password@]host:port[/db][?option=value...]``, ``rediss://...`` (TLS) and
``redis+cluster://[user:password@]host:port,host:port,...[?...]`` (``rediss+cluster://`` with
TLS) are accepted. Credentials are percent-decoded, so a password may hold any character
(``,`` ``@`` ``%`` ``:`` ``/`` as ``%2C`` ``%40`` ``%25`` ``%3A`` ``%2F``). Query options are
redis-py's own (``ssl_ca_certs``, ``ssl_cert_reqs``, ``socket_timeout``, ...), parsed by
redis-py's :func:`redis.connection.parse_url`; nothing here speaks RESP or computes slots:
connections, TLS, AUTH, ``SELECT``, cluster slots, ``MOVED``/``ASK`` and topology refresh are
redis-py's (:class:`redis.Redis`, :class:`redis.cluster.RedisCluster`), and retries on
connection errors use :class:`redis.retry.Retry` with exponential backoff.

TLS with verification: ``rediss://alice:pw@redis.example:6380/0?ssl_cert_reqs=required&
ssl_ca_certs=/etc/fitrec/ca.pem`` (``ssl_certfile`` and ``ssl_keyfile`` add a client
certificate for ``tls-auth-clients yes``; ``ssl_check_hostname=false`` only for an address
the certificate does not name). ``ssl_*`` options in a plain ``redis://`` URL are refused
rather than ignored.

Feast's ``connection_string`` (``host:port,password=...``) cannot carry a password with a
comma, so the Feast online store built here (:func:`feast_online_store`) is Feast's Redis
store reading the same URL (:mod:`pipeline.features.online.feast_store`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, unquote_plus

import redis
from redis.backoff import ExponentialBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.connection import parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

SCHEMES = ("redis", "rediss", "redis+cluster", "rediss+cluster")
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
SECRET_OPTIONS = ("password", "ssl_password")
"""Options whose values :meth:`RedisTarget.redacted` masks (``ssl_password`` unlocks a key)."""
CERT_REQS = ("none", "optional", "required")
"""``ssl_cert_reqs`` values: redis-py's names for :mod:`ssl`'s ``CERT_*`` modes."""
FEAST_STORE_TYPE = "pipeline.features.online.feast_store.RedisURLOnlineStore"

RedisClient = redis.Redis | RedisCluster
"""What :meth:`RedisTarget.client` returns: one node or a cluster."""


@dataclass(frozen=True)
class RedisTarget:
    """A parsed Redis URL: the nodes, whether they form a cluster, and redis-py's keyword
    arguments (credentials, db, TLS and timeout options).

    Attributes:
        url: The URL as given (it may hold a password: never log it; see :meth:`redacted`).
        nodes: ``(host, port)`` of the server, or the cluster's startup nodes.
        cluster: Whether the URL names a Redis Cluster.
        options: Keyword arguments for :class:`redis.Redis` (``db`` is dropped for a
            cluster, which has only database 0).
    """

    url: str
    nodes: tuple[tuple[str, int], ...]
    cluster: bool
    options: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @classmethod
    def parse(cls, url: str) -> RedisTarget:
        """Parse ``url``; raises ``ValueError`` naming what is wrong (never the password)."""
        scheme, sep, rest = url.partition("://")
        if not sep or scheme not in SCHEMES:
            raise ValueError(
                "a Redis URL must start with redis://, rediss://, redis+cluster:// or "
                f"rediss+cluster://, not {scheme + sep if sep else 'no scheme'}"
            )
        cluster = scheme in CLUSTER_SCHEMES
        authority, tail = _split_authority(rest)
        userinfo, at, hosts = authority.rpartition("@")
        if not at:
            userinfo, hosts = "", authority
        nodes = tuple(_host_port(node) for node in hosts.split(",") if node)
        if not nodes:
            raise ValueError("a Redis URL needs host:port")
        if len(nodes) > 1 and not cluster:
            raise ValueError("several hosts need a redis+cluster:// URL")
        host, port = nodes[0]
        single = f"{'rediss' if scheme.startswith('rediss') else 'redis'}://"
        single += f"{userinfo}@" if at else ""
        single += f"{_bracket(host)}:{port}{tail}"
        options = parse_url(single)  # redis-py's own: unquotes credentials, casts options
        # redis-py unquotes query values twice (parse_qs, then unquote): "%2500" would become
        # "\x00", not "%00". Text options take the value unquoted once, as the URL means it.
        query = tail.split("?", 1)[1] if "?" in tail else ""
        for key, value in parse_qsl(query, keep_blank_values=True):
            if isinstance(options.get(key), str):
                options[key] = value
        options.pop("host", None)
        options.pop("port", None)
        if cluster:
            if options.pop("db", 0):
                raise ValueError("a Redis Cluster has only database 0")
        options.pop("connection_class", None)
        _check_tls_options(options, tls=scheme.startswith("rediss"))
        if scheme.startswith("rediss"):
            options["ssl"] = True
        return cls(url=url, nodes=nodes, cluster=cluster, options=options)

    @property
    def password(self) -> str | None:
        value = self.options.get("password")
        return None if value is None else str(value)

    def redacted(self) -> str:
        """The URL with every secret (the password, and ``password``/``ssl_password``
        options in the query or Feast's form) replaced by ``***``, for logs and errors."""
        if "://" not in self.url:  # Feast's form: host:port,password=...
            return ",".join(_mask_option(part) for part in self.url.split(","))
        scheme, _, rest = self.url.partition("://")
        authority, tail = _split_authority(rest)
        userinfo, at, hosts = authority.rpartition("@")
        if at:
            user, colon, _ = userinfo.partition(":")
            authority = f"{user}{':***' if colon else ''}@{hosts}"
        path, mark, query = tail.partition("?")
        if mark:
            tail = f"{path}?{'&'.join(_mask_option(part) for part in query.split('&'))}"
        return f"{scheme}://{authority}{tail}"

    def client(
        self,
        *,
        socket_timeout: float | None = None,
        retries: int = 3,
        **overrides: Any,
    ) -> RedisClient:
        """A redis-py client (a cluster client for a cluster URL).

        Args:
            socket_timeout: Seconds per socket operation, in place of the URL's (None keeps
                the URL's); redis-py also connects within it unless the URL sets
                ``socket_connect_timeout``.
            retries: Retries on connection errors and timeouts, with exponential backoff
                (redis-py's :class:`~redis.retry.Retry`); 0 fails at once (serving).
            **overrides: Further redis-py keyword arguments, in place of the URL's.
        """
        options = dict(self.options)
        if socket_timeout is not None:
            options["socket_timeout"] = socket_timeout
        options.update(overrides)
        retry = Retry(
            ExponentialBackoff(cap=2.0, base=0.05),
            retries,
            supported_errors=(RedisConnectionError, RedisTimeoutError, OSError),
        )
        if self.cluster:
            return RedisCluster(
                startup_nodes=[ClusterNode(host, port) for host, port in self.nodes],
                retry=retry,
                **options,
            )
        host, port = self.nodes[0]
        return redis.Redis(host=host, port=port, retry=retry, **options)

    def feast_online_store(self, **extra: Any) -> dict[str, Any]:
        """The ``online_store`` section of ``feature_store.yaml`` for this URL."""
        return {
            "type": FEAST_STORE_TYPE,
            "redis_type": "redis_cluster" if self.cluster else "redis",
            "connection_string": self.url,
            **extra,
        }


def feast_connection_target(connection_string: str, cluster: bool) -> RedisTarget:
    """The target of a Feast Redis ``connection_string``: a URL as :class:`RedisTarget`
    parses it, or Feast's own ``host:port[,host:port...][,key=value...]`` form (values
    JSON-decoded as Feast does, passed to redis-py as keyword arguments)."""
    if "://" in connection_string:
        target = RedisTarget.parse(connection_string)
        if target.cluster != cluster:
            kind = "a cluster" if target.cluster else "a single node"
            raise ValueError(f"the connection string names {kind}, but redis_type disagrees")
        return target
    nodes: list[tuple[str, int]] = []
    options: dict[str, Any] = {}
    for part in connection_string.split(","):
        key, eq, value = part.partition("=")
        if not eq:
            if part.strip():
                nodes.append(_host_port(part))
            continue
        try:
            options[key.strip()] = json.loads(value)
        except ValueError:
            options[key.strip()] = value
    if not nodes:
        raise ValueError("a Redis connection string needs host:port")
    if cluster:
        options.pop("db", None)
    else:
        options.pop("skip_full_coverage_check", None)
    return RedisTarget(url=connection_string, nodes=tuple(nodes), cluster=cluster, options=options)


def _mask_option(part: str) -> str:
    """``key=value`` with the value masked when the key names a secret."""
    key, eq, _ = part.partition("=")
    return f"{key}=***" if eq and unquote_plus(key).strip() in SECRET_OPTIONS else part


def _check_tls_options(options: dict[str, Any], *, tls: bool) -> None:
    """TLS options in a plain URL would be dropped silently by redis-py: refuse them, and
    a verification mode redis-py would only reject at the first connection."""
    stray = sorted(name for name in options if name.startswith("ssl"))
    if stray and not tls:
        raise ValueError(f"{', '.join(stray)} need a rediss:// URL (TLS)")
    mode = options.get("ssl_cert_reqs")
    if mode is not None and mode not in CERT_REQS:  # redis-py's names are lower case
        raise ValueError(f"ssl_cert_reqs must be one of {', '.join(CERT_REQS)}, not {mode!r}")


def _split_authority(rest: str) -> tuple[str, str]:
    """``authority`` and the rest (path and query) of what follows ``scheme://``.

    The authority ends at the first ``/`` or ``?`` after the last ``@`` (a percent-encoded
    password holds neither, but a raw one with ``/`` would be cut: it must be encoded).
    """
    at = rest.rfind("@")
    cut = len(rest)
    for mark in "/?":
        index = rest.find(mark, at + 1)
        if index >= 0:
            cut = min(cut, index)
    return rest[:cut], rest[cut:]


def _host_port(node: str) -> tuple[str, int]:
    node = node.strip()
    if node.startswith("["):  # [ipv6]:port
        host, _, port = node[1:].partition("]:")
    else:
        host, _, port = node.rpartition(":")
        if not host:
            host, port = node, "6379"
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"bad port in Redis node {unquote(node)!r}") from None
    if not host or not 0 < number < 65536:
        raise ValueError(f"bad Redis node {unquote(node)!r}")
    return host, number


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host
