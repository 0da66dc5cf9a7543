"""The HTTP contract (``/openapi.json``) is described: every field, operation and answer, with
examples that hold against their own schemas (issue 14, item 7).

The app is built without starting it (no model needed to generate its spec)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
from jsonschema import Draft202012Validator, FormatChecker
from pydantic import BaseModel

from serving.api.events import EventResponse
from serving.api.probes import Health, Liveness, Readiness
from serving.app import create_app
from serving.events import SessionEventRequest
from serving.middleware import REQUEST_ID_HEADER
from serving.recommender import Recommendation, RecommendationRequest, ScoredItem
from serving.security import FieldError, Problem, ValidationProblem

MODELS: dict[str, type[BaseModel]] = {
    m.__name__: m
    for m in (
        RecommendationRequest,
        Recommendation,
        ScoredItem,
        SessionEventRequest,
        EventResponse,
        Health,
        Liveness,
        Readiness,
        Problem,
        FieldError,
        ValidationProblem,
    )
}
METHODS = {"get", "post", "put", "patch", "delete"}


def _examples(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], Any]]:
    """(where, schema, example) for every example in the spec: schemas' and properties'
    ``examples``, media types' and parameters' ``example``."""
    for name, schema in doc["components"]["schemas"].items():
        for example in schema.get("examples", []):
            yield f"schema {name}", schema, example
        for prop, sub in schema.get("properties", {}).items():
            for example in sub.get("examples", []):
                yield f"schema {name}.{prop}", sub, example
    for path, item in doc["paths"].items():
        for method, op in item.items():
            for param in op.get("parameters", []):
                if "example" in param:
                    yield f"{method} {path} {param['name']}", param["schema"], param["example"]
            for status, response in op["responses"].items():
                for media, content in response.get("content", {}).items():
                    if "example" in content:
                        where = f"{method} {path} {status} {media}"
                        yield where, content["schema"], content["example"]


def contract_problems(doc: dict[str, Any]) -> list[str]:
    """Everything undescribed or wrong in an OpenAPI document, one line each."""
    problems = []
    for name, schema in doc["components"]["schemas"].items():
        if not schema.get("description"):
            problems.append(f"schema {name}: no description")
        if not schema.get("examples"):
            problems.append(f"schema {name}: no examples")
        for prop, sub in schema.get("properties", {}).items():
            if not sub.get("description"):
                problems.append(f"schema {name}.{prop}: no description")
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method not in METHODS:
                continue
            where = f"{method.upper()} {path}"
            for key in ("summary", "description", "tags"):
                if not op.get(key):
                    problems.append(f"{where}: no {key}")
            for param in op.get("parameters", []):
                if not param.get("description"):
                    problems.append(f"{where} parameter {param['name']}: no description")
            for status, response in op["responses"].items():
                if response.get("description", "Successful Response") == "Successful Response":
                    problems.append(f"{where} {status}: no description")
                if REQUEST_ID_HEADER not in response.get("headers", {}):
                    problems.append(f"{where} {status}: no {REQUEST_ID_HEADER} header")
    # Refs resolve against the document: the components ride along at the schema's root.
    for where, schema, example in _examples(doc):
        validator = Draft202012Validator(
            {**schema, "components": doc["components"]}, format_checker=FormatChecker()
        )
        for error in validator.iter_errors(example):
            problems.append(f"{where}: example {example!r} does not hold: {error.message}")
    return problems


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from pipeline.config import Settings

    settings = Settings(data_dir=tmp_path_factory.mktemp("openapi"))
    return create_app(settings, watch=False).openapi()


@pytest.fixture(scope="module")
def protected_spec(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from pipeline.config import Settings
    from serving.security import hash_key

    settings = Settings(
        data_dir=tmp_path_factory.mktemp("openapi-protected"),
        api_key_hashes=[hash_key("k")],
        api_protect_probes=True,
    )
    return create_app(settings, watch=False).openapi()


def test_every_field_operation_and_answer_is_described(spec, protected_spec):
    assert contract_problems(spec) == []
    assert contract_problems(protected_spec) == []


def test_the_walk_finds_what_is_missing(spec):
    """The checker itself: a removed description, summary or header, and a wrong example."""
    broken = copy.deepcopy(spec)
    del broken["components"]["schemas"]["ScoredItem"]["properties"]["score"]["description"]
    del broken["paths"]["/events"]["post"]["summary"]
    del broken["paths"]["/health"]["get"]["responses"]["200"]["headers"][REQUEST_ID_HEADER]
    broken["components"]["schemas"]["RecommendationRequest"]["examples"] = [{"k": 0}]
    broken["components"]["schemas"]["SessionEventRequest"]["examples"] = [
        {"session_id": "s", "item_id": "i", "event_type": "view", "ts": "yesterday"}
    ]
    problems = contract_problems(broken)
    assert "schema ScoredItem.score: no description" in problems
    assert "POST /events: no summary" in problems
    assert f"GET /health 200: no {REQUEST_ID_HEADER} header" in problems
    assert any(p.startswith("schema RecommendationRequest: example") for p in problems)
    assert any(p.startswith("schema SessionEventRequest: example") for p in problems)
    assert len(problems) == 5, problems


def test_every_model_example_is_accepted_by_its_pydantic_model(spec):
    """The examples hold against the models themselves, too (patterns, bounds, validators
    JSON Schema cannot state)."""
    schemas = spec["components"]["schemas"]
    assert set(schemas) == set(MODELS)
    for name, model in MODELS.items():
        for example in schemas[name]["examples"]:
            model.model_validate(example)


def test_error_answers_tags_and_probes_are_documented(spec, protected_spec):
    for path in ("/recommendations", "/events"):
        op = spec["paths"][path]["post"]
        assert {"200", "401", "413", "422", "429"} <= set(op["responses"]), path
        assert "Retry-After" in op["responses"]["429"]["headers"]
        assert op["responses"]["422"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ValidationProblem"
        }
    ready = spec["paths"]["/health/ready"]["get"]["responses"]
    assert ready["503"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Readiness"
    }
    metrics = spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(metrics) == ["text/plain"]
    assert {t["name"] for t in spec["tags"]} == {"recommendations", "events", "probes"}
    for path in ("/health", "/health/live", "/health/ready", "/metrics"):
        assert "401" not in spec["paths"][path]["get"]["responses"]  # open probes
        assert {"401", "429"} <= set(protected_spec["paths"][path]["get"]["responses"])
