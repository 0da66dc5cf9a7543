"""The serving reader: several (view, entity) pairs of one page view in one round trip.

:class:`RedisFeatureReader` returns what ``get_online_features(...).to_dict()`` returns for
the same rows, read with one ordinary redis-py pipeline (``HMGET`` per pair, plus any plain
``GET`` the caller adds, such as the live session state) from the client's connection pool,
so concurrent requests each borrow their own connection instead of queueing on a lock. A
Redis Cluster client routes each command to its slot's node and follows ``MOVED``/``ASK``.

Known difference from Feast: a missing entity's event time is ``None`` where
``to_dict(include_event_timestamps=True)`` reports ``0``.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis.exceptions
from feast import FeatureStore, FeatureView, RepoConfig
from feast.infra.online_stores.helpers import _mmh3
from feast.value_type import ValueType

from pipeline.features.online.decoding import decode_timestamp, decode_value
from pipeline.features.online.layout import (
    EVENT_TIMESTAMP,
    online_config,
    registered_view,
    view_spec,
)
from pipeline.features.online.writer import RedisCommandError
from pipeline.redis_url import RedisClient, feast_connection_target

_PACK_INT64 = struct.Struct("<IIq")
_PACK_INT32 = struct.Struct("<IIi")


@dataclass(frozen=True, slots=True)
class _ReadPlan:
    """The fixed part of one view's ``HMGET``: key prefix, field hashes, names and types."""

    name: str
    key_prefix: bytes
    key_type: ValueType
    fields: tuple[bytes, ...]
    names: tuple[str, ...]
    types: tuple[ValueType, ...]


class RedisFeatureReader:
    """Reads the online features of several (view, entity) pairs in one pipelined round trip.

    Args:
        config: A Feast ``RepoConfig`` with a Redis online store.
        views: The registered feature views that will be read.
        features: Optional subset of feature names per view name (default: all).
        socket_timeout: Socket timeout in seconds for serving calls; a timeout or a lost
            connection fails at once (no retries: serving answers degraded instead).

    Example:
        >>> reader = RedisFeatureReader(store.config, [customer_view, session_view])
        >>> reader.read({"customer_features": "c-1", "session_features": "s-9"})
        {'customer_features': {'height': 171.0, ..., 'event_timestamp': datetime(...)}, ...}
    """

    TIMESTAMP_KEY = EVENT_TIMESTAMP

    def __init__(
        self,
        config: RepoConfig,
        views: Sequence[FeatureView],
        *,
        features: Mapping[str, Sequence[str]] | None = None,
        socket_timeout: float | None = 1.0,
    ) -> None:
        self.config = config
        online = online_config(config)
        target = feast_connection_target(
            online.connection_string, online.redis_type == "redis_cluster"
        )
        self.client: RedisClient = target.client(socket_timeout=socket_timeout, retries=0)
        self._project = config.project.encode("utf8")
        self._plans: dict[str, _ReadPlan] = {}
        for view in views:
            spec = view_spec(view, config)
            wanted = list(features.get(view.name, [])) if features else []
            chosen = [(n, t) for n, t in spec.features if not wanted or n in wanted]
            unknown = set(wanted) - {n for n, _ in spec.features}
            if unknown:
                raise ValueError(f"view {view.name!r} has no features {sorted(unknown)}")
            if any(name == self.TIMESTAMP_KEY for name, _ in chosen):
                raise ValueError(f"view {view.name!r} has a feature named {self.TIMESTAMP_KEY!r}")
            hashes = [_mmh3(f"{spec.fv_name}:{name}") for name, _ in chosen]
            name = spec.join_key.encode("utf8")
            self._plans[view.name] = _ReadPlan(
                name=view.name,
                key_prefix=struct.pack("<III", 1, ValueType.STRING.value, len(name)) + name,
                key_type=spec.key_type,
                fields=(*hashes, spec.ts_field),
                names=tuple(n for n, _ in chosen),
                types=tuple(t for _, t in chosen),
            )

    @classmethod
    def from_store(
        cls, store: FeatureStore, view_names: Sequence[str], **kwargs: Any
    ) -> RedisFeatureReader:
        """Build a reader for views looked up in ``store``'s registry."""
        return cls(store.config, [registered_view(store, n) for n in view_names], **kwargs)

    def __enter__(self) -> RedisFeatureReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the client's connections."""
        self.client.close()

    def _key(self, plan: _ReadPlan, value: Any) -> bytes:
        if plan.key_type == ValueType.STRING:
            raw = str(value).encode("utf8")
            return b"".join(
                (
                    plan.key_prefix,
                    struct.pack("<II", ValueType.STRING.value, len(raw)),
                    raw,
                    self._project,
                )
            )
        packer = _PACK_INT64 if plan.key_type == ValueType.INT64 else _PACK_INT32
        size = 8 if plan.key_type == ValueType.INT64 else 4
        return plan.key_prefix + packer.pack(plan.key_type.value, size, int(value)) + self._project

    def read_pairs(self, pairs: Sequence[tuple[str, Any]]) -> list[dict[str, Any]]:
        """Read ``(view name, entity key value)`` pairs; one dict per pair, in order.

        Each dict maps feature name -> value (``None`` for null or missing) and
        ``"event_timestamp"`` -> the stored event time (``None`` if the entity is missing).

        Raises:
            ValueError: A view this reader was not built for.
            RedisCommandError: Redis answered with an error.
            ConnectionError: The connection failed or timed out.
        """
        return self.read_pairs_and_get(pairs, ())[0]

    def read_pairs_and_get(
        self, pairs: Sequence[tuple[str, Any]], keys: Sequence[bytes]
    ) -> tuple[list[dict[str, Any]], list[bytes | None]]:
        """:meth:`read_pairs` plus a plain ``GET`` of each of ``keys`` (a page view's session
        state, say), in the same round trip.

        Returns:
            The feature rows of ``pairs`` and the values of ``keys`` (None where missing).
        """
        unknown = {view for view, _ in pairs if view not in self._plans}
        if unknown:
            raise ValueError(f"reader has no views {sorted(unknown)}; it reads {list(self._plans)}")
        plans = [self._plans[view] for view, _ in pairs]
        pipe = self.client.pipeline(transaction=False)
        for plan, (_, value) in zip(plans, pairs, strict=True):
            pipe.execute_command("HMGET", self._key(plan, value), *plan.fields)
        for key in keys:
            pipe.execute_command("GET", key)
        try:
            replies = pipe.execute(raise_on_error=False)
        except (
            redis.exceptions.ConnectionError,
            redis.exceptions.TimeoutError,
            redis.exceptions.ClusterError,
        ) as error:
            raise ConnectionError(f"Redis read failed: {error}") from error
        finally:
            pipe.reset()
        errors = [str(r) for r in replies if isinstance(r, Exception)]
        if errors:
            raise RedisCommandError(f"HMGET/GET failed: {errors[0]}", errors)
        results: list[dict[str, Any]] = []
        for plan, reply in zip(plans, replies, strict=False):
            row = {
                name: decode_value(raw, vt)
                for name, vt, raw in zip(plan.names, plan.types, reply, strict=False)
            }
            row[self.TIMESTAMP_KEY] = decode_timestamp(reply[-1])
            results.append(row)
        return results, list(replies[len(plans) :])

    def read(self, entities: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """Read one entity per view: ``{view name: entity key value}`` -> ``{view name: row}``."""
        names = list(entities)
        rows = self.read_pairs([(name, entities[name]) for name in names])
        return dict(zip(names, rows, strict=True))
