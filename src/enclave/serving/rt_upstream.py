"""``openai-upstream``: forward every OpenAI route to an existing OpenAI-compatible server.

The request body goes upstream unchanged except ``model``, which becomes
``model.json["upstream_model"]`` when set (and the request's name is put back into the answer,
streamed chunks included, so callers see the name they used). Streams pass through event by
event as they arrive. Upstream 4xx answers pass through as they are; anything else that goes
wrong upstream (unreachable, 5xx, a broken answer) is a 502 with a clear message.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from typing import Any

import httpx
from starlette.responses import JSONResponse, Response, StreamingResponse

from enclave.serving.errors import error_body
from enclave.serving.runtimes import (
    CHAT,
    COMPLETIONS,
    EMBEDDINGS,
    ModelError,
    Options,
    ProxyRuntime,
    read_model_json,
)

API_KEY_ENV = "ENCLAVE_UPSTREAM_API_KEY"
TIMEOUT = httpx.Timeout(300.0, connect=10.0)  # generations can be long; a dead host is not
LIMITS = httpx.Limits(max_connections=256, max_keepalive_connections=64, keepalive_expiry=30.0)
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class Upstream(ProxyRuntime):
    name = "openai-upstream"
    capabilities = frozenset({EMBEDDINGS, COMPLETIONS, CHAT})

    def __init__(self, base_url: str, model: str | None, api_key: str | None) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.AsyncClient(
            base_url=self.base_url, headers=headers, timeout=TIMEOUT, limits=LIMITS
        )

    @classmethod
    def load(cls, options: Options) -> Upstream:
        meta = read_model_json(options.model_dir, cls.name, required=False) if options.model_dir else {}
        url = options.upstream or meta.get("upstream_url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ModelError(
                "openai-upstream needs an http(s) base URL: --upstream or model.json 'upstream_url'"
            )
        model = meta.get("upstream_model")
        if model is not None and not isinstance(model, str):
            raise ModelError("model.json 'upstream_model' must be a string")
        return cls(url, model, os.environ.get(API_KEY_ENV) or None)

    async def aclose(self) -> None:
        await self.client.aclose()

    async def forward(self, route: str, body: dict[str, Any]) -> Response:
        requested = body.get("model")
        if self.model:
            body = {**body, "model": self.model}
        rename = requested if self.model and isinstance(requested, str) else None
        request = self.client.build_request("POST", f"/{route}", json=body)
        try:
            upstream = await self.client.send(request, stream=True)
        except httpx.HTTPError as exc:
            return _bad_gateway(f"upstream {self.base_url} is unreachable: {_describe(exc)}")
        if upstream.status_code >= 400 or "text/event-stream" not in upstream.headers.get("content-type", ""):
            try:
                content = await upstream.aread()
            except httpx.HTTPError as exc:
                return _bad_gateway(f"upstream {self.base_url} broke off its answer: {_describe(exc)}")
            finally:
                await upstream.aclose()
            return _plain(upstream, content, rename)
        return StreamingResponse(
            _relay(upstream, rename), media_type="text/event-stream", headers=SSE_HEADERS
        )


def _plain(upstream: httpx.Response, content: bytes, rename: str | None) -> Response:
    """A non-streamed upstream answer: 4xx as is, 5xx as 502, success with the caller's model name."""
    status = upstream.status_code
    if 400 <= status < 500:
        return Response(content, status, media_type=upstream.headers.get("content-type", "application/json"))
    if status >= 500:
        return _bad_gateway(f"upstream server error {status}: {_upstream_message(content)}")
    try:
        data = json.loads(content)
    except ValueError:
        return _bad_gateway(f"upstream answered {status} with a body that is not JSON")
    if rename is not None and isinstance(data, dict) and "model" in data:
        data["model"] = rename
    return JSONResponse(data, status)


async def _relay(upstream: httpx.Response, rename: str | None) -> AsyncIterator[bytes]:
    """Upstream SSE events as they arrive, each re-emitted whole (renamed when needed)."""
    buf = b""
    try:
        async for data in upstream.aiter_bytes():
            buf = (buf + data).replace(b"\r\n", b"\n")
            while (end := buf.find(b"\n\n")) >= 0:
                event, buf = buf[: end + 2], buf[end + 2 :]
                yield _rename_event(event, rename) if rename else event
        if buf.strip():
            yield buf + b"\n\n"
    except httpx.HTTPError as exc:
        error = error_body(
            f"upstream stream broke off: {_describe(exc)}", "upstream_error", code="bad_gateway"
        )
        yield f"data: {json.dumps(error)}\n\n".encode()
    finally:
        await upstream.aclose()


def _rename_event(event: bytes, model: str) -> bytes:
    lines = event.split(b"\n")
    for i, line in enumerate(lines):
        if line.startswith(b"data:") and line[5:].strip().startswith(b"{"):
            try:
                chunk = json.loads(line[5:])
            except ValueError:
                continue
            if isinstance(chunk, dict) and "model" in chunk:
                chunk["model"] = model
                lines[i] = b"data: " + json.dumps(chunk, separators=(",", ":")).encode()
    return b"\n".join(lines)


def _upstream_message(content: bytes) -> str:
    try:
        data = json.loads(content)
        message = data["error"]["message"] if isinstance(data.get("error"), dict) else data.get("detail")
        if message:
            return str(message)[:500]
    except (ValueError, AttributeError, KeyError, TypeError):
        pass
    return content.decode("utf-8", "replace")[:500] or "(empty body)"


def _describe(exc: httpx.HTTPError) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _bad_gateway(message: str) -> JSONResponse:
    return JSONResponse(error_body(message, "upstream_error", code="bad_gateway"), 502)
