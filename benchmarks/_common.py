"""Shared helpers for the benchmark scripts: machine facts, a throwaway `enclave up`, tables.

Every server the benchmarks start listens on 127.0.0.1 only and is stopped by them.
"""

from __future__ import annotations

import contextlib
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"


def machine() -> str:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_gib = 0.0
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = int(line.split()[1]) / 1024 / 1024
    load = os.getloadavg()
    return (
        f"{os.cpu_count()} CPUs (nproc), {model}, {mem_gib:.1f} GiB RAM, "
        f"Python {platform.python_version()}, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )


def cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU seconds (user + system) a process used so far: its own, and its reaped children's.

    The machine may be shared; wall-clock rates then depend on the other load, CPU time
    much less, so the scripts print both.
    """
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick, (int(fields[13]) + int(fields[14])) / tick


def git_state() -> str:
    """The commit benchmarked, and the files that differ from it."""
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    changed = [line[3:] for line in dirty if line.strip()]
    return f"{head}" + (f" + uncommitted changes in {', '.join(changed)}" if changed else "")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n{title}")
    line = "| " + " | ".join(c.ljust(w) for c, w in zip(cells[0], widths, strict=True)) + " |"
    print(line)
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in cells[1:]:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
    sys.stdout.flush()


@dataclass
class Server:
    url: str
    token: str
    home: Path
    proc: subprocess.Popen[bytes]

    def client(self, timeout_s: float = 300.0) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=timeout_s
        )


@contextlib.contextmanager
def enclave_up(db: str | None = None, fleet: str = "local") -> Iterator[Server]:
    """Start `enclave up` on a free loopback port with a temporary ENCLAVE_HOME; stop it after.

    On the way out, job processes the local executor left (it starts them in their own
    session, and a stopped server does not kill them) are killed by the pids recorded in
    their sandboxes, then the home is removed.
    """
    home = Path(tempfile.mkdtemp(prefix="enclave-bench-"))
    port = free_port()
    env = dict(os.environ, ENCLAVE_HOME=str(home))
    cmd = [sys.executable, "-m", "enclave", "up", "--host", LOOPBACK, "--port", str(port), "--fleet", fleet]
    if db:
        cmd += ["--db", db]
    log = (home / "server.log").open("wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://{LOOPBACK}:{port}"
    try:
        deadline = time.monotonic() + 120
        token_file = home / "admin.token"
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"enclave up exited: {(home / 'server.log').read_text()[-2000:]}")
            if token_file.exists() and token_file.read_text().strip():
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                        break
            if time.monotonic() > deadline:
                raise RuntimeError("enclave up did not become healthy within 120 s")
            time.sleep(0.1)
        yield Server(url, token_file.read_text().strip(), home, proc)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
        _kill_sandbox_jobs(home)
        subprocess.run(["rm", "-rf", str(home)], check=False)


def _kill_sandbox_jobs(home: Path) -> None:
    for pid_file in (home / "sandboxes").glob("*/*/.pid"):
        with contextlib.suppress(ValueError, OSError):
            pid = int(pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if str(pid_file.parent).encode() in cmdline:  # still our wrapper, not a reused pid
                os.killpg(pid, signal.SIGKILL)


@contextlib.contextmanager
def postgres(port: int = 58432, directory: str = "/tmp/pg-bench") -> Iterator[str]:
    """A throwaway PostgreSQL via scripts/pg.sh; yields its URL and removes it after."""
    env = dict(os.environ, ENCLAVE_PG_DIR=directory, ENCLAVE_PG_PORT=str(port))
    script = str(REPO / "scripts" / "pg.sh")
    out = subprocess.run(["bash", script, "start"], env=env, check=True, capture_output=True, text=True)
    try:
        yield out.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run(["bash", script, "stop"], env=env, check=False, capture_output=True)
