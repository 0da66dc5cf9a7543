"""Popularity baselines: the same list for everyone, over all of train or its last days."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import polars as pl
import scipy.sparse as sp

from pipeline.evaluation.baselines.base import Histories, IndexedBaseline


def _static_top_k(ranking: np.ndarray, k: int, seen: sp.csr_array | None, n: int) -> np.ndarray:
    """Top ``k`` of a ranking shared by all queries, minus each query's ``seen`` columns.

    Only the first ``k + max seen per row`` entries of the ranking can make any top ``k``, so
    the work is ``O(n * (k + longest history))`` rather than ``O(n * n_items)``.
    """
    if seen is None or seen.nnz == 0:
        top = np.full(k, -1, dtype=np.int64)
        top[: min(k, len(ranking))] = ranking[:k]
        return np.tile(top, (n, 1))
    width = min(len(ranking), k + int(np.diff(seen.indptr).max()))
    candidates = np.broadcast_to(ranking[:width], (n, width))
    # Membership test of (query, column) pairs against the seen pairs, vectorised.
    seen_rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(seen.indptr))
    n_cols = seen.shape[1]
    blocked = np.isin(
        np.arange(n, dtype=np.int64)[:, None] * n_cols + candidates,
        seen_rows * n_cols + seen.indices,
    )
    order = np.argsort(blocked, axis=1, kind="stable")  # unblocked first, ranking order kept
    kept = np.take_along_axis(candidates, order, axis=1)
    kept = np.where(np.take_along_axis(blocked, order, axis=1), -1, kept)
    out = np.full((n, k), -1, dtype=np.int64)
    out[:, : min(k, width)] = kept[:, :k]
    return out


class Popularity(IndexedBaseline):
    """Most interacted-with items in train, the same list for everyone."""

    name = "popularity"

    def _rank_batch(self, part: Histories, customers: list[str] | None, k: int) -> np.ndarray:
        # Popularity-rank space is sorted by popularity already.
        return _static_top_k(np.arange(self.n_items), k, self._seen(part), part.n)


class RecentPopularity(IndexedBaseline):
    """Most interacted-with items over the last ``days`` of train; ties by overall popularity.

    The window ends at the latest training event, so a model refitted daily tracks trends.
    """

    name = "recent_popularity"

    def __init__(self, days: float = 7, exclude_seen: bool = False) -> None:
        """Configure the baseline (it learns nothing until :meth:`fit`).

        Args:
            days: length of the window, ending at the last training event.
            exclude_seen: never recommend an item already in the query's history.
        """
        super().__init__(exclude_seen)
        if days <= 0:
            raise ValueError(f"days must be positive, got {days}")
        self.days = days

    def _params(self) -> tuple[str, ...]:
        return ("days", "exclude_seen")

    def _fit(self, events: pl.DataFrame) -> None:
        window = events.filter(pl.col("ts") > pl.col("ts").max() - timedelta(days=self.days))
        recent = np.bincount(window.get_column("col").to_numpy(), minlength=self.n_items)
        self.recent_counts = recent.astype(np.int64)
        # Stable sort on recent counts keeps popularity-rank order among ties.
        self.ranking = np.argsort(-recent, kind="stable").astype(np.int64)

    def _rank_batch(self, part: Histories, customers: list[str] | None, k: int) -> np.ndarray:
        return _static_top_k(self.ranking, k, self._seen(part), part.n)
