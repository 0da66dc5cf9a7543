"""The NumPy serving path computes what the SavedModel's signatures compute."""

import numpy as np
import pytest

from pipeline.features.garment_fit import FIT_INPUTS
from pipeline.model import fastpath
from pipeline.model.bundle import ServingModule
from pipeline.model.config import PAD, ModelConfig
from pipeline.model.examples import CUSTOMER_NUMERIC
from pipeline.model.towers import build_model
from pipeline.tfenv import tf

pytestmark = pytest.mark.unit

N_ITEMS = 60
ITEMS = np.array([f"i{i}" for i in range(N_ITEMS)], dtype=object)
CUSTOMERS = ["c1", "c2", "c3"]
LENGTH = 5
N_FEATURES = len(CUSTOMER_NUMERIC)


def _trained_looking_model(softmax: str, seed: int = 0):
    """A model whose every weight is random (zero-initialised embeddings included) and whose
    transition memory and trend table are filled, so no part of the computation is trivially
    zero."""
    rng = np.random.default_rng(seed)
    cfg = ModelConfig(embedding_dim=8, session_len=LENGTH, memory_top_m=4, softmax=softmax)
    catalogue = {
        "item_id": ITEMS,
        "category": rng.choice(["dress", "top"], N_ITEMS).astype(object),
        "style": rng.choice(["boho", "classic"], N_ITEMS).astype(object),
        "item_features": rng.normal(size=(N_ITEMS, 3)).astype(np.float32),
    }
    rows = N_ITEMS + 2
    memory = {
        "successor_index": rng.integers(0, N_ITEMS, (rows, 4)).astype(np.int32),
        "successor_value": rng.random((rows, 4)).astype(np.float32),
        "neighbour_index": rng.integers(0, N_ITEMS, (rows, 4)).astype(np.int32),
        "neighbour_value": rng.random((rows, 4)).astype(np.float32),
    }
    model = build_model(
        cfg,
        customers=CUSTOMERS,
        catalogue=catalogue,
        categories=["dress", "top"],
        styles=["boho", "classic"],
        event_types=["view", "try_on", "add_to_cart"],
        customer_feature_sample=rng.normal(size=(16, N_FEATURES)),
        fit_feature_sample=rng.normal(size=(16, len(FIT_INPUTS))),
        memory=memory,
        trend=rng.random((4, N_ITEMS, len(cfg.trend_half_lives_days))).astype(np.float32),
    )
    for weight in model.trainable_weights:
        weight.assign(rng.normal(scale=0.5, size=weight.shape).astype(np.float32))
    model.neural_scale.assign(0.7)
    return model


def _fast(model, tmp_path):
    module = ServingModule(model)
    path = fastpath.export(
        model,
        module.item_matrix.numpy(),
        module.item_raw.numpy(),
        module.item_bias.numpy(),
        module.item_prior.numpy(),
        tmp_path / fastpath.FILE,
    )
    return module, fastpath.FastModel.load(path)


def _pad(items, events):
    pad = [PAD] * (LENGTH - len(items))
    return pad + items, pad + events


CASES = [
    ("c1", ["i3", "i7", "i7"], ["view", "try_on", "view"]),  # known customer, re-view
    ("c2", [], []),  # no session
    ("", ["i1"], ["add_to_cart"]),  # anonymous
    ("stranger", ["i5", "nope", "i9"], ["view", "view", "mystery"]),  # unknown ids and event
    ("c3", ["i1", "i2", "i3", "i4", "i5"], ["view"] * 5),  # full session
]


@pytest.mark.parametrize(
    ("softmax", "projected"), [("full", True), ("sampled", True), ("full", False)]
)
def test_serve_equals_the_signature(tmp_path, monkeypatch, softmax, projected):
    if not projected:  # a catalogue too large to precompute the GRU's input projection
        monkeypatch.setattr(fastpath, "PROJECTION_BYTES", 0)
    model = _trained_looking_model(softmax)
    module, fast = _fast(model, tmp_path)
    assert (fast.item_projection is not None) == projected
    rng = np.random.default_rng(7)
    for customer, items, events in CASES:
        features = rng.normal(size=(1, N_FEATURES)).astype(np.float32)
        features[0, 1] = np.nan  # a missing feature
        items, events = _pad(items, events)
        expected = module.serve(
            tf.constant([customer]),
            tf.constant(features),
            tf.constant([items]),
            tf.constant([events]),
            tf.constant(20, tf.int32),
        )
        got = fast.serve(customer, features[0], items, events, 20)
        np.testing.assert_array_equal(got["indices"], expected["indices"].numpy())
        for key in ("query", "scores", "purchase", "keep"):
            np.testing.assert_allclose(got[key], expected[key].numpy(), rtol=1e-4, atol=1e-5)


