"""The replica as a process: readiness through the port file, draining on SIGTERM, clean failures."""

from __future__ import annotations

import concurrent.futures
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.serving.conftest import Replica, spawn, start_replica
from tests.serving.models import write_char_model


@pytest.fixture(scope="module")
def slow_replica(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replica]:
    """A character model taking ≈ 10 ms per character; the SIGTERM test (last here) stops it."""
    tmp = tmp_path_factory.mktemp("slow")
    slow = write_char_model(tmp / "model", steps=0, n_layer=6, n_embd=384, n_head=4)
    replica = start_replica(tmp / "run", "--runtime", "pytorch", "--model-dir", str(slow))
    assert (tmp / "run" / "port").read_text().strip() == str(replica.port)
    yield replica
    if replica.proc.poll() is None:
        replica.proc.kill()


def test_a_client_that_leaves_stops_its_generation(slow_replica: Replica) -> None:
    """1024 characters would take seconds: once the client has gone, the worker is free at once."""
    for stream in (False, True):
        body = {"prompt": "abc", "max_tokens": 1024, "stream": stream}
        with httpx.Client(base_url=slow_replica.url, timeout=0.3) as client:
            if stream:
                with client.stream("POST", "/v1/completions", json=body) as r:
                    next(r.iter_lines())  # one event, then the client leaves
            else:
                with pytest.raises(httpx.ReadTimeout):
                    client.post("/v1/completions", json=body)
        began = time.monotonic()
        answer = httpx.post(
            f"{slow_replica.url}/v1/completions", json={"prompt": "abc", "max_tokens": 3}, timeout=30
        )
        assert answer.status_code == 200 and time.monotonic() - began < 2
        assert httpx.get(f"{slow_replica.url}/health").json()["in_flight"] == 0


def test_sigterm_finishes_in_flight_requests_then_exits_0(slow_replica: Replica) -> None:
    replica = slow_replica
    try:
        with (
            httpx.Client(base_url=replica.url, timeout=60) as client,
            concurrent.futures.ThreadPoolExecutor(1) as pool,
            client.stream(
                "POST", "/v1/completions", json={"prompt": "abc", "max_tokens": 120, "stream": True}
            ) as r,
        ):
            lines = (line for line in r.iter_lines() if line)
            events = [next(lines)]  # the stream is under way
            plain = pool.submit(client.post, "/v1/completions", json={"prompt": "xyz", "max_tokens": 20})
            while httpx.get(f"{replica.url}/health").json()["in_flight"] < 2:
                time.sleep(0.01)
            replica.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 5
            while True:  # it soon stops taking connections, while it keeps serving the two it has
                try:
                    httpx.get(f"{replica.url}/health", timeout=1)
                except httpx.TransportError:
                    break
                assert time.monotonic() < deadline, "the replica still accepts connections after SIGTERM"
                time.sleep(0.05)
            assert replica.proc.poll() is None
            events += list(lines)
            answer = plain.result(timeout=60)
        assert events[-1] == "data: [DONE]"
        chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
        assert len("".join(c["choices"][0]["text"] for c in chunks)) == 120
        assert chunks[-1]["choices"][0]["finish_reason"] == "length"
        assert answer.status_code == 200 and len(answer.json()["choices"][0]["text"]) == 20
        assert replica.proc.wait(timeout=30) == 0
    finally:
        if replica.proc.poll() is None:
            replica.proc.kill()


def test_unloadable_models_exit_2_with_one_clear_line(tmp_path: Path) -> None:
    iris = tmp_path / "iris"
    iris.mkdir()
    (iris / "model.json").write_text(json.dumps({"format": "enclave-model/1", "runtime": "sklearn"}))
    cases = {
        "missing": ("--runtime", "sklearn", "--model-dir", str(tmp_path / "nowhere")),
        "wrong-runtime": ("--runtime", "pytorch", "--model-dir", str(iris)),
        "no-upstream": ("--runtime", "openai-upstream"),
    }
    procs = {name: spawn(tmp_path / name, *args) for name, args in cases.items()}
    expected = {
        "missing": "does not exist",
        "wrong-runtime": "is for runtime 'sklearn', not 'pytorch'",
        "no-upstream": "needs an http(s) base URL",
    }
    for name, proc in procs.items():
        assert proc.wait(timeout=60) == 2, name
        stderr = (tmp_path / name / "stderr").read_text()
        assert stderr.startswith("replica: cannot start: ") and expected[name] in stderr, stderr
        assert len(stderr.strip().splitlines()) == 1 and not (tmp_path / name / "port").exists()
