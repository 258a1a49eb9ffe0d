"""The replica's HTTP app: ``/health``, ``/v1/models`` and the OpenAI inference routes."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from enclave.serving import protocol as p
from enclave.serving.errors import APIError, error_body, install_handlers, log
from enclave.serving.runtimes import (
    CHAT,
    COMPLETIONS,
    EMBEDDINGS,
    Generation,
    InputError,
    ProxyRuntime,
    Runtime,
)
from enclave.serving.streaming import ClientGone, EmbedBatcher, GenerationStream, Worker

ROUTES = {EMBEDDINGS: "/v1/embeddings", COMPLETIONS: "/v1/completions", CHAT: "/v1/chat/completions"}
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@dataclass
class Stats:
    in_flight: int = 0  # inference requests being handled, streams until their last byte
    served: int = 0  # inference requests finished, whatever their outcome


class CountRequests:
    """ASGI middleware keeping ``Stats`` for the platform's health checks and autoscaling."""

    def __init__(self, app: ASGIApp, stats: Stats) -> None:
        self.app = app
        self.stats = stats

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        self.stats.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.stats.in_flight -= 1
            self.stats.served += 1


def create_app(runtime: Runtime, name: str = "model") -> FastAPI:
    app = FastAPI(title="Enclave replica", docs_url=None, redoc_url=None, openapi_url=None)
    install_handlers(app)
    app.add_exception_handler(ClientGone, _client_gone)
    stats = Stats()
    app.add_middleware(CountRequests, stats=stats)
    worker = Worker()
    batcher = EmbedBatcher(runtime, worker)
    created = int(time.time())
    proxy = runtime if isinstance(runtime, ProxyRuntime) else None

    def require(capability: str) -> None:
        if capability not in runtime.capabilities:
            served = ", ".join(
                ROUTES[c] for c in (EMBEDDINGS, COMPLETIONS, CHAT) if c in runtime.capabilities
            )
            raise APIError(
                404,
                f"{ROUTES[capability]} is not served by this endpoint: its runtime {runtime.name!r} serves {served}",
                code="unsupported_route",
            )

    @app.get("/health")
    async def health() -> JSONResponse:
        return JSONResponse(
            {"status": "ok", "runtime": runtime.name, "in_flight": stats.in_flight, "served": stats.served}
        )

    @app.get("/v1/models")
    async def models() -> JSONResponse:
        item = {"id": name, "object": "model", "created": created, "owned_by": "enclave"}
        return JSONResponse({"object": "list", "data": [item]})

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> Response:
        body = await _body(request)
        require(EMBEDDINGS)
        if proxy:
            return await proxy.forward("embeddings", body)
        req = p.parse(p.EmbeddingsRequest, body)
        texts = p.embedding_inputs(req)
        runtime.check_embeddings(req.dimensions)
        vectors, tokens = await batcher.embed(texts)
        return JSONResponse(p.embeddings_response(vectors, req.model or name, req.encoding_format, tokens))

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        body = await _body(request)
        require(COMPLETIONS)
        if proxy:
            return await proxy.forward("completions", body)
        req = p.parse(p.CompletionRequest, body)
        prompts = p.prompts(req)
        temperature, stops = p.sampling(req)
        model = req.model or name

        def make(prompt: str) -> Callable[[], Generation]:
            return lambda: runtime.complete(prompt, req.max_tokens, temperature, stops, req.seed)

        if req.stream:
            first = GenerationStream(worker, make(prompts[0]))
            await _open(first)
            return _sse(
                _completion_events(runtime, model, prompts, first, make, worker, p.include_usage(req))
            )
        results: list[tuple[str, str]] = []
        extra: dict[str, Any] = {}
        completion_tokens = 0
        for prompt in prompts:
            stream = GenerationStream(worker, make(prompt))
            text = await _run(stream, request)
            results.append((text, stream.finish.reason))
            completion_tokens += runtime.count_tokens(text)
            p.merge_extra(extra, stream.finish.extra)
        usage = p.usage(sum(runtime.count_tokens(x) for x in prompts), completion_tokens)
        return JSONResponse(p.completion_response(model, results, usage, extra))

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        body = await _body(request)
        require(CHAT)
        if proxy:
            return await proxy.forward("chat/completions", body)
        req = p.parse(p.ChatRequest, body)
        prompt = p.chat_prompt(req)
        temperature, stops = p.sampling(req)
        model = req.model or name
        max_tokens = req.max_completion_tokens or req.max_tokens
        stream = GenerationStream(
            worker, lambda: runtime.complete(prompt, max_tokens, temperature, stops, req.seed)
        )
        if req.stream:
            await _open(stream)
            return _sse(_chat_events(runtime, model, prompt, stream, p.include_usage(req)))
        text = await _run(stream, request)
        usage = p.usage(runtime.count_tokens(prompt), runtime.count_tokens(text))
        return JSONResponse(
            p.chat_response(model, text, stream.finish.reason, usage, stream.finish.extra or {})
        )

    return app


