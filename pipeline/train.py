"""Training: leak-free session examples, tf.data input, fitting, and the exported bundle.

An example is "given this customer (features as of the day before) and the items of the
session so far, the next distinct item is X". The split is by time: sessions of the last
day are the test set; everything earlier trains. Item features for both come from the
snapshot at the cut-off, so no test-day information reaches the model.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.contracts import CATEGORIES, STYLES
from pipeline.features import (
    CUSTOMER_ENTITY,
    CUSTOMER_FEATURES,
    CUSTOMER_VIEW,
    ITEM_ENTITY,
    ITEM_FEATURES,
    ITEM_VIEW,
    SNAPSHOT_TTL,
    TIMESTAMP,
    defaults,
    feature_paths,
    numeric,
    snapshot_time,
)
from pipeline.ingest import scan_curated
from pipeline.model import PAD, ModelConfig, RetrievalModel, build_model
from pipeline.tfenv import tf

log = logging.getLogger(__name__)

CUSTOMER_NUMERIC = numeric(CUSTOMER_FEATURES)
ITEM_NUMERIC = numeric(ITEM_FEATURES)
_DEFAULTS = {**defaults(CUSTOMER_FEATURES), **defaults(ITEM_FEATURES)}


@dataclass
class Dataset:
    """Train and test examples plus the item table the candidates come from."""

    train: pl.DataFrame
    test: pl.DataFrame
    items: pl.DataFrame
    cutoff: datetime


def session_examples(curated_dir: Path, up_to: date, session_len: int) -> pl.DataFrame:
    """Next-item examples from curated session events up to the end of ``up_to``.

    Consecutive events on the same item (view, try-on, cart) count as one step.
    """
    events = (
        scan_curated(curated_dir, "session_events", up_to)
        .filter(pl.col("ts") < snapshot_time(up_to))
        .select("session_id", CUSTOMER_ENTITY, ITEM_ENTITY, "ts")
        .sort("session_id", "ts")
        .filter(
            pl.col(ITEM_ENTITY) != pl.col(ITEM_ENTITY).shift(1).over("session_id").fill_null("")
        )
        .collect()
    )
    sessions = events.group_by("session_id", maintain_order=True).agg(
        pl.col(CUSTOMER_ENTITY).first(),
        pl.col(ITEM_ENTITY).alias("items"),
        pl.col("ts").alias("times"),
        pl.col("ts").min().alias("session_start"),
    )
    pad = pl.lit([PAD] * session_len, dtype=pl.List(pl.String))
    return (
        sessions.with_columns(pl.int_ranges(0, pl.col("items").list.len()).alias("position"))
        .explode("position")
        .with_columns(
            pl.col("items").list.get(pl.col("position")).alias(ITEM_ENTITY),
            pl.col("times").list.get(pl.col("position")).alias("ts"),
            pl.concat_list(pad, pl.col("items").list.slice(0, pl.col("position")))
            .list.tail(session_len)
            .alias("history"),
        )
        .select(
            "session_id",
            pl.col(CUSTOMER_ENTITY).fill_null(PAD),
            "history",
            ITEM_ENTITY,
            "ts",
            "session_start",
        )
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
    return (
        point_in_time(examples, snapshots)
        .with_columns(pl.col(c).fill_null(_DEFAULTS[c]).cast(pl.Float32) for c in CUSTOMER_NUMERIC)
        .drop("features_as_of")
    )


def item_table(snapshots: pl.DataFrame, as_of: datetime) -> pl.DataFrame:
    """The latest item snapshot at or before ``as_of``, one row per item."""
    items = (
        snapshots.filter(pl.col(TIMESTAMP) <= as_of)
        .sort(TIMESTAMP)
        .group_by(ITEM_ENTITY, maintain_order=True)
        .last()
        .sort(ITEM_ENTITY)
    )
    if items.is_empty():
        raise ValueError(f"no item feature snapshot at or before {as_of:%Y-%m-%d %H:%M}")
    return items.with_columns(
        pl.col(c).fill_null(_DEFAULTS[c]).cast(pl.Float32) for c in ITEM_NUMERIC
    )


def build_dataset(
    curated_dir: Path, features_dir: Path, run_date: date, cfg: ModelConfig
) -> Dataset:
    """Examples up to ``run_date``; the last day's sessions are the test set."""
    paths = feature_paths(features_dir)
    cutoff = snapshot_time(run_date - timedelta(days=1))
    examples = session_examples(curated_dir, run_date, cfg.session_len)
    examples = attach_customer_features(examples, pl.read_parquet(paths[CUSTOMER_VIEW]))
    items = item_table(pl.read_parquet(paths[ITEM_VIEW]), cutoff)
    known = examples.get_column(ITEM_ENTITY).is_in(items.get_column(ITEM_ENTITY).implode())
    examples = examples.filter(known)
    train = examples.filter(pl.col("session_start") < cutoff)
    test = examples.filter(pl.col("session_start") >= cutoff)
    if train.is_empty() or test.is_empty():
        raise ValueError(
            f"need sessions before and on {run_date}: train={len(train)} test={len(test)}"
        )
    return Dataset(train=train, test=test, items=items, cutoff=cutoff)


