"""Ranking metrics for next-item and multi-target evaluation, and top-k selection.

They sit with the model because training picks its neural scale with them; evaluation and the
registry import them from here.

All ranking metrics take ``ranked``, an integer matrix of shape ``(n_queries, K)`` holding item
indices best first (``-1`` pads rows that have fewer than ``K`` items), and the targets in one
of two forms:

* an integer array of shape ``(n_queries,)``: one relevant item per query (next-item
  prediction). A negative target (e.g. an item outside the catalogue) is a miss that still
  counts in the mean;
* a sequence of collections (sets, lists, arrays) of relevant indices per query (multi-target,
  e.g. the purchases of the following week for MAP@12). A query with no relevant item scores 0
  on every metric and still counts in the mean, as in Kaggle's ``apk`` (H&M used it for
  MAP@12).

An item repeated within a row of ``ranked`` counts only at its first position, so a sloppy
ranking cannot collect a hit twice. Every metric is the mean over queries of
:func:`per_query_metrics`; no queries give 0.0.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import TypeAlias, cast

import numpy as np
import scipy.sparse as sp

Targets: TypeAlias = np.ndarray | Sequence[int] | Sequence[Collection[int]]
"""One relevant index per query, or a collection of relevant indices per query."""

Exclude: TypeAlias = np.ndarray | sp.sparray | sp.spmatrix | Sequence[Collection[int]]
"""Items to leave out per row: a boolean mask, a sparse matrix, or index lists."""

# --------------------------------------------------------------------------------------------
# Hits: the one place that compares rankings with targets.
# --------------------------------------------------------------------------------------------


def _is_single(targets: Targets) -> bool:
    """Whether ``targets`` holds one index per query (as opposed to collections)."""
    if isinstance(targets, np.ndarray):
        return targets.dtype != object and targets.ndim == 1
    return all(isinstance(t, int | np.integer) for t in targets)


def _first_occurrence(ranked: np.ndarray) -> np.ndarray:
    """Mask that is False where an item repeats an earlier entry of its row (or is padding)."""
    if ranked.shape[1] < 2:
        return ranked >= 0
    # A stable sort keeps equal items in their original order, so within each run of equal
    # values every entry but the first is a repeat.
    order = np.argsort(ranked, axis=1, kind="stable")
    ordered = np.take_along_axis(ranked, order, axis=1)
    repeat_sorted = np.zeros(ranked.shape, dtype=bool)
    repeat_sorted[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
    repeat = np.zeros(ranked.shape, dtype=bool)
    np.put_along_axis(repeat, order, repeat_sorted, axis=1)
    return ~repeat & (ranked >= 0)


def _hits(ranked: np.ndarray, targets: Targets, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Boolean hit matrix of the top ``k`` columns and the number of relevant items per query.

    Args:
        ranked: ``(n_queries, K)`` item indices, best first, ``-1`` padding; ``K >= k``.
        targets: one index per query or a collection of indices per query.
        k: cut-off.

    Returns:
        ``hits`` of shape ``(n_queries, k)`` and ``n_relevant`` of shape ``(n_queries,)``.

    Raises:
        ValueError: on mismatched lengths, a non-2-D ``ranked``, or ``K < k`` (a metric at k
            on a shorter list would silently understate it).
    """
    ranked = np.asarray(ranked)
    if ranked.ndim != 2:
        raise ValueError(f"ranked must be 2-D (n_queries, K), got shape {ranked.shape}")
    if k < 1:
        raise ValueError(f"k must be positive, got {k}")
    if ranked.shape[1] < k:
        raise ValueError(f"ranked has {ranked.shape[1]} columns, fewer than k={k}")
    if len(targets) != ranked.shape[0]:
        raise ValueError(f"{len(targets)} targets for {ranked.shape[0]} ranked rows")
    top = ranked[:, :k].astype(np.int64, copy=False)
    valid = _first_occurrence(top)
    n = top.shape[0]
    if _is_single(targets):
        target = np.asarray(targets, dtype=np.int64)
        hits = (top == target[:, None]) & valid
        return hits, np.ones(n, dtype=np.int64)
    # Multi-target: the only loop is over the Python collections to flatten them; the
    # comparison itself is one vectorised membership test on (query, item) keys.
    collections = cast(Sequence[Collection[int]], targets)
    sets = [np.unique(np.fromiter(t, dtype=np.int64, count=len(t))) for t in collections]
    n_relevant = np.fromiter((len(s) for s in sets), dtype=np.int64, count=n)
    flat = np.concatenate(sets) if n else np.empty(0, dtype=np.int64)
    flat_rows = np.repeat(np.arange(n, dtype=np.int64), n_relevant)
    keep = flat >= 0
    width = int(max(flat.max(initial=-1), top.max(initial=-1))) + 1
    relevant_keys = flat_rows[keep] * width + flat[keep]
    ranked_keys = np.arange(n, dtype=np.int64)[:, None] * width + np.maximum(top, 0)
    hits = np.isin(ranked_keys, relevant_keys) & valid
    # Negative "relevant" indices cannot be retrieved but still count as relevant items.
    return hits, n_relevant


