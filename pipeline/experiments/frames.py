"""The per-unit frames the experiment statistics take, checked before any arithmetic runs.

Every statistic in :mod:`pipeline.experiments` validates its input here and raises
:class:`ValueError` naming the problem: an empty frame, a missing column, a variant without
units, NaN or infinity in a column, a ratio metric whose denominator sums to zero in an arm.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

import polars as pl

from pipeline.experiments.config import Metric

__all__ = ["COVARIATE", "check_alpha", "check_frame", "check_units", "finite", "metric_columns"]

COVARIATE: Final = "pre_revenue"  # the CUPED covariate: the unit's revenue before the start


def finite(value: float) -> float | None:
    """``value``, or None when it is NaN or infinite (for JSON)."""
    return float(value) if math.isfinite(value) else None


def check_alpha(alpha: float) -> None:
    """Raise unless ``alpha`` is in (0, 1)."""
    if not (isinstance(alpha, int | float) and 0 < alpha < 1):
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")


def metric_columns(metric: Metric, cuped: bool = False) -> list[str]:
    """The columns ``metric`` reads (and the covariate with ``cuped``)."""
    cols = [metric.numerator] + ([metric.denominator] if metric.denominator else [])
    if cuped and COVARIATE not in cols:
        cols.append(COVARIATE)
    return cols


def check_frame(frame: object, columns: Sequence[str], what: str) -> pl.DataFrame:
    """``frame`` if it is a non-empty DataFrame with ``columns``, numeric and finite (but
    ``variant``, ``unit`` and ``day``, which must not be null)."""
    if not isinstance(frame, pl.DataFrame):
        raise ValueError(f"{what}: expected a polars DataFrame, got {type(frame).__name__}")
    if frame.height == 0:
        raise ValueError(f"{what}: the frame is empty (no units)")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what}: missing columns {missing}; it has {frame.columns}")
    for col in columns:
        dtype = frame.schema[col]
        if col in {"variant", "unit", "day"}:
            if frame[col].null_count():
                raise ValueError(f"{what}: column {col!r} has {frame[col].null_count()} nulls")
            continue
        if not dtype.is_numeric():
            raise ValueError(f"{what}: column {col!r} is {dtype}, expected numbers")
        nulls = frame[col].null_count()
        if nulls:
            raise ValueError(f"{what}: column {col!r} has {nulls} nulls")
        if dtype.is_float():
            bad = frame.select((~pl.col(col).is_finite()).sum()).item()
            if bad:
                raise ValueError(f"{what}: column {col!r} has {bad} NaN or infinite values")
    return frame


def check_units(
    units: object, metric: Metric, variants: Sequence[str], cuped: bool = False
) -> pl.DataFrame:
    """The units of ``variants`` in ``units``, once each variant has at least 2 of them (and
    a non-zero denominator), the units are unique and the metric's columns are sound."""
    what = f"metric {metric.name}"
    frame = check_frame(units, ["variant", *metric_columns(metric, cuped)], what)
    frame = frame.with_columns(pl.col("variant").cast(pl.String))
    if "unit" in frame.columns and frame["unit"].n_unique() != frame.height:
        raise ValueError(f"{what}: {frame.height - frame['unit'].n_unique()} duplicate units")
    if len(set(variants)) != len(variants):
        raise ValueError(f"{what}: control and treatment are the same variant {variants[0]!r}")
    counts = dict(frame.group_by("variant").len().iter_rows())
    for name in variants:
        n = counts.get(name, 0)
        if n < 2:
            raise ValueError(
                f"{what}: variant {name!r} has {n} units; at least 2 are needed "
                f"(variants present: {sorted(counts)})"
            )
        if metric.denominator is not None:
            total = frame.filter(pl.col("variant") == name)[metric.denominator].sum()
            if total == 0:
                raise ValueError(
                    f"{what}: denominator {metric.denominator!r} sums to 0 in variant {name!r}"
                )
    return frame.filter(pl.col("variant").is_in(list(variants)))
