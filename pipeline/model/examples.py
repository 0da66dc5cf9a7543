"""Training and evaluation examples: one row per step of a session, with every label it has.

A *step* is a run of events on the same item within a session (a view, then a try-on, then
add-to-cart of one dress is one step). Each step is an example: "given this customer (with
features as of before the step) and the steps so far, the next item is X". Labels travel with
the step when the data has them:

* ``purchased`` - the item was bought in this session (ranking head);
* ``kept`` - bought and not returned (ranking head, only where purchased);
* ``fit_label`` / ``size`` - fit feedback of a try-on of this item in this session, else the
  return reason (too small / too large) or a kept purchase (fits) (fit head; -1 when none).

Data without session events (RentTheRunway: reviews of rentals) uses each customer's own
timeline as the "session": previous rentals are the history, the fit feedback the label.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import polars as pl

from pipeline.data.contracts import EVENT_TYPES
from pipeline.data.curated import current_dimension, scan_curated
from pipeline.features.build import feature_paths
from pipeline.features.declarations import (
    CUSTOMER_ENTITY,
    CUSTOMER_FEATURES,
    CUSTOMER_VIEW,
    ENGAGEMENT_WEIGHTS,
    ITEM_ENTITY,
    ITEM_FEATURES,
    ITEM_VIEW,
    SNAPSHOT_TTL,
    TIMESTAMP,
    defaults,
    numeric,
    snapshot_time,
)
from pipeline.features.garment_fit import fit_inputs
from pipeline.model.config import FIT_CLASSES, PAD

CUSTOMER_NUMERIC = numeric(CUSTOMER_FEATURES)
ITEM_NUMERIC = numeric(ITEM_FEATURES)
_DEFAULTS = {**defaults(CUSTOMER_FEATURES), **defaults(ITEM_FEATURES)}
# Strongest event of a step, by how much it says about intent.
_STRENGTH = {t: i for i, t in enumerate(sorted(EVENT_TYPES, key=lambda t: ENGAGEMENT_WEIGHTS[t]))}
FIT_INDEX = {name: i for i, name in enumerate(FIT_CLASSES)}


@dataclass
class Dataset:
    """Train and test examples and the catalogue the candidates come from.

    Attributes:
        train: Training examples.
        test: Test examples.
        items: Item feature table (the candidates), one row per item.
        cutoff: When the training data ends (None: no time cut-off).
        item_sizes: Sizes and stock of each item, written to the bundle for the fit head
            and the in-stock rules (None: the data has no size charts).
        catalogue: Brand, colour and price of each item, written to the bundle for the
            rules (None: not known).
        unknown_item_examples_dropped: Examples dropped because their item had no feature
            snapshot at the cut-off.
    """

    train: pl.DataFrame
    test: pl.DataFrame
    items: pl.DataFrame
    cutoff: datetime | None
    item_sizes: pl.DataFrame | None = None
    catalogue: pl.DataFrame | None = None
    unknown_item_examples_dropped: int = 0


def _steps(curated_dir: Path, up_to: date, collapse_repeats: bool = True) -> pl.DataFrame:
    """Session steps: consecutive events on one item merged (unless ``collapse_repeats`` is
    off, as for click-stream benchmarks whose protocol predicts every click); the session's
    purchases marked."""
    end = snapshot_time(up_to)
    events = scan_curated(curated_dir, "session_events", up_to).filter(pl.col("ts") < end)
    if events.select(pl.len()).collect().item() == 0:
        return _timeline_steps(curated_dir, up_to)
    events = events.select(
        "event_id", "session_id", CUSTOMER_ENTITY, ITEM_ENTITY, "event_type", "ts"
    ).sort("session_id", "ts", maintain_order=True)
    new_step = (pl.col(ITEM_ENTITY) != pl.col(ITEM_ENTITY).shift(1).over("session_id")).fill_null(
        True
    )
    if not collapse_repeats:
        new_step = pl.col("ts").is_not_null() | pl.col("ts").is_null()  # every event a step
    strength = pl.col("event_type").replace_strict(_STRENGTH, return_dtype=pl.Int8)
    steps = (
        events.with_columns(
            (new_step.cast(pl.Int32).cum_sum().over("session_id") - 1).alias("step")
        )
        .group_by("session_id", "step", maintain_order=True)
        .agg(
            pl.col("event_id").first(),
            pl.col(CUSTOMER_ENTITY).first(),
            pl.col(ITEM_ENTITY).first(),
            pl.col("ts").min(),
            pl.col("event_type").sort_by(strength).last().alias("event_type"),
        )
    )
    bought = (
        events.filter(pl.col("event_type") == "purchase")
        .select("session_id", ITEM_ENTITY, pl.lit(True).alias("purchased"))
        .unique()
    )
    return (
        steps.join(bought, on=["session_id", ITEM_ENTITY], how="left")
        .with_columns(pl.col("purchased").fill_null(False))
        .collect()
    )


def _timeline_steps(curated_dir: Path, up_to: date) -> pl.DataFrame:
    """Without session events: each customer's try-ons in time order form one long session."""
    end = snapshot_time(up_to)
    tries = scan_curated(curated_dir, "try_ons", up_to).filter(pl.col("ts") < end)
    return (
        tries.select(
            pl.col(CUSTOMER_ENTITY).alias("session_id"),
            CUSTOMER_ENTITY,
            ITEM_ENTITY,
            "ts",
            pl.lit("try_on").alias("event_type"),
            pl.lit(False).alias("purchased"),
            pl.col("event_id"),
            pl.lit(True).alias("timeline"),
        )
        .sort("session_id", "ts", "event_id")
        .with_columns(pl.int_range(pl.len()).over("session_id").alias("step"))
        .collect()
    )


