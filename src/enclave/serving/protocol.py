"""OpenAI request parsing and response shapes (embeddings, completions, chat completions).

Unknown request fields are accepted and ignored, as OpenAI-compatible servers do; fields whose
values a replica cannot honour (``n > 1``, logprobs, tools, ...) are rejected with a 400 that
says so, rather than silently answering something else.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Sequence
from typing import Any, Literal, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from enclave.serving.errors import APIError

MAX_INPUTS = 2048
MAX_STOPS = 4
ROLES = ("system", "developer", "user", "assistant", "tool")


class _Request(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str | None = None


class EmbeddingsRequest(_Request):
    input: str | list[Any]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class _GenerationRequest(_Request):
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None


class CompletionRequest(_GenerationRequest):
    prompt: str | list[Any]
    logprobs: int | None = None
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(_GenerationRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = None
    tools: list[Any] | None = None
    functions: list[Any] | None = None
    response_format: dict[str, Any] | None = None


R = TypeVar("R", bound=BaseModel)


def parse(model: type[R], body: dict[str, Any]) -> R:
    """The body as ``model``; the first validation problem becomes a 400 naming the field."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise APIError(400, f"{loc}: {first['msg']}" if loc else first["msg"], param=loc or None) from None


def embedding_inputs(req: EmbeddingsRequest) -> list[str]:
    items = [req.input] if isinstance(req.input, str) else req.input
    if not items:
        raise APIError(400, "input must not be empty", param="input")
    if any(isinstance(i, int | list) for i in items):
        raise APIError(400, "token arrays are not supported: send text", param="input")
    if not all(isinstance(i, str) for i in items):
        raise APIError(400, "input must be a string or a list of strings", param="input")
    if len(items) > MAX_INPUTS:
        raise APIError(400, f"at most {MAX_INPUTS} inputs per request", param="input")
    if any(not i for i in items):
        raise APIError(400, "input must not contain empty strings", param="input")
    return items


def prompts(req: CompletionRequest) -> list[str]:
    items = [req.prompt] if isinstance(req.prompt, str) else req.prompt
    if not items:
        raise APIError(400, "prompt must not be empty", param="prompt")
    if any(isinstance(i, int | list) for i in items):
        raise APIError(400, "token arrays are not supported: send text", param="prompt")
    if not all(isinstance(i, str) for i in items):
        raise APIError(400, "prompt must be a string or a list of strings", param="prompt")
    if len(items) > MAX_INPUTS:
        raise APIError(400, f"at most {MAX_INPUTS} prompts per request", param="prompt")
    if req.echo:
        raise APIError(400, "echo is not supported", param="echo")
    if req.suffix:
        raise APIError(400, "suffix is not supported", param="suffix")
    if req.best_of not in (None, 1):
        raise APIError(400, "best_of > 1 is not supported", param="best_of")
    if req.logprobs:
        raise APIError(400, "logprobs are not supported", param="logprobs")
    return items


def chat_prompt(req: ChatRequest) -> str:
    """The last user message's text: what sklearn and the character model see of a chat."""
    if req.logprobs:
        raise APIError(400, "logprobs are not supported", param="logprobs")
    if req.tools or req.functions:
        raise APIError(400, "tool and function calling are not supported", param="tools")
    if req.response_format and req.response_format.get("type", "text") != "text":
        raise APIError(400, "only the text response_format is supported", param="response_format")
    last = None
    for i, message in enumerate(req.messages):
        if message.role not in ROLES:
            raise APIError(
                400, f"messages.{i}.role: unknown role {message.role!r}", param=f"messages.{i}.role"
            )
        if message.role == "user":
            last = _text(message.content, i)
    if last is None:
        raise APIError(400, "messages must include a user message", param="messages")
    if not last.strip():
        raise APIError(400, "the last user message is empty", param="messages")
    return last


def _text(content: str | list[dict[str, Any]] | None, i: int) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    parts = []
    for part in content:
        if part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise APIError(400, "only text content parts are supported", param=f"messages.{i}.content")
        parts.append(part["text"])
    return "".join(parts)


def sampling(req: _GenerationRequest) -> tuple[float, list[str]]:
    """Temperature (OpenAI's default 1) and stop sequences, after rejecting what is unsupported."""
    if req.n not in (None, 1):
        raise APIError(400, "n > 1 is not supported", param="n")
    if req.top_p not in (None, 1):
        raise APIError(400, "top_p is not supported (use temperature)", param="top_p")
    stops = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    if len(stops) > MAX_STOPS:
        raise APIError(400, f"at most {MAX_STOPS} stop sequences", param="stop")
    return (1.0 if req.temperature is None else req.temperature), stops


def include_usage(req: _GenerationRequest) -> bool:
    return bool(req.stream_options and req.stream_options.include_usage)


# -- responses --------------------------------------------------------------------------------


def usage(prompt_tokens: int, completion_tokens: int = 0) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def embeddings_response(vectors: np.ndarray, model: str, encoding: str, tokens: int) -> dict[str, Any]:
    data = []
    for i, row in enumerate(vectors):
        # base64 of little-endian float32, which the openai client decodes (its default encoding)
        value: Any = (
            base64.b64encode(row.astype("<f4").tobytes()).decode() if encoding == "base64" else row.tolist()
        )
        data.append({"object": "embedding", "index": i, "embedding": value})
    return {"object": "list", "data": data, "model": model, "usage": usage(tokens)}


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


def merge_extra(into: dict[str, Any], extra: dict[str, Any] | None) -> None:
    """Fold a runtime's extra fields into a response; lists (one entry per row) concatenate."""
    for key, value in (extra or {}).items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge_extra(into[key], value)
        elif isinstance(value, list) and isinstance(into.get(key), list):
            into[key] = into[key] + value
        else:
            into[key] = value


def completion_response(
    model: str, texts: Sequence[tuple[str, str]], tokens: dict[str, int], extra: dict[str, Any]
) -> dict[str, Any]:
    choices = [
        {"index": i, "text": text, "logprobs": None, "finish_reason": reason}
        for i, (text, reason) in enumerate(texts)
    ]
    body = {
        "id": new_id("cmpl"),
        "object": "text_completion",
        "created": now(),
        "model": model,
        "choices": choices,
        "usage": tokens,
    }
    merge_extra(body, extra)
    return body


def chat_response(
    model: str, text: str, reason: str, tokens: dict[str, int], extra: dict[str, Any]
) -> dict[str, Any]:
    body = {
        "id": new_id("chatcmpl"),
        "object": "chat.completion",
        "created": now(),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": reason,
            }
        ],
        "usage": tokens,
    }
    merge_extra(body, extra)
    return body


def sse(data: dict[str, Any] | str) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {payload}\n\n".encode()


DONE = sse("[DONE]")
