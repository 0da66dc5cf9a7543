"""Next-item baselines with one interface: Polars events in, NumPy index matrices out.

Every baseline is fitted on session events (``session_id``, ``customer_id``, ``item_id``,
``ts``) and a catalogue ``items`` that fixes the index space, and answers a batch of queries
(session histories, optionally customer ids) with an ``(n_queries, k)`` matrix of indices into
``items``, best first, ``-1`` padded only when fewer than ``k`` items can be recommended.

Internally every baseline works in *popularity-rank space*: column ``j`` is the ``j``-th most
popular training item (ties by catalogue index).
:func:`pipeline.model.metrics.top_k_from_scores` breaks score ties by the lower column, so
in this space ties (including the all-zero tail of a sparse co-occurrence score) fall back to
popularity and then catalogue order without any extra work; that is the popularity backfill of
the neighbourhood baselines.

Queries are scored in batches with sparse matrix products; no Python loop scores items per
query.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

import numpy as np
import polars as pl
import scipy.sparse as sp

from pipeline.model.metrics import top_k_from_scores

BATCH_CELLS = 1 << 23
"""Dense scores held at once per recommend batch (queries x items), ~64 MB of float64."""


@runtime_checkable
class Baseline(Protocol):
    """What every baseline offers: fit on events, recommend catalogue indices."""

    name: str

    def fit(self, train: pl.DataFrame, items: list[str]) -> Baseline:
        """Learn from session events; ``items`` is the catalogue (the index space)."""
        ...

    def recommend(
        self,
        histories: list[list[str]],
        customers: list[str] | None,
        k: int,
        *,
        times: Sequence[datetime] | np.ndarray | pl.Series | None = None,
    ) -> np.ndarray:
        """``(len(histories), k)`` indices into ``items``, best first.

        ``times`` (one per query, optional) is when each query is asked; baselines with a
        time decay use it (``None``: the end of training), the others ignore it.
        """
        ...


# --------------------------------------------------------------------------------------------
# Shared machinery.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Histories:
    """Query histories as ragged arrays in popularity-rank space (known items only).

    Attributes:
        indptr: ``(n + 1,)`` offsets of each query's entries.
        cols: item columns (popularity-rank space), in history order.
        from_end: 0 for the last known item of a query, 1 for the one before, ...
        times: ``(n,)`` query times in seconds since the Unix epoch, or ``None`` (not given).
    """

    indptr: np.ndarray
    cols: np.ndarray
    from_end: np.ndarray
    times: np.ndarray | None = None

    @property
    def n(self) -> int:
        return len(self.indptr) - 1

    def rows(self, start: int, stop: int) -> Histories:
        """Queries ``start:stop`` (a view, offsets rebased)."""
        lo, hi = self.indptr[start], self.indptr[stop]
        times = None if self.times is None else self.times[start:stop]
        return Histories(
            self.indptr[start : stop + 1] - lo, self.cols[lo:hi], self.from_end[lo:hi], times
        )

    def matrix(self, n_items: int, weights: np.ndarray | None = None) -> sp.csr_array:
        """``(n, n_items)`` sparse matrix; repeated items add up their weights (default 1)."""
        data = np.ones(len(self.cols)) if weights is None else weights
        rows = np.repeat(np.arange(self.n), np.diff(self.indptr))
        out = sp.csr_array((data, (rows, self.cols)), shape=(self.n, n_items))
        out.sum_duplicates()
        return out

    def last(self) -> np.ndarray:
        """Column of each query's last known item, ``-1`` for an empty history."""
        out = np.full(self.n, -1, dtype=np.int64)
        nonempty = np.diff(self.indptr) > 0
        out[nonempty] = self.cols[self.indptr[1:][nonempty] - 1]
        return out


def _item_frame(items: Sequence[str]) -> pl.DataFrame:
    frame = pl.DataFrame(
        {"item_id": list(items), "_item": np.arange(len(items), dtype=np.int64)},
        schema={"item_id": pl.String, "_item": pl.Int64},
    )
    if frame.get_column("item_id").is_duplicated().any():
        raise ValueError("items (the catalogue) has duplicate ids")
    return frame


