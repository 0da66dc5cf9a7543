"""What every adapter shares: the raw tables of a source, content ids, the contract's string
columns, and writing a drop folder."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import cast

import polars as pl

from pipeline.data.contracts import CONTRACTS

ISO = "%Y-%m-%dT%H:%M:%SZ"


@dataclass
class RawTables:
    """The raw tables of one source, as string columns named by the contracts.

    Attributes:
        name: The source's name (``rtr``, ``yoochoose``, ...).
        tables: Raw table name -> string columns.
        source_rows: The adapter's normalised source rows (with a ``ts`` datetime column and,
            for click streams, ``session_id``), kept so :meth:`cut` can rebuild each side.
        rebuild: The adapter's table builder for a subset of ``source_rows``.
    """

    name: str
    tables: dict[str, pl.DataFrame] = field(default_factory=dict)
    source_rows: pl.DataFrame | None = None
    rebuild: Callable[[pl.DataFrame], RawTables] | None = None

    def rows(self) -> dict[str, int]:
        return {k: v.height for k, v in self.tables.items()}

    def cut(self, at: datetime) -> tuple[RawTables, RawTables]:
        """The source as two files cut at ``at``: rows (for click streams, whole sessions, by
        their first click) before ``at`` and from ``at`` on, each side rebuilt by the adapter.

        Raises:
            ValueError: the adapter cannot rebuild (no source rows kept), or one side is empty.
        """
        if self.source_rows is None or self.rebuild is None:
            raise ValueError(f"{self.name}: this source cannot be cut by time")
        rows = self.source_rows
        start = (
            pl.col("ts").min().over("session_id") if "session_id" in rows.columns else pl.col("ts")
        )
        at = at.replace(tzinfo=None)
        before = rows.filter(start < at)
        after = rows.filter(start >= at)
        if before.is_empty() or after.is_empty():
            raise ValueError(
                f"{self.name}: cutting at {at:%Y-%m-%d %H:%M:%S} leaves {before.height} rows "
                f"before and {after.height} after; both sides need rows"
            )
        return self.rebuild(before), self.rebuild(after)


def content_ids(frame: pl.DataFrame, columns: Sequence[str], prefix: str) -> pl.Series:
    """Ids from each row's content: ``<prefix>-<16 hex digits>``, ``-<n>`` for the n-th exact
    repeat of a row in ``frame`` (n >= 1), so every row keeps its own id.

    The digest is BLAKE2b over the columns' string values (null distinct from empty), stable
    across runs, machines and library versions. Rows that are identical in ``columns`` get
    their occurrence number in frame order, so a file cut in two (repeats fall on one side:
    they share their time) numbers them as the whole file does.

    Args:
        frame: Source rows.
        columns: The fields that make a row what it is (ids, item, time, values).
        prefix: Put before the digest (the dataset's name).
    """
    keys = frame.select(
        pl.concat_str(
            [pl.col(c).cast(pl.String).fill_null("\x00") for c in columns], separator="\x1f"
        ).alias("key")
    ).to_series()
    digests = pl.Series(
        "digest",
        [hashlib.blake2b(k.encode(), digest_size=8).hexdigest() for k in keys.to_list()],
        dtype=pl.String,
    )
    occurrence = (
        pl.DataFrame({"digest": digests})
        .select(pl.int_range(pl.len()).over("digest").alias("n"))
        .to_series()
    )
    ids = pl.DataFrame({"digest": digests, "n": occurrence}).select(
        pl.when(pl.col("n") == 0)
        .then(pl.format("{}-{}", pl.lit(prefix), pl.col("digest")))
        .otherwise(pl.format("{}-{}-{}", pl.lit(prefix), pl.col("digest"), pl.col("n")))
    )
    return ids.to_series().alias("event_id")


def contract_strings(frame: pl.DataFrame, table: str) -> pl.DataFrame:
    """Contract columns in order, as strings (missing ones null)."""
    names = CONTRACTS[table].names
    return frame.select(
        pl.col(n).cast(pl.String) if n in frame.columns else pl.lit(None, pl.String).alias(n)
        for n in names
    )


def age_band(age: pl.Expr) -> pl.Expr:
    a = age.cast(pl.Float64, strict=False)
    return (
        pl.when(a < 18)
        .then(None)
        .when(a < 25)
        .then(pl.lit("18-24"))
        .when(a < 35)
        .then(pl.lit("25-34"))
        .when(a < 45)
        .then(pl.lit("35-44"))
        .when(a < 55)
        .then(pl.lit("45-54"))
        .when(a.is_not_null())
        .then(pl.lit("55+"))
    )


def category_of(source: pl.Expr, mapping: dict[str, str]) -> pl.Expr:
    return source.str.to_lowercase().replace_strict(mapping, default="other")


def first_seen(events: pl.DataFrame, key: str, ts: str = "ts") -> pl.DataFrame:
    return events.group_by(key).agg(pl.col(ts).min().alias("first_ts"))


def write_drop(source: RawTables, out: Path, day: date | None = None) -> Path:
    """Write the tables as one raw drop folder ``out/<day>`` (default: the latest event day).

    Earlier events arrive as late events of that drop, which ingest accepts.
    """
    stamps = [
        frame.get_column(column).str.to_datetime(ISO, strict=False).max()
        for table, frame in source.tables.items()
        for column in (CONTRACTS[table].timestamp,)
        if column and frame.height
    ]
    latest = max((cast(datetime, s) for s in stamps if s is not None), default=None)
    day = day or (latest.date() if latest else date.today())
    folder = out / day.isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    for table, frame in source.tables.items():
        if table == "customers":
            frame.write_parquet(folder / "customers.parquet")
        elif table == "items":
            frame.write_csv(folder / "items.csv")
        else:
            frame.write_ndjson(folder / f"{table}.jsonl")
    return folder
