"""Fast materialisation into Feast's Redis online store, and a fast reader for serving.

Feast's stock ``materialize`` builds one protobuf object per value and one redis-py command per
row, which caps it at a few thousand rows per second. This module writes *exactly* the same
bytes, in bulk:

* Redis key: ``serialize_entity_key(entity_key, v3) + project`` (see
  :mod:`feast.infra.key_encoding_utils`), a hash with
* ``_ts:<view>`` -> serialised ``google.protobuf.Timestamp`` of the event time, and
* ``_mmh3("<view>:<feature>")`` (4 bytes) -> serialised ``feast.types.Value``; a null (or NaN)
  scalar is an empty ``Value`` (zero bytes), a null ``UnixTimestamp`` is
  ``unix_timestamp_val = NaT`` as Feast writes it.

Whole columns are serialised at once with NumPy byte matrices (fixed-layout rows whose unused
bytes are masked out and compacted in one boolean take) and Arrow binary arrays for the
variable-length parts; RESP command buffers for thousands of rows are assembled the same way
and sent over a raw socket with pipelining. Replies are counted, not parsed one by one.

:class:`RedisFeatureWriter` writes a Polars frame (latest row per entity, Feast's rule of never
overwriting a stored ``_ts`` that is newer or equal, ``key_ttl_seconds``, resumable chunks),
:func:`materialize_view` is a drop-in for ``FeatureStore.materialize`` of one view over a
Parquet ``FileSource`` (it records the interval in the registry like Feast does), and
:class:`RedisFeatureReader` reads several (view, entity) pairs of one request in a single
pipelined round trip and returns what ``get_online_features(...).to_dict()`` returns.

Single Redis and Redis Cluster (keys grouped by hash slot and sent to the owning node) are
supported; Sentinel is not.

Known differences from stock Feast, all deliberate:

* An Int64 column that contains nulls goes through float64 in Feast (pandas), which rounds
  values beyond 2**53; this module writes the exact integer.
* Among several rows of one entity with the same event (and created) time, Feast keeps an
  unspecified one; this module keeps the first in input order.
* :class:`RedisFeatureReader` reports a missing entity's event time as ``None`` where
  ``to_dict(include_event_timestamps=True)`` reports ``0``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import socket
import ssl
import struct
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, Protocol, cast

import numpy as np
import numpy.typing as npt
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from feast import FeatureStore, FeatureView, FileSource, RepoConfig
from feast.infra.online_stores.helpers import _mmh3
from feast.infra.online_stores.redis import (
    RedisOnlineStore,
    RedisOnlineStoreConfig,
    RedisType,
    _versioned_fv_name,
)
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.type_map import (
    NULL_TIMESTAMP_INT_VALUE,
    feast_value_type_to_python_type,
    python_values_to_proto_values,
)
from feast.value_type import ValueType
from google.protobuf.timestamp_pb2 import Timestamp
from redis.crc import key_slot

hiredis: Any
try:  # the C RESP parser that redis-py uses when installed; a pure-Python one otherwise
    import hiredis
except ImportError:  # pragma: no cover - exercised only without hiredis
    hiredis = None

__all__ = [
    "EVENT_TIMESTAMP",
    "RedisFeatureReader",
    "RedisFeatureWriter",
    "RedisCommandError",
    "RedisWriteError",
    "WriteStats",
    "key_slots",
    "materialize_view",
    "read_batch_source",
    "redis_keys",
    "serialize_entity_keys",
    "serialize_timestamps",
    "serialize_values",
]

logger = logging.getLogger(__name__)

EVENT_TIMESTAMP = "event_timestamp"
"""Name of the event-time column in frames given to :meth:`RedisFeatureWriter.write`."""

U8 = npt.NDArray[np.uint8]
I64 = npt.NDArray[np.int64]
Mask = npt.NDArray[np.bool_]

_CRLF = b"\r\n"
_NIL_ARRAY_1 = b"*1\r\n$-1\r\n"  # HMGET of one field that is not there
_EMPTY = pa.scalar(b"", pa.large_binary())
_NULL_TS = int(NULL_TIMESTAMP_INT_VALUE)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CLUSTER_SLOTS = 16384

# Protobuf tags (field number << 3 | wire type) of feast.types.Value, checked against
# Value.DESCRIPTOR in the tests.
_TAG_STRING = 0x12  # 2: string_val, length-delimited
_TAG_INT32 = 0x18  # 3: int32_val, varint
_TAG_INT64 = 0x20  # 4: int64_val, varint
_TAG_DOUBLE = 0x29  # 5: double_val, 64-bit
_TAG_FLOAT = 0x35  # 6: float_val, 32-bit
_TAG_BOOL = 0x38  # 7: bool_val, varint
_TAG_UNIX_TS = 0x40  # 8: unix_timestamp_val, varint
_TAG_STRING_LIST = b"\x62"  # 12: string_list_val, length-delimited
_TAG_FLOAT_LIST = b"\x82\x01"  # 16: float_list_val, length-delimited (two-byte tag)
_TAG_LIST_ITEMS = 0x0A  # StringList.val / FloatList.val (field 1, length-delimited / packed)
_TAG_TS_SECONDS = 0x08  # google.protobuf.Timestamp.seconds
_TAG_TS_NANOS = 0x10  # google.protobuf.Timestamp.nanos

_PIPELINE_ROWS = 10_000  # rows per pipelined batch (the checkpoint unit is ``chunk_rows``)

_ENTITY_VALUE_TYPES = {ValueType.STRING, ValueType.INT64, ValueType.INT32}


# --------------------------------------------------------------------------------------------
# Vectorised byte building
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Short:
    """Sparse cells that hold fewer bytes: from ``offset`` in the field, only ``keep``."""

    rows: npt.NDArray[np.intp]
    fields: npt.NDArray[np.intp]  # which field of the piece, per cell
    offset: int
    keep: bytes


@dataclass(slots=True)
class _Mat:
    """A fixed-width slot per row (``fields`` equal sub-slots): template, writes, holes.

    Every row starts as ``template``. Each ``(offset, values)`` in ``writes`` overwrites bytes
    from ``offset``: ``values`` is ``(n, k)``, or ``(n, fields, k)`` written at ``offset`` in
    every field. ``mask`` (dense) or ``short`` (sparse cells) drops unused bytes, which the
    final compaction removes.
    """

    template: U8  # (w,), w = fields * field width
    lengths: I64 | int  # bytes used per row
    writes: tuple[tuple[int, U8], ...] = ()
    mask: Mask | None = None  # (n, w)
    short: _Short | None = None
    fields: int = 1


@dataclass(slots=True)
class _Var:
    """Variable-length bytes per row (an Arrow array without nulls)."""

    array: pa.LargeBinaryArray


_Piece = _Mat | _Var


@dataclass(slots=True)
class _Payload:
    """The pieces of one serialised value per row, and its length per row."""

    pieces: list[_Piece]
    lengths: I64


def _const(data: bytes) -> _Mat:
    return _Mat(np.frombuffer(data, dtype=np.uint8), len(data))


def _dense(data: U8, mask: Mask | None, lengths: I64 | int) -> _Mat:
    return _Mat(np.zeros(data.shape[1], dtype=np.uint8), lengths, ((0, data),), mask)


def _binary_from(offsets: I64, data: npt.NDArray[Any], n: int) -> pa.LargeBinaryArray:
    return cast(
        pa.LargeBinaryArray,
        pa.LargeBinaryArray.from_buffers(
            pa.large_binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)]
        ),
    )


def _offsets(lengths: I64) -> I64:
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets


def _flatten(group: Sequence[_Mat], n: int) -> pa.LargeBinaryArray:
    """Concatenate matrix pieces row by row into one binary array (one value per row)."""
    template = np.concatenate([piece.template for piece in group])
    width = len(template)
    out = np.empty((n, width), dtype=np.uint8)
    out[:] = template
    masked = any(
        piece.mask is not None or (piece.short is not None and len(piece.short.rows))
        for piece in group
    )
    mask = np.ones((n, width), dtype=np.bool_) if masked else None
    lengths = np.zeros(n, dtype=np.int64)
    constant = 0
    col = 0
    for piece in group:
        w = len(piece.template)
        stride = w // piece.fields
        for offset, values in piece.writes:
            if values.ndim == 3:  # one value per field: a strided view of every field
                cells = np.ndarray(
                    (n, piece.fields, stride), np.uint8, out, col, (width, stride, 1)
                )
                cells[:, :, offset : offset + values.shape[2]] = values
            else:
                out[:, col + offset : col + offset + values.shape[1]] = values
        if piece.mask is not None and mask is not None:
            mask[:, col : col + w] = piece.mask
        short = piece.short
        if short is not None and len(short.rows) and mask is not None:
            start = col + short.fields * stride + short.offset
            rows = short.rows[:, None]
            if short.keep:
                kept = start[:, None] + np.arange(len(short.keep))
                out[rows, kept] = np.frombuffer(short.keep, dtype=np.uint8)
            dropped = np.arange(stride - short.offset - len(short.keep))
            mask[rows, (start + len(short.keep))[:, None] + dropped] = False
        if isinstance(piece.lengths, int):
            constant += piece.lengths
        else:
            lengths += piece.lengths
        col += w
    lengths += constant
    flat = out.reshape(-1) if mask is None else out[mask]
    offsets = _offsets(lengths)
    if len(flat) != offsets[-1]:  # a corrupt RESP stream would stall Redis: fail here instead
        raise AssertionError(f"encoded {len(flat)} bytes, expected {offsets[-1]}")
    return _binary_from(offsets, flat, n)


def _assemble(pieces: Sequence[_Piece], n: int) -> pa.LargeBinaryArray:
    """Concatenate pieces row by row: consecutive matrices in NumPy, the rest in Arrow."""
    parts: list[pa.LargeBinaryArray] = []
    group: list[_Mat] = []
    for piece in pieces:
        if isinstance(piece, _Mat):
            group.append(piece)
            continue
        if group:
            parts.append(_flatten(group, n))
            group = []
        parts.append(piece.array)
    if group:
        parts.append(_flatten(group, n))
    if not parts:
        return _binary_from(np.zeros(n + 1, dtype=np.int64), np.zeros(0, np.uint8), n)
    if len(parts) == 1:
        return parts[0]
    return cast(pa.LargeBinaryArray, pc.binary_join_element_wise(*parts, _EMPTY))


def _payload_bytes(array: pa.LargeBinaryArray) -> memoryview:
    """The contiguous data bytes of a (possibly sliced) large binary array."""
    n = len(array)
    buffers = array.buffers()
    offsets = np.frombuffer(buffers[1], dtype=np.int64, count=n + 1, offset=array.offset * 8)
    if buffers[2] is None:
        return memoryview(b"")
    return memoryview(buffers[2])[int(offsets[0]) : int(offsets[-1])]


def _row_lengths(array: pa.LargeBinaryArray) -> I64:
    n = len(array)
    offsets = np.frombuffer(
        array.buffers()[1], dtype=np.int64, count=n + 1, offset=array.offset * 8
    )
    return np.diff(offsets)


_VARINT_SHIFTS = np.arange(0, 70, 7, dtype=np.uint64)
_VARINT_LIMITS = np.array([1 << (7 * k) for k in range(1, 10)], dtype=np.uint64)
_VARINT_COLS = np.arange(10)


def _varint(values: npt.NDArray[Any]) -> tuple[U8, Mask, I64]:
    """Protobuf varints of int64 values (negatives as 10-byte two's complement)."""
    v = np.ascontiguousarray(values, dtype=np.int64).view(np.uint64)
    nbytes = 1 + (v[:, None] >= _VARINT_LIMITS[None, :]).sum(axis=1)
    data = ((v[:, None] >> _VARINT_SHIFTS[None, :]) & np.uint64(0x7F)).astype(np.uint8)
    data |= np.where(_VARINT_COLS[None, :] < (nbytes - 1)[:, None], 0x80, 0).astype(np.uint8)
    mask = _VARINT_COLS[None, :] < nbytes[:, None]
    return data, mask, nbytes.astype(np.int64)


def _decimal(values: I64) -> _Mat:
    """ASCII decimal digits of non-negative integers (right-aligned, leading bytes masked)."""
    n = len(values)
    if n == 0:
        return _const(b"")
    low, high = int(values.min()), int(values.max())
    if low == high:
        return _const(str(low).encode())
    width = len(str(high))
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    digits = ((values[:, None] // powers[None, :]) % 10 + 48).astype(np.uint8)
    ndigits = 1 + (values[:, None] >= powers[None, :-1]).sum(axis=1) if width > 1 else None
    if ndigits is None:
        return _dense(digits, None, 1)
    mask = np.arange(width)[None, :] >= (width - ndigits)[:, None]
    return _dense(digits, mask, ndigits.astype(np.int64))


def _bulk(pieces: Sequence[_Piece], lengths: I64) -> list[_Piece]:
    """RESP bulk string around a payload: ``$<len>\\r\\n<payload>\\r\\n``."""
    return [_const(b"$"), _decimal(lengths), _const(_CRLF), *pieces, _const(_CRLF)]


def _header_matrix(
    tag: bytes, length_values: npt.NDArray[Any], present: Mask
) -> tuple[_Mat, I64, I64]:
    """``tag + varint(length)`` per row (masked out where not present).

    Returns the matrix piece, the varint sizes and the header length per row (0 if absent).
    """
    data, vmask, nbytes = _varint(length_values)
    n = len(length_values)
    t = len(tag)
    out = np.empty((n, t + 10), dtype=np.uint8)
    out[:, :t] = np.frombuffer(tag, dtype=np.uint8)
    out[:, t:] = data
    mask = np.empty((n, t + 10), dtype=np.bool_)
    mask[:, :t] = present[:, None]
    mask[:, t:] = vmask & present[:, None]
    lengths = np.where(present, t + nbytes, 0).astype(np.int64)
    return _dense(out, mask, lengths), nbytes, lengths


# --------------------------------------------------------------------------------------------
# Column serialisation (feast.types.Value, Timestamp, entity keys)
# --------------------------------------------------------------------------------------------


def _arrow(series: pl.Series) -> pa.Array:
    array = series.rechunk().to_arrow()
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    return array


def _to_binary(array: pa.Array) -> pa.LargeBinaryArray:
    return cast(pa.LargeBinaryArray, pc.cast(array, pa.large_binary()))


def _fixed(tag: int, raw: U8, null: Mask, *, framed: bool) -> _Mat:
    """A fixed-size scalar (tag + k bytes); null rows hold an empty Value.

    Framed, the slot is the whole RESP bulk string: ``$<k+1>\\r\\n<tag><bytes>\\r\\n``, or
    ``$0\\r\\n\\r\\n`` for nulls.
    """
    k = raw.shape[1]
    head = b"$%d\r\n" % (k + 1) if framed else b""
    tail = _CRLF if framed else b""
    template = np.frombuffer(head + bytes([tag]) + bytes(k) + tail, dtype=np.uint8)
    width = len(template)
    null_rows = np.flatnonzero(null)
    if not len(null_rows):
        return _Mat(template, width, ((len(head) + 1, raw),))
    empty = b"$0\r\n\r\n" if framed else b""
    lengths = np.where(null, len(empty), width).astype(np.int64)
    short = _Short(null_rows, np.zeros(len(null_rows), np.intp), 0, empty)
    return _Mat(template, lengths, ((len(head) + 1, raw),), None, short)


def _fixed_fields(tag: int, raw: U8, null: Mask, hashes: Sequence[bytes]) -> _Mat:
    """Several fixed-size features at once: ``$4 <hash> $<k+1> <tag><bytes>`` per field.

    ``raw`` is ``(n, fields, k)``; a null cell holds an empty bulk string (empty Value).
    """
    n, fields, k = raw.shape
    value = b"$%d\r\n" % (k + 1) + bytes([tag]) + bytes(k) + _CRLF
    template = np.frombuffer(
        b"".join(b"$%d\r\n%s\r\n" % (len(h), h) + value for h in hashes), dtype=np.uint8
    )
    header = len(hashes[0]) + len(b"$%d\r\n\r\n" % len(hashes[0]))
    at = header + len(b"$%d\r\n" % (k + 1)) + 1
    rows, cells = np.nonzero(null)
    if not len(rows):
        return _Mat(template, len(template), ((at, raw),), fields=fields)
    empty = b"$0\r\n\r\n"
    lengths = len(template) - null.sum(axis=1).astype(np.int64) * (len(value) - len(empty))
    short = _Short(rows, cells, header, empty)
    return _Mat(template, lengths, ((at, raw),), None, short, fields)


def _varint_payload(tag: int, values: npt.NDArray[Any], null: Mask) -> _Payload:
    data, vmask, nbytes = _varint(values)
    n = len(values)
    present = ~null
    out = np.empty((n, 11), dtype=np.uint8)
    out[:, 0] = tag
    out[:, 1:] = data
    mask = np.empty((n, 11), dtype=np.bool_)
    mask[:, 0] = present
    mask[:, 1:] = vmask & present[:, None]
    lengths = np.where(present, 1 + nbytes, 0).astype(np.int64)
    return _Payload([_dense(out, mask, lengths)], lengths)


def _float_values(series: pl.Series, dtype: type[np.floating[Any]]) -> tuple[U8, Mask]:
    target = pl.Float32 if dtype is np.float32 else pl.Float64
    values = np.ascontiguousarray(series.cast(target).to_numpy(), dtype=dtype)
    null = np.isnan(values)  # nulls come out as NaN; Feast stores NaN as null too
    return values.view(np.uint8).reshape(len(values), -1), null


def _int_values(series: pl.Series, dtype: pl.DataType | type[pl.DataType]) -> tuple[I64, Mask]:
    null = series.is_null().to_numpy()
    values = series.cast(dtype).fill_null(0).cast(pl.Int64).to_numpy()
    return np.ascontiguousarray(values, dtype=np.int64), np.ascontiguousarray(null, dtype=bool)


def _epoch_micros(series: pl.Series) -> I64:
    """Microseconds since the epoch, floored (Feast truncates datetimes to microseconds)."""
    dtype = series.dtype
    if not isinstance(dtype, pl.Datetime):
        raise TypeError(f"column {series.name!r} must be a Datetime, not {dtype}")
    physical = series.to_physical().fill_null(0).to_numpy().astype(np.int64, copy=False)
    unit = dtype.time_unit
    if unit == "ns":
        return np.floor_divide(physical, 1000)
    if unit == "ms":
        return physical * 1000
    return physical


def _unix_timestamp_payload(series: pl.Series) -> _Payload:
    null = np.ascontiguousarray(series.is_null().to_numpy(), dtype=bool)
    if isinstance(series.dtype, pl.Datetime):
        seconds = np.floor_divide(_epoch_micros(series), 1_000_000)
    else:
        seconds = series.cast(pl.Int64).fill_null(0).to_numpy().astype(np.int64)
    # Feast writes a null UnixTimestamp as unix_timestamp_val = NaT (not as an empty Value).
    seconds = np.where(null, _NULL_TS, seconds)
    return _varint_payload(_TAG_UNIX_TS, seconds, np.zeros(len(seconds), dtype=bool))


def _string_payload(series: pl.Series) -> _Payload:
    array = _to_binary(_arrow(series.cast(pl.String)))
    null = np.asarray(array.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    lengths = pc.fill_null(pc.binary_length(array), 0).to_numpy().astype(np.int64)
    header, _, header_len = _header_matrix(bytes([_TAG_STRING]), lengths, ~null)
    values = cast(pa.LargeBinaryArray, pc.fill_null(array, _EMPTY))
    return _Payload([header, _Var(values)], header_len + np.where(null, 0, lengths))


def _list_rows(series: pl.Series) -> tuple[pa.Array, Mask, I64]:
    array = _arrow(series)
    null = np.asarray(array.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    counts = pc.fill_null(pc.list_value_length(array), 0).to_numpy().astype(np.int64)
    return pc.list_flatten(array), null, counts


def _string_list_payload(series: pl.Series) -> _Payload:
    """``string_list_val``: StringList{val: repeated string}; null items become ``""``."""
    n = len(series)
    items, null, counts = _list_rows(series)
    items = pc.fill_null(_to_binary(items.cast(pa.large_string())), _EMPTY)
    m = len(items)
    item_len = pc.binary_length(items).to_numpy().astype(np.int64)
    item_header, _, _ = _header_matrix(bytes([_TAG_LIST_ITEMS]), item_len, np.ones(m, bool))
    encoded = _assemble([item_header, _Var(cast(pa.LargeBinaryArray, items))], m)
    item_offsets = np.frombuffer(encoded.buffers()[1], dtype=np.int64, count=m + 1)
    row_offsets = item_offsets[_offsets(counts)]
    message_len = np.diff(row_offsets)
    data = encoded.buffers()[2]
    rows = _binary_from(
        np.ascontiguousarray(row_offsets - row_offsets[0]),
        np.frombuffer(data, np.uint8)[row_offsets[0] : row_offsets[-1]]
        if data is not None
        else np.zeros(0, np.uint8),
        n,
    )
    header, _, header_len = _header_matrix(_TAG_STRING_LIST, message_len, ~null)
    return _Payload([header, _Var(rows)], header_len + np.where(null, 0, message_len))


def _float_list_payload(series: pl.Series) -> _Payload:
    """``float_list_val``: FloatList{packed float val}; null items become NaN (as in Feast)."""
    n = len(series)
    items, null, counts = _list_rows(series)
    values = np.ascontiguousarray(
        pc.cast(items, pa.float32()).to_numpy(zero_copy_only=False), dtype=np.float32
    )
    packed = _binary_from(_offsets(counts * 4), values.view(np.uint8), n)
    inner_len = counts * 4
    inner_data, inner_mask, inner_nbytes = _varint(inner_len)
    has_items = counts > 0
    message_len = np.where(has_items, 1 + inner_nbytes, 0) + inner_len
    outer_data, outer_mask, outer_nbytes = _varint(message_len)
    present = ~null
    out = np.empty((n, 2 + 10 + 1 + 10), dtype=np.uint8)
    out[:, 0:2] = np.frombuffer(_TAG_FLOAT_LIST, dtype=np.uint8)
    out[:, 2:12] = outer_data
    out[:, 12] = _TAG_LIST_ITEMS
    out[:, 13:23] = inner_data
    mask = np.empty_like(out, dtype=np.bool_)
    mask[:, 0:2] = present[:, None]
    mask[:, 2:12] = outer_mask & present[:, None]
    inner = present & has_items
    mask[:, 12] = inner
    mask[:, 13:23] = inner_mask & inner[:, None]
    header_len = np.where(present, 2 + outer_nbytes + np.where(has_items, 1 + inner_nbytes, 0), 0)
    header_len = header_len.astype(np.int64)
    lengths = header_len + np.where(present, inner_len, 0)
    return _Payload([_dense(out, mask, header_len), _Var(packed)], lengths)


def _generic_payload(series: pl.Series, value_type: ValueType) -> _Payload:
    """Any other Feast type, serialised per row by Feast's own conversion (slow but exact)."""
    values = _arrow(series).to_numpy(zero_copy_only=False)
    protos = python_values_to_proto_values(values, value_type)
    array = cast(
        pa.LargeBinaryArray,
        pa.array([p.SerializeToString() for p in protos], type=pa.large_binary()),
    )
    return _Payload([_Var(array)], _row_lengths(array))


_FIXED_KINDS = {
    ValueType.FLOAT: _TAG_FLOAT,
    ValueType.DOUBLE: _TAG_DOUBLE,
    ValueType.BOOL: _TAG_BOOL,
}


def _fixed_columns(
    frame: pl.DataFrame, names: Sequence[str], value_type: ValueType
) -> tuple[U8, Mask]:
    """Bytes ``(n, columns, k)`` and null cells ``(n, columns)`` of fixed-size columns."""
    n = frame.height
    if value_type == ValueType.BOOL:
        selected = frame.select(names)
        null = np.ascontiguousarray(selected.select(pl.all().is_null()).to_numpy(), dtype=bool)
        flags = selected.select(pl.all().cast(pl.Boolean).fill_null(False)).to_numpy()
        raw = np.ascontiguousarray(flags, dtype=np.uint8).reshape(n, len(names), 1)
        return raw, null
    dtype, target = (
        (np.float32, pl.Float32) if value_type == ValueType.FLOAT else (np.float64, pl.Float64)
    )
    values = np.ascontiguousarray(
        frame.select(pl.col(c).cast(target) for c in names).to_numpy(), dtype=dtype
    )
    null = np.isnan(values)  # nulls come out as NaN; Feast stores NaN as null too
    return values.view(np.uint8).reshape(n, len(names), -1), null


def _value_pieces(series: pl.Series, value_type: ValueType, *, framed: bool) -> list[_Piece]:
    """The serialised ``Value`` of every row, as a RESP bulk string if ``framed``."""
    if value_type == ValueType.FLOAT:
        raw, null = _float_values(series, np.float32)
        return [_fixed(_TAG_FLOAT, raw, null, framed=framed)]
    if value_type == ValueType.DOUBLE:
        raw, null = _float_values(series, np.float64)
        return [_fixed(_TAG_DOUBLE, raw, null, framed=framed)]
    if value_type == ValueType.BOOL:
        null = np.ascontiguousarray(series.is_null().to_numpy(), dtype=bool)
        flags = series.cast(pl.Boolean).fill_null(False).to_numpy().astype(np.uint8)
        return [_fixed(_TAG_BOOL, flags.reshape(-1, 1), null, framed=framed)]
    payload = _payload(series, value_type)
    if framed:
        return _bulk(payload.pieces, payload.lengths)
    return payload.pieces


def _payload(series: pl.Series, value_type: ValueType) -> _Payload:
    """Variable-size kinds (integers, strings, timestamps, lists, anything else)."""
    if value_type == ValueType.INT64:
        ints, null = _int_values(series, pl.Int64)
        return _varint_payload(_TAG_INT64, ints, null)
    if value_type == ValueType.INT32:
        ints, null = _int_values(series, pl.Int32)
        return _varint_payload(_TAG_INT32, ints, null)
    if value_type == ValueType.STRING:
        return _string_payload(series)
    if value_type == ValueType.UNIX_TIMESTAMP:
        return _unix_timestamp_payload(series)
    if value_type == ValueType.STRING_LIST and isinstance(series.dtype, pl.List):
        return _string_list_payload(series)
    if value_type == ValueType.FLOAT_LIST and isinstance(series.dtype, pl.List):
        return _float_list_payload(series)
    return _generic_payload(series, value_type)


def serialize_values(series: pl.Series, value_type: ValueType) -> pa.LargeBinaryArray:
    """Serialise a whole column to ``feast.types.Value`` bytes, as Feast's materialisation does.

    Float32, Float64, Int32, Int64, Bool, String, UnixTimestamp, Array(String) and
    Array(Float32) are vectorised; any other type falls back to Feast's own per-row conversion.
    Nulls and NaN become an empty ``Value`` (``b""``), except UnixTimestamp (NaT sentinel).

    Args:
        series: The column.
        value_type: Feast value type of the feature (``Field.dtype.to_value_type()``).

    Returns:
        One serialised ``Value`` per row.
    """
    return _assemble(_value_pieces(series, value_type, framed=False), len(series))


def _timestamp_payload(micros: I64) -> _Payload:
    """google.protobuf.Timestamp(seconds, nanos) from floored epoch microseconds."""
    seconds = np.floor_divide(micros, 1_000_000)
    nanos = (micros - seconds * 1_000_000) * 1000
    sec_data, sec_mask, sec_nbytes = _varint(seconds)
    nano_data, nano_mask, nano_nbytes = _varint(nanos)
    n = len(micros)
    has_s = seconds != 0
    has_n = nanos != 0
    out = np.empty((n, 17), dtype=np.uint8)
    out[:, 0] = _TAG_TS_SECONDS
    out[:, 1:11] = sec_data
    out[:, 11] = _TAG_TS_NANOS
    out[:, 12:17] = nano_data[:, :5]
    mask = np.empty((n, 17), dtype=np.bool_)
    mask[:, 0] = has_s
    mask[:, 1:11] = sec_mask & has_s[:, None]
    mask[:, 11] = has_n
    mask[:, 12:17] = nano_mask[:, :5] & has_n[:, None]
    lengths = (np.where(has_s, 1 + sec_nbytes, 0) + np.where(has_n, 1 + nano_nbytes, 0)).astype(
        np.int64
    )
    return _Payload([_dense(out, mask, lengths)], lengths)


def serialize_timestamps(series: pl.Series) -> pa.LargeBinaryArray:
    """Serialise event times to ``google.protobuf.Timestamp`` bytes (``_ts:<view>`` values).

    Naive datetimes are UTC (as in Feast); precision is truncated to microseconds, as
    ``Timestamp.FromDatetime`` does.

    Args:
        series: A Polars Datetime column without nulls.

    Returns:
        One serialised Timestamp per row.
    """
    if series.null_count():
        raise ValueError(f"column {series.name!r} has null event timestamps")
    payload = _timestamp_payload(_epoch_micros(series))
    return _assemble(payload.pieces, len(series))


def _key_payload(
    series: pl.Series, join_key: str, value_type: ValueType, project: bytes
) -> _Payload:
    if series.null_count():
        raise ValueError(f"join key column {join_key!r} has nulls")
    n = len(series)
    name = join_key.encode("utf8")
    prefix = struct.pack("<III", 1, ValueType.STRING.value, len(name)) + name
    if value_type == ValueType.STRING:
        values = _to_binary(_arrow(series.cast(pl.String)))
        lengths = pc.binary_length(values).to_numpy().astype(np.int64)
        le32 = np.ascontiguousarray(lengths.astype("<u4")).view(np.uint8).reshape(n, 4)
        pieces: list[_Piece] = [
            _const(prefix + struct.pack("<I", ValueType.STRING.value)),
            _dense(le32, None, 4),
            _Var(values),
            _const(project),
        ]
        total = len(prefix) + 8 + len(project) + lengths
        return _Payload(pieces, total.astype(np.int64))
    if value_type in (ValueType.INT64, ValueType.INT32):
        wide = value_type == ValueType.INT64
        dtype = "<i8" if wide else "<i4"
        raw = series.cast(pl.Int64 if wide else pl.Int32).to_numpy().astype(dtype)
        size = 8 if wide else 4
        body = np.ascontiguousarray(raw).view(np.uint8).reshape(n, size)
        pieces = [
            _const(prefix + struct.pack("<II", value_type.value, size)),
            _dense(body, None, size),
            _const(project),
        ]
        return _Payload(pieces, np.full(n, len(prefix) + 8 + size + len(project), np.int64))
    raise ValueError(
        f"join key {join_key!r} has value type {value_type.name}; "
        "only STRING, INT64 and INT32 entity keys are supported"
    )


def serialize_entity_keys(
    series: pl.Series, join_key: str, value_type: ValueType
) -> pa.LargeBinaryArray:
    """``serialize_entity_key(EntityKey([join_key], [value]), 3)`` for a whole column.

    Args:
        series: The join key column (no nulls).
        join_key: The entity's join key name.
        value_type: STRING, INT64 or INT32.

    Returns:
        One serialised entity key per row.
    """
    payload = _key_payload(series, join_key, value_type, b"")
    return _assemble(payload.pieces, len(series))


def redis_keys(
    series: pl.Series, join_key: str, value_type: ValueType, project: str
) -> pa.LargeBinaryArray:
    """Feast's Redis keys (``serialize_entity_key(..., 3) + project``) for a whole column."""
    payload = _key_payload(series, join_key, value_type, project.encode("utf8"))
    return _assemble(payload.pieces, len(series))


# --------------------------------------------------------------------------------------------
# Redis Cluster hash slots (CRC16/XMODEM, as redis.crc.key_slot), vectorised
# --------------------------------------------------------------------------------------------


def _crc16_table() -> npt.NDArray[np.uint16]:
    table = np.zeros(256, dtype=np.uint16)
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        table[byte] = crc & 0xFFFF
    return table


_CRC16 = _crc16_table()


def key_slots(keys: pa.LargeBinaryArray) -> npt.NDArray[np.int64]:
    """Cluster hash slot of every key; equal to ``redis.crc.key_slot`` (hash tags included).

    Args:
        keys: Raw Redis keys.

    Returns:
        Slot numbers (0..16383).
    """
    n = len(keys)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    lengths = _row_lengths(keys)
    data = np.frombuffer(_payload_bytes(keys), dtype=np.uint8)
    starts = _offsets(lengths)[:-1]
    width = int(lengths.max())
    cols = np.arange(width)
    valid = cols[None, :] < lengths[:, None]
    index = np.minimum(starts[:, None] + cols[None, :], max(len(data) - 1, 0))
    matrix = data[index] if len(data) else np.zeros((n, width), np.uint8)
    crc = np.zeros(n, dtype=np.uint32)
    table = _CRC16.astype(np.uint32)
    for j in range(width):
        updated = ((crc << 8) & 0xFFFF) ^ table[((crc >> 8) ^ matrix[:, j]) & 0xFF]
        crc = np.where(valid[:, j], updated, crc)
    slots = (crc % _CLUSTER_SLOTS).astype(np.int64)
    tagged = np.flatnonzero(((matrix == ord("{")) & valid).any(axis=1))
    if len(tagged):  # hash tags ({...}): let redis-py's own function decide
        for i in tagged:
            slots[i] = key_slot(keys[int(i)].as_py())
    return slots


# --------------------------------------------------------------------------------------------
# RESP over a raw socket
# --------------------------------------------------------------------------------------------


class _ReplyError(Exception):
    """An error reply (``-ERR ...``) from the pure-Python parser."""


class _Reader(Protocol):
    def feed(self, data: bytes | bytearray | memoryview, /) -> None: ...

    def gets(self) -> Any: ...


class _PyReader:
    """Minimal RESP2 parser with hiredis.Reader's interface (``feed`` / ``gets``)."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0

    def feed(self, data: bytes | bytearray | memoryview, /) -> None:
        if self._pos > 1 << 20:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def gets(self) -> Any:
        result = self._parse(self._pos)
        if result is None:
            return False
        value, self._pos = result
        return value

    def _parse(self, pos: int) -> tuple[Any, int] | None:
        buf = self._buf
        end = buf.find(_CRLF, pos)
        if end < 0:
            return None
        kind = buf[pos : pos + 1]
        line = bytes(buf[pos + 1 : end])
        after = end + 2
        if kind == b"+":
            return line, after
        if kind == b"-":
            return _ReplyError(line.decode("utf8", "replace")), after
        if kind == b":":
            return int(line), after
        if kind == b"$":
            size = int(line)
            if size < 0:
                return None, after
            if len(buf) < after + size + 2:
                return None
            return bytes(buf[after : after + size]), after + size + 2
        if kind == b"*":
            count = int(line)
            if count < 0:
                return None, after
            items = []
            for _ in range(count):
                parsed = self._parse(after)
                if parsed is None:
                    return None
                item, after = parsed
                items.append(item)
            return items, after
        raise ConnectionError(f"unexpected RESP reply type {kind!r}")


def _reply_errors() -> tuple[type[BaseException], ...]:
    if hiredis is not None:
        return (_ReplyError, hiredis.ReplyError)
    return (_ReplyError,)


_REPLY_ERRORS = _reply_errors()


def _new_reader() -> _Reader:
    if hiredis is not None:
        return cast(_Reader, hiredis.Reader())
    return _PyReader()


def _pack(*args: bytes | str | int) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        raw = arg if isinstance(arg, bytes) else str(arg).encode("utf8")
        parts.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(parts)


@dataclass(frozen=True, slots=True)
class _Endpoint:
    """Where and how to connect: Feast's connection-string parameters, parsed like Feast."""

    host: str
    port: int
    db: int = 0
    username: str | None = None
    password: str | None = None
    ssl: bool = False
    ssl_cert_reqs: str = "required"
    ssl_ca_certs: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_check_hostname: bool = True
    socket_timeout: float | None = None
    socket_connect_timeout: float | None = None

    def at(self, host: str, port: int) -> _Endpoint:
        return dataclasses.replace(self, host=host, port=port)


_KNOWN_PARAMS = {
    "db",
    "username",
    "password",
    "ssl",
    "ssl_cert_reqs",
    "ssl_ca_certs",
    "ssl_certfile",
    "ssl_keyfile",
    "ssl_check_hostname",
    "socket_timeout",
    "socket_connect_timeout",
}


def _endpoints(config: RedisOnlineStoreConfig) -> list[_Endpoint]:
    """Startup nodes and parameters from ``connection_string``, via Feast's own parser."""
    nodes, params = RedisOnlineStore._parse_connection_string(config.connection_string)
    if not nodes:
        raise ValueError(f"no host:port in Redis connection_string {config.connection_string!r}")
    ignored = sorted(set(params) - _KNOWN_PARAMS)
    if ignored:
        logger.debug("connection_string parameters not used by the fast path: %s", ignored)

    def _bool(value: Any) -> bool:
        return value if isinstance(value, bool) else str(value).lower() in {"1", "true", "yes"}

    def _opt_float(value: Any) -> float | None:
        return None if value is None else float(value)

    def _opt_str(value: Any) -> str | None:
        return None if value is None else str(value)

    template = _Endpoint(
        host="",
        port=0,
        db=int(params.get("db", 0) or 0),
        username=_opt_str(params.get("username")),
        password=_opt_str(params.get("password")),
        ssl=_bool(params.get("ssl", False)),
        ssl_cert_reqs=str(params.get("ssl_cert_reqs", "required")).lower(),
        ssl_ca_certs=_opt_str(params.get("ssl_ca_certs")),
        ssl_certfile=_opt_str(params.get("ssl_certfile")),
        ssl_keyfile=_opt_str(params.get("ssl_keyfile")),
        ssl_check_hostname=_bool(params.get("ssl_check_hostname", True)),
        socket_timeout=_opt_float(params.get("socket_timeout")),
        socket_connect_timeout=_opt_float(params.get("socket_connect_timeout")),
    )
    return [template.at(node["host"], int(node["port"])) for node in nodes]


class _Connection:
    """One raw RESP2 connection: pipelined sends, counted or parsed replies."""

    def __init__(self, endpoint: _Endpoint, *, select_db: bool = True) -> None:
        self.endpoint = endpoint
        self._select_db = select_db
        self._sock: socket.socket | None = None
        self._reader: _Reader = _new_reader()
        self._pending = bytearray()
        self._recv = bytearray(1 << 20)

    @property
    def address(self) -> str:
        return f"{self.endpoint.host}:{self.endpoint.port}"

    def connect(self) -> None:
        if self._sock is not None:
            return
        ep = self.endpoint
        timeout = ep.socket_connect_timeout if ep.socket_connect_timeout is not None else 10.0
        sock = socket.create_connection((ep.host, ep.port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if ep.ssl:
            # As redis-py: certificates required and host names checked unless told otherwise.
            context = ssl.create_default_context(cafile=ep.ssl_ca_certs)
            verify = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL}.get(
                ep.ssl_cert_reqs, ssl.CERT_REQUIRED
            )
            context.check_hostname = ep.ssl_check_hostname and verify != ssl.CERT_NONE
            context.verify_mode = verify
            if ep.ssl_certfile:
                context.load_cert_chain(ep.ssl_certfile, ep.ssl_keyfile)
            sock = context.wrap_socket(sock, server_hostname=ep.host)
        sock.settimeout(ep.socket_timeout)
        self._sock = sock
        self._reader = _new_reader()
        self._pending = bytearray()
        try:
            handshake: list[bytes] = []
            if ep.password is not None:
                auth = ("AUTH", ep.username, ep.password) if ep.username else ("AUTH", ep.password)
                handshake.append(_pack(*cast(tuple[str, ...], auth)))
            if self._select_db and ep.db:
                handshake.append(_pack("SELECT", ep.db))
            if handshake:
                self.send(b"".join(handshake))
                for reply in self.read_replies(len(handshake)):
                    if isinstance(reply, _REPLY_ERRORS):
                        raise ConnectionError(f"Redis {self.address} refused handshake: {reply}")
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
        self._sock = None

    def _socket(self) -> socket.socket:
        if self._sock is None:
            self.connect()
        assert self._sock is not None
        return self._sock

    def send(self, data: bytes | bytearray | memoryview) -> None:
        try:
            self._socket().sendall(data)
        except OSError as error:
            self.close()
            raise ConnectionError(f"lost connection to Redis {self.address}: {error}") from error

    def _receive(self) -> memoryview:
        sock = self._socket()
        try:
            size = sock.recv_into(self._recv)
        except OSError as error:
            self.close()
            raise ConnectionError(f"lost connection to Redis {self.address}: {error}") from error
        if size == 0:
            self.close()
            raise ConnectionError(f"Redis {self.address} closed the connection")
        return memoryview(self._recv)[:size]

    def read_lines(self, count: int) -> bytes:
        """Read ``count`` single-line replies (integers or errors) without parsing them."""
        buf = self._pending
        self._pending = bytearray()
        seen = buf.count(_CRLF)
        scanned = len(buf)
        while seen < count:
            buf += self._receive()
            seen += buf.count(_CRLF, max(scanned - 1, 0))
            scanned = len(buf)
        if seen > count:  # cannot happen without unmatched commands, but stay in sync
            cut = 0
            for _ in range(count):
                cut = buf.index(_CRLF, cut) + 2
            self._pending = buf[cut:]
            del buf[cut:]
        return bytes(buf)

    def read_uniform(self, count: int, reply: bytes) -> list[Any] | None:
        """Read ``count`` replies; ``None`` if every one is exactly ``reply`` (e.g. all nil).

        The common case (a fresh load: every HMGET finds nothing) is checked with one bytes
        comparison instead of parsing each reply; anything else is parsed.
        """
        expected = count * len(reply)
        pattern = reply * count
        buf = self._pending
        self._pending = bytearray()
        while len(buf) < expected and buf == pattern[: len(buf)]:
            buf += self._receive()
        if buf == pattern:
            return None
        self._pending = buf
        return self.read_replies(count)

    def read_replies(self, count: int) -> list[Any]:
        """Read and parse ``count`` replies (errors are returned, not raised)."""
        reader = self._reader
        if self._pending:
            reader.feed(bytes(self._pending))
            self._pending = bytearray()
        replies: list[Any] = []
        while len(replies) < count:
            reply = reader.gets()
            if reply is False:
                reader.feed(self._receive())
                continue
            replies.append(reply)
        return replies

    def command(self, *args: bytes | str | int) -> Any:
        self.send(_pack(*args))
        reply = self.read_replies(1)[0]
        if isinstance(reply, _REPLY_ERRORS):
            raise RedisCommandError(f"{args[0]!s} failed on {self.address}: {reply}", [str(reply)])
        return reply


class _Topology:
    """Which connection owns which key: one node, or cluster slots mapped to master nodes."""

    def __init__(
        self,
        config: RedisOnlineStoreConfig,
        socket_timeout: float | None,
        default_timeout: float | None = None,
    ) -> None:
        if config.redis_type == RedisType.redis_sentinel:
            raise ValueError("redis_type redis_sentinel is not supported by the fast Redis path")
        endpoints = _endpoints(config)
        if socket_timeout is not None:
            endpoints = [dataclasses.replace(e, socket_timeout=socket_timeout) for e in endpoints]
        elif default_timeout is not None:
            endpoints = [
                e
                if e.socket_timeout is not None
                else dataclasses.replace(e, socket_timeout=default_timeout)
                for e in endpoints
            ]
        self.cluster = config.redis_type == RedisType.redis_cluster
        self._startup = endpoints
        self.connections: list[_Connection] = []
        self._slot_owner = np.zeros(_CLUSTER_SLOTS, dtype=np.int64)
        if self.cluster:
            self.refresh()
        else:
            self.connections = [_Connection(endpoints[0])]

    def refresh(self) -> None:
        """(Re)load the cluster's slot map from the first reachable startup or known node."""
        if not self.cluster:
            return
        candidates = [c.endpoint for c in self.connections] + self._startup
        last: Exception | None = None
        for endpoint in candidates:
            probe = _Connection(endpoint, select_db=False)
            try:
                slots = probe.command("CLUSTER", "SLOTS")
            except (OSError, RedisCommandError) as error:
                last = error
                continue
            finally:
                probe.close()
            self._install(slots, endpoint)
            return
        raise ConnectionError(f"no Redis Cluster node reachable: {last}")

    def _install(self, slots: list[Any], via: _Endpoint) -> None:
        owners: dict[tuple[str, int], int] = {}
        existing = {(c.endpoint.host, c.endpoint.port): c for c in self.connections}
        connections: list[_Connection] = []
        covered = np.zeros(_CLUSTER_SLOTS, dtype=bool)
        for entry in slots:
            start, end, master = int(entry[0]), int(entry[1]), entry[2]
            host = master[0].decode() if isinstance(master[0], bytes) else str(master[0])
            address = (host or via.host, int(master[1]))
            if address not in owners:
                owners[address] = len(connections)
                connection = existing.pop(address, None) or _Connection(
                    via.at(*address), select_db=False
                )
                connections.append(connection)
            self._slot_owner[start : end + 1] = owners[address]
            covered[start : end + 1] = True
        for stale in existing.values():
            stale.close()
        if not covered.all():
            raise ConnectionError(
                f"Redis Cluster does not cover all slots ({int((~covered).sum())} unassigned)"
            )
        self.connections = connections

    def owners(self, keys: pa.LargeBinaryArray) -> npt.NDArray[np.int64]:
        """Index into :attr:`connections` of the node owning each key."""
        if not self.cluster:
            return np.zeros(len(keys), dtype=np.int64)
        return self._slot_owner[key_slots(keys)]

    def owner_of(self, key: bytes) -> int:
        if not self.cluster:
            return 0
        return int(self._slot_owner[key_slot(key)])

    def close(self) -> None:
        for connection in self.connections:
            connection.close()


# --------------------------------------------------------------------------------------------
# Writer
# --------------------------------------------------------------------------------------------


class RedisCommandError(RuntimeError):
    """Redis answered some pipelined commands with errors; ``errors`` holds the messages."""

    def __init__(self, message: str, errors: Sequence[str]) -> None:
        super().__init__(message)
        self.errors = list(errors)


class RedisWriteError(RedisCommandError):
    """Redis rejected some writes (e.g. OOM); the chunks before them are complete."""


@dataclass(slots=True)
class WriteStats:
    """What the last :meth:`RedisFeatureWriter.write` did."""

    rows_in: int = 0
    entities: int = 0
    resumed_from: int = 0
    skipped_not_newer: int = 0
    written: int = 0
    chunks: int = 0


@dataclass(frozen=True, slots=True)
class _ViewSpec:
    name: str
    fv_name: str
    join_key: str
    key_type: ValueType
    features: tuple[tuple[str, ValueType], ...]
    field_hashes: tuple[bytes, ...]
    ts_field: bytes


def _online_config(config: RepoConfig) -> RedisOnlineStoreConfig:
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


def _view_spec(view: FeatureView, config: RepoConfig) -> _ViewSpec:
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
    if key_type not in _ENTITY_VALUE_TYPES:
        raise ValueError(
            f"join key {join_key!r} of {view.name!r} is {key_type.name}; "
            "only STRING, INT64 and INT32 entity keys are supported"
        )
    fv_name = _versioned_fv_name(view, config)
    features = tuple((f.name, f.dtype.to_value_type()) for f in view.features)
    return _ViewSpec(
        name=view.name,
        fv_name=fv_name,
        join_key=join_key,
        key_type=key_type,
        features=features,
        field_hashes=tuple(_mmh3(f"{fv_name}:{name}") for name, _ in features),
        ts_field=f"_ts:{fv_name}".encode(),
    )


def _latest_per_entity(
    frame: pl.DataFrame, spec: _ViewSpec, created_timestamp_column: str | None
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


def _fingerprint(frame: pl.DataFrame, spec: _ViewSpec, config: RepoConfig, dedup: bool) -> str:
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
    """Writes feature rows into Feast's Redis online store layout with pipelined raw RESP.

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
        self.online = _online_config(config)
        self._project = config.project.encode("utf8")
        self._ttl = self.online.key_ttl_seconds or None
        self._topology = _Topology(self.online, socket_timeout, default_timeout=60.0)
        self.last_stats = WriteStats()

    def __enter__(self) -> RedisFeatureWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close all sockets (they reopen on the next write)."""
        self._topology.close()

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
        spec = _view_spec(view, self.config)
        rows_in = frame.height
        prepared = _latest_per_entity(frame, spec, created_timestamp_column)
        total = prepared.height
        stats = WriteStats(rows_in=rows_in, entities=total)
        self.last_stats = stats
        fingerprint = _fingerprint(prepared, spec, self.config, dedup) if checkpoint else None
        start = self._resume_point(checkpoint, fingerprint, total)
        stats.resumed_from = start
        if start:
            logger.info("resuming %s at row %d of %d from %s", spec.name, start, total, checkpoint)

        def finish(inflight: tuple[Future[Any] | None, int | None, int, int]) -> None:
            future, chunk_end, sent, size = inflight
            if future is not None:
                future.result()  # raises what Redis rejected
            stats.written += sent
            stats.skipped_not_newer += size - sent
            if chunk_end is not None:
                stats.chunks += 1
                if checkpoint is not None and fingerprint is not None:
                    _save_checkpoint(checkpoint, fingerprint, chunk_end, total)

        # Chunks (the unit of the checkpoint) go to Redis in smaller pipelined batches. One
        # I/O thread talks to Redis while this thread encodes the next batch, so Redis
        # executes batch k while batch k+1 is being serialised. Commands still reach Redis in
        # order (HSET k, HMGET k+1, HSET k+1, ...), and a chunk is done only once the replies
        # of its last batch are read.
        batch_rows = min(chunk_rows, _PIPELINE_ROWS)
        batches: list[tuple[int, int, int | None]] = []
        for chunk_low in range(start, total, chunk_rows):
            chunk_high = min(chunk_low + chunk_rows, total)
            for low in range(chunk_low, chunk_high, batch_rows):
                high = min(low + batch_rows, chunk_high)
                batches.append((low, high, chunk_high if high == chunk_high else None))
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="redis-write") as io:
            inflight: tuple[Future[Any] | None, int | None, int, int] | None = None
            for low, high, chunk_end in batches:
                chunk = prepared.slice(low, high - low)
                raw, bulk = self._key_arrays(spec, chunk.get_column(spec.join_key))
                lookup = io.submit(self._stored_nanos, spec, raw, bulk) if dedup else None
                commands = self._hset_commands(spec, chunk, bulk)
                if inflight is not None:
                    finish(inflight)
                    inflight = None
                if lookup is not None:
                    stored = lookup.result()
                    new = _epoch_micros(chunk.get_column(EVENT_TIMESTAMP)) * 1000
                    # Feast skips a row only if a stored time exists (non-zero) and the new
                    # one is older or equal.
                    keep = ~((stored != 0) & (new <= stored))
                    if not keep.all():
                        index = pa.array(np.flatnonzero(keep))
                        raw = cast(pa.LargeBinaryArray, raw.take(index))
                        commands = cast(pa.LargeBinaryArray, commands.take(index))
                future = None
                if len(commands):
                    future = io.submit(
                        self._exchange, raw, commands, "count", 2 if self._ttl else 1
                    )
                inflight = (future, chunk_end, len(commands), chunk.height)
            if inflight is not None:
                finish(inflight)
        if checkpoint is not None:
            checkpoint.unlink(missing_ok=True)
        return stats.written

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

    def _key_arrays(
        self, spec: _ViewSpec, keys: pl.Series
    ) -> tuple[pa.LargeBinaryArray, pa.LargeBinaryArray]:
        """Raw Redis keys and their RESP bulk strings."""
        payload = _key_payload(keys, spec.join_key, spec.key_type, self._project)
        n = len(keys)
        raw = _assemble(payload.pieces, n)
        bulk = _assemble(_bulk([_Var(raw)], payload.lengths), n)
        return raw, bulk

    def _hset_commands(
        self, spec: _ViewSpec, chunk: pl.DataFrame, bulk: pa.LargeBinaryArray
    ) -> pa.LargeBinaryArray:
        """``HSET key _ts:<view> <ts> <field> <value> ...`` (+ ``EXPIRE``) for every row.

        Fields in Feast's order: ``_ts`` first, then the features in view order.
        """
        n_fields = 1 + len(spec.features)
        pieces: list[_Piece] = [
            _const(b"*%d\r\n$4\r\nHSET\r\n" % (2 + 2 * n_fields)),
            _Var(bulk),
            _const(b"$%d\r\n%s\r\n" % (len(spec.ts_field), spec.ts_field)),
        ]
        ts = _timestamp_payload(_epoch_micros(chunk.get_column(EVENT_TIMESTAMP)))
        pieces += _bulk(ts.pieces, ts.lengths)
        features = list(zip(spec.features, spec.field_hashes, strict=True))
        i = 0
        while i < len(features):
            (name, value_type), field_hash = features[i]
            end = i + 1
            while (
                value_type in _FIXED_KINDS
                and end < len(features)
                and features[end][0][1] == value_type
            ):
                end += 1
            if end - i > 1:  # a run of fixed-size features of one type: one block
                names = [feature[0][0] for feature in features[i:end]]
                raw, null = _fixed_columns(chunk, names, value_type)
                hashes = [feature[1] for feature in features[i:end]]
                pieces.append(_fixed_fields(_FIXED_KINDS[value_type], raw, null, hashes))
            else:
                pieces.append(_const(b"$4\r\n" + field_hash + _CRLF))
                pieces += _value_pieces(chunk.get_column(name), value_type, framed=True)
            i = end
        if self._ttl:
            ttl = str(int(self._ttl)).encode()
            pieces += [
                _const(b"*3\r\n$6\r\nEXPIRE\r\n"),
                _Var(bulk),
                _const(b"$%d\r\n%s\r\n" % (len(ttl), ttl)),
            ]
        return _assemble(pieces, chunk.height)

    def _stored_nanos(
        self, spec: _ViewSpec, raw: pa.LargeBinaryArray, bulk: pa.LargeBinaryArray
    ) -> I64:
        """Stored ``_ts`` of every key in nanoseconds (0 when absent), one HMGET per key."""
        n = len(raw)
        header = b"*3\r\n$5\r\nHMGET\r\n"
        tail = b"$%d\r\n%s\r\n" % (len(spec.ts_field), spec.ts_field)
        commands = _assemble([_const(header), _Var(bulk), _const(tail)], n)
        values = self._exchange(raw, commands, "first_field")
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
        attempts: int = 3,
    ) -> list[Any] | None:
        """Send one command group per row to the node owning its key; collect the replies.

        ``count`` only checks the (single-line) replies for errors; ``first_field`` returns
        the first element of every (HMGET) array reply in row order, or ``None`` when every
        reply is nil. A ``MOVED``/``ASK`` (resharding) refreshes the slot map and retries;
        every command sent here is idempotent.
        """
        for attempt in range(attempts):
            try:
                return self._exchange_once(raw, commands, mode, per_row)
            except RedisWriteError as error:
                redirected = any(e.startswith(("MOVED", "ASK", "TRYAGAIN")) for e in error.errors)
                if not (self._topology.cluster and redirected) or attempt == attempts - 1:
                    raise
                logger.info("cluster topology changed (%s); refreshing", error.errors[0])
                self._topology.refresh()
        raise AssertionError("unreachable")

    def _exchange_once(
        self,
        raw: pa.LargeBinaryArray,
        commands: pa.LargeBinaryArray,
        mode: Literal["count", "first_field"],
        per_row: int,
    ) -> list[Any] | None:
        topology = self._topology
        n = len(commands)
        groups: list[tuple[_Connection, npt.NDArray[np.intp] | None, pa.LargeBinaryArray]] = []
        if len(topology.connections) == 1:
            groups.append((topology.connections[0], None, commands))
        else:
            owners = topology.owners(raw)
            for index, connection in enumerate(topology.connections):
                rows = np.flatnonzero(owners == index)
                if len(rows):
                    subset = cast(pa.LargeBinaryArray, commands.take(pa.array(rows)))
                    groups.append((connection, rows, subset))
        errors: list[str] = []
        values: list[Any] | None = None
        try:
            for connection, _, subset in groups:
                connection.send(_payload_bytes(subset))
            for connection, group_rows, subset in groups:
                count = len(subset) * per_row
                if mode == "count":
                    text = connection.read_lines(count)
                    if b"-" in text:
                        errors += [
                            line[1:].decode("utf8", "replace")
                            for line in text.split(_CRLF)
                            if line.startswith(b"-")
                        ]
                    continue
                got = connection.read_uniform(count, _NIL_ARRAY_1)
                if got is None:
                    continue
                if values is None:
                    values = [None] * n
                positions = range(n) if group_rows is None else group_rows.tolist()
                for row, reply in zip(positions, got, strict=True):
                    if isinstance(reply, _REPLY_ERRORS):
                        errors.append(str(reply))
                    elif reply:
                        values[row] = reply[0]
        except BaseException:
            topology.close()  # replies may be left unread: never reuse these sockets
            raise
        if errors:
            raise RedisWriteError(
                f"Redis rejected {len(errors)} of {n * per_row} commands; first: {errors[0]}",
                errors,
            )
        return values


def _save_checkpoint(path: Path, fingerprint: str, rows_done: int, total: int) -> None:
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


# --------------------------------------------------------------------------------------------
# materialize_view: read the Parquet batch source, write, record the interval
# --------------------------------------------------------------------------------------------


def _registered_view(store: FeatureStore, view_name: str) -> FeatureView:
    try:
        return store.get_feature_view(view_name)
    except Exception:  # Feast raises a different not-found error per kind of view
        try:
            return store.get_stream_feature_view(view_name)
        except Exception as error:
            raise ValueError(
                f"no feature view {view_name!r} in project {store.project!r}"
            ) from error


def read_batch_source(
    store: FeatureStore,
    view: FeatureView,
    start: datetime,
    end: datetime,
    *,
    end_inclusive: bool = True,
) -> pl.DataFrame:
    """Rows of a view's Parquet ``FileSource`` with ``start <= event time <= end``.

    Mirrors Feast's file offline store: naive timestamps are UTC, ``field_mapping`` is applied,
    and the interval includes both ends (``end_inclusive=False`` makes it half-open). The
    event-time column is returned as ``event_timestamp``; the created-timestamp column, if
    the source has one, keeps its (mapped) name.

    Args:
        store: The feature store (for ``repo_path``).
        view: The registered feature view.
        start: Interval start (naive means UTC).
        end: Interval end (naive means UTC).
        end_inclusive: Include rows stamped exactly ``end`` (Feast's behaviour).

    Returns:
        The selected rows, not yet reduced to one per entity.
    """
    source = view.batch_source
    if not isinstance(source, FileSource):
        raise ValueError(
            f"view {view.name!r} has batch source {type(source).__name__}; "
            "materialize_view reads only a FileSource over Parquet"
        )
    file_format = type(source.file_format).__name__ if source.file_format else "ParquetFormat"
    if file_format != "ParquetFormat":
        raise ValueError(f"source of {view.name!r} is {file_format}, not Parquet")
    path = FileSource.get_uri_for_file_path(store.config.repo_path, source.path)
    if "://" in path and not path.startswith("file://"):
        raise ValueError(f"source of {view.name!r} is remote ({path}); only local files work")
    path = path.removeprefix("file://")
    spec = _view_spec(view, store.config)

    mapping = dict(source.field_mapping or {})
    reverse = {target: origin for origin, target in mapping.items()}
    ts_source = reverse.get(source.timestamp_field, source.timestamp_field)
    created = source.created_timestamp_column or None
    created_source = reverse.get(created, created) if created else None
    key_source = reverse.get(spec.join_key, spec.join_key)
    feature_sources = [reverse.get(name, name) for name, _ in spec.features]
    # Feast renames the read columns with the stream source's mapping when there is one.
    stream = getattr(view, "stream_source", None)
    rename_map = dict((stream.field_mapping if stream else None) or mapping)

    start_utc = _as_utc(start)
    end_utc = _as_utc(end)
    frame = pl.scan_parquet(path)
    schema = frame.collect_schema()

    def _utc(column: str) -> pl.Expr:
        dtype = schema[column]
        expr = pl.col(column)
        if not isinstance(dtype, pl.Datetime):
            raise TypeError(f"timestamp column {column!r} of {path} is {dtype}, not a Datetime")
        if dtype.time_zone is None:
            return expr.dt.replace_time_zone("UTC")
        return expr.dt.convert_time_zone("UTC")

    columns = [key_source, *feature_sources]
    selected = [pl.col(c) for c in dict.fromkeys(columns)]
    selected.append(_utc(ts_source).alias("__event_ts"))
    if created_source:
        selected.append(_utc(created_source).alias("__created_ts"))
    upper = pl.col("__event_ts") <= end_utc if end_inclusive else pl.col("__event_ts") < end_utc
    result = frame.select(selected).filter((pl.col("__event_ts") >= start_utc) & upper).collect()
    renames = {c: rename_map[c] for c in result.columns if c in rename_map}
    result = result.rename(renames) if renames else result
    result = result.rename({"__event_ts": EVENT_TIMESTAMP})
    if created_source:
        result = result.rename({"__created_ts": rename_map.get(created_source, created_source)})
    return result


def _as_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def materialize_view(
    store: FeatureStore,
    view_name: str,
    start: datetime,
    end: datetime,
    checkpoint_dir: Path | None = None,
    *,
    end_inclusive: bool = True,
    chunk_rows: int = 50_000,
) -> int:
    """Fast equivalent of ``store.materialize(start, end, feature_views=[view_name])``.

    Reads the view's Parquet source with Polars (``start <= t <= end`` like Feast's file
    offline store; see ``end_inclusive``), keeps the latest row per entity, writes with
    :class:`RedisFeatureWriter` (Feast's dedup rule, resumable via ``checkpoint_dir``), then
    records the interval in the registry as ``FeatureStore.materialize`` does, so a later
    ``materialize_incremental`` starts at ``end``.

    Args:
        store: A feature store whose online store is Redis.
        view_name: A (stream) feature view with a Parquet ``FileSource`` batch source.
        start: Interval start (naive means UTC).
        end: Interval end (naive means UTC).
        checkpoint_dir: Where to keep ``<project>.<view>.checkpoint.json`` while writing; a
            re-run after a failure resumes after the last completed chunk.
        end_inclusive: Include rows stamped exactly ``end`` (Feast's file store does).
        chunk_rows: Rows per checkpointed chunk.

    Returns:
        Rows written to Redis.
    """
    from feast.feature_view import FeatureViewState

    start = _as_utc(start)
    end = _as_utc(end)
    if start > end:
        raise ValueError(f"start {start} is after end {end}")
    writer = RedisFeatureWriter(store.config)  # validates the online store first
    view = _registered_view(store, view_name)
    frame = read_batch_source(store, view, start, end, end_inclusive=end_inclusive)
    created = getattr(view.batch_source, "created_timestamp_column", None) or None
    checkpoint = (
        checkpoint_dir / f"{store.project}.{view_name}.checkpoint.json" if checkpoint_dir else None
    )

    # The same state transitions as FeatureStore.materialize.
    state = getattr(view, "state", None)
    previous = state
    if state == FeatureViewState.MATERIALIZING:
        previous = FeatureViewState.GENERATED
    elif state is not None and state != FeatureViewState.STATE_UNSPECIFIED:
        if not state.can_transition_to(FeatureViewState.MATERIALIZING):
            raise ValueError(
                f"FeatureView {view.name} cannot transition from {state.name} to MATERIALIZING."
            )
        view.state = FeatureViewState.MATERIALIZING
        store.registry.apply_feature_view(view, store.project, commit=True)
    try:
        with writer:
            written = writer.write(
                view,
                frame,
                checkpoint=checkpoint,
                chunk_rows=chunk_rows,
                created_timestamp_column=created,
            )
    except BaseException:
        if previous is not None and previous != FeatureViewState.STATE_UNSPECIFIED:
            view.state = previous
            store.registry.apply_feature_view(view, store.project, commit=True)
        raise
    store.registry.apply_materialization(view, store.project, start, end)
    precompute: Callable[[list[str]], None] | None = getattr(
        store, "_precompute_affected_services", None
    )
    if precompute is not None:
        precompute([view.name])
    return written


# --------------------------------------------------------------------------------------------
# Reader
# --------------------------------------------------------------------------------------------


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


_FLOAT = struct.Struct("<f")
_DOUBLE = struct.Struct("<d")


def decode_value(data: bytes | None, value_type: ValueType | None = None) -> Any:
    """Python value of serialised ``feast.types.Value`` bytes, as ``OnlineResponse.to_dict``.

    Scalars are decoded directly; other kinds go through protobuf and Feast's
    ``feast_value_type_to_python_type``.

    Args:
        data: Stored bytes (``None`` or ``b""`` is a null).
        value_type: The feature's declared type (only matters for UUID kinds).

    Returns:
        The value, ``None`` for null.
    """
    if not data:
        return None
    tag = data[0]
    size = len(data)
    if tag == _TAG_FLOAT and size == 5:
        return _FLOAT.unpack_from(data, 1)[0]
    if tag == _TAG_DOUBLE and size == 9:
        return _DOUBLE.unpack_from(data, 1)[0]
    if tag == _TAG_STRING and value_type in (None, ValueType.STRING):
        length, pos = _read_varint(data, 1)
        if pos + length == size:
            return data[pos:].decode("utf8")
    elif tag in (_TAG_INT64, _TAG_INT32):
        value, pos = _read_varint(data, 1)
        if pos == size:
            return _signed64(value)
    elif tag == _TAG_BOOL and size == 2:
        return data[1] != 0
    elif tag == _TAG_UNIX_TS:
        value, pos = _read_varint(data, 1)
        if pos == size:
            seconds = _signed64(value)
            if seconds == _NULL_TS:
                return None
            return datetime.fromtimestamp(seconds, tz=UTC)
    proto = ValueProto()
    proto.ParseFromString(data)
    return feast_value_type_to_python_type(proto, value_type)


def decode_timestamp(data: bytes | None) -> datetime | None:
    """``_ts:<view>`` bytes (google.protobuf.Timestamp) to an aware UTC datetime."""
    if data is None:
        return None
    seconds = nanos = 0
    pos = 0
    size = len(data)
    while pos < size:
        tag = data[pos]
        value, pos = _read_varint(data, pos + 1)
        if tag == _TAG_TS_SECONDS:
            seconds = _signed64(value)
        elif tag == _TAG_TS_NANOS:
            nanos = value
        else:
            stamp = Timestamp()
            stamp.ParseFromString(data)
            seconds, nanos = stamp.seconds, stamp.nanos
            break
    return _EPOCH + timedelta(seconds=seconds, microseconds=nanos // 1000)


@dataclass(frozen=True, slots=True)
class _ReadPlan:
    name: str
    key_prefix: bytes
    key_type: ValueType
    command_head: bytes
    fields: bytes
    names: tuple[str, ...]
    types: tuple[ValueType, ...]


class RedisFeatureReader:
    """Reads the online features of several (view, entity) pairs in one pipelined round trip.

    Args:
        config: A Feast ``RepoConfig`` with a Redis online store.
        views: The registered feature views that will be read.
        features: Optional subset of feature names per view name (default: all).
        socket_timeout: Socket timeout in seconds for serving calls.

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
        online = _online_config(config)
        self._topology = _Topology(online, socket_timeout)
        project = config.project.encode("utf8")
        self._project = project
        self._plans: dict[str, _ReadPlan] = {}
        for view in views:
            spec = _view_spec(view, config)
            wanted = list(features.get(view.name, [])) if features else []
            chosen = [(n, t) for n, t in spec.features if not wanted or n in wanted]
            unknown = set(wanted) - {n for n, _ in spec.features}
            if unknown:
                raise ValueError(f"view {view.name!r} has no features {sorted(unknown)}")
            if any(name == self.TIMESTAMP_KEY for name, _ in chosen):
                raise ValueError(f"view {view.name!r} has a feature named {self.TIMESTAMP_KEY!r}")
            hashes = [_mmh3(f"{spec.fv_name}:{name}") for name, _ in chosen]
            fields = b"".join(b"$%d\r\n%s\r\n" % (len(h), h) for h in [*hashes, spec.ts_field])
            name = spec.join_key.encode("utf8")
            self._plans[view.name] = _ReadPlan(
                name=view.name,
                key_prefix=struct.pack("<III", 1, ValueType.STRING.value, len(name)) + name,
                key_type=spec.key_type,
                command_head=b"*%d\r\n$5\r\nHMGET\r\n" % (2 + len(hashes) + 1),
                fields=fields,
                names=tuple(n for n, _ in chosen),
                types=tuple(t for _, t in chosen),
            )
        self._pack_int64 = struct.Struct("<IIq")
        self._pack_int32 = struct.Struct("<IIi")

    @classmethod
    def from_store(
        cls, store: FeatureStore, view_names: Sequence[str], **kwargs: Any
    ) -> RedisFeatureReader:
        """Build a reader for views looked up in ``store``'s registry."""
        return cls(store.config, [_registered_view(store, n) for n in view_names], **kwargs)

    def __enter__(self) -> RedisFeatureReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the sockets."""
        self._topology.close()

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
        packer = self._pack_int64 if plan.key_type == ValueType.INT64 else self._pack_int32
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
        hashes = [self._key(plan, value) for plan, (_, value) in zip(plans, pairs, strict=True)]
        commands = [
            *(
                b"".join((plan.command_head, b"$%d\r\n" % len(key), key, _CRLF, plan.fields))
                for plan, key in zip(plans, hashes, strict=True)
            ),
            *(b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(key), key) for key in keys),
        ]
        all_keys = [*hashes, *keys]
        replies = self._fetch(all_keys, commands)
        errors = [str(r) for r in replies if isinstance(r, _REPLY_ERRORS)]
        if errors and self._topology.cluster and errors[0].startswith(("MOVED", "ASK")):
            self._topology.refresh()  # resharded since the slot map was loaded: retry once
            replies = self._fetch(all_keys, commands)
            errors = [str(r) for r in replies if isinstance(r, _REPLY_ERRORS)]
        if errors:
            raise RedisCommandError(f"HMGET/GET failed: {errors[0]}", errors)
        values = replies[len(plans) :]
        replies = replies[: len(plans)]
        results: list[dict[str, Any]] = []
        for plan, reply in zip(plans, replies, strict=True):
            row = {
                name: decode_value(raw, vt)
                for name, vt, raw in zip(plan.names, plan.types, reply, strict=False)
            }
            row[self.TIMESTAMP_KEY] = decode_timestamp(reply[-1])
            results.append(row)
        return results, values

    def _fetch(self, keys: Sequence[bytes], encoded: Sequence[bytes]) -> list[Any]:
        """The encoded commands on ``keys``, pipelined to every owning node before any reply
        is read; replies in command order."""
        topology = self._topology
        commands: dict[int, list[bytes]] = {}
        order: list[tuple[int, int]] = []
        for key, command in zip(keys, encoded, strict=True):
            owner = topology.owner_of(key)
            batch = commands.setdefault(owner, [])
            order.append((owner, len(batch)))
            batch.append(command)
        connections = topology.connections
        try:
            for owner, batch in commands.items():
                connections[owner].send(b"".join(batch))
            replies = {o: connections[o].read_replies(len(b)) for o, b in commands.items()}
        except BaseException:
            topology.close()  # replies may be left unread: never reuse these sockets
            raise
        return [replies[owner][position] for owner, position in order]

    def read(self, entities: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """Read one entity per view: ``{view name: entity key value}`` -> ``{view name: row}``."""
        names = list(entities)
        rows = self.read_pairs([(name, entities[name]) for name in names])
        return dict(zip(names, rows, strict=True))

    def iter_views(self) -> Iterator[str]:
        """Names of the views this reader can read."""
        return iter(self._plans)
