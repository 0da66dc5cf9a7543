"""The fit head measured honestly: by customer kind, calibrated, and against size baselines.

:func:`pipeline.evaluation.evaluate.evaluate_fit` reports with these:

* fit AUC for customers seen in training and for the rest (anonymous examples are unseen),
  so a head that only remembers returning customers shows it;
* the expected calibration error of P(fits) over 10 equal-width bins;
* size accuracy of the size the head recommends on every test row that fitted, scored in
  batches, beside two baselines on exactly the same rows: ``usual_size`` (the size the
  customer had most often in training, in the item's category if she had one there, else
  overall) and ``size_chart`` (the item's chart read at her body measurements; where the data
  has no chart, a population chart learned from the training rows that fitted). A method
  that has no answer for a row counts it as wrong; its coverage says how often it answered.

Sizes are compared on ranks: the position of a size's value
(:func:`pipeline.data.contracts.size_value`) among every distinct size value of the rows
scored, so "within one size" means one step on that scale for letter and numeric sizes alike.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from pipeline.data.contracts import CHART_MEASURES, size_value
from pipeline.evaluation.metrics import fit_auc, size_accuracy
from pipeline.features.declarations import BODY_REFERENCE, CUSTOMER_ENTITY, ITEM_ENTITY
from pipeline.model.config import FIT_CLASSES, PAD

if TYPE_CHECKING:
    from pipeline.model.scoring import Scorer

FITS = FIT_CLASSES.index("fits")
SIZE_BASELINES = ("usual_size", "size_chart")
# Minimum examples for a fit AUC of one customer kind (fewer: the count only).
MIN_AUC_EXAMPLES = 10
# Body bands of the population chart: standard scores floored to whole units, clipped.
BAND_LIMIT = 2


def calibration_table(predicted: np.ndarray, observed: np.ndarray, bins: int = 10) -> pl.DataFrame:
    """Mean predicted P(fits) and observed share that fits per equal-width bin.

    Args:
        predicted: ``(n,)`` predicted probabilities in ``[0, 1]``.
        observed: ``(n,)`` booleans, True where the example fitted.
        bins: Number of equal-width bins over ``[0, 1]``.

    Returns:
        One row per non-empty bin: ``bin`` (0-based), ``predicted``, ``observed``, ``n``.

    Raises:
        ValueError: on mismatched shapes, probabilities outside ``[0, 1]`` or ``bins < 1``.
    """
    predicted = np.asarray(predicted, dtype=np.float64)
    observed = np.asarray(observed, dtype=bool)
    if predicted.ndim != 1 or predicted.shape != observed.shape:
        raise ValueError(f"need two (n,) arrays, got {predicted.shape} and {observed.shape}")
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    if not np.all((predicted >= 0) & (predicted <= 1)):
        raise ValueError("predicted probabilities must lie in [0, 1] (and not be NaN)")
    index = np.minimum((predicted * bins).astype(int), bins - 1)
    return (
        pl.DataFrame({"bin": index, "predicted": predicted, "observed": observed})
        .group_by("bin")
        .agg(pl.col("predicted").mean(), pl.col("observed").mean(), pl.len().alias("n"))
        .sort("bin")
    )


def expected_calibration_error(calibration: pl.DataFrame) -> float:
    """Weighted mean of ``|observed - predicted|`` over the bins of :func:`calibration_table`.

    Args:
        calibration: ``predicted``, ``observed`` and ``n`` per bin.

    Returns:
        The ECE in ``[0, 1]``; 0.0 for an empty table.
    """
    n = calibration.get_column("n").cast(pl.Float64).to_numpy()
    if n.sum() == 0:
        return 0.0
    gap = np.abs(calibration["observed"].to_numpy() - calibration["predicted"].to_numpy())
    return float((n * gap).sum() / n.sum())


def fit_auc_by_customer(y: np.ndarray, proba: np.ndarray, seen: np.ndarray) -> dict[str, float]:
    """Fit AUC and example counts for customers seen in training and for the rest.

    Args:
        y: ``(n,)`` fit labels.
        proba: ``(n, 3)`` fit-head probabilities.
        seen: ``(n,)`` booleans, True where the example's customer has training examples.

    Returns:
        ``fit_examples_seen`` and ``fit_examples_unseen`` always; ``fit_auc_seen`` and
        ``fit_auc_unseen`` where that kind has at least :data:`MIN_AUC_EXAMPLES` examples
        of at least two classes.
    """
    seen = np.asarray(seen, dtype=bool)
    out: dict[str, float] = {}
    for kind, mask in (("seen", seen), ("unseen", ~seen)):
        out[f"fit_examples_{kind}"] = float(mask.sum())
        if mask.sum() >= MIN_AUC_EXAMPLES and np.unique(y[mask]).size >= 2:
            out[f"fit_auc_{kind}"] = fit_auc(y[mask], proba[mask])
    return out


def training_customers(train: pl.DataFrame) -> set[str]:
    """Customer ids with training examples (the anonymous pad left out)."""
    return set(train.get_column(CUSTOMER_ENTITY).unique().to_list()) - {PAD, None}


def model_sizes(scorer: Scorer, rows: pl.DataFrame, batch: int = 1024) -> pl.Series:
    """The size the fit head finds most likely to fit, for each row's customer and item.

    Rows are scored ``batch`` at a time (each expands to one row per size of its item), so
    memory stays bounded however many rows there are.

    Args:
        scorer: A bundle's scorer with item sizes.
        rows: Test example rows (customer id, customer features, item id).
        batch: Example rows per fit-head call.

    Returns:
        A String series ``model`` aligned with ``rows``; null where the item has no sizes.
    """
    if scorer.item_sizes is None:
        return pl.Series("model", [None] * rows.height, dtype=pl.String)
    from pipeline.features.garment_fit import fit_inputs

    sizes = scorer.item_sizes.select(ITEM_ENTITY, "size")
    own = [c for c in rows.columns if c in scorer.customer_features]
    attributes = scorer.items.drop([c for c in own if c in scorer.items.columns])
    chosen: list[pl.DataFrame] = []
    for start in range(0, rows.height, batch):
        part = rows.slice(start, batch).with_row_index("__row", offset=start)
        frame = (
            part.select("__row", CUSTOMER_ENTITY, ITEM_ENTITY, *own)
            .join(sizes, on=ITEM_ENTITY, how="inner")
            .join(attributes, on=ITEM_ENTITY, how="left", maintain_order="left")
        )
        if frame.is_empty():
            continue
        idx = [scorer.item_index[i] for i in frame.get_column(ITEM_ENTITY)]
        proba = scorer.fit_head(
            frame.get_column(CUSTOMER_ENTITY).to_numpy().astype(object),
            frame.select(scorer.customer_features).to_numpy().astype(np.float32),
            scorer.raw_item_vectors[idx],
            fit_inputs(frame),
        )
        chosen.append(
            frame.select("__row", "size")
            .with_columns(pl.Series("p", proba[:, FITS]))
            .sort("__row", "p", descending=[False, True], maintain_order=True)
            .group_by("__row", maintain_order=True)
            .first()
            .select("__row", pl.col("size").alias("model"))
        )
    return _aligned(rows.height, chosen, "model")


def _aligned(n: int, parts: list[pl.DataFrame], name: str) -> pl.Series:
    """A ``name`` column per row index 0..n-1 from ``__row``-keyed parts (null elsewhere)."""
    index = pl.DataFrame({"__row": np.arange(n, dtype=np.uint32)})
    if not parts:
        return pl.Series(name, [None] * n, dtype=pl.String)
    found = pl.concat(parts).with_columns(pl.col("__row").cast(pl.UInt32))
    return index.join(found, on="__row", how="left").sort("__row").get_column(name)


def _with_category(frame: pl.DataFrame, categories: pl.DataFrame) -> pl.DataFrame:
    if "category" in frame.columns:
        return frame
    return frame.join(categories, on=ITEM_ENTITY, how="left", maintain_order="left")


def _most_common(frame: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """Per ``keys``, the most frequent ``size`` (ties: the smaller size, then the label)."""
    return (
        frame.group_by(*keys, "size")
        .agg(pl.len().alias("__n"), size_value(pl.col("size")).first().alias("__v"))
        .sort([*keys, "__n", "__v", "size"], descending=[False] * len(keys) + [True, False, False])
        .group_by(keys, maintain_order=True)
        .first()
        .drop("__n", "__v")
    )


def usual_sizes(rows: pl.DataFrame, train: pl.DataFrame, categories: pl.DataFrame) -> pl.Series:
    """The ``usual_size`` baseline: the size each row's customer had most often in training.

    "Had" is any training example with a size (rented, bought or tried). The most common size
    in the row item's category is used when the customer had one there, else her most common
    size overall; a customer with no sized training example (or anonymous) gets none.

    Args:
        rows: Test rows (customer id, item id).
        train: Training examples (customer id, item id, size).
        categories: ``item_id`` and ``category`` of the catalogue.

    Returns:
        A String series ``usual_size`` aligned with ``rows`` (null: no answer).
    """
    had = _with_category(
        train.filter(pl.col("size").is_not_null() & (pl.col(CUSTOMER_ENTITY) != PAD)).select(
            CUSTOMER_ENTITY, ITEM_ENTITY, "size"
        ),
        categories,
    )
    by_category = _most_common(
        had.filter(pl.col("category").is_not_null()), [CUSTOMER_ENTITY, "category"]
    )
    overall = _most_common(had, [CUSTOMER_ENTITY])
    frame = (
        _with_category(rows.select(CUSTOMER_ENTITY, ITEM_ENTITY), categories)
        .join(
            by_category.rename({"size": "__own"}),
            on=[CUSTOMER_ENTITY, "category"],
            how="left",
            maintain_order="left",
        )
        .join(
            overall.rename({"size": "__all"}), on=CUSTOMER_ENTITY, how="left", maintain_order="left"
        )
    )
    return frame.select(pl.coalesce("__own", "__all").alias("usual_size")).to_series()


def _body_cm(frame: pl.DataFrame, measure: str) -> pl.Expr:
    mean, sd = BODY_REFERENCE[f"{measure}_cm"]
    column = f"{measure}_z"
    if column not in frame.columns:
        return pl.lit(None, dtype=pl.Float64)
    return pl.col(column).cast(pl.Float64) * sd + mean


def item_chart_sizes(rows: pl.DataFrame, item_sizes: pl.DataFrame | None) -> pl.Series:
    """The size each row item's chart gives for the customer's body measurements.

    For every size of the item, the centimetres by which each known body measurement
    (bust, waist, hips, from the standard scores) lies outside that size's range are summed;
    the size with the smallest sum wins (ties: the one whose ranges' centres are nearest,
    then the smaller size). Rows without body measurements or a chart get none.

    Args:
        rows: Test rows (item id and the body standard scores).
        item_sizes: The catalogue's sizes with ``<measure>_min`` / ``<measure>_max`` ranges.

    Returns:
        A String series ``size_chart`` aligned with ``rows`` (null: no answer).
    """
    ranges = [
        m for m in CHART_MEASURES if item_sizes is not None and f"{m}_min" in item_sizes.columns
    ]
    if item_sizes is None or not ranges:
        return pl.Series("size_chart", [None] * rows.height, dtype=pl.String)
    body = rows.with_row_index("__row").select(
        "__row", ITEM_ENTITY, *[_body_cm(rows, m).alias(f"__{m}") for m in ranges]
    )
    frame = body.join(
        item_sizes.select(
            ITEM_ENTITY, "size", *[f"{m}_{e}" for m in ranges for e in ("min", "max")]
        ),
        on=ITEM_ENTITY,
        how="inner",
    )
    outside = [
        pl.max_horizontal(
            pl.col(f"{m}_min") - pl.col(f"__{m}"), pl.col(f"__{m}") - pl.col(f"{m}_max"), 0.0
        )
        for m in ranges
    ]
    centre = [
        (pl.col(f"__{m}") - (pl.col(f"{m}_min") + pl.col(f"{m}_max")) / 2).abs() for m in ranges
    ]
    known = pl.sum_horizontal(
        [pl.col(f"__{m}").is_not_null() & pl.col(f"{m}_min").is_not_null() for m in ranges]
    )
    chosen = (
        frame.with_columns(
            pl.sum_horizontal(outside).alias("__out"),
            pl.sum_horizontal(centre).alias("__centre"),
            size_value(pl.col("size")).alias("__v"),
            known.alias("__known"),
        )
        .filter(pl.col("__known") > 0)
        .sort("__row", "__out", "__centre", "__v")
        .group_by("__row", maintain_order=True)
        .first()
        .select("__row", pl.col("size").alias("size_chart"))
    )
    return _aligned(rows.height, [chosen], "size_chart")


def _bands(frame: pl.DataFrame) -> list[pl.Expr]:
    def band(column: str) -> pl.Expr:
        if column not in frame.columns:
            return pl.lit(None, dtype=pl.Int32).alias(f"__{column}_band")
        z = pl.col(column).cast(pl.Float64).floor().clip(-BAND_LIMIT, BAND_LIMIT)
        return z.cast(pl.Int32).alias(f"__{column}_band")

    return [band("bust_z"), band("weight_z")]


BAND_KEYS = ["category", "__bust_z_band", "__weight_z_band"]


def population_chart(train: pl.DataFrame, categories: pl.DataFrame) -> pl.DataFrame:
    """A size chart learned from the population: for each category and body band (bust band
    x weight band, standard scores floored to whole units and clipped to +-2; an unknown
    measure is its own band), the most common size among training rows labelled "fits".

    Args:
        train: Training examples (item id, fit label, size, body standard scores).
        categories: ``item_id`` and ``category`` of the catalogue.

    Returns:
        ``category``, the two band columns and ``size``; bands with neither measure known
        are left out.
    """
    fitted = _with_category(
        train.filter((pl.col("fit_label") == FITS) & pl.col("size").is_not_null()), categories
    ).with_columns(_bands(train))
    fitted = fitted.filter(
        pl.col("__bust_z_band").is_not_null() | pl.col("__weight_z_band").is_not_null()
    )
    return _most_common(fitted.select(*BAND_KEYS, "size"), BAND_KEYS)


def population_chart_sizes(
    rows: pl.DataFrame, chart: pl.DataFrame, categories: pl.DataFrame
) -> pl.Series:
    """Each row's size by :func:`population_chart` (null: no body data or an empty band)."""
    frame = _with_category(
        rows.select(ITEM_ENTITY, *[c for c in ("bust_z", "weight_z") if c in rows.columns]),
        categories,
    )
    found = frame.with_columns(_bands(frame)).join(
        chart, on=BAND_KEYS, how="left", nulls_equal=True, maintain_order="left"
    )
    known = pl.col("__bust_z_band").is_not_null() | pl.col("__weight_z_band").is_not_null()
    return found.select(pl.when(known).then(pl.col("size")).alias("size_chart")).to_series()


