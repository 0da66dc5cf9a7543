"""Fuzzing the HTTP API from its own OpenAPI spec (schemathesis, positive and negative cases)
against a live uvicorn server with the registered model and a real Redis.

Every generated request must get no server error and an answer that matches the spec: status
code, content type, headers and body schema. Deterministic (``derandomize``) with a bounded
number of examples per operation, so ``make test`` runs the same cases every time.
"""

from __future__ import annotations

from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck
from hypothesis import settings as hsettings

from serving.app import create_app
from serving.security import API_KEY_HEADER, hash_key
from tests.integration.conftest import live_app

pytestmark = pytest.mark.slow

KEY = "fuzz-key-3a9e0c5d"
STATUS: Counter[int] = Counter()


@pytest.fixture(scope="module")
def api_schema(served, recommender, tmp_path_factory):
    settings, _, _ = served
    settings = settings.model_copy(
        update={
            "api_key_hashes": [hash_key(KEY)],
            "api_rate_limit": "100000/second",
            "data_dir": tmp_path_factory.mktemp("fuzz"),  # its events stay out of the run's log
        }
    )
    from serving.events import EventProcessor

    processor = EventProcessor(settings, recommender.sessions)
    app = create_app(settings, recommender=recommender, processor=processor, watch=False)
    with live_app(app) as url:
        yield schemathesis.openapi.from_url(url + "/openapi.json")
    print(f"fuzz: {sum(STATUS.values())} cases, status codes {dict(sorted(STATUS.items()))}")
    assert not [code for code in STATUS if code >= 500]


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@hsettings(
    max_examples=80,
    derandomize=True,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_generated_request_gets_a_documented_answer(case):
    response = case.call_and_validate(headers={API_KEY_HEADER: KEY}, timeout=60)
    STATUS[response.status_code] += 1
