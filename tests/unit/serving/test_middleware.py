"""Request ids, access log lines and CORS through the app's own middleware stack
(:func:`serving.app.create_app`, not started: the answers here come before any endpoint needs
the model; the full app is tested in tests/integration/test_serving_http.py)."""

from __future__ import annotations

import io
import json
import re

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from pipeline.config import Settings
from serving.app import create_app
from serving.logs import ACCESS_FIELDS, configure_logging
from serving.middleware import MAX_REQUEST_ID, REQUEST_ID_HEADER, UNMATCHED, request_id
from serving.recommender import RecommendationRequest
from serving.security import API_KEY_HEADER, hash_key

KEY = "unit-key-5d1f"
ORIGIN = "https://shop.example.com"
UUID_HEX = re.compile(r"^[0-9a-f]{32}$")


def _settings(tmp_path, **extra: object) -> Settings:
    base = {
        "data_dir": tmp_path / "var",
        "api_key_hashes": [hash_key(KEY)],
        "api_max_body_bytes": 1024,
    }
    return Settings.model_validate(base | extra)


def _app(settings: Settings) -> tuple[FastAPI, io.StringIO]:
    """The app, a 422 route and a failing route beside its own, and its access lines."""
    app = create_app(settings, watch=False)
    lines = io.StringIO()
    configure_logging(settings, stream=lines)

    async def echo(body: RecommendationRequest) -> dict:
        return {"k": body.k}

    async def boom() -> None:
        raise RuntimeError("boom")

    app.add_api_route("/echo", echo, methods=["POST"])
    app.add_api_route("/boom", boom, methods=["GET"])
    return app, lines


def _logged(lines: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in lines.getvalue().splitlines()]


def test_the_request_id_is_echoed_on_every_answer_and_logged(tmp_path):
    app, lines = _app(_settings(tmp_path))
    client = TestClient(app, raise_server_exceptions=False)
    calls = [
        ("get", "/health/live", {}, 200),
        ("get", "/health/ready", {}, 503),  # not started: no model loaded
        ("post", "/recommendations", {"json": {}}, 401),  # no key
        ("post", "/recommendations", {"content": b"x" * 2000}, 413),
        ("post", "/echo", {"json": {"k": 500}}, 422),
        ("get", "/boom", {}, 500),
        ("get", "/nowhere", {}, 404),
    ]
    sent = []
    for n, (method, path, kwargs, status) in enumerate(calls):
        rid = f"req-{n}.a:b_c"
        response = getattr(client, method)(path, headers={REQUEST_ID_HEADER: rid}, **kwargs)
        assert response.status_code == status, (path, response.text)
        assert response.headers[REQUEST_ID_HEADER] == rid, path
        sent.append((rid, method.upper(), status))
    assert client.get("/boom").json() == {"detail": "internal server error"}
    logged = _logged(lines)[: len(calls)]
    assert [(r["request_id"], r["method"], r["status"]) for r in logged] == sent
    for record in logged:
        assert set(ACCESS_FIELDS) | {"time", "level", "logger", "message"} == set(record)
        assert record["duration_ms"] >= 0
    paths = [r["path"] for r in logged]
    assert paths == [
        "/health/live",
        "/health/ready",
        "/recommendations",
        UNMATCHED,  # 413 before routing: nothing of the raw path is logged
        "/echo",
        "/boom",
        UNMATCHED,
    ]
    assert logged[1]["degraded"] is True and logged[1]["model_version"] is None
    assert client.get("/health/ready").json() == {
        "ready": False,
        "model_version": None,
        "reasons": ["no_model"],
        "details": ["no model loaded yet"],
    }


def test_a_missing_or_unsafe_request_id_gets_a_new_one(tmp_path):
    app, lines = _app(_settings(tmp_path))
    client = TestClient(app)
    presented = [None, "", "x" * (MAX_REQUEST_ID + 1), "a b", "a\u00e9", "id;drop", "ok/../x"]
    answered = []
    for value in presented:
        headers = {} if value is None else {REQUEST_ID_HEADER: value.encode("utf8")}
        response = client.get("/health/live", headers=headers)
        rid = response.headers[REQUEST_ID_HEADER]
        assert UUID_HEX.match(rid), (value, rid)
        answered.append(rid)
    assert len(set(answered)) == len(answered)  # each request its own
    assert [r["request_id"] for r in _logged(lines)] == answered
    longest = "a" * MAX_REQUEST_ID
    assert (
        client.get("/health/live", headers={REQUEST_ID_HEADER: longest}).headers[REQUEST_ID_HEADER]
        == longest
    )


