"""Scoring with an exported bundle: query embedding, retrieval over the whole catalogue.

Used by evaluation, by the MLflow pyfunc flavour and by serving, so all three score alike.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from pipeline.features import ITEM_ENTITY
from pipeline.model import PAD
from pipeline.tfenv import tf


@dataclass
class Scored:
    """Top-k for one query."""

    item_ids: list[str]
    scores: list[float]


class Scorer:
    """An exported bundle loaded for inference."""

    def __init__(self, bundle: Path):
        self.bundle = Path(bundle)
        self.meta: dict[str, Any] = json.loads((self.bundle / "meta.json").read_text())
        self.session_len: int = self.meta["config"]["session_len"]
        self.customer_features: list[str] = self.meta["customer_features"]
        self.defaults: dict[str, float] = self.meta["customer_defaults"]
        self.popular: list[str] = self.meta["popular_items"]
        self._encoder = tf.saved_model.load(str(self.bundle / "query_encoder"))
        self._encode = self._encoder.signatures["encode"]
        self.items = pl.read_parquet(self.bundle / "items.parquet")
        self.item_ids: np.ndarray = self.items.get_column(ITEM_ENTITY).to_numpy().astype(object)
        self.item_index = {item: i for i, item in enumerate(self.item_ids)}
        self.item_embeddings: np.ndarray = np.load(self.bundle / "item_embeddings.npy")

    def feature_matrix(self, rows: list[dict[str, Any] | None]) -> np.ndarray:
        """Customer feature dicts (None or missing values -> defaults) as a float32 matrix."""
        matrix = np.empty((len(rows), len(self.customer_features)), dtype=np.float32)
        for i, row in enumerate(rows):
            for j, name in enumerate(self.customer_features):
                value = (row or {}).get(name)
                matrix[i, j] = self.defaults[name] if value is None else value
        return matrix

    def pad_sessions(self, sessions: list[list[str]]) -> np.ndarray:
        """Keep the last ``session_len`` known items of each session, left-padded."""
        out = np.full((len(sessions), self.session_len), PAD, dtype=object)
        for i, items in enumerate(sessions):
            known = [x for x in items if x in self.item_index][-self.session_len :]
            if known:
                out[i, -len(known) :] = known
        return out

    def encode(
        self, customer_ids: list[str], features: np.ndarray, sessions: np.ndarray
    ) -> np.ndarray:
        result = self._encode(
            customer_id=tf.constant(np.asarray(customer_ids, dtype=object), tf.string),
            customer_features=tf.constant(features, tf.float32),
            session_items=tf.constant(sessions, tf.string),
        )
        return result["query"].numpy()

    def scores(self, queries: np.ndarray) -> np.ndarray:
        return queries @ self.item_embeddings.T

    def top_k(self, queries: np.ndarray, k: int) -> list[Scored]:
        """Exact top-k over the whole catalogue for each query vector."""
        scores = self.scores(queries)
        k = min(k, scores.shape[1])
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        out = []
        for row, idx in zip(scores, part, strict=True):
            order = idx[np.argsort(-row[idx], kind="stable")]
            out.append(Scored(self.item_ids[order].tolist(), row[order].astype(float).tolist()))
        return out

    def recommend(
        self,
        customer_ids: list[str],
        features: list[dict[str, Any] | None],
        sessions: list[list[str]],
        k: int = 10,
    ) -> list[Scored]:
        queries = self.encode(
            customer_ids, self.feature_matrix(features), self.pad_sessions(sessions)
        )
        return self.top_k(queries, k)
