"""The multi-task, session-aware recommender (TensorFlow Recommenders on tf-keras).

Towers and heads, each a small named layer (the shape of ``tfrs.Model``'s own examples):

* :class:`SessionEncoder` - a GRU over the session's items and event types, with attention
  from the last step (NARM/STAMP style) and the last item itself;
* :class:`QueryTower` - customer id (randomly dropped in training, so unknown customers get a
  learned cold-start vector), customer features (body, fit profile, behaviour), the session;
* :class:`CandidateTower` - item id plus a projection of its attributes;
* :class:`RankingHeads` - probability of purchase and of keeping (not returning);
* :class:`FitHead` - too small / fits / too large for (customer, item, size).

Retrieval uses a full softmax over the catalogue when it is small enough (with a learned item
bias, the transition memory and a trend prior: each item's time-decayed share of recent
interactions as of the example's time, with learned weights), else TFRS's in-batch sampled
softmax with logQ correction. Each task's loss is masked to the examples that carry its label,
so data without purchases, try-ons, body measurements or sessions trains what it can.
"""

from __future__ import annotations

import numpy as np

from pipeline.model.config import FIT_CLASSES, PAD, ModelConfig
from pipeline.tfenv import tf, tfrs


def _normalizer(sample: np.ndarray) -> tf.keras.layers.Normalization:
    """Standardise numeric inputs with statistics fixed at training time (saved with it)."""
    layer = tf.keras.layers.Normalization(axis=-1)
    sample = np.nan_to_num(np.asarray(sample, dtype=np.float32))
    layer.adapt(sample if len(sample) else np.zeros((1, sample.shape[1]), np.float32))
    return layer


