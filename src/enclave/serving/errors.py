"""OpenAI-style errors: ``{"error": {"message", "type", "param", "code"}}``, never a stack trace.

The replica speaks the OpenAI protocol (not the control plane's problem+json) because its
callers are OpenAI clients, through the gateway.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse

from enclave.serving.runtimes import InputError

log = logging.getLogger("enclave.serving")


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code


def error_body(
    message: str, type: str = "invalid_request_error", param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_response(exc: APIError | InputError) -> JSONResponse:
    if isinstance(exc, InputError):
        exc = APIError(400, exc.message, param=exc.param, code=exc.code)
    return JSONResponse(error_body(exc.message, exc.type, exc.param, exc.code), exc.status)


def install_handlers(app: FastAPI) -> None:
    async def api_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, APIError | InputError)
        return error_response(exc)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        message, code = str(exc.detail), None
        if exc.status_code in (404, 405):
            code = "not_found" if exc.status_code == 404 else "method_not_allowed"
            message = f"{message}: {request.method} {request.url.path}"
        return JSONResponse(error_body(message, code=code), exc.status_code, headers=exc.headers)

    async def validation_error(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(error_body(f"invalid request: {exc}"), 400)

    async def internal_error(_: Request, exc: Exception) -> JSONResponse:
        log.error("request failed", exc_info=exc)
        return JSONResponse(error_body(f"internal error ({type(exc).__name__})", "server_error"), 500)

    app.add_exception_handler(APIError, api_error)
    app.add_exception_handler(InputError, api_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, internal_error)
