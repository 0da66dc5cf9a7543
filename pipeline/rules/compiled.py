"""Rules compiled against one catalogue: what serving applies on every page view.

:class:`CatalogueRules` evaluates the context-free part of a :class:`~pipeline.rules.schema.Rules`
once over the whole catalogue (category and price filters, the ln(factor) of every boost and
bury, brand and category codes); per request it looks only at the request's own inputs
(model scores, recommended sizes against each item's sizes in stock, purchases and returns),
then picks at most ``k`` items by score or Maximal Marginal Relevance within the brand and
category caps, and says why (:func:`reasons`). The Polars expressions here are public so that
the tests' frame-in, frame-out reference implementation builds on the same definitions.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable, Sequence
from typing import Final

import numpy as np
import polars as pl

from pipeline.rules.schema import BoostRule, BuryRule, Context, Rules

# One weighted row of the item-item similarity matrix, computed on demand for the latest pick.
_Similarity = Callable[[int], np.ndarray]

# Up to this many values, a membership test is compiled to chained equalities.
_MAX_EQUALITIES: Final = 16

# Similarity weights of the indicator fallback when MMR has no item vectors.
_SAME_CATEGORY: Final = 0.5
_SAME_BRAND: Final = 0.5


def is_in(column: str, values: Sequence[str]) -> pl.Expr:
    """``column`` is one of ``values``; False (never null) for a null ``column``."""
    col = pl.col(column).cast(pl.String)
    unique = list(dict.fromkeys(values))
    if len(unique) > _MAX_EQUALITIES:
        return col.is_in(unique).fill_null(False)
    # Rules list a handful of values: null-safe equalities run about twice as fast as is_in
    # plus fill_null on them.
    return functools.reduce(operator.or_, [col.eq_missing(v) for v in unique])


def filter_expressions(rules: Rules) -> list[pl.Expr]:
    """The context-free filter conditions of ``rules`` (null means the row fails)."""
    conditions = [pl.col("item_id").is_not_null(), pl.col("score").cast(pl.Float64).is_finite()]
    if rules.in_stock_in_recommended_size:
        sizes = pl.col("sizes_in_stock").cast(pl.List(pl.String))
        size = pl.col("recommended_size").cast(pl.String)
        conditions.append(
            pl.when(size.is_null()).then(sizes.list.len() > 0).otherwise(sizes.list.contains(size))
        )
    if rules.categories.include is not None:
        conditions.append(is_in("category", rules.categories.include))
    if rules.categories.exclude:
        conditions.append(~is_in("category", rules.categories.exclude))
    if rules.price.active:
        price = pl.col("price").cast(pl.Float64)
        # Polars orders NaN above every number, so test finiteness explicitly.
        conditions.append(price.is_finite())
        if rules.price.min is not None:
            conditions.append(price >= rules.price.min)
        if rules.price.max is not None:
            conditions.append(price <= rules.price.max)
    return conditions


def keep_expression(filters: list[pl.Expr]) -> pl.Expr:
    """True for the rows that pass every filter; a null anywhere (unknown stock, category,
    price) fails the row: Kleene AND, then fill."""
    return pl.all_horizontal(filters).fill_null(False).alias("_keep")


def score_expression(rules: Rules) -> pl.Expr:
    """The score plus ln(factor) of every matching boost and bury rule."""
    score = pl.col("score").cast(pl.Float64)
    score_rules: list[BoostRule | BuryRule] = [*rules.boost, *rules.bury]
    for rule in score_rules:
        matched = is_in(rule.attribute, rule.values)
        score = score + pl.when(matched).then(math.log(rule.factor)).otherwise(0.0)
    return score.alias("_score")


def rule_columns(rules: Rules) -> frozenset[str]:
    """The input columns the active rules read (MMR without vectors adds brand and category)."""
    needed = {"item_id", "score"}
    if rules.in_stock_in_recommended_size:
        needed |= {"recommended_size", "sizes_in_stock"}
    if rules.categories.include is not None or rules.categories.exclude:
        needed.add("category")
    if rules.price.active:
        needed.add("price")
    needed |= {r.attribute for r in [*rules.boost, *rules.bury]}
    if rules.max_per_brand is not None:
        needed.add("brand")
    if rules.max_per_category is not None:
        needed.add("category")
    return frozenset(needed)


def required_columns(rules: Rules, with_vectors: bool = True) -> frozenset[str]:
    """The candidate columns the rules read under ``rules``; MMR without
    ``vectors`` compares brands and categories instead."""
    needed = rule_columns(rules)
    if rules.diversity.method == "mmr" and not with_vectors:
        needed |= {"brand", "category"}
    return needed


def reason_columns(rules: Rules) -> list[str]:
    """The columns whose values the reasons quote: boosted/buried attributes, the size."""
    columns: set[str] = {r.attribute for r in [*rules.boost, *rules.bury]}
    if rules.in_stock_in_recommended_size:
        columns.add("recommended_size")
    return sorted(columns)


def codes(column: str) -> pl.Expr:
    """Dense integer codes of a string column, 0 for null, so NumPy can compare groups."""
    return pl.col(column).cast(pl.String).rank("dense").fill_null(0).alias(f"_{column}")


BRAND_CODES: Final = codes("brand")
CATEGORY_CODES: Final = codes("category")
ITEM_ID: Final = pl.col("item_id").cast(pl.String)


class CatalogueRules:
    """The rules for candidates drawn from one fixed catalogue, built once per (rules,
    catalogue) so that a page view costs NumPy indexing instead of a Polars query.

    The context-free part of the rules is evaluated once over the whole catalogue with the
    same expressions as the frame-in, frame-out reference in the tests: category and price
    filters, the ln(factor) of every boost and bury (kept per rule, added in the same order,
    so scores are bit-equal),
    brand and category codes. Per request only the request's own inputs are looked at: model
    scores, recommended sizes (against each item's sizes in stock), purchases and returns,
    then the shared selection and reasons. The result equals the reference applied to the
    gathered candidate frame (``tests/unit/rules``: a property test holds the two together).

    Args:
        rules: The retailer's validated rules.
        catalogue: One row per catalogue item, in catalogue-index order, with ``item_id`` and
            the columns the rules read (``category``, ``brand``, ``style``, ``colour``,
            ``price``, ``sizes_in_stock``).
    """

    def __init__(self, rules: Rules, catalogue: pl.DataFrame):
        self.rules = rules
        mmr_on_attributes = rules.diversity.method == "mmr"  # vectors may come per request
        needed = required_columns(rules, with_vectors=False) - {"score", "recommended_size"}
        missing = needed - set(catalogue.columns)
        if missing:
            raise ValueError(f"catalogue lacks columns {sorted(missing)} that the rules need")
        static = rules.model_copy(update={"in_stock_in_recommended_size": False})
        frame = catalogue.with_columns(pl.lit(0.0).alias("score"))
        exprs = [keep_expression(filter_expressions(static)), ITEM_ID]
        score_rules: list[BoostRule | BuryRule] = [*rules.boost, *rules.bury]
        exprs += [
            pl.when(is_in(r.attribute, r.values))
            .then(math.log(r.factor))
            .otherwise(0.0)
            .alias(f"_factor_{j}")
            for j, r in enumerate(score_rules)
        ]
        if rules.max_per_brand is not None or mmr_on_attributes:
            exprs.append(BRAND_CODES)
        if rules.max_per_category is not None or mmr_on_attributes:
            exprs.append(CATEGORY_CODES)
        quoted = [c for c in reason_columns(rules) if c != "recommended_size"]
        exprs += [pl.col(c).cast(pl.String) for c in quoted]
        out = frame.select(exprs)
        self.keep = out["_keep"].to_numpy()
        self.ids = out["item_id"].to_numpy()
        self.factors = [out[f"_factor_{j}"].to_numpy() for j in range(len(score_rules))]
        self.brand = out["_brand"].to_numpy() if "_brand" in out.columns else None
        self.category = out["_category"].to_numpy() if "_category" in out.columns else None
        self.values = {c: out[c].to_numpy() for c in quoted}
        self.stock: list[frozenset[str]] | None = None
        if rules.in_stock_in_recommended_size:
            self.stock = [frozenset(s or ()) for s in catalogue["sizes_in_stock"].to_list()]

    def apply(
        self,
        indices: np.ndarray,
        scores: np.ndarray,
        sizes: Sequence[str | None] | None,
        context: Context,
        k: int,
        vectors: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, list[list[str]]]:
        """Item ids, boosted scores and reasons of at most ``k`` picks, in final order.

        Args:
            indices: Catalogue indices of the candidates, best first.
            scores: Their model scores.
            sizes: Their recommended sizes (None where unknown); may be None unless the
                rules keep only items in stock in the recommended size.
            context: The customer's purchases and returns.
            k: The most items to return.
            vectors: Optional candidate vectors for MMR, compared by cosine similarity.
        """
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        indices = np.asarray(indices, dtype=np.intp)
        n = indices.size
        if vectors is not None:
            vectors = np.asarray(vectors, dtype=np.float64)
            if vectors.shape[0] != n or not np.isfinite(vectors).all():
                raise ValueError(f"vectors must be a finite ({n}, d) array")
        if k == 0 or n == 0:
            return np.zeros(0, object), np.zeros(0), []
        score = np.asarray(scores, dtype=np.float64)
        keep = self.keep[indices] & np.isfinite(score)
        if self.stock is not None:
            if sizes is None:
                raise ValueError("the rules need the recommended sizes")
            stock = self.stock
            keep &= np.fromiter(
                (
                    (size in stock[i]) if size is not None else bool(stock[i])
                    for i, size in zip(indices.tolist(), sizes, strict=True)
                ),
                dtype=bool,
                count=n,
            )
        for factor in self.factors:  # in rule order, as score_expression adds them
            score = score + factor[indices]
        picked = pick(
            self.rules,
            context,
            k,
            keep,
            self.ids[indices],
            score,
            self.brand[indices] if self.brand is not None else None,
            self.category[indices] if self.category is not None else None,
            vectors,
        )
        if picked is None:
            return np.zeros(0, object), np.zeros(0), []
        chosen, ids, score, variety = picked
        values = {c: v[indices[chosen]] for c, v in self.values.items()}
        if self.stock is not None:
            assert sizes is not None
            values["recommended_size"] = np.array([sizes[i] for i in chosen], dtype=object)
        return ids, score, reasons(self.rules, values, variety)


def pick(
    rules: Rules,
    context: Context,
    k: int,
    keep: np.ndarray,
    ids: np.ndarray,
    score: np.ndarray,
    brand: np.ndarray | None,
    category: np.ndarray | None,
    vectors: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Stages 1 (history) and 3 (selection) over per-row arrays that already hold the
    context-free filters (``keep``) and the boosted ``score``.

    Returns:
        The chosen rows in final order, their ids, scores and "more variety" flags; None
        when nothing passes.
    """
    kept = np.flatnonzero(keep)
    ids = ids[kept]
    # The customer's history changes per request, so it is checked here, by set lookups on the
    # surviving ids, rather than compiled into the cached expressions.
    history = (context.purchased if rules.exclude_purchased else frozenset()) | (
        context.returned if rules.exclude_returned else frozenset()
    )
    if history:
        fresh = ~np.fromiter(map(history.__contains__, ids), dtype=bool, count=ids.size)
        kept, ids = kept[fresh], ids[fresh]
    if len(set(ids.tolist())) < ids.size:
        kept, ids = _first_of_each(kept, ids)
    if kept.size == 0:
        return None
    score = score[kept]
    brand = brand[kept] if brand is not None else None
    category = category[kept] if category is not None else None
    brand_cap, category_cap = rules.max_per_brand, rules.max_per_category
    mmr = rules.diversity.method == "mmr"
    if not mmr and brand_cap is None and category_cap is None:
        # Plain top-k: a stable sort on -score keeps input order among ties.
        order = np.argsort(-score, kind="stable")[:k]
        variety = np.zeros(order.size, dtype=bool)
    else:
        lam = rules.diversity.lambda_
        penalty_row: _Similarity | None = None
        if vectors is not None and mmr:
            penalty_row = _cosine_rows(vectors[kept], 1.0 - lam)
        elif mmr:
            assert brand is not None and category is not None  # requested by the callers
            penalty_row = _indicator_rows(category, brand, 1.0 - lam)
        order, variety = _greedy(
            score, k, lam, penalty_row, (brand, brand_cap), (category, category_cap)
        )
    return kept[order], ids[order], score[order], variety


def _first_of_each(rows: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ``rows`` (and their ``ids``) whose id has not appeared earlier (rare: ids repeat)."""
    seen: set[str] = set()
    first = np.zeros(rows.size, dtype=bool)
    for i, item_id in enumerate(ids.tolist()):
        if item_id not in seen:
            seen.add(item_id)
            first[i] = True
    return rows[first], ids[first]


def _cosine_rows(vectors: np.ndarray, weight: float) -> _Similarity:
    """``weight`` times row ``i`` of the cosine-similarity matrix, computed on demand."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = vectors / np.where(norms > 0, norms, 1.0)  # zero vectors stay zero: similar to none
    scaled = unit * weight  # folding the weight in saves one array operation per pick
    return lambda i: scaled @ unit[i]


def _indicator_rows(category: np.ndarray, brand: np.ndarray, weight: float) -> _Similarity:
    """``weight`` times 0.5 * same category + 0.5 * same brand (code 0 = null matches nothing)."""
    on_category, on_brand = weight * _SAME_CATEGORY, weight * _SAME_BRAND

    def row(i: int) -> np.ndarray:
        same_category = (category == category[i]) & (category[i] > 0)
        same_brand = (brand == brand[i]) & (brand[i] > 0)
        return on_category * same_category + on_brand * same_brand

    return row


_Cap = tuple[np.ndarray, int, dict[int, int]]
"""A cap being filled: the codes per candidate, the cap, and the picks so far per code."""


def _count_caps(caps: list[_Cap], best: int) -> np.ndarray | None:
    """Count the pick ``best`` against each cap; the items whose brand or category it just
    filled up (None when it filled none)."""
    capped: np.ndarray | None = None
    for codes, cap, count in caps:
        code = int(codes[best])
        if code > 0:  # null brands and categories are uncapped
            count[code] = count.get(code, 0) + 1
            if count[code] >= cap:
                same = codes == code
                capped = same if capped is None else capped | same
    return capped


def _greedy(
    score: np.ndarray,
    k: int,
    lam: float,
    penalty_row: _Similarity | None,
    brand_cap: tuple[np.ndarray | None, int | None],
    category_cap: tuple[np.ndarray | None, int | None],
) -> tuple[np.ndarray, np.ndarray]:
    """Pick up to ``k`` indices one at a time, by MMR (or by score) within the caps.

    Each MMR pick maximises ``lam * relevance - (1 - lam) * max similarity to the picks``.
    Per pick the work is O(n) array operations plus one similarity row; blocked items (picked
    or capped out) get an infinite penalty instead of being removed, so indices never shift.

    Args:
        score: Boosted scores of the kept candidates, in input order.
        k: The most picks.
        lam: MMR lambda; ignored without ``penalty_row``.
        penalty_row: Returns ``(1 - lam)`` times the similarity row of a picked index, or
            None to rank by score.
        brand_cap: Brand codes (0 = null, uncapped) and the cap, or ``(None, None)``.
        category_cap: Category codes and the cap, likewise.

    Returns:
        The picked indices in order, and whether each was picked over a more relevant item
        (the "more variety" reason).
    """
    n = score.size
    blocked = np.zeros(n, dtype=bool)
    if penalty_row is None:
        value = score.astype(np.float64)  # a copy: blocked items are set to -inf below
    else:
        low, high = score.min(), score.max()
        # Min-max scaling puts relevance on the same [0, 1] footing as similarity.
        relevance = (score - low) / (high - low) if high > low else np.ones(n)
        gain = lam * relevance
        penalty = np.zeros(n)
        objective = np.empty(n)
        # The most relevant unblocked item, for the "more variety" reason: a cursor over the
        # relevance order only moves forward, so finding it costs O(n) over all picks.
        by_relevance = np.argsort(-score, kind="stable")
        cursor = 0
    caps: list[_Cap] = [
        (codes, cap, dict[int, int]())
        for codes, cap in (brand_cap, category_cap)
        if codes is not None and cap is not None
    ]
    picked: list[int] = []
    variety: list[bool] = []
    for step in range(min(k, n)):
        if penalty_row is None:
            best = int(np.argmax(value))  # the first maximum: input order breaks ties
        elif step == 0:
            best = int(by_relevance[0])  # the first MMR pick is the most relevant item
        else:
            best = int(np.argmax(np.subtract(gain, penalty, out=objective)))
        if blocked[best]:
            break  # every remaining item is capped out
        picked.append(best)
        if penalty_row is not None:
            while blocked[by_relevance[cursor]]:
                cursor += 1
            variety.append(bool(score[best] < score[by_relevance[cursor]]))
            row = penalty_row(best)
            penalty = row if step == 0 else np.maximum(penalty, row, out=penalty)
        else:
            variety.append(False)
        capped = _count_caps(caps, best)
        # Block the pick (and anything capped out) where the next argmax looks.
        hide, fill = (value, -np.inf) if penalty_row is None else (penalty, np.inf)
        blocked[best] = True
        hide[best] = fill
        if capped is not None:
            blocked |= capped
            hide[capped] = fill
    return np.asarray(picked, dtype=np.int64), np.asarray(variety, dtype=bool)


def reasons(rules: Rules, values: dict[str, np.ndarray], variety: np.ndarray) -> list[list[str]]:
    """Short reasons for each chosen row (only k rows touch Python).

    Args:
        rules: The rules applied.
        values: The :func:`reason_columns` of the chosen rows, as strings, in final order.
        variety: Whether each was picked over a more relevant item.
    """
    score_rules = [
        *(("boosted", r.attribute, frozenset(r.values)) for r in rules.boost),
        *(("buried", r.attribute, frozenset(r.values)) for r in rules.bury),
    ]
    columns = {c: v.tolist() for c, v in values.items()}
    sizes = columns.get("recommended_size", [])
    out: list[list[str]] = []
    for i in range(len(variety)):
        mine: list[str] = []
        if sizes:
            mine.append(f"in stock in your size {sizes[i]}" if sizes[i] is not None else "in stock")
        for verb, attribute, matching in score_rules:
            value = columns[attribute][i]
            if value in matching:
                mine.append(f"{verb}: {attribute} {value}")
        if variety[i]:
            mine.append("more variety")
        out.append(list(dict.fromkeys(mine)))  # two rules on one value give one reason
    return out
