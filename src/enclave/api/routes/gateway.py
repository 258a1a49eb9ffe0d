"""The OpenAI-compatible gateway: ``/v1/models``, ``/v1/chat/completions``, ``/v1/completions``,
``/v1/embeddings`` — so the official ``openai`` client works with ``base_url=<server>/v1``.

This adapter moves bytes: every decision (policy, budget, rate, guardrails, metering, audit)
is made by :class:`enclave.services.gateway.Gateway`. A call goes to the least-loaded healthy
replica; if that replica fails before answering (killed, restarting) the call is retried on
another one, and if none can take it the client gets a clear 503 — never silence.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool

from enclave.api.deps import plain_text
from enclave.errors import InvalidInput, NotAuthenticated, Unavailable
from enclave.gateway import guardrails, metrics
from enclave.gateway.router import Replica
from enclave.gateway.upstream import Client, UpstreamError
from enclave.gateway.upstream import Response as Answer
from enclave.services import metrics as metrics_page
from enclave.services.gateway import Call, Gateway, Target
from enclave.services.unit import Actor


async def gateway_actor(request: Request) -> Actor:
    """The caller, from a short-lived cache of checked tokens (the store is asked at most once
    a second per token: the gateway's hot path)."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise NotAuthenticated("send 'Authorization: Bearer <token>'")
    gw: Gateway = request.app.state.gateway
    actor = gw.cached_actor(token)
    if actor is None:
        actor = await run_in_threadpool(gw.authenticate, token)
    return actor


ActorDep = Annotated[Actor, Depends(gateway_actor)]
router = APIRouter(tags=["gateway"])
metrics_router = APIRouter(tags=["gateway"])
ATTEMPTS = 3  # replicas tried for one call before giving up with 503
LABEL_HEADER = "X-Enclave-Label"


@router.get("/models")
async def list_models(request: Request, actor: ActorDep) -> dict[str, Any]:
    gw: Gateway = request.app.state.gateway
    return {"object": "list", "data": await run_in_threadpool(gw.models, actor)}


# The model calls are plain Starlette routes (``CALLS``), not FastAPI ones: they read their own
# body and authenticate in the handler (the same 401 before anything else is read), and
# FastAPI's per-route machinery (dependency solving, its exit stacks) was ~40 µs of a call's
# ~500 µs of CPU. Being outside FastAPI, they check what its app-wide dependency checks
# (``plain_text``) themselves, and ``OPENAPI_PATHS`` documents them in the schema.
async def chat_completions(request: Request) -> Response:
    return await _call(request, "chat/completions")


async def completions(request: Request) -> Response:
    return await _call(request, "completions")


async def embeddings(request: Request) -> Response:
    return await _call(request, "embeddings")


CALLS = {"/chat/completions": chat_completions, "/completions": completions, "/embeddings": embeddings}
for _path, _endpoint in CALLS.items():
    router.add_route(_path, _endpoint, methods=["POST"])

OPENAPI_PATHS: dict[str, Any] = {
    f"/v1{path}": {
        "post": {
            "tags": ["gateway"],
            "summary": f"OpenAI-compatible {path[1:]} (to an endpoint the session may call)",
            "operationId": f"gateway_{endpoint.__name__}",
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"type": "object"}}},
            },
            "responses": {
                "200": {
                    "description": "The replica's answer, labelled (X-Enclave-Label); a stream "
                    "of server-sent events when the request asks for one",
                    "content": {"application/json": {}, "text/event-stream": {}},
                },
                "default": {"description": "A problem", "content": {"application/problem+json": {}}},
            },
        }
    }
    for path, endpoint in CALLS.items()
}


@metrics_router.get("/metrics", include_in_schema=False)
def prometheus(request: Request, actor: ActorDep) -> Response:
    """The operator role's, with only the series at labels its session may read."""
    return Response(metrics_page.exposition(request.app.state.ctx, actor), media_type=CONTENT_TYPE_LATEST)


