"""The sentence-embeddings runtime (builtin all-MiniLM-L6-v2) through httpx and the openai client."""

from __future__ import annotations

import base64
import concurrent.futures

import httpx
import numpy as np

from tests.serving.conftest import Replica, error_of


def cosine(a: list[float], b: list[float]) -> float:
    x, y = np.asarray(a), np.asarray(b)
    return float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))


def test_embeddings_are_normalised_and_meaningful(minilm: Replica) -> None:
    texts = ["A cat sits on the mat.", "A kitten is resting on a rug.", "Quarterly tax filing deadlines."]
    r = httpx.post(f"{minilm.url}/v1/embeddings", json={"model": "my-embedder", "input": texts})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list" and body["model"] == "my-embedder"
    vectors = [d["embedding"] for d in sorted(body["data"], key=lambda d: d["index"])]
    assert [len(v) for v in vectors] == [384, 384, 384]
    assert all(abs(np.linalg.norm(v) - 1) < 1e-4 for v in vectors)
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2]) + 0.3
    usage = body["usage"]
    assert usage["prompt_tokens"] > len(texts) and usage["total_tokens"] == usage["prompt_tokens"]


def test_openai_client_float_and_base64_agree(minilm: Replica) -> None:
    client = minilm.openai()
    text = "The replica speaks the OpenAI protocol."
    as_float = client.embeddings.create(model="m", input=text, encoding_format="float")
    default = client.embeddings.create(model="m", input=[text])  # the client asks for base64 by default
    assert len(as_float.data[0].embedding) == 384
    assert np.allclose(as_float.data[0].embedding, default.data[0].embedding, atol=1e-6)
    raw = httpx.post(
        f"{minilm.url}/v1/embeddings", json={"model": "m", "input": text, "encoding_format": "base64"}
    ).json()
    decoded = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(decoded, as_float.data[0].embedding, atol=1e-6)
    assert as_float.usage.prompt_tokens == raw["usage"]["prompt_tokens"] > 0
    assert client.embeddings.create(model="m", input=text, dimensions=384).data[0].embedding


def test_concurrent_requests_each_get_their_own_vectors(minilm: Replica) -> None:
    """Concurrent requests are coalesced into shared encode calls; each still gets its own rows."""
    texts = [f"sentence number {i} about {topic}" for i, topic in enumerate(["dogs", "stars", "bread"] * 8)]
    with httpx.Client(base_url=minilm.url) as client:
        single = {
            t: client.post("/v1/embeddings", json={"input": t}).json()["data"][0]["embedding"]
            for t in texts[:3]
        }
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda t: client.post("/v1/embeddings", json={"input": [t, t]}), texts))
    for text, answer in zip(texts, answers, strict=True):
        data = answer.json()["data"]
        assert len(data) == 2
        if text in single:
            assert np.allclose(data[0]["embedding"], single[text], atol=1e-5)
    health = httpx.get(f"{minilm.url}/health").json()
    assert health == {
        "status": "ok",
        "runtime": "sentence-embeddings",
        "in_flight": 0,
        "served": health["served"],
    }
    assert health["served"] >= len(texts)


def test_bad_embedding_requests(minilm: Replica) -> None:
    url = f"{minilm.url}/v1/embeddings"
    assert "token arrays" in error_of(httpx.post(url, json={"input": [[1, 2, 3]]}), 400)["message"]
    assert "token arrays" in error_of(httpx.post(url, json={"input": [1, 2, 3]}), 400)["message"]
    assert error_of(httpx.post(url, json={"input": ""}), 400)["param"] == "input"
    assert error_of(httpx.post(url, json={"input": []}), 400)["param"] == "input"
    assert error_of(httpx.post(url, json={"model": "m"}), 400)["param"] == "input"
    assert "384" in error_of(httpx.post(url, json={"input": "x", "dimensions": 128}), 400)["message"]
    assert (
        error_of(httpx.post(url, json={"input": "x", "encoding_format": "int8"}), 400)["param"]
        == "encoding_format"
    )
    assert (
        error_of(httpx.post(url, content=b"{not json"), 400)["message"]
        == "the request body is not valid JSON"
    )
    error = error_of(httpx.post(f"{minilm.url}/v1/chat/completions", json={"messages": []}), 404)
    assert error["code"] == "unsupported_route" and "/v1/embeddings" in error["message"]
    assert error_of(httpx.get(f"{minilm.url}/v1/nothing"), 404)["code"] == "not_found"
    models = minilm.openai().models.list()
    assert [m.id for m in models.data] == ["minilm"]
