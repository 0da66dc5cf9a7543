"""95% confidence intervals for evaluation claims: a clustered (block) bootstrap over test units.

Test examples are not independent: the steps of one session, and the sessions of one
customer, share a person and a moment. Resampling single examples as if they were independent
understates the variance, so the intervals here resample whole *clusters* (customers where
known, else sessions) with replacement: the cluster bootstrap (Efron & Tibshirani, *An
Introduction to the Bootstrap*, 1993, ch. 6 and 13 for the percentile interval; Cameron,
Gelbach & Miller, "Bootstrap-based improvements for inference with clustered errors", *Review
of Economics and Statistics* 90(3), 2008; Field & Welsh, "Bootstrapping clustered data",
*JRSS B* 69(3), 2007). The interval is the percentile interval of the resampled statistic.

Means of per-query metrics (:func:`bootstrap_means`): a resample gives cluster ``c`` a count
``w_c`` (multinomial, ``sum w = G`` clusters), and the resampled mean is the ratio
``sum_c w_c S_c / sum_c w_c n_c`` of per-cluster sums ``S_c`` to per-cluster sizes ``n_c``,
which is exactly the mean of the resampled examples. That is one matrix product per chunk of
resamples for every column at once (13 metrics x 10 methods over 40,000 clusters in chunks of
a few MB), and every column sees the same draws: a paired difference of two methods is the
difference of their resampled means, resample by resample. With clusters of one example each,
it is the ordinary (Efron) bootstrap.

A statistic that is not a mean (fit AUC; :func:`interval_of`) is recomputed on the examples
of each resample (B = 200 by default: a percentile interval needs far fewer draws than a
p-value, and AUC costs a sort per draw).

``scipy.stats.bootstrap`` computes percentile intervals with paired and vectorised statistics
and serves as the reference in the tests, but it resamples single observations, never
clusters, and draws afresh for each call, so the model's and a baseline's intervals would not
share resamples; hence this module.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, Literal, TypeAlias, TypeVar

import numpy as np

CONFIDENCE = 0.95
MEAN_RESAMPLES = 1000
STATISTIC_RESAMPLES = 200
SEED = 15  # fitrec issue 15: any fixed number makes the intervals reproducible
CHUNK_ELEMENTS = 4_000_000
"""Upper bound on the resample-weight matrix held at once (float64: 32 MB)."""

Verdict: TypeAlias = Literal["ahead", "behind", "tied"]
K = TypeVar("K", bound=Hashable)


def verdict(low: float, high: float) -> Verdict:
    """Read a difference's interval: above 0 is "ahead", below 0 "behind", else "tied".

    Args:
        low: lower bound of the interval of a difference (method minus reference).
        high: upper bound.

    Returns:
        ``"ahead"`` when ``low > 0``, ``"behind"`` when ``high < 0``, otherwise ``"tied"``.

    Raises:
        ValueError: on NaN bounds or ``low > high``.
    """
    if np.isnan(low) or np.isnan(high) or low > high:
        raise ValueError(f"not an interval: [{low}, {high}]")
    if low > 0:
        return "ahead"
    if high < 0:
        return "behind"
    return "tied"


@dataclass(frozen=True)
class Interval:
    """A point estimate with its percentile confidence interval."""

    estimate: float
    low: float
    high: float

    @property
    def verdict(self) -> Verdict:
        """:func:`verdict` of the interval (meaningful for a difference)."""
        return verdict(self.low, self.high)


def cluster_codes(clusters: Sequence[Hashable] | np.ndarray | None, n: int) -> np.ndarray:
    """Dense cluster numbers ``0..G-1`` for ``n`` examples.

    Args:
        clusters: one label per example (customer or session ids, any hashable values);
            None: every example is its own cluster (the ordinary bootstrap).
        n: number of examples.

    Returns:
        ``(n,)`` int64 codes, numbered in order of first appearance.

    Raises:
        ValueError: on a length other than ``n``, or missing (None/NaN) labels.
    """
    if clusters is None:
        return np.arange(n, dtype=np.int64)
    labels = (
        np.asarray(clusters, dtype=object) if not isinstance(clusters, np.ndarray) else clusters
    )
    if labels.ndim != 1 or len(labels) != n:
        raise ValueError(f"{len(labels)} cluster labels for {n} examples")
    if labels.dtype.kind == "f" and np.isnan(labels).any():
        raise ValueError("cluster labels must not be NaN")
    if labels.dtype == object and any(x is None or x != x for x in labels):
        raise ValueError("cluster labels must not be None or NaN")
    keys = labels.astype(str) if labels.dtype == object else labels
    _, first, codes = np.unique(keys, return_index=True, return_inverse=True)
    # Numbered in order of first appearance, so that distinct labels are 0..n-1 in row order
    # and clusters of one example draw exactly what the unclustered bootstrap draws.
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[np.asarray(codes).reshape(n)]


def _weights(rng: np.random.Generator, groups: int, size: int) -> np.ndarray:
    """``(size, groups)`` multinomial resample counts, each row summing to ``groups``."""
    draws = rng.integers(0, groups, size=(size, groups))
    flat = (draws + np.arange(size)[:, None] * groups).ravel()
    return np.bincount(flat, minlength=size * groups).reshape(size, groups).astype(np.float64)


@dataclass(frozen=True)
class MeanDraws(Generic[K]):
    """Resampled means of named columns, all on the same cluster resamples."""

    names: tuple[K, ...]
    estimates: np.ndarray  # (m,)
    draws: np.ndarray  # (resamples, m)
    confidence: float = CONFIDENCE

    def _column(self, name: K) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"no column {name!r}; known: {list(self.names)}") from None

    def _interval(self, estimate: float, draws: np.ndarray) -> Interval:
        tail = (1 - self.confidence) / 2 * 100
        low, high = np.percentile(draws, [tail, 100 - tail])
        return Interval(float(estimate), float(low), float(high))

    def interval(self, name: K) -> Interval:
        """The mean of column ``name`` with its percentile interval."""
        j = self._column(name)
        return self._interval(self.estimates[j], self.draws[:, j])

    def difference(self, a: K, b: K) -> Interval:
        """Paired difference ``mean(a) - mean(b)`` on the same examples, with its interval."""
        i, j = self._column(a), self._column(b)
        return self._interval(
            self.estimates[i] - self.estimates[j], self.draws[:, i] - self.draws[:, j]
        )


def _check_values(values: np.ndarray, n: int, name: object) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"column {name!r} must be 1-D, got shape {array.shape}")
    if len(array) != n:
        raise ValueError(f"column {name!r} has {len(array)} values, expected {n}")
    if not np.isfinite(array).all():
        raise ValueError(f"column {name!r} holds NaN or infinite values")
    return array


def _check_confidence(confidence: float, resamples: int) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if resamples < 1:
        raise ValueError(f"resamples must be positive, got {resamples}")


def bootstrap_means(
    columns: Mapping[K, np.ndarray],
    clusters: Sequence[Hashable] | np.ndarray | None = None,
    *,
    resamples: int = MEAN_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = SEED,
    chunk_elements: int = CHUNK_ELEMENTS,
) -> MeanDraws[K]:
    """Cluster-bootstrap the means of several per-example columns on shared resamples.

    Args:
        columns: name -> ``(n,)`` per-example values (e.g. :func:`per_query_metrics` of each
            method), all on the same examples in the same order.
        clusters: ``(n,)`` cluster labels (customers or sessions); None: no clustering.
        resamples: number of bootstrap resamples B.
        confidence: coverage of the intervals.
        seed: seed of the resampling (same seed and inputs: same intervals).
        chunk_elements: most resample weights held at once (memory bound).

    Returns:
        :class:`MeanDraws` to read intervals and paired differences from.

    Raises:
        ValueError: on no columns, no examples, NaN or infinite values, or lengths that do not
            match.
    """
    _check_confidence(confidence, resamples)
    if not columns:
        raise ValueError("bootstrap_means needs at least one column")
    names = tuple(columns)
    n = len(np.asarray(columns[names[0]]))
    if n == 0:
        raise ValueError("cannot bootstrap a mean over no examples")
    matrix = np.column_stack([_check_values(columns[name], n, name) for name in names])
    codes = cluster_codes(clusters, n)
    groups = int(codes.max()) + 1
    sums = np.zeros((groups, len(names)))
    np.add.at(sums, codes, matrix)
    sizes = np.bincount(codes, minlength=groups).astype(np.float64)
    rng = np.random.default_rng(seed)
    step = max(1, min(resamples, chunk_elements // groups))
    draws = np.empty((resamples, len(names)))
    for start in range(0, resamples, step):
        stop = min(start + step, resamples)
        weights = _weights(rng, groups, stop - start)
        draws[start:stop] = (weights @ sums) / (weights @ sizes)[:, None]
    return MeanDraws(names, matrix.mean(axis=0), draws, confidence)


def mean_interval(
    values: np.ndarray,
    clusters: Sequence[Hashable] | np.ndarray | None = None,
    *,
    resamples: int = MEAN_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = SEED,
) -> Interval:
    """The mean of per-example ``values`` with its clustered percentile interval.

    Args:
        values: ``(n,)`` per-example values.
        clusters: ``(n,)`` cluster labels; None: no clustering.
        resamples: number of bootstrap resamples B.
        confidence: coverage of the interval.
        seed: seed of the resampling.

    Returns:
        The mean and its interval.
    """
    draws = bootstrap_means(
        {"value": values}, clusters, resamples=resamples, confidence=confidence, seed=seed
    )
    return draws.interval("value")


def paired_difference(
    a: np.ndarray,
    b: np.ndarray,
    clusters: Sequence[Hashable] | np.ndarray | None = None,
    *,
    resamples: int = MEAN_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = SEED,
) -> Interval:
    """``mean(a) - mean(b)`` for two methods scored on the same examples, with its interval.

    Args:
        a: ``(n,)`` per-example values of one method.
        b: ``(n,)`` per-example values of the other, on the same examples in the same order.
        clusters: ``(n,)`` cluster labels; None: no clustering.
        resamples: number of bootstrap resamples B.
        confidence: coverage of the interval.
        seed: seed of the resampling.

    Returns:
        The difference and its interval; its ``verdict`` says whether ``a`` is ahead.

    Raises:
        ValueError: when ``a`` and ``b`` differ in length (they must be paired).
    """
    if len(a) != len(b):
        raise ValueError(f"paired values differ in length: {len(a)} and {len(b)}")
    draws = bootstrap_means(
        {"a": a, "b": b}, clusters, resamples=resamples, confidence=confidence, seed=seed
    )
    return draws.difference("a", "b")


def interval_of(
    statistic: Callable[[np.ndarray], float],
    clusters: Sequence[Hashable] | np.ndarray,
    *,
    resamples: int = STATISTIC_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = SEED,
) -> Interval:
    """Cluster-bootstrap a statistic that is not a mean (e.g. fit AUC).

    Each resample draws ``G`` clusters with replacement and calls ``statistic`` with the
    indices of their examples (a cluster drawn twice contributes its examples twice).
    Resamples on which the statistic is undefined (it raises ``ValueError``, as
    :func:`pipeline.evaluation.metrics.fit_auc` does with a single class, or returns NaN) are
    left out.

    Args:
        statistic: row indices -> value; called once on all rows for the estimate.
        clusters: ``(n,)`` cluster labels (customers); each example its own label for the
            ordinary bootstrap.
        resamples: number of bootstrap resamples B.
        confidence: coverage of the interval.
        seed: seed of the resampling.

    Returns:
        The statistic on all rows and its percentile interval.

    Raises:
        ValueError: on no examples, or when fewer than half of the resamples give a value.
    """
    _check_confidence(confidence, resamples)
    n = len(clusters)
    if n == 0:
        raise ValueError("cannot bootstrap a statistic over no examples")
    codes = cluster_codes(clusters, n)
    estimate = float(statistic(np.arange(n)))
    order = np.argsort(codes, kind="stable")
    sizes = np.bincount(codes)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        drawn = rng.integers(0, len(sizes), size=len(sizes))
        counts = sizes[drawn]
        offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        rows = order[np.repeat(starts[drawn], counts) + offsets]
        try:
            value = float(statistic(rows))
        except ValueError:
            continue
        if np.isfinite(value):
            values.append(value)
    if 2 * len(values) < resamples:
        raise ValueError(
            f"the statistic was defined on only {len(values)} of {resamples} resamples"
        )
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return Interval(estimate, float(low), float(high))
