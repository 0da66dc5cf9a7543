"""API keys, rate limits, the body cap and the 422 answer, on a small app built from the real
parts of :mod:`serving.security` (the full app is tested in tests/integration)."""

from __future__ import annotations

import json

import pytest
from fastapi import Depends, FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.config import Settings
from serving.security import (
    API_KEY_HEADER,
    INPUT_PREFIX,
    BodyLimit,
    Guard,
    check_configuration,
    hash_key,
    main,
    require_key,
    validation_error_handler,
)

KEYS = ["old-key-0123456789", "new-key-9876543210"]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    k: int = Field(default=10, ge=1, le=100)
    items: list[str] = Field(default_factory=list, max_length=5)
    name: str | None = None


def small_app(settings: Settings) -> FastAPI:
    app = FastAPI()
    app.state.guard = Guard(settings)
    app.add_middleware(BodyLimit, max_bytes=settings.api_max_body_bytes)
    app.add_exception_handler(RequestValidationError, validation_error_handler)

    @app.post("/echo", dependencies=[Depends(require_key)])
    async def echo(body: Body) -> dict:
        return body.model_dump()

    return app


def keyed(settings: Settings, **extra: object) -> Settings:
    return settings.model_copy(
        update={"api_key_hashes": [hash_key(k) for k in KEYS], "api_rate_limit": "10000/second"}
        | extra
    )


def test_hash_key_cli_prints_the_digest(monkeypatch, capsys):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("s3cret\n"))
    assert main(["hash-key"]) == 0
    assert capsys.readouterr().out.strip() == hash_key("s3cret")
    assert len(hash_key("s3cret")) == 64


def test_settings_take_comma_separated_digests_and_refuse_others(settings):
    digests = ",".join(hash_key(k) for k in KEYS)
    parsed = Settings.model_validate({"api_key_hashes": digests})
    assert parsed.api_key_hashes == [hash_key(k) for k in KEYS]
    with pytest.raises(ValidationError):
        Settings.model_validate({"api_key_hashes": "not-a-digest"})
    with pytest.raises(ValidationError):
        Settings.model_validate({"api_rate_limit": "lots"})


def test_production_without_keys_refuses_to_start(settings):
    with pytest.raises(RuntimeError, match="FITREC_API_KEY_HASHES"):
        check_configuration(settings.model_copy(update={"profile": "production"}))
    check_configuration(settings)  # embedded: open, with a warning
    check_configuration(keyed(settings, profile="production"))


@hsettings(max_examples=60, derandomize=True, deadline=None)
@given(key=st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=80))
def test_only_configured_keys_pass_and_both_rotation_keys_do(tmp_path_factory, key):
    settings = keyed(Settings(data_dir=tmp_path_factory.mktemp("sec")))
    with TestClient(small_app(settings)) as client:
        answer = client.post("/echo", json={}, headers={API_KEY_HEADER: key})
        assert answer.status_code == (200 if key in KEYS else 401)
        for good in KEYS:
            assert client.post("/echo", json={}, headers={API_KEY_HEADER: good}).status_code == 200
        assert client.post("/echo", json={}).status_code == 401


def test_rate_limit_is_per_key_with_retry_after(settings):
    settings = keyed(settings, api_rate_limit="3/hour")
    with TestClient(small_app(settings)) as client:
        first = [
            client.post("/echo", json={}, headers={API_KEY_HEADER: KEYS[0]}).status_code
            for _ in range(4)
        ]
        assert first == [200, 200, 200, 429]
        limited = client.post("/echo", json={}, headers={API_KEY_HEADER: KEYS[0]})
        assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
        # The other key has its own budget.
        assert client.post("/echo", json={}, headers={API_KEY_HEADER: KEYS[1]}).status_code == 200


@hsettings(max_examples=40, derandomize=True, deadline=None)
@given(size=st.integers(0, 3 * 4096), chunked=st.booleans())
def test_bodies_over_the_cap_are_413_before_parsing(tmp_path_factory, size, chunked):
    settings = Settings(data_dir=tmp_path_factory.mktemp("sec"), api_max_body_bytes=4096)
    name = "x" * size
    payload = json.dumps({"name": name}).encode()
    with TestClient(small_app(settings)) as client:
        if chunked:
            answer = client.post(
                "/echo",
                content=(payload[i : i + 1000] for i in range(0, len(payload), 1000)),
                headers={"content-type": "application/json"},
            )
        else:
            answer = client.post(
                "/echo", content=payload, headers={"content-type": "application/json"}
            )
    if len(payload) > 4096:
        assert answer.status_code == 413
        assert len(answer.content) < 200  # never the body back
    else:
        assert answer.status_code == 200 and answer.json()["name"] == name


hostile = st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "-1e400"])


@hsettings(max_examples=60, derandomize=True, deadline=None)
@given(
    value=hostile,
    field=st.sampled_from(["k", "items", "name", "extra"]),
    in_list=st.booleans(),
)
def test_non_finite_numbers_are_a_422_naming_the_field(tmp_path_factory, value, field, in_list):
    settings = Settings(data_dir=tmp_path_factory.mktemp("sec"))
    raw = f"[{value}]" if in_list else value
    body = '{"%s": %s}' % (field, raw)  # noqa: UP031 - JSON with a bare NaN by hand
    with TestClient(small_app(settings)) as client:
        answer = client.post("/echo", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 422, answer.text
    errors = answer.json()["detail"]
    assert errors and all(e["loc"][:2] == ["body", field] for e in errors), errors
    for error in errors:
        assert set(error) == {"loc", "msg", "type", "input"}
        assert error["input"] is None or len(error["input"]) <= INPUT_PREFIX + 3


@hsettings(max_examples=30, derandomize=True, deadline=None)
@given(text=st.text(min_size=0, max_size=3000))
def test_a_422_echoes_at_most_a_short_prefix(tmp_path_factory, text):
    settings = Settings(data_dir=tmp_path_factory.mktemp("sec"))
    with TestClient(small_app(settings)) as client:
        answer = client.post("/echo", json={"k": text, "items": [text] * 6})
    assert answer.status_code == 422
    errors = answer.json()["detail"]
    assert {tuple(e["loc"][:2]) for e in errors} >= {("body", "items")}
    for error in errors:
        shown = error["input"] or ""
        assert len(shown) <= INPUT_PREFIX + 3
        if error["loc"] == ["body", "k"]:  # a string's prefix, exactly
            cut = text if len(text) <= INPUT_PREFIX else text[:INPUT_PREFIX] + "..."
            assert shown == cut
    assert len(answer.content) <= 1500  # whatever the body's size
