"""The Ray executor against a real Ray head, and one job through `enclave up` on a Ray region.

Ray's head binds the machine's primary interface address, and tests here must not send
traffic there; so the module starts Ray with ``scripts/ray.sh`` inside a network namespace of
its own (only ``lo`` up: Ray uses 127.0.0.1), and everything that talks to Ray runs in that
namespace too: the executor calls go through a small helper process started with
``ip netns exec`` (one JSON request per line on stdin, one answer per line on stdout), and the
end-to-end test runs `enclave up` and the CLI there. The namespace is deleted at the end.

Without ``ray`` or ``ip`` (or root) these tests skip, except in CI (CI=true), where they fail.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CLI, free_port

REPO = Path(__file__).resolve().parents[2]

# Runs inside the namespace: one RayExecutor, driven by JSON lines on stdin.
HELPER = r"""
import json, sys, time
from dataclasses import asdict
from pathlib import Path
from enclave.executors.base import NOT_ENDED, ExecSpec, RunState
from enclave.executors.ray_exec import RayExecutor

ex = RayExecutor(Path(sys.argv[1]), {"type": "ray", "address": "127.0.0.1:6379", "grace_s": 5})

def status(s):
    return {"state": str(s.state), "exit_code": s.exit_code, "signal": s.signal}

def logs(h):
    return {k: p.read_text() if p.exists() else None for k, p in ex.log_paths(h).items()}