# -- one call ------------------------------------------------------------------------------------
def _loads(raw: bytes) -> Any:
    """orjson where it can (a replica's embeddings answer parses ~5x faster), the standard
    parser's verdict where it cannot (NaN, integers beyond 64 bits): what json accepted, and
    what it refused, stay so."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


def _texts(route: str, body: dict[str, Any]) -> list[str]:
    """The prompt texts a route carries, in order (what the guardrails read)."""
    if route == "chat/completions":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise InvalidInput("messages: a non-empty list is required")
        out: list[str] = []
        for m in messages:
            content = m.get("content") if isinstance(m, dict) else None
            if isinstance(content, list):  # content parts: the text ones
                out.extend(str(p.get("text", "")) for p in content if isinstance(p, dict))
            elif content is not None:
                out.append(str(content))
        return out
    key = "prompt" if route == "completions" else "input"
    value = body.get(key)
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    if value is None:
        raise InvalidInput(f"{key} is required")
    raise InvalidInput(f"{key}: a string or a list of strings")


def _put_texts(route: str, body: dict[str, Any], texts: list[str]) -> None:
    """Write screened (masked) texts back where they came from."""
    it = iter(texts)
    if route == "chat/completions":
        for m in body["messages"]:
            content = m.get("content") if isinstance(m, dict) else None
            if isinstance(content, list):
                for p in content:
                    if isinstance(p, dict):
                        p["text"] = next(it)
            elif content is not None:
                m["content"] = next(it)
        return
    key = "prompt" if route == "completions" else "input"
    body[key] = next(it) if isinstance(body[key], str) else list(it)


async def _call(request: Request, route: str) -> Response:
    started = time.perf_counter()
    await plain_text(request)
    actor = await gateway_actor(request)
    gw: Gateway = request.app.state.gateway
    try:
        body = _loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InvalidInput("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object")
    try:
        if gw.knows(actor, body.get("model")):  # cached: pure computation, no thread hop
            target, screened = _gate(gw, actor, route, body)
        else:
            target, screened = await run_in_threadpool(_gate, gw, actor, route, body)
    except Exception:
        metrics.requests(route, "refused", actor.subject.session.marking).inc()
        raise
    _put_texts(route, body, screened)
    stream = bool(body.get("stream")) and route != "embeddings"
    wants_usage = bool((body.get("stream_options") or {}).get("include_usage")) if stream else False
    if stream:
        body["stream_options"] = {"include_usage": True}  # the gateway meters every stream
    payload = json.dumps(body).encode()
    response, replica = await _send(request, _client(request), target, route, payload, stream)
    prompt = "\n".join(screened)
    if stream and response.status_code == 200:
        return StreamingResponse(
            _relay(gw, actor, target, route, response, replica, request, prompt, wants_usage, started),
            media_type="text/event-stream",
            headers={LABEL_HEADER: target.response_label.marking, "Cache-Control": "no-cache"},
        )
    try:
        raw = await response.aread()
    finally:
        await response.aclose()
        request.app.state.ctx.router.release(replica)
    return await _answer(gw, actor, target, route, response.status_code, raw, prompt, started)


def _gate(gw: Gateway, actor: Actor, route: str, body: dict[str, Any]) -> tuple[Target, list[str]]:
    """Policy, budget, rate and prompt guardrails (store reads: off the event loop). Every
    string of the body is screened for markings (tools, tool calls, function arguments, names
    too); the prompt texts are the ones masked."""
    target = gw.authorize(actor, body.get("model"))  # type: ignore[arg-type]
    gw.admit(actor, target)
    return target, gw.screen(actor, target, _texts(route, body), everything=guardrails.strings(body))


def _client(request: Request) -> Client:
    """The pooled connections to replicas, made on (and for) the running event loop."""
    client: Client | None = getattr(request.app.state, "replica_client", None)
    if client is None or client.loop is not asyncio.get_running_loop():
        client = request.app.state.replica_client = Client()
    return client


async def _send(
    request: Request, upstream: Client, target: Target, route: str, payload: bytes, stream: bool
) -> tuple[Answer, Replica]:
    """Send to a healthy replica, moving to another one if it fails before answering."""
    table = request.app.state.ctx.router
    tried: set[str] = set()
    for _ in range(ATTEMPTS):
        replica = table.acquire(target.endpoint_id, frozenset(tried))
        if replica is None:
            break
        try:
            response = await upstream.post(replica.url, f"/v1/{route}", payload)
        except UpstreamError:
            table.release(replica)
            table.drop(target.endpoint_id, replica.job_id)
            tried.add(replica.job_id)
            continue
        if response.status_code >= 500 and not stream:
            await response.aclose()
            table.release(replica)
            tried.add(replica.job_id)
            continue
        return response, replica
    metrics.requests(route, "unavailable", target.response_label.marking).inc()
    raise Unavailable(f"endpoint {target.name} has no ready replica that could take the call; retry shortly")


def _answer_text(route: str, data: dict[str, Any]) -> str:
    choices = data.get("choices") or []
    if route == "chat/completions":
        return "".join(
            str((c.get("message") or {}).get("content") or "") for c in choices if isinstance(c, dict)
        )
    if route == "completions":
        return "".join(str(c.get("text") or "") for c in choices if isinstance(c, dict))
    return ""


async def _answer(
    gw: Gateway,
    actor: Actor,
    target: Target,
    route: str,
    status: int,
    raw: bytes,
    prompt: str,
    started: float,
) -> Response:
    try:
        data = _loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        data = {
            "error": {"message": "the replica answered with something that is not JSON", "type": "upstream"}
        }
        status = 502
    if not isinstance(data, dict):
        data, status = {"error": {"message": "unexpected replica answer", "type": "upstream"}}, 502
    # What is screened: every string of every choice (content, tool calls, function arguments,
    # refusals, log-probabilities) of an answer; every string of an error body.
    screened: Any = data if status != 200 else data.get("choices") if route != "embeddings" else None
    if screened is not None and gw.screen_payload(target, screened):
        data = {
            "error": {
                "message": "the answer carried a classification marking above the endpoint's label; withheld",
                "type": "guardrail",
                "code": "marking",
            }
        }
        status = 502
    elif screened is not None and target.pii == "mask":
        if status == 200:
            data["choices"] = guardrails.mask_strings(screened)
        else:
            data = guardrails.mask_strings(data)
    answer = (
        _answer_text(route, data)
        if status == 200 and route != "embeddings"
        else raw.decode("utf-8", "replace")
    )
    # No answer leaves unaudited: Unavailable (503) if its record cannot be committed.
    await _record(gw, actor, target, route, status, prompt, answer, data.get("usage") or {}, started)
    marking = target.response_label.marking
    headers = {LABEL_HEADER: marking}
    if status != 200:
        return JSONResponse(data, status_code=status, headers=headers)
    if route == "embeddings" and data and "enclave" not in data:
        # Vectors are not screened: the replica's own bytes with the label added at the end,
        # not a second encoding of a large answer. (Screened text is always re-encoded from
        # what was screened, so that no byte the screen did not read reaches the caller.)
        body = raw.rstrip()
        body = body[:-1] + b',"enclave":{"label":' + json.dumps(marking).encode() + b"}}"
        return Response(body, status_code=200, headers=headers, media_type="application/json")
    data["enclave"] = {**(data.get("enclave") or {}), "label": marking}
    return JSONResponse(data, status_code=200, headers=headers)


async def _record(
    gw: Gateway,
    actor: Actor,
    target: Target,
    route: str,
    status: int,
    prompt: str,
    answer: str,
    usage: dict[str, Any],
    started: float,
) -> None:
    """Meter, audit (committed before this returns) and count one call."""
    latency = time.perf_counter() - started
    prompt_t = int(usage.get("prompt_tokens") or 0)
    completion_t = int(usage.get("completion_tokens") or 0)
    call = gw.call(
        actor,
        target,
        route=route,
        status=status,
        prompt=prompt,
        answer=answer,
        prompt_tokens=prompt_t,
        completion_tokens=completion_t,
        latency_s=latency,
    )
    try:
        await _logged(gw, call)
    finally:
        _observe(route, actor.subject.session.marking, status, latency, prompt_t, completion_t, call.energy_j)


async def _logged(gw: Gateway, call: Call) -> None:
    """Hand the call's record to the call log and wait until it is committed."""
    loop = asyncio.get_running_loop()
    committed: asyncio.Future[None] = loop.create_future()

    def settle(error: BaseException | None) -> None:
        if committed.done():
            return
        if error is None:
            committed.set_result(None)
        else:
            committed.set_exception(Unavailable("the call could not be recorded; its answer is withheld"))

    def notify(error: BaseException | None) -> None:  # on the call log's thread
        loop.call_soon_threadsafe(settle, error)

    call.done = notify
    gw.log.submit(call)
    await committed


