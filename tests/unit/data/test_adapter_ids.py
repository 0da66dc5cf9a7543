"""Adapter ids come from a row's content, never its position: a file cut in two keeps them."""

from datetime import datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from pipeline.data import adapters

FIXTURES = Path(__file__).parents[2] / "fixtures"


def _clicks(rows: list[tuple[int, int, int]]) -> pl.DataFrame:
    start = datetime(2024, 1, 1)
    return pl.DataFrame(
        {
            "session_id": [str(s) for s, _, _ in rows],
            "customer_id": pl.Series([None] * len(rows), dtype=pl.String),
            "item_id": [str(i) for _, i, _ in rows],
            "ts": [start + timedelta(minutes=m) for _, _, m in rows],
        },
        schema_overrides={"ts": pl.Datetime("ms")},
    )


rows = st.lists(
    st.tuples(st.integers(0, 5), st.integers(0, 5), st.integers(0, 30)), min_size=1, max_size=60
)


@hsettings(max_examples=60, deadline=None)
@given(rows, st.randoms(use_true_random=False))
def test_event_ids_are_unique_and_follow_the_row_not_its_position(clicks, rnd):
    frame = _clicks(clicks)
    ids = adapters.content_ids(frame, frame.columns, "x")
    assert ids.n_unique() == frame.height  # exact repeats get their occurrence number
    # The same rows in another order (repeats kept in their relative order) keep their ids.
    order = list(range(frame.height))
    rnd.shuffle(order)
    shuffled = frame[order]
    again = adapters.content_ids(shuffled, shuffled.columns, "x")
    by_row = dict(zip(zip(*[frame[c] for c in frame.columns], strict=True), ids, strict=True))
    for row, event_id in zip(
        zip(*[shuffled[c] for c in shuffled.columns], strict=True), again, strict=True
    ):
        # Rows that repeat exactly may swap occurrence numbers; all others keep their id.
        assert event_id.split("-")[1] == by_row[row].split("-")[1]
    assert sorted(again) == sorted(ids)


@hsettings(max_examples=40, deadline=None)
@given(rows, st.integers(0, 30))
def test_a_cut_source_keeps_every_id_and_no_id_crosses_sides(clicks, minute):
    frame = _clicks(clicks)
    whole = adapters.RawTables(
        "t",
        source_rows=frame,
        rebuild=lambda r: adapters.RawTables(
            "t", {"ids": adapters.content_ids(r, r.columns, "t").to_frame()}
        ),
    )
    at = datetime(2024, 1, 1) + timedelta(minutes=minute)
    starts = frame.group_by("session_id").agg(pl.col("ts").min())
    if not (starts["ts"] < at).any() or not (starts["ts"] >= at).any():
        with pytest.raises(ValueError, match="both sides need rows"):
            whole.cut(at)
        return
    before, after = whole.cut(at)
    all_ids = set(adapters.content_ids(frame, frame.columns, "t"))
    left, right = set(before.tables["ids"]["event_id"]), set(after.tables["ids"]["event_id"])
    assert not left & right
    assert left | right == all_ids


def test_two_files_of_one_click_stream_never_share_events_or_merge_sessions():
    path = FIXTURES / "yoochoose_sample.tsv"
    train, test = adapters.yoochoose(path, "train"), adapters.yoochoose(path, "test")
    a, b = (s.tables["session_events"] for s in (train, test))
    assert a["event_id"].to_list() == b["event_id"].to_list()  # same rows, same ids
    assert not set(a["session_id"]) & set(b["session_id"])  # sessions apart by namespace
    assert a["session_id"].str.starts_with("train:").all()


def test_rent_the_runway_profile_is_the_one_first_seen():
    path = FIXTURES / "rtr_clean_timeline_sample.parquet"
    source = adapters.rent_the_runway_clean(path)
    raw = pl.read_parquet(path).sort("review_date")
    customers = source.tables["customers"]
    tries = source.tables["try_ons"]
    assert tries["event_id"].n_unique() == tries.height == raw.height
    assert (tries["event_id"] == tries["session_id"]).all()
    for user in raw["user_id"].unique().sort().head(20):
        first = raw.filter(pl.col("user_id") == user).row(0, named=True)
        row = customers.filter(pl.col("customer_id") == str(user)).row(0, named=True)
        expected = None if first["weight_lbs"] is None else f"{first['weight_lbs']}lbs"
        assert row["weight_kg"] == expected
