"""The HTTP contract of the full app (registered model, real Redis): readiness follows the
online store while liveness stays up, and the access log of real page views and events
carries their request ids and no customer id (issue 14, item 7)."""

from __future__ import annotations

import io
import json

import polars as pl
import pytest
from fastapi.testclient import TestClient

from pipeline.privacy import pseudonymise
from serving.app import create_app
from serving.events import EventProcessor
from serving.logs import configure_logging
from serving.middleware import REQUEST_ID_HEADER

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def customer(raw_drops, served) -> str:
    _, run_date, _ = served
    events = pl.read_ndjson(raw_drops / run_date.isoformat() / "session_events.jsonl")
    return events.drop_nulls("customer_id")["customer_id"][0]


def _is_uuid_hex(value: str) -> bool:
    return len(value) == 32 and all(c in "0123456789abcdef" for c in value)


def test_access_lines_of_page_views_and_events(served, recommender, customer, tmp_path):
    settings, _, _ = served
    processor = EventProcessor(
        settings.model_copy(update={"data_dir": tmp_path}), recommender.sessions
    )
    app = create_app(settings, recommender=recommender, processor=processor, watch=False)
    lines = io.StringIO()
    configure_logging(settings, stream=lines)
    recommender.clear_feature_cache()
    with TestClient(app) as client:
        page = client.post(
            "/recommendations",
            json={"customer_id": customer, "session_items": ["I000001"], "k": 3},
            headers={REQUEST_ID_HEADER: "page-view-1"},
        )
        event = client.post(
            "/events",
            json={
                "session_id": "s-http",
                "customer_id": customer,
                "event_type": "view",
                "item_id": "I000001",
            },
        )
        health = client.get("/health")
    assert page.status_code == event.status_code == health.status_code == 200
    assert not page.json()["degraded"]
    assert page.headers[REQUEST_ID_HEADER] == "page-view-1"
    logged = [json.loads(line) for line in lines.getvalue().splitlines()]
    assert [(r["method"], r["path"], r["status"]) for r in logged] == [
        ("POST", "/recommendations", 200),
        ("POST", "/events", 200),
        ("GET", "/health", 200),
    ]
    answers = (page, event, health)
    assert [r["request_id"] for r in logged] == [a.headers[REQUEST_ID_HEADER] for a in answers]
    assert logged[0]["model_version"] == recommender.version
    assert logged[0]["degraded"] is False
    assert logged[1]["model_version"] is None and logged[1]["degraded"] is False
    assert logged[2]["model_version"] == recommender.version
    text = lines.getvalue()
    key = settings.pseudonym_key.get_secret_value()
    for secret in (customer, pseudonymise(customer, key), "s-http", "I000001"):
        assert secret not in text


def test_ready_follows_redis_and_live_stays_up(served, recommender, customer, tmp_path):
    settings, _, server = served
    processor = EventProcessor(
        settings.model_copy(update={"data_dir": tmp_path}), recommender.sessions
    )
    app = create_app(settings, recommender=recommender, processor=processor, watch=False)
    up = {"ready": True, "model_version": recommender.version, "reasons": [], "details": []}
    with TestClient(app) as client:
        assert client.get("/health/live").status_code == 200
        ready = client.get("/health/ready")
        assert (ready.status_code, ready.json()) == (200, up)
        server.kill()
        try:
            down = client.get("/health/ready")
            assert down.status_code == 503
            assert down.json()["ready"] is False
            assert down.json()["reasons"] == ["store_unreachable"]
            assert down.json()["model_version"] == recommender.version
            assert _is_uuid_hex(down.headers[REQUEST_ID_HEADER])
            assert client.get("/health/live").json() == {"status": "live"}
            # Page views still answer (degraded) and open the breaker meanwhile.
            recommender.clear_feature_cache()
            for n in range(settings.redis_breaker_failures + 1):
                answer = client.post(
                    "/recommendations", json={"customer_id": customer, "session_id": f"s{n}"}
                )
                assert answer.status_code == 200 and answer.json()["degraded"]
            assert recommender.breaker.state == "open"
            assert client.get("/health/ready").status_code == 503
        finally:
            server.start()
        # Back: ready again at once, though no page view has probed the open breaker yet.
        assert recommender.breaker.state == "open"
        ready = client.get("/health/ready")
        assert (ready.status_code, ready.json()) == (200, up)
        assert client.get("/health/live").status_code == 200
