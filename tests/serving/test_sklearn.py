"""The sklearn runtime: a real iris classifier answering chat and completion requests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from tests.serving.conftest import Replica, error_of
from tests.serving.models import IRIS_CLASSES

SETOSA = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
VIRGINICA = [6.7, 3.0, 5.2, 2.3]


def test_chat_with_a_json_row(sklearn_replica: Replica) -> None:
    client = sklearn_replica.openai()
    messages: Any = [
        {"role": "system", "content": "classify"},
        {"role": "user", "content": json.dumps(SETOSA)},
    ]
    chat = client.chat.completions.create(model="iris-v1", messages=messages)
    assert chat.model == "iris-v1" and chat.choices[0].message.content == "setosa"
    assert chat.choices[0].finish_reason == "stop"
    extra = chat.model_extra or {}
    (row,) = extra["enclave"]["probabilities"]
    assert set(row) == set(IRIS_CLASSES) and max(row, key=row.get) == "setosa"
    assert abs(sum(row.values()) - 1) < 1e-4
    assert chat.usage is not None and chat.usage.prompt_tokens == len(json.dumps(SETOSA).split())


def test_completions_with_csv_rows(sklearn_replica: Replica) -> None:
    prompt = "5.1, 3.5, 1.4, 0.2\n" + ",".join(map(str, VIRGINICA))
    r = httpx.post(f"{sklearn_replica.url}/v1/completions", json={"model": "iris", "prompt": prompt})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["choices"][0]["text"] == "setosa\nvirginica"
    assert len(body["enclave"]["probabilities"]) == 2
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    batch = sklearn_replica.openai().completions.create(
        model="iris", prompt=[json.dumps(SETOSA), "6.7,3.0,5.2,2.3"]
    )
    assert [c.text for c in batch.choices] == ["setosa", "virginica"]
    assert len((batch.model_extra or {})["enclave"]["probabilities"]) == 2


def test_streamed_prediction(sklearn_replica: Replica) -> None:
    stream = sklearn_replica.openai().chat.completions.create(
        model="iris",
        messages=[
            {"role": "user", "content": json.dumps([SETOSA, dict(zip(SETOSA, VIRGINICA, strict=True))])}
        ],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "setosa\nvirginica"
    final = next(c for c in chunks if c.choices and c.choices[0].finish_reason)
    assert len((final.model_extra or {})["enclave"]["probabilities"]) == 2
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 2


def test_bad_rows(sklearn_replica: Replica) -> None:
    url = f"{sklearn_replica.url}/v1/chat/completions"

    def ask(content: str) -> httpx.Response:
        return httpx.post(url, json={"messages": [{"role": "user", "content": content}]})

    error = error_of(ask(json.dumps({"sepal_length": 5.1, "petal_width": 0.2})), 400)
    assert error["message"] == "row 1: missing features: sepal_width, petal_length"
    assert "unknown features: colour" in str(
        error_of(ask(json.dumps({**SETOSA, "colour": 1})), 400)["message"]
    )
    assert "expected 4" in error_of(ask("1,2,3"), 400)["message"]
    assert "not a number" in error_of(ask("1,2,x,4"), 400)["message"]
    assert "not a finite number" in str(
        error_of(ask(json.dumps({**SETOSA, "sepal_width": "3"})), 400)["message"]
    )
    assert error_of(ask("   "), 400)["param"] == "messages"
    stream = {"prompt": "1,2,3", "stream": True}
    assert "expected 4" in str(
        error_of(httpx.post(f"{sklearn_replica.url}/v1/completions", json=stream), 400)["message"]
    )
    assert (
        error_of(httpx.post(f"{sklearn_replica.url}/v1/embeddings", json={"input": "x"}), 404)["code"]
        == "unsupported_route"
    )


def test_an_sklearn_replica_does_not_load_torch(sklearn_replica: Replica) -> None:
    """Runtimes import their frameworks lazily: this process never mapped libtorch."""
    maps = Path(f"/proc/{sklearn_replica.proc.pid}/maps").read_text()
    assert "libtorch" not in maps and "sklearn" in maps