def _labels(steps: pl.DataFrame, curated_dir: Path, up_to: date) -> pl.DataFrame:
    """Attach kept / fit labels and the size they refer to."""
    end = snapshot_time(up_to)
    tries = (
        scan_curated(curated_dir, "try_ons", up_to)
        .filter(pl.col("ts") < end)
        .select(
            "event_id",
            "session_id",
            ITEM_ENTITY,
            pl.col("size").alias("tried_size"),
            pl.col("fit_feedback")
            .replace_strict(FIT_INDEX, default=None, return_dtype=pl.Int8)
            .alias("tried_fit"),
        )
        .collect()
    )
    purchases = (
        scan_curated(curated_dir, "purchases", up_to)
        .filter(pl.col("ts") < end)
        .select(
            CUSTOMER_ENTITY,
            ITEM_ENTITY,
            pl.col("ts").alias("bought_ts"),
            pl.col("size").alias("bought_size"),
            (~pl.col("returned")).alias("kept"),
            pl.when(~pl.col("returned"))
            .then(pl.lit(FIT_INDEX["fits"], pl.Int8))
            .otherwise(
                pl.col("return_reason").replace_strict(
                    {"too_small": 0, "too_large": 2}, default=None, return_dtype=pl.Int8
                )
            )
            .alias("bought_fit"),
        )
        .collect()
    )
    if "timeline" in steps.columns:  # timeline steps are the try-ons themselves
        with_tries = steps.drop("timeline").join(
            tries.drop("session_id", ITEM_ENTITY), on="event_id", how="left"
        )
    else:
        first_try = tries.sort("event_id").unique(["session_id", ITEM_ENTITY], keep="first")
        with_tries = steps.join(
            first_try.drop("event_id"), on=["session_id", ITEM_ENTITY], how="left"
        )
    # A purchase belongs to the step of the same customer and item within a day after it.
    bought = (
        with_tries.filter(pl.col("purchased"))
        .select("session_id", "step", CUSTOMER_ENTITY, ITEM_ENTITY, "ts")
        .sort("ts")
        .join_asof(
            purchases.sort("bought_ts"),
            left_on="ts",
            right_on="bought_ts",
            by=[CUSTOMER_ENTITY, ITEM_ENTITY],
            strategy="forward",
            tolerance=timedelta(days=1),
            check_sortedness=False,
        )
        .select("session_id", "step", "kept", "bought_size", "bought_fit")
    )
    labelled = with_tries.join(bought, on=["session_id", "step"], how="left")
    return labelled.with_columns(
        pl.col("purchased").cast(pl.Float32),
        pl.col("kept").fill_null(False).cast(pl.Float32),
        pl.col("purchased").cast(pl.Float32).alias("keep_mask"),
        pl.coalesce("tried_fit", "bought_fit").fill_null(-1).cast(pl.Int32).alias("fit_label"),
        pl.coalesce("tried_size", "bought_size").alias("size"),
    ).drop("tried_fit", "bought_fit", "tried_size", "bought_size")


def _histories(steps: pl.DataFrame, session_len: int) -> pl.DataFrame:
    """Each step with the items and event types of the steps before it (left-padded)."""
    pad = pl.lit([PAD] * session_len, dtype=pl.List(pl.String))
    # Joins upstream may reorder rows; the history must follow the steps' own order.
    steps = steps.sort("session_id", "step")
    previous = steps.group_by("session_id", maintain_order=True).agg(
        pl.col(ITEM_ENTITY).alias("__items"), pl.col("event_type").alias("__types")
    )
    return (
        steps.join(previous, on="session_id", how="left", maintain_order="left")
        .with_columns(
            *[
                pl.concat_list(pad, pl.col(f"__{kind}").list.slice(0, pl.col("step")))
                .list.tail(session_len)
                .alias(name)
                for kind, name in (("items", "history"), ("types", "history_events"))
            ]
        )
        .drop("__items", "__types")
    )


