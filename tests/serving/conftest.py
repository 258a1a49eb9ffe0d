"""Real replica processes (``python -m enclave.serving.replica``) for the serving tests.

Each is started as the executor would start it, waited for through its port file, and stopped
with SIGTERM at the end; a replica that does not then exit 0 fails the test that owned it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import OpenAI

from tests.serving.models import write_char_model, write_sklearn_model

START_TIMEOUT_S = 90


@dataclass
class Replica:
    proc: subprocess.Popen[bytes]
    port: int
    workdir: Path
    started_s: float  # seconds from spawn to the port file

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def openai(self) -> OpenAI:
        return OpenAI(base_url=f"{self.url}/v1", api_key="x", max_retries=0)

    @property
    def stderr(self) -> str:
        return (self.workdir / "stderr").read_text()

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)


def spawn(workdir: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    workdir.mkdir(parents=True, exist_ok=True)
    with (workdir / "stderr").open("wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "enclave.serving.replica", *args, "--port-file", str(workdir / "port")],
            cwd=workdir,
            env={**os.environ, "ENCLAVE_CPUS": "1", **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )


def start_replica(workdir: Path, *args: str, env: dict[str, str] | None = None) -> Replica:
    began = time.monotonic()
    proc = spawn(workdir, *args, env=env)
    port_file = workdir / "port"
    while not port_file.exists():
        if proc.poll() is not None:
            raise AssertionError(f"replica exited {proc.returncode}: {(workdir / 'stderr').read_text()}")
        if time.monotonic() - began > START_TIMEOUT_S:
            proc.kill()
            raise AssertionError(
                f"replica not ready in {START_TIMEOUT_S}s: {(workdir / 'stderr').read_text()}"
            )
        time.sleep(0.02)
    return Replica(proc, int(port_file.read_text()), workdir, time.monotonic() - began)


@pytest.fixture(scope="session")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Replica]]:
    """Start replicas (in a fresh directory each); all must exit 0 on SIGTERM at the end of the session."""
    started: list[Replica] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Replica:
        replica = start_replica(tmp_path_factory.mktemp("replica"), *args, env=env)
        started.append(replica)
        return replica

    yield start
    codes = {r.url: (r.stop(), r.stderr) for r in started}
    bad = {url: result for url, result in codes.items() if result[0] != 0}
    assert not bad, f"replicas did not exit 0 on SIGTERM: {bad}"


@pytest.fixture(scope="session")
def minilm(replicas: Callable[..., Replica]) -> Replica:
    return replicas("--runtime", "sentence-embeddings", "--model-dir", "minilm", "--name", "minilm")


@pytest.fixture(scope="session")
def char_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_char_model(tmp_path_factory.mktemp("charlm"))


@pytest.fixture(scope="session")
def charlm(replicas: Callable[..., Replica], char_dir: Path) -> Replica:
    return replicas("--runtime", "pytorch", "--model-dir", str(char_dir), "--name", "charlm")


@pytest.fixture(scope="session")
def sklearn_replica(replicas: Callable[..., Replica], tmp_path_factory: pytest.TempPathFactory) -> Replica:
    model_dir = write_sklearn_model(tmp_path_factory.mktemp("iris"))
    return replicas("--runtime", "sklearn", "--model-dir", str(model_dir), "--name", "iris")


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    """The OpenAI error object of a failed answer, after checking its status and shape."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert "Traceback" not in error["message"]
    return error
