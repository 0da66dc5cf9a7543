"""How a public benchmark splits its source: by time (a cut-off, and where the test horizon
ends) or at random (RentTheRunway's published 80/10/10 protocol)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import cast

import numpy as np
import polars as pl

from pipeline.data import adapters
from pipeline.data.contracts import CONTRACTS

EVENT_TABLES = ("session_events", "try_ons", "purchases")


@dataclass(frozen=True)
class Spec:
    """How a dataset is split and modelled.

    Attributes:
        split: ``"time"`` (the source cut at a time, as two exported files would be) or
            ``"random"`` (rows, 80/10/10, Misra et al.'s protocol for the fit head).
        test_days: time split: the last days are the test set (unless ``split_at``); also
            the length of the latest part of training the heuristics are tuned on.
        split_at: time split: cut here instead (sessions starting at or after it are test).
        test_until: time split: where the test horizon ends (sessions starting at or after
            it are left out, as a retailer's evaluation window ends); None: the data's end.
    """

    name: str
    split: str = "time"  # "time" or "random"
    test_days: float = 1.0
    snapshot_every: timedelta = timedelta(days=1)
    collapse_repeats: bool = True
    seed: int = 7
    split_at: datetime | None = None
    test_until: datetime | None = None


def event_time(table: str, frame: pl.DataFrame) -> pl.Series:
    column = CONTRACTS[table].timestamp
    if column is None:
        raise ValueError(f"table {table!r} has no event time")
    return frame.get_column(column).str.to_datetime("%Y-%m-%dT%H:%M:%SZ", strict=False)


def random_split(source: adapters.RawTables, spec: Spec) -> tuple[adapters.RawTables, set[str]]:
    """Rows, 80% train / 10% validation (unused) / 10% test; returns the training tables and
    the test event ids (customers and items stay whole: every customer is known)."""
    test_ids: set[str] = set()
    train_tables = dict(source.tables)
    for table in EVENT_TABLES:
        frame = source.tables.get(table)
        if frame is None or frame.is_empty():
            continue
        key = CONTRACTS[table].key[0]
        is_test = pl.Series(np.random.default_rng(spec.seed).random(frame.height) >= 0.9)
        test_ids |= set(frame.filter(is_test).get_column(key).to_list())
        train_tables[table] = frame.filter(~is_test)
    return adapters.RawTables(source.name, train_tables), test_ids


def time_cutoff(source: adapters.RawTables, spec: Spec) -> datetime:
    """Where the time split cuts: ``spec.split_at``, else ``spec.test_days`` before the last
    event."""
    if spec.split_at is not None:
        return spec.split_at.replace(tzinfo=UTC)
    return time_range(source)[1] - timedelta(days=spec.test_days)


def within_horizon(rest: adapters.RawTables, cutoff: datetime, spec: Spec) -> adapters.RawTables:
    """The test side up to ``spec.test_until`` (all of it when None or past its last event).

    Raises:
        ValueError: ``test_until`` is not after the cut-off.
    """
    if spec.test_until is None:
        return rest
    until = spec.test_until.replace(tzinfo=UTC)
    if until <= cutoff:
        raise ValueError(f"test_until {until:%Y-%m-%d} is not after the cut-off {cutoff:%Y-%m-%d}")
    if until > time_range(rest)[1]:
        return rest
    return rest.cut(until)[0]


def split_by_time(
    source: adapters.RawTables, spec: Spec
) -> tuple[adapters.RawTables, adapters.RawTables]:
    """The source cut at :func:`time_cutoff` into a training and a test side, the test side
    ending at ``spec.test_until`` (:func:`within_horizon`)."""
    cutoff = time_cutoff(source, spec)
    train, rest = source.cut(cutoff)
    return train, within_horizon(rest, cutoff, spec)


def time_range(source: adapters.RawTables) -> tuple[datetime, datetime]:
    stamps = [event_time(t, f) for t, f in source.tables.items() if t in EVENT_TABLES and f.height]
    if not stamps:
        raise ValueError(f"{source.name}: no events to split")
    joined = pl.concat(stamps)
    first, last = cast(datetime, joined.min()), cast(datetime, joined.max())
    return first.replace(tzinfo=UTC), last.replace(tzinfo=UTC)
