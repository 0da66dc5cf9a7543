"""Connections borrowed from a redis-py client for pipelined bulk traffic.

The Redis URL itself is parsed by :mod:`pipeline.redis_url` (below the settings and every
layer that reads it); import its names from there.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import redis
from redis.cluster import RedisCluster
from redis.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError

from pipeline.redis_url import RedisClient


class NodeConnections:
    """Connections borrowed from a client's pools, one per node, for pipelined bulk traffic
    that redis-py's pipeline objects would build command by command.

    The fast writer sends pre-encoded RESP bytes for thousands of rows with
    :meth:`redis.connection.Connection.send_packed_command` and reads the replies in bulk
    (:mod:`pipeline.features.online.replies`). Which node owns a key is the cluster client's
    decision (``keyslot`` and its slot cache).
    """

    def __init__(self, client: RedisClient):
        self.client = client
        self._borrowed: dict[str, tuple[redis.ConnectionPool, Connection]] = {}

    @property
    def cluster(self) -> bool:
        return isinstance(self.client, RedisCluster)

    def node_of(self, keys: Sequence[bytes]) -> list[str]:
        """The name (``host:port``) of the node owning each key."""
        if not isinstance(self.client, RedisCluster):
            return ["single"] * len(keys)
        manager = self.client.nodes_manager
        cache: dict[int, str] = {}
        names = []
        for key in keys:
            slot = self.client.keyslot(key)
            name = cache.get(slot)
            if name is None:
                name = cache[slot] = manager.get_node_from_slot(slot).name
            names.append(name)
        return names

    def connection(self, node: str) -> Connection:
        """A connected connection to ``node`` (kept until :meth:`release`)."""
        borrowed = self._borrowed.get(node)
        if borrowed is not None:
            return borrowed[1]
        if isinstance(self.client, RedisCluster):
            cluster_node = self.client.get_node(node_name=node)
            if cluster_node is None:
                raise RedisConnectionError(f"no cluster node {node}")
            pool = self.client.get_redis_connection(cluster_node).connection_pool
        else:
            pool = self.client.connection_pool
        connection = pool.get_connection()
        self._borrowed[node] = (pool, connection)
        return connection

    def release(self, *, broken: bool = False) -> None:
        """Give the connections back; ``broken`` ones (replies left unread) are closed."""
        for pool, connection in self._borrowed.values():
            if broken:
                connection.disconnect()
            pool.release(connection)
        self._borrowed.clear()

    def refresh(self) -> None:
        """Reload the cluster's slot map (after ``MOVED``/``ASK``)."""
        self.release(broken=True)
        if isinstance(self.client, RedisCluster):
            self.client.nodes_manager.initialize()

    @contextmanager
    def session(self) -> Iterator[NodeConnections]:
        """Borrow for one exchange; on any error the connections are closed, not reused."""
        try:
            yield self
        except BaseException:
            self.release(broken=True)
            raise
        self.release()
