"""The one place where errors become HTTP responses (RFC 9457 problem+json)."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from enclave.errors import EnclaveError, NotAuthenticated, RateLimited

PROBLEM_JSON = "application/problem+json"
log = logging.getLogger("enclave.api")


OPENAI_PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models")


def problem(status: int, title: str, detail: str, instance: str, **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": instance,
        **extra,
    }
    if instance.startswith(OPENAI_PATHS):
        # OpenAI clients read ``error.message``: say the same thing in their shape too.
        body["error"] = {"message": detail, "type": title.lower().replace(" ", "_"), "code": status}
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON)


# -- the OpenAPI description of these answers ------------------------------------------------
# Every operation may answer each of these with a problem (a client error of the request, or
# an error of a dependency); all are declared, as application/problem+json, on every route.
PROBLEM_STATUSES: dict[int, str] = {
    400: "Bad request: a body that cannot be read (malformed or too deeply nested JSON)",
    401: "Not authenticated: no valid bearer token or worker credential",
    403: "Forbidden: visible to the session, but not allowed",
    404: "Not found: absent, or invisible to the session (the two are not told apart)",
    409: "Conflict with the object's current state",
    413: "A body or upload over its size limit, or a quota exceeded",
    422: "Invalid input",
    429: "Too many requests: wait for Retry-After seconds",
    500: "Internal error: nothing was changed by the request",
    503: "Unavailable: a dependency is down",
}
PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "An RFC 9457 problem details object.",
    "type": "object",
    "required": ["type", "title", "status", "detail", "instance"],
    "properties": {
        "type": {
            "type": "string",
            "description": "A URI reference naming the problem type.",
            "default": "about:blank",
        },
        "title": {"type": "string", "description": "A short summary of the problem type."},
        "status": {"type": "integer", "minimum": 400, "maximum": 599, "description": "The HTTP status code."},
        "detail": {"type": "string", "description": "What went wrong with this request."},
        "instance": {"type": "string", "description": "The path of the request."},
        "errors": {
            "type": "array",
            "description": "Invalid input: each field refused, and why.",
            "items": {
                "type": "object",
                "properties": {
                    "loc": {"type": "array", "items": {"type": "string"}},
                    "msg": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
        "error": {
            "type": "object",
            "description": "The same problem in OpenAI's shape (on the OpenAI-compatible paths).",
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "code": {"type": "integer"},
            },
        },
    },
    "additionalProperties": True,
}
_REF = {"$ref": "#/components/schemas/Problem"}
_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}},
    429: {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}},
}
_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})


def document(schema: dict[str, Any]) -> dict[str, Any]:
    """Declare every operation's error answers as ``application/problem+json`` with the
    Problem schema, replacing FastAPI's default 422 (``application/json``), which the app
    never sends; FastAPI's validation-error schemas go with it."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["Problem"] = PROBLEM_SCHEMA
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    for item in schema.get("paths", {}).values():
        for method, operation in item.items():
            if method not in _METHODS:
                continue
            responses = operation.setdefault("responses", {})
            for status, description in PROBLEM_STATUSES.items():
                answer: dict[str, Any] = {
                    "description": description,
                    "content": {PROBLEM_JSON: {"schema": _REF}},
                }
                if status in _HEADERS:
                    answer["headers"] = _HEADERS[status]
                responses[str(status)] = answer
    return schema


def install(app: FastAPI) -> None:
    @app.exception_handler(EnclaveError)
    async def _domain(request: Request, exc: EnclaveError) -> JSONResponse:
        response = problem(exc.status, exc.title, exc.detail, request.url.path)
        if isinstance(exc, RateLimited):
            response.headers["Retry-After"] = str(exc.retry_after_s)
        if isinstance(exc, NotAuthenticated):
            response.headers["WWW-Authenticate"] = "Bearer"
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "loc": [str(p) for p in e.get("loc", ())],
                "msg": str(e.get("msg", "")),
                "type": str(e.get("type", "")),
            }
            for e in exc.errors()
        ]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        where = ".".join(first["loc"][1:] if len(first["loc"]) > 1 else first["loc"]) or "body"
        return problem(422, "Invalid input", f"{where}: {first['msg']}", request.url.path, errors=errors)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        response = problem(exc.status_code, _reason(exc.status_code), str(exc.detail), request.url.path)
        for key, value in (exc.headers or {}).items():
            response.headers[key] = value
        return response

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return problem(
            500, "Internal error", "the server failed; nothing was changed by this request", request.url.path
        )


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
