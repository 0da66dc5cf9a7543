"""Feast's Redis keys, whole columns at a time: ``serialize_entity_key(entity_key, v3) +
project`` (see :mod:`feast.infra.key_encoding_utils`) for STRING, INT64 and INT32 join keys,
and their RESP bulk strings for the commands of :mod:`pipeline.features.online.encoding`.

:func:`serialize_entity_keys` returns exactly Feast's bytes (the tests compare them with
Feast's own function).
"""

from __future__ import annotations

import struct

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from feast.value_type import ValueType

from pipeline.features.online.bytematrix import (
    Payload,
    Piece,
    Var,
    assemble,
    bulk_string,
    const,
    dense,
)
from pipeline.features.online.encoding import utf8_bytes
from pipeline.features.online.layout import ViewSpec


def _key_payload(
    series: pl.Series, join_key: str, value_type: ValueType, project: bytes
) -> Payload:
    if series.null_count():
        raise ValueError(f"join key column {join_key!r} has nulls")
    n = len(series)
    name = join_key.encode("utf8")
    prefix = struct.pack("<III", 1, ValueType.STRING.value, len(name)) + name
    if value_type == ValueType.STRING:
        values = utf8_bytes(series)
        lengths = pc.binary_length(values).to_numpy().astype(np.int64)
        le32 = np.ascontiguousarray(lengths.astype("<u4")).view(np.uint8).reshape(n, 4)
        pieces: list[Piece] = [
            const(prefix + struct.pack("<I", ValueType.STRING.value)),
            dense(le32, None, 4),
            Var(values),
            const(project),
        ]
        total = len(prefix) + 8 + len(project) + lengths
        return Payload(pieces, total.astype(np.int64))
    if value_type in (ValueType.INT64, ValueType.INT32):
        wide = value_type == ValueType.INT64
        dtype = "<i8" if wide else "<i4"
        raw = series.cast(pl.Int64 if wide else pl.Int32).to_numpy().astype(dtype)
        size = 8 if wide else 4
        body = np.ascontiguousarray(raw).view(np.uint8).reshape(n, size)
        pieces = [
            const(prefix + struct.pack("<II", value_type.value, size)),
            dense(body, None, size),
            const(project),
        ]
        return Payload(pieces, np.full(n, len(prefix) + 8 + size + len(project), np.int64))
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
    return assemble(payload.pieces, len(series))


def redis_keys(
    series: pl.Series, join_key: str, value_type: ValueType, project: str
) -> pa.LargeBinaryArray:
    """Feast's Redis keys (``serialize_entity_key(..., 3) + project``) for a whole column."""
    payload = _key_payload(series, join_key, value_type, project.encode("utf8"))
    return assemble(payload.pieces, len(series))


def key_arrays(
    spec: ViewSpec, keys: pl.Series, project: bytes
) -> tuple[pa.LargeBinaryArray, pa.LargeBinaryArray]:
    """Raw Redis keys of ``keys`` (Feast's layout) and their RESP bulk strings."""
    payload = _key_payload(keys, spec.join_key, spec.key_type, project)
    n = len(keys)
    raw = assemble(payload.pieces, n)
    bulk = assemble(bulk_string([Var(raw)], payload.lengths), n)
    return raw, bulk
