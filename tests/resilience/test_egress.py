"""A region's network_allow list, attacked by a real job: it reaches what is listed, nothing else.

Two real HTTP servers run on this machine's loopback: one listed (by address), one not (listed
only by the name ``localhost``, which must never lead to a loopback address). A confined job,
on the local executor and on Slurm, tries every way out it has: the proxy it is given, a
CONNECT tunnel, the relay's socket spoken to directly with garbage, a direct connection to
the host's loopback and to its other addresses. Afterwards nothing of the relay is left.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from enclave.executors.base import NOT_ENDED, ExecSpec, Status
from enclave.executors.confine import EGRESS_SCRIPT, job_uid
from enclave.executors.local import LocalExecutor
from enclave.executors.slurm import SlurmExecutor
from enclave.fleet import LocalBackend

REPO = Path(__file__).resolve().parents[2]

PROBE = r"""
import json, os, socket, sys, urllib.request
listed, unlisted, host_ip = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
proxy = os.environ["HTTP_PROXY"]
if host_ip == "127.0.0.1":  # no other address here: loopback is on NO_PROXY, go through anyway
    os.environ["no_proxy"] = os.environ["NO_PROXY"] = ""
opener = urllib.request.build_opener()  # the proxy as the environment gives it
got = {"proxy": proxy}
def get(key, url):
    try:
        got[key] = opener.open(url, timeout=10).read().decode()
    except urllib.error.HTTPError as exc:
        got[key] = exc.code
    except OSError as exc:
        got[key] = "error: " + str(exc)
get("listed", f"http://{host_ip}:{listed}/a")
get("unlisted", f"http://{host_ip}:{unlisted}/b")
def raw(key, data, read=4096):
    try:
        with socket.create_connection(("127.0.0.1", 3128), timeout=10) as s:
            s.sendall(data)
            got[key] = s.recv(read).decode(errors="replace").split("\r\n")[0]
    except OSError as exc:
        got[key] = "error: " + str(exc)
raw("by-name-to-loopback", f"GET http://localhost:{unlisted}/c HTTP/1.1\r\nHost: x\r\n\r\n".encode())
raw("connect-unlisted", f"CONNECT 127.0.0.1:{unlisted} HTTP/1.1\r\n\r\n".encode())
raw("connect-metadata", b"CONNECT 169.254.169.254:80 HTTP/1.1\r\n\r\n")
raw("https-absolute", f"GET https://{host_ip}:{listed}/ HTTP/1.1\r\n\r\n".encode())
raw("huge-head", b"GET http://%s:%d/ HTTP/1.1\r\nX: " % (host_ip.encode(), listed) + b"y" * 100_000 + b"\r\n\r\n")
raw("garbage", b"\x16\x03\x01 not http at all\r\n\r\n")
with socket.create_connection(("127.0.0.1", 3128), timeout=10) as s:
    s.sendall(f"CONNECT {host_ip}:{listed} HTTP/1.1\r\n\r\n".encode())
    first = s.recv(4096).decode()
    s.sendall(b"GET /tunnel HTTP/1.0\r\n\r\n")
    body = b""
    while chunk := s.recv(4096):
        body += chunk
    got["tunnel"] = [first.split("\r\n")[0], body.decode().rsplit("\r\n", 1)[-1]]
for key, addr in (("direct-loopback", ("127.0.0.1", listed)), ("direct-host", (host_ip, listed))):
    try:
        socket.create_connection(addr, timeout=3).close()
        got[key] = "connected"
    except OSError as exc:
        got[key] = "error: " + str(exc)
