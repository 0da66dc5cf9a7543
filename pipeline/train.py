"""Training: tf.data input, fitting, and the exported bundle serving loads.

The bundle is a directory: a SavedModel with three signatures (``encode`` a query, ``rank``
candidates, ``fit`` sizes), the catalogue's candidate vectors and biases, the item table
(features, size charts, stock) and ``meta.json`` (config, feature names and defaults,
popular items). MLflow logs it as a pyfunc (:mod:`pipeline.registry`).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import polars as pl
import scipy.sparse as sp

from pipeline.contracts import CATEGORIES, EVENT_TYPES, STYLES
from pipeline.examples import CUSTOMER_NUMERIC, ITEM_NUMERIC, Dataset
from pipeline.features import CUSTOMER_ENTITY, CUSTOMER_FEATURES, ITEM_ENTITY, TIMESTAMP, defaults
from pipeline.fit import FIT_INPUTS
from pipeline.model import PAD, ModelConfig, RecommenderModel, build_model
from pipeline.tfenv import tf

log = logging.getLogger(__name__)


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


def _top_m(matrix: sp.csr_array, m: int) -> tuple[np.ndarray, np.ndarray, sp.csr_array]:
    """Per row, the ``m`` largest entries as (index, log1p value) arrays with two leading
    empty rows (padding and unknown ids), and the kept entries as a sparse matrix."""
    n = matrix.shape[0]
    index = np.zeros((n + 2, m), np.int32)
    value = np.zeros((n + 2, m), np.float32)
    rows, cols, counts = [], [], []
    for row in range(n):
        start, end = matrix.indptr[row], matrix.indptr[row + 1]
        if start == end:
            continue
        c, v = matrix.indices[start:end], matrix.data[start:end]
        top = np.argsort(-v, kind="stable")[:m]
        index[row + 2, : len(top)] = c[top]
        value[row + 2, : len(top)] = np.log1p(v[top])
        rows.append(np.full(len(top), row))
        cols.append(c[top])
        counts.append(v[top])
    kept = sp.csr_array(
        (
            np.concatenate(counts or [[]]),
            (np.concatenate(rows or [[]]), np.concatenate(cols or [[]])),
        ),
        shape=matrix.shape,
    )
    return index, value, kept


def transition_memory(
    train: pl.DataFrame, items: np.ndarray, cfg: ModelConfig
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Successor and co-occurrence tables from training sessions, and each training example's
    own share of them (to leave it out while training).

    Returns the tables and, per example, ``log1p(c - 1) - log1p(c)`` at its target for the
    successor count and (decayed over its history) for co-occurrence counts.
    """
    n = len(items)
    position = {item: i for i, item in enumerate(items)}
    target = np.array([position[i] for i in train.get_column(ITEM_ENTITY)], dtype=np.int64)
    history = train.get_column("history").to_list()
    coded = np.array(
        [[position.get(x, -1) if x != PAD else -1 for x in h] for h in history], dtype=np.int64
    ).reshape(train.height, cfg.session_len)
    last = coded[:, -1]
    has_last = last >= 0
    successors = sp.csr_array(
        (np.ones(int(has_last.sum())), (last[has_last], target[has_last])), shape=(n, n)
    )
    successors.sum_duplicates()
    session = train.get_column("session_id").to_numpy()
    _, session_code = np.unique(session, return_inverse=True)
    members = sp.csr_array(
        (np.ones(train.height), (session_code, target)), shape=(session_code.max() + 1, n)
    )
    members.data[:] = 1.0  # a session counts once per item
    members.sum_duplicates()
    members.data[:] = 1.0
    together = sp.csr_array(members.T @ members)
    together.setdiag(0)
    together.eliminate_zeros()
    m = cfg.memory_top_m
    succ_index, succ_value, succ_kept = _top_m(successors, m)
    nbr_index, nbr_value, nbr_kept = _top_m(together, m)
    memory = {
        "successor_index": succ_index,
        "successor_value": succ_value,
        "neighbour_index": nbr_index,
        "neighbour_value": nbr_value,
    }

    def own(counts: np.ndarray) -> np.ndarray:
        safe = np.maximum(counts, 1.0)
        return np.where(counts > 0, np.log1p(safe - 1) - np.log1p(safe), 0.0)

    own_successor = np.zeros(train.height, np.float32)
    own_successor[has_last] = own(np.asarray(succ_kept[last[has_last], target[has_last]]))
    own_neighbour = np.zeros(train.height, np.float32)
    decay = cfg.memory_decay ** np.arange(cfg.session_len - 1, -1, -1, dtype=np.float64)
    for column in range(cfg.session_len):
        present = coded[:, column] >= 0
        if present.any():
            counts = np.asarray(nbr_kept[coded[present, column], target[present]])
            own_neighbour[present] += (decay[column] * own(counts)).astype(np.float32)
    return memory, own_successor, own_neighbour


