"""Training: the validation split, early stopping within a wall-clock budget, and the weight
of the neural score against the priors, chosen on the latest training sessions.

Inputs come from :mod:`pipeline.model.inputs`, the priors from :mod:`pipeline.model.priors`;
the trained model is exported by :mod:`pipeline.model.bundle`.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import polars as pl

from pipeline.data.contracts import CATEGORIES, EVENT_TYPES, STYLES
from pipeline.features.declarations import (
    CUSTOMER_ENTITY,
    ITEM_ENTITY,
)
from pipeline.features.garment_fit import FIT_INPUTS
from pipeline.model.config import PAD, ModelConfig
from pipeline.model.examples import CUSTOMER_NUMERIC, Dataset
from pipeline.model.inputs import (
    catalogue_arrays,
    fit_feature_matrix,
    query_arrays,
    target_positions,
    to_tf_dataset,
)
from pipeline.model.priors import Trend, transition_memory, trend_buckets, trend_table
from pipeline.model.towers import RecommenderModel, build_model
from pipeline.progress import progress
from pipeline.tfenv import tf

log = logging.getLogger(__name__)


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


# What :func:`fit` returns besides Keras' per-epoch history (one value each, or one per epoch
# for the end times).
SUMMARY_KEYS = (
    "epochs",
    "stopped_by_time_budget",
    "examples_per_s",
    "neural_scale",
    "validation_recall_plus_mrr",
    "train_seconds",
    "epoch_end_ms",
)

NEURAL_SCALES = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0)


def choose_neural_scale(
    model: RecommenderModel, valid: pl.DataFrame, items: pl.DataFrame, trend: Trend | None = None
) -> dict[str, float]:
    """Pick the weight of the neural score next to the memory on held-out sessions
    (recall@20 + MRR@20), and set it on the model."""
    from pipeline.model.metrics import ranking_metrics, top_k_from_scores

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


class EpochProgress(tf.keras.callbacks.Callback):
    """One progress line per epoch (loss, validation loss, seconds) instead of Keras'
    per-batch bar, and each epoch's end time (ms since the epoch) for MLflow's metric steps."""

    SHOWN = ("loss", "val_loss", "val_retrieval_loss")

    def __init__(self, epochs: int):
        super().__init__()
        self.epochs = epochs
        self.ends_ms: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.began = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.ends_ms.append(float(int(time.time() * 1000)))
        logs = logs or {}
        values = ", ".join(f"{k} {float(logs[k]):.4f}" for k in self.SHOWN if k in logs)
        seconds = time.perf_counter() - self.began
        progress.info("epoch %d/%d: %s (%.1fs)", epoch + 1, self.epochs, values, seconds)


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
    epoch_progress = EpochProgress(cfg.epochs)
    callbacks, validation = [budget, epoch_progress], None
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
    losses["epoch_end_ms"] = epoch_progress.ends_ms
    log.info("trained %d epochs on %d examples in %.0fs", epochs, fit_part.height, seconds)
    return model, losses
