"""Stored bytes back to Python values, as ``OnlineResponse.to_dict()`` gives them.

Scalars are decoded directly from the protobuf wire format (the tags of
:mod:`pipeline.features.online.encoding`); other kinds go through protobuf and Feast's
``feast_value_type_to_python_type``.
"""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta
from typing import Any

from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.type_map import feast_value_type_to_python_type
from feast.value_type import ValueType
from google.protobuf.timestamp_pb2 import Timestamp

from pipeline.features.online.encoding import (
    EPOCH,
    NULL_TS,
    TAG_BOOL,
    TAG_DOUBLE,
    TAG_FLOAT,
    TAG_INT32,
    TAG_INT64,
    TAG_STRING,
    TAG_TS_NANOS,
    TAG_TS_SECONDS,
    TAG_UNIX_TS,
)


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
    if tag == TAG_FLOAT and size == 5:
        return _FLOAT.unpack_from(data, 1)[0]
    if tag == TAG_DOUBLE and size == 9:
        return _DOUBLE.unpack_from(data, 1)[0]
    if tag == TAG_STRING and value_type in (None, ValueType.STRING):
        length, pos = _read_varint(data, 1)
        if pos + length == size:
            return data[pos:].decode("utf8")
    elif tag in (TAG_INT64, TAG_INT32):
        value, pos = _read_varint(data, 1)
        if pos == size:
            return _signed64(value)
    elif tag == TAG_BOOL and size == 2:
        return data[1] != 0
    elif tag == TAG_UNIX_TS:
        value, pos = _read_varint(data, 1)
        if pos == size:
            seconds = _signed64(value)
            if seconds == NULL_TS:
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
        if tag == TAG_TS_SECONDS:
            seconds = _signed64(value)
        elif tag == TAG_TS_NANOS:
            nanos = value
        else:
            stamp = Timestamp()
            stamp.ParseFromString(data)
            seconds, nanos = stamp.seconds, stamp.nanos
            break
    return EPOCH + timedelta(seconds=seconds, microseconds=nanos // 1000)