def _observe(
    route: str, label: str, status: int, latency: float, prompt_t: int, completion_t: int, energy: float
) -> None:
    """Count one call in the metrics, under the session label it was made at."""
    metrics.requests(route, "ok" if status < 400 else "error", label).inc()
    metrics.latency(route, label).observe(latency)
    metrics.tokens("prompt", label).inc(prompt_t)
    metrics.tokens("completion", label).inc(completion_t)
    metrics.energy(label).inc(energy)


async def _relay(
    gw: Gateway,
    actor: Actor,
    target: Target,
    route: str,
    response: Answer,
    replica: Replica,
    request: Request,
    prompt: str,
    wants_usage: bool,
    started: float,
) -> AsyncIterator[bytes]:
    """Pass a stream through event by event, screening, masking and metering it; an
    interrupted stream ends with an explicit error event, never a silent cut.

    Text is screened across chunks (:class:`~enclave.gateway.guardrails.StreamScreen`): each
    choice's text and each tool call's arguments are held back by the longest marking's
    length and released as what follows them is scanned; a choice's rest goes out with its
    ``finish_reason``, anything still held before ``[DONE]``. A marking seen in any of it ends
    the stream with an error event; what was held is never sent."""
    screen = gw.stream_screen(target)
    pieces: list[str] = []
    usage: dict[str, Any] = {}
    status = 200
    last: dict[str, Any] = {}
    try:
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            try:
                chunk = json.loads(data)
            except json.JSONDecodeError:
                continue
            if not isinstance(chunk, dict):
                continue
            if chunk.get("usage"):
                usage = chunk["usage"]
                if not wants_usage and not chunk.get("choices"):
                    continue
            last = chunk
            for choice in chunk.get("choices") or []:
                if isinstance(choice, dict):
                    _screen_choice(screen, route, choice, pieces)
            if screen.found:
                raise _Withheld()
            chunk.setdefault("enclave", {"label": target.response_label.marking})
            yield f"data: {json.dumps(chunk)}\n\n".encode()
        rest = _held_rest(screen, route, last)
        if screen.found:
            raise _Withheld()
        if rest is not None:
            yield f"data: {json.dumps(rest)}\n\n".encode()
        yield b"data: [DONE]\n\n"
    except _Withheld:
        status = 502
        yield _error_event("the answer carried a classification marking above the endpoint's label; withheld")
    except UpstreamError:
        status = 503
        yield _error_event("the replica stopped while answering; the answer is incomplete, retry the call")
    finally:
        await response.aclose()
        request.app.state.ctx.router.release(replica)
        # The stream is already out: a failure to record it is logged by the call log.
        with contextlib.suppress(Unavailable):
            await _record(gw, actor, target, route, status, prompt, "".join(pieces), usage, started)


