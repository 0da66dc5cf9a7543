"""Priors added to the retrieval logits: the transition memory and the trend.

The transition memory counts what followed and what co-occurred with each item in training
sessions (each example's own counts left out while training); the trend is each item's
time-decayed share of interactions over several half-lives, as of the example's own time
bucket in training and as of the cut-off when serving.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

import numpy as np
import polars as pl
import scipy.sparse as sp

from pipeline.features.declarations import ITEM_ENTITY
from pipeline.model.config import PAD, ModelConfig


def _top_m(
    matrix: sp.csr_array, m: int, values: sp.csr_array | None = None
) -> tuple[np.ndarray, np.ndarray, sp.csr_array]:
    """Per row, the ``m`` entries with the largest counts as (index, value) arrays with two
    leading empty rows (padding and unknown ids), and the kept counts as a sparse matrix.

    Values are ``log1p(count)``, or taken from ``values`` (same sparsity) when given.
    """
    n = matrix.shape[0]
    index = np.zeros((n + 2, m), np.int32)
    value = np.zeros((n + 2, m), np.float32)
    rows, cols, counts = [], [], []
    for row in range(n):
        start, end = matrix.indptr[row], matrix.indptr[row + 1]
        if start == end:
            continue
        c, v = matrix.indices[start:end], matrix.data[start:end]
        top = np.argsort(-v, kind="stable")[:m]
        index[row + 2, : len(top)] = c[top]
        value[row + 2, : len(top)] = (
            np.log1p(v[top]) if values is None else values.data[start:end][top]
        )
        rows.append(np.full(len(top), row))
        cols.append(c[top])
        counts.append(v[top])
    kept = sp.csr_array(
        (
            np.concatenate(counts or [np.zeros(0)]),
            (
                np.concatenate(rows or [np.zeros(0, np.int64)]),
                np.concatenate(cols or [np.zeros(0, np.int64)]),
            ),
        ),
        shape=matrix.shape,
    )
    return index, value, kept


def _values_at(matrix: sp.csr_array, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``matrix[rows[i], cols[i]]`` for each i (0 where absent), vectorised."""
    coo = matrix.tocoo()
    n = matrix.shape[1]
    keys = coo.row.astype(np.int64) * n + coo.col
    order = np.argsort(keys)
    keys, data = keys[order], coo.data[order]
    wanted = rows.astype(np.int64) * n + cols
    at = np.minimum(np.searchsorted(keys, wanted), max(len(keys) - 1, 0))
    found = (len(keys) > 0) & (keys[at] == wanted) if len(keys) else np.zeros(len(wanted), bool)
    return np.where(found, data[at] if len(keys) else 0.0, 0.0)


