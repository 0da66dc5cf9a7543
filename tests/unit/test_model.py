import numpy as np
import pytest

from pipeline.model import PAD, ModelConfig, build_model, retrieval_loss
from pipeline.tfenv import tf, tfrs


def test_tfrs_retrieval_loss_matches_hand_computed_softmax():
    query = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], dtype=np.float32)
    candidate = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], dtype=np.float32)
    task = tfrs.tasks.Retrieval()
    got = float(task(tf.constant(query), tf.constant(candidate), compute_metrics=False))
    # Hand computation of the first row: logits [1, 0, 0], target 0.
    row0 = -(1 - np.log(np.e + 2))
    assert retrieval_loss(query, candidate)
    assert got == pytest.approx(retrieval_loss(query, candidate), rel=1e-5)
    assert retrieval_loss(query[:1], candidate[:1]) == pytest.approx(0.0)
    assert -np.log(np.e / (np.e + 2)) == pytest.approx(row0)


def _tiny_model(cfg=ModelConfig(embedding_dim=4, session_len=3)):
    return build_model(
        cfg,
        customers=["c1", "c2"],
        items=["i1", "i2", "i3"],
        categories=["dress"],
        styles=["boho"],
        customer_feature_sample=np.random.default_rng(0).normal(size=(8, 2)),
        item_feature_sample=np.random.default_rng(1).normal(size=(3, 1)),
    )


def _batch():
    return {
        "query": {
            "customer_id": tf.constant(["c1", PAD]),
            "customer_features": tf.constant([[0.1, 0.2], [0.0, 0.0]]),
            "session_items": tf.constant([[PAD, "i1", "i2"], [PAD, PAD, PAD]]),
        },
        "candidate": {
            "item_id": tf.constant(["i3", "i1"]),
            "category": tf.constant(["dress", "dress"]),
            "style": tf.constant(["boho", "boho"]),
            "item_features": tf.constant([[0.5], [0.1]]),
        },
        "sampling_probability": tf.constant([0.5, 0.5]),
    }


def test_towers_give_unit_vectors_and_handle_cold_start():
    model = _tiny_model()
    batch = _batch()
    q = model.query(batch["query"]).numpy()
    c = model.candidate(batch["candidate"]).numpy()
    assert q.shape == (2, 4) and c.shape == (2, 4)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, rtol=1e-5)
    assert np.isfinite(q).all()  # anonymous, empty session still scores


def test_loss_equals_reference_on_model_outputs_and_training_lowers_it():
    cfg = ModelConfig(embedding_dim=4, session_len=3, logq_correction=False, temperature=1.0)
    model = _tiny_model(cfg)
    batch = _batch()
    q = model.query(batch["query"]).numpy()
    c = model.candidate(batch["candidate"]).numpy()
    loss = float(model.compute_loss(batch))
    assert loss == pytest.approx(retrieval_loss(q, c), rel=1e-4)
    model.compile(optimizer=tf.keras.optimizers.Adam(0.05))
    ds = tf.data.Dataset.from_tensors(batch).repeat(30)
    model.fit(ds, epochs=1, verbose=0)
    assert float(model.compute_loss(batch)) < loss


def test_logq_correction_changes_the_loss():
    batch = _batch()
    plain = _tiny_model(ModelConfig(embedding_dim=4, session_len=3, logq_correction=False))
    corrected = _tiny_model(ModelConfig(embedding_dim=4, session_len=3, logq_correction=True))
    batch["sampling_probability"] = tf.constant([0.9, 0.1])
    assert float(plain.compute_loss(batch)) != pytest.approx(float(corrected.compute_loss(batch)))
