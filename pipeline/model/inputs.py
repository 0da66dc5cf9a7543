"""Model inputs: NumPy arrays for the towers and the tf.data pipeline of training examples."""

from __future__ import annotations

import numpy as np
import polars as pl

from pipeline.features.declarations import CUSTOMER_ENTITY, ITEM_ENTITY
from pipeline.features.garment_fit import FIT_INPUTS
from pipeline.model.config import PAD, ModelConfig
from pipeline.model.examples import CUSTOMER_NUMERIC, ITEM_NUMERIC
from pipeline.model.priors import Trend, target_positions, trend_buckets
from pipeline.tfenv import tf


def catalogue_arrays(items: pl.DataFrame) -> dict[str, np.ndarray]:
    """Candidate-tower inputs for every catalogue item."""
    return {
        "item_id": items.get_column(ITEM_ENTITY).to_numpy().astype(object),
        "category": items.get_column("category").fill_null(PAD).to_numpy().astype(object),
        "style": items.get_column("style").fill_null(PAD).to_numpy().astype(object),
        "item_features": items.select(ITEM_NUMERIC).to_numpy().astype(np.float32),
    }


def query_arrays(frame: pl.DataFrame) -> dict[str, np.ndarray]:
    return {
        "customer_id": frame.get_column(CUSTOMER_ENTITY).to_numpy().astype(object),
        "customer_features": frame.select(CUSTOMER_NUMERIC).to_numpy().astype(np.float32),
        "session_items": np.array(frame.get_column("history").to_list(), dtype=object),
        "session_events": np.array(frame.get_column("history_events").to_list(), dtype=object),
    }


def fit_feature_matrix(frame: pl.DataFrame) -> np.ndarray:
    return np.asarray(frame.get_column("fit_features").to_numpy(), dtype=np.float32).reshape(
        frame.height, len(FIT_INPUTS)
    )


def to_tf_dataset(
    frame: pl.DataFrame,
    items: pl.DataFrame,
    cfg: ModelConfig,
    memory_shares: tuple[np.ndarray, np.ndarray] | None = None,
    shuffle: bool = True,
    trend: Trend | None = None,
) -> tf.data.Dataset:
    """Batches of examples; customer ids dropped at random so the OOV row learns cold start."""
    rng = np.random.default_rng(cfg.seed)
    query = query_arrays(frame)
    if shuffle:
        drop = rng.random(frame.height) < cfg.customer_dropout
        query["customer_id"] = np.where(drop, PAD, query["customer_id"]).astype(object)
    catalogue = catalogue_arrays(items)
    targets = target_positions(frame, catalogue["item_id"]).astype(np.int32)
    counts = np.bincount(targets, minlength=len(catalogue["item_id"]))
    labels = {
        "target_index": targets,
        "sampling_probability": (counts[targets] / max(len(targets), 1)).astype(np.float32),
        "purchased": frame.get_column("purchased").to_numpy().astype(np.float32),
        "purchase_mask": np.ones(frame.height, np.float32),
        "kept": frame.get_column("kept").to_numpy().astype(np.float32),
        "keep_mask": frame.get_column("keep_mask").to_numpy().astype(np.float32),
        "fit_label": frame.get_column("fit_label").to_numpy().astype(np.int32),
        "own_successor": np.zeros(frame.height, np.float32),
        "own_neighbour": np.zeros(frame.height, np.float32),
        "trend_bucket": trend_buckets(trend, frame),
    }
    if memory_shares is not None:
        labels["own_successor"], labels["own_neighbour"] = memory_shares
    ds = tf.data.Dataset.from_tensor_slices(
        {
            "query": query,
            "candidate": {k: v[targets] for k, v in catalogue.items()},
            "fit_features": fit_feature_matrix(frame),
            "labels": labels,
        }
    )
    if shuffle:
        ds = ds.shuffle(min(frame.height, 200_000), seed=cfg.seed, reshuffle_each_iteration=True)
    return ds.batch(cfg.batch_size).prefetch(tf.data.AUTOTUNE)