def _discounts(k: int) -> np.ndarray:
    """``1 / log2(rank + 1)`` for 1-based ranks ``1..k``."""
    return np.asarray(1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64)))


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else 0.0


def _recall(hits: np.ndarray, n_relevant: np.ndarray) -> np.ndarray:
    return np.divide(hits.sum(axis=1), n_relevant, out=np.zeros(len(hits)), where=n_relevant > 0)


def _hit_rate(hits: np.ndarray) -> np.ndarray:
    return np.asarray(hits.any(axis=1), dtype=np.float64)


def _reciprocal_rank(hits: np.ndarray) -> np.ndarray:
    first = hits.argmax(axis=1)
    return np.where(hits.any(axis=1), 1.0 / (first + 1), 0.0)


def _ndcg(hits: np.ndarray, n_relevant: np.ndarray) -> np.ndarray:
    k = hits.shape[1]
    discounts = _discounts(k)
    dcg = hits @ discounts
    # Ideal DCG: all min(|relevant|, k) relevant items at the top.
    ideal_cumulative = np.concatenate([[0.0], np.cumsum(discounts)])
    idcg = ideal_cumulative[np.minimum(n_relevant, k)]
    return np.divide(dcg, idcg, out=np.zeros(len(hits)), where=idcg > 0)


def _average_precision(hits: np.ndarray, n_relevant: np.ndarray) -> np.ndarray:
    k = hits.shape[1]
    precision = np.cumsum(hits, axis=1) / np.arange(1, k + 1)
    summed = (precision * hits).sum(axis=1)
    denominator = np.minimum(n_relevant, k)
    return np.divide(summed, denominator, out=np.zeros(len(hits)), where=denominator > 0)


# --------------------------------------------------------------------------------------------
# Public ranking metrics.
# --------------------------------------------------------------------------------------------


def recall_at_k(ranked: np.ndarray, targets: Targets, k: int) -> float:
    """Mean share of each query's relevant items found in its top ``k``.

    With a single target per query this equals :func:`hit_rate_at_k`.

    Args:
        ranked: ``(n_queries, K)`` item indices, best first, ``-1`` padding, ``K >= k``.
        targets: ``(n_queries,)`` indices, or a collection of relevant indices per query.
        k: cut-off.

    Returns:
        Mean over queries of ``|top_k ∩ relevant| / |relevant|``.
    """
    hits, n_relevant = _hits(ranked, targets, k)
    return _mean(_recall(hits, n_relevant))


def hit_rate_at_k(ranked: np.ndarray, targets: Targets, k: int) -> float:
    """Share of queries with at least one relevant item in the top ``k`` (HR@k, P@20 in SR-GNN).

    Args:
        ranked: ``(n_queries, K)`` item indices, best first, ``-1`` padding, ``K >= k``.
        targets: ``(n_queries,)`` indices, or a collection of relevant indices per query.
        k: cut-off.

    Returns:
        Hit rate in ``[0, 1]``.
    """
    hits, _ = _hits(ranked, targets, k)
    return _mean(_hit_rate(hits))


def mrr_at_k(ranked: np.ndarray, targets: Targets, k: int) -> float:
    """Mean reciprocal rank of the first relevant item, 0 when none is in the top ``k``.

    Args:
        ranked: ``(n_queries, K)`` item indices, best first, ``-1`` padding, ``K >= k``.
        targets: ``(n_queries,)`` indices, or a collection of relevant indices per query.
        k: cut-off.

    Returns:
        MRR@k in ``[0, 1]``.
    """
    hits, _ = _hits(ranked, targets, k)
    return _mean(_reciprocal_rank(hits))


