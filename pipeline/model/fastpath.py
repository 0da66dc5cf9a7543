"""The trained model's serving path in NumPy: one page view without TensorFlow's per-call cost.

A SavedModel signature call costs about 0.75 ms here whatever the batch size (graph dispatch
of a few hundred small ops), twice per page view (retrieval + ranking heads, fit head); the
same arithmetic for one query is a handful of small matrix products. :func:`export` writes the
weights of the towers and heads that serving uses, with their vocabularies, next to the
SavedModel in the bundle (``fastpath.npz``); :class:`FastModel` computes exactly what the
``serve`` and ``fit`` signatures compute (float32, a test holds the two equal), so the
SavedModel stays the reference and the batch path for evaluation.

Mirrors :mod:`pipeline.model`: keep the two in step (the equality test fails otherwise).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

if TYPE_CHECKING:
    from pipeline.model.towers import RecommenderModel

FILE = "fastpath.npz"
EPSILON = 1e-7  # tf-keras backend.epsilon(), the floor of Normalization's scale
PROJECTION_BYTES = 256 * 2**20  # the most memory a precomputed GRU input projection may use

# The parts :meth:`FastModel.score_parts` splits a retrieval score into: the neural score of
# the customer alone and what the session adds to it, the transition memory (items viewed
# after or with the session's) and its re-views, the learned item bias, the trend prior.
SCORE_PARTS = ("history", "session", "also_viewed", "revisit", "bestseller", "trend")


def _dense(prefix: str, layer) -> dict[str, np.ndarray]:
    out = {f"{prefix}.kernel": layer.kernel.numpy()}
    if layer.use_bias:
        out[f"{prefix}.bias"] = layer.bias.numpy()
    name = layer.activation.__name__
    if name not in ("relu", "linear"):
        raise ValueError(f"fast path: unsupported activation {name!r} in {prefix}")
    out[f"{prefix}.relu"] = np.array(name == "relu")
    return out


def _normalization(prefix: str, layer) -> dict[str, np.ndarray]:
    mean = np.asarray(layer.mean, np.float32).reshape(-1)
    scale = np.maximum(np.sqrt(np.asarray(layer.variance, np.float32).reshape(-1)), EPSILON)
    return {f"{prefix}.mean": mean, f"{prefix}.scale": scale.astype(np.float32)}


def _ids(prefix: str, layer) -> dict[str, np.ndarray]:
    """An :class:`~pipeline.model.towers.IdEmbedding`: vocabulary in index order, its OOV slot,
    and the embedding table."""
    lookup = layer.lookup
    vocabulary = [str(v) for v in lookup.get_vocabulary()]
    oov = 1 if lookup.mask_token is not None else 0
    return {
        f"{prefix}.vocabulary": np.array(vocabulary, dtype=np.str_),
        f"{prefix}.oov": np.array(oov),
        f"{prefix}.table": layer.embed.embeddings.numpy(),
    }


def export(
    model: RecommenderModel,
    item_matrix: np.ndarray,
    item_raw: np.ndarray,
    item_bias: np.ndarray,
    item_prior: np.ndarray,
    path: Path,
) -> Path:
    """Write the weights :class:`FastModel` needs (what ``ServingModule`` also bakes in)."""
    query, session = model.query, model.query.session
    cell = session.gru.cell
    if not cell.reset_after or cell.recurrent_activation.__name__ != "sigmoid":
        raise ValueError("fast path: GRU must use reset_after=True and a sigmoid gate")
    arrays: dict[str, np.ndarray] = {
        **_ids("customer", query.customer),
        **_normalization("customer_norm", query.normalize),
        **_dense("customer_dense", query.features),
        **_ids("items", session.items),
        **_ids("events", session.events),
        "gru.kernel": cell.kernel.numpy(),
        "gru.recurrent": cell.recurrent_kernel.numpy(),
        "gru.bias": cell.bias.numpy(),
        **_dense("attend_state", session.attend_state),
        **_dense("attend_last", session.attend_last),
        **_dense("attend_score", session.attend_score),
        **_dense("hidden", query.hidden),
        **_dense("out", query.out),
        **_dense("rank_hidden", model.ranking.hidden),
        **_dense("rank_out", model.ranking.out),
        **_normalization("fit_norm", model.fit_head.normalize),
        **_dense("fit_hidden", model.fit_head.hidden),
        **_dense("fit_hidden2", model.fit_head.hidden2),
        **_dense("fit_out", model.fit_head.out),
        "item_matrix": np.asarray(item_matrix, np.float32),
        "item_raw": np.asarray(item_raw, np.float32),
        "item_bias": np.asarray(item_bias, np.float32),
        "item_prior": np.asarray(item_prior, np.float32),
        "full": np.array(bool(model.full)),
        "neural_scale": np.array(float(model.neural_scale.numpy()), np.float32),
        "memory_weights": model.memory_weights.numpy(),
        "memory_decay": np.array(model.cfg.memory_decay, np.float32),
        **{f"memory.{k}": v.numpy() for k, v in model.memory.items()},
    }
    np.savez(path, **cast(dict[str, Any], arrays))  # numpy types **kwds as bool
    return path


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)), in place on one temporary (the same values)."""
    t = np.exp(-x)
    t += 1.0
    return np.reciprocal(t, out=t)


