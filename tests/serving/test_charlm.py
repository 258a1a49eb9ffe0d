"""The pytorch runtime: a character transformer (safetensors), streamed and not, through httpx and openai."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.serving.conftest import Replica, error_of
from tests.serving.models import ALPHABET


def sse_events(response: httpx.Response) -> list[Any]:
    """The data payloads of an SSE answer, checking the framing: ``data: ...`` events, [DONE] last."""
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [e for e in response.text.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events), events
    assert events[-1] == "data: [DONE]"
    return [json.loads(e[len("data: ") :]) for e in events[:-1]]


def test_greedy_completion_follows_the_learned_cycle(charlm: Replica) -> None:
    body = {"model": "tiny", "prompt": "abc", "max_tokens": 10, "temperature": 0}
    r = httpx.post(f"{charlm.url}/v1/completions", json=body)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["object"] == "text_completion" and answer["model"] == "tiny"
    choice = answer["choices"][0]
    assert choice == {"index": 0, "text": "defghijklm", "logprobs": None, "finish_reason": "length"}
    assert answer["usage"] == {"prompt_tokens": 3, "completion_tokens": 10, "total_tokens": 13}


def test_stop_sequences_cut_the_text(charlm: Replica) -> None:
    client = charlm.openai()
    done = client.completions.create(model="m", prompt="a", max_tokens=50, temperature=0, stop=["fg", "zz"])
    assert done.choices[0].text == "bcde" and done.choices[0].finish_reason == "stop"
    assert done.usage is not None and done.usage.completion_tokens == 4
    chunks = list(
        client.completions.create(model="m", prompt="a", max_tokens=50, temperature=0, stop="fg", stream=True)
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "bcde"
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_streaming_matches_non_streaming_with_a_seed(charlm: Replica) -> None:
    client = charlm.openai()
    kwargs: dict[str, Any] = {"model": "m", "max_tokens": 40, "temperature": 1.5, "seed": 1234}
    plain = client.completions.create(prompt="hello", **kwargs)
    text = plain.choices[0].text
    assert len(text) == 40 and plain.choices[0].finish_reason == "length"
    stream = client.completions.create(
        prompt="hello", stream=True, stream_options={"include_usage": True}, **kwargs
    )
    chunks = list(stream)
    assert all(c.object == "text_completion" for c in chunks)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == text
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 40 and chunks[-1].usage.prompt_tokens == 5
    other = client.completions.create(prompt="hello", **{**kwargs, "seed": 99})
    assert other.choices[0].text != text


def test_chat_uses_the_last_user_message(charlm: Replica) -> None:
    client = charlm.openai()
    messages: Any = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "xyz"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "mno"},
    ]
    chat = client.chat.completions.create(model="tiny", messages=messages, max_tokens=5, temperature=0)
    assert chat.object == "chat.completion" and chat.model == "tiny"
    assert chat.choices[0].message.role == "assistant"
    assert chat.choices[0].message.content == "pqrst" and chat.choices[0].finish_reason == "length"
    assert chat.usage is not None and (chat.usage.prompt_tokens, chat.usage.completion_tokens) == (3, 5)
    stream = client.chat.completions.create(
        model="tiny", messages=messages, max_completion_tokens=5, temperature=0, stream=True
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "pqrst"
    assert chunks[-1].choices[0].finish_reason == "length"


def test_raw_sse_framing_and_max_tokens(charlm: Replica) -> None:
    body = {"prompt": ALPHABET, "max_tokens": 7, "stream": True, "seed": 5}
    events = sse_events(httpx.post(f"{charlm.url}/v1/completions", json=body))
    assert len("".join(e["choices"][0]["text"] for e in events)) == 7
    assert [e["choices"][0]["finish_reason"] for e in events][-1] == "length"
    assert len({e["id"] for e in events}) == 1


def test_bad_generation_requests(charlm: Replica) -> None:
    url = f"{charlm.url}/v1/completions"
    error = error_of(httpx.post(url, json={"prompt": "héllo"}), 400)
    assert "'é'" in error["message"] and error["param"] == "prompt"
    error = error_of(httpx.post(url, json={"prompt": "abc", "stream": True, "max_tokens": 5000}), 400)
    assert "1024" in error["message"] and error["param"] == "max_tokens"
    assert error_of(httpx.post(url, json={"prompt": [[1, 2]]}), 400)["param"] == "prompt"
    assert error_of(httpx.post(url, json={"prompt": "abc", "n": 2}), 400)["param"] == "n"
    assert error_of(httpx.post(url, json={"prompt": "abc", "temperature": -1}), 400)["param"] == "temperature"
    assert error_of(httpx.post(url, json={"prompt": "abc", "max_tokens": 0}), 400)["param"] == "max_tokens"
    assert error_of(httpx.post(url, json={"prompt": ""}), 400)["param"] == "prompt"
    chat = f"{charlm.url}/v1/chat/completions"
    assert error_of(httpx.post(chat, json={"messages": [{"role": "system", "content": "x"}]}), 400)
    assert error_of(
        httpx.post(chat, json={"messages": [{"role": "user", "content": "a"}], "tools": [{}]}), 400
    )
    error = error_of(httpx.post(f"{charlm.url}/v1/embeddings", json={"input": "abc"}), 404)
    assert error["code"] == "unsupported_route"
