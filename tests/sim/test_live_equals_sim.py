"""The same small workload through `enclave up` (real processes on the local executor) and
through the simulator with the same fleet and policy: the same start order and regions."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import httpx

from enclave.fleet import load_fleet
from enclave.labels import DEFAULT_SCHEME
from enclave.scheduler.model import Job
from enclave.scheduler.policies import make_policy
from enclave.sim.engine import simulate
from enclave.sim.workload import SimJob
from tests.conftest import Server

# Durations (s) chosen so that no two jobs end within 0.5 s of each other in the schedule:
# process start-up jitter then cannot reorder completions.
DURATIONS = [1.8, 1.2, 2.4, 2.8, 2.8, 0.5, 0.5, 2.8, 1.2]
WALLTIME_S = 5


def simulated_order() -> list[tuple[str, str]]:
    jobs = [
        SimJob(
            Job(
                id=f"job{k}",
                agency="enclave",
                label=DEFAULT_SCHEME.bottom,
                nodes=1,
                cpus=2,
                memory_mb=256,
                gpus=0,
                walltime_s=WALLTIME_S,
                submit_s=0.0,
                seq=k,
            ),
            run_s=d,
        )
        for k, d in enumerate(DURATIONS)
    ]
    outcome = simulate(load_fleet("local"), jobs, make_policy("easy"))
    ends = sorted(r.end_s for r in outcome.runs)
    assert min(b - a for a, b in itertools.pairwise(ends)) >= 0.5  # the premise above
    runs = sorted(outcome.runs, key=lambda r: (r.start_s, r.sim.job.seq))
    return [(r.sim.job.id, r.placement.region) for r in runs]


def test_live_start_order_equals_simulated(live_server: Callable[..., Server], tmp_path: Path) -> None:
    server = live_server(tmp_path / "home", "--policy", "easy")
    specs = [
        {
            "name": f"job{k}",
            "command": ["sleep", str(d)],
            "walltime_s": WALLTIME_S,
            "resources": {"nodes": 1, "cpus_per_node": 2, "memory_mb": 256},
        }
        for k, d in enumerate(DURATIONS)
    ]
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {server.admin_token}"}, timeout=30
    ) as client:
        resp = client.post("/v1/jobs/batch", json={"jobs": specs})
        assert resp.status_code == 201
        ids = [j["id"] for j in resp.json()["jobs"]]
        deadline = time.monotonic() + 60
        while True:
            jobs = [client.get(f"/v1/jobs/{i}").json() for i in ids]
            if all(j["state"] == "completed" for j in jobs):
                break
            assert time.monotonic() < deadline, [j["state"] for j in jobs]
            time.sleep(0.3)
    seq = {i: k for k, i in enumerate(ids)}
    live = sorted(jobs, key=lambda j: (datetime.fromisoformat(j["started_at"]), seq[j["id"]]))
    assert [(j["name"], j["region"]) for j in live] == simulated_order()
