from datetime import UTC, datetime

import polars as pl

from pipeline.data.contracts import SESSION_EVENTS, TRY_ONS, conform, parse_timestamp


def _events(**overrides: list) -> pl.DataFrame:
    base = {
        "event_id": ["e1"],
        "session_id": ["s1"],
        "customer_id": ["C1"],
        "event_type": ["view"],
        "item_id": ["I1"],
        "ts": ["2026-10-01T10:00:00Z"],
    }
    base.update(overrides)
    return pl.DataFrame(base)


def test_valid_row_has_no_reason_and_typed_columns():
    out = conform(_events(), SESSION_EVENTS)
    assert out["reason"].to_list() == [None]
    assert out.schema["ts"] == pl.Datetime("us", "UTC")
    assert out["ts"][0] == datetime(2026, 10, 1, 10, tzinfo=UTC)


def test_every_broken_rule_is_named():
    out = conform(_events(event_type=["teleport"], ts=["not a time"], item_id=[""]), SESSION_EVENTS)
    reasons = set(out["reason"][0].split(";"))
    assert reasons == {"not_allowed:event_type", "bad_type:ts", "missing:item_id"}


def test_nullable_customer_is_allowed_but_missing_columns_are_not():
    out = conform(_events(customer_id=[None]), SESSION_EVENTS)
    assert out["reason"][0] is None
    out = conform(_events().drop("session_id"), SESSION_EVENTS)
    assert out["reason"][0] == "missing:session_id"


def test_ranges_and_booleans():
    raw = pl.DataFrame(
        {
            "event_id": ["t1", "t2"],
            "session_id": ["s", "s"],
            "customer_id": ["c", "c"],
            "item_id": ["i", "i"],
            "size": ["M", "M"],
            "fit_feedback": ["fits", "too_small"],
            "duration_s": ["30", "-5"],
            "liked": ["true", "maybe"],
            "added_to_cart": ["0", "1"],
            "ts": ["2026-10-01", "2026-10-01"],
        }
    )
    out = conform(raw, TRY_ONS)
    assert out["reason"][0] is None
    assert out["liked"][0] is True and out["added_to_cart"][0] is False
    assert set(out["reason"][1].split(";")) == {"out_of_range:duration_s", "bad_type:liked"}


def test_timestamp_formats_all_land_in_utc():
    texts = [
        "2026-01-01T10:00:00Z",
        "2026-01-01T12:00:00+02:00",
        "2026-01-01 10:00:00",
        "1767261600",
    ]
    parsed = pl.DataFrame({"t": texts}).select(parse_timestamp(pl.col("t")))["t"].to_list()
    assert parsed == [datetime(2026, 1, 1, 10, tzinfo=UTC)] * 4
