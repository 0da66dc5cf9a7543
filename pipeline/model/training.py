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
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import scipy.sparse as sp

from pipeline import fastpath
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


def target_positions(frame: pl.DataFrame, items) -> np.ndarray:
    """Each example's target item as its position in the catalogue ``items``."""
    position = {item: i for i, item in enumerate(items)}
    return np.array([position[i] for i in frame.get_column(ITEM_ENTITY)], dtype=np.int64)


def _top_m(
    matrix: sp.csr_array, m: int, values: sp.csr_array | None = None
) -> tuple[np.ndarray, np.ndarray, sp.csr_array]:
    """Per row, the ``m`` entries with the largest counts as (index, value) arrays with two
    leading empty rows (padding and unknown ids), and the kept counts as a sparse matrix.

    Values are ``log1p(count)``, or taken from ``values`` (same sparsity) when given.
    """
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
        value[row + 2, : len(top)] = (
            np.log1p(v[top]) if values is None else values.data[start:end][top]
        )
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


def _values_at(matrix: sp.csr_array, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``matrix[rows[i], cols[i]]`` for each i (0 where absent), vectorised."""
    coo = matrix.tocoo()
    n = matrix.shape[1]
    keys = coo.row.astype(np.int64) * n + coo.col
    order = np.argsort(keys)
    keys, data = keys[order], coo.data[order]
    wanted = rows.astype(np.int64) * n + cols
    at = np.minimum(np.searchsorted(keys, wanted), max(len(keys) - 1, 0))
    found = (len(keys) > 0) & (keys[at] == wanted) if len(keys) else np.zeros(len(wanted), bool)
    return np.where(found, data[at] if len(keys) else 0.0, 0.0)


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
    together.sort_indices()
    # Co-occurrence as cosine similarity of the items' session sets (item-KNN's measure):
    # raw counts would favour popular items everywhere.
    support = np.asarray(members.sum(axis=0)).ravel()
    coo = together.tocoo()
    norm = np.sqrt(support[coo.row] * support[coo.col])
    cosine = sp.csr_array((coo.data / norm, (coo.row, coo.col)), shape=together.shape)
    cosine.sort_indices()
    m = cfg.memory_top_m
    succ_index, succ_value, succ_kept = _top_m(successors, m)
    nbr_index, nbr_value, nbr_kept = _top_m(together, m, cosine)
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
    own_successor[has_last] = own(_values_at(succ_kept, last[has_last], target[has_last]))
    own_neighbour = np.zeros(train.height, np.float32)
    decay = cfg.memory_decay ** np.arange(cfg.session_len - 1, -1, -1, dtype=np.float64)
    for column in range(cfg.session_len):
        present = coded[:, column] >= 0
        if present.any():
            h, t = coded[present, column], target[present]
            kept = _values_at(nbr_kept, h, t) > 0
            # This session adds one to the intersection: cosine drops by 1/sqrt(|Sh| |St|).
            share = np.where(kept, -1.0 / np.sqrt(np.maximum(support[h] * support[t], 1)), 0.0)
            own_neighbour[present] += (decay[column] * share).astype(np.float32)
    return memory, own_successor, own_neighbour


def _naive(ts: pl.Series) -> pl.Series:
    """Times as naive UTC microseconds (example times may carry a time zone)."""
    if getattr(ts.dtype, "time_zone", None):
        ts = ts.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
    return ts.cast(pl.Datetime("us"))


@dataclass(frozen=True)
class Trend:
    """Time-decayed interaction counts per item, as of the start of each time bucket.

    ``table[b, i, h]`` is ``log1p`` of item ``i``'s training interactions before the start of
    bucket ``b``, each weighted ``2 ** (-age / half_life[h])``, relative to the average item
    (``n_items * count_i / sum(count)``: stationary while the data accumulates). The last
    row ("now", what serving uses) is as of the end of the last bucket, just after the last
    interaction. An example looks up the bucket its time falls in, so it sees only
    interactions from before that bucket: nothing of its own or from its future.
    """

    table: np.ndarray
    start: datetime
    width: timedelta

    def buckets(self, ts: pl.Series) -> np.ndarray:
        """Bucket of each time (clipped to the table: earlier -> 0, later -> now)."""
        offset = (_naive(ts) - self.start).dt.total_microseconds().to_numpy()
        width = self.width / timedelta(microseconds=1)
        index = np.floor(np.nan_to_num(offset.astype(np.float64), nan=0.0) / width)
        return np.clip(index, 0, len(self.table) - 1).astype(np.int32)


def trend_buckets(trend: Trend | None, frame: pl.DataFrame) -> np.ndarray:
    """Each example's trend bucket; bucket 0 of the model's all-zero table without a trend."""
    if trend is None:
        return np.zeros(frame.height, np.int32)
    return trend.buckets(frame.get_column("ts"))


def trend_table(train: pl.DataFrame, items: np.ndarray, cfg: ModelConfig) -> Trend:
    """:class:`Trend` of the training examples' targets, from the first to just after the
    last training time, in at most ``cfg.trend_buckets`` buckets."""
    ts = _naive(train.get_column("ts"))
    first, last = ts.min(), ts.max()
    n_buckets = max(1, cfg.trend_buckets)
    # A microsecond more than an even split: the last interaction falls inside the last
    # bucket (not in "now", which counts it).
    width = max((last - first) / n_buckets, timedelta(minutes=1)) + timedelta(microseconds=1)
    halves = np.asarray(cfg.trend_half_lives_days, np.float64) * 86_400.0
    table = np.zeros((n_buckets + 1, len(items), len(halves)), np.float32)
    if not len(halves):
        return Trend(table, first, width)
    target = target_positions(train, items)
    seconds = (ts - first).dt.total_microseconds().to_numpy() / 1e6
    step = width.total_seconds()
    bucket = np.minimum((seconds // step).astype(np.int64), n_buckets - 1)
    # Each interaction decayed to the end of its bucket, summed per (bucket, item); then the
    # running total carried from bucket to bucket, decaying by one bucket's width each time.
    to_end = (bucket + 1) * step - seconds
    running = np.zeros((len(items), len(halves)), np.float64)
    per_bucket = [
        np.bincount(
            bucket * len(items) + target,
            weights=0.5 ** (to_end / h),
            minlength=n_buckets * len(items),
        ).reshape(n_buckets, len(items))
        for h in halves
    ]
    carry = 0.5 ** (step / halves)
    for b in range(n_buckets):
        running = running * carry + np.stack([c[b] for c in per_bucket], axis=1)
        # Relative to the average item: the total grows as the data accumulates (and is
        # larger "now" than for most training examples); an item's share of it does not.
        total = running.sum(axis=0)
        share = np.divide(running * len(items), total, out=np.zeros_like(running), where=total > 0)
        table[b + 1] = np.log1p(share)
    return Trend(table, first, width)


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


def validation_split(train: pl.DataFrame, share: float) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The latest ``share`` of training sessions (by start) for early stopping."""
    if share <= 0:
        return train, train.head(0)
    cutoff = train.get_column("session_start").quantile(1 - share, interpolation="lower")
    late = pl.col("session_start") > cutoff
    fit_part, valid = train.filter(~late), train.filter(late)
    if fit_part.is_empty() or valid.is_empty():
        return train, train.head(0)
    return fit_part, valid


NEURAL_SCALES = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0)


