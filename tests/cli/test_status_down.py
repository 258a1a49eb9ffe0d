"""`enclave status` and `enclave down`: what runs, what a stop leaves running, and why.

Found by a user: Ctrl-C on `enclave up` left endpoint replicas running as orphans, silently,
and nothing told whether a control plane ran. Jobs outliving their control plane is by design
(the next `enclave up` adopts them); saying so, and ending them on request, is what was missing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from enclave.executors import confine
from tests.conftest import Server


def test_status_down_and_what_is_left_running(live_server: Callable[..., Server], tmp_path: Path) -> None:
    server = live_server(tmp_path / "home")
    up = server.run("status")
    assert up.returncode == 0 and f"pid {server.proc.pid}" in up.stdout and server.url in up.stdout
    assert "health: ok" in up.stdout
    job = server.run("job", "submit", "--walltime", "600", "--", "sleep", "300").stdout.strip()
    deadline = time.monotonic() + 30
    while json.loads(server.run("job", "show", job, "--json").stdout)["state"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    proc = server.proc
    down = server.run("down")
    assert f"stopped the control plane (pid {proc.pid})" in down.stdout
    assert "1 job(s) and 0 endpoint replica(s) left running" in down.stdout and "--stop-jobs" in down.stdout
    assert proc.wait(timeout=5) is not None and proc.stderr is not None
    assert "left running" in proc.stderr.read()  # `enclave up` said it too, as it stopped
    assert len(confine.sandboxes_of(server.home)) == 1  # the job runs on, for the next `up`
    stopped = server.run("status", check=False)
    assert stopped.returncode == 3 and "no control plane running" in stopped.stdout
    assert "1 job(s)" in stopped.stdout
    ended = server.run("down", "--stop-jobs")
    assert "no control plane running" in ended.stdout and "ended 1 confined" in ended.stdout
    deadline = time.monotonic() + 10
    while confine.sandboxes_of(server.home):
        assert time.monotonic() < deadline, "the job outlived `enclave down --stop-jobs`"
        time.sleep(0.1)
