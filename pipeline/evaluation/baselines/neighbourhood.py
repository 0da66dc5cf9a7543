"""What the session-neighbour heuristics share: parameter checks, decays and weights, the query's
items, the batched neighbour search of :class:`SessionNeighbours` and the sparse top-k.

VS-KNN, STAN and V-STAN (:mod:`pipeline.evaluation.baselines.session_neighbours`) and SR
(:mod:`pipeline.evaluation.baselines.sequential_rules`) build on it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp

from pipeline.evaluation.baselines.base import (
    Histories,
    IndexedBaseline,
    epoch_seconds,
)

DAY = 24 * 3600.0

# Decay of an item ``i`` steps back from the end (1: the last), as session-rec names them.
STEP_DECAYS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "linear": lambda i: np.where(i <= 100, 1 - 0.1 * i, 0.0),
    "same": lambda i: np.ones_like(i, dtype=np.float64),
    "div": lambda i: 1.0 / i,
    "log": lambda i: 1.0 / np.log10(i + 1.7),
    "quadratic": lambda i: 1.0 / (i * i),
}

# VS-KNN's weight of the query item at 1-based position ``i`` of ``n`` (session-rec's, incl.
# "linear" testing ``i <= 10`` rather than the distance from the end).
POSITION_WEIGHTS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "linear": lambda i, n: np.where(i <= 10, 1 - 0.1 * (n - i), 0.0),
    "same": lambda i, n: np.ones_like(i, dtype=np.float64),
    "div": lambda i, n: i / n,
    "log": lambda i, n: 1.0 / np.log10((n - i) + 1.7),
    "quadratic": lambda i, n: (i / n) ** 2,
}


def check_positive(name: str, value: float) -> None:
    """Raise a ValueError naming ``name`` unless ``value`` is a number > 0."""
    if isinstance(value, bool) or not value > 0:
        raise ValueError(f"{name} must be positive, got {value!r}")


def check_count(name: str, value: int, minimum: int) -> None:
    """Raise a ValueError naming ``name`` unless ``value`` is an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def check_choice(name: str, value: str, options: Mapping[str, Any]) -> None:
    """Raise a ValueError naming ``name`` unless ``value`` is one of ``options``."""
    if value not in options:
        raise ValueError(f"{name} must be one of {sorted(options)}, got {value!r}")


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenated ``arange(start, start + length)`` for each pair, vectorised."""
    total = int(lengths.sum())
    offsets = np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.repeat(starts, lengths) + np.arange(total) - offsets


@dataclass(frozen=True)
class QueryItems:
    """Distinct known items of each query, sorted by (query, column).

    Attributes:
        rows: query of each entry.
        cols: item column (popularity-rank space).
        last: 1-based position of the item's last occurrence in the query (repeats counted).
        length: ``(n,)`` known events per query (repeats counted).
    """

    rows: np.ndarray
    cols: np.ndarray
    last: np.ndarray
    length: np.ndarray

    @classmethod
    def of(cls, part: Histories, n_items: int) -> QueryItems:
        """Distinct items of the histories with their last positions."""
        length = np.diff(part.indptr)
        rows = np.repeat(np.arange(part.n), length)
        position = length[rows] - part.from_end
        keys = rows * n_items + part.cols
        order = np.lexsort((position, keys))
        keys = keys[order]
        last_of_key = np.r_[keys[1:] != keys[:-1], True] if len(keys) else np.zeros(0, bool)
        kept = order[last_of_key]
        return cls(rows[kept], part.cols[kept], position[kept], length)

    def keys(self, n_items: int) -> np.ndarray:
        return self.rows * n_items + self.cols


class SessionNeighbours(IndexedBaseline):
    """Shared machinery of the session-KNN family (VS-KNN, STAN, V-STAN).

    Subclasses define the query item weights, the similarity and each neighbour item's
    contribution; this class finds candidates, samples, picks neighbours and adds up scores.
    """

    name = "session_neighbours"

    def __init__(
        self, k: int = 100, sample_size: int = 1000, remind: bool = True, exclude_seen: bool = False
    ) -> None:
        """Configure the baseline (it learns nothing until :meth:`fit`).

        Args:
            k: neighbour sessions per query.
            sample_size: candidates kept per query (the most recent sessions sharing an item
                with it) before the ``k`` most similar are chosen; 0 keeps all.
            remind: let neighbours vote for items already in the query (session-rec's
                ``remind``); ``False`` leaves those items to the popularity backfill.
            exclude_seen: never recommend an item already in the query's history.
        """
        super().__init__(exclude_seen)
        check_count("k", k, 1)
        check_count("sample_size", sample_size, 0)
        self.k = int(k)
        self.sample_size = int(sample_size)
        self.remind = remind

    def _params(self) -> tuple[str, ...]:
        return ("k", "sample_size", "remind", "exclude_seen")

    def _fit(self, events: pl.DataFrame) -> None:
        seconds = epoch_seconds(events.get_column("ts"))
        frame = events.select("session_id", "col").with_columns(
            pl.Series("t", seconds),
            (pl.int_range(pl.len()).over("session_id") + 1).alias("pos"),
        )
        sessions = frame.group_by("session_id").agg(pl.col("t").max()).sort("t", "session_id")
        # Session index ascending in recency: the most recent candidates are the last columns.
        sessions = sessions.with_columns(pl.int_range(pl.len()).alias("s"))
        items = (
            frame.join(sessions.select("session_id", "s"), on="session_id")
            .group_by("s", "col")
            .agg(pl.col("pos").max())
            .sort("s", "col")
        )
        s = items.get_column("s").to_numpy()
        n_sessions = len(sessions)
        self.n_sessions = n_sessions
        self.session_time = sessions.get_column("t").to_numpy()
        self.session_items = sp.csr_array(
            (np.ones(len(items)), (s, items.get_column("col").to_numpy())),
            shape=(n_sessions, self.n_items),
        )
        self.session_items.sort_indices()
        # Last 1-based position of each item in its session, aligned with session_items.
        self.item_last = items.get_column("pos").to_numpy().astype(np.float64)
        self.session_length = np.diff(self.session_items.indptr)
        self.sessions_of_item = sp.csr_array(self.session_items.T)
        self.train_end = float(seconds.max(initial=0.0))
        events_per_item = self.counts[self.order].astype(np.float64)
        with np.errstate(divide="ignore"):
            self.idf = np.log(max(n_sessions, 1) / events_per_item)
        self.idf[~np.isfinite(self.idf)] = 0.0

    # -- hooks ------------------------------------------------------------------------------

    def _query_weights(self, query: QueryItems) -> np.ndarray:
        raise NotImplementedError

    def _similarity(
        self,
        rows: np.ndarray,
        sessions: np.ndarray,
        overlap: np.ndarray,
        query: QueryItems,
        weights: np.ndarray,
        times: np.ndarray,
    ) -> np.ndarray:
        raise NotImplementedError

    def _contributions(
        self, neighbour: Neighbours, query: QueryItems, times: np.ndarray
    ) -> np.ndarray:
        raise NotImplementedError

    # -- scoring ----------------------------------------------------------------------------

    def _votes(self, part: Histories) -> tuple[np.ndarray, np.ndarray]:
        """Neighbours' votes as ``(query * n_items + column, value)`` pairs, unsummed."""
        none = (np.zeros(0, dtype=np.int64), np.zeros(0))
        n = part.n
        times = np.full(n, self.train_end) if part.times is None else part.times
        query = QueryItems.of(part, self.n_items)
        if not len(query.rows):
            return none
        weights = self._query_weights(query)
        # Real part counts shared items (never zero, so no candidate is lost); imaginary part
        # sums the query weights of shared items (which may be zero or negative).
        q = sp.csr_array((1.0 + 1j * weights, (query.rows, query.cols)), shape=(n, self.n_items))
        product = sp.csr_array(q @ self.sessions_of_item)
        product.sort_indices()
        counts = np.diff(product.indptr)
        rows = np.repeat(np.arange(n), counts)
        sessions = product.indices.astype(np.int64)
        overlap = product.data.imag
        if self.sample_size:
            from_row_end = product.indptr[rows + 1] - 1 - np.arange(len(rows))
            keep = from_row_end < self.sample_size
            rows, sessions, overlap = rows[keep], sessions[keep], overlap[keep]
        similarity = self._similarity(rows, sessions, overlap, query, weights, times)
        positive = similarity > 0
        rows, sessions, similarity = rows[positive], sessions[positive], similarity[positive]
        order = np.lexsort((-sessions, -similarity, rows))
        starts = np.searchsorted(rows[order], np.arange(n))
        rank = np.arange(len(order)) - starts[rows[order]]
        chosen = order[rank < self.k]
        if not len(chosen):
            return none
        neighbour = Neighbours.expand(
            self, rows[chosen], sessions[chosen], similarity[chosen], query
        )
        values = self._contributions(neighbour, query, times)
        if not self.remind:
            values = np.where(neighbour.shared, 0.0, values)
        return neighbour.rows * self.n_items + neighbour.cols, values

    def _scores(self, part: Histories, customers: list[str] | None) -> np.ndarray:
        keys, values = self._votes(part)
        cells = part.n * self.n_items
        return np.bincount(keys, weights=values, minlength=cells).reshape(part.n, self.n_items)

    def _rank_batch(self, part: Histories, customers: list[str] | None, k: int) -> np.ndarray:
        keys, values = self._votes(part)
        if self.exclude_seen or (values < 0).any():
            # Rare settings (negative votes sort below the unscored tail): the dense path.
            return super()._rank_batch(part, customers, k)
        return sparse_top_k(keys, values, part.n, self.n_items, k)

    def score(
        self,
        histories: Sequence[Sequence[str]],
        times: Sequence[datetime] | np.ndarray | pl.Series | None = None,
    ) -> np.ndarray:
        """Raw scores of every catalogue item per query (the ranking :meth:`recommend` uses).

        Args:
            histories: item ids of each query, oldest first.
            times: when each query is asked (``None``: the end of training).

        Returns:
            ``(len(histories), len(items))`` float64 scores in catalogue order.
        """
        return catalogue_scores(self, self._scores(self.encode_histories(histories, times), None))


