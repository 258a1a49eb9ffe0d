"""Two control-plane replicas on one PostgreSQL: both serve the API, one leads the live loop,
no job starts twice, and when the leader dies the other takes over and finishes the work."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import Server, pg_url, reset_pg, scratch_file, scratch_fleet

JOBS = 40


def _leader(server: Server) -> bool:
    return bool(httpx.get(f"{server.url}/healthz").json()["leader"])


@pytest.mark.postgres
def test_replicas_never_double_start_and_survive_the_leader(
    live_server: Callable[..., Server], tmp_path: Path
) -> None:
    url = pg_url()
    reset_pg(url)
    home = tmp_path / "home"  # replicas share keys and sandboxes, as on one host or shared storage
    scratch = tmp_path / "scratch"  # where the confined jobs leave their mark
    fleet = str(scratch_fleet(tmp_path, scratch))
    first = live_server(home, "--db", url, "--fleet", fleet)
    second = live_server(home, "--db", url, "--fleet", fleet)
    assert [_leader(first), _leader(second)] == [True, False]
    ids: list[str] = []
    clients = [
        httpx.Client(base_url=s.url, headers={"Authorization": f"Bearer {first.admin_token}"})
        for s in (first, second)
    ]
    try:
        for i in range(JOBS):
            body = {
                "name": f"j{i}",
                "command": ["sh", "-c", 'echo "$ENCLAVE_JOB_ID" >> "$ENCLAVE_SCRATCH/starts.log"; sleep 0.3'],
                "walltime_s": 60,
            }
            alive = clients[i % 2] if i <= JOBS // 2 else clients[1]
            r = alive.post("/v1/jobs", json=body)  # both replicas take submissions
            assert r.status_code == 201, r.text
            ids.append(r.json()["id"])
            if i == JOBS // 2:
                os.kill(first.proc.pid, signal.SIGKILL)  # the leader dies mid-run
                first.proc.wait()
        deadline = time.monotonic() + 60
        while not _leader(second):
            assert time.monotonic() < deadline, "the surviving replica never took over"
            time.sleep(0.2)
        survivor = clients[1]
        deadline = time.monotonic() + 120
        while True:
            states = [survivor.get(f"/v1/jobs/{j}").json()["state"] for j in ids]
            if all(s == "completed" for s in states):
                break
            assert time.monotonic() < deadline, {s: states.count(s) for s in set(states)}
            time.sleep(0.5)
        started = scratch_file(scratch, "starts.log").read_text().split()
        assert sorted(started) == sorted(ids)  # every job ran, and ran exactly once
        verdict = survivor.get("/v1/audit/verify").json()
        assert verdict["ok"], verdict
    finally:
        for c in clients:
            c.close()
