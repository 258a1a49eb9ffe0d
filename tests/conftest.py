"""Shared fixtures: a control-plane context on SQLite and on a real PostgreSQL server.

``scripts/test.sh`` starts a throwaway PostgreSQL and exports ``ENCLAVE_TEST_PG_URL``.
Tests that need it fail (not skip) when it is missing: the README's test command always
provides it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from enclave.api.app import create_app
from enclave.services.context import Context, Settings

REPO = Path(__file__).resolve().parents[1]
PG_ENV = "ENCLAVE_TEST_PG_URL"


def scratch_fleet(tmp_path: Path, scratch: Path) -> Path:
    """The built-in ``local`` fleet with a scratch file system in every region: confined jobs
    see nothing of the host but their sandbox and ``$ENCLAVE_SCRATCH`` (per label and agency),
    so that is where a test's jobs leave what the test checks afterwards."""
    from importlib import resources

    text = resources.files("enclave.fleets").joinpath("local.toml").read_text(encoding="utf-8")
    fleet = tmp_path / "scratch-fleet.toml"
    fleet.write_text(
        text.replace('backend = { type = "local" }', f'backend = {{ type = "local", scratch = "{scratch}" }}')
    )
    return fleet


def scratch_file(scratch: Path, name: str) -> Path:
    """A file jobs of any label and agency left in ``scratch`` (tests run one label each)."""
    found = list(scratch.glob(f"*/*/{name}"))
    assert len(found) <= 1, found
    return found[0] if found else scratch / "none" / "none" / name


def pg_url() -> str:
    url = os.environ.get(PG_ENV)
    if not url:
        pytest.fail(f"{PG_ENV} is not set: run the suite with `bash scripts/test.sh` (it starts PostgreSQL)")
    return url


def reset_pg(url: str) -> None:
    """Drop everything so each test starts from an empty, freshly migrated schema."""
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+pysqlite:///{tmp_path / 'enclave.db'}"
    url = pg_url()
    reset_pg(url)
    return url


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def ctx(home: Path, db_url: str) -> Iterator[Context]:
    context = Context(Settings(home=home, db_url=db_url))
    yield context
    context.close()


@pytest.fixture
def sqlite_ctx(home: Path, tmp_path: Path) -> Iterator[Context]:
    context = Context(Settings(home=home, db_url=f"sqlite+pysqlite:///{tmp_path / 'enclave.db'}"))
    yield context
    context.close()


@pytest.fixture
def client(ctx: Context) -> Iterator[TestClient]:
    """The real app (bootstrapped) over the parametrised store; admin token on the client."""
    with TestClient(create_app(ctx=ctx)) as c:
        token = (ctx.settings.home / "admin.token").read_text().strip()
        c.headers["Authorization"] = f"Bearer {token}"
        yield c
    kill_sandboxes(ctx.settings.home)


def kill_sandboxes(home: Path) -> None:
    """End every confined process of a test's control plane (its jobs and model replicas
    outlive the control plane by design, so that a restarted one adopts them)."""
    from enclave.executors import confine

    confine.end(confine.sandboxes_of(home))


# -- waiting on real processes -----------------------------------------------------------------
def wait_for(path: Path | Callable[[], bool], timeout_s: float = 30.0) -> None:
    """Until a file a job writes appears (or ``path()`` holds)."""
    deadline = time.monotonic() + timeout_s
    while not (path() if callable(path) else path.exists()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} never appeared")
        time.sleep(0.01)


def wait_state(api: httpx.Client, job: str, states: set[str], timeout_s: float = 60) -> dict[str, Any]:
    """Until ``GET /v1/jobs/{job}`` shows one of ``states``; returns the job."""
    deadline = time.monotonic() + timeout_s
    while True:
        shown = api.get(f"/v1/jobs/{job}").json()
        if shown["state"] in states:
            return dict(shown)
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job} stuck in {shown['state']}: {shown.get('reason')}")
        time.sleep(0.05)


# -- a real `enclave up` in a subprocess ------------------------------------------------------
CLI = [sys.executable, "-m", "enclave"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    home: Path
    url: str
    port: int
    args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        env = {**os.environ, "ENCLAVE_HOME": str(self.home)}
        self.proc = subprocess.Popen(
            [*CLI, "up", "--port", str(self.port), *self.args], env=env, stderr=subprocess.PIPE, text=True
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"enclave up did not start: {self.proc.stderr.read() if self.proc.stderr else ''}"
                )
            time.sleep(0.1)

    def stop(self, kill: bool = False) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            self.proc.wait(timeout=30)
        if self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

    @property
    def admin_token(self) -> str:
        return (self.home / "admin.token").read_text().strip()

    def run(
        self, *args: str, token: str | None = None, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run the CLI against this server."""
        env = {**os.environ, "ENCLAVE_HOME": str(self.home), "ENCLAVE_URL": self.url, "COLUMNS": "200"}
        env.pop("ENCLAVE_TOKEN", None)
        if token is not None:
            env["ENCLAVE_TOKEN"] = token
        proc = subprocess.run([*CLI, *args], env=env, input=stdin, capture_output=True, text=True, timeout=60)
        if check and proc.returncode != 0:
            raise AssertionError(f"enclave {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
        return proc


def require_slurm() -> None:
    """The local Slurm cluster up (scripts/slurm.sh), or a skip — a failure in CI (CI=true)."""
    missing = [tool for tool in ("slurmctld", "slurmd", "munged", "sbatch") if shutil.which(tool) is None]
    if missing:
        why = f"Slurm is not installed ({', '.join(missing)} missing): run `bash scripts/slurm.sh install`"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    started = subprocess.run(
        ["bash", str(REPO / "scripts" / "slurm.sh"), "start"], capture_output=True, text=True, timeout=120
    )
    if started.returncode != 0:
        pytest.fail(f"scripts/slurm.sh start failed: {started.stderr}")


@pytest.fixture
def live_server() -> Iterator[Callable[..., Server]]:
    """Start real `enclave up` processes; all are stopped when the test ends."""
    started: list[Server] = []

    def start(home: Path, *args: str) -> Server:
        port = free_port()
        server = Server(home, f"http://127.0.0.1:{port}", port, list(args))
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
        kill_sandboxes(server.home)
