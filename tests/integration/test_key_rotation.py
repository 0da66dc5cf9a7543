"""A pseudonym key rotation as an operator carries it out: with the new key set and the old
one listed as previous, serving still finds a customer stored under the old pseudonym (and
the model knows them under it); without the previous key they would turn cold start."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from serving.recommender import RecommendationRequest, Recommender
from tests.support.heal import known_customers

pytestmark = pytest.mark.slow

NEW_KEY = "rotated-in-key-0b7d"


def test_serving_finds_customers_under_the_previous_key(served, recommender):
    settings, _, _ = served
    customers = known_customers(settings, recommender, 3)
    assert customers
    old = settings.pseudonym_key
    rotating = Recommender(
        settings.model_copy(
            update={"pseudonym_key": SecretStr(NEW_KEY), "pseudonym_previous_keys": [old]}
        ),
        recommender.model,
    )
    forgot_old = Recommender(
        settings.model_copy(update={"pseudonym_key": SecretStr(NEW_KEY)}), recommender.model
    )
    try:
        for customer in customers:
            before = recommender.recommend(RecommendationRequest(customer_id=customer, k=5))
            during = rotating.recommend(RecommendationRequest(customer_id=customer, k=5))
            assert before.known_customer and during.known_customer and not during.degraded
            assert [i.item_id for i in during.items] == [i.item_id for i in before.items]
            lost = forgot_old.recommend(RecommendationRequest(customer_id=customer, k=5))
            assert not lost.known_customer
    finally:
        rotating.close()
        forgot_old.close()