def transition_memory(
    train: pl.DataFrame, items: np.ndarray, cfg: ModelConfig
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Successor and co-occurrence tables from training sessions, and each training example's
    own share of them (to leave it out while training).

    Returns the tables and, per example, ``log1p(c - 1) - log1p(c)`` at its target for the
    successor count and (decayed over its history) for co-occurrence counts.
    """
    n = len(items)
    position = {item: i for i, item in enumerate(items)}
    target = np.array([position[i] for i in train.get_column(ITEM_ENTITY)], dtype=np.int64)
    history = train.get_column("history").to_list()
    coded = np.array(
        [[position.get(x, -1) if x != PAD else -1 for x in h] for h in history], dtype=np.int64
    ).reshape(train.height, cfg.session_len)
    last = coded[:, -1]
    has_last = last >= 0
    successors = sp.csr_array(
        (np.ones(int(has_last.sum())), (last[has_last], target[has_last])), shape=(n, n)
    )
    successors.sum_duplicates()
    session = train.get_column("session_id").to_numpy()
    _, session_code = np.unique(session, return_inverse=True)
    members = sp.csr_array(
        (np.ones(train.height), (session_code, target)), shape=(session_code.max() + 1, n)
    )
    members.data[:] = 1.0  # a session counts once per item
    members.sum_duplicates()
    members.data[:] = 1.0
    together = sp.csr_array(members.T @ members)
    together.setdiag(0)
    together.eliminate_zeros()
    together.sort_indices()
    # Co-occurrence as cosine similarity of the items' session sets (item-KNN's measure):
    # raw counts would favour popular items everywhere.
    support = np.asarray(members.sum(axis=0)).ravel()
    coo = together.tocoo()
    norm = np.sqrt(support[coo.row] * support[coo.col])
    cosine = sp.csr_array((coo.data / norm, (coo.row, coo.col)), shape=together.shape)
    cosine.sort_indices()
    m = cfg.memory_top_m
    succ_index, succ_value, succ_kept = _top_m(successors, m)
    nbr_index, nbr_value, nbr_kept = _top_m(together, m, cosine)
    memory = {
        "successor_index": succ_index,
        "successor_value": succ_value,
        "neighbour_index": nbr_index,
        "neighbour_value": nbr_value,
    }

    def own(counts: np.ndarray) -> np.ndarray:
        safe = np.maximum(counts, 1.0)
        return np.where(counts > 0, np.log1p(safe - 1) - np.log1p(safe), 0.0)

    own_successor = np.zeros(train.height, np.float32)
    own_successor[has_last] = own(_values_at(succ_kept, last[has_last], target[has_last]))
    own_neighbour = np.zeros(train.height, np.float32)
    decay = cfg.memory_decay ** np.arange(cfg.session_len - 1, -1, -1, dtype=np.float64)
    for column in range(cfg.session_len):
        present = coded[:, column] >= 0
        if present.any():
            h, t = coded[present, column], target[present]
            kept = _values_at(nbr_kept, h, t) > 0
            # This session adds one to the intersection: cosine drops by 1/sqrt(|Sh| |St|).
            share = np.where(kept, -1.0 / np.sqrt(np.maximum(support[h] * support[t], 1)), 0.0)
            own_neighbour[present] += (decay[column] * share).astype(np.float32)
    return memory, own_successor, own_neighbour


def _naive(ts: pl.Series) -> pl.Series:
    """Times as naive UTC microseconds (example times may carry a time zone)."""
    if getattr(ts.dtype, "time_zone", None):
        ts = ts.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
    return ts.cast(pl.Datetime("us"))


@dataclass(frozen=True)
class Trend:
    """Time-decayed interaction counts per item, as of the start of each time bucket.

    ``table[b, i, h]`` is ``log1p`` of item ``i``'s training interactions before the start of
    bucket ``b``, each weighted ``2 ** (-age / half_life[h])``, relative to the average item
    (``n_items * count_i / sum(count)``: stationary while the data accumulates). The last
    row ("now", what serving uses) is as of the end of the last bucket, just after the last
    interaction. An example looks up the bucket its time falls in, so it sees only
    interactions from before that bucket: nothing of its own or from its future.
    """

    table: np.ndarray
    start: datetime
    width: timedelta

    def buckets(self, ts: pl.Series) -> np.ndarray:
        """Bucket of each time (clipped to the table: earlier -> 0, later -> now)."""
        offset = (_naive(ts) - self.start).dt.total_microseconds().to_numpy()
        width = self.width / timedelta(microseconds=1)
        index = np.floor(np.nan_to_num(offset.astype(np.float64), nan=0.0) / width)
        return np.clip(index, 0, len(self.table) - 1).astype(np.int32)


def trend_buckets(trend: Trend | None, frame: pl.DataFrame) -> np.ndarray:
    """Each example's trend bucket; bucket 0 of the model's all-zero table without a trend."""
    if trend is None:
        return np.zeros(frame.height, np.int32)
    return trend.buckets(frame.get_column("ts"))


def trend_table(train: pl.DataFrame, items: np.ndarray, cfg: ModelConfig) -> Trend:
    """:class:`Trend` of the training examples' targets, from the first to just after the
    last training time, in at most ``cfg.trend_buckets`` buckets."""
    ts = _naive(train.get_column("ts"))
    first, last = cast(datetime, ts.min()), cast(datetime, ts.max())
    n_buckets = max(1, cfg.trend_buckets)
    # A microsecond more than an even split: the last interaction falls inside the last
    # bucket (not in "now", which counts it).
    width = max((last - first) / n_buckets, timedelta(minutes=1)) + timedelta(microseconds=1)
    halves = np.asarray(cfg.trend_half_lives_days, np.float64) * 86_400.0
    table = np.zeros((n_buckets + 1, len(items), len(halves)), np.float32)
    if not len(halves):
        return Trend(table, first, width)
    target = target_positions(train, items)
    seconds = (ts - first).dt.total_microseconds().to_numpy() / 1e6
    step = width.total_seconds()
    bucket = np.minimum((seconds // step).astype(np.int64), n_buckets - 1)
    # Each interaction decayed to the end of its bucket, summed per (bucket, item); then the
    # running total carried from bucket to bucket, decaying by one bucket's width each time.
    to_end = (bucket + 1) * step - seconds
    running = np.zeros((len(items), len(halves)), np.float64)
    per_bucket = [
        np.bincount(
            bucket * len(items) + target,
            weights=0.5 ** (to_end / h),
            minlength=n_buckets * len(items),
        ).reshape(n_buckets, len(items))
        for h in halves
    ]
    carry = 0.5 ** (step / halves)
    for b in range(n_buckets):
        running = running * carry + np.stack([c[b] for c in per_bucket], axis=1)
        # Relative to the average item: the total grows as the data accumulates (and is
        # larger "now" than for most training examples); an item's share of it does not.
        total = running.sum(axis=0)
        share = np.divide(running * len(items), total, out=np.zeros_like(running), where=total > 0)
        table[b + 1] = np.log1p(share)
    return Trend(table, first, width)


def target_positions(frame: pl.DataFrame, items) -> np.ndarray:
    """Each example's target item as its position in the catalogue ``items``."""
    position = {item: i for i, item in enumerate(items)}
    return np.array([position[i] for i in frame.get_column(ITEM_ENTITY)], dtype=np.int64)