def test_fit_equals_the_signature(tmp_path):
    model = _trained_looking_model("full", seed=3)
    module, fast = _fast(model, tmp_path)
    rng = np.random.default_rng(11)
    candidates = module.item_raw.numpy()[rng.integers(0, N_ITEMS, 12)]
    fit_features = rng.normal(size=(12, len(FIT_INPUTS))).astype(np.float32)
    fit_features[::3, 2] = np.nan
    for customer in ("c2", "", "stranger"):
        features = rng.normal(size=(1, N_FEATURES)).astype(np.float32)
        expected = module.fit(
            tf.constant([customer] * 12),
            tf.constant(np.repeat(features, 12, 0)),
            tf.constant(candidates),
            tf.constant(fit_features),
        )["fit"].numpy()
        got = fast.fit(customer, features[0], candidates, fit_features)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
        assert np.allclose(got.sum(axis=1), 1.0)


def test_candidates_beyond_the_catalogue_return_all_of_it(tmp_path):
    model = _trained_looking_model("full")
    _, fast = _fast(model, tmp_path)
    items, events = _pad(["i2"], ["view"])
    got = fast.serve("c1", np.zeros(N_FEATURES, np.float32), items, events, N_ITEMS)
    assert sorted(got["indices"].tolist()) == list(range(N_ITEMS))
    assert np.all(np.diff(got["scores"]) <= 0)


@pytest.mark.parametrize("softmax", ["full", "sampled"])
def test_score_parts_add_up_to_the_lift_over_the_average_item(tmp_path, softmax):
    model = _trained_looking_model(softmax, seed=5)
    _, fast = _fast(model, tmp_path)
    features = np.random.default_rng(2).normal(size=N_FEATURES).astype(np.float32)
    for customer, items, events in CASES:
        items, events = _pad(items, events)
        served = fast.serve(customer, features, items, events, N_ITEMS)
        scores = np.empty(N_ITEMS, np.float32)
        scores[served["indices"]] = served["scores"]
        picks = served["indices"][:7]
        parts = fast.score_parts(served["customer"], served["query"][0], items, picks)
        assert list(parts) == list(fastpath.SCORE_PARTS)
        total = np.sum(list(parts.values()), axis=0)
        np.testing.assert_allclose(total, scores[picks] - scores.mean(), rtol=1e-4, atol=1e-4)
        if not any(i != PAD for i in items):  # no session: the query is the customer's alone
            assert not parts["session"].any()
        if softmax == "sampled":  # cosine retrieval: only the neural parts
            assert not parts["trend"].any() and not parts["bestseller"].any()


def test_memory_anchors_name_the_session_item_whose_transitions_lift_the_pick(tmp_path):
    model = _trained_looking_model("full", seed=5)
    _, fast = _fast(model, tmp_path)
    items, events = _pad(["i3", "i7"], ["view", "view"])
    idx = fast.items.lookup(items)
    successors = fast.memory["successor_index"][idx[-1]]
    only_after_i7 = [
        j
        for j in successors.tolist()
        if j not in fast.memory["neighbour_index"][idx[-2]].tolist()
        and fast.memory["successor_value"][idx[-1]][successors.tolist().index(j)] > 0
    ]
    assert only_after_i7, "the random memory should have a successor of i7 alone"
    anchors = fast.memory_anchors(items, np.array([only_after_i7[0], N_ITEMS - 1]))
    assert ITEMS[anchors[0]] == "i7"
    empty, _ = _pad([], [])
    assert fast.memory_anchors(empty, np.array([0, 1])).tolist() == [-1, -1]