def point_in_time(examples: pl.DataFrame, snapshots: pl.DataFrame) -> pl.DataFrame:
    """Point-in-time join: each example gets the latest snapshot taken at or before its ``ts``.

    Snapshots older than :data:`SNAPSHOT_TTL` do not count, as in Feast's historical
    retrieval of the same view (a test checks the two agree row by row). Missing stays null;
    ``features_as_of`` says which snapshot was used.
    """
    snaps = snapshots.select(
        CUSTOMER_ENTITY, pl.col(TIMESTAMP).alias("features_as_of"), *CUSTOMER_NUMERIC
    ).sort("features_as_of")
    return examples.sort("ts").join_asof(
        snaps,
        left_on="ts",
        right_on="features_as_of",
        by=CUSTOMER_ENTITY,
        strategy="backward",
        tolerance=SNAPSHOT_TTL,
        check_sortedness=False,
    )


def attach_customer_features(examples: pl.DataFrame, snapshots: pl.DataFrame) -> pl.DataFrame:
    """:func:`point_in_time`, with missing features filled by their declared defaults."""
    return point_in_time(examples, snapshots).with_columns(
        pl.col(c).fill_null(_DEFAULTS[c]).cast(pl.Float32) for c in CUSTOMER_NUMERIC
    )


def item_table(snapshots: pl.DataFrame, as_of: datetime | None) -> pl.DataFrame:
    """The latest item snapshot at or before ``as_of`` (all of them when None)."""
    if as_of is not None:
        snapshots = snapshots.filter(pl.col(TIMESTAMP) <= as_of)
    items = snapshots.sort(TIMESTAMP).group_by(ITEM_ENTITY, maintain_order=True).last()
    if items.is_empty():
        raise ValueError(f"no item feature snapshot at or before {as_of}")
    return items.sort(ITEM_ENTITY).with_columns(pl.col(c).cast(pl.Float32) for c in ITEM_NUMERIC)


def session_examples(
    curated_dir: Path, up_to: date, session_len: int, collapse_repeats: bool = True
) -> pl.DataFrame:
    """Every step up to the end of ``up_to`` as an example, with history and labels."""
    steps = _labels(_steps(curated_dir, up_to, collapse_repeats), curated_dir, up_to)
    examples = _histories(steps, session_len)
    starts = examples.group_by("session_id").agg(pl.col("ts").min().alias("session_start"))
    return examples.join(starts, on="session_id", how="left").with_columns(
        pl.col(CUSTOMER_ENTITY).fill_null(PAD)
    )


def finish(examples: pl.DataFrame, items: pl.DataFrame) -> pl.DataFrame:
    """Add item attributes needed by the fit head and the fit inputs themselves."""
    attributes = items.select(
        ITEM_ENTITY,
        "category",
        *[c for c in ("sizing_bias", "fit_skew", "n_sizes") if c in items.columns],
        *[c for c in items.columns if c.startswith("chart_")],
    )
    joined = examples.join(attributes, on=ITEM_ENTITY, how="left", maintain_order="left")
    matrix = fit_inputs(joined)
    return examples.with_columns(
        pl.Series("fit_features", matrix, dtype=pl.Array(pl.Float32, matrix.shape[1]))
    )


def build_dataset(
    curated_dir: Path, features_dir: Path, run_date: date, session_len: int
) -> Dataset:
    """Examples up to ``run_date``: sessions that start on ``run_date`` are the test set.

    Item features come from the snapshot at the cut-off, so no test-day information reaches
    training or the candidates.
    """
    paths = feature_paths(features_dir)
    cutoff = snapshot_time(run_date - timedelta(days=1))
    examples = session_examples(curated_dir, run_date, session_len)
    examples = attach_customer_features(examples, pl.read_parquet(paths[CUSTOMER_VIEW]))
    try:
        items = item_table(pl.read_parquet(paths[ITEM_VIEW]), cutoff)
    except ValueError as exc:
        raise ValueError(
            f"cannot train for {run_date}: {exc} (no data before the run date)"
        ) from exc
    known = examples.get_column(ITEM_ENTITY).is_in(items.get_column(ITEM_ENTITY).implode())
    dropped = int((~known).sum())
    # Joins do not promise an order; a fixed one keeps training reproducible.
    examples = finish(examples.filter(known).sort("session_id", "step"), items)
    train = examples.filter(pl.col("session_start") < cutoff)
    test = examples.filter(pl.col("session_start") >= cutoff)
    if train.is_empty() or test.is_empty():
        raise ValueError(
            f"cannot train for {run_date}: need sessions before and on it "
            f"(train={len(train)} test={len(test)})"
        )
    sizes = current_dimension(curated_dir, "item_sizes", run_date - timedelta(days=1))
    catalogue = current_dimension(curated_dir, "items", run_date - timedelta(days=1)).select(
        ITEM_ENTITY, "brand", "colour", "price"
    )
    return Dataset(
        train=train,
        test=test,
        items=items,
        cutoff=cutoff,
        item_sizes=sizes,
        catalogue=catalogue,
        unknown_item_examples_dropped=dropped,
    )
