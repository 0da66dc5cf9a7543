"""The online store's state against the offline side: the verdict, the watermark's encoding,
and the SQLite store's counts (a real Feast SQLite online database, keys deleted)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.features.online.state import (
    STATE_TABLE,
    Watermark,
    compare,
    offline_entities,
)

moments = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
counts = st.integers(min_value=0, max_value=10**9)
marks = st.builds(Watermark, end=moments, rows=counts, written_at=moments)


@given(
    offline=counts,
    online=counts,
    mark=st.none() | marks,
    registry_end=st.none() | moments,
)
def test_complete_only_with_watermark_all_entities_and_not_behind(
    offline: int, online: int, mark: Watermark | None, registry_end: datetime | None
) -> None:
    state = compare("v", offline, online, mark, registry_end)
    expected = (
        registry_end is not None
        and mark is not None
        and online >= offline
        and mark.end >= registry_end
    )
    assert state.complete is expected
    assert (state.reason is None) is expected
    assert state.online_rows <= state.offline_rows
    if expected:
        assert state.online_rows == offline


@given(offline=st.integers(min_value=1, max_value=10**6), data=st.data(), mark=marks)
def test_a_partial_store_names_how_many_entities_it_holds(
    offline: int, data: st.DataObject, mark: Watermark
) -> None:
    online = data.draw(st.integers(min_value=0, max_value=offline - 1))
    state = compare("v", offline, online, mark, mark.end)
    assert not state.complete
    assert state.reason == f"online store holds {online} of {offline} entities"
    assert state.online_rows == online


@given(online=counts, offline=counts, end=moments)
def test_an_empty_or_unmarked_store_is_never_complete(
    online: int, offline: int, end: datetime
) -> None:
    state = compare("v", offline, online, None, end)
    assert not state.complete
    assert state.reason is not None
    assert ("empty" in state.reason) is (online == 0)


@given(
    mark=marks,
    lag=st.timedeltas(min_value=timedelta(microseconds=1), max_value=timedelta(days=999)),
)
def test_a_watermark_behind_the_registry_is_incomplete(mark: Watermark, lag: timedelta) -> None:
    state = compare("v", 5, 5, mark, mark.end + lag)
    assert not state.complete
    assert state.reason is not None and "behind" in state.reason


def test_negative_counts_are_refused() -> None:
    with pytest.raises(ValueError):
        compare("v", -1, 0, None, None)


@given(mark=marks)
def test_watermark_round_trips(mark: Watermark) -> None:
    assert Watermark.from_json(mark.to_json()) == mark
    assert Watermark.from_json(mark.to_json().encode()) == mark


@given(raw=st.binary(max_size=200) | st.text(max_size=200))
def test_any_stored_bytes_read_as_a_watermark_or_none(raw: bytes | str) -> None:
    mark = Watermark.from_json(raw)
    assert mark is None or isinstance(mark, Watermark)


@given(
    rows=st.integers(min_value=-(10**30), max_value=10**30) | st.floats() | st.text(max_size=5),
    end=st.text(max_size=30),
)
def test_hostile_json_fields_read_as_none_or_a_watermark(rows: object, end: str) -> None:
    import json

    raw = json.dumps({"end": end, "rows": rows, "written_at": "2026-01-01T00:00:00+00:00"})
    mark = Watermark.from_json(raw)
    assert mark is None or isinstance(mark, Watermark)


@given(
    keys=st.lists(st.text(min_size=1, max_size=6), min_size=0, max_size=40),
    cut=st.integers(min_value=0, max_value=40),
)
def test_offline_entities_are_distinct_keys_before_the_end(
    tmp_path_factory: pytest.TempPathFactory, keys: list[str], cut: int
) -> None:
    path = tmp_path_factory.mktemp("offline") / "f.parquet"
    base = datetime(2026, 1, 1)
    stamps = [base + timedelta(hours=i) for i in range(len(keys))]
    pl.DataFrame(
        {"k": keys, "ts": stamps}, schema={"k": pl.String, "ts": pl.Datetime}
    ).write_parquet(path)
    end = base + timedelta(hours=cut)
    got = set(offline_entities(path, "k", "ts", end.replace(tzinfo=UTC)).to_list())
    assert got == {k for k, t in zip(keys, stamps, strict=True) if t < end}
    assert set(offline_entities(path, "k", "ts", None).to_list()) == set(keys)


def test_sqlite_watermarks_and_counts(tmp_path: Path) -> None:
    """The SQLite side: the watermark table and COUNT(DISTINCT entity_key) of the view's
    table, read back after rows are deleted."""
    from types import SimpleNamespace

    from pipeline.features.online.state import _sqlite_rows, read_watermarks, write_watermark

    db = tmp_path / "online.db"
    config = SimpleNamespace(
        project="p",
        repo_path=tmp_path,
        online_store=SimpleNamespace(path=str(db)),
        registry=SimpleNamespace(enable_online_feature_view_versioning=False),
    )
    view = SimpleNamespace(name="v", current_version_number=None)
    assert read_watermarks(config) == {}  # type: ignore[arg-type]
    assert _sqlite_rows(config, view) == 0  # type: ignore[arg-type]
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE p_v (entity_key BLOB, feature_name TEXT, value BLOB)")
        conn.executemany(
            "INSERT INTO p_v VALUES (?, ?, ?)",
            [(bytes([i]), f, b"x") for i in range(10) for f in ("a", "b")],
        )
    assert _sqlite_rows(config, view) == 10  # type: ignore[arg-type]
    mark = Watermark(datetime(2026, 1, 2, tzinfo=UTC), 10, datetime(2026, 1, 3, tzinfo=UTC))
    write_watermark(config, "v", mark)  # type: ignore[arg-type]
    assert read_watermarks(config) == {"v": mark}  # type: ignore[arg-type]
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM p_v WHERE entity_key IN (?, ?, ?)", (b"\x00", b"\x01", b"\x02"))
    online = _sqlite_rows(config, view)  # type: ignore[arg-type]
    assert online == 7
    state = compare("v", 10, online, read_watermarks(config)["v"], mark.end)  # type: ignore[arg-type]
    assert state.reason == "online store holds 7 of 10 entities"
    with sqlite3.connect(db) as conn:
        conn.execute(f"DROP TABLE {STATE_TABLE}")
    assert read_watermarks(config) == {}  # type: ignore[arg-type]
