"""Feast's Redis layout as bytes, whole columns at a time.

* Redis key: ``serialize_entity_key(entity_key, v3) + project`` (see
  :mod:`feast.infra.key_encoding_utils`), a hash with
* ``_ts:<view>`` -> serialised ``google.protobuf.Timestamp`` of the event time, and
* ``_mmh3("<view>:<feature>")`` (4 bytes) -> serialised ``feast.types.Value``; a null (or NaN)
  scalar is an empty ``Value`` (zero bytes), a null ``UnixTimestamp`` is
  ``unix_timestamp_val = NaT`` as Feast writes it.

:func:`serialize_values` and :func:`serialize_timestamps` (and
:func:`pipeline.features.online.keys.serialize_entity_keys`) return exactly Feast's bytes (the
tests compare them with Feast's own functions); :func:`hset_commands` and
:func:`hmget_ts_commands` frame them as RESP commands for thousands of rows at once, built from
:mod:`pipeline.features.online.bytematrix` pieces.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from feast.type_map import NULL_TIMESTAMP_INT_VALUE, python_values_to_proto_values
from feast.value_type import ValueType

from pipeline.features.online.bytematrix import (
    CRLF,
    EMPTY,
    I64,
    U8,
    Mask,
    Mat,
    Payload,
    Piece,
    Short,
    Var,
    assemble,
    binary_from,
    bulk_string,
    const,
    dense,
    header_matrix,
    offsets_of,
    row_lengths,
    varint,
)
from pipeline.features.online.layout import EVENT_TIMESTAMP, ViewSpec

NULL_TS = int(NULL_TIMESTAMP_INT_VALUE)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Protobuf tags (field number << 3 | wire type) of feast.types.Value, checked against
# Value.DESCRIPTOR in the tests; the reader decodes with them too.
TAG_STRING = 0x12  # 2: string_val, length-delimited
TAG_INT32 = 0x18  # 3: int32_val, varint
TAG_INT64 = 0x20  # 4: int64_val, varint
TAG_DOUBLE = 0x29  # 5: double_val, 64-bit
TAG_FLOAT = 0x35  # 6: float_val, 32-bit
TAG_BOOL = 0x38  # 7: bool_val, varint
TAG_UNIX_TS = 0x40  # 8: unix_timestamp_val, varint
TAG_STRING_LIST = b"\x62"  # 12: string_list_val, length-delimited
TAG_FLOAT_LIST = b"\x82\x01"  # 16: float_list_val, length-delimited (two-byte tag)
TAG_LIST_ITEMS = 0x0A  # StringList.val / FloatList.val (field 1, length-delimited / packed)
TAG_TS_SECONDS = 0x08  # google.protobuf.Timestamp.seconds
TAG_TS_NANOS = 0x10  # google.protobuf.Timestamp.nanos


def _arrow(series: pl.Series) -> pa.Array:
    array = series.rechunk().to_arrow()
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    return array


def _to_binary(array: pa.Array) -> pa.LargeBinaryArray:
    return cast(pa.LargeBinaryArray, pc.cast(array, pa.large_binary()))


def _fixed(tag: int, raw: U8, null: Mask, *, framed: bool) -> Mat:
    """A fixed-size scalar (tag + k bytes); null rows hold an empty Value.

    Framed, the slot is the whole RESP bulk string: ``$<k+1>\\r\\n<tag><bytes>\\r\\n``, or
    ``$0\\r\\n\\r\\n`` for nulls.
    """
    k = raw.shape[1]
    head = b"$%d\r\n" % (k + 1) if framed else b""
    tail = CRLF if framed else b""
    template = np.frombuffer(head + bytes([tag]) + bytes(k) + tail, dtype=np.uint8)
    width = len(template)
    null_rows = np.flatnonzero(null)
    if not len(null_rows):
        return Mat(template, width, ((len(head) + 1, raw),))
    empty = b"$0\r\n\r\n" if framed else b""
    lengths = np.where(null, len(empty), width).astype(np.int64)
    short = Short(null_rows, np.zeros(len(null_rows), np.intp), 0, empty)
    return Mat(template, lengths, ((len(head) + 1, raw),), None, short)


def _fixed_fields(tag: int, raw: U8, null: Mask, hashes: Sequence[bytes]) -> Mat:
    """Several fixed-size features at once: ``$4 <hash> $<k+1> <tag><bytes>`` per field.

    ``raw`` is ``(n, fields, k)``; a null cell holds an empty bulk string (empty Value).
    """
    n, fields, k = raw.shape
    value = b"$%d\r\n" % (k + 1) + bytes([tag]) + bytes(k) + CRLF
    template = np.frombuffer(
        b"".join(b"$%d\r\n%s\r\n" % (len(h), h) + value for h in hashes), dtype=np.uint8
    )
    header = len(hashes[0]) + len(b"$%d\r\n\r\n" % len(hashes[0]))
    at = header + len(b"$%d\r\n" % (k + 1)) + 1
    rows, cells = np.nonzero(null)
    if not len(rows):
        return Mat(template, len(template), ((at, raw),), fields=fields)
    empty = b"$0\r\n\r\n"
    lengths = len(template) - null.sum(axis=1).astype(np.int64) * (len(value) - len(empty))
    short = Short(rows, cells, header, empty)
    return Mat(template, lengths, ((at, raw),), None, short, fields)


def _varint_payload(tag: int, values: npt.NDArray[Any], null: Mask) -> Payload:
    data, vmask, nbytes = varint(values)
    n = len(values)
    present = ~null
    out = np.empty((n, 11), dtype=np.uint8)
    out[:, 0] = tag
    out[:, 1:] = data
    mask = np.empty((n, 11), dtype=np.bool_)
    mask[:, 0] = present
    mask[:, 1:] = vmask & present[:, None]
    lengths = np.where(present, 1 + nbytes, 0).astype(np.int64)
    return Payload([dense(out, mask, lengths)], lengths)


def _float_values(series: pl.Series, dtype: type[np.floating[Any]]) -> tuple[U8, Mask]:
    target = pl.Float32 if dtype is np.float32 else pl.Float64
    values = np.ascontiguousarray(series.cast(target).to_numpy(), dtype=dtype)
    null = np.isnan(values)  # nulls come out as NaN; Feast stores NaN as null too
    return values.view(np.uint8).reshape(len(values), -1), null


def _int_values(series: pl.Series, dtype: pl.DataType | type[pl.DataType]) -> tuple[I64, Mask]:
    null = series.is_null().to_numpy()
    values = series.cast(dtype).fill_null(0).cast(pl.Int64).to_numpy()
    return np.ascontiguousarray(values, dtype=np.int64), np.ascontiguousarray(null, dtype=bool)


def epoch_micros(series: pl.Series) -> I64:
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


def _unix_timestamp_payload(series: pl.Series) -> Payload:
    null = np.ascontiguousarray(series.is_null().to_numpy(), dtype=bool)
    if isinstance(series.dtype, pl.Datetime):
        seconds = np.floor_divide(epoch_micros(series), 1_000_000)
    else:
        seconds = series.cast(pl.Int64).fill_null(0).to_numpy().astype(np.int64)
    # Feast writes a null UnixTimestamp as unix_timestamp_val = NaT (not as an empty Value).
    seconds = np.where(null, NULL_TS, seconds)
    return _varint_payload(TAG_UNIX_TS, seconds, np.zeros(len(seconds), dtype=bool))


def utf8_bytes(series: pl.Series) -> pa.LargeBinaryArray:
    """A column's values as UTF-8 bytes (nulls stay null)."""
    return _to_binary(_arrow(series.cast(pl.String)))


