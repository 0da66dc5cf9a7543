import numpy as np
import pytest

from pipeline.features.garment_fit import FIT_INPUTS
from pipeline.model.config import PAD, ModelConfig
from pipeline.model.towers import build_model, retrieval_loss
from pipeline.tfenv import tf, tfrs

ITEMS = np.array(["i1", "i2", "i3"], dtype=object)


def test_tfrs_retrieval_loss_matches_hand_computed_softmax():
    query = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], dtype=np.float32)
    candidate = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], dtype=np.float32)
    got = float(tfrs.tasks.Retrieval()(query, candidate, compute_metrics=False))
    # By hand: row 0 logits [1, 0, 0] target 0; row 1 [0, 1, 1] target 1;
    # row 2 [0.6, 0.8, 0.8] target 2.
    rows = [
        -np.log(np.e / (np.e + 2)),
        -np.log(np.e / (1 + 2 * np.e)),
        -np.log(np.exp(0.8) / (np.exp(0.6) + 2 * np.exp(0.8))),
    ]
    assert retrieval_loss(query, candidate) == pytest.approx(sum(rows), rel=1e-6)
    assert got == pytest.approx(sum(rows), rel=1e-5)


# Trend prior of the three items in two time buckets and "now" (three half-lives each).
TREND = np.random.default_rng(3).random((3, 3, 3)).astype(np.float32)


def _model(**overrides):
    cfg = ModelConfig(embedding_dim=8, session_len=3, dropout=0.0, **overrides)
    catalogue = {
        "item_id": ITEMS,
        "category": np.array(["dress", "top", "dress"], dtype=object),
        "style": np.array(["boho"] * 3, dtype=object),
        "item_features": np.random.default_rng(1).normal(size=(3, 2)).astype(np.float32),
    }
    model = build_model(
        cfg,
        customers=["c1", "c2"],
        catalogue=catalogue,
        categories=["dress", "top"],
        styles=["boho"],
        event_types=["view", "try_on"],
        customer_feature_sample=np.random.default_rng(0).normal(size=(8, 2)),
        fit_feature_sample=np.random.default_rng(2).normal(size=(8, len(FIT_INPUTS))),
        trend=TREND,
    )
    return model, catalogue


def _batch(catalogue, fit_label=(1, -1)):
    idx = np.array([2, 0])
    return {
        "query": {
            "customer_id": tf.constant(["c1", PAD]),
            "customer_features": tf.constant([[0.1, 0.2], [0.0, 0.0]]),
            "session_items": tf.constant([[PAD, "i1", "i2"], [PAD, PAD, PAD]]),
            "session_events": tf.constant([[PAD, "view", "try_on"], [PAD, PAD, PAD]]),
        },
        "candidate": {k: tf.constant(v[idx]) for k, v in catalogue.items()},
        "fit_features": tf.constant(np.ones((2, len(FIT_INPUTS)), np.float32)),
        "labels": {
            "target_index": tf.constant(idx.astype(np.int32)),
            "sampling_probability": tf.constant([0.5, 0.5]),
            "purchased": tf.constant([1.0, 0.0]),
            "purchase_mask": tf.constant([1.0, 1.0]),
            "kept": tf.constant([1.0, 0.0]),
            "keep_mask": tf.constant([1.0, 0.0]),
            "fit_label": tf.constant(np.array(fit_label, dtype=np.int32)),
            "own_successor": tf.constant([0.0, 0.0]),
            "own_neighbour": tf.constant([0.0, 0.0]),
            "trend_bucket": tf.constant([0, 1], tf.int32),
        },
    }


def _bce(label, logit):
    return -(
        label * np.log(1 / (1 + np.exp(-logit)))
        + (1 - label) * np.log(1 - 1 / (1 + np.exp(-logit)))
    )


def test_loss_is_the_weighted_sum_of_masked_task_losses_computed_by_hand():
    model, catalogue = _model(purchase_weight=0.3, keep_weight=0.5, fit_weight=2.0)
    model.trend_weights.assign([0.5, -0.3, 0.8])
    batch = _batch(catalogue)
    total = float(model.compute_loss(batch))
    q = model.query(batch["query"]).numpy()
    served = model.retrieval_logits(tf.constant(q), batch["query"]["session_items"]).numpy()
    # Training scores each example with the trend of its own time bucket, serving with "now".
    now = TREND[-1] @ np.array([0.5, -0.3, 0.8], np.float32)
    logits = served - now + TREND[[0, 1]] @ np.array([0.5, -0.3, 0.8], np.float32)
    log_softmax = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    retrieval = -np.mean(log_softmax[[0, 1], [2, 0]])
    c = model.candidate(batch["candidate"]).numpy()
    ranking = model.ranking(tf.constant(q), tf.constant(c)).numpy()
    purchase = np.mean(_bce(np.array([1.0, 0.0]), ranking[:, 0]))
    keep = _bce(1.0, ranking[0, 1])  # only the purchased row has a keep label
    who = model.query.customer_vector(
        batch["query"]["customer_id"], batch["query"]["customer_features"]
    )
    fit_logits = model.fit_head(who, tf.constant(c), batch["fit_features"]).numpy()[0]
    fit = -(fit_logits[1] - np.log(np.exp(fit_logits).sum()))  # only row 0 has a fit label
    assert total == pytest.approx(retrieval + 0.3 * purchase + 0.5 * keep + 2.0 * fit, rel=1e-4)


def test_rows_without_a_label_do_not_touch_that_task():
    model, catalogue = _model()
    a = _batch(catalogue, fit_label=(-1, -1))
    b = _batch(catalogue, fit_label=(-1, -1))
    b["fit_features"] = tf.constant(np.full((2, len(FIT_INPUTS)), 9.0, np.float32))
    assert float(model.compute_loss(a)) == pytest.approx(float(model.compute_loss(b)))


