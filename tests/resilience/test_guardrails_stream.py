"""Attacks on the gateway's guardrails (issue 12, finding 7), run for real.

A marking split across streamed chunks, a marking in ``tool_calls`` / function arguments / a
4xx body, and PII in the second of several choices all passed the gateway. Here they go
through the real gateway (the app and its relay, over HTTP) to a scripted replica — a real
loopback HTTP server that answers what each test tells it to — and at the screen itself.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enclave.gateway import guardrails
from enclave.guard_scan import MarkingScanner
from enclave.labels import DEFAULT_SCHEME
from tests.api.conftest import World, world  # noqa: F401 - the fixture, for these tests
from tests.api.helpers import ok

S = DEFAULT_SCHEME


def screen(mask: bool = False, ceiling: str = "SECRET") -> guardrails.StreamScreen:
    return guardrails.StreamScreen(MarkingScanner(S), S.parse(ceiling), mask=mask)


def relay(pieces: list[str], mask: bool = False) -> tuple[str, bool]:
    """What a stream of ``pieces`` releases, and whether it was stopped for a marking."""
    sc, out = screen(mask), []
    for piece in pieces:
        out.append(sc.push((0, "content"), piece))
        if sc.found:
            return "".join(out), True
    out.append(sc.end((0, "content")))
    return "".join(out), bool(sc.found)


# -- the screen ----------------------------------------------------------------------------------
ANSWER = "The plan, as briefed: TOP SECRET//SI material follows. Nothing else."


def test_a_marking_split_at_every_point_is_caught_and_never_released_whole() -> None:
    for cut in range(1, len(ANSWER)):
        released, stopped = relay([ANSWER[:cut], ANSWER[cut:]])
        assert stopped, cut
        assert "TOP SECRET" not in released and "//SI" not in released, (cut, released)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, len(ANSWER) - 1), max_size=12), st.sampled_from(["\u200b", "\u00ad", ""]))
def test_a_marking_in_pieces_of_any_size_is_caught(cuts: list[int], pad: str) -> None:
    text = ANSWER.replace("SECRET", pad.join("SECRET"))
    bounds = [0, *sorted({min(c, len(text)) for c in cuts}), len(text)]
    released, stopped = relay([text[a:b] for a, b in itertools.pairwise(bounds) if b > a])
    assert stopped
    assert "TOP" not in released  # held back: the marking's start never went out


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet="abcdefghij klmnop.,\n", max_size=400), st.lists(st.integers(0, 400), max_size=8))
def test_clean_text_comes_out_whole_however_it_is_cut(text: str, cuts: list[int]) -> None:
    bounds = [0, *sorted({min(c, len(text)) for c in cuts}), len(text)]
    released, stopped = relay([text[a:b] for a, b in itertools.pairwise(bounds)])
    assert (released, stopped) == (text, False)


def test_pii_split_across_chunks_is_masked() -> None:
    released, _ = relay(["Write to jane.", "doe@example.", "org or call 555-", "123-4567 today."], mask=True)
    assert released == "Write to [EMAIL] or call [PHONE] today."


def test_text_is_held_only_by_the_longest_marking() -> None:
    sc = screen()
    out = sc.push((0, "content"), "x" * 200)
    assert len(out) == 200 - sc.hold and sc.hold < 100


# -- through the gateway -------------------------------------------------------------------------
class Script:
    """What the scripted replica answers next: a status and JSON, or SSE events."""

    status = 200
    body: dict[str, Any] = {}
    events: list[dict[str, Any]] = []
    requests: list[dict[str, Any]] = []


class _Replica(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, chunked streams: what the gateway's client speaks

    def _chunked(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def do_POST(self) -> None:
        length = int(self.headers["content-length"])
        request = json.loads(self.rfile.read(length))
        Script.requests.append(request)
        if request.get("stream"):
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            for event in Script.events:  # one event per chunk: the gateway sees them apart
                self._chunked(f"data: {json.dumps(event)}\n\n".encode())
            self._chunked(b"data: [DONE]\n\n")
            self._chunked(b"")
            return
        data = json.dumps(Script.body).encode()
        self.send_response(Script.status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def replica() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Replica)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Script.status, Script.body, Script.events, Script.requests = 200, {}, [], []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def chat(world: World, replica: str, monkeypatch: pytest.MonkeyPatch) -> str:  # noqa: F811
    """An endpoint ``chat`` at SECRET (alice's) served by the scripted replica."""
    model = ok(
        world.client.post(
            "/v1/registry/builtin-models", json={"name": "m", "builtin": "minilm"}, headers=world.alice_s
        ),
        201,
    )
    ep = ok(
        world.client.post(
            "/v1/endpoints", json={"model": model["id"], "name": "chat", "pii": "mask"}, headers=world.alice_s
        ),
        201,
    )
    # The endpoint supervisor refreshes the router from the replicas it runs (none here):
    # the scripted one stays pinned as this endpoint's only healthy replica.
    router = world.ctx.router
    update = router.update

    def pinned(endpoint_id: str, ready: list[tuple[str, str]]) -> None:
        update(endpoint_id, [("scripted", replica)] if endpoint_id == ep["id"] else ready)

    monkeypatch.setattr(router, "update", pinned)
    pinned(ep["id"], [])
    return "chat"


def _chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "chat",
        "choices": [{"index": index, "delta": delta, "finish_reason": finish}],
    }


