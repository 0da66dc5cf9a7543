"""A pick's reason follows the part of its score that lifted it the most."""

import numpy as np
import pytest

from pipeline.model.fastpath import SCORE_PARTS
from pipeline.model.reasons import SECOND_REASON_LIFT, drivers, explain, lifts

pytestmark = pytest.mark.unit

DRIVERS = [*SCORE_PARTS, "purchase", "keep", "rule"]


def _contributions(dominant: str, lift: float = 2.0) -> dict[str, np.ndarray]:
    """Three picks; ``dominant`` lifts each the most, every other part a little or not."""
    small = np.array([0.05, -0.3, 0.0])
    return {name: np.full(3, lift) if name == dominant else small for name in DRIVERS}


@pytest.mark.parametrize("dominant", DRIVERS)
def test_the_lead_is_the_dominant_part(dominant):
    assert drivers(_contributions(dominant)) == [[dominant]] * 3


def test_a_strong_runner_up_is_named_second_and_a_weak_one_is_not():
    parts = _contributions("also_viewed")
    parts["trend"] = np.array([SECOND_REASON_LIFT, SECOND_REASON_LIFT / 2, 3.0])
    assert drivers(parts) == [["also_viewed", "trend"], ["also_viewed"], ["trend", "also_viewed"]]


def test_lifts_measure_the_heads_against_the_average_candidate():
    log_purchase = np.log(np.array([0.5, 0.1, 0.9, 0.5]))
    log_keep = np.log(np.array([0.8, 0.8, 0.8, 0.8]))
    got = lifts({"trend": np.array([0.1, 0.2])}, [2, 1], log_purchase, log_keep, 0.5, [0.0, 1.0])
    np.testing.assert_allclose(got["purchase"], 0.5 * (log_purchase[[2, 1]] - log_purchase.mean()))
    np.testing.assert_allclose(got["keep"], [0.0, 0.0])
    assert drivers(got) == [["purchase", "trend"], ["rule", "trend"]]


@pytest.mark.parametrize(
    ("driver", "expected"),
    [
        ("history", "matches your history"),
        ("session", "like what you are looking at"),
        ("also_viewed", "goes with I000231 you viewed"),
        ("revisit", "you viewed it earlier"),
        ("bestseller", "a best-seller"),
        ("trend", "popular now"),
        ("purchase", "often bought when viewed"),
        ("keep", "fits you in M (80%)"),
        ("rule", "boosted: brand brand_03"),
    ],
)
def test_each_driver_has_its_own_phrase(driver, expected):
    rules = ["in stock in your size M", "boosted: brand brand_03"]
    reasons = explain([driver], rules, "M", 0.8, True, True, anchor="I000231")
    assert reasons[0] == expected
    assert "fits you in M (80%)" in reasons and len(reasons) == len(set(reasons))


def test_phrases_differ_between_drivers():
    phrases = {explain([d], [], "M", 0.8, True, True, "I1")[0] for d in DRIVERS[:-1]}
    assert len(phrases) == len(DRIVERS) - 1


def test_without_a_split_the_session_is_named_as_before():
    assert explain([], [], "S", 0.99, True, True) == [
        "goes with what you are looking at",
        "fits you in S (99%)",
    ]
    assert explain([], ["more variety"], None, None, False, False) == ["more variety"]
    assert explain(["history"], [], None, None, False, False) == ["liked by most shoppers"]