def test_cold_start_inputs_score_and_training_lowers_the_loss():
    model, catalogue = _model()
    batch = _batch(catalogue)
    q = model.query(batch["query"]).numpy()
    assert q.shape == (2, 8) and np.isfinite(q).all()  # anonymous, empty session: fine
    before = float(model.compute_loss(batch))
    model.compile(optimizer=tf.keras.optimizers.Adam(0.05))
    model.fit(tf.data.Dataset.from_tensors(batch).repeat(40), epochs=1, verbose=0)
    assert float(model.compute_loss(batch)) < before


def test_sampled_softmax_for_large_catalogues():
    model, catalogue = _model(softmax="sampled")
    assert not model.full
    assert np.isfinite(float(model.compute_loss(_batch(catalogue))))


def test_same_seed_same_model():
    a, catalogue = _model()
    b, _ = _model()
    batch = _batch(catalogue)
    np.testing.assert_allclose(a.query(batch["query"]).numpy(), b.query(batch["query"]).numpy())


def test_memory_scores_add_successors_of_the_last_item_and_decayed_neighbours():
    cfg_memory = {
        # rows: 0 pad, 1 unknown, 2 = i1, 3 = i2, 4 = i3; values are log-counts
        "successor_index": np.array([[0, 0], [0, 0], [1, 2], [2, 0], [0, 0]], np.int32),
        "successor_value": np.array([[0, 0], [0, 0], [2.0, 1.0], [3.0, 0], [0, 0]], np.float32),
        "neighbour_index": np.array([[0, 0], [0, 0], [2, 0], [0, 0], [0, 0]], np.int32),
        "neighbour_value": np.array([[0, 0], [0, 0], [1.0, 0], [0.5, 0], [0, 0]], np.float32),
    }
    model, _ = _model(memory_top_m=2)
    model.memory = {k: tf.constant(v) for k, v in cfg_memory.items()}
    model.memory_weights.assign([2.0, 10.0, 100.0])
    scores = model.memory_scores(tf.constant([[PAD, "i1", "i2"]])).numpy()[0]
    # last item i2: successor i3 (index 2) with 3.0 -> 2 * 3 = 6 at index 2.
    # neighbours: i1 (one step back, decay 0.7): i3 with 1.0 -> 10 * 0.7 = 7 at index 2;
    #             i2 (last, decay 1): i1 (index 0) with 0.5 -> 10 * 0.5 = 5 at index 0.
    # re-views: i1 (index 0) 100 * 0.7 = 70, i2 (index 1) 100 * 1 = 100.
    np.testing.assert_allclose(scores, [5.0 + 70.0, 100.0, 6.0 + 7.0], rtol=1e-6)


def test_trend_table_counts_only_what_happened_before_each_bucket():
    """Row b is the decayed count of interactions before bucket b starts, computed here
    interaction by interaction; the last row is "now" and later times map to it."""
    from datetime import UTC, datetime, timedelta

    import polars as pl

    from pipeline.model.priors import trend_table

    rng = np.random.default_rng(5)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    offsets = np.sort(rng.uniform(0, 10 * 86_400, 200))
    items = np.array(["a", "b", "c", "d"], dtype=object)
    train = pl.DataFrame(
        {
            "ts": [start + timedelta(seconds=float(s)) for s in offsets],
            "item_id": rng.choice(items[:3], 200).tolist(),  # "d" never interacted with
        }
    )
    cfg = ModelConfig(trend_half_lives_days=(0.5, 3.0), trend_buckets=8)
    trend = trend_table(train, items, cfg)
    assert trend.table.shape == (9, 4, 2)
    t = offsets - offsets[0]
    names = train.get_column("item_id").to_numpy()
    width = trend.width.total_seconds()
    for b in range(9):
        edge = b * width
        # "Now" (the last row) is just after the last interaction, which it counts.
        past = t < edge - 1e-6 if b < 8 else np.ones(len(t), bool)
        for h, half in enumerate((0.5, 3.0)):
            weight = np.where(past, 0.5 ** ((edge - t) / (half * 86_400)), 0.0)
            counts = np.array([weight[names == item].sum() for item in items])
            # Each item's share relative to the average item (stationary as data accumulates).
            share = counts * len(items) / counts.sum() if counts.sum() else counts
            np.testing.assert_allclose(trend.table[b, :, h], np.log1p(share), rtol=1e-4, atol=1e-6)
    assert not trend.table[:, 3].any()
    # Each interaction falls in a bucket whose row does not count it yet.
    buckets = trend.buckets(train.get_column("ts"))
    assert (buckets < 8).all() and buckets[0] == 0
    later = pl.Series([start + timedelta(days=30)]).dt.cast_time_unit("us")
    assert trend.buckets(later)[0] == 8


def test_time_budget_stops_training_before_an_epoch_would_overrun_it():
    from pipeline.model.training import TimeBudget

    model, catalogue = _model()
    model.compile(optimizer=tf.keras.optimizers.Adam(0.01))
    data = tf.data.Dataset.from_tensors(_batch(catalogue)).repeat(3)
    spent = TimeBudget(0.0)  # already used up after the first epoch
    history = model.fit(data, epochs=6, callbacks=[spent], verbose=0)
    assert len(history.history["loss"]) == 1 and spent.stopped
    ample = TimeBudget(3600.0)
    history = model.fit(data, epochs=6, callbacks=[ample], verbose=0)
    assert len(history.history["loss"]) == 6 and not ample.stopped
