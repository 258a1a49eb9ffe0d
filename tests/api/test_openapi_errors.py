"""The OpenAPI document declares every error answer the API gives: application/problem+json
with an RFC 9457 Problem schema, on every route (issue 12, item 11).

Three ways: a walk of /openapi.json; real error answers of many routes, checked against what
their operation declares; and schemathesis, generating requests from the live schema for a
few routes and checking each answer's status, content type and body against it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import content_type_conformance, response_schema_conformance, status_code_conformance

from enclave.api.app import create_app
from enclave.api.problems import PROBLEM_JSON, PROBLEM_STATUSES
from enclave.services.context import Context

from .helpers import bearer, create_agency, create_user, missing_id, token_header

METHODS = {"get", "put", "post", "delete", "patch"}
RFC_9457 = {"type", "title", "status", "detail", "instance"}


@pytest.fixture
def live(sqlite_ctx: Context) -> Iterator[tuple[TestClient, dict[str, Any]]]:
    app = create_app(ctx=sqlite_ctx, run_jobs=False)
    with TestClient(app) as client:
        client.headers["Authorization"] = (
            f"Bearer {(sqlite_ctx.settings.home / 'admin.token').read_text().strip()}"
        )
        yield client, client.get("/openapi.json").json()


def operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield path, method, operation


def test_every_operation_declares_its_errors_as_problems(live: tuple[TestClient, dict[str, Any]]) -> None:
    _client, doc = live
    problem = doc["components"]["schemas"]["Problem"]
    assert set(problem["required"]) == RFC_9457 and set(problem["properties"]) >= RFC_9457
    assert {"errors", "error"} <= set(problem["properties"])  # the extras the app sends
    assert "HTTPValidationError" not in doc["components"]["schemas"]  # never sent
    seen = 0
    for path, method, operation in operations(doc):
        seen += 1
        for status in PROBLEM_STATUSES:
            answer = operation["responses"].get(str(status))
            assert answer is not None, (method, path, status)
            assert answer["content"] == {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
        for status, answer in operation["responses"].items():
            if status[0] in "45":
                assert set(answer["content"]) == {PROBLEM_JSON}, (method, path, status)
        assert "Retry-After" in operation["responses"]["429"]["headers"]
        assert "WWW-Authenticate" in operation["responses"]["401"]["headers"]
    # The plain Starlette routes (the OpenAI-compatible gateway) are walked too.
    assert seen > 50 and "/v1/chat/completions" in doc["paths"]


def _resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref", "")
    return doc["components"]["schemas"][ref.rsplit("/", 1)[-1]] if ref else schema


def test_real_error_answers_are_the_declared_problems(live: tuple[TestClient, dict[str, Any]]) -> None:
    """Each answer: its status declared for its operation, its content type the declared
    one, its body valid against the declared schema."""
    client, doc = live
    create_agency(client, "alpha")
    create_user(client, "alice", "alpha", "SECRET")
    alice = token_header(client, "alice", "SECRET")
    asked: list[tuple[str, str, int, Any]] = [
        ("/v1/whoami", "get", 401, client.get("/v1/whoami", headers=bearer("enc_forged"))),
        ("/v1/agencies", "get", 403, client.get("/v1/agencies", headers=alice)),
        ("/v1/users/{name}", "get", 404, client.get("/v1/users/nobody")),
        ("/v1/agencies", "post", 409, client.post("/v1/agencies", json={"name": "alpha"})),
        ("/v1/agencies", "post", 422, client.post("/v1/agencies", json={"name": "Bad Name"})),
        ("/v1/users/{name}/clearance", "post", 422, client.post("/v1/users/alice/clearance", json={})),
        (
            "/v1/clearance-requests/{request_id}/approve",
            "post",
            404,
            client.post(f"/v1/clearance-requests/{missing_id()}/approve"),
        ),
        (
            "/v1/artifacts/{artifact_id}",
            "get",
            404,
            client.get(f"/v1/artifacts/{missing_id()}", headers=alice),
        ),
        ("/v1/jobs", "post", 422, client.post("/v1/jobs", json={"command": []}, headers=alice)),
        (
            "/v1/chat/completions",
            "post",
            404,
            client.post("/v1/chat/completions", json={"model": "none", "messages": []}, headers=alice),
        ),
        (
            "/v1/workers/{region}/sync",
            "post",
            401,
            client.post("/v1/workers/ts-east/sync", json={}, headers=bearer("encw_forged")),
        ),
    ]
    for path, method, status, response in asked:
        assert response.status_code == status, (path, response.status_code, response.text)
        declared = doc["paths"][path][method]["responses"]
        assert str(status) in declared, (method, path, status)
        media = response.headers["content-type"].split(";")[0].strip()
        assert media in declared[str(status)]["content"], (method, path, media)
        schema = _resolve(doc, declared[str(status)]["content"][media]["schema"])
        jsonschema.validate(response.json(), schema)
        assert response.json()["status"] == status and response.json()["instance"] == response.url.path


# Routes schemathesis generates requests for: tenancy, clearance changes, tokens.
FUZZED = [
    ("/v1/users/{name}", "GET"),
    ("/v1/users/{name}", "PATCH"),
    ("/v1/users/{name}/clearance", "POST"),
    ("/v1/clearance-requests", "GET"),
    ("/v1/clearance-requests/{request_id}/approve", "POST"),
    ("/v1/agencies", "POST"),
    ("/v1/tokens", "POST"),
]


@pytest.mark.parametrize(("path", "method"), FUZZED)
def test_schemathesis_finds_every_answer_documented(
    live: tuple[TestClient, dict[str, Any]], path: str, method: str
) -> None:
    client, _doc = live
    create_agency(client, "alpha")
    create_user(client, "alice", "alpha", "SECRET")
    schema = schemathesis.openapi.from_asgi("/openapi.json", client.app)
    operation = schema[path][method]
    checks = [content_type_conformance, status_code_conformance, response_schema_conformance]
    headers = {"Authorization": client.headers["Authorization"]}

    @settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy())
    def call(case: Any) -> None:
        case.call_and_validate(headers=headers, checks=checks)

    call()