def size_ranks(*labels: pl.Series) -> list[np.ndarray]:
    """Size labels as ranks on one scale: the position of each label's value among every
    distinct value in ``labels`` (NaN where the label is null or not a size)."""
    values = [
        pl.select(size_value(pl.lit(s))).to_series().to_numpy().astype(np.float64) for s in labels
    ]
    known = np.concatenate([v[np.isfinite(v)] for v in values]) if values else np.zeros(0)
    scale = np.unique(known)
    return [
        np.where(np.isfinite(v), np.searchsorted(scale, np.nan_to_num(v)), np.nan) for v in values
    ]


def size_confusion(true: pl.Series, recommended: pl.Series) -> pl.DataFrame:
    """Counts of (true size, recommended size), smallest sizes first.

    Args:
        true: The size that fitted, per row.
        recommended: The recommended size per row (null: no answer, kept as a null row).

    Returns:
        ``true_size``, ``recommended_size``, ``true_rank``, ``recommended_rank`` (ranks of
        :func:`size_ranks`, null for no answer) and ``n``.
    """
    true_rank, recommended_rank = size_ranks(true, recommended)
    return (
        pl.DataFrame(
            {
                "true_size": true.cast(pl.String),
                "recommended_size": recommended.cast(pl.String),
                "true_rank": true_rank,
                "recommended_rank": recommended_rank,
            }
        )
        .with_columns(pl.col("true_rank", "recommended_rank").fill_nan(None).cast(pl.Int32))
        .group_by("true_size", "recommended_size", "true_rank", "recommended_rank")
        .agg(pl.len().alias("n"))
        .sort("true_rank", "recommended_rank", nulls_last=True)
    )


