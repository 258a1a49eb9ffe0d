"""Kill the server (SIGKILL) while jobs run and wait, restart it: every acknowledged job is
still there, ends in the right state, and none ran twice."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.conftest import Server, scratch_file, scratch_fleet

N_JOBS = 8


def _jobs(client: httpx.Client, ids: list[str]) -> dict[str, dict[str, object]]:
    return {i: client.get(f"/v1/jobs/{i}").json() for i in ids}


def _wait(
    client: httpx.Client,
    ids: list[str],
    done: Callable[[dict[str, dict[str, object]]], bool],
    timeout_s: float,
) -> dict[str, dict[str, object]]:
    deadline = time.monotonic() + timeout_s
    while True:
        jobs = _jobs(client, ids)
        if done(jobs):
            return jobs
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out; states: {[j['state'] for j in jobs.values()]}")
        time.sleep(0.2)


def test_restart_reconciles_running_and_queued_jobs(
    live_server: Callable[..., Server], tmp_path: Path
) -> None:
    home = tmp_path / "home"
    scratch = tmp_path / "scratch"  # where the confined jobs leave their mark
    server = live_server(home, "--fleet", str(scratch_fleet(tmp_path, scratch)))
    # Whole-node jobs (2 CPUs): three run at once (one per region), the rest queue.
    spec = {
        "name": "restart",
        "command": [
            "sh",
            "-c",
            'echo "$ENCLAVE_JOB_ID" >> "$ENCLAVE_SCRATCH/ledger"; sleep 2; echo finished',
        ],
        "resources": {"nodes": 1, "cpus_per_node": 2, "memory_mb": 256},
        "walltime_s": 120,
    }
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {server.admin_token}"}
    ) as client:
        resp = client.post("/v1/jobs/batch", json={"jobs": [spec] * N_JOBS})
        assert resp.status_code == 201
        ids = [j["id"] for j in resp.json()["jobs"]]
        _wait(client, ids, lambda js: sum(j["state"] == "running" for j in js.values()) == 3, 30)

    server.stop(kill=True)  # no shutdown hooks run
    time.sleep(0.5)
    server.start()

    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {server.admin_token}"}
    ) as client:
        jobs = _wait(client, ids, lambda js: all(j["state"] == "completed" for j in js.values()), 90)
        listed = {j["id"] for j in client.get("/v1/jobs", params={"limit": 100}).json()["items"]}
    assert listed == set(ids)  # nothing lost, nothing duplicated
    assert all(j["exit_code"] == 0 for j in jobs.values())
    started = scratch_file(scratch, "ledger").read_text().split()
    assert sorted(started) == sorted(ids)  # each job's process ran exactly once
