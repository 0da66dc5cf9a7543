"""Fit match: where a customer's body meets an item's size chart.

Used by the Feast on-demand feature view ``fit_match`` and by serving, so both compute the
same thing. Inputs are the coarse body standard scores (converted back to approximate cm with
the population references: raw measurements are never needed) and the item's chart summary
(centre of the smallest size and cm per size, per measure) shifted by its sizing bias.
"""

from __future__ import annotations

import warnings

import numpy as np

from pipeline.contracts import CHART_MEASURES, SIZING_BIAS_CM
from pipeline.features import BODY_REFERENCE

BODY_COLUMNS = {"bust": "bust_z", "waist": "waist_z", "hips": "hips_z"}
INPUTS = (
    *BODY_COLUMNS.values(),
    *[f"chart_{m}_{p}" for m in CHART_MEASURES for p in ("lo", "step")],
    "n_sizes",
    "sizing_bias",
)


def _column(columns, name: str, n: int) -> np.ndarray:
    values = columns[name] if name in columns else [None] * n
    return np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)


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
    ranks = []
    bias_cm = np.nan_to_num(_column(columns, "sizing_bias", n)) * SIZING_BIAS_CM
    for measure, z_column in BODY_COLUMNS.items():
        mean, sd = BODY_REFERENCE[f"{measure}_cm"]
        body = _column(columns, z_column, n) * sd + mean
        lo = _column(columns, f"chart_{measure}_lo", n)
        step = _column(columns, f"chart_{measure}_step", n)
        step = np.where(step > 0, step, np.nan)
        ranks.append((body - (lo + bias_cm)) / step)
    stacked = np.stack(ranks, axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows stay NaN
        estimate = np.nanmean(stacked, axis=1)
        spread = np.nanstd(stacked, axis=1)
    top = _column(columns, "n_sizes", n) - 1
    nearest = np.clip(np.round(estimate), 0, np.where(np.isnan(top), 0, top))
    recommended = np.where(np.isnan(estimate) | np.isnan(top), -1.0, nearest)
    return {
        "fit_rank_estimate": estimate.astype(np.float32),
        "recommended_size_rank": recommended.astype(np.float32),
        "fit_spread": spread.astype(np.float32),
    }