def ndcg_at_k(ranked: np.ndarray, targets: Targets, k: int) -> float:
    """Normalised discounted cumulative gain with binary relevance and a log2 discount.

    ``DCG = sum_i rel_i / log2(i + 1)`` over 1-based ranks ``i <= k``; the ideal DCG puts
    ``min(|relevant|, k)`` relevant items at the top.

    Args:
        ranked: ``(n_queries, K)`` item indices, best first, ``-1`` padding, ``K >= k``.
        targets: ``(n_queries,)`` indices, or a collection of relevant indices per query.
        k: cut-off.

    Returns:
        Mean NDCG@k in ``[0, 1]``.
    """
    hits, n_relevant = _hits(ranked, targets, k)
    return _mean(_ndcg(hits, n_relevant))


def map_at_k(ranked: np.ndarray, targets: Targets, k: int = 12) -> float:
    """Mean average precision at ``k`` as defined for Kaggle's H&M competition (MAP@12).

    ``AP@k = sum_{i<=k} P(i) * rel(i) / min(|relevant|, k)``, where ``P(i)`` is the precision
    of the top ``i``. With a single target per query this equals MRR@k.

    Args:
        ranked: ``(n_queries, K)`` item indices, best first, ``-1`` padding, ``K >= k``.
        targets: ``(n_queries,)`` indices, or a collection of relevant indices per query.
        k: cut-off (12 in the competition).

    Returns:
        MAP@k in ``[0, 1]``.
    """
    hits, n_relevant = _hits(ranked, targets, k)
    return _mean(_average_precision(hits, n_relevant))


def per_query_metrics(
    ranked: np.ndarray,
    targets: Targets,
    ks: Sequence[int] = (10, 20, 50),
    map_k: int = 12,
) -> dict[str, np.ndarray]:
    """Every ranking metric for each query, from one hit matrix.

    The values a confidence interval resamples (:mod:`pipeline.evaluation.significance`):
    :func:`ranking_metrics` is their mean.

    Args:
        ranked: ``(n_queries, K)`` item indices, best first, ``-1`` padding, with
            ``K >= max(*ks, map_k)``.
        targets: ``(n_queries,)`` indices, or a collection of relevant indices per query.
        ks: cut-offs for recall, NDCG, hit rate and MRR.
        map_k: cut-off for MAP.

    Returns:
        ``{"recall@10": array, "ndcg@10": ..., "hr@10": ..., "mrr@10": ..., ...,
        "map@12": ...}``, each a float64 array of shape ``(n_queries,)``, with one
        ``recall@k``, ``ndcg@k``, ``hr@k`` and ``mrr@k`` per ``k`` in ``ks``.
    """
    top = max(*ks, map_k)
    hits, n_relevant = _hits(ranked, targets, top)
    out: dict[str, np.ndarray] = {}
    for k in sorted(ks):
        at_k = hits[:, :k]
        out[f"recall@{k}"] = _recall(at_k, n_relevant)
        out[f"ndcg@{k}"] = _ndcg(at_k, n_relevant)
        out[f"hr@{k}"] = _hit_rate(at_k)
        out[f"mrr@{k}"] = _reciprocal_rank(at_k)
    out[f"map@{map_k}"] = _average_precision(hits[:, :map_k], n_relevant)
    return {name: np.asarray(values, dtype=np.float64) for name, values in out.items()}


def ranking_metrics(
    ranked: np.ndarray,
    targets: Targets,
    ks: Sequence[int] = (10, 20, 50),
    map_k: int = 12,
) -> dict[str, float]:
    """All ranking metrics from one hit matrix: the means of :func:`per_query_metrics`.

    Args:
        ranked: ``(n_queries, K)`` item indices, best first, ``-1`` padding, with
            ``K >= max(*ks, map_k)``.
        targets: ``(n_queries,)`` indices, or a collection of relevant indices per query.
        ks: cut-offs for recall, NDCG, hit rate and MRR.
        map_k: cut-off for MAP.

    Returns:
        ``{"recall@10": ..., "ndcg@10": ..., "hr@10": ..., "mrr@10": ..., ..., "map@12": ...}``
        with one ``recall@k``, ``ndcg@k``, ``hr@k`` and ``mrr@k`` per ``k`` in ``ks``.
    """
    return {
        name: _mean(values)
        for name, values in per_query_metrics(ranked, targets, ks, map_k).items()
    }


# --------------------------------------------------------------------------------------------
# Top-k selection.
# --------------------------------------------------------------------------------------------


