"""Scoring with an exported bundle: query vectors, retrieval over the whole catalogue,
ranking heads and size recommendation.

Used by evaluation, by the MLflow pyfunc flavour and by serving, so all three score alike.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from pipeline.features.declarations import ITEM_ENTITY
from pipeline.features.garment_fit import FitTable
from pipeline.model import fastpath
from pipeline.model.config import FIT_CLASSES, PAD
from pipeline.tfenv import tf


@dataclass
class Scored:
    """Top-k for one query."""

    item_ids: list[str]
    scores: list[float]


class Scorer:
    """An exported bundle loaded for inference.

    Batches (evaluation) go through the SavedModel's signatures; one page view
    (:meth:`serve`, :meth:`best_sizes`) through :mod:`pipeline.model.fastpath` when the bundle has
    its weights, which computes the same in NumPy without TensorFlow's per-call cost
    (``fast=False`` forces the signatures).
    """

    def __init__(self, bundle: Path, fast: bool = True):
        self.bundle = Path(bundle)
        self.meta: dict[str, Any] = json.loads((self.bundle / "meta.json").read_text())
        self.session_len: int = self.meta["config"]["session_len"]
        self.customer_features: list[str] = self.meta["customer_features"]
        self.defaults: dict[str, float] = self.meta["customer_defaults"]
        self.popular: list[str] = self.meta["popular_items"]
        module = tf.saved_model.load(str(self.bundle / "saved_model"))
        self._module = module
        self._score = module.signatures["score"]
        self._serve = module.signatures["serve"]
        self._fit = module.signatures["fit"]
        self.items = pl.read_parquet(self.bundle / "items.parquet")
        sizes_path = self.bundle / "item_sizes.parquet"
        self.item_sizes = pl.read_parquet(sizes_path) if sizes_path.exists() else None
        self.item_ids: np.ndarray = self.items.get_column(ITEM_ENTITY).to_numpy().astype(object)
        self.item_index = {item: i for i, item in enumerate(self.item_ids)}
        self.raw_item_vectors = np.load(self.bundle / "item_vectors.npy")
        self.fit_table = (
            FitTable(self.items, self.item_sizes, self.item_ids.tolist())
            if self.item_sizes is not None and not self.item_sizes.is_empty()
            else None
        )
        weights = self.bundle / fastpath.FILE
        self.fast = fastpath.FastModel.load(weights) if fast and weights.exists() else None

    @property
    def module(self) -> Any:
        """The loaded SavedModel: its ``encode``, ``score``, ``serve``, ``rank`` and ``fit``
        functions callable directly (benchmarks wrap them; scoring goes through methods)."""
        return self._module

    # --- inputs -----------------------------------------------------------------------

    def feature_matrix(self, rows: list[dict[str, Any] | None]) -> np.ndarray:
        """Customer feature dicts (None or missing values -> defaults) as a float32 matrix."""
        matrix = np.empty((len(rows), len(self.customer_features)), dtype=np.float32)
        for i, row in enumerate(rows):
            for j, name in enumerate(self.customer_features):
                value = (row or {}).get(name)
                matrix[i, j] = self.defaults[name] if value is None else value
        return matrix

    def pad_sessions(
        self, sessions: list[list[str]], events: list[list[str]] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Last ``session_len`` known items (and their event types), left-padded."""
        items = np.full((len(sessions), self.session_len), PAD, dtype=object)
        kinds = np.full((len(sessions), self.session_len), PAD, dtype=object)
        for i, session in enumerate(sessions):
            types = events[i] if events else ["view"] * len(session)
            steps = [(x, t) for x, t in zip(session, types, strict=False) if x in self.item_index]
            steps = steps[-self.session_len :]
            if steps:
                items[i, -len(steps) :] = [x for x, _ in steps]
                kinds[i, -len(steps) :] = [t for _, t in steps]
        return items, kinds

    def catalogue_attributes(self) -> pl.DataFrame:
        """What business rules look at, one row per catalogue item: category, brand, style,
        colour, price and the sizes in stock."""
        frame = self.items.select(ITEM_ENTITY, "category", "style")
        path = self.bundle / "catalogue.parquet"
        extra = pl.read_parquet(path) if path.exists() else pl.DataFrame({ITEM_ENTITY: []})
        frame = frame.join(extra, on=ITEM_ENTITY, how="left", maintain_order="left")
        for column, dtype in (("brand", pl.String), ("colour", pl.String), ("price", pl.Float64)):
            if column not in frame.columns:
                frame = frame.with_columns(pl.lit(None, dtype).alias(column))
        if self.item_sizes is not None:
            stock = self.item_sizes.group_by(ITEM_ENTITY).agg(
                pl.col("size").filter(pl.col("stock").fill_null(1) > 0).alias("sizes_in_stock")
            )
            frame = frame.join(stock, on=ITEM_ENTITY, how="left", maintain_order="left")
        else:
            frame = frame.with_columns(pl.lit(None, pl.List(pl.String)).alias("sizes_in_stock"))
        return frame.with_columns(
            pl.col("sizes_in_stock").fill_null(pl.lit([], pl.List(pl.String)))
        )

    # --- retrieval --------------------------------------------------------------------

    def _inputs(self, customer_ids, features, sessions, session_events) -> dict:
        if session_events is None:
            session_events = np.where(sessions == PAD, PAD, "view").astype(object)
        return {
            "customer_id": tf.constant(np.asarray(customer_ids, dtype=object), tf.string),
            "customer_features": tf.constant(features, tf.float32),
            "session_items": tf.constant(sessions, tf.string),
            "session_events": tf.constant(session_events, tf.string),
        }

    def score(
        self,
        customer_ids: np.ndarray | list[str],
        features: np.ndarray,
        sessions: np.ndarray,
        session_events: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Query vectors and the retrieval score of every catalogue item, in one call."""
        inputs = self._inputs(customer_ids, features, sessions, session_events)
        out = self._score(**inputs)
        return out["query"].numpy(), out["scores"].numpy()

    def serve(
        self,
        customer_id: str,
        features: np.ndarray,
        sessions: np.ndarray,
        session_events: np.ndarray,
        candidates: int,
    ) -> dict[str, np.ndarray]:
        """One model call for a page view: query vector, the best ``candidates`` catalogue
        indices with their retrieval scores, and P(purchase), P(keep) for each."""
        n = min(candidates, len(self.item_ids))
        if self.fast is not None:
            return self.fast.serve(
                customer_id, features[0], sessions[0].tolist(), session_events[0].tolist(), n
            )
        inputs = self._inputs([customer_id], features, sessions, session_events)
        out = self._serve(**inputs, candidates=tf.constant(n, tf.int32))
        return {k: v.numpy() for k, v in out.items()}

    def score_parts(
        self, served: dict[str, np.ndarray], sessions: np.ndarray, indices: np.ndarray
    ) -> dict[str, np.ndarray] | None:
        """What lifted catalogue items ``indices`` above the average item in a :meth:`serve`
        answer, one array per :data:`~pipeline.model.fastpath.SCORE_PARTS` key (see
        :meth:`~pipeline.model.fastpath.FastModel.score_parts`); None for bundles without
        the fast path. Costs one more query without the session, then O(len(indices))."""
        if self.fast is None or "customer" not in served:
            return None
        return self.fast.score_parts(
            served["customer"],
            served["query"][0],
            sessions[0].tolist(),
            indices,
            served.get("memory"),
            served["alone"][0] if "alone" in served else None,
        )

    def memory_anchors(self, sessions: np.ndarray, indices: np.ndarray) -> list[str | None]:
        """For each of catalogue ``indices``, the session item (of the one padded session in
        ``sessions``) whose transitions lift it the most; None where none does or the bundle
        has no fast path."""
        if self.fast is None or not self.fast.full:
            return [None] * len(indices)
        anchors = self.fast.memory_anchors(sessions[0].tolist(), indices)
        return [self.item_ids[a] if a >= 0 else None for a in anchors.tolist()]

    def top_k(self, scores: np.ndarray, k: int, exclude: list[list[int]] | None = None):
        """Exact top-k over the whole catalogue for each row of scores."""
        scores = scores.copy()
        if exclude:
            for row, banned in enumerate(exclude):
                scores[row, banned] = -np.inf
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
        events: list[list[str]] | None = None,
    ) -> list[Scored]:
        items, kinds = self.pad_sessions(sessions, events)
        _, scores = self.score(customer_ids, self.feature_matrix(features), items, kinds)
        return self.top_k(scores, k)

    # --- fit --------------------------------------------------------------------------

    def fit_head(
        self,
        customer_ids: np.ndarray,
        customer_features: np.ndarray,
        candidates: np.ndarray,
        fit_features: np.ndarray,
    ) -> np.ndarray:
        """P(too small, fits, too large) per row, through the SavedModel's ``fit`` signature.

        Args:
            customer_ids: One (pseudonymised) customer id per row.
            customer_features: ``(rows, len(customer_features))`` as :meth:`feature_matrix`.
            candidates: ``(rows, d)`` raw candidate vectors (rows of ``raw_item_vectors``).
            fit_features: ``(rows, len(FIT_INPUTS))`` fit inputs of each (item, size).

        Returns:
            ``(rows, 3)`` probabilities in the order of ``FIT_CLASSES``.
        """
        return self._fit(
            customer_id=tf.constant(np.asarray(customer_ids, dtype=object), tf.string),
            customer_features=tf.constant(customer_features, tf.float32),
            candidates=tf.constant(candidates, tf.float32),
            fit_features=tf.constant(fit_features, tf.float32),
        )["fit"].numpy()

    def best_sizes(
        self,
        customer_id: str,
        features: dict[str, Any] | None,
        item_ids: list[str],
        customer_vector: np.ndarray | None = None,
        feature_row: np.ndarray | None = None,
    ) -> dict[str, tuple[str, float]]:
        """For each item with a size chart, the size most likely to fit and that probability
        (``customer_vector`` from :meth:`serve` and ``feature_row`` from :meth:`feature_matrix`
        on the same request save recomputing them)."""
        if self.fit_table is None or not item_ids:
            return {}
        items = np.array([self.item_index[i] for i in item_ids], np.int64)
        rows = self.fit_table.rows(items)
        if len(rows) == 0:
            return {}
        customer = self.feature_matrix([features])[0] if feature_row is None else feature_row
        by_name = dict(zip(self.customer_features, customer.tolist(), strict=True))
        n = len(rows)
        candidates = self.raw_item_vectors[self.fit_table.item_index[rows]]
        fit_features = self.fit_table.inputs(by_name, rows)
        if self.fast is not None:
            probabilities = self.fast.fit(
                customer_id, customer, candidates, fit_features, customer_vector
            )
        else:
            probabilities = self.fit_head(
                np.array([customer_id] * n, dtype=object),
                np.repeat(customer[None], n, 0),
                candidates,
                fit_features,
            )
        fits = probabilities[:, FIT_CLASSES.index("fits")].astype(np.float64)
        return self.fit_table.best_sizes(item_ids, items, fits)