@hsettings(max_examples=200, derandomize=True)
@given(st.binary(max_size=MAX_REQUEST_ID + 8))
def test_only_short_safe_ids_are_kept(raw: bytes):
    rid = request_id(raw)
    safe = re.fullmatch(rb"[A-Za-z0-9._:\-]{1,%d}" % MAX_REQUEST_ID, raw) is not None
    assert (rid == raw.decode("latin-1")) == safe
    assert re.fullmatch(r"[A-Za-z0-9._:\-]{1,128}", rid)


def test_the_access_log_holds_no_customer_id_nor_any_body_field(tmp_path):
    app, lines = _app(_settings(tmp_path))
    client = TestClient(app)
    customer = "C0000013-secret"
    body = {"customer_id": customer, "session_id": "S777", "session_items": ["I4242"], "k": 3}
    assert client.post("/echo", json=body).json() == {"k": 3}
    refused = client.post("/echo?customer=" + customer, json={**body, "k": 0})
    assert refused.status_code == 422
    text = lines.getvalue()
    for secret in (customer, "S777", "I4242", "customer"):
        assert secret not in text
    assert [r["path"] for r in _logged(lines)] == ["/echo", "/echo"]  # the query is not logged


def test_text_format_and_access_log_off(tmp_path):
    app, lines = _app(_settings(tmp_path, log_format="text"))
    client = TestClient(app)
    rid = client.get("/health/live").headers[REQUEST_ID_HEADER]
    line = lines.getvalue().strip()
    assert line.endswith(f"GET /health/live 200 {line.split()[-2]} [{rid}]")
    assert " INFO serving.access " in line

    app, lines = _app(_settings(tmp_path, access_log=False))
    client = TestClient(app)
    assert client.get("/health/live").status_code == 200
    assert lines.getvalue() == ""


def test_cors_preflight_for_configured_origins_only(tmp_path):
    app, _ = _app(_settings(tmp_path, cors_origins=f"{ORIGIN}/, https://other.example"))
    client = TestClient(app)
    preflight = {
        "Origin": ORIGIN,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": f"{API_KEY_HEADER}, Content-Type",
    }
    allowed = client.options("/recommendations", headers=preflight)
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in allowed.headers["access-control-allow-methods"]
    assert API_KEY_HEADER.lower() in allowed.headers["access-control-allow-headers"].lower()
    assert UUID_HEX.match(allowed.headers[REQUEST_ID_HEADER])
    refused = client.options("/recommendations", headers={**preflight, "Origin": "https://evil"})
    assert refused.status_code == 400
    assert "access-control-allow-origin" not in refused.headers
    # A simple request from the shop: the browser may read the request id.
    answer = client.get("/health/live", headers={"Origin": ORIGIN})
    assert answer.headers["access-control-allow-origin"] == ORIGIN
    assert REQUEST_ID_HEADER.lower() in answer.headers["access-control-expose-headers"].lower()


def test_no_cors_headers_by_default(tmp_path):
    app, _ = _app(_settings(tmp_path))
    client = TestClient(app)
    preflight = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
    answer = client.options("/recommendations", headers=preflight)
    assert answer.status_code == 405  # no CORS: OPTIONS is just a method the route lacks
    assert "access-control-allow-origin" not in answer.headers
    assert (
        client.get("/health/live", headers={"Origin": ORIGIN}).headers.get(
            "access-control-allow-origin"
        )
        is None
    )


@pytest.mark.parametrize("value", ["https://a.example, https://b.example/", ["https://a.example"]])
def test_cors_origins_setting_takes_a_comma_separated_list(value):
    parsed = Settings.model_validate({"cors_origins": value}).cors_origins
    assert parsed[0] == "https://a.example" and all(not o.endswith("/") for o in parsed)