@dataclass(frozen=True)
class Neighbours:
    """The chosen neighbours' items, one entry per (query, neighbour, item).

    Attributes:
        rows: query of each entry.
        cols: the neighbour item's column.
        similarity: the neighbour's similarity to the query.
        item_last: last 1-based position of the item in the neighbour session.
        shared: whether the item is in the query too.
        last_shared: last position in the neighbour of any item shared with the query.
        query_last: last position in the query of any item shared with the neighbour.
    """

    rows: np.ndarray
    cols: np.ndarray
    similarity: np.ndarray
    item_last: np.ndarray
    shared: np.ndarray
    last_shared: np.ndarray
    query_last: np.ndarray

    @classmethod
    def expand(
        cls,
        model: SessionNeighbours,
        rows: np.ndarray,
        sessions: np.ndarray,
        similarity: np.ndarray,
        query: QueryItems,
    ) -> Neighbours:
        """Every item of every chosen neighbour session, with the positions scoring needs."""
        indptr = model.session_items.indptr
        lengths = model.session_length[sessions]
        entries = _ranges(indptr[sessions], lengths)
        pair = np.repeat(np.arange(len(sessions)), lengths)
        cols = model.session_items.indices[entries].astype(np.int64)
        entry_rows = rows[pair]
        query_keys = query.keys(model.n_items)
        keys = entry_rows * model.n_items + cols
        at = np.minimum(np.searchsorted(query_keys, keys), len(query_keys) - 1)
        shared = query_keys[at] == keys
        item_last = model.item_last[entries]
        starts = np.cumsum(lengths) - lengths
        last_shared = np.maximum.reduceat(np.where(shared, item_last, 0.0), starts)
        query_last = np.maximum.reduceat(np.where(shared, query.last[at], 0), starts)
        return cls(
            entry_rows,
            cols,
            similarity[pair],
            item_last,
            shared,
            last_shared[pair],
            query_last[pair].astype(np.float64),
        )