def _string_payload(series: pl.Series) -> Payload:
    array = utf8_bytes(series)
    null = np.asarray(array.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    lengths = pc.fill_null(pc.binary_length(array), 0).to_numpy().astype(np.int64)
    header, _, header_len = header_matrix(bytes([TAG_STRING]), lengths, ~null)
    values = cast(pa.LargeBinaryArray, pc.fill_null(array, EMPTY))
    return Payload([header, Var(values)], header_len + np.where(null, 0, lengths))


def _list_rows(series: pl.Series) -> tuple[pa.Array, Mask, I64]:
    array = _arrow(series)
    null = np.asarray(array.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    counts = pc.fill_null(pc.list_value_length(array), 0).to_numpy().astype(np.int64)
    return pc.list_flatten(array), null, counts


def _string_list_payload(series: pl.Series) -> Payload:
    """``string_list_val``: StringList{val: repeated string}; null items become ``""``."""
    n = len(series)
    items, null, counts = _list_rows(series)
    items = pc.fill_null(_to_binary(items.cast(pa.large_string())), EMPTY)
    m = len(items)
    item_len = pc.binary_length(items).to_numpy().astype(np.int64)
    item_header, _, _ = header_matrix(bytes([TAG_LIST_ITEMS]), item_len, np.ones(m, bool))
    encoded = assemble([item_header, Var(cast(pa.LargeBinaryArray, items))], m)
    item_offsets = np.frombuffer(encoded.buffers()[1], dtype=np.int64, count=m + 1)
    row_offsets = item_offsets[offsets_of(counts)]
    message_len = np.diff(row_offsets)
    data = encoded.buffers()[2]
    rows = binary_from(
        np.ascontiguousarray(row_offsets - row_offsets[0]),
        np.frombuffer(data, np.uint8)[row_offsets[0] : row_offsets[-1]]
        if data is not None
        else np.zeros(0, np.uint8),
        n,
    )
    header, _, header_len = header_matrix(TAG_STRING_LIST, message_len, ~null)
    return Payload([header, Var(rows)], header_len + np.where(null, 0, message_len))


def _float_list_payload(series: pl.Series) -> Payload:
    """``float_list_val``: FloatList{packed float val}; null items become NaN (as in Feast)."""
    n = len(series)
    items, null, counts = _list_rows(series)
    values = np.ascontiguousarray(
        pc.cast(items, pa.float32()).to_numpy(zero_copy_only=False), dtype=np.float32
    )
    packed = binary_from(offsets_of(counts * 4), values.view(np.uint8), n)
    inner_len = counts * 4
    inner_data, inner_mask, inner_nbytes = varint(inner_len)
    has_items = counts > 0
    message_len = np.where(has_items, 1 + inner_nbytes, 0) + inner_len
    outer_data, outer_mask, outer_nbytes = varint(message_len)
    present = ~null
    out = np.empty((n, 2 + 10 + 1 + 10), dtype=np.uint8)
    out[:, 0:2] = np.frombuffer(TAG_FLOAT_LIST, dtype=np.uint8)
    out[:, 2:12] = outer_data
    out[:, 12] = TAG_LIST_ITEMS
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
    return Payload([dense(out, mask, header_len), Var(packed)], lengths)


def _generic_payload(series: pl.Series, value_type: ValueType) -> Payload:
    """Any other Feast type, serialised per row by Feast's own conversion (slow but exact)."""
    values = _arrow(series).to_numpy(zero_copy_only=False)
    protos = python_values_to_proto_values(values, value_type)
    array = cast(
        pa.LargeBinaryArray,
        pa.array([p.SerializeToString() for p in protos], type=pa.large_binary()),
    )
    return Payload([Var(array)], row_lengths(array))


_FIXED_KINDS = {
    ValueType.FLOAT: TAG_FLOAT,
    ValueType.DOUBLE: TAG_DOUBLE,
    ValueType.BOOL: TAG_BOOL,
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


def _value_pieces(series: pl.Series, value_type: ValueType, *, framed: bool) -> list[Piece]:
    """The serialised ``Value`` of every row, as a RESP bulk string if ``framed``."""
    if value_type == ValueType.FLOAT:
        raw, null = _float_values(series, np.float32)
        return [_fixed(TAG_FLOAT, raw, null, framed=framed)]
    if value_type == ValueType.DOUBLE:
        raw, null = _float_values(series, np.float64)
        return [_fixed(TAG_DOUBLE, raw, null, framed=framed)]
    if value_type == ValueType.BOOL:
        null = np.ascontiguousarray(series.is_null().to_numpy(), dtype=bool)
        flags = series.cast(pl.Boolean).fill_null(False).to_numpy().astype(np.uint8)
        return [_fixed(TAG_BOOL, flags.reshape(-1, 1), null, framed=framed)]
    payload = _payload(series, value_type)
    if framed:
        return bulk_string(payload.pieces, payload.lengths)
    return payload.pieces


def _payload(series: pl.Series, value_type: ValueType) -> Payload:
    """Variable-size kinds (integers, strings, timestamps, lists, anything else)."""
    if value_type == ValueType.INT64:
        ints, null = _int_values(series, pl.Int64)
        return _varint_payload(TAG_INT64, ints, null)
    if value_type == ValueType.INT32:
        ints, null = _int_values(series, pl.Int32)
        return _varint_payload(TAG_INT32, ints, null)
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
    return assemble(_value_pieces(series, value_type, framed=False), len(series))


def _timestamp_payload(micros: I64) -> Payload:
    """google.protobuf.Timestamp(seconds, nanos) from floored epoch microseconds."""
    seconds = np.floor_divide(micros, 1_000_000)
    nanos = (micros - seconds * 1_000_000) * 1000
    sec_data, sec_mask, sec_nbytes = varint(seconds)
    nano_data, nano_mask, nano_nbytes = varint(nanos)
    n = len(micros)
    has_s = seconds != 0
    has_n = nanos != 0
    out = np.empty((n, 17), dtype=np.uint8)
    out[:, 0] = TAG_TS_SECONDS
    out[:, 1:11] = sec_data
    out[:, 11] = TAG_TS_NANOS
    out[:, 12:17] = nano_data[:, :5]
    mask = np.empty((n, 17), dtype=np.bool_)
    mask[:, 0] = has_s
    mask[:, 1:11] = sec_mask & has_s[:, None]
    mask[:, 11] = has_n
    mask[:, 12:17] = nano_mask[:, :5] & has_n[:, None]
    lengths = (np.where(has_s, 1 + sec_nbytes, 0) + np.where(has_n, 1 + nano_nbytes, 0)).astype(
        np.int64
    )
    return Payload([dense(out, mask, lengths)], lengths)


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
    payload = _timestamp_payload(epoch_micros(series))
    return assemble(payload.pieces, len(series))


def hset_commands(
    spec: ViewSpec, chunk: pl.DataFrame, bulk: pa.LargeBinaryArray, ttl: int | None
) -> pa.LargeBinaryArray:
    """``HSET key _ts:<view> <ts> <field> <value> ...`` (+ ``EXPIRE``) for every row.

    Fields in Feast's order: ``_ts`` first, then the features in view order.
    """
    n_fields = 1 + len(spec.features)
    pieces: list[Piece] = [
        const(b"*%d\r\n$4\r\nHSET\r\n" % (2 + 2 * n_fields)),
        Var(bulk),
        const(b"$%d\r\n%s\r\n" % (len(spec.ts_field), spec.ts_field)),
    ]
    ts = _timestamp_payload(epoch_micros(chunk.get_column(EVENT_TIMESTAMP)))
    pieces += bulk_string(ts.pieces, ts.lengths)
    features = list(zip(spec.features, spec.field_hashes, strict=True))
    i = 0
    while i < len(features):
        (name, value_type), field_hash = features[i]
        end = i + 1
        while (
            value_type in _FIXED_KINDS and end < len(features) and features[end][0][1] == value_type
        ):
            end += 1
        if end - i > 1:  # a run of fixed-size features of one type: one block
            names = [feature[0][0] for feature in features[i:end]]
            raw, null = _fixed_columns(chunk, names, value_type)
            hashes = [feature[1] for feature in features[i:end]]
            pieces.append(_fixed_fields(_FIXED_KINDS[value_type], raw, null, hashes))
        else:
            pieces.append(const(b"$4\r\n" + field_hash + CRLF))
            pieces += _value_pieces(chunk.get_column(name), value_type, framed=True)
        i = end
    if ttl:
        seconds = str(int(ttl)).encode()
        pieces += [
            const(b"*3\r\n$6\r\nEXPIRE\r\n"),
            Var(bulk),
            const(b"$%d\r\n%s\r\n" % (len(seconds), seconds)),
        ]
    return assemble(pieces, chunk.height)


def hmget_ts_commands(spec: ViewSpec, bulk: pa.LargeBinaryArray) -> pa.LargeBinaryArray:
    """``HMGET key _ts:<view>`` for every row: the stored event time, for Feast's dedup."""
    header = b"*3\r\n$5\r\nHMGET\r\n"
    tail = b"$%d\r\n%s\r\n" % (len(spec.ts_field), spec.ts_field)
    return assemble([const(header), Var(bulk), const(tail)], len(bulk))
