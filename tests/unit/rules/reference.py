"""The reference implementation of the rules: one Polars query over a candidate frame.

Serving applies rules with :class:`pipeline.rules.compiled.CatalogueRules` (compiled once per
catalogue, NumPy per request). This frame-in, frame-out version exists to be compared against:
the rule behaviour tests read it, and a property test holds the two equal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import polars as pl
import pyarrow as pa

from pipeline.rules.compiled import (
    BRAND_CODES,
    CATEGORY_CODES,
    ITEM_ID,
    filter_expressions,
    keep_expression,
    pick,
    reason_columns,
    reasons,
    required_columns,
    rule_columns,
    score_expression,
)
from pipeline.rules.schema import Context, Rules

OUTPUT_SCHEMA: Final = pl.Schema(
    {"item_id": pl.String(), "score": pl.Float64(), "reasons": pl.List(pl.String())}
)


@dataclass(frozen=True)
class _Plan:
    """The context-free Polars expressions of one rule set, built once and reused."""

    keep: pl.Expr
    score: pl.Expr
    required: frozenset[str]
    reason_columns: tuple[pl.Expr, ...]


# Building expressions costs tens of microseconds per call, a large share of the budget, so
# plans are cached by the rules' JSON (2 us to compute; safe even if a list field is mutated).
_PLANS: dict[str, _Plan] = {}
_MAX_PLANS: Final = 128


def _plan(rules: Rules) -> _Plan:
    """The cached :class:`_Plan` of ``rules``."""
    key = rules.model_dump_json()
    plan = _PLANS.get(key)
    if plan is None:
        plan = _Plan(
            keep=keep_expression(filter_expressions(rules)),
            score=score_expression(rules),
            required=rule_columns(rules),
            reason_columns=tuple(pl.col(c).cast(pl.String) for c in reason_columns(rules)),
        )
        if len(_PLANS) >= _MAX_PLANS:
            # Retailers have a few rule sets, so a full cache means churn: start again. (A
            # clear is also safe under concurrent requests, unlike iterating to evict.)
            _PLANS.clear()
        _PLANS[key] = plan
    return plan


def _empty() -> pl.DataFrame:
    return pl.DataFrame(schema=OUTPUT_SCHEMA)


def apply_rules(
    candidates: pl.DataFrame,
    rules: Rules,
    context: Context,
    k: int,
    vectors: np.ndarray | None = None,
) -> pl.DataFrame:
    """Filter, re-score and pick the final top-k of one page view.

    Stages: filters, then boosts/buries, then a greedy pick of at most ``k`` items by score
    (or MMR) that respects the per-brand and per-category caps. Ties keep input order, so the
    result is deterministic. Rows with a null item id or a null/NaN/infinite score are dropped
    (they cannot be ranked); a repeated item id keeps its first passing row.

    Complexity, for n candidates, r boost/bury rules with v values, d-dimensional vectors:
    filters and re-scoring are O(n * (r * v + 1)), vectorised in one Polars ``select`` whose
    expressions are compiled once per distinct rule set and cached; the purchase/return check
    is O(n) set lookups on the surviving ids (the history changes per request, so it is not
    compiled in). Selection is O(n log n) by score without caps, O(k * n) with caps, and
    O(n * d + k * n * d) with MMR over vectors: one similarity row per pick, never the n x n
    matrix. Memory is O(n * d). Measured: 0.2-0.7 ms median for 500 candidates on a busy
    2-core machine, most of it Polars per-query overhead.

    Args:
        candidates: The model's candidates: ``item_id`` (str), ``score`` (float, higher is
            better, may be negative), ``category``, ``brand``, ``style``, ``colour`` (str or
            null), ``price`` (float or null), ``recommended_size`` (str or null) and
            ``sizes_in_stock`` (list[str] of sizes with stock > 0; null counts as none).
            Columns that no active rule reads may be absent.
        rules: The retailer's validated rules.
        context: The customer's purchases and returns.
        k: The most items to return (0 gives an empty frame).
        vectors: Optional ``(n, d)`` item vectors aligned with the candidate rows; MMR uses
            their cosine similarity (zero vectors are similar to nothing). Ignored unless
            ``rules.diversity.method`` is ``"mmr"``.

    Returns:
        At most ``k`` rows in final order, with :data:`OUTPUT_SCHEMA`: ``item_id``, ``score``
        (after boosts and buries, in the model's units: ``score + sum(ln(factor))``) and
        ``reasons`` (short human-readable strings such as ``"in stock in your size M"``,
        ``"boosted: brand brand_03"``, ``"buried: colour pink"``, ``"more variety"``).

    Raises:
        ValueError: If ``k`` is negative, a column the rules need is missing, or ``vectors``
            is not a finite ``(n, d)`` array.
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    n = candidates.height
    mmr = rules.diversity.method == "mmr"
    if vectors is not None:
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or vectors.shape[0] != n:
            raise ValueError(f"vectors must have shape ({n}, d), got {vectors.shape}")
        if not np.issubdtype(vectors.dtype, np.floating):
            vectors = vectors.astype(np.float64)
        if not np.isfinite(vectors).all():
            raise ValueError("vectors must be finite")
    plan = _plan(rules)
    on_attributes = mmr and vectors is None
    missing = required_columns(rules, with_vectors=vectors is not None) - set(candidates.columns)
    if missing:
        raise ValueError(f"candidates lack columns {sorted(missing)} that the rules need")
    if k == 0 or n == 0:
        return _empty()

    exprs = [plan.keep, plan.score, ITEM_ID, *plan.reason_columns]
    if rules.max_per_brand is not None or on_attributes:
        exprs.append(BRAND_CODES)
    if rules.max_per_category is not None or on_attributes:
        exprs.append(CATEGORY_CODES)
    frame = candidates.select(exprs)  # one pass over the candidates for every filter and boost
    picked = pick(
        rules,
        context,
        k,
        frame["_keep"].to_numpy(),
        frame["item_id"].to_numpy(),
        frame["_score"].to_numpy(),
        frame["_brand"].to_numpy() if "_brand" in frame.columns else None,
        frame["_category"].to_numpy() if "_category" in frame.columns else None,
        vectors,
    )
    if picked is None:
        return _empty()
    chosen, ids, score, variety = picked
    values = {c: frame.get_column(c).to_numpy()[chosen] for c in reason_columns(rules)}
    return _output(ids, score, reasons(rules, values, variety))


def _output(ids: np.ndarray, score: np.ndarray, reasons: list[list[str]]) -> pl.DataFrame:
    """The result frame of :func:`apply_rules`."""
    return pl.DataFrame(
        [
            pl.Series("item_id", ids, dtype=pl.String),
            pl.Series("score", score, dtype=pl.Float64),
            _string_lists(reasons).alias("reasons"),
        ]
    )


def _string_lists(rows: list[list[str]]) -> pl.Series:
    """A ``List(String)`` Series, built through Arrow offsets: 3x faster than from nested lists."""
    offsets = [0]
    flat: list[str] = []
    for row in rows:
        flat.extend(row)
        offsets.append(len(flat))
    array = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(flat, pa.string()))
    series = pl.from_arrow(array)
    assert isinstance(series, pl.Series)  # an Arrow array converts to a Series, not a frame
    return series
