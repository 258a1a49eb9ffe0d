"""The openai-upstream runtime, pointed at other real replicas: answers equal direct ones."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.serving.conftest import Replica, error_of


@pytest.fixture(scope="module")
def embed_proxy(
    replicas: Callable[..., Replica], minilm: Replica, tmp_path_factory: pytest.TempPathFactory
) -> Replica:
    """Configured through model.json, renaming the model for the upstream."""
    model_dir = tmp_path_factory.mktemp("proxy-model")
    meta = {
        "runtime": "openai-upstream",
        "upstream_url": f"{minilm.url}/v1",
        "upstream_model": "minilm-upstream",
    }
    (model_dir / "model.json").write_text(json.dumps(meta))
    return replicas(
        "--runtime", "openai-upstream", "--model-dir", str(model_dir), env={"ENCLAVE_UPSTREAM_API_KEY": "k"}
    )


@pytest.fixture(scope="module")
def char_proxy(replicas: Callable[..., Replica], charlm: Replica) -> Replica:
    return replicas("--runtime", "openai-upstream", "--upstream", f"{charlm.url}/v1")


def test_embeddings_through_the_proxy_equal_direct(embed_proxy: Replica, minilm: Replica) -> None:
    texts = ["sovereign cloud", "power-capped scheduling"]
    direct = minilm.openai().embeddings.create(model="x", input=texts)
    proxied = embed_proxy.openai().embeddings.create(model="my-embedder", input=texts)
    assert proxied.model == "my-embedder"  # the caller's name comes back, not the upstream's
    for a, b in zip(direct.data, proxied.data, strict=True):
        assert np.allclose(a.embedding, b.embedding, atol=1e-6)
    assert proxied.usage.prompt_tokens == direct.usage.prompt_tokens
    raw = httpx.post(f"{embed_proxy.url}/v1/embeddings", json={"model": "e", "input": "x", "dimensions": 7})
    assert error_of(raw, 400)["param"] == "dimensions"  # upstream 4xx passes through as is
    health = httpx.get(f"{embed_proxy.url}/health").json()
    assert health["runtime"] == "openai-upstream" and health["served"] >= 2


def test_generation_through_the_proxy_equals_direct(char_proxy: Replica, charlm: Replica) -> None:
    kwargs: dict[str, Any] = {"model": "m", "prompt": "abc", "max_tokens": 30, "temperature": 1.2, "seed": 7}
    direct = charlm.openai().completions.create(**kwargs)
    proxied = char_proxy.openai().completions.create(**kwargs)
    assert proxied.choices[0].text == direct.choices[0].text and len(direct.choices[0].text) == 30
    assert proxied.usage == direct.usage
    chat: dict[str, Any] = {
        "model": "m",
        "messages": [{"role": "user", "content": "hij"}],
        "max_tokens": 6,
        "temperature": 0,
    }
    assert char_proxy.openai().chat.completions.create(**chat).choices[0].message.content == "klmnop"
    chunks = list(char_proxy.openai().chat.completions.create(stream=True, **chat))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "klmnop"


def test_streams_pass_through_event_by_event(char_proxy: Replica, charlm: Replica) -> None:
    body = {
        "model": "m",
        "prompt": "abc",
        "max_tokens": 12,
        "seed": 3,
        "stream": True,
        "stream_options": {"include_usage": True},
    }

    def texts(replica: Replica) -> list[Any]:
        r = httpx.post(f"{replica.url}/v1/completions", json=body)
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [e for e in r.text.split("\n\n") if e]
        assert events[-1] == "data: [DONE]"
        return [
            (c["choices"][0]["text"] if c["choices"] else c["usage"])
            for c in (json.loads(e[6:]) for e in events[:-1])
        ]

    assert texts(char_proxy) == texts(charlm)
    assert len(texts(char_proxy)) == 12 + 2  # one event per character, the finish and the usage


def test_upstream_errors(char_proxy: Replica, replicas: Callable[..., Replica], tmp_path: Path) -> None:
    error = error_of(httpx.post(f"{char_proxy.url}/v1/completions", json={"prompt": "é"}), 400)
    assert "vocabulary" in error["message"]
    error = error_of(httpx.post(f"{char_proxy.url}/v1/embeddings", json={"input": "x"}), 404)
    assert error["code"] == "unsupported_route"  # the upstream's own answer
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]  # closed again once the block ends: nothing listens there
    lost = replicas("--runtime", "openai-upstream", "--upstream", f"http://127.0.0.1:{dead}/v1")
    error = error_of(httpx.post(f"{lost.url}/v1/chat/completions", json={"messages": []}), 502)
    assert error["type"] == "upstream_error" and "unreachable" in error["message"]
    assert [m.id for m in lost.openai().models.list().data] == ["model"]