def _exclusion_mask(exclude: Exclude, shape: tuple[int, int]) -> np.ndarray:
    """Dense boolean mask of the items to leave out."""
    n, m = shape
    if sp.issparse(exclude):
        coo = sp.coo_array(exclude)
        if coo.shape != shape:
            raise ValueError(f"exclude has shape {coo.shape}, scores {shape}")
        mask = np.zeros(shape, dtype=bool)
        nonzero = coo.data != 0
        mask[coo.row[nonzero], coo.col[nonzero]] = True
        return mask
    if isinstance(exclude, np.ndarray) and exclude.dtype == bool:
        if exclude.shape != shape:
            raise ValueError(f"exclude has shape {exclude.shape}, scores {shape}")
        return exclude
    if len(exclude) != n:
        raise ValueError(f"{len(exclude)} exclusion lists for {n} rows")
    lists = [np.asarray(list(e) if isinstance(e, set | frozenset) else e) for e in exclude]
    lengths = np.fromiter((len(e) for e in lists), dtype=np.int64, count=n)
    cols = np.concatenate(lists).astype(np.int64) if lengths.sum() else np.empty(0, np.int64)
    rows = np.repeat(np.arange(n), lengths)
    keep = (cols >= 0) & (cols < m)  # out-of-range indices cannot be recommended anyway
    mask = np.zeros(shape, dtype=bool)
    mask[rows[keep], cols[keep]] = True
    return mask


def top_k_from_scores(scores: np.ndarray, k: int, exclude: Exclude | None = None) -> np.ndarray:
    """Indices of the ``k`` best-scoring columns per row, best first, deterministically.

    Ties are broken by the lower column index, including at the k-th place (``argpartition``
    alone would pick an arbitrary tied item there). Cost is ``O(n * m)`` plus ``O(n * k log k)``;
    the extra pass that settles ties at the k-th place runs only on rows that need it.

    Args:
        scores: ``(n, m)`` scores; NaN and ``-inf`` mean "never recommend".
        k: number of items per row.
        exclude: items to leave out per row: a boolean ``(n, m)`` mask, a sparse ``(n, m)``
            matrix (non-zero entries are excluded), or a sequence of ``n`` index collections.

    Returns:
        ``(n, k)`` int64 column indices, padded with ``-1`` when a row has fewer than ``k``
        eligible columns.
    """
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores must be 2-D, got shape {scores.shape}")
    if k < 1:
        raise ValueError(f"k must be positive, got {k}")
    n, m = scores.shape
    if n == 0 or m == 0:
        return np.full((n, k), -1, dtype=np.int64)
    # Work on costs (negated scores, a copy: the caller's array stays untouched), so that
    # "never recommend" is +inf and every selection below is ascending.
    cost = np.negative(scores, dtype=np.float64)
    cost[np.isnan(cost)] = np.inf
    if exclude is not None:
        cost[_exclusion_mask(exclude, (n, m))] = np.inf
    take = min(k, m)
    if take < m:
        columns = np.argpartition(cost, take - 1, axis=1)[:, :take]
        threshold = np.take_along_axis(cost, columns, axis=1).max(axis=1)
        # argpartition picks arbitrary columns among those tied with the take-th best. Only
        # rows with more such ties than places need fixing: there the places go to the
        # lowest-indexed tied columns.
        ambiguous = np.flatnonzero((cost <= threshold[:, None]).sum(axis=1) > take)
        if len(ambiguous):
            sub, limit = cost[ambiguous], threshold[ambiguous, None]
            tied = sub == limit
            room = take - (sub < limit).sum(axis=1)
            selected = (sub < limit) | (tied & (np.cumsum(tied, axis=1) <= room[:, None]))
            columns[ambiguous] = np.nonzero(selected)[1].reshape(len(ambiguous), take)
    else:
        columns = np.broadcast_to(np.arange(m), (n, m))
    # Ascending columns first, then a stable sort on cost: ties stay in column order.
    columns = np.sort(columns, axis=1)
    chosen = np.take_along_axis(cost, columns, axis=1)
    order = np.argsort(chosen, axis=1, kind="stable")
    columns = np.take_along_axis(columns, order, axis=1)
    eligible = np.take_along_axis(chosen, order, axis=1) < np.inf
    out = np.full((n, k), -1, dtype=np.int64)
    out[:, :take] = np.where(eligible, columns, -1)
    return out
