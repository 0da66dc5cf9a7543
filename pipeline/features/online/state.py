"""What the online store holds, per feature view, compared with the offline side.

The registry only remembers what materialisation last *wrote*; a Redis restarted empty (or a
SQLite file deleted) keeps the registry saying "up to date". So each view's materialisation
also leaves a watermark in the online store itself, and before deciding "up to date" the
store is inspected:

* Redis: a hash ``fitrec:online_state:<project>`` (one field per view, a JSON value with the
  watermark, the rows written and when) and, for the rows, one pipelined ``HMGET _ts:<view>``
  per offline entity (Feast's layout): how many of the offline entities are stored.
* SQLite: a table ``fitrec_online_state`` in Feast's online database, and
  ``COUNT(DISTINCT entity_key)`` of the view's table.

:func:`compare` is the decision, kept pure: the view is complete when the store holds a
watermark and every offline entity; otherwise it says why, and materialisation rewrites the
view in full (the fast writer's dedup skips what is stored and not older).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from feast import FeatureStore, FeatureView, RepoConfig

STATE_KEY_PREFIX = "fitrec:online_state:"
STATE_TABLE = "fitrec_online_state"


@dataclass(frozen=True, slots=True)
class Watermark:
    """What the last completed materialisation of a view left in the online store."""

    end: datetime
    rows: int
    written_at: datetime

    def to_json(self) -> str:
        return json.dumps(
            {
                "end": self.end.isoformat(),
                "rows": self.rows,
                "written_at": self.written_at.isoformat(),
            }
        )

    @classmethod
    def from_json(cls, raw: str | bytes | None) -> Watermark | None:
        """The watermark in ``raw``, or None when absent or unreadable (treated as absent)."""
        if not raw:
            return None
        try:
            data = json.loads(raw)
            return cls(
                end=datetime.fromisoformat(data["end"]),
                rows=int(data["rows"]),
                written_at=datetime.fromisoformat(data["written_at"]),
            )
        except (ValueError, KeyError, TypeError, OverflowError):
            return None


@dataclass(frozen=True, slots=True)
class ViewState:
    """One view: the offline entities, how many the store holds, its watermark, the verdict."""

    view: str
    offline_rows: int
    online_rows: int
    watermark: Watermark | None
    reason: str | None  # None: complete

    @property
    def complete(self) -> bool:
        return self.reason is None


def compare(
    view: str,
    offline_rows: int,
    online_rows: int,
    watermark: Watermark | None,
    registry_end: datetime | None,
) -> ViewState:
    """The verdict for one view (pure: the unit tests drive it directly).

    Args:
        view: The view's name.
        offline_rows: Distinct entities on the offline side up to the registry's end.
        online_rows: How many of them the online store holds.
        watermark: The watermark found in the store (None: none).
        registry_end: The registry's ``most_recent_end_time`` (None: never materialised).

    Returns:
        A :class:`ViewState`; ``reason`` names what is missing, None when complete.
    """
    if offline_rows < 0 or online_rows < 0:
        raise ValueError("row counts cannot be negative")
    reason: str | None = None
    if registry_end is None:
        reason = "never materialised"
    elif watermark is None:
        if online_rows == 0:
            reason = "online store is empty (no watermark, no rows)"
        else:
            reason = "no watermark in the online store"
    elif online_rows < offline_rows:
        reason = f"online store holds {online_rows} of {offline_rows} entities"
    elif _utc(watermark.end) < _utc(registry_end):
        reason = (
            f"online watermark {_utc(watermark.end).isoformat()} is behind the registry's "
            f"{_utc(registry_end).isoformat()}"
        )
    return ViewState(view, offline_rows, min(online_rows, offline_rows), watermark, reason)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


# --- where the watermark lives ------------------------------------------------------------


def state_key(project: str) -> str:
    """The Redis hash of a project's watermarks (one key: one cluster slot)."""
    return STATE_KEY_PREFIX + project


def _redis_client(config: RepoConfig, socket_timeout: float = 30.0) -> Any:
    from pipeline.features.online.layout import online_config
    from pipeline.redis_url import feast_connection_target

    online = online_config(config)
    target = feast_connection_target(online.connection_string, online.redis_type == "redis_cluster")
    return target.client(socket_timeout=socket_timeout, retries=1)


def _sqlite_path(config: RepoConfig) -> Path:
    path = Path(str(config.online_store.path))
    if not path.is_absolute():
        path = Path(str(config.repo_path)) / path
    return path


