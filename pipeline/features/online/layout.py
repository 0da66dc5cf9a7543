"""Which Redis hash fields a Feast feature view occupies, and which repositories the fast path
can serve.

A :class:`ViewSpec` is everything the writer and the reader need to know of one registered
feature view: its (versioned) name, single join key and its type, the features with their
value types, the 4-byte field hashes Feast uses for them (``mmh3("<view>:<feature>")``) and
the ``_ts:<view>`` field of the event time.
"""

from __future__ import annotations

from dataclasses import dataclass

from feast import FeatureStore, FeatureView, RepoConfig
from feast.infra.online_stores.helpers import _mmh3
from feast.infra.online_stores.redis import RedisOnlineStoreConfig, _versioned_fv_name
from feast.value_type import ValueType

EVENT_TIMESTAMP = "event_timestamp"
"""Name of the event-time column in frames given to the writer, and in rows the reader
returns."""

ENTITY_VALUE_TYPES = {ValueType.STRING, ValueType.INT64, ValueType.INT32}


@dataclass(frozen=True, slots=True)
class ViewSpec:
    """One registered feature view as the Redis layout sees it."""

    name: str
    fv_name: str
    join_key: str
    key_type: ValueType
    features: tuple[tuple[str, ValueType], ...]
    field_hashes: tuple[bytes, ...]
    ts_field: bytes


def online_config(config: RepoConfig) -> RedisOnlineStoreConfig:
    """The repository's Redis online store config; ``ValueError`` if it cannot be served."""
    online = config.online_store
    if not isinstance(online, RedisOnlineStoreConfig):
        kind = getattr(online, "type", type(online).__name__)
        raise ValueError(
            f"the online store of project {config.project!r} is {kind!r}, not Redis: "
            "the fast Redis path needs online_store type 'redis' (RedisOnlineStoreConfig)"
        )
    if config.entity_key_serialization_version != 3:
        raise ValueError(
            "the fast Redis path writes entity keys in serialization version 3, but the repo "
            f"uses version {config.entity_key_serialization_version}"
        )
    return online


def view_spec(view: FeatureView, config: RepoConfig) -> ViewSpec:
    """The layout of a registered view; ``ValueError`` for what the fast path cannot write."""
    join_keys = [key for key in view.join_keys if key != "__dummy_id"]
    if len(join_keys) != 1:
        raise ValueError(
            f"feature view {view.name!r} has join keys {join_keys}; "
            "the fast Redis path supports exactly one join key"
        )
    join_key = join_keys[0]
    columns = {column.name: column for column in view.entity_columns}
    if join_key not in columns:
        raise ValueError(
            f"feature view {view.name!r} does not know the type of join key {join_key!r}; "
            "pass the view as registered (store.get_feature_view), not the unapplied object"
        )
    key_type = columns[join_key].dtype.to_value_type()
    if key_type not in ENTITY_VALUE_TYPES:
        raise ValueError(
            f"join key {join_key!r} of {view.name!r} is {key_type.name}; "
            "only STRING, INT64 and INT32 entity keys are supported"
        )
    fv_name = _versioned_fv_name(view, config)
    features = tuple((f.name, f.dtype.to_value_type()) for f in view.features)
    return ViewSpec(
        name=view.name,
        fv_name=fv_name,
        join_key=join_key,
        key_type=key_type,
        features=features,
        field_hashes=tuple(_mmh3(f"{fv_name}:{name}") for name, _ in features),
        ts_field=f"_ts:{fv_name}".encode(),
    )


def registered_view(store: FeatureStore, view_name: str) -> FeatureView:
    """A batch or stream feature view by name, as registered."""
    try:
        return store.get_feature_view(view_name)
    except Exception:  # Feast raises a different not-found error per kind of view
        try:
            return store.get_stream_feature_view(view_name)
        except Exception as error:
            raise ValueError(
                f"no feature view {view_name!r} in project {store.project!r}"
            ) from error