def choose_neural_scale(
    model: RecommenderModel, valid: pl.DataFrame, items: pl.DataFrame, trend: Trend | None = None
) -> dict[str, float]:
    """Pick the weight of the neural score next to the memory on held-out sessions
    (recall@20 + MRR@20), and set it on the model."""
    from pipeline.metrics import ranking_metrics, top_k_from_scores

    if not model.full:
        return {}
    arrays = query_arrays(valid)
    targets = target_positions(valid, items.get_column(ITEM_ENTITY))
    buckets = trend_buckets(trend, valid)
    # Only each scale's top 20 is kept per batch: whole score matrices would take
    # examples x items x 4 bytes each (2 GB at 50k examples and 5,000 items).
    tops: dict[float, list[np.ndarray]] = {scale: [] for scale in NEURAL_SCALES}
    for start in range(0, valid.height, 2048):
        batch = {k: tf.constant(v[start : start + 2048]) for k, v in arrays.items()}
        neural = model.neural_logits(model.query(batch)).numpy()
        memory = model.memory_scores(batch["session_items"]).numpy()
        memory += model.trend_scores(tf.constant(buckets[start : start + 2048])).numpy()
        for scale in NEURAL_SCALES:
            tops[scale].append(top_k_from_scores(scale * neural + memory, 20))
    results = {}
    for scale in NEURAL_SCALES:
        values = ranking_metrics(np.concatenate(tops[scale]), targets, ks=(20,))
        results[scale] = values["recall@20"] + values["mrr@20"]
    best = max(results, key=lambda s: (results[s], s))
    model.neural_scale.assign(best)
    log.info("neural scale %.2f chosen on %d validation examples: %s", best, valid.height, results)
    return {"neural_scale": best, "validation_recall_plus_mrr": results[best]}