def to_tf_dataset(data: Dataset, cfg: ModelConfig, memory_shares=None) -> tf.data.Dataset:
    """Training batches; customer ids dropped at random so the OOV row learns cold start."""
    rng = np.random.default_rng(cfg.seed)
    train = data.train
    query = query_arrays(train)
    drop = rng.random(train.height) < cfg.customer_dropout
    query["customer_id"] = np.where(drop, PAD, query["customer_id"]).astype(object)
    catalogue = catalogue_arrays(data.items)
    position = {item: i for i, item in enumerate(catalogue["item_id"])}
    targets = np.array([position[i] for i in train.get_column(ITEM_ENTITY)], dtype=np.int32)
    counts = np.bincount(targets, minlength=len(position))
    labels = {
        "target_index": targets,
        "sampling_probability": (counts[targets] / len(targets)).astype(np.float32),
        "purchased": train.get_column("purchased").to_numpy().astype(np.float32),
        "purchase_mask": np.ones(train.height, np.float32),
        "kept": train.get_column("kept").to_numpy().astype(np.float32),
        "keep_mask": train.get_column("keep_mask").to_numpy().astype(np.float32),
        "fit_label": train.get_column("fit_label").to_numpy().astype(np.int32),
        "own_successor": np.zeros(train.height, np.float32),
        "own_neighbour": np.zeros(train.height, np.float32),
    }
    if memory_shares is not None:
        labels["own_successor"], labels["own_neighbour"] = memory_shares
    ds = tf.data.Dataset.from_tensor_slices(
        {
            "query": query,
            "candidate": {k: v[targets] for k, v in catalogue.items()},
            "fit_features": fit_feature_matrix(train),
            "labels": labels,
        }
    )
    return (
        ds.shuffle(min(train.height, 200_000), seed=cfg.seed, reshuffle_each_iteration=True)
        .batch(cfg.batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )


def fit(data: Dataset, cfg: ModelConfig) -> tuple[RecommenderModel, dict[str, list[float]]]:
    """Train the model; returns it and the per-task losses per epoch (and throughput)."""
    # Only customers with enough history get their own vector: with a handful of examples
    # an id embedding learns noise (cold-start vector instead; their features still count).
    counts = data.train.get_column(CUSTOMER_ENTITY).value_counts()
    customers = sorted(
        set(counts.filter(pl.col("count") >= cfg.min_customer_examples)[CUSTOMER_ENTITY]) - {PAD}
    )
    catalogue = catalogue_arrays(data.items)
    memory, own_successor, own_neighbour = transition_memory(data.train, catalogue["item_id"], cfg)
    model = build_model(
        cfg,
        customers=customers,
        catalogue=catalogue,
        categories=list(CATEGORIES),
        styles=sorted(set(STYLES) | set(data.items.get_column("style").drop_nulls())),
        event_types=list(EVENT_TYPES),
        customer_feature_sample=data.train.select(CUSTOMER_NUMERIC).to_numpy(),
        fit_feature_sample=fit_feature_matrix(data.train.filter(pl.col("fit_label") >= 0))
        if (data.train.get_column("fit_label") >= 0).any()
        else np.zeros((1, len(FIT_INPUTS)), np.float32),
        memory=memory,
    )
    model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate=cfg.learning_rate))
    start = time.perf_counter()
    dataset = to_tf_dataset(data, cfg, (own_successor, own_neighbour))
    history = model.fit(dataset, epochs=cfg.epochs, verbose=0)
    seconds = time.perf_counter() - start
    losses = {k: [float(v) for v in values] for k, values in history.history.items()}
    losses["examples_per_s"] = [data.train.height * cfg.epochs / seconds]
    losses["train_seconds"] = [seconds]
    log.info("trained %d epochs on %d examples in %.0fs", cfg.epochs, data.train.height, seconds)
    return model, losses