def query_arrays(frame: pl.DataFrame) -> dict[str, np.ndarray]:
    return {
        "customer_id": frame.get_column(CUSTOMER_ENTITY).to_numpy().astype(object),
        "customer_features": frame.select(CUSTOMER_NUMERIC).to_numpy().astype(np.float32),
        "session_items": np.array(frame.get_column("history").to_list(), dtype=object),
    }


def candidate_arrays(items: pl.DataFrame) -> dict[str, np.ndarray]:
    return {
        "item_id": items.get_column(ITEM_ENTITY).to_numpy().astype(object),
        "category": items.get_column("category").fill_null(PAD).to_numpy().astype(object),
        "style": items.get_column("style").fill_null(PAD).to_numpy().astype(object),
        "item_features": items.select(ITEM_NUMERIC).to_numpy().astype(np.float32),
    }


def to_tf_dataset(data: Dataset, cfg: ModelConfig) -> tf.data.Dataset:
    """(query, candidate) pairs; customer ids dropped at random so the OOV row learns cold start."""
    rng = np.random.default_rng(cfg.seed)
    query = query_arrays(data.train)
    drop = rng.random(len(data.train)) < cfg.customer_dropout
    query["customer_id"] = np.where(drop, PAD, query["customer_id"]).astype(object)
    # Candidate attributes by position in the item table (customer and item views share
    # some feature names, so the two must never meet in one frame).
    position = {item: i for i, item in enumerate(data.items.get_column(ITEM_ENTITY))}
    targets = np.array([position[i] for i in data.train.get_column(ITEM_ENTITY)])
    candidate = {k: v[targets] for k, v in candidate_arrays(data.items).items()}
    counts = np.bincount(targets, minlength=len(position))
    sampling = (counts[targets] / len(targets)).astype(np.float32)
    ds = tf.data.Dataset.from_tensor_slices(
        {"query": query, "candidate": candidate, "sampling_probability": sampling}
    )
    return ds.shuffle(len(targets), seed=cfg.seed, reshuffle_each_iteration=True).batch(
        cfg.batch_size
    )


def fit(data: Dataset, cfg: ModelConfig) -> tuple[RetrievalModel, list[float]]:
    """Train the two-tower model; returns it and the loss per epoch."""
    customers = sorted(set(data.train.get_column(CUSTOMER_ENTITY).to_list()) - {PAD})
    model = build_model(
        cfg,
        customers=customers,
        items=data.items.get_column(ITEM_ENTITY).to_list(),
        categories=list(CATEGORIES),
        styles=list(STYLES),
        customer_feature_sample=data.train.select(CUSTOMER_NUMERIC).to_numpy(),
        item_feature_sample=data.items.select(ITEM_NUMERIC).to_numpy(),
    )
    model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate=cfg.learning_rate))
    history = model.fit(to_tf_dataset(data, cfg), epochs=cfg.epochs, verbose=0)
    losses = [float(v) for v in history.history["loss"]]
    log.info("trained %d epochs on %d examples; loss %s", cfg.epochs, len(data.train), losses)
    return model, losses


class QueryEncoder(tf.Module):
    """The query tower with a fixed serving signature (what the bundle exports)."""

    def __init__(self, model: RetrievalModel, cfg: ModelConfig):
        super().__init__()
        self.tower = model.query
        self.session_len = cfg.session_len

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.string, name="customer_id"),
            tf.TensorSpec([None, len(CUSTOMER_NUMERIC)], tf.float32, name="customer_features"),
            tf.TensorSpec([None, None], tf.string, name="session_items"),
        ]
    )
    def encode(self, customer_id, customer_features, session_items):
        return {
            "query": self.tower(
                {
                    "customer_id": customer_id,
                    "customer_features": customer_features,
                    "session_items": session_items,
                }
            )
        }


def item_embeddings(model: RetrievalModel, items: pl.DataFrame) -> np.ndarray:
    arrays = candidate_arrays(items)
    out = [
        model.candidate(batch).numpy()
        for batch in tf.data.Dataset.from_tensor_slices(arrays).batch(4096)
    ]
    return np.concatenate(out).astype(np.float32)


def popularity(train: pl.DataFrame) -> list[str]:
    """Items by number of training interactions, most first (the cold-start fallback)."""
    return (
        train.group_by(ITEM_ENTITY)
        .len()
        .sort(["len", ITEM_ENTITY], descending=[True, False])
        .get_column(ITEM_ENTITY)
        .to_list()
    )


def export_bundle(model: RetrievalModel, data: Dataset, cfg: ModelConfig, out: Path) -> Path:
    """Write what serving needs: the query encoder, item embeddings and item table, metadata."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    encoder = QueryEncoder(model, cfg)
    tf.saved_model.save(encoder, str(out / "query_encoder"), signatures={"encode": encoder.encode})
    np.save(out / "item_embeddings.npy", item_embeddings(model, data.items))
    data.items.drop(TIMESTAMP).write_parquet(out / "items.parquet")
    meta = {
        "config": cfg.as_params(),
        "customer_features": CUSTOMER_NUMERIC,
        "customer_defaults": {c: _DEFAULTS[c] for c in CUSTOMER_NUMERIC},
        "item_features": ITEM_NUMERIC,
        "popular_items": popularity(data.train)[:500],
        "cutoff": data.cutoff.isoformat(),
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    return out
