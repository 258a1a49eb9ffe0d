"""The Ray executor against a real Ray head, and jobs through `enclave up` on Ray and Slurm at once.

Ray's head binds the machine's primary interface address, and tests here must not send
traffic there; so the module starts Ray with ``scripts/ray.sh`` inside a network namespace of
its own, joined to this (the root) namespace by a veth link of its own, the job API asking for
the token ray.sh generates — the README's recipe. The executor, `enclave up` and the CLI run
here, as an operator's would, beside the local Slurm's daemons on loopback. When no head of
the README's own (namespace ``enc-ray``) exists, the module's head is that one, and the
engines test runs ``examples/fleets/local-engines.toml`` exactly as shipped; otherwise the
head gets a namespace and address of its own and the test names them in a copy. The namespace
is deleted at the end.

Without ``ray`` or ``ip`` (or root) these tests skip, except in CI (CI=true), where they fail.
"""

from __future__ import annotations

import http.server
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from enclave.executors.base import Health
from enclave.executors.ray_exec import RayExecutor
from tests.conftest import Server, require_slurm
from tests.resilience.test_egress import PROBE, _Hello

REPO = Path(__file__).resolve().parents[2]

# One RayExecutor in a process of its own, driven by JSON lines on stdin.
HELPER = r"""
import json, sys, time
from dataclasses import asdict
from pathlib import Path
from enclave.executors.base import NOT_ENDED, ExecSpec, RunState
from enclave.executors.ray_exec import RayExecutor

ex = RayExecutor(Path(sys.argv[1]), {**json.loads(sys.argv[2]), "grace_s": 5})

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
        elif op == "recover":
            out = ex.recover(*args)
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


@dataclass(frozen=True)
class Head:
    ns: str
    addr: str
    temp: Path
    shipped: bool  # the README's own head: namespace enc-ray, 169.254.200.2, /tmp/ray-enc-ray

    @property
    def token_file(self) -> Path:
        return self.temp / "auth_token"

    @property
    def backend(self) -> dict[str, Any]:
        return {"type": "ray", "address": f"{self.addr}:6379", "token_file": str(self.token_file)}


def _namespaces() -> set[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in listed.splitlines() if line.strip()}


@pytest.fixture(scope="module")
def ray_head() -> Iterator[Head]:
    """A Ray head (1 node, this machine's CPUs) started by scripts/ray.sh, stopped at the end."""
    _require(importlib.util.find_spec("ray") is not None, "ray is not installed")
    _require(shutil.which("ip") is not None, "`ip` (iproute2) is missing")
    _require(os.geteuid() == 0, "network namespaces need root")
    if "enc-ray" not in _namespaces() and not Path("/tmp/ray-enc-ray").exists():
        head = Head("enc-ray", "169.254.200.2", Path("/tmp/ray-enc-ray"), shipped=True)
    else:  # someone's own head: leave it alone
        pid = os.getpid()
        ns = f"enc-ray-t{pid}"
        head = Head(ns, f"169.254.{201 + pid % 50}.{pid // 50 % 60 * 4 + 2}", Path(f"/tmp/ray-{ns}"), False)
    env = {
        **os.environ,
        "ENCLAVE_RAY_NETNS": head.ns,
        "ENCLAVE_RAY_ADDR": head.addr,
        "PYTHON": sys.executable,
    }
    started = subprocess.run(
        ["bash", "scripts/ray.sh", "start"], cwd=REPO, env=env, capture_output=True, text=True, timeout=180
    )
    try:
        assert started.returncode == 0, f"ray.sh start failed:\n{started.stdout}\n{started.stderr}"
        yield head
    finally:
        subprocess.run(["bash", "scripts/ray.sh", "stop"], cwd=REPO, env=env, capture_output=True, timeout=60)


class Remote:
    """A RayExecutor in a process of its own (a new one = a restarted server)."""

    def __init__(self, head: Head, root: Path, conf: dict[str, Any] | None = None) -> None:
        script = root.parent / "ray_helper.py"
        script.write_text(HELPER)
        env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        self.proc = subprocess.Popen(
            [sys.executable, str(script), str(root), json.dumps(conf or head.backend)],
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
def ex(ray_head: Head, root: Path) -> Iterator[Remote]:
    remote = Remote(ray_head, root)
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


def test_health(ex: Remote) -> None:
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


def test_resources_are_mapped_and_a_new_instance_adopts_jobs(ex: Remote, ray_head: Head, root: Path) -> None:
    """More CPUs than the cluster has: Ray keeps it pending; a second executor process (a
    restarted control plane) follows jobs the first one started, from their handles alone."""
    big = ex.call("start", spec("r1", ["echo", "should not run"], cpus_per_node=512))
    slow = ex.call("start", spec("r2", ["sh", "-c", "sleep 2; echo done; exit 4"]))
    other = Remote(ray_head, root)
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


def test_a_submission_whose_handle_was_lost_is_found_not_submitted_again(
    ex: Remote, ray_head: Head, root: Path
) -> None:
    """The control plane died between Ray taking the job and recording its handle: its
    successor finds that submission (and nothing for an attempt Ray never took)."""
    since = time.time()
    handle = ex.call("start", spec("h1", ["sh", "-c", "sleep 1; echo once"]))
    other = Remote(ray_head, root)  # a restarted control plane
    try:
        found = other.call("recover", "h1", "label-a", since)
        assert {k: found[k] for k in ("submission_id", "nonce", "dir", "nodes")} == {
            k: handle[k] for k in ("submission_id", "nonce", "dir", "nodes")
        }
        assert other.call("wait", found, 60) == {"state": "exited", "exit_code": 0, "signal": None}
        assert other.call("logs", found)["stdout"] == "once\n"
        assert other.call("recover", "h1", "label-a", time.time() + 5) is None
        assert other.call("recover", "never-started", "label-a", since) is None
    finally:
        other.close()


def test_the_job_api_answers_only_with_rays_token(ray_head: Head, tmp_path: Path) -> None:
    """Ray's job API runs whatever it is sent: over the link it asks for the token, and the
    executor sends it only from a file nobody else may read, never through a link."""
    assert httpx.post(f"http://{ray_head.addr}:8265/api/jobs/", json={"entrypoint": "id"}).status_code == 401

    def health(**conf: str) -> Health:
        executor = RayExecutor(tmp_path / "sandboxes", {**ray_head.backend, "token_file": None, **conf})
        try:
            return executor.health()
        finally:
            executor.close()

    assert ray_head.token_file.stat().st_mode & 0o077 == 0
    wrong, loose, link = tmp_path / "wrong", tmp_path / "loose", tmp_path / "link"
    wrong.write_text("0" * 64)
    wrong.chmod(0o600)
    loose.write_bytes(ray_head.token_file.read_bytes())
    loose.chmod(0o640)
    link.symlink_to(ray_head.token_file)
    refusals = {
        None: "wants a token",
        str(wrong): "refused the token",
        str(loose): "others may read it",
        str(link): "symbolic links",
        str(tmp_path / "missing"): "No such file",
    }
    for token_file, why in refusals.items():
        got = health(**({"token_file": token_file} if token_file else {}))
        assert not got.healthy and why in got.detail, (token_file, got)
    assert health(token_file=str(ray_head.token_file)).healthy


def test_a_job_sees_nothing_of_rays_environment_or_token(ex: Remote, ray_head: Head) -> None:
    """The Ray supervisor's environment (Ray's token path among it) stops at the sandbox."""
    probe = f"env; cat {ray_head.token_file} 2>&1; ls {ray_head.temp} 2>&1; echo end"
    handle = ex.call("start", spec("e1", ["sh", "-c", probe]))
    assert ex.call("wait", handle, 60)["exit_code"] == 0
    out = ex.call("logs", handle)["stdout"]
    assert out.rstrip().endswith("end") and "No such file" in out
    assert "RAY_" not in out and ray_head.token_file.read_text().strip() not in out
    names = {line.split("=", 1)[0] for line in out.splitlines() if "=" in line}
    assert names <= {
        "ENCLAVE_JOB_ID",
        "ENCLAVE_REGION",
        "ENCLAVE_CPUS",
        "HOME",
        "TMPDIR",
        "PWD",
        "PATH",
        "LANG",
    }


# -- end to end: one `enclave up` driving Ray and Slurm at once -----------------------------------
TS = "TOP SECRET//SI/TK/HCS/G"
ENGINES = REPO / "examples" / "fleets" / "local-engines.toml"


def engines_fleet(head: Head, tmp_path: Path) -> Path:
    """The README's engines fleet: the shipped file itself for the README's own head, else a
    copy naming this module's head instead."""
    if head.shipped:
        return ENGINES
    shipped = 'address = "169.254.200.2:6379", token_file = "/tmp/ray-enc-ray/auth_token"'
    text = ENGINES.read_text()
    assert shipped in text
    path = tmp_path / "local-engines.toml"
    path.write_text(text.replace(shipped, f'address = "{head.addr}:6379", token_file = "{head.token_file}"'))
    return path


def test_one_control_plane_drives_ray_and_slurm(
    ray_head: Head, tmp_path: Path, live_server: Callable[..., Server]
) -> None:
    require_slurm()
    server = live_server(tmp_path / "home", "--fleet", str(engines_fleet(ray_head, tmp_path)))
    regions = {r["name"]: r for r in json.loads(server.run("regions", "--json").stdout)}
    assert {name: (r["backend"]["type"], r["healthy"]) for name, r in regions.items()} == {
        "gov-east": ("local", True),
        "secret-west": ("slurm", True),
        "ts-east": ("ray", True),
    }, regions
    admin = server.admin_token
    server.run("admin", "agency", "create", "nro", token=admin)
    server.run("admin", "user", "create", "tess", "--agency", "nro", "--clearance", TS, token=admin)
    token = server.run(
        "admin", "token", "create", "--user", "tess", "--label", TS, token=admin
    ).stdout.strip()
    secret = server.run(
        "admin", "token", "create", "--user", "tess", "--label", "SECRET", token=admin
    ).stdout.strip()

    def submit(*command: str, as_: str = token, label: str = TS) -> str:
        args = ["job", "submit", "--label", label, "--cpus", "1", "--walltime", "120", "--", *command]
        return server.run(*args, token=as_).stdout.strip()

    def ended(job: str, as_: str = token) -> dict[str, Any]:
        server.run("job", "watch", job, "--interval", "0.2", token=as_, check=False)
        shown: dict[str, Any] = json.loads(server.run("job", "show", job, "--json", token=as_).stdout)
        return shown

    hello = 'echo "hello from $ENCLAVE_REGION"; echo oops >&2'
    on_ray, on_slurm = submit("sh", "-c", hello), submit("sh", "-c", hello, as_=secret, label="SECRET")
    shown = ended(on_ray)
    assert (shown["state"], shown["exit_code"], shown["region"]) == ("completed", 0, "ts-east")
    assert server.run("job", "logs", on_ray, token=token).stdout == "hello from ts-east\noops\n"
    shown = ended(on_slurm, secret)
    assert (shown["state"], shown["exit_code"], shown["region"]) == ("completed", 0, "secret-west")
    assert server.run("job", "logs", on_slurm, token=secret).stdout == "hello from secret-west\n"
    # Invisible below its label, like any other job.
    low = server.run("job", "logs", on_ray, token=secret, check=False)
    assert low.returncode != 0 and re.search(r"not found|no such", low.stderr, re.I)

    looping = submit("sh", "-c", 'trap "echo got TERM; exit 0" TERM; echo ready; while :; do sleep 0.2; done')
    deadline = time.monotonic() + 60
    while "ready" not in server.run("job", "logs", looping, token=token).stdout:  # live, from Ray
        assert time.monotonic() < deadline, "the job never printed 'ready'"
        time.sleep(0.5)
    server.run("job", "cancel", looping, token=token)
    assert ended(looping)["state"] == "cancelled"
    assert server.run("job", "logs", looping, token=token).stdout.endswith("got TERM\n")

    # The control plane dies while a job runs on Ray; its successor adopts the job.
    sleeper = submit("sh", "-c", "echo started; sleep 4; echo done; exit 5")
    deadline = time.monotonic() + 60
    while "started" not in server.run("job", "logs", sleeper, token=token).stdout:
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.5)
    server.stop(kill=True)
    server.start()
    shown = ended(sleeper)
    assert (shown["state"], shown["exit_code"], shown["attempts"]) == ("failed", 5, 0)
    assert server.run("job", "logs", sleeper, token=token).stdout == "started\ndone\n"


def test_a_ray_job_reaches_only_what_its_region_lists(ray_head: Head, root: Path) -> None:
    """`network = "allow"` on Ray: the egress relay runs on the Ray node (in Ray's namespace
    here) and the job reaches the listed service on the host's end of the link, nothing else."""
    host_end = ray_head.addr.rsplit(".", 1)[0] + f".{int(ray_head.addr.rsplit('.', 1)[1]) - 1}"
    started = [http.server.ThreadingHTTPServer((host_end, 0), _Hello) for _ in range(2)]
    for server in started:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    listed, unlisted = (s.server_address[1] for s in started)
    conf = {**ray_head.backend, "network": "allow", "network_allow": [f"{host_end}:{listed}"]}
    remote = Remote(ray_head, root, conf)
    try:
        probe = ["python3", "-c", PROBE, str(listed), str(unlisted), host_end]
        handle = remote.call("start", spec("n1", probe, memory_mb=1024))
        assert remote.call("wait", handle, 90)["exit_code"] == 0, remote.call("logs", handle)
        out = remote.call("logs", handle)["stdout"]
        got = json.loads(out.strip().splitlines()[-1])
        assert got["proxy"] == "http://127.0.0.1:3128"
        assert got["listed"] == f"hello {listed} /a"
        assert got["tunnel"] == ["HTTP/1.1 200 Connection established", f"hello {listed} /tunnel"]
        assert got["unlisted"] == 403 and got["connect-metadata"] == "HTTP/1.1 403 Forbidden"
        assert got["direct-host"].startswith("error") and got["direct-loopback"].startswith("error")
        assert f"refused CONNECT 127.0.0.1:{unlisted}" in out
    finally:
        remote.close()
        for server in started:
            server.shutdown()
            server.server_close()
