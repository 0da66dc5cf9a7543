"""The exported bundle serving loads, and the SavedModel module inside it.

The bundle is a directory: a SavedModel with fixed signatures (``encode``, ``score``,
``serve``, ``rank``, ``fit``), the NumPy fast path's weights
(:mod:`pipeline.model.fastpath`), the catalogue's candidate vectors, the item table (features,
size charts, stock) and ``meta.json`` (config, feature names and defaults, popular items).
MLflow logs it as a pyfunc (:mod:`pipeline.registry.pyfunc`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.features.declarations import CUSTOMER_FEATURES, ITEM_ENTITY, TIMESTAMP, defaults
from pipeline.features.garment_fit import FIT_INPUTS
from pipeline.model import fastpath
from pipeline.model.config import ModelConfig
from pipeline.model.examples import CUSTOMER_NUMERIC, ITEM_NUMERIC, Dataset
from pipeline.model.inputs import catalogue_arrays
from pipeline.model.towers import RecommenderModel
from pipeline.tfenv import tf


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
    if data.item_sizes is not None:
        data.item_sizes.write_parquet(out / "item_sizes.parquet")
    if data.catalogue is not None:
        data.catalogue.write_parquet(out / "catalogue.parquet")
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
