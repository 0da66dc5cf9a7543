"""Fit match: where a customer's body meets an item's size chart.

Used by the Feast on-demand feature view ``fit_match`` and by serving, so both compute the
same thing. Inputs are the coarse body standard scores (converted back to approximate cm with
the population references: raw measurements are never needed) and the item's chart summary
(centre of the smallest size and cm per size, per measure) shifted by its sizing bias.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from pipeline.data.contracts import CHART_MEASURES, SIZING_BIAS_CM, size_value
from pipeline.features.declarations import APPAREL, BODY_REFERENCE

BODY_COLUMNS = {"bust": "bust_z", "waist": "waist_z", "hips": "hips_z"}
INPUTS = (
    *BODY_COLUMNS.values(),
    *[f"chart_{m}_{p}" for m in CHART_MEASURES for p in ("lo", "step")],
    "n_sizes",
    "sizing_bias",
)


def _column(columns, name: str, n: int) -> np.ndarray:
    if name not in columns:
        return np.full(n, np.nan)
    values = columns[name]
    if isinstance(values, pl.Series):
        return values.cast(pl.Float64).fill_null(np.nan).to_numpy()
    if isinstance(values, np.ndarray) and values.dtype.kind == "f":
        return values.astype(np.float64)
    return np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)


def _chart(columns, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The item side of :func:`fit_match`, per row and measure (``BODY_COLUMNS`` order): the
    chart's smallest size shifted by the sizing bias, and cm per size (NaN where unknown)."""
    bias_cm = np.nan_to_num(_column(columns, "sizing_bias", n)) * SIZING_BIAS_CM
    lo = np.stack([_column(columns, f"chart_{m}_lo", n) + bias_cm for m in BODY_COLUMNS], axis=1)
    step = np.stack([_column(columns, f"chart_{m}_step", n) for m in BODY_COLUMNS], axis=1)
    return lo, np.where(step > 0, step, np.nan)


def _rank_summary(ranks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of each row's known size ranks (NaN when none is known)."""
    known = ~np.isnan(ranks)
    count = known.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):  # all-NaN rows stay NaN
        estimate = np.where(known, ranks, 0.0).sum(axis=1) / count
        deviation = np.where(known, ranks - estimate[:, None], 0.0)
        spread = np.sqrt((deviation**2).sum(axis=1) / count)
    return estimate, spread


def fit_match(columns, n: int | None = None) -> dict[str, np.ndarray]:
    """Fractional size rank, nearest size and spread for each row.

    Args:
        columns: mapping (dict, pandas or Polars frame) with the columns in :data:`INPUTS`.
        n: number of rows (taken from the first column when omitted).

    Returns:
        ``fit_rank_estimate`` (NaN without body data or chart), ``recommended_size_rank``
        (-1 when unknown) and ``fit_spread`` (NaN when unknown), as float32 arrays.
    """
    n = n if n is not None else len(columns[INPUTS[0]])
    body = np.stack(
        [
            _column(columns, z_column, n) * BODY_REFERENCE[f"{measure}_cm"][1]
            + BODY_REFERENCE[f"{measure}_cm"][0]
            for measure, z_column in BODY_COLUMNS.items()
        ],
        axis=1,
    )
    lo, step = _chart(columns, n)
    estimate, spread = _rank_summary((body - lo) / step)
    top = _column(columns, "n_sizes", n) - 1
    nearest = np.clip(np.round(estimate), 0, np.where(np.isnan(top), 0, top))
    recommended = np.where(np.isnan(estimate) | np.isnan(top), -1.0, nearest)
    return {
        "fit_rank_estimate": estimate.astype(np.float32),
        "recommended_size_rank": recommended.astype(np.float32),
        "fit_spread": spread.astype(np.float32),
    }


# Inputs of the model's fit head for one (customer, item, size), shared by training and
# serving so both compute them alike.
FIT_INPUTS = (
    "size_value",
    "size_vs_history",
    "has_history",
    "size_vs_body",
    "has_body_estimate",
    "body_spread",
    "sizing_bias",
    "fit_skew",
    "tryon_small_rate",
    "tryon_large_rate",
)