def _screen_choice(
    screen: guardrails.StreamScreen, route: str, choice: dict[str, Any], pieces: list[str]
) -> None:
    """One streamed choice: its text and tool-call arguments through the screen (what may go
    now replaces them), every other string of it screened too; a finished choice's rest
    released into it."""
    index = choice.get("index", 0)
    delta = choice.get("delta") if route == "chat/completions" else choice
    if not isinstance(delta, dict):
        delta = {}
    key = "content" if route == "chat/completions" else "text"
    piece = delta.get(key)
    if isinstance(piece, str) and piece:
        pieces.append(piece)
        delta[key] = screen.push((index, key), piece)
    calls = delta.get("tool_calls")
    for call in calls if isinstance(calls, list) else []:
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict) and isinstance(function.get("arguments"), str):
            function["arguments"] = screen.push((index, "tool", call.get("index", 0)), function["arguments"])
    # Everything else (names, ids, refusals, log-probabilities): screened, released as it is.
    others = {k: v for k, v in choice.items() if k not in ("delta", "text")}
    others["delta"] = {k: v for k, v in delta.items() if k not in (key, "tool_calls")}
    others["tool_calls"] = [
        {k: v for k, v in c.items() if k != "function"}
        | {"name": (c.get("function") or {}).get("name") if isinstance(c.get("function"), dict) else None}
        for c in (calls if isinstance(calls, list) else [])
        if isinstance(c, dict)
    ]
    screen.push((index, "other"), "\n".join(guardrails.strings(others)) + "\n")
    if choice.get("finish_reason") is not None:
        _release_rest(screen, route, index, delta)
        if route == "chat/completions":
            choice["delta"] = delta


def _release_rest(screen: guardrails.StreamScreen, route: str, index: Any, delta: dict[str, Any]) -> None:
    """Put what is still held for choice ``index`` into ``delta`` (the choice has ended)."""
    key = "content" if route == "chat/completions" else "text"
    for channel in screen.open_channels():
        if channel[0] != index:
            continue
        rest = screen.end(channel)
        if channel[1] == key:
            delta[key] = (delta.get(key) or "") + rest
        elif channel[1] == "tool" and rest:
            calls = delta.setdefault("tool_calls", [])
            call = next((c for c in calls if c.get("index", 0) == channel[2]), None)
            if call is None:
                call = {"index": channel[2], "function": {"arguments": ""}}
                calls.append(call)
            function = call.setdefault("function", {})
            function["arguments"] = (function.get("arguments") or "") + rest


def _held_rest(screen: guardrails.StreamScreen, route: str, last: dict[str, Any]) -> dict[str, Any] | None:
    """A last chunk with what is still held of choices that never sent a ``finish_reason``."""
    held = sorted({ch[0] for ch in screen.open_channels() if ch[1] != "other"}, key=str)
    if not held:
        return None
    choices = []
    for index in held:
        delta: dict[str, Any] = {}
        _release_rest(screen, route, index, delta)
        choices.append(
            {"index": index, "delta": delta} if route == "chat/completions" else {"index": index, **delta}
        )
    chunk = {k: last[k] for k in ("id", "object", "created", "model") if k in last}
    chunk["choices"] = choices
    return chunk


class _Withheld(Exception):
    pass


def _error_event(message: str) -> bytes:
    body = {"error": {"message": message, "type": "enclave_gateway"}}
    return f"data: {json.dumps(body)}\n\ndata: [DONE]\n\n".encode()