async def _body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except ValueError:
        raise APIError(400, "the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object")
    return body


async def _open(stream: GenerationStream) -> None:
    try:
        await stream.open()
    except BaseException:
        stream.cancel()
        raise


async def _run(stream: GenerationStream, request: Request) -> str:
    """A whole generation, stopped early if the client goes away meanwhile (the server would not)."""
    watcher = asyncio.ensure_future(_watch_disconnect(request, stream))
    try:
        await stream.open()
        return await stream.collect()
    finally:
        watcher.cancel()
        stream.cancel()


async def _watch_disconnect(request: Request, stream: GenerationStream) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass
    stream.abort()


async def _client_gone(_: Request, __: Exception) -> Response:
    return Response(status_code=499)  # nobody reads it: the client has left


def _sse(events: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)


def _error_event(exc: Exception) -> bytes:
    """A failure after the stream started: OpenAI's in-band error event (the status is already 200)."""
    if isinstance(exc, APIError | InputError):
        return p.sse(error_body(exc.message, param=exc.param, code=exc.code))
    log.error("generation failed", exc_info=exc)
    return p.sse(error_body(f"internal error ({type(exc).__name__})", "server_error"))


async def _completion_events(
    runtime: Runtime,
    model: str,
    prompts: list[str],
    first: GenerationStream,
    make: Callable[[str], Callable[[], Generation]],
    worker: Worker,
    with_usage: bool,
) -> AsyncIterator[bytes]:
    head = {"id": p.new_id("cmpl"), "object": "text_completion", "created": p.now(), "model": model}

    def chunk(index: int, text: str, reason: str | None) -> dict[str, Any]:
        return {
            **head,
            "choices": [{"index": index, "text": text, "logprobs": None, "finish_reason": reason}],
        }

    stream, completion_tokens = first, 0
    try:
        for index, prompt in enumerate(prompts):
            if index:
                stream = GenerationStream(worker, make(prompt))
                await stream.open()
            async for piece in stream.pieces():
                yield p.sse(chunk(index, piece, None))
            last = chunk(index, "", stream.finish.reason)
            p.merge_extra(last, stream.finish.extra)
            yield p.sse(last)
            completion_tokens += runtime.count_tokens(stream.text)
        if with_usage:
            usage = p.usage(sum(runtime.count_tokens(x) for x in prompts), completion_tokens)
            yield p.sse({**head, "choices": [], "usage": usage})
        yield p.DONE
    except Exception as exc:
        yield _error_event(exc)
    finally:
        stream.cancel()


async def _chat_events(
    runtime: Runtime, model: str, prompt: str, stream: GenerationStream, with_usage: bool
) -> AsyncIterator[bytes]:
    head = {"id": p.new_id("chatcmpl"), "object": "chat.completion.chunk", "created": p.now(), "model": model}

    def chunk(delta: dict[str, str], reason: str | None) -> dict[str, Any]:
        return {**head, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}]}

    try:
        yield p.sse(chunk({"role": "assistant", "content": ""}, None))
        async for piece in stream.pieces():
            yield p.sse(chunk({"content": piece}, None))
        last = chunk({}, stream.finish.reason)
        p.merge_extra(last, stream.finish.extra)
        yield p.sse(last)
        if with_usage:
            usage = p.usage(runtime.count_tokens(prompt), runtime.count_tokens(stream.text))
            yield p.sse({**head, "choices": [], "usage": usage})
        yield p.DONE
    except Exception as exc:
        yield _error_event(exc)
    finally:
        stream.cancel()