def epoch_seconds(times: Sequence[datetime] | np.ndarray | pl.Series) -> np.ndarray:
    """Seconds since the Unix epoch (float64) of datetimes (naive ones are read as UTC).

    Raises:
        ValueError: when ``times`` are not datetimes or contain nulls.
    """
    series = times if isinstance(times, pl.Series) else pl.Series("ts", times)
    if len(series) and not isinstance(series.dtype, pl.Datetime):
        raise ValueError(f"times must be datetimes, got {series.dtype}")
    if series.null_count():
        raise ValueError("times contain nulls")
    if not len(series):
        return np.zeros(0)
    return series.dt.epoch("us").to_numpy().astype(np.float64) / 1e6


def dense_codes(values: pl.Series) -> np.ndarray:
    """``0..n_distinct-1`` codes of ``values`` (in sorted order of the values)."""
    return (values.rank("dense").to_numpy() - 1).astype(np.int64)


class IndexedBaseline:
    """Catalogue indexing, event encoding, popularity order and batched recommending.

    Subclasses implement :meth:`_fit` (on encoded events) and either :meth:`_scores` (dense
    batch scores in popularity-rank space) or :meth:`_rank_batch`.
    """

    name = "baseline"

    def __init__(self, exclude_seen: bool = False) -> None:
        """Configure the baseline (it learns nothing until :meth:`fit`).

        Args:
            exclude_seen: never recommend an item already in the query's history. Off by
                default: re-views are common in click streams and often the next click.
        """
        self.exclude_seen = exclude_seen
        self._fitted = False

    # -- fitting --------------------------------------------------------------------------

    def fit(self, train: pl.DataFrame, items: list[str]) -> IndexedBaseline:
        """Fit on session events.

        Args:
            train: events with ``session_id``, ``customer_id`` (``""`` or null when
                anonymous), ``item_id`` and ``ts``; events on items outside ``items`` are
                dropped.
            items: the catalogue; recommendations are indices into it.

        Returns:
            ``self``, fitted.
        """
        catalogue = _item_frame(items)
        self.items = list(items)
        self.n_items = len(items)
        events = self._encode_events(train, catalogue)
        counts = np.bincount(events.get_column("_item").to_numpy(), minlength=self.n_items)
        self.counts = counts.astype(np.int64)
        # order[j]: catalogue index of the j-th most popular item; rank is its inverse.
        self.order = np.lexsort((np.arange(self.n_items), -self.counts)).astype(np.int64)
        self.rank = np.empty(self.n_items, dtype=np.int64)
        self.rank[self.order] = np.arange(self.n_items)
        events = events.with_columns(
            pl.Series("col", self.rank[events.get_column("_item").to_numpy()])
        )
        self._fit(events)
        self._item_lookup = catalogue.with_columns(pl.Series("col", self.rank))
        self._fitted = True
        return self

    @staticmethod
    def _encode_events(train: pl.DataFrame, catalogue: pl.DataFrame) -> pl.DataFrame:
        """Known-item events sorted by session and time, original order kept among ties."""
        missing = {"session_id", "item_id", "ts"} - set(train.columns)
        if missing:
            raise ValueError(f"train lacks columns {sorted(missing)}")
        customer = (
            pl.col("customer_id").cast(pl.String).fill_null("")
            if "customer_id" in train.columns
            else pl.lit("", dtype=pl.String)
        )
        return (
            train.lazy()
            .with_row_index("_row")
            .select(
                "_row",
                pl.col("session_id").cast(pl.String),
                customer.alias("customer_id"),
                pl.col("item_id").cast(pl.String),
                "ts",
            )
            .join(catalogue.lazy(), on="item_id", how="inner")
            .sort("session_id", "ts", "_row")
            .drop("_row")
            .collect()
        )

    def _fit(self, events: pl.DataFrame) -> None:
        """Subclass hook: learn from the encoded events (popularity needs nothing more).

        Args:
            events: known-item events sorted by session and time, with ``session_id``,
                ``customer_id`` (``""`` when anonymous), ``item_id``, ``ts``, ``_item``
                (catalogue index) and ``col`` (popularity-rank column).
        """

    # -- recommending ---------------------------------------------------------------------

    def encode_histories(
        self,
        histories: Sequence[Sequence[str]],
        times: Sequence[datetime] | np.ndarray | pl.Series | None = None,
    ) -> Histories:
        """Histories as :class:`Histories`, unknown items dropped.

        Args:
            histories: item ids of each query, oldest first.
            times: when each query is asked (one datetime per history), or ``None``.

        Raises:
            ValueError: when ``times`` does not have one datetime per history.
        """
        self._check_fitted()
        when = None if times is None else epoch_seconds(times)
        if when is not None and len(when) != len(histories):
            raise ValueError(f"{len(when)} times for {len(histories)} histories")
        lengths = np.fromiter((len(h) for h in histories), dtype=np.int64, count=len(histories))
        flat = pl.DataFrame(
            {"item_id": list(itertools.chain.from_iterable(histories))},
            schema={"item_id": pl.String},
        )
        cols = (
            flat.join(self._item_lookup, on="item_id", how="left", maintain_order="left")
            .get_column("col")
            .fill_null(-1)
            .to_numpy()
            .astype(np.int64)
        )
        rows = np.repeat(np.arange(len(histories)), lengths)
        known = cols >= 0
        rows = rows[known]
        cols = cols[known]
        kept = np.bincount(rows, minlength=len(histories))
        indptr = np.concatenate([[0], np.cumsum(kept)]).astype(np.int64)
        from_end = indptr[rows + 1] - 1 - np.arange(len(rows))
        return Histories(indptr, cols, from_end, when)

    def recommend(
        self,
        histories: list[list[str]],
        customers: list[str] | None = None,
        k: int = 20,
        *,
        times: Sequence[datetime] | np.ndarray | pl.Series | None = None,
    ) -> np.ndarray:
        """Top ``k`` catalogue indices per query, best first.

        Args:
            histories: item ids of each query's session so far, oldest first; ids outside
                the catalogue are ignored.
            customers: customer id per query (``""`` or ``None`` when anonymous), or ``None``.
            k: number of recommendations per query.
            times: when each query is asked, one datetime per history; used by baselines
                with a time decay (``None``: the end of training), ignored by the others.

        Returns:
            ``(len(histories), k)`` int64 indices into ``items``; ``-1`` pads a row only when
            fewer than ``k`` items are eligible.
        """
        self._check_fitted()
        if k < 1:
            raise ValueError(f"k must be positive, got {k}")
        if customers is not None and len(customers) != len(histories):
            raise ValueError(f"{len(customers)} customers for {len(histories)} histories")
        encoded = self.encode_histories(histories, times)
        n = encoded.n
        out = np.full((n, k), -1, dtype=np.int64)
        batch = max(1, BATCH_CELLS // max(self.n_items, 1))
        for start in range(0, n, batch):
            stop = min(start + batch, n)
            part = encoded.rows(start, stop)
            who = None if customers is None else list(customers[start:stop])
            out[start:stop] = self._rank_batch(part, who, k)
        return np.where(out >= 0, self.order[np.maximum(out, 0)], -1)

    def _seen(self, part: Histories) -> sp.csr_array | None:
        return part.matrix(self.n_items) if self.exclude_seen else None

    def _rank_batch(self, part: Histories, customers: list[str] | None, k: int) -> np.ndarray:
        """Top ``k`` popularity-rank columns for a batch (default: dense scores, then top k)."""
        return top_k_from_scores(self._scores(part, customers), k, exclude=self._seen(part))

    def _scores(self, part: Histories, customers: list[str] | None) -> np.ndarray:
        raise NotImplementedError

    def _check_fitted(self) -> None:
        if not getattr(self, "_fitted", False):
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit() first")

    def __repr__(self) -> str:
        params = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._params())
        return f"{type(self).__name__}({params})"

    def _params(self) -> tuple[str, ...]:
        return ("exclude_seen",)