def _stream(world: World, model: str) -> list[dict[str, Any]]:  # noqa: F811
    body = {"model": model, "stream": True, "messages": [{"role": "user", "content": "brief me"}]}
    with world.client.stream("POST", "/v1/chat/completions", json=body, headers=world.alice_s) as r:
        assert r.status_code == 200
        lines = [line for line in r.iter_lines() if line.startswith("data:")]
    assert lines[-1] == "data: [DONE]"
    return [json.loads(line[5:]) for line in lines[:-1]]


def _content(events: list[dict[str, Any]], index: int = 0) -> str:
    return "".join(
        (c.get("delta") or {}).get("content") or ""
        for e in events
        for c in e.get("choices") or []
        if c.get("index") == index
    )


def test_a_marking_split_across_streamed_chunks_is_withheld(world: World, chat: str) -> None:  # noqa: F811
    Script.events = [
        _chunk(0, {"role": "assistant", "content": "The plan: TOP SEC"}),
        _chunk(0, {"content": "RET//"}),
        _chunk(0, {"content": "SI annex follows."}),
        _chunk(0, {}, "stop"),
    ]
    events = _stream(world, chat)
    assert events[-1]["error"]["type"] == "enclave_gateway" and "marking" in events[-1]["error"]["message"]
    sent = _content(events)
    assert "TOP" not in sent and "SEC" not in sent


def test_clean_streams_arrive_whole_and_masked_in_every_choice(world: World, chat: str) -> None:  # noqa: F811
    Script.events = [
        _chunk(0, {"role": "assistant", "content": "Mail jane.doe@exa"}),
        _chunk(1, {"role": "assistant", "content": "Call 555-123-"}),
        _chunk(0, {"content": "mple.org please."}),
        _chunk(1, {"content": "4567 soon."}),
        _chunk(0, {}, "stop"),
        _chunk(1, {}, "stop"),
    ]
    events = _stream(world, chat)
    assert "error" not in events[-1]
    assert (_content(events, 0), _content(events, 1)) == ("Mail [EMAIL] please.", "Call [PHONE] soon.")
    assert Script.requests[-1]["stream_options"] == {"include_usage": True}


def test_a_stream_without_finish_reason_gets_its_held_text_before_done(world: World, chat: str) -> None:  # noqa: F811
    Script.events = [_chunk(0, {"content": "short answer"})]
    assert _content(_stream(world, chat)) == "short answer"


def test_a_marking_in_streamed_tool_call_arguments_is_withheld(world: World, chat: str) -> None:  # noqa: F811
    call = {
        "index": 0,
        "id": "t1",
        "type": "function",
        "function": {"name": "file", "arguments": '{"cls": "secr'},
    }
    Script.events = [
        _chunk(0, {"role": "assistant", "tool_calls": [call]}),
        _chunk(0, {"tool_calls": [{"index": 0, "function": {"arguments": 'et//si"}'}}]}),
        _chunk(0, {}, "tool_calls"),
    ]
    events = _stream(world, chat)
    assert "error" in events[-1]
    assert all("secr" not in json.dumps(e) for e in events)


def _call(world: World, body: dict[str, Any]) -> Any:  # noqa: F811
    return world.client.post("/v1/chat/completions", json=body, headers=world.alice_s)


PROMPT = {"model": "chat", "messages": [{"role": "user", "content": "hello"}]}


@pytest.mark.parametrize(
    "extra",
    [
        {
            "tools": [
                {"type": "function", "function": {"name": "f", "description": "files TOP SECRET//SI data"}}
            ]
        },
        {
            "messages": [
                {"role": "user", "content": "hi"},
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "id": "1",
                            "type": "function",
                            "function": {"name": "f", "arguments": '{"m": "ts//si"}'},
                        }
                    ],
                },
            ]
        },
        {"messages": [{"role": "user", "content": "TOP\u200bSECRET//ЅI"}]},
        {"user": "classified TOP SECRET."},
    ],
    ids=["tools", "tool_calls", "normalised prompt", "any field"],
)
def test_markings_anywhere_in_the_request_are_refused(world: World, chat: str, extra: dict[str, Any]) -> None:  # noqa: F811
    r = _call(world, {**PROMPT, **extra})
    assert r.status_code == 422 and "classification marking" in r.json()["detail"]
    assert Script.requests == []  # nothing reached the replica


def test_markings_in_answer_tool_calls_and_error_bodies_are_withheld(world: World, chat: str) -> None:  # noqa: F811
    Script.body = {
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "1",
                            "type": "function",
                            "function": {"name": "f", "arguments": '{"x": "TS//SI"}'},
                        }
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ]
    }
    r = _call(world, PROMPT)
    assert r.status_code == 502 and "TS//SI" not in r.text
    Script.status, Script.body = (
        400,
        {"error": {"message": "bad prompt near TOP SECRET//SI text", "type": "x"}},
    )
    r = _call(world, PROMPT)
    assert r.status_code == 502 and "SECRET" not in r.text


def test_pii_is_masked_in_every_choice_and_in_error_bodies(world: World, chat: str) -> None:  # noqa: F811
    Script.body = {
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "ask a@b.org"}, "finish_reason": "stop"},
            {
                "index": 1,
                "message": {"role": "assistant", "content": "ssn 123-45-6789"},
                "finish_reason": "stop",
            },
        ]
    }
    data = ok(_call(world, PROMPT))
    assert [c["message"]["content"] for c in data["choices"]] == ["ask [EMAIL]", "ssn [SSN]"]
    Script.status, Script.body = 400, {"error": {"message": "unknown user c@d.org", "type": "x"}}
    r = _call(world, PROMPT)
    assert r.status_code == 400 and r.json()["error"]["message"] == "unknown user [EMAIL]"
