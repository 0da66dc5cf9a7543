"""Fuzzing the HTTP API from its own OpenAPI spec (schemathesis, positive and negative cases)
against a live uvicorn server with the registered model and a real Redis.

Every generated request must get no server error and an answer that matches the spec: status
code, content type, headers and body schema. Deterministic (``derandomize``) with a bounded
number of examples per operation, so ``make test`` runs the same cases every time.
"""

from __future__ import annotations

import zlib
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from schemathesis.generation.modes import GenerationMode

from serving.app import create_app
from serving.events import EventProcessor
from serving.security import API_KEY_HEADER, hash_key
from tests.integration.conftest import live_app

pytestmark = pytest.mark.slow

KEY = "fuzz-key-3a9e0c5d"
EXAMPLES = 200  # per operation and mode (fewer when the space is exhausted)


def in_window(case) -> None:
    """Move a valid case's event time into the accepted window (a rule JSON Schema cannot
    state; ``test_serving_trust`` tests the window), keeping the case otherwise as generated."""
    body = case.body
    if case.operation.path == "/events" and isinstance(body, dict) and body.get("ts"):
        back = zlib.crc32(str(body["ts"]).encode()) % (29 * 86_400)
        body["ts"] = (datetime.now(UTC) - timedelta(seconds=back)).isoformat()


def fuzz(operation, mode: GenerationMode, statuses: Counter[int]) -> None:
    """Run one operation's cases of one mode, counting the answers' status codes."""

    @hsettings(
        max_examples=EXAMPLES,
        derandomize=True,  # the same cases in CI every time
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case) -> None:
        if mode is GenerationMode.POSITIVE:
            in_window(case)
        response = case.call_and_validate(headers={API_KEY_HEADER: KEY}, timeout=60)
        statuses[response.status_code] += 1

    check()


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
    schema = schemathesis.openapi.from_url(api_url + "/openapi.json")
    statuses: Counter[int] = Counter()
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/recommendations", "/events", "/health"}
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            if mode is GenerationMode.NEGATIVE and operation.method.upper() == "GET":
                continue  # /health and /metrics take no input: nothing to make invalid
            fuzz(operation, mode, statuses)
    print(f"fuzz: {sum(statuses.values())} cases, status codes {dict(sorted(statuses.items()))}")
    assert not [code for code in statuses if code >= 500]
    assert statuses[200] > 0 and statuses[422] > 0  # both kinds of case were generated
