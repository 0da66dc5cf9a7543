"""Fuzzing the HTTP API from its own OpenAPI spec (schemathesis, positive and negative cases)
against a live uvicorn server with the registered model and a real Redis.

Every generated request must get no server error and an answer that matches the spec: status
code, content type, headers and body schema. Deterministic (``derandomize``) with a bounded
number of examples per operation, so ``make test`` runs the same cases every time.
"""

from __future__ import annotations

import pytest

from serving.app import create_app
from serving.events import EventProcessor
from serving.security import hash_key
from tests.support.drills import fuzz_api, live_app

pytestmark = pytest.mark.slow

KEY = "fuzz-key-3a9e0c5d"
EXAMPLES = 200  # per operation and mode (fewer when the space is exhausted)


@pytest.fixture(scope="module")
def api_url(served, recommender, tmp_path_factory):
    settings, _, _ = served
    settings = settings.model_copy(
        update={
            "api_key_hashes": [hash_key(KEY)],
            "api_rate_limit": "100000/second",
            "data_dir": tmp_path_factory.mktemp("fuzz"),  # its events stay out of the run's log
        }
    )
    processor = EventProcessor(settings, recommender.sessions)
    app = create_app(settings, recommender=recommender, processor=processor, watch=False)
    with live_app(app) as url:
        yield url


def test_every_generated_request_gets_a_documented_answer(api_url):
    """Positive and negative cases for every operation; the checks are schemathesis' own
    (no server error, documented status, content type, headers and body schema)."""
    result = fuzz_api(api_url, KEY, EXAMPLES)
    print(f"fuzz: {result.cases} cases, status codes {dict(sorted(result.statuses.items()))}")
    assert result.mismatches == []
    assert result.server_errors == 0
    assert result.statuses[200] > 0 and result.statuses[422] > 0  # both kinds were generated