class IdEmbedding(tf.keras.layers.Layer):
    """String id -> vector; padding maps to zeros, unknown ids to a learned OOV row."""

    def __init__(
        self,
        vocabulary: list[str],
        dim: int,
        mask_padding: bool = True,
        initializer: str = "uniform",
        l2: float = 0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        # Anonymous data has no customers at all; a placeholder keeps the layer valid.
        vocabulary = list(vocabulary) or ["\x00none"]
        self.lookup = tf.keras.layers.StringLookup(
            vocabulary=vocabulary, mask_token=PAD if mask_padding else None, num_oov_indices=1
        )
        self.embed = tf.keras.layers.Embedding(
            len(vocabulary) + 2,
            dim,
            embeddings_initializer=initializer,
            embeddings_regularizer=tf.keras.regularizers.l2(l2) if l2 else None,
        )

    def call(self, ids: tf.Tensor) -> tf.Tensor:
        return self.embed(self.lookup(ids))


class SessionEncoder(tf.keras.layers.Layer):
    """Items and event types of a left-padded session -> (summary vector, has-session flag)."""

    def __init__(self, items: list[str], event_types: list[str], cfg: ModelConfig, **kwargs):
        super().__init__(**kwargs)
        d = cfg.embedding_dim
        self.items = IdEmbedding(items, d, name="session_items")
        self.events = IdEmbedding(event_types, d, name="session_event_types")
        self.gru = tf.keras.layers.GRU(d, return_sequences=True, return_state=True)
        self.attend_state = tf.keras.layers.Dense(d, use_bias=False)
        self.attend_last = tf.keras.layers.Dense(d)
        self.attend_score = tf.keras.layers.Dense(1, use_bias=False)
        self.dropout = tf.keras.layers.Dropout(cfg.dropout)

    def call(self, items: tf.Tensor, events: tf.Tensor, training: bool = False) -> tf.Tensor:
        mask = tf.not_equal(items, PAD)
        x = self.dropout(self.items(items) + self.events(events), training=training)
        states, _ = self.gru(x, mask=mask)
        # Left padding: the last position is the most recent step (zeros when empty).
        last_state = states[:, -1, :]
        last_item = self.items(items)[:, -1, :]
        weights = self.attend_score(
            tf.nn.sigmoid(self.attend_state(states) + self.attend_last(last_state)[:, None, :])
        )
        weights = tf.where(mask[..., None], weights, tf.zeros_like(weights))
        context = tf.reduce_sum(weights * states, axis=1)
        has_session = tf.cast(tf.reduce_any(mask, axis=1, keepdims=True), tf.float32)
        return tf.concat([last_state, context, last_item, has_session], axis=1)


class QueryTower(tf.keras.Model):
    """Customer and live session -> query vector."""

    def __init__(
        self,
        customers: list[str],
        session: SessionEncoder,
        feature_sample: np.ndarray,
        cfg: ModelConfig,
    ):
        super().__init__()
        d = cfg.embedding_dim
        # Zero-initialised and regularised: a customer seen a few times stays near the
        # neutral cold-start vector instead of adding noise (random init cost ~8 points of
        # recall@20 on generated data).
        self.customer = IdEmbedding(
            customers,
            d,
            mask_padding=False,
            initializer="zeros",
            l2=cfg.customer_l2,
            name="customer_id",
        )
        self.normalize = _normalizer(feature_sample)
        self.features = tf.keras.layers.Dense(d, activation="relu")
        self.session = session
        self.hidden = tf.keras.layers.Dense(2 * d, activation="relu")
        self.out = tf.keras.layers.Dense(d)
        self.dropout = tf.keras.layers.Dropout(cfg.dropout)

    def customer_vector(self, customer_id: tf.Tensor, features: tf.Tensor) -> tf.Tensor:
        clean = tf.where(tf.math.is_nan(features), tf.zeros_like(features), features)
        return tf.concat([self.customer(customer_id), self.features(self.normalize(clean))], 1)

    def call(self, inputs: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        who = self.customer_vector(inputs["customer_id"], inputs["customer_features"])
        session = self.session(inputs["session_items"], inputs["session_events"], training=training)
        x = self.dropout(tf.concat([who, session], axis=1), training=training)
        # A linear path next to the hidden layer keeps "last item -> next item" easy to learn.
        return self.out(tf.concat([x, self.hidden(x)], axis=1))


class CandidateTower(tf.keras.Model):
    """Item id plus a projection of its attributes -> candidate vector (and a bias)."""

    def __init__(
        self,
        items: list[str],
        categories: list[str],
        styles: list[str],
        feature_sample: np.ndarray,
        cfg: ModelConfig,
    ):
        super().__init__()
        d = cfg.embedding_dim
        self.item = IdEmbedding(items, d, name="candidate_item_id")
        self.bias = IdEmbedding(items, 1, name="candidate_item_bias")
        self.category = IdEmbedding(categories, 8, mask_padding=False, name="category")
        self.style = IdEmbedding(styles, 8, mask_padding=False, name="style")
        self.normalize = _normalizer(feature_sample)
        self.attributes = tf.keras.layers.Dense(d)

    def call(self, inputs: dict[str, tf.Tensor]) -> tf.Tensor:
        features = inputs["item_features"]
        clean = tf.where(tf.math.is_nan(features), tf.zeros_like(features), features)
        attributes = tf.concat(
            [
                self.category(inputs["category"]),
                self.style(inputs["style"]),
                self.normalize(clean),
            ],
            axis=1,
        )
        return self.item(inputs["item_id"]) + self.attributes(attributes)

    def item_bias(self, item_id: tf.Tensor) -> tf.Tensor:
        return tf.squeeze(self.bias(item_id), axis=-1)


class RankingHeads(tf.keras.layers.Layer):
    """(query, candidate) -> logits of purchase and of keeping the item."""

    def __init__(self, cfg: ModelConfig, **kwargs):
        super().__init__(**kwargs)
        self.hidden = tf.keras.layers.Dense(cfg.embedding_dim, activation="relu")
        self.out = tf.keras.layers.Dense(2)

    def call(self, query: tf.Tensor, candidate: tf.Tensor) -> tf.Tensor:
        return self.out(self.hidden(tf.concat([query, candidate, query * candidate], axis=1)))


class FitHead(tf.keras.layers.Layer):
    """(customer vector, candidate vector, size features) -> logits of small / fits / large."""

    def __init__(self, feature_sample: np.ndarray, cfg: ModelConfig, **kwargs):
        super().__init__(**kwargs)
        self.normalize = _normalizer(feature_sample)
        self.hidden = tf.keras.layers.Dense(cfg.embedding_dim, activation="relu")
        self.hidden2 = tf.keras.layers.Dense(cfg.embedding_dim // 2, activation="relu")
        self.out = tf.keras.layers.Dense(len(FIT_CLASSES))

    def call(self, customer: tf.Tensor, candidate: tf.Tensor, fit_features: tf.Tensor):
        clean = tf.where(tf.math.is_nan(fit_features), tf.zeros_like(fit_features), fit_features)
        x = tf.concat([customer, candidate, self.normalize(clean)], axis=1)
        return self.out(self.hidden2(self.hidden(x)))


class RecommenderModel(tfrs.Model):
    """Retrieval + ranking + fit, trained jointly with per-task masks and weights."""

    def __init__(
        self,
        query: QueryTower,
        candidate: CandidateTower,
        ranking: RankingHeads,
        fit: FitHead,
        catalogue: dict[str, np.ndarray],
        cfg: ModelConfig,
        memory: dict[str, np.ndarray] | None = None,
        trend: np.ndarray | None = None,
    ):
        super().__init__()
        self.query = query
        self.candidate = candidate
        self.ranking = ranking
        self.fit_head = fit
        self.cfg = cfg
        self.full = cfg.full_softmax(len(catalogue["item_id"]))
        self.catalogue = {k: tf.constant(v) for k, v in catalogue.items()}
        self.n_items = len(catalogue["item_id"])
        # Transition memory: what followed and what co-occurred with each item in training
        # sessions (top-M, log counts), indexed like the session lookup (0 pad, 1 unknown).
        # Embeddings are low-rank; a random sparse "b follows a" structure is not, so the
        # model learns how much to trust these counts next to its neural score.
        m = cfg.memory_top_m
        empty = {
            "successor_index": np.zeros((self.n_items + 2, m), np.int32),
            "successor_value": np.zeros((self.n_items + 2, m), np.float32),
            "neighbour_index": np.zeros((self.n_items + 2, m), np.int32),
            "neighbour_value": np.zeros((self.n_items + 2, m), np.float32),
        }
        self.memory = {k: tf.constant(v) for k, v in (memory or empty).items()}
        self.memory_weights = self.add_weight(
            name="memory_weights", shape=(3,), initializer="ones", trainable=True
        )
        # Trend prior: log1p of time-decayed shares per (time bucket, item, half-life), the
        # last bucket being "now" (the cut-off); examples look up the bucket they fall in.
        h = len(cfg.trend_half_lives_days)
        self.trend = tf.constant(
            np.zeros((1, self.n_items, h), np.float32) if trend is None else trend, tf.float32
        )
        self.trend_weights = self.add_weight(
            name="trend_weights", shape=(h,), initializer="zeros", trainable=True
        )
        # How much the neural score counts next to the memory when serving; chosen on
        # held-out sessions after training (it can overfit where counts do not).
        self.neural_scale = self.add_weight(
            name="neural_scale", shape=(), initializer="ones", trainable=False
        )
        self.sampled = tfrs.tasks.Retrieval(
            temperature=cfg.temperature, remove_accidental_hits=True
        )
        self.trackers = {
            name: tf.keras.metrics.Mean(name=f"{name}_loss")
            for name in ("retrieval", "purchase", "keep", "fit")
        }

    def memory_scores(self, session_items: tf.Tensor) -> tf.Tensor:
        """Successors of the last item, decayed co-occurrence of every history item, and the
        history items themselves (re-views), each with a learned weight."""
        idx = self.query.session.items.lookup(session_items)  # [B, L]; 0 pad, 1 unknown
        batch, length = tf.shape(idx)[0], tf.shape(idx)[1]
        m = self.cfg.memory_top_m
        succ_i = tf.gather(self.memory["successor_index"], idx[:, -1])
        succ_v = tf.gather(self.memory["successor_value"], idx[:, -1])
        decay = self.cfg.memory_decay ** tf.cast(tf.range(length - 1, -1, -1), tf.float32)
        nbr_i = tf.reshape(tf.gather(self.memory["neighbour_index"], idx), [batch, -1])
        nbr_v = tf.reshape(
            tf.gather(self.memory["neighbour_value"], idx) * decay[None, :, None], [batch, -1]
        )
        # Re-views: the session's own items, decayed (a quarter of clicks in click streams).
        own_i = tf.cast(tf.maximum(idx - 2, 0), tf.int32)
        own_v = tf.cast(idx >= 2, tf.float32) * decay[None, :]
        w = self.memory_weights
        columns = tf.concat([succ_i, nbr_i, own_i], axis=1)
        values = tf.concat([w[0] * succ_v, w[1] * nbr_v, w[2] * own_v], axis=1)
        rows = tf.repeat(tf.range(batch)[:, None], m * (1 + length) + length, axis=1)
        return tf.tensor_scatter_nd_add(
            tf.zeros([batch, self.n_items]),
            tf.stack([tf.reshape(rows, [-1]), tf.reshape(columns, [-1])], axis=1),
            tf.reshape(values, [-1]),
        )

    def trend_scores(self, bucket: tf.Tensor) -> tf.Tensor:
        """The trend prior of every item for examples in time bucket ``bucket`` ([B])."""
        return tf.einsum("bih,h->bi", tf.gather(self.trend, bucket), self.trend_weights)

    def prior_now(self) -> tf.Tensor:
        """The trend prior at the cut-off (what serving adds), one value per item."""
        return tf.linalg.matvec(self.trend[-1], self.trend_weights)

    def neural_logits(self, query: tf.Tensor) -> tf.Tensor:
        items = self.candidate(self.catalogue)
        bias = self.candidate.item_bias(self.catalogue["item_id"])[None, :]
        return tf.matmul(query, items, transpose_b=True) + bias

    def retrieval_logits(self, query: tf.Tensor, session_items: tf.Tensor) -> tf.Tensor:
        """Scores of every catalogue item for each query, as served (full-softmax mode)."""
        return (
            self.neural_scale * self.neural_logits(query)
            + self.memory_scores(session_items)
            + self.prior_now()[None, :]
        )

    def compute_loss(self, inputs: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        query = self.query(inputs["query"], training=training)
        candidate = self.candidate(inputs["candidate"])
        labels = inputs["labels"]
        if self.full:
            neural = self.neural_logits(query)
            logits = neural + self.memory_scores(inputs["query"]["session_items"])
            logits += self.trend_scores(labels["trend_bucket"])
            # Leave-one-out: a training example's own transition is in the counts; take it
            # back out at its target so the memory weights do not learn to trust themselves.
            own = (
                self.memory_weights[0] * labels["own_successor"]
                + self.memory_weights[1] * labels["own_neighbour"]
            )
            logits += tf.one_hot(labels["target_index"], self.n_items) * own[:, None]
            retrieval = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(
                    labels=labels["target_index"], logits=logits
                )
            )
            # Optionally make the neural score stand on its own too (it otherwise leaves what
            # the counts explain to them); off by default: it cost combined recall on
            # generated data (0.406 -> 0.398).
            if self.cfg.neural_weight:
                retrieval += self.cfg.neural_weight * tf.reduce_mean(
                    tf.nn.sparse_softmax_cross_entropy_with_logits(
                        labels=labels["target_index"], logits=neural
                    )
                )
        else:
            q = tf.math.l2_normalize(query, axis=1)
            c = tf.math.l2_normalize(candidate, axis=1)
            retrieval = self.sampled(
                q,
                c,
                candidate_sampling_probability=labels["sampling_probability"],
                candidate_ids=inputs["candidate"]["item_id"],
                compute_metrics=False,
            ) / tf.cast(tf.shape(q)[0], tf.float32)

        ranking = self.ranking(query, candidate)
        purchase = _masked_bce(labels["purchased"], ranking[:, 0], labels["purchase_mask"])
        keep = _masked_bce(labels["kept"], ranking[:, 1], labels["keep_mask"])
        who = self.query.customer_vector(
            inputs["query"]["customer_id"], inputs["query"]["customer_features"]
        )
        fit_logits = self.fit_head(who, candidate, inputs["fit_features"])
        fit_mask = tf.cast(labels["fit_label"] >= 0, tf.float32)
        fit_loss = tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=tf.maximum(labels["fit_label"], 0), logits=fit_logits
        )
        fit = tf.math.divide_no_nan(tf.reduce_sum(fit_loss * fit_mask), tf.reduce_sum(fit_mask))
        for name, value in (
            ("retrieval", retrieval),
            ("purchase", purchase),
            ("keep", keep),
            ("fit", fit),
        ):
            self.trackers[name].update_state(value)
        cfg = self.cfg
        return (
            cfg.retrieval_weight * retrieval
            + cfg.purchase_weight * purchase
            + cfg.keep_weight * keep
            + cfg.fit_weight * fit
        )


def _masked_bce(labels: tf.Tensor, logits: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    loss = tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)
    return tf.math.divide_no_nan(tf.reduce_sum(loss * mask), tf.reduce_sum(mask))


def build_model(
    cfg: ModelConfig,
    customers: list[str],
    catalogue: dict[str, np.ndarray],
    categories: list[str],
    styles: list[str],
    event_types: list[str],
    customer_feature_sample: np.ndarray,
    fit_feature_sample: np.ndarray,
    memory: dict[str, np.ndarray] | None = None,
    trend: np.ndarray | None = None,
) -> RecommenderModel:
    """Assemble towers and heads (seeded: the same data and config give the same model)."""
    tf.keras.utils.set_random_seed(cfg.seed)
    # Multi-threaded reductions are otherwise free to add in any order.
    tf.config.experimental.enable_op_determinism()
    items = [str(i) for i in catalogue["item_id"]]
    session = SessionEncoder(items, event_types, cfg, name="session")
    query = QueryTower(customers, session, customer_feature_sample, cfg)
    candidate = CandidateTower(items, categories, styles, catalogue["item_features"], cfg)
    model = RecommenderModel(
        query,
        candidate,
        RankingHeads(cfg, name="ranking"),
        FitHead(fit_feature_sample, cfg, name="fit"),
        catalogue,
        cfg,
        memory,
        trend,
    )
    # Create every weight now, while the seed is fresh: the same seed gives the same model
    # whatever else draws random numbers before the first batch.
    one = {k: tf.constant(v[:1]) for k, v in catalogue.items()}
    q = query(
        {
            "customer_id": tf.constant([PAD]),
            "customer_features": tf.zeros((1, np.asarray(customer_feature_sample).shape[1])),
            "session_items": tf.constant([[PAD] * cfg.session_len]),
            "session_events": tf.constant([[PAD] * cfg.session_len]),
        }
    )
    c = candidate(one)
    candidate.item_bias(one["item_id"])
    model.ranking(q, c)
    who = query.customer_vector(
        tf.constant([PAD]), tf.zeros((1, np.asarray(customer_feature_sample).shape[1]))
    )
    model.fit_head(who, c, tf.zeros((1, np.asarray(fit_feature_sample).shape[1])))
    return model


def retrieval_loss(query: np.ndarray, candidate: np.ndarray, temperature: float = 1.0) -> float:
    """Reference in-batch softmax loss in NumPy (sum over the batch, as TFRS computes it)."""
    logits = query @ candidate.T / temperature
    logits = logits - logits.max(axis=1, keepdims=True)
    log_softmax = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return float(-np.diag(log_softmax).sum())
