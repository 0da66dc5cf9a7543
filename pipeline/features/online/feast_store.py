"""Feast's Redis online store, configured by a Redis URL.

Feast's ``connection_string`` is ``host:port,key=value,...`` split on commas, so a password
holding a comma cannot be written in it (Feast then fails with ``WRONGPASS`` or
``TypeError: unexpected keyword``). This store is Feast's own
:class:`~feast.infra.online_stores.redis.RedisOnlineStore` (same key layout, same reads and
writes), except that its ``connection_string`` may be a URL parsed by
:class:`~pipeline.redis_url.RedisTarget`, the one parser every fitrec
component uses. fitrec's own ``feature_repo/feature_store.yaml`` resolves to it when
``FITREC_REDIS_URL`` is set (:class:`pipeline.features.store.FitrecOnlineStoreConfig`); in a
``feature_store.yaml`` of your own, keep the URL (it holds the password) in the environment,
which Feast expands::

    online_store:
      type: pipeline.features.online.feast_store.RedisURLOnlineStore
      redis_type: redis            # or redis_cluster
      connection_string: ${FITREC_REDIS_URL}   # e.g. redis://:p%2Cw%40rd@localhost:6379/0

A connection string in Feast's own form still works.
"""

from __future__ import annotations

from typing import Any, Literal

from feast.infra.online_stores.redis import RedisOnlineStore, RedisOnlineStoreConfig
from pydantic import StrictStr

from pipeline.redis_url import feast_connection_target


class RedisURLOnlineStoreConfig(RedisOnlineStoreConfig):
    """:class:`RedisOnlineStoreConfig` whose ``connection_string`` may be a Redis URL."""

    # Feast finds the store class from ``type``; the base class narrows it to "redis".
    type: Literal["pipeline.features.online.feast_store.RedisURLOnlineStore"] = (
        "pipeline.features.online.feast_store.RedisURLOnlineStore"  # type: ignore[assignment]
    )
    connection_string: StrictStr = "redis://localhost:6379/0"


class RedisURLOnlineStore(RedisOnlineStore):
    """Feast's Redis online store, connecting through :class:`RedisTarget`."""

    # Feast builds its redis-py clients (sync and async) from what this returns: the
    # startup nodes and the keyword arguments. Overriding the one parser keeps every other
    # line of Feast's store, including the async client.
    @staticmethod
    def _parse_connection_string(connection_string: str) -> tuple[list[dict[str, Any]], dict]:
        cluster = "+cluster://" in connection_string
        target = feast_connection_target(connection_string, cluster)
        nodes = [{"host": host, "port": port} for host, port in target.nodes]
        return nodes, dict(target.options)