class _Dense:
    __slots__ = ("kernel", "bias", "relu")

    def __init__(self, w: dict[str, np.ndarray], prefix: str):
        self.kernel = w[f"{prefix}.kernel"]
        self.bias = w.get(f"{prefix}.bias")
        self.relu = bool(w[f"{prefix}.relu"])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        y = x @ self.kernel
        if self.bias is not None:
            y += self.bias
        return np.maximum(y, 0.0, out=y) if self.relu else y


class _Ids:
    __slots__ = ("index", "oov", "table")

    def __init__(self, w: dict[str, np.ndarray], prefix: str):
        self.oov = int(w[f"{prefix}.oov"])
        vocabulary = w[f"{prefix}.vocabulary"].tolist()
        self.index = {token: i for i, token in enumerate(vocabulary) if i != self.oov}
        self.table = w[f"{prefix}.table"]

    def lookup(self, tokens) -> np.ndarray:
        get, oov = self.index.get, self.oov
        return np.fromiter((get(t, oov) for t in tokens), np.intp, len(tokens))


class FastModel:
    """``serve`` and ``fit`` for one query at a time, in NumPy (float32)."""

    def __init__(self, w: dict[str, np.ndarray]):
        self.customer = _Ids(w, "customer")
        self.items = _Ids(w, "items")
        self.events = _Ids(w, "events")
        self.customer_mean, self.customer_scale = w["customer_norm.mean"], w["customer_norm.scale"]
        self.customer_dense = _Dense(w, "customer_dense")
        self.gru_kernel, self.gru_recurrent = w["gru.kernel"], w["gru.recurrent"]
        self.gru_bias = w["gru.bias"]
        # The GRU's input projection is linear in (item + event) embeddings: project both
        # tables once (when that stays under PROJECTION_BYTES), so a request adds two rows
        # instead of multiplying a matrix.
        self.item_projection: np.ndarray | None = None
        if self.items.table.shape[0] * self.gru_kernel.shape[1] * 4 <= PROJECTION_BYTES:
            self.item_projection = self.items.table @ self.gru_kernel + self.gru_bias[0]
        self.event_projection = self.events.table @ self.gru_kernel
        self.attend_state = _Dense(w, "attend_state")
        self.attend_last = _Dense(w, "attend_last")
        self.attend_score = _Dense(w, "attend_score")
        self.hidden, self.out = _Dense(w, "hidden"), _Dense(w, "out")
        self.rank_hidden, self.rank_out = _Dense(w, "rank_hidden"), _Dense(w, "rank_out")
        self.fit_mean, self.fit_scale = w["fit_norm.mean"], w["fit_norm.scale"]
        self.fit_layers = [_Dense(w, p) for p in ("fit_hidden", "fit_hidden2", "fit_out")]
        self.item_matrix, self.item_raw = w["item_matrix"], w["item_raw"]
        self.item_bias, self.full = w["item_bias"], bool(w["full"])
        # Bundles from before the trend prior have none: zeros.
        self.item_prior = w.get("item_prior", np.zeros(len(self.item_bias), np.float32))
        self.neural_scale = np.float32(w["neural_scale"])
        self.memory_weights = w["memory_weights"]
        self.memory_decay = np.float32(w["memory_decay"])
        self.memory = {k.split(".", 1)[1]: v for k, v in w.items() if k.startswith("memory.")}
        self.n_items = len(self.item_matrix)
        self.dim = self.gru_recurrent.shape[0]
        self._no_session: tuple[int, np.ndarray] | None = None  # (length, vector): no_session
        # Catalogue averages of the static parts, for :meth:`score_parts`.
        self.item_mean = self.item_matrix.mean(axis=0)
        self.bias_mean = np.float32(self.item_bias.mean())
        self.prior_mean = np.float32(self.item_prior.mean())

    @classmethod
    def load(cls, path: Path) -> FastModel:
        with np.load(path, allow_pickle=False) as data:
            return cls({k: data[k] for k in data.files})

    # --- towers -------------------------------------------------------------------------

    def customer_vector(self, customer_id: str, features: np.ndarray) -> np.ndarray:
        features = np.asarray(features, np.float32).reshape(-1)
        clean = np.where(np.isnan(features), np.float32(0.0), features)
        normalised = (clean - self.customer_mean) / self.customer_scale
        embedding = self.customer.table[self.customer.lookup([customer_id])[0]]
        return np.concatenate([embedding, self.customer_dense(normalised[None])[0]])

    def session_vector(self, idx: np.ndarray, events: np.ndarray) -> np.ndarray:
        """The GRU with attention over one left-padded session (``idx`` in lookup space)."""
        d = self.dim
        mask = idx != 0  # index 0 is the padding token
        item_vectors = self.items.table[idx]
        if self.item_projection is not None:
            x = self.item_projection[idx] + self.event_projection[events]
        else:
            x = item_vectors @ self.gru_kernel + self.gru_bias[0] + self.event_projection[events]
        h = np.zeros(d, np.float32)
        states = np.zeros((len(idx), d), np.float32)
        recurrent, recurrent_bias = self.gru_recurrent, self.gru_bias[1]
        # Leading padding leaves the state at zero: start at the first real step. Masked
        # steps repeat the previous output. The update and reset gates in one sigmoid.
        for t in range(int(mask.argmax()) if mask.any() else len(idx), len(idx)):
            if mask[t]:
                r_h = h @ recurrent + recurrent_bias
                gates = _sigmoid(x[t, : 2 * d] + r_h[: 2 * d])
                z = gates[:d]
                candidate = np.tanh(x[t, 2 * d :] + gates[d:] * r_h[2 * d :])
                h = z * h + (1.0 - z) * candidate
            states[t] = h
        last_state = states[-1]
        weights = self.attend_score(
            _sigmoid(self.attend_state(states) + self.attend_last(last_state[None]))
        )
        weights = np.where(mask[:, None], weights, 0.0)
        context = (weights * states).sum(axis=0)
        has_session = np.float32(mask.any())
        return np.concatenate([last_state, context, item_vectors[-1], [has_session]])

    def query(
        self,
        who: np.ndarray,
        idx: np.ndarray,
        events: np.ndarray,
        session: np.ndarray | None = None,
    ) -> np.ndarray:
        """The query vector from the customer vector and the session (or its ``session``
        vector, when already known)."""
        if session is None:
            session = self.session_vector(idx, events)
        return self.queries(who, [session])[0]

    def queries(self, who: np.ndarray, sessions: list[np.ndarray]) -> np.ndarray:
        """One query vector per session vector, for the same customer vector (one pass)."""
        x = np.stack([np.concatenate([who, s]) for s in sessions]).astype(np.float32)
        return self.out(np.concatenate([x, self.hidden(x)], axis=1))

    def no_session(self, length: int) -> np.ndarray:
        """The session vector of ``length`` padding steps (a constant: encoded once)."""
        if self._no_session is None or self._no_session[0] != length:
            empty = np.zeros(length, np.intp)
            self._no_session = (length, self.session_vector(empty, empty))
        return self._no_session[1]

    def memory_scores(self, idx: np.ndarray) -> np.ndarray:
        m, length = self.memory, len(idx)
        w = self.memory_weights
        decay = self.memory_decay ** np.arange(length - 1, -1, -1, dtype=np.float32)
        columns = np.concatenate(
            [
                m["successor_index"][idx[-1]],
                m["neighbour_index"][idx].ravel(),
                np.maximum(idx - 2, 0),
            ]
        )
        values = np.concatenate(
            [
                w[0] * m["successor_value"][idx[-1]],
                w[1] * (m["neighbour_value"][idx] * decay[:, None]).ravel(),
                w[2] * (idx >= 2).astype(np.float32) * decay,
            ]
        )
        return np.bincount(columns, weights=values, minlength=self.n_items).astype(np.float32)

    # --- a page view ----------------------------------------------------------------------

    def serve(
        self,
        customer_id: str,
        features: np.ndarray,
        session_items: list[str],
        session_events: list[str],
        candidates: int,
    ) -> dict[str, np.ndarray]:
        """What the ``serve`` signature returns, for one query, plus the customer vector
        (``customer``, for :meth:`fit` on the same request), the query without the session
        (``alone``) and, for full-softmax bundles, the transition memory's scores
        (``memory``); both for :meth:`score_parts` on the same request."""
        idx = self.items.lookup(session_items)
        events = self.events.lookup(session_events)
        who = self.customer_vector(customer_id, features)
        session = self.session_vector(idx, events)
        # With a session, the customer's query without it too (for score_parts), in the
        # same pass; without one they are the same.
        if idx.any():
            query, alone = self.queries(who, [session, self.no_session(len(idx))])
        else:
            query = alone = self.queries(who, [session])[0]
        if self.full:
            neural = self.item_matrix @ query + self.item_bias
            memory = self.memory_scores(idx)
            scores = self.neural_scale * neural + memory + self.item_prior
        else:
            norm = np.sqrt(max(float(query @ query), 1e-12))
            scores = self.item_matrix @ (query / norm)
        n = min(candidates, self.n_items)
        part = np.argpartition(-scores, n - 1)[:n] if n < self.n_items else np.arange(n)
        top = part[np.lexsort((part, -scores[part]))]  # top_k's order: ties by index
        heads = _sigmoid(self.rank(query, self.item_raw[top]))
        extra = {"memory": memory} if self.full else {}  # for score_parts on the same request
        return {
            **extra,
            "query": query[None],
            "alone": alone[None],
            "indices": top.astype(np.int32),
            "scores": scores[top],
            "purchase": heads[:, 0],
            "keep": heads[:, 1],
            "customer": who,
        }

    def score_parts(
        self,
        who: np.ndarray,
        query: np.ndarray,
        session_items: list[str],
        indices: np.ndarray,
        memory: np.ndarray | None = None,
        alone: np.ndarray | None = None,
    ) -> dict[str, np.ndarray]:
        """How far each part of :meth:`serve`'s score lifts items above the catalogue average.

        The retrieval score is linear in its parts, so ``score[i] - mean(score)`` splits
        exactly into the keys of :data:`SCORE_PARTS` (they add up to it, float32 rounding
        aside). The neural part is split by a second query without the session: ``history``
        is what the customer alone scores, ``session`` what the session adds to that.

        Args:
            who: The customer vector :meth:`serve` returned (``customer``).
            query: Its query vector (``query[0]``).
            session_items: The same padded session :meth:`serve` saw.
            indices: Catalogue indices to explain (the picks: only they are computed).
            memory: The transition memory's scores :meth:`serve` returned, if it did.
            alone: The query without the session :meth:`serve` returned (``alone[0]``).

        Returns:
            One array per part, aligned with ``indices``.
        """
        idx = self.items.lookup(session_items)
        if alone is None:
            alone = self.queries(who, [self.no_session(len(idx))])[0] if idx.any() else query
        if self.full:
            scale = self.neural_scale
        else:  # cosine retrieval: the query is normalised, nothing else is added
            scale = np.float32(1.0 / np.sqrt(max(float(query @ query), 1e-12)))
        vectors = self.item_matrix[indices] - self.item_mean
        zero = np.zeros(len(indices), np.float32)
        parts = {
            "history": scale * (vectors @ alone),
            "session": scale * (vectors @ (query - alone)),
            "also_viewed": zero,
            "revisit": zero,
            "bestseller": zero,
            "trend": zero,
        }
        if not self.full:
            return parts
        if memory is None:
            memory = self.memory_scores(idx)
        # Re-views: the session's own items (lookup index - 2 is the catalogue index).
        decay = self.memory_decay ** np.arange(len(idx) - 1, -1, -1, dtype=np.float32)
        seen = self.memory_weights[2] * decay * (idx >= 2)
        revisit = (idx[None, :] - 2 == np.asarray(indices)[:, None]) @ seen
        parts["revisit"] = (revisit - seen.sum() / self.n_items).astype(np.float32)
        parts["also_viewed"] = memory[indices] - np.float32(memory.mean()) - parts["revisit"]
        parts["bestseller"] = scale * (self.item_bias[indices] - self.bias_mean)
        parts["trend"] = self.item_prior[indices] - self.prior_mean
        return parts

    def memory_anchors(self, session_items: list[str], indices: np.ndarray) -> np.ndarray:
        """For each of catalogue ``indices``, the catalogue index of the session item whose
        transitions (successors, neighbours) add the most to its score; -1 where none do."""
        idx = self.items.lookup(session_items)
        m, w = self.memory, self.memory_weights
        decay = self.memory_decay ** np.arange(len(idx) - 1, -1, -1, dtype=np.float32)
        steps = np.flatnonzero(idx >= 2)  # padding and unknown items anchor nothing
        if steps.size == 0:
            return np.full(len(indices), -1, np.int64)
        seen = idx[steps]
        targets = np.asarray(indices, np.int64)[:, None, None]
        neighbour = w[1] * m["neighbour_value"][seen] * decay[steps, None]  # [steps, M]
        per = ((m["neighbour_index"][seen][None] == targets) * neighbour[None]).sum(axis=2)
        if steps[-1] == len(idx) - 1:  # successors of the last item
            successor = (m["successor_index"][idx[-1]][None] == targets[:, 0]) * (
                w[0] * m["successor_value"][idx[-1]]
            )
            per[:, -1] += successor.sum(axis=1)
        best = per.argmax(axis=1)
        return np.where(per.max(axis=1) > 0, seen[best] - 2, -1)

    def rank(self, query: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """Logits of purchase and keep for one query against candidate vectors.

        The hidden layer sees ``[query, candidate, candidate * query]``; the last two parts
        are linear in the candidate, so they are one product with the kernel's candidate
        rows plus its interaction rows scaled by the query."""
        d = len(query)
        k = self.rank_hidden.kernel
        hidden = candidates @ (k[d : 2 * d] + query[:, None] * k[2 * d :])
        hidden += query @ k[:d] + self.rank_hidden.bias
        return self.rank_out(np.maximum(hidden, 0.0, out=hidden))

    def fit(
        self,
        customer_id: str,
        features: np.ndarray,
        candidates: np.ndarray,
        fit_features: np.ndarray,
        who: np.ndarray | None = None,
    ) -> np.ndarray:
        """P(too small, fits, too large) for one customer and (item vector, size) rows;
        ``who`` is the customer vector when :meth:`serve` already computed it."""
        if who is None:
            who = self.customer_vector(customer_id, features)
        fit_features = np.asarray(fit_features, np.float32)
        clean = np.where(np.isnan(fit_features), np.float32(0.0), fit_features)
        size = (clean - self.fit_mean) / self.fit_scale
        first = self.fit_layers[0]
        n_who, n_item = len(who), candidates.shape[1]
        k = first.kernel
        x = who @ k[:n_who] + candidates @ k[n_who : n_who + n_item] + size @ k[n_who + n_item :]
        x = np.maximum(x + first.bias, 0.0)
        for layer in self.fit_layers[1:]:
            x = layer(x)
        x = x - x.max(axis=1, keepdims=True)
        e = np.exp(x)
        return e / e.sum(axis=1, keepdims=True)