_AT = {name: i for i, name in enumerate(FIT_INPUTS)}


def fit_inputs(frame: pl.DataFrame) -> np.ndarray:
    """The fit head's inputs, one row per (customer, item, size) row of ``frame``.

    ``frame`` holds ``size`` (a label), ``category``, the customer's features and the item's
    features. "History" is the size that fitted the customer before in this category (else
    overall); "body" is where her body meets this item's chart (:func:`fit_match`). Each
    is given as the chosen size minus it, with a flag saying whether it is known.
    """
    n = frame.height
    size = frame.select(size_value(pl.col("size"))).to_series().to_numpy().astype(np.float64)
    overall = _column(frame, "fit_size_rank", n)
    history = overall.copy()
    if "category" in frame.columns:
        categories = frame.get_column("category").to_numpy()
        for category in set(categories.tolist()) & set(APPAREL):
            rows = categories == category
            own = _column(frame, f"fit_size_{category}", n)[rows]
            history[rows] = np.where(own >= 0, own, overall[rows])
    history = np.where(history >= 0, history, np.nan)
    body = fit_match({c: frame.get_column(c) for c in INPUTS if c in frame.columns}, n)
    return _assemble(
        size,
        history,
        body,
        _column(frame, "sizing_bias", n),
        _column(frame, "fit_skew", n),
        _column(frame, "tryon_small_rate", n),
        _column(frame, "tryon_large_rate", n),
    )


def _assemble(
    size: np.ndarray,
    history: np.ndarray,
    body: dict[str, np.ndarray],
    sizing_bias: np.ndarray,
    fit_skew: np.ndarray,
    small_rate: np.ndarray,
    large_rate: np.ndarray,
) -> np.ndarray:
    """The fit head's input matrix, in :data:`FIT_INPUTS` order (NaN -> 0, flags say known)."""
    estimate = body["fit_rank_estimate"].astype(np.float64)
    columns = {
        "size_value": size,
        "size_vs_history": size - history,
        "has_history": ~np.isnan(history),
        "size_vs_body": size - estimate,
        "has_body_estimate": ~np.isnan(estimate),
        "body_spread": body["fit_spread"],
        "sizing_bias": sizing_bias,
        "fit_skew": fit_skew,
        "tryon_small_rate": small_rate,
        "tryon_large_rate": large_rate,
    }
    matrix = np.stack([np.asarray(columns[c], dtype=np.float32) for c in FIT_INPUTS], axis=1)
    return np.nan_to_num(matrix, nan=0.0)


