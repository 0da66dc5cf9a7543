"""The request models accept exactly what the OpenAPI contract says (schemathesis found
pydantic's lax mode taking ``"k": true`` as 1)."""

import pytest
from pydantic import ValidationError

from serving.schemas import RecommendationRequest


@pytest.mark.parametrize("k", [True, False, "10", 10.5, 0, 101, None])
def test_k_that_is_not_a_json_integer_in_range_is_refused(k):
    with pytest.raises(ValidationError):
        RecommendationRequest(session_items=["I000001"], k=k)


@pytest.mark.parametrize(("k", "expected"), [(10, 10), (10.0, 10), (1, 1), (100, 100)])
def test_a_json_integer_is_taken(k, expected):
    assert RecommendationRequest(session_items=["I000001"], k=k).k == expected
