"""Crash safety (issue 14, item 1, first case): `enclave up` killed with SIGKILL in the middle
of a burst of single and batch submissions, then started again. Every job whose submission was
acknowledged (201) exists exactly once and its process runs exactly once; a submission whose
answer was lost may or may not exist, but never twice and never ran twice; the audit log
verifies. On SQLite and PostgreSQL.

The jobs are real confined processes: each appends its own id to a ledger in the region's
scratch space, which is how "ran exactly once" is checked.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Server, pg_url, reset_pg, scratch_file, scratch_fleet

BURST_S = 1.5  # submitting before the kill
SPEC: dict[str, Any] = {
    "name": "crash",
    "command": ["sh", "-c", 'echo "$ENCLAVE_JOB_ID" >> "$ENCLAVE_SCRATCH/ledger"'],
    "resources": {"nodes": 1, "cpus_per_node": 1, "memory_mb": 128},
    "walltime_s": 60,
}
ENDED = {"completed", "failed", "cancelled", "timeout"}


def _submitter(url: str, token: str, batch: int, stop: threading.Event, acked: list[str]) -> None:
    """Submit until told to stop or the server goes; keep the ids of acknowledged jobs."""
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=10) as client:
        while not stop.is_set():
            try:
                if batch == 1:
                    resp = client.post("/v1/jobs", json=SPEC)
                    if resp.status_code == 201:
                        acked.append(resp.json()["id"])
                else:
                    resp = client.post("/v1/jobs/batch", json={"jobs": [SPEC] * batch})
                    if resp.status_code == 201:
                        acked.extend(j["id"] for j in resp.json()["jobs"])
            except httpx.HTTPError:
                return  # the server is gone: what was not answered was not acknowledged


def _all_jobs(client: httpx.Client) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/jobs", params=params).json()
        out += page["items"]
        cursor = page.get("next_cursor")
        if not cursor:
            return out


@pytest.mark.parametrize("store", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_a_killed_server_loses_and_repeats_no_acknowledged_job(
    live_server: Callable[..., Server], tmp_path: Path, store: str
) -> None:
    scratch = tmp_path / "scratch"
    args = ["--fleet", str(scratch_fleet(tmp_path, scratch))]
    if store == "postgres":
        url = pg_url()
        reset_pg(url)
        args += ["--db", url]
    server = live_server(tmp_path / "home", *args)
    token = server.admin_token
    stop = threading.Event()
    acked: list[list[str]] = [[] for _ in range(4)]
    clients = [
        threading.Thread(target=_submitter, args=(server.url, token, batch, stop, acked[i]))
        for i, batch in enumerate((1, 1, 20, 50))
    ]
    for thread in clients:
        thread.start()
    time.sleep(BURST_S)
    server.stop(kill=True)  # mid-burst: no shutdown hook runs, requests are cut
    stop.set()
    for thread in clients:
        thread.join(timeout=30)
    acknowledged = [job for ids in acked for job in ids]
    assert len(acknowledged) >= 20, "the burst acknowledged almost nothing: nothing was tested"
    assert len(set(acknowledged)) == len(acknowledged)

    server.start()
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as client:
        deadline = time.monotonic() + 180
        while True:
            jobs = _all_jobs(client)
            if all(j["state"] in ENDED for j in jobs):
                break
            assert time.monotonic() < deadline, Counter(j["state"] for j in jobs)
            time.sleep(0.5)
    ids = [j["id"] for j in jobs]
    assert len(set(ids)) == len(ids)  # nothing listed twice
    assert set(acknowledged) <= set(ids)  # nothing acknowledged lost
    assert {j["state"] for j in jobs} == {"completed"}, Counter(j["state"] for j in jobs)
    ran = Counter(scratch_file(scratch, "ledger").read_text().split())
    assert {job for job, n in ran.items() if n > 1} == set()  # no process ran twice
    assert set(ran) == set(ids)  # every job that exists ran, and only those
    verified = server.run("audit", "verify", token=token, check=False)
    assert verified.returncode == 0, verified.stdout + verified.stderr
