"""Feast's Redis layout as bytes: every encoder against Feast's own functions (no server)."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pytest
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from feast.type_map import feast_value_type_to_python_type, python_values_to_proto_values
from feast.value_type import ValueType
from google.protobuf.timestamp_pb2 import Timestamp

from pipeline.features.online import encoding
from pipeline.features.online import keys as entity_keys
from pipeline.features.online.decoding import decode_timestamp, decode_value
from tests.conftest import same_value


def test_value_tags_match_the_feast_proto() -> None:
    fields = {f.name: f for f in Value.DESCRIPTOR.fields}

    def tag(name: str) -> int:
        field = fields[name]
        wire = {1: 1, 2: 5, 3: 0, 5: 0, 8: 0, 9: 2, 11: 2}[field.type]
        return field.number << 3 | wire

    assert tag("string_val") == encoding.TAG_STRING
    assert tag("int32_val") == encoding.TAG_INT32
    assert tag("int64_val") == encoding.TAG_INT64
    assert tag("double_val") == encoding.TAG_DOUBLE
    assert tag("float_val") == encoding.TAG_FLOAT
    assert tag("bool_val") == encoding.TAG_BOOL
    assert tag("unix_timestamp_val") == encoding.TAG_UNIX_TS
    assert bytes([tag("string_list_val")]) == encoding.TAG_STRING_LIST
    assert tag("float_list_val") == 130 and encoding.TAG_FLOAT_LIST == b"\x82\x01"


ENCODING_CASES = [
    (
        pl.Series([1.5, None, float("nan"), 0.0, -0.0, 0.1, 3.4e38, -1e-45], dtype=pl.Float32),
        "FLOAT",
    ),
    (pl.Series([0.1, None, 1e300], dtype=pl.Float64), "FLOAT"),
    (pl.Series([1.5, None, float("nan"), 0.0, -0.0, 1e300], dtype=pl.Float64), "DOUBLE"),
    (pl.Series([1, None, -1, 0, 2**31 - 1, -(2**31), 127, 128], dtype=pl.Int32), "INT32"),
    (pl.Series([1, -1, 0, 2**63 - 1, -(2**63), 16383, 16384], dtype=pl.Int64), "INT64"),
    (pl.Series([5, None, -7], dtype=pl.Int64), "INT64"),
    (pl.Series([True, None, False], dtype=pl.Boolean), "BOOL"),
    (pl.Series(["x", None, "", "héllo", "a\r\nb", "z" * 300]), "STRING"),
    (
        pl.Series(
            [
                datetime(2024, 1, 1, tzinfo=UTC),
                None,
                datetime(2024, 1, 1, 0, 0, 0, 999_999, tzinfo=UTC),
                datetime(1969, 12, 31, 23, 59, 59, 500_000, tzinfo=UTC),
            ],
            dtype=pl.Datetime("us", "UTC"),
        ),
        "UNIX_TIMESTAMP",
    ),
    (
        pl.Series([["a", "b"], None, [], ["", None], ["q" * 200]], dtype=pl.List(pl.String)),
        "STRING_LIST",
    ),
    (
        pl.Series(
            [[1.0, 2.5], None, [], [float("nan")], [None, 1.0], [0.1] * 40],
            dtype=pl.List(pl.Float32),
        ),
        "FLOAT_LIST",
    ),
    (pl.Series([[1, 2], None, []], dtype=pl.List(pl.Int64)), "INT64_LIST"),  # generic path
]


@pytest.mark.parametrize(("series", "kind"), ENCODING_CASES, ids=[c[1] for c in ENCODING_CASES])
def test_serialize_values_equals_feast(series: pl.Series, kind: str) -> None:
    value_type = ValueType[kind]
    feast = python_values_to_proto_values(
        series.to_arrow().to_numpy(zero_copy_only=False), value_type
    )
    ours = encoding.serialize_values(series, value_type).to_pylist()
    assert ours == [v.SerializeToString() for v in feast]
    for raw, proto in zip(ours, feast, strict=True):
        assert same_value(
            decode_value(raw, value_type), feast_value_type_to_python_type(proto, value_type)
        )


def test_null_float_is_an_empty_value_and_zero_is_not() -> None:
    encoded = encoding.serialize_values(
        pl.Series([None, 0.0, float("nan")], dtype=pl.Float32), ValueType.FLOAT
    )
    assert encoded.to_pylist() == [b"", Value(float_val=0.0).SerializeToString(), b""]
    assert Value(float_val=0.0).SerializeToString() == b"\x35\x00\x00\x00\x00"
    assert Value(string_val="").SerializeToString() == b"\x12\x00"


def test_timestamps_and_keys_equal_feast() -> None:
    moments = [
        datetime(2024, 1, 1, tzinfo=UTC),
        datetime(2024, 1, 1, 0, 0, 0, 123_456, tzinfo=UTC),
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 500_000, tzinfo=UTC),
        datetime(2262, 1, 1, tzinfo=UTC),
    ]
    expected = []
    for moment in moments:
        stamp = Timestamp()
        stamp.FromDatetime(moment)
        expected.append(stamp.SerializeToString())
    series = pl.Series(moments, dtype=pl.Datetime("us", "UTC"))
    assert encoding.serialize_timestamps(series).to_pylist() == expected
    assert (
        encoding.serialize_timestamps(series.cast(pl.Datetime("ns", "UTC"))).to_pylist() == expected
    )
    assert decode_timestamp(expected[1]) == moments[1]
    assert decode_timestamp(expected[3]) == moments[3]

    names = ["a", "", "héllo", "x" * 300, "{tag}", "a{}b"]
    keys = entity_keys.redis_keys(
        pl.Series(names), "customer_id", ValueType.STRING, "proj"
    ).to_pylist()
    assert keys == [
        serialize_entity_key(
            EntityKey(join_keys=["customer_id"], entity_values=[Value(string_val=n)]), 3
        )
        + b"proj"
        for n in names
    ]
    ids = pl.Series([0, -1, 2**62], dtype=pl.Int64)
    assert entity_keys.serialize_entity_keys(ids, "item_id", ValueType.INT64).to_pylist() == [
        serialize_entity_key(
            EntityKey(join_keys=["item_id"], entity_values=[Value(int64_val=i)]), 3
        )
        for i in ids.to_list()
    ]