def size_report(
    scorer: Scorer, fitted: pl.DataFrame, train: pl.DataFrame | None
) -> tuple[dict[str, float], pl.DataFrame | None, dict[str, np.ndarray]]:
    """Size accuracy of the fit head and of the size baselines on the same "fits" rows.

    Args:
        scorer: The bundle's scorer (its item sizes, items and fit head).
        fitted: Test rows labelled "fits"; rows without a size are left out.
        train: Training examples for the baselines (None: the model only).

    Returns:
        Metrics (``size_examples``; ``size_accuracy``, ``size_accuracy_within_1`` and
        ``size_coverage`` for the model where the data has sizes, and the same with
        ``_usual_size`` / ``_size_chart`` appended for the baselines) and the model's
        confusion table (:func:`size_confusion`; None without item sizes), and per metric
        its value on each scored row (the rows of ``fitted`` with a size, in order), so
        intervals can be drawn over them.
    """
    rows = fitted.filter(pl.col("size").is_not_null())
    if rows.is_empty():
        return {}, None, {}
    answers: dict[str, pl.Series] = {}
    if scorer.item_sizes is not None:
        answers["model"] = model_sizes(scorer, rows)
    if train is not None:
        categories = scorer.items.select(ITEM_ENTITY, "category")
        answers["usual_size"] = usual_sizes(rows, train, categories)
        chart = item_chart_sizes(rows, scorer.item_sizes)
        learned = population_chart_sizes(rows, population_chart(train, categories), categories)
        both = pl.DataFrame({"chart": chart, "learned": learned})
        answers["size_chart"] = both.select(pl.coalesce("chart", "learned")).to_series()
    if not answers:
        return {}, None, {}
    true = rows.get_column("size")
    ranks = size_ranks(true, *answers.values())
    out = {"size_examples": float(rows.height)}
    per_row: dict[str, np.ndarray] = {}
    for (name, answer), rank in zip(answers.items(), ranks[1:], strict=True):
        suffix = "" if name == "model" else f"_{name}"
        known = np.isfinite(rank) & (rank >= 0)
        with np.errstate(invalid="ignore"):
            distance = np.abs(rank - ranks[0])
        per_row[f"size_accuracy{suffix}"] = (known & (distance == 0)).astype(np.float64)
        per_row[f"size_accuracy_within_1{suffix}"] = (known & (distance <= 1)).astype(np.float64)
        per_row[f"size_coverage{suffix}"] = answer.is_not_null().to_numpy().astype(np.float64)
        out[f"size_accuracy{suffix}"] = size_accuracy(rank, ranks[0])
        out[f"size_accuracy_within_1{suffix}"] = size_accuracy(rank, ranks[0], tolerance=1)
        out[f"size_coverage{suffix}"] = float(answer.is_not_null().sum()) / rows.height
    confusion = size_confusion(true, answers["model"]) if "model" in answers else None
    return out, confusion, per_row