print(json.dumps(got))
"""


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"hello {self.server.server_address[1]} {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def servers() -> Iterator[tuple[int, int]]:
    started = [http.server.ThreadingHTTPServer(("0.0.0.0", 0), _Hello) for _ in range(2)]  # noqa: S104
    for server in started:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield started[0].server_address[1], started[1].server_address[1]
    for server in started:
        server.shutdown()
        server.server_close()


def _host_ip() -> str:
    """An address of this machine other than loopback (the route a job's network would take)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: only the route is looked up
            return str(s.getsockname()[0])
        except OSError:
            return "127.0.0.1"


def _relays(sandbox: str) -> list[int]:
    """The egress relays serving the job whose sandbox lies at (or under) ``sandbox``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if EGRESS_SCRIPT.encode() in cmdline.split(b"\0") and sandbox.encode() in cmdline:
            found.append(int(pid))
    return found


def _uid(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Uid:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _wait(ex: Any, handle: dict[str, Any], timeout_s: float = 60) -> Status:
    deadline = time.monotonic() + timeout_s
    while (status := ex.poll(handle)).state in NOT_ENDED:
        assert time.monotonic() < deadline, "the job did not end"
        time.sleep(0.05)
    return status


def _spec(job_id: str, command: list[str]) -> ExecSpec:
    return ExecSpec(
        job_id=job_id,
        label_key="lk",
        command=command,
        env={},
        nodes=1,
        cpus_per_node=1,
        memory_mb=1024,
        gpus_per_node=0,
        walltime_s=60,
        region="r",
        pool="p",
        agency="a",
    )


@pytest.fixture(params=["local", "slurm"])
def executor(request: pytest.FixtureRequest, tmp_path: Path, servers: tuple[int, int]) -> Iterator[Any]:
    listed, unlisted = servers
    allow = [f"{_host_ip()}:{listed}", f"localhost:{unlisted}"]
    if request.param == "local":
        yield LocalExecutor(tmp_path / "sandboxes", LocalBackend(network="allow", network_allow=allow))
        return
    if shutil.which("sbatch") is None and os.environ.get("CI") != "true":
        pytest.skip("Slurm is not installed: run `bash scripts/slurm.sh install`")
    started = subprocess.run(
        ["bash", str(REPO / "scripts" / "slurm.sh"), "start"], capture_output=True, text=True, timeout=120
    )
    assert started.returncode == 0, started.stderr
    yield SlurmExecutor(
        tmp_path / "sandboxes",
        {"type": "slurm", "partition": "debug", "network": "allow", "network_allow": allow},
    )


def test_a_job_reaches_the_listed_destinations_and_nothing_else(
    executor: Any, servers: tuple[int, int]
) -> None:
    listed, unlisted = servers
    handle = executor.start(
        _spec("egress-probe", [sys.executable, "-c", PROBE, str(listed), str(unlisted), _host_ip()])
    )
    status = _wait(executor, handle)
    logs = executor.log_paths(handle)
    assert status.exit_code == 0, logs["stderr"].read_text()
    got = json.loads(logs["stdout"].read_text().strip().splitlines()[-1])
    assert got["proxy"] == "http://127.0.0.1:3128"
    assert got["listed"] == f"hello {listed} /a"
    assert got["tunnel"] == ["HTTP/1.1 200 Connection established", f"hello {listed} /tunnel"]
    # Everything else is refused by the relay, outside the sandbox ...
    assert got["unlisted"] == 403
    # A listed name never leads to this machine (localhost is listed with that port).
    for key in ("by-name-to-loopback", "connect-unlisted", "connect-metadata"):
        assert got[key] == "HTTP/1.1 403 Forbidden", (key, got[key])
    for key in ("https-absolute", "huge-head", "garbage"):
        assert got[key] == "HTTP/1.1 400 Bad Request", (key, got[key])
    # ... and there is no way around it: the sandbox has no network of its own.
    assert got["direct-loopback"].startswith("error") and got["direct-host"].startswith("error")
    # Refusals are told on the job's stderr, naming the destination.
    assert f"refused CONNECT 127.0.0.1:{unlisted}" in logs["stderr"].read_text()
    # The relay ended with the job.
    deadline = time.monotonic() + 10
    while _relays(handle["dir"]):
        assert time.monotonic() < deadline, "the egress relay outlived its job"
        time.sleep(0.1)


def test_the_relay_goes_with_a_killed_job(tmp_path: Path, servers: tuple[int, int]) -> None:
    listed, _ = servers
    ex = LocalExecutor(
        tmp_path / "sandboxes", LocalBackend(network="allow", network_allow=[f"{_host_ip()}:{listed}"])
    )
    handle = ex.start(replace(_spec("egress-kill", ["sleep", "300"]), walltime_s=600))
    # The relay parses what the job sends: it serves as the job's uid, not as root.
    deadline = time.monotonic() + 10
    while not (relays := _relays(handle["dir"])) or any(
        _uid(pid) != job_uid("egress-kill") for pid in relays
    ):
        assert time.monotonic() < deadline, f"no relay serving as the job's uid: {[_uid(p) for p in relays]}"
        time.sleep(0.05)
    ex.kill(handle)
    _wait(ex, handle)
    deadline = time.monotonic() + 10
    while _relays(handle["dir"]):
        assert time.monotonic() < deadline, "the egress relay outlived its killed job"
        time.sleep(0.1)