class ServingModule(tf.Module):
    """What the bundle exports: query encoding, ranking heads and fit head, with fixed
    signatures so serving needs neither the model code nor Keras."""

    def __init__(self, model: RecommenderModel):
        super().__init__()
        self.model = model
        n_customer = len(CUSTOMER_NUMERIC)
        n_fit = len(FIT_INPUTS)
        d = model.cfg.embedding_dim
        self.encode = tf.function(
            self._encode,
            input_signature=[
                tf.TensorSpec([None], tf.string, name="customer_id"),
                tf.TensorSpec([None, n_customer], tf.float32, name="customer_features"),
                tf.TensorSpec([None, None], tf.string, name="session_items"),
                tf.TensorSpec([None, None], tf.string, name="session_events"),
            ],
        )
        self.score = tf.function(
            self._score,
            input_signature=[
                tf.TensorSpec([None], tf.string, name="customer_id"),
                tf.TensorSpec([None, n_customer], tf.float32, name="customer_features"),
                tf.TensorSpec([None, None], tf.string, name="session_items"),
                tf.TensorSpec([None, None], tf.string, name="session_events"),
            ],
        )
        self.rank = tf.function(
            self._rank,
            input_signature=[
                tf.TensorSpec([None, d], tf.float32, name="query"),
                tf.TensorSpec([None, d], tf.float32, name="candidates"),
            ],
        )
        self.fit = tf.function(
            self._fit,
            input_signature=[
                tf.TensorSpec([None], tf.string, name="customer_id"),
                tf.TensorSpec([None, n_customer], tf.float32, name="customer_features"),
                tf.TensorSpec([None, d], tf.float32, name="candidates"),
                tf.TensorSpec([None, n_fit], tf.float32, name="fit_features"),
            ],
        )

    def _encode(self, customer_id, customer_features, session_items, session_events):
        query = self.model.query(
            {
                "customer_id": customer_id,
                "customer_features": customer_features,
                "session_items": session_items,
                "session_events": session_events,
            }
        )
        return {"query": query}

    def _score(self, customer_id, customer_features, session_items, session_events):
        query = self._encode(customer_id, customer_features, session_items, session_events)["query"]
        if self.model.full:
            scores = self.model.retrieval_logits(query, session_items)
        else:
            q = tf.math.l2_normalize(query, axis=1)
            items = tf.math.l2_normalize(self.model.candidate(self.model.catalogue), axis=1)
            scores = tf.matmul(q, items, transpose_b=True)
        return {"query": query, "scores": scores}

    def _rank(self, query, candidates):
        logits = self.model.ranking(query, candidates)
        return {"purchase": tf.sigmoid(logits[:, 0]), "keep": tf.sigmoid(logits[:, 1])}

    def _fit(self, customer_id, customer_features, candidates, fit_features):
        who = self.model.query.customer_vector(customer_id, customer_features)
        return {"fit": tf.nn.softmax(self.model.fit_head(who, candidates, fit_features))}


def popularity(train: pl.DataFrame) -> list[str]:
    """Items by number of training examples, most first (the cold-start fallback)."""
    return (
        train.group_by(ITEM_ENTITY)
        .len()
        .sort(["len", ITEM_ENTITY], descending=[True, False])
        .get_column(ITEM_ENTITY)
        .to_list()
    )


def export_bundle(model: RecommenderModel, data: Dataset, cfg: ModelConfig, out: Path) -> Path:
    """Write what serving needs: the SavedModel, candidate vectors and biases, item table."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    module = ServingModule(model)
    tf.saved_model.save(
        module,
        str(out / "saved_model"),
        signatures={
            "encode": module.encode,
            "score": module.score,
            "rank": module.rank,
            "fit": module.fit,
        },
    )
    catalogue = catalogue_arrays(data.items)
    vectors = [
        model.candidate({k: v[i : i + 8192] for k, v in catalogue.items()}).numpy()
        for i in range(0, len(catalogue["item_id"]), 8192)
    ]
    np.save(out / "item_vectors.npy", np.concatenate(vectors).astype(np.float32))
    data.items.drop(TIMESTAMP, strict=False).write_parquet(out / "items.parquet")
    sizes = data.notes.get("item_sizes")
    if isinstance(sizes, pl.DataFrame):
        sizes.write_parquet(out / "item_sizes.parquet")
    meta = {
        "config": cfg.as_params(),
        "full_softmax": model.full,
        "customer_features": CUSTOMER_NUMERIC,
        "customer_defaults": defaults(CUSTOMER_FEATURES),
        "item_features": ITEM_NUMERIC,
        "fit_inputs": list(FIT_INPUTS),
        "popular_items": popularity(data.train)[:1000],
        "cutoff": data.cutoff.isoformat() if data.cutoff else None,
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    return out