class TimeBudget(tf.keras.callbacks.Callback):
    """Stop before an epoch that would end past ``seconds`` from the start of training
    (judged by the slowest epoch so far); early stopping still restores the best epoch."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds
        self.stopped = False

    def on_train_begin(self, logs=None):
        self.start = self.last = time.perf_counter()
        self.slowest = 0.0

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        self.slowest = max(self.slowest, now - self.last)
        self.last = now
        if now - self.start + self.slowest > self.seconds:
            self.stopped = True
            self.model.stop_training = True


def fit(data: Dataset, cfg: ModelConfig) -> tuple[RecommenderModel, dict[str, list[float]]]:
    """Train the model, stopping when the retrieval loss on the latest training sessions stops
    improving (best weights kept); returns it and the per-task losses per epoch."""
    # Only customers with enough history get their own vector: with a handful of examples
    # an id embedding learns noise (cold-start vector instead; their features still count).
    counts = data.train.get_column(CUSTOMER_ENTITY).value_counts()
    customers = sorted(
        set(counts.filter(pl.col("count") >= cfg.min_customer_examples)[CUSTOMER_ENTITY]) - {PAD}
    )
    catalogue = catalogue_arrays(data.items)
    fit_part, valid = validation_split(data.train, cfg.validation_share)
    memory, own_successor, own_neighbour = transition_memory(fit_part, catalogue["item_id"], cfg)
    # The trend prior joins the full softmax only (sampled softmax has no per-item logits).
    trend = (
        trend_table(data.train, catalogue["item_id"], cfg)
        if cfg.full_softmax(len(catalogue["item_id"]))
        else None
    )
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
        trend=trend.table if trend is not None else None,
    )
    model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate=cfg.learning_rate))
    start = time.perf_counter()
    dataset = to_tf_dataset(fit_part, data.items, cfg, (own_successor, own_neighbour), trend=trend)
    steps = None
    if fit_part.height > cfg.max_examples_per_epoch:
        dataset = dataset.repeat()
        steps = cfg.max_examples_per_epoch // cfg.batch_size
    budget = TimeBudget(cfg.max_train_seconds)
    callbacks, validation = [budget], None
    if not valid.is_empty():
        if valid.height > cfg.max_validation_examples:
            valid = valid.sample(cfg.max_validation_examples, seed=cfg.seed)
        validation = to_tf_dataset(valid, data.items, cfg, shuffle=False, trend=trend)
        callbacks.append(
            tf.keras.callbacks.EarlyStopping(
                monitor="val_retrieval_loss", patience=1, restore_best_weights=True
            )
        )
    history = model.fit(
        dataset,
        epochs=cfg.epochs,
        steps_per_epoch=steps,
        validation_data=validation,
        callbacks=callbacks,
        verbose=0,
    )
    seconds = time.perf_counter() - start
    if not valid.is_empty():
        losses_scale = choose_neural_scale(model, valid, data.items, trend)
        # The counts behind the memory may now include the validation sessions too.
        full, _, _ = transition_memory(data.train, catalogue["item_id"], cfg)
        model.memory = {k: tf.constant(v) for k, v in full.items()}
    else:
        losses_scale = {}
    losses = {k: [float(v) for v in values] for k, values in history.history.items()}
    epochs = len(history.history["loss"])
    losses["epochs"] = [float(epochs)]
    losses["stopped_by_time_budget"] = [float(budget.stopped)]
    seen = min(fit_part.height, steps * cfg.batch_size if steps else fit_part.height)
    losses["examples_per_s"] = [seen * epochs / seconds]
    losses |= {k: [v] for k, v in losses_scale.items()}
    losses["train_seconds"] = [seconds]
    log.info("trained %d epochs on %d examples in %.0fs", epochs, fit_part.height, seconds)
    return model, losses


class ServingModule(tf.Module):
    """What the bundle exports: query encoding, ranking heads and fit head, with fixed
    signatures so serving needs neither the model code nor Keras."""

    def __init__(self, model: RecommenderModel):
        super().__init__()
        self.model = model
        # Candidate vectors and biases are fixed once trained: computed here, not per call.
        catalogue = model.catalogue
        vectors = model.candidate(catalogue)
        if not model.full:
            vectors = tf.math.l2_normalize(vectors, axis=1)
        self.item_matrix = tf.constant(vectors.numpy())
        self.item_raw = tf.constant(model.candidate(catalogue).numpy())
        self.item_bias = tf.constant(
            model.candidate.item_bias(catalogue["item_id"]).numpy()
            if model.full
            else np.zeros(model.n_items, np.float32)
        )
        # The trend prior as of the cut-off, added to every query's scores.
        self.item_prior = tf.constant(
            model.prior_now().numpy() if model.full else np.zeros(model.n_items, np.float32)
        )
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
        self.serve = tf.function(
            self._serve,
            input_signature=[
                tf.TensorSpec([None], tf.string, name="customer_id"),
                tf.TensorSpec([None, n_customer], tf.float32, name="customer_features"),
                tf.TensorSpec([None, None], tf.string, name="session_items"),
                tf.TensorSpec([None, None], tf.string, name="session_events"),
                tf.TensorSpec([], tf.int32, name="candidates"),
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
            neural = tf.matmul(query, self.item_matrix, transpose_b=True) + self.item_bias
            memory = self.model.memory_scores(session_items)
            scores = self.model.neural_scale * neural + memory + self.item_prior
        else:
            q = tf.math.l2_normalize(query, axis=1)
            scores = tf.matmul(q, self.item_matrix, transpose_b=True)
        return {"query": query, "scores": scores}

    def _serve(self, customer_id, customer_features, session_items, session_events, candidates):
        """One call per page view: scores of the whole catalogue, the best ``candidates`` of
        them, and the ranking heads on those (first row of the batch)."""
        out = self._score(customer_id, customer_features, session_items, session_events)
        top = tf.math.top_k(out["scores"][0], k=candidates)
        vectors = tf.gather(self.item_raw, top.indices)
        query = tf.repeat(out["query"][:1], tf.shape(vectors)[0], axis=0)
        logits = self.model.ranking(query, vectors)
        return {
            "query": out["query"],
            "indices": top.indices,
            "scores": top.values,
            "purchase": tf.sigmoid(logits[:, 0]),
            "keep": tf.sigmoid(logits[:, 1]),
        }

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
            "serve": module.serve,
            "rank": module.rank,
            "fit": module.fit,
        },
    )
    fastpath.export(
        model,
        module.item_matrix.numpy(),
        module.item_raw.numpy(),
        module.item_bias.numpy(),
        module.item_prior.numpy(),
        out / fastpath.FILE,
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
    catalogue = data.notes.get("catalogue")
    if isinstance(catalogue, pl.DataFrame):
        catalogue.write_parquet(out / "catalogue.parquet")
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
