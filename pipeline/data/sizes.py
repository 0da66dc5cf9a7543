"""Size charts and stock of the items feed, exploded into one row per (item, size).

The items contract declares this as its derived table (``item_sizes``); the measures a chart
gives ranges for are the contract's (:data:`pipeline.data.contracts.CHART_MEASURES`), passed
in so this module sits below the contracts.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import polars as pl

from pipeline.data.jsontext import strict_json

__all__ = ["MAX_SIZES", "MAX_STOCK", "item_sizes_schema", "parse_size_chart"]

# The item_sizes table types a size's rank as Int8 and its stock as Int32.
MAX_SIZES = 128
MAX_STOCK = 2**31 - 1


def item_sizes_schema(measures: Sequence[str]) -> pl.Schema:
    """Columns of ``item_sizes``: the item, the size, its rank, a range per measure, stock."""
    return pl.Schema(
        {
            "item_id": pl.String,
            "size": pl.String,
            "size_rank": pl.Int8,
            **{f"{m}_{b}": pl.Float64 for m in measures for b in ("min", "max")},
            "stock": pl.Int32,
        }
    )


@functools.lru_cache(maxsize=4096)
def _chart_reason(
    chart_text: str, measures: tuple[str, ...]
) -> tuple[list[tuple[str, dict]], str | None]:
    """Sizes of a size chart with their ranges, or the reason it is rejected (cached: many
    items of a catalogue share one chart; callers copy, never change, what it returns)."""
    try:
        chart = strict_json(chart_text)
    except (ValueError, RecursionError):
        return [], "bad_size_chart"
    if not isinstance(chart, dict) or not chart:
        return [], "bad_size_chart"
    if len(chart) > MAX_SIZES:
        return [], "out_of_range:size_chart"
    sizes = []
    for size, ranges in chart.items():
        if not isinstance(ranges, dict):
            return [], "bad_size_chart"
        row: dict = {}
        for m in measures:
            bounds = ranges.get(m)
            if not isinstance(bounds, list) or len(bounds) != 2:
                return [], "bad_size_chart"
            if not all(isinstance(v, str | int) and not isinstance(v, bool) for v in bounds):
                return [], "bad_size_chart"
            try:
                low, high = (float(v) for v in bounds)
            except (ValueError, OverflowError):
                return [], "bad_size_chart"
            if not 0 < low < high < 300:
                return [], "bad_size_chart"
            row[f"{m}_min"], row[f"{m}_max"] = low, high
        sizes.append((size, row))
    return sizes, None


def _stock_units(stock_text: str | None) -> tuple[dict[str, int], str | None]:
    """Units in stock per size (JSON integers from 0 to the Int32 maximum), or the reason."""
    if stock_text is None:
        return {}, None
    try:
        stock = strict_json(stock_text)
    except (ValueError, RecursionError):
        return {}, "bad_stock"
    if not isinstance(stock, dict):
        return {}, "bad_stock"
    units: dict[str, int] = {}
    for size, value in stock.items():
        if isinstance(value, bool) or not isinstance(value, int | str):
            return {}, "bad_stock"
        if isinstance(value, int):
            number = value
        else:  # a JSON float, as its text: 2.0 is 2 units, 1.5 is no number of units
            try:
                as_float = float(value)
            except ValueError:
                return {}, "bad_stock"
            if not abs(as_float) <= MAX_STOCK:  # also inf and nan (1e400)
                return {}, "out_of_range:stock"
            if not as_float.is_integer():
                return {}, "bad_stock"
            number = int(as_float)
        if not 0 <= number <= MAX_STOCK:
            return {}, "out_of_range:stock"
        units[size] = number
    return units, None


def parse_size_chart(
    items: pl.DataFrame, measures: Sequence[str]
) -> tuple[pl.DataFrame, pl.Series]:
    """Explode ``size_chart`` and ``stock`` JSON into one row per (item, size).

    Items without a chart (real catalogues often have none) get no rows and no reason; a
    chart that does not parse or makes no sense gets ``bad_size_chart`` (more sizes than
    an Int8 rank holds: ``out_of_range:size_chart``); stock that is not an object of whole
    units gets ``bad_stock`` (below zero or beyond Int32: ``out_of_range:stock``). Several
    reasons are ``;``-joined.
    """
    chart_measures = tuple(measures)
    rows: list[dict] = []
    reasons: list[str | None] = []
    for item_id, chart_text, stock_text in items.select("item_id", "size_chart", "stock").rows():
        stock, stock_reason = _stock_units(stock_text)
        sizes, chart_reason = (
            _chart_reason(chart_text, chart_measures) if chart_text is not None else ([], None)
        )
        reason = ";".join(r for r in (chart_reason, stock_reason) if r) or None
        reasons.append(reason)
        if reason is None:
            rows.extend(
                {
                    "item_id": item_id,
                    "size": str(size),
                    "size_rank": rank,
                    **ranges,
                    "stock": stock.get(size),
                }
                for rank, (size, ranges) in enumerate(sizes)
            )
    return (
        pl.DataFrame(rows, schema=item_sizes_schema(chart_measures)),
        pl.Series("reason", reasons, dtype=pl.String),
    )
