"""The fast writer: Polars frames into Feast's Redis online store, in bulk.

Feast's stock ``materialize`` builds one protobuf object per value and one redis-py command per
row, which caps it at a few thousand rows per second. :class:`RedisFeatureWriter` writes
*exactly* the same bytes (:mod:`pipeline.features.online.encoding`), thousands of rows per
pipelined batch over redis-py connections (:mod:`pipeline.features.online.connection`;
replies are counted in bulk by :mod:`pipeline.features.online.replies`): the
latest row per entity, Feast's rule of never overwriting a stored ``_ts`` that is newer or
equal, ``key_ttl_seconds``, and resumable chunks with a checkpoint file.

Single Redis and Redis Cluster (keys grouped by their node, as redis-py's cluster client maps
slots; a ``MOVED``/``ASK`` refreshes its slot map and the batch is sent again) are supported;
Sentinel is not.

Known differences from stock Feast, all deliberate:

* An Int64 column that contains nulls goes through float64 in Feast (pandas), which rounds
  values beyond 2**53; this module writes the exact integer.
* Among several rows of one entity with the same event (and created) time, Feast keeps an
  unspecified one; this module keeps the first in input order.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, cast

import hiredis
import numpy as np
import polars as pl
import pyarrow as pa
import redis.exceptions
from feast import FeatureView, RepoConfig
from google.protobuf.timestamp_pb2 import Timestamp
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from pipeline.features.online import replies
from pipeline.features.online.bytematrix import I64, payload_bytes
from pipeline.features.online.connection import NodeConnections
from pipeline.features.online.encoding import epoch_micros, hmget_ts_commands, hset_commands
from pipeline.features.online.keys import key_arrays
from pipeline.features.online.layout import (
    EVENT_TIMESTAMP,
    ViewSpec,
    online_config,
    view_spec,
)
from pipeline.redis_url import feast_connection_target

logger = logging.getLogger(__name__)

PIPELINE_ROWS = 10_000  # rows per pipelined batch (the checkpoint unit is ``chunk_rows``)

ChunkCallback = Callable[[int, int], None]
"""Called after each completed (checkpointed) chunk with (rows done, total rows)."""


_Inflight = tuple[Future[Any] | None, int | None, int, int]
"""A batch sent: its Redis future (None: nothing to send), the end of the chunk it completes
(None: mid-chunk), the rows sent and the rows in the batch."""


def batch_plan(start: int, total: int, chunk_rows: int) -> list[tuple[int, int, int | None]]:
    """Rows ``[low, high)`` of each pipelined batch from ``start`` on, with the end of the
    chunk (the unit of the checkpoint) where the batch completes one, else None: chunks go
    to Redis in batches of at most :data:`PIPELINE_ROWS`."""
    batch_rows = min(chunk_rows, PIPELINE_ROWS)
    batches: list[tuple[int, int, int | None]] = []
    for chunk_low in range(start, total, chunk_rows):
        chunk_high = min(chunk_low + chunk_rows, total)
        for low in range(chunk_low, chunk_high, batch_rows):
            high = min(low + batch_rows, chunk_high)
            batches.append((low, high, chunk_high if high == chunk_high else None))
    return batches


def _newer_only(
    stored: I64, chunk: pl.DataFrame, raw: pa.LargeBinaryArray, commands: pa.LargeBinaryArray
) -> tuple[pa.LargeBinaryArray, pa.LargeBinaryArray]:
    """The keys and commands of the rows newer than what the store holds (``stored``, in
    nanoseconds, 0 where it holds none)."""
    new = epoch_micros(chunk.get_column(EVENT_TIMESTAMP)) * 1000
    # Feast skips a row only if a stored time exists (non-zero) and the new one is older or
    # equal.
    keep = ~((stored != 0) & (new <= stored))
    if keep.all():
        return raw, commands
    index = pa.array(np.flatnonzero(keep))
    return (
        cast(pa.LargeBinaryArray, raw.take(index)),
        cast(pa.LargeBinaryArray, commands.take(index)),
    )


class RedisCommandError(RuntimeError):
    """Redis answered some pipelined commands with errors; ``errors`` holds the messages."""

    def __init__(self, message: str, errors: Sequence[str]) -> None:
        super().__init__(message)
        self.errors = list(errors)


class RedisWriteError(RedisCommandError):
    """Redis rejected some writes (e.g. OOM); the chunks before them are complete."""


class ClusterMoved(RedisWriteError):
    """The cluster answered ``MOVED``/``ASK``/``TRYAGAIN``: its slots moved; send again."""


@dataclass(slots=True)
class WriteStats:
    """What the last :meth:`RedisFeatureWriter.write` did."""

    rows_in: int = 0
    entities: int = 0
    resumed_from: int = 0
    skipped_not_newer: int = 0
    written: int = 0
    chunks: int = 0


def latest_per_entity(
    frame: pl.DataFrame, spec: ViewSpec, created_timestamp_column: str | None
) -> pl.DataFrame:
    missing = [
        name
        for name in [spec.join_key, EVENT_TIMESTAMP, *(f for f, _ in spec.features)]
        if name not in frame.columns
    ]
    if missing:
        raise ValueError(f"frame for view {spec.name!r} lacks columns {missing}")
    if not isinstance(frame.schema[EVENT_TIMESTAMP], pl.Datetime):
        raise TypeError(f"{EVENT_TIMESTAMP!r} must be a Datetime column")
    if frame.get_column(EVENT_TIMESTAMP).null_count():
        raise ValueError(f"frame for view {spec.name!r} has null {EVENT_TIMESTAMP!r} values")
    columns = [spec.join_key, EVENT_TIMESTAMP, *(f for f, _ in spec.features)]
    if created_timestamp_column and created_timestamp_column in frame.columns:
        columns.append(created_timestamp_column)
    # A stream feature view lists its join key among its features too (Feast infers it from
    # the batch source); it is written as a feature like Feast does, but selected once.
    frame = frame.select(list(dict.fromkeys(columns)))
    if frame.get_column(spec.join_key).n_unique() == frame.height:
        return frame
    order = [EVENT_TIMESTAMP]
    if created_timestamp_column and created_timestamp_column in frame.columns:
        order.append(created_timestamp_column)
    # Feast sorts by (event, created) timestamp descending and keeps the first row per key.
    return frame.sort(order, descending=True, maintain_order=True).unique(
        subset=[spec.join_key], keep="first", maintain_order=True
    )


def input_fingerprint(frame: pl.DataFrame, spec: ViewSpec, config: RepoConfig, dedup: bool) -> str:
    digest = hashlib.sha256()
    header = {
        "project": config.project,
        "connection": getattr(config.online_store, "connection_string", ""),
        "view": spec.fv_name,
        "join_key": spec.join_key,
        "features": [[name, vt.value] for name, vt in spec.features],
        "dedup": dedup,
        "rows": frame.height,
        "polars": pl.__version__,
    }
    digest.update(json.dumps(header, sort_keys=True).encode())
    if frame.height:
        hashes = frame.hash_rows(seed=11)
        digest.update(hashes.to_numpy().tobytes())
    return digest.hexdigest()


class RedisFeatureWriter:
    """Writes feature rows into Feast's Redis online store layout, pipelined in bulk.

    Args:
        config: A Feast ``RepoConfig`` whose ``online_store`` is a ``RedisOnlineStoreConfig``
            (``redis_type`` ``redis`` or ``redis_cluster``).
        socket_timeout: Seconds to wait on Redis before failing with ``ConnectionError``;
            default: the connection string's ``socket_timeout``, else 60 (never forever: a
            stalled server must not hang a materialisation).

    Raises:
        ValueError: The online store is not Redis, is Sentinel, or the entity key
            serialisation version is not 3.
    """

    def __init__(self, config: RepoConfig, *, socket_timeout: float | None = None) -> None:
        self.config = config
        self.online = online_config(config)
        self._project = config.project.encode("utf8")
        self._ttl = self.online.key_ttl_seconds or None
        if self.online.redis_type == "redis_sentinel":
            raise ValueError("redis_type redis_sentinel is not supported by the fast Redis path")
        target = feast_connection_target(
            self.online.connection_string, self.online.redis_type == "redis_cluster"
        )
        self.target = target
        # A stalled server must fail the write (the flow retries, the checkpoint resumes),
        # never hang it; connection errors are not retried here for the same reason.
        timeout = socket_timeout or target.options.get("socket_timeout") or 60.0
        client = target.client(
            retries=0,
            socket_timeout=timeout,
            socket_connect_timeout=target.options.get("socket_connect_timeout", timeout),
        )
        self._nodes = NodeConnections(client)
        # Resharding: each batch is idempotent, so it is sent again after the slot map is
        # reloaded, with backoff (TRYAGAIN during a migration clears in milliseconds).
        self._moved_retry = Retry(
            ExponentialBackoff(cap=1.0, base=0.02), 3, supported_errors=(ClusterMoved,)
        )
        self.last_stats = WriteStats()

    def __enter__(self) -> RedisFeatureWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close all connections (they reopen on the next write)."""
        self._nodes.release(broken=True)
        self._nodes.client.close()

    # -- public -----------------------------------------------------------------------------

    def write(
        self,
        view: FeatureView,
        frame: pl.DataFrame,
        *,
        dedup: bool = True,
        checkpoint: Path | None = None,
        chunk_rows: int = 50_000,
        created_timestamp_column: str | None = None,
        on_chunk: ChunkCallback | None = None,
    ) -> int:
        """Write the latest row per entity of ``frame`` for ``view``.

        Args:
            view: The feature view as registered (its entity columns give the key type).
            frame: The join key column, the view's feature columns and ``event_timestamp``
                (a Datetime; naive means UTC). Extra columns are ignored.
            dedup: Read the stored ``_ts`` first (pipelined HMGET) and skip rows whose event
                time is not newer than it, exactly as Feast's ``online_write_batch`` does.
            checkpoint: JSON file (fingerprint of the input + rows done) rewritten after every
                completed chunk; a re-run with the same input resumes after the last completed
                chunk, other input starts over. Removed on success.
            chunk_rows: Rows per checkpointed chunk. Each chunk goes to Redis in pipelined
                batches of at most 10,000 rows, encoded while Redis executes the previous one.
            created_timestamp_column: Tie-breaker when an entity has several rows with the same
                event time (as Feast's created timestamp); without one, ties keep the first row
                in input order (Feast's choice among ties is unspecified).
            on_chunk: Called with (rows done, total rows) after each completed chunk, once
                its checkpoint is on disk (progress reporting).

        Returns:
            Number of rows (entities) written in this call.

        Raises:
            ValueError: A column is missing or the view cannot be written (join keys).
            RedisWriteError: Redis rejected commands (e.g. OOM); completed chunks are kept in
                the checkpoint.
            ConnectionError: The connection failed.
        """
        if chunk_rows <= 0:
            raise ValueError("chunk_rows must be positive")
        spec = view_spec(view, self.config)
        rows_in = frame.height
        prepared = latest_per_entity(frame, spec, created_timestamp_column)
        total = prepared.height
        stats = WriteStats(rows_in=rows_in, entities=total)
        self.last_stats = stats
        fingerprint = input_fingerprint(prepared, spec, self.config, dedup) if checkpoint else None
        start = self._resume_point(checkpoint, fingerprint, total)
        stats.resumed_from = start
        if start:
            logger.info("resuming %s at row %d of %d from %s", spec.name, start, total, checkpoint)

        def finish(inflight: _Inflight) -> None:
            future, chunk_end, sent, size = inflight
            if future is not None:
                future.result()  # raises what Redis rejected
            stats.written += sent
            stats.skipped_not_newer += size - sent
            if chunk_end is not None:
                stats.chunks += 1
                if checkpoint is not None and fingerprint is not None:
                    save_checkpoint(checkpoint, fingerprint, chunk_end, total)
                if on_chunk is not None:
                    on_chunk(chunk_end, total)

        self._send(spec, prepared, batch_plan(start, total, chunk_rows), dedup, finish)
        if checkpoint is not None:
            checkpoint.unlink(missing_ok=True)
        return stats.written

    def _send(
        self,
        spec: ViewSpec,
        prepared: pl.DataFrame,
        batches: Sequence[tuple[int, int, int | None]],
        dedup: bool,
        finish: Callable[[_Inflight], None],
    ) -> None:
        """Send ``batches`` of ``prepared`` to Redis, pipelined, calling ``finish`` on each
        batch once the next one is encoded (and on the last at the end).

        One I/O thread talks to Redis while this thread encodes the next batch, so Redis
        executes batch k while batch k+1 is being serialised. Commands still reach Redis in
        order (HSET k, HMGET k+1, HSET k+1, ...), and a chunk is done only once the replies of
        its last batch are read.
        """
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="redis-write") as io:
            inflight: _Inflight | None = None
            for low, high, chunk_end in batches:
                chunk = prepared.slice(low, high - low)
                raw, bulk = key_arrays(spec, chunk.get_column(spec.join_key), self._project)
                lookup = io.submit(self._stored_nanos, spec, raw, bulk) if dedup else None
                commands = hset_commands(spec, chunk, bulk, self._ttl)
                if inflight is not None:
                    finish(inflight)
                    inflight = None
                if lookup is not None:
                    raw, commands = _newer_only(lookup.result(), chunk, raw, commands)
                future = None
                if len(commands):
                    future = io.submit(
                        self._exchange, raw, commands, "count", 2 if self._ttl else 1
                    )
                inflight = (future, chunk_end, len(commands), chunk.height)
            if inflight is not None:
                finish(inflight)

    def stored_event_nanos(self, view: FeatureView, keys: pl.Series) -> I64:
        """The stored ``_ts`` of ``view`` for each entity key in ``keys``, in nanoseconds
        since the epoch (0 where the store holds no row): one pipelined HMGET per key."""
        spec = view_spec(view, self.config)
        raw, bulk = key_arrays(spec, keys, self._project)
        return self._stored_nanos(spec, raw, bulk)

    # -- internals --------------------------------------------------------------------------

    @staticmethod
    def _resume_point(checkpoint: Path | None, fingerprint: str | None, total: int) -> int:
        if checkpoint is None or not checkpoint.exists():
            return 0
        try:
            state = json.loads(checkpoint.read_text())
        except (OSError, ValueError):
            logger.warning("ignoring unreadable checkpoint %s", checkpoint)
            return 0
        if state.get("fingerprint") != fingerprint or state.get("total_rows") != total:
            logger.info("checkpoint %s is for other input; starting over", checkpoint)
            return 0
        return max(0, min(int(state.get("rows_done", 0)), total))

    def _stored_nanos(
        self, spec: ViewSpec, raw: pa.LargeBinaryArray, bulk: pa.LargeBinaryArray
    ) -> I64:
        """Stored ``_ts`` of every key in nanoseconds (0 when absent), one HMGET per key."""
        n = len(raw)
        values = self._exchange(raw, hmget_ts_commands(spec, bulk), "first_field")
        nanos = np.zeros(n, dtype=np.int64)
        if values is None:
            return nanos
        stamp = Timestamp()
        for i, value in enumerate(values):
            if value:
                stamp.ParseFromString(value)
                nanos[i] = stamp.seconds * 1_000_000_000 + stamp.nanos
        return nanos

    def _exchange(
        self,
        raw: pa.LargeBinaryArray,
        commands: pa.LargeBinaryArray,
        mode: Literal["count", "first_field"],
        per_row: int = 1,
    ) -> list[Any] | None:
        """Send one command group per row to the node owning its key; collect the replies.

        ``count`` only checks the replies for errors; ``first_field`` returns the first
        element of every (HMGET) array reply in row order, or ``None`` when every reply is
        nil. Every command sent here is idempotent, so a batch the cluster redirected is
        sent again after the slot map is reloaded.
        """
        try:
            return cast(
                "list[Any] | None",
                self._moved_retry.call_with_retry(
                    lambda: self._exchange_once(raw, commands, mode, per_row),
                    lambda error: self._nodes.refresh(),
                ),
            )
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as error:
            raise ConnectionError(f"Redis {self.target.redacted()}: {error}") from error

    def _exchange_once(
        self,
        raw: pa.LargeBinaryArray,
        commands: pa.LargeBinaryArray,
        mode: Literal["count", "first_field"],
        per_row: int,
    ) -> list[Any] | None:
        nodes = self._nodes
        n = len(commands)
        groups: list[tuple[str, np.ndarray | None, pa.LargeBinaryArray]] = []
        if not nodes.cluster:
            groups.append(("single", None, commands))
        else:
            owners = np.array(nodes.node_of(raw.to_pylist()), dtype=object)
            for name in dict.fromkeys(owners.tolist()):
                rows = np.flatnonzero(owners == name)
                groups.append(
                    (name, rows, cast(pa.LargeBinaryArray, commands.take(pa.array(rows))))
                )
        errors: list[str] = []
        values: list[Any] | None = None
        with nodes.session():
            # Every node gets its batch before any reply is read: the nodes work in parallel.
            for name, _, subset in groups:
                nodes.connection(name).send_packed_command(
                    [payload_bytes(subset)], check_health=False
                )
            for name, group_rows, subset in groups:
                connection = nodes.connection(name)
                count = len(subset) * per_row
                if mode == "count":
                    errors += replies.count_lines(connection, count)
                    continue
                got = replies.first_fields(connection, count)
                if got is None:
                    continue
                if values is None:
                    values = [None] * n
                positions = range(n) if group_rows is None else group_rows.tolist()
                for row, reply in zip(positions, got, strict=True):
                    if isinstance(reply, hiredis.ReplyError):
                        errors.append(str(reply))
                    else:
                        values[row] = reply
        if errors:
            moved = nodes.cluster and any(e.startswith(_REDIRECTS) for e in errors)
            raise (ClusterMoved if moved else RedisWriteError)(
                f"Redis rejected {len(errors)} of {n * per_row} commands; first: {errors[0]}",
                errors,
            )
        return values


# Error replies that mean "this slot lives elsewhere now" (resharding, failover).
_REDIRECTS = ("MOVED", "ASK", "TRYAGAIN")


def save_checkpoint(path: Path, fingerprint: str, rows_done: int, total: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "fingerprint": fingerprint,
        "rows_done": rows_done,
        "total_rows": total,
        "updated": datetime.now(UTC).isoformat(),
    }
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(json.dumps(state))
    os.replace(temporary, path)