def wait(h, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = ex.poll(h)
        if s.state not in NOT_ENDED:
            return status(s)
        time.sleep(0.01)
    return status(ex.poll(h))

def wait_output(h, text, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = logs(h)["stdout"] or ""
        if text in out:
            return out
        ex.poll(h)
        time.sleep(0.2)
    return logs(h)["stdout"]

print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    req = json.loads(line)
    op, args = req["op"], req.get("args", [])
    try:
        if op == "start":
            out = ex.start(ExecSpec(**args[0]))
        elif op == "poll":
            out = status(ex.poll(args[0]))
        elif op in ("cancel", "kill", "cleanup"):
            out = getattr(ex, op)(*args)
        elif op == "logs":
            out = logs(args[0])
        elif op == "wait":
            out = wait(*args)
        elif op == "wait_output":
            out = wait_output(*args)
        elif op == "health":
            out = asdict(ex.health())
        else:
            raise ValueError(op)
        print(json.dumps({"ok": out}), flush=True)
    except Exception as exc:
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
"""


def _require(ok: bool, why: str) -> None:
    if ok:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why} (CI installs it: pip install 'ray[default]', iproute2, root)")
    pytest.skip(why)


@pytest.fixture(scope="module")
def ray_ns() -> Iterator[str]:
    """A Ray head (1 node, this machine's CPUs) in a namespace of this module's own."""
    _require(importlib.util.find_spec("ray") is not None, "ray is not installed")
    _require(shutil.which("ip") is not None, "`ip` (iproute2) is missing")
    _require(os.geteuid() == 0, "network namespaces need root")
    ns = f"enc-ray-t{os.getpid()}"
    env = {**os.environ, "ENCLAVE_RAY_NETNS": ns, "PYTHON": sys.executable}
    started = subprocess.run(
        ["bash", "scripts/ray.sh", "start"], cwd=REPO, env=env, capture_output=True, text=True, timeout=180
    )
    try:
        assert started.returncode == 0, f"ray.sh start failed:\n{started.stdout}\n{started.stderr}"
        yield ns
    finally:
        subprocess.run(["bash", "scripts/ray.sh", "stop"], cwd=REPO, env=env, capture_output=True, timeout=60)


class Remote:
    """A RayExecutor in its own process inside the namespace (a new one = a restarted server)."""

    def __init__(self, ns: str, root: Path) -> None:
        script = root.parent / "ray_helper.py"
        script.write_text(HELPER)
        env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, str(script), str(root)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert json.loads(self._line()) == {"ready": True}

    def _line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, "the helper process died"
        return line

    def call(self, op: str, *args: Any) -> Any:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": op, "args": list(args)}) + "\n")
        self.proc.stdin.flush()
        answer = json.loads(self._line())
        if "error" in answer:
            raise AssertionError(answer["error"])
        return answer["ok"]

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)
        if self.proc.stdout:
            self.proc.stdout.close()


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ray") / "sandboxes"


@pytest.fixture(scope="module")
def ex(ray_ns: str, root: Path) -> Iterator[Remote]:
    remote = Remote(ray_ns, root)
    yield remote
    remote.close()


def spec(job_id: str, command: list[str], **kw: Any) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "label_key": "label-a",
        "command": command,
        "env": {},
        "nodes": 1,
        "cpus_per_node": 1,
        "memory_mb": 256,
        "gpus_per_node": 0,
        "walltime_s": 60,
        "region": "ts-east",
        "pool": "cpu",
        **kw,
    }


def test_output_environment_quoting_and_exit_code(ex: Remote, root: Path) -> None:
    tricky = 'it\'s "$HOME" ${X} `id` \\ ; ü\nsecond line'
    script = (
        'printf "%s|" "$TRICKY" "$1" "$ENCLAVE_JOB_ID" "$ENCLAVE_REGION"; echo; echo to-stderr >&2; exit 3'
    )
    handle = ex.call("start", spec("q1", ["sh", "-c", script, "arg0", "a b 'c' $d"], env={"TRICKY": tricky}))
    assert handle["dir"] == str(root / "label-a" / "q1")
    assert (root / "label-a" / "q1").stat().st_mode & 0o077 == 0
    ok = ex.call("start", spec("q2", ["printf", "no newline at the end"]))
    assert ex.call("wait", handle, 60) == {"state": "exited", "exit_code": 3, "signal": None}
    assert ex.call("wait", ok, 60) == {"state": "exited", "exit_code": 0, "signal": None}
    logs = ex.call("logs", handle)
    # Ray merges stderr into the one job log: both come back in stdout, nothing of Ray's own.
    assert logs["stdout"] == f"{tricky}|a b 'c' $d|q1|ts-east|\nto-stderr\n"
    assert logs["stderr"] == ""
    assert ex.call("logs", ok)["stdout"] == "no newline at the end"
    for h in (handle, ok):
        ex.call("cleanup", h)
    assert not (root / "label-a" / "q1").exists()


def test_health(ex: Remote, ray_ns: str, root: Path) -> None:
    health = ex.call("health")
    assert health["healthy"] is True and health["detail"].startswith("Ray 2.")


def test_signal_death_is_128_plus_signal(ex: Remote) -> None:
    handle = ex.call("start", spec("s1", ["sh", "-c", "echo before; kill -KILL $$"]))
    assert ex.call("wait", handle, 60) == {"state": "exited", "exit_code": 137, "signal": 9}
    assert ex.call("logs", handle)["stdout"] == "before\n"


def test_cancel_delivers_sigterm(ex: Remote) -> None:
    script = 'trap "echo got TERM; exit 7" TERM; echo ready; while :; do sleep 0.1; done'
    handle = ex.call("start", spec("c1", ["sh", "-c", script]))
    assert "ready" in ex.call("wait_output", handle, "ready", 60)
    # Statuses come from a background refresh of Ray's: "running" follows within a period.
    deadline = time.monotonic() + 10
    while (state := ex.call("poll", handle)["state"]) == "queued" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert state == "running"
    ex.call("cancel", handle, 5.0)
    assert ex.call("wait", handle, 30) == {"state": "exited", "exit_code": 7, "signal": None}
    assert "got TERM" in ex.call("logs", handle)["stdout"]
    # A command that ignores SIGTERM is killed when the grace (5 s here) ends.
    stubborn = ex.call("start", spec("c2", ["sh", "-c", "trap '' TERM; echo ready; sleep 60"]))
    assert "ready" in ex.call("wait_output", stubborn, "ready", 60)
    t0 = time.monotonic()
    ex.call("cancel", stubborn, 5.0)
    assert ex.call("wait", stubborn, 30) == {"state": "exited", "exit_code": 137, "signal": 9}
    assert 4.0 <= time.monotonic() - t0 < 20


def test_gang_needs_all_its_nodes(ex: Remote) -> None:
    """Two nodes, STRICT_SPREAD, on a one-node cluster: nothing starts, and cancel ends it."""
    handle = ex.call("start", spec("g1", ["sh", "-c", "echo RANK-STARTED"], nodes=2))
    out = ex.call("wait_output", handle, "waiting for a gang of 2 nodes", 60)
    assert "waiting for a gang of 2 nodes" in out and "STRICT_SPREAD" in out
    time.sleep(2)
    assert ex.call("poll", handle)["state"] == "running"  # its entrypoint waits for the gang
    assert "RANK-STARTED" not in ex.call("logs", handle)["stdout"]
    ex.call("cancel", handle, 5.0)
    assert ex.call("wait", handle, 30) == {"state": "exited", "exit_code": 143, "signal": 15}
    assert "RANK-STARTED" not in ex.call("logs", handle)["stdout"]


def test_resources_are_mapped_and_a_new_instance_adopts_jobs(ex: Remote, ray_ns: str, root: Path) -> None:
    """More CPUs than the cluster has: Ray keeps it pending; a second executor process (a
    restarted control plane) follows jobs the first one started, from their handles alone."""
    big = ex.call("start", spec("r1", ["echo", "should not run"], cpus_per_node=512))
    slow = ex.call("start", spec("r2", ["sh", "-c", "sleep 2; echo done; exit 4"]))
    other = Remote(ray_ns, root)
    try:
        assert other.call("wait", slow, 60) == {"state": "exited", "exit_code": 4, "signal": None}
        assert other.call("logs", slow)["stdout"] == "done\n"
        # Not ended (its entrypoint waits inside Ray for the CPUs).
        assert other.call("poll", big)["state"] in ("queued", "running")
        assert ex.call("poll", big)["state"] in ("queued", "running")
        assert other.call("logs", big)["stdout"] == ""
        other.call("cancel", big, 5.0)
        assert ex.call("wait", big, 30) == {"state": "exited", "exit_code": 143, "signal": 15}
        assert "cancelled before Ray started" in ex.call("logs", big)["stderr"]
        other.call("cleanup", slow)
        # Ray no longer knows the job once cleaned up: a stale handle reads as lost.
        stale = {**slow, "dir": str(root / "gone")}
        assert ex.call("wait", stale, 10)["state"] == "lost"
    finally:
        other.close()


# -- end to end: `enclave up` with a Ray region ---------------------------------------------------
TS = "TOP SECRET//SI/TK/HCS/G"


def ray_fleet(path: Path) -> Path:
    text = (REPO / "src/enclave/fleets/local.toml").read_text()
    head, ts = text.split('name = "ts-east"')
    ts = ts.replace(
        'backend = { type = "local" }', 'backend = { type = "ray", address = "127.0.0.1:6379" }', 1
    )
    path.write_text(head + 'name = "ts-east"' + ts)
    return path


class NsServer:
    """`enclave up` and the CLI, both inside the namespace."""

    def __init__(self, ns: str, home: Path, fleet: Path) -> None:
        self.ns, self.home = ns, home
        self.url = f"http://127.0.0.1:{free_port()}"
        self.env = {**os.environ, "ENCLAVE_HOME": str(home), "ENCLAVE_URL": self.url, "COLUMNS": "200"}
        self.env.pop("ENCLAVE_TOKEN", None)
        port = self.url.rsplit(":", 1)[1]
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, *CLI, "up", "--port", port, "--fleet", str(fleet)],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 60
        while not (home / "admin.token").exists() or self.run("job", "list", check=False).returncode:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError("enclave up did not start in the namespace")
            time.sleep(0.3)

    def run(
        self, *args: str, token: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        env = dict(self.env)
        token = token or (self.home / "admin.token").read_text().strip()
        env["ENCLAVE_TOKEN"] = token
        proc = subprocess.run(
            ["ip", "netns", "exec", self.ns, *CLI, *args], env=env, capture_output=True, text=True, timeout=90
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"enclave {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
        return proc

    def stop(self, kill: bool = False) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            self.proc.wait(timeout=30)
        if self.proc.stderr is None:
            return ""
        with self.proc.stderr:
            return self.proc.stderr.read()


def test_enclave_up_runs_jobs_on_a_ray_region(ray_ns: str, tmp_path: Path) -> None:
    server = NsServer(ray_ns, tmp_path / "home", ray_fleet(tmp_path / "fleet.toml"))
    try:
        regions = {r["name"]: r for r in json.loads(server.run("regions", "--json").stdout)}
        assert regions["ts-east"]["backend"]["type"] == "ray" and regions["ts-east"]["healthy"] is True
        server.run("admin", "agency", "create", "nro")
        server.run("admin", "user", "create", "tess", "--agency", "nro", "--clearance", TS)
        token = server.run("admin", "token", "create", "--user", "tess", "--label", TS).stdout.strip()

        def submit(*command: str) -> str:
            return server.run(
                "job",
                "submit",
                "--label",
                TS,
                "--cpus",
                "1",
                "--walltime",
                "120",
                "--",
                *command,
                token=token,
            ).stdout.strip()

        job = submit("sh", "-c", 'echo "hello from $ENCLAVE_REGION"; echo oops >&2')
        watched = server.run("job", "watch", job, "--interval", "0.2", token=token, check=False)
        assert watched.returncode == 0, watched.stdout + watched.stderr
        shown = json.loads(server.run("job", "show", job, "--json", token=token).stdout)
        assert shown["state"] == "completed" and shown["exit_code"] == 0 and shown["region"] == "ts-east"
        assert server.run("job", "logs", job, token=token).stdout == "hello from ts-east\noops\n"
        # Invisible below its label, like any other job.
        low = server.run("job", "logs", job, check=False)
        assert low.returncode != 0 and re.search(r"not found|no such", low.stderr, re.I)

        looping = submit(
            "sh", "-c", 'trap "echo got TERM; exit 0" TERM; echo ready; while :; do sleep 0.2; done'
        )
        deadline = time.monotonic() + 60
        while "ready" not in server.run("job", "logs", looping, token=token).stdout:  # live, from Ray
            assert time.monotonic() < deadline, "the job never printed 'ready'"
            time.sleep(0.5)
        server.run("job", "cancel", looping, token=token)
        server.run("job", "watch", looping, "--interval", "0.2", token=token, check=False)
        shown = json.loads(server.run("job", "show", looping, "--json", token=token).stdout)
        assert shown["state"] == "cancelled"
        assert server.run("job", "logs", looping, token=token).stdout.endswith("got TERM\n")

        # The control plane dies while a job runs on Ray; its successor adopts the job.
        sleeper = submit("sh", "-c", "echo started; sleep 4; echo done; exit 5")
        deadline = time.monotonic() + 60
        while "started" not in server.run("job", "logs", sleeper, token=token).stdout:
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.5)
        server.stop(kill=True)
        server = NsServer(ray_ns, tmp_path / "home", tmp_path / "fleet.toml")
        watched = server.run("job", "watch", sleeper, "--interval", "0.2", token=token, check=False)
        assert watched.returncode == 5, watched.stdout + watched.stderr
        shown = json.loads(server.run("job", "show", sleeper, "--json", token=token).stdout)
        assert shown["state"] == "failed" and shown["exit_code"] == 5 and shown["attempts"] == 0
        assert server.run("job", "logs", sleeper, token=token).stdout == "started\ndone\n"
    finally:
        stderr = server.stop()
    assert "Traceback" not in stderr, stderr