def _is_redis(config: RepoConfig) -> bool:
    from feast.infra.online_stores.redis import RedisOnlineStoreConfig

    return isinstance(config.online_store, RedisOnlineStoreConfig)


def write_watermark(config: RepoConfig, view: str, mark: Watermark) -> None:
    """Record ``mark`` for ``view`` in the online store (after the view's rows are in)."""
    if _is_redis(config):
        client = _redis_client(config)
        try:
            client.hset(state_key(config.project), view, mark.to_json())
        finally:
            client.close()
        return
    with sqlite3.connect(_sqlite_path(config)) as db:
        db.execute(
            f"CREATE TABLE IF NOT EXISTS {STATE_TABLE} "
            "(project TEXT, view TEXT, state TEXT, PRIMARY KEY (project, view))"
        )
        db.execute(
            f"INSERT OR REPLACE INTO {STATE_TABLE} VALUES (?, ?, ?)",
            (config.project, view, mark.to_json()),
        )


def read_watermarks(config: RepoConfig) -> dict[str, Watermark]:
    """Every view's watermark found in the online store (raises if it is unreachable)."""
    if _is_redis(config):
        client = _redis_client(config)
        try:
            raw: dict[Any, Any] = client.hgetall(state_key(config.project))
        finally:
            client.close()
    else:
        path = _sqlite_path(config)
        if not path.exists():
            return {}
        with sqlite3.connect(path) as db:
            try:
                rows = db.execute(
                    f"SELECT view, state FROM {STATE_TABLE} WHERE project = ?", (config.project,)
                ).fetchall()
            except sqlite3.OperationalError:  # no such table: nothing recorded
                return {}
        raw = dict(rows)
    marks: dict[str, Watermark] = {}
    for name, value in raw.items():
        mark = Watermark.from_json(value)
        if mark is not None:
            marks[name.decode() if isinstance(name, bytes) else str(name)] = mark
    return marks


# --- counting what is stored --------------------------------------------------------------


def offline_entities(path: Path, join_key: str, timestamp: str, end: datetime | None) -> pl.Series:
    """Distinct entity keys of a feature Parquet file stamped before ``end`` (all if None)."""
    frame = pl.scan_parquet(path)
    if end is not None:
        dtype = frame.collect_schema()[timestamp]
        stamp = pl.col(timestamp)
        if isinstance(dtype, pl.Datetime) and dtype.time_zone is None:
            stamp = stamp.dt.replace_time_zone("UTC")
        frame = frame.filter(stamp < _utc(end))
    return frame.select(pl.col(join_key).unique()).collect().get_column(join_key)


def stored_entity_count(
    store: FeatureStore, view: FeatureView, keys: pl.Series, batch: int = 10_000
) -> int:
    """How many of ``keys`` the online store holds a row of ``view`` for."""
    if not len(keys):
        return 0
    if _is_redis(store.config):
        from pipeline.features.online.writer import RedisFeatureWriter

        with RedisFeatureWriter(store.config) as writer:
            present = 0
            for low in range(0, len(keys), batch):
                nanos = writer.stored_event_nanos(view, keys.slice(low, batch))
                present += int(np.count_nonzero(nanos))
            return present
    return _sqlite_rows(store.config, view)


def _sqlite_rows(config: RepoConfig, view: FeatureView) -> int:
    from feast.infra.online_stores.helpers import compute_table_id

    path = _sqlite_path(config)
    if not path.exists():
        return 0
    table = compute_table_id(
        config.project, view, config.registry.enable_online_feature_view_versioning
    )
    with sqlite3.connect(path) as db:
        try:
            (count,) = db.execute(
                f'SELECT COUNT(DISTINCT entity_key) FROM "{table}"'  # noqa: S608 - Feast's name
            ).fetchone()
        except sqlite3.OperationalError:  # the table is gone
            return 0
    return int(count)


def inspect_views(
    store: FeatureStore, views: Sequence[FeatureView], paths: dict[str, Path], timestamp: str
) -> dict[str, ViewState]:
    """The :class:`ViewState` of each view that has a feature file on the offline side."""
    from pipeline.features.online.layout import view_spec

    marks = read_watermarks(store.config)
    states: dict[str, ViewState] = {}
    for view in views:
        path = paths.get(view.name)
        if path is None or not path.exists():
            continue
        end = view.most_recent_end_time
        join_key = view_spec(view, store.config).join_key
        keys = offline_entities(path, join_key, timestamp, end)
        online = stored_entity_count(store, view, keys) if end is not None else 0
        states[view.name] = compare(view.name, len(keys), online, marks.get(view.name), end)
    return states