def sparse_top_k(keys: np.ndarray, values: np.ndarray, n: int, n_items: int, k: int) -> np.ndarray:
    """Top ``k`` columns per row of summed non-negative votes, the lowest columns as backfill.

    The same ranking as :func:`~pipeline.model.metrics.top_k_from_scores` on the dense
    sums (ties by lower column) without building the dense ``(n, n_items)`` matrix: only voted
    cells are sorted, and the first ``k`` columns are enough to fill any row.

    Args:
        keys: ``row * n_items + column`` of each vote (repeats add up).
        values: the votes (>= 0).
        n: rows.
        n_items: columns.
        k: places per row.

    Returns:
        ``(n, k)`` columns, ``-1`` padded when ``k > n_items``.
    """
    cells, at = np.unique(keys, return_inverse=True)
    sums = np.bincount(at, weights=values, minlength=len(cells))
    scored = sums > 0
    cells, sums = cells[scored], sums[scored]
    rows, cols = cells // n_items, cells % n_items
    order = np.lexsort((cols, -sums, rows))
    rows, cols = rows[order], cols[order]
    width = min(k, n_items)
    rank = np.arange(len(rows)) - np.searchsorted(rows, rows)
    top = rank < width
    rows, cols, rank = rows[top], cols[top], rank[top]
    out = np.full((n, k), -1, dtype=np.int64)
    out[rows, rank] = cols
    filled = np.bincount(rows, minlength=n)
    # At most ``filled`` of the first ``width`` columns are taken, so they hold the backfill.
    first = np.arange(width, dtype=np.int64)
    taken = np.isin(np.arange(n, dtype=np.int64)[:, None] * n_items + first, rows * n_items + cols)
    free = first[np.argsort(taken, axis=1, kind="stable")]
    place = filled[:, None] + np.arange(width)[None, :]
    fits = place < width
    out[np.broadcast_to(np.arange(n)[:, None], fits.shape)[fits], place[fits]] = free[fits]
    return out


def catalogue_scores(model: IndexedBaseline, rank_scores: np.ndarray) -> np.ndarray:
    """Scores in popularity-rank space reordered into catalogue order."""
    out = np.zeros_like(rank_scores)
    out[:, model.order] = rank_scores
    return out