class FitTable:
    """Fit-head inputs for every (item, size) of a catalogue, precomputed at load time so a
    request only adds its customer's side (vectorised; equal to :func:`fit_inputs`)."""

    def __init__(self, items: pl.DataFrame, sizes: pl.DataFrame, item_ids: list[str]):
        position = {item: i for i, item in enumerate(item_ids)}
        attributes = [c for c in INPUTS if c in items.columns and c not in BODY_COLUMNS.values()]
        rows = sizes.select("item_id", "size").join(
            items.select("item_id", "category", "fit_skew", *attributes),
            on="item_id",
            how="inner",
            maintain_order="left",
        )
        self.item_index = np.array([position[i] for i in rows.get_column("item_id")], np.int64)
        self.sizes = rows.get_column("size").to_numpy().astype(object)
        self.size_value = rows.select(size_value(pl.col("size"))).to_series().to_numpy()
        self.size_value = self.size_value.astype(np.float64)
        category = rows.get_column("category").fill_null("").to_list()
        # Apparel categories by their position in APPAREL; -1 for the rest (no size history).
        apparel = {c: i for i, c in enumerate(APPAREL)}
        self.category_code = np.array([apparel.get(c, -1) for c in category], np.int64)
        self.columns = {c: _column(rows, c, rows.height) for c in (*attributes, "fit_skew")}
        self.columns.setdefault("sizing_bias", np.full(rows.height, np.nan))
        self.chart_lo, self.chart_step = _chart(self.columns, rows.height)  # once, not per request
        order = np.argsort(self.item_index, kind="stable")
        bounds = np.searchsorted(self.item_index[order], np.arange(len(item_ids) + 1))
        self.rows_of = [order[bounds[i] : bounds[i + 1]] for i in range(len(item_ids))]

    def rows(self, items: np.ndarray) -> np.ndarray:
        """Row indices of every size of the given catalogue items (item by item, in order)."""
        parts = [self.rows_of[i] for i in items]
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    def best_sizes(
        self, item_ids: list[str], items: np.ndarray, fits: np.ndarray
    ) -> dict[str, tuple[str, float]]:
        """For each of ``items`` (catalogue indices; ``item_ids`` their ids) with a size
        chart, the size most likely to fit and that probability, given P(fits) of each of
        :meth:`rows` ``(items)`` in order; on a tie the first such row wins."""
        p, sizes = fits.tolist(), self.sizes
        out: dict[str, tuple[str, float]] = {}
        start = 0
        for item_id, item in zip(item_ids, items.tolist(), strict=True):
            rows = self.rows_of[item]
            n = len(rows)
            if n:
                best = max(range(start, start + n), key=p.__getitem__)  # the first of equals
                out[item_id] = (str(sizes[rows[best - start]]), p[best])
                start += n
        return out

    def _body(self, customer: dict[str, float | None], rows: np.ndarray) -> dict[str, np.ndarray]:
        """:func:`fit_match`'s estimate and spread for one customer, item side precomputed."""
        body = []
        for measure, z_column in BODY_COLUMNS.items():
            z = customer.get(z_column)
            mean, sd = BODY_REFERENCE[f"{measure}_cm"]
            body.append(np.nan if z is None else float(z) * sd + mean)
        n = len(rows)
        if np.isnan(body).all():
            unknown = np.full(n, np.nan, np.float32)
            return {"fit_rank_estimate": unknown, "fit_spread": unknown}
        ranks = (np.asarray(body) - self.chart_lo[rows]) / self.chart_step[rows]
        estimate, spread = _rank_summary(ranks)
        return {
            "fit_rank_estimate": estimate.astype(np.float32),
            "fit_spread": spread.astype(np.float32),
        }

    def inputs(self, customer: dict[str, float | None], rows: np.ndarray) -> np.ndarray:
        """The fit head's inputs for one customer and the given rows (as :func:`_assemble`
        builds them, written column by column into one matrix)."""
        n = len(rows)
        get = customer.get

        def value(name: str) -> float:
            v = get(name)
            return np.nan if v is None else float(v)

        size = self.size_value[rows]
        overall = value("fit_size_rank")
        history = np.full(n, overall if overall >= 0 else np.nan)
        codes = self.category_code[rows]
        for code in set(codes.tolist()):
            if code >= 0:
                own = value(f"fit_size_{APPAREL[code]}")
                if own >= 0:
                    history[codes == code] = own
        body = self._body(customer, rows)
        estimate = body["fit_rank_estimate"].astype(np.float64)
        out = np.empty((n, len(FIT_INPUTS)), np.float32)
        out[:, _AT["size_value"]] = size
        out[:, _AT["size_vs_history"]] = size - history
        out[:, _AT["has_history"]] = ~np.isnan(history)
        out[:, _AT["size_vs_body"]] = size - estimate
        out[:, _AT["has_body_estimate"]] = ~np.isnan(estimate)
        out[:, _AT["body_spread"]] = body["fit_spread"]
        out[:, _AT["sizing_bias"]] = self.columns["sizing_bias"][rows]
        out[:, _AT["fit_skew"]] = self.columns["fit_skew"][rows]
        out[:, _AT["tryon_small_rate"]] = value("tryon_small_rate")
        out[:, _AT["tryon_large_rate"]] = value("tryon_large_rate")
        return np.nan_to_num(out, nan=0.0, copy=False)
