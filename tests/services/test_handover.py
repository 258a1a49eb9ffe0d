"""The live loop and a region worker's handover, tick by tick (issue 13 item 6): a job bound for
a region with no worker connected waits (``region_unavailable``) instead of being handed to
nobody; once a worker is connected the job is handed over and stays ``admitted`` — no
``started_at``, no walltime spent — until the worker reports that its engine runs it; a job
cancelled before any worker took it ends cancelled without ever having been running.

The worker is played through its HTTP sync (as in tests/api/test_workers.py); the runner is the
real one, ticked by hand on the worker tests' fake store clock."""

from __future__ import annotations

import time
from typing import Any

from fastapi.testclient import TestClient

from enclave.services.context import Context
from enclave.services.runner import HANDED_OVER, JobRunner
from tests.api.helpers import Headers, create_agency, create_user, ok, token_header
from tests.api.test_workers import Clock, api, clock, credential, sync, wctx  # noqa: F401

SECRET = "SECRET"


def submit(api: TestClient, user: Headers, name: str, walltime_s: int = 2) -> str:  # noqa: F811
    body = {
        "name": name,
        "label": SECRET,
        "region": "secret-west",
        "command": ["true"],
        "walltime_s": walltime_s,
        "resources": {"nodes": 1, "cpus_per_node": 1, "memory_mb": 64},
    }
    return str(ok(api.post("/v1/jobs", json=body, headers=user), 201)["id"])


def show(api: TestClient, user: Headers, job_id: str) -> dict[str, Any]:  # noqa: F811
    return dict(ok(api.get(f"/v1/jobs/{job_id}", headers=user)))


def ticks(runner: JobRunner, n: int = 5) -> None:
    for _ in range(n):
        runner.tick()
        time.sleep(0.03)  # past the mailbox's snapshot TTL


def test_a_handed_over_job_is_admitted_until_its_worker_runs_it(
    api: TestClient,  # noqa: F811
    wctx: Context,  # noqa: F811
    clock: Clock,  # noqa: F811
) -> None:
    create_agency(api, "nsa")
    create_user(api, "sam", "nsa", SECRET)
    user = token_header(api, "sam", SECRET)
    who = credential(api, "secret-west")
    runner = JobRunner(wctx)

    job = submit(api, user, "handed")
    ticks(runner)
    shown = show(api, user, job)
    assert (shown["state"], shown["reason"], shown["started_at"]) == ("admitted", "region_unavailable", None)

    sync(api, who, "secret-west", capacity=0)  # a worker connects, with no room yet
    runner.health.refresh()
    ticks(runner)
    shown = show(api, user, job)
    assert (shown["state"], shown["region"], shown["started_at"]) == ("admitted", "secret-west", None)
    assert shown["reason"] == HANDED_OVER.format(region="secret-west")
    time.sleep(2.5)  # past its 2 s walltime: it has not begun, nothing times out
    ticks(runner)
    assert show(api, user, job)["state"] == "admitted"

    [taken] = sync(api, who, "secret-west", capacity=1)["start"]
    assert taken["job_id"] == job
    ticks(runner)
    assert show(api, user, job)["state"] == "admitted"  # taken, not started yet
    reports = [{"job_id": job, "event": "started", "handle": {"pid": 1}}, {"job_id": job, "event": "running"}]
    sync(api, who, "secret-west", capacity=0, reports=reports)
    ticks(runner)
    shown = show(api, user, job)
    assert shown["state"] == "running" and shown["started_at"] is not None and shown["reason"] is None
    sync(api, who, "secret-west", capacity=0, reports=[{"job_id": job, "event": "ended", "exit_code": 0}])
    ticks(runner)
    assert (show(api, user, job)["state"], show(api, user, job)["exit_code"]) == ("completed", 0)

    # Cancelled before any worker took it: it ends cancelled, never having been running.
    other = submit(api, user, "cancelled-early")
    ticks(runner)
    assert show(api, user, other)["reason"] == HANDED_OVER.format(region="secret-west")
    ok(api.post(f"/v1/jobs/{other}/cancel", headers=user))
    ticks(runner, 25)  # a tick by hand looks for cancellations every RESCHEDULE_S
    shown = show(api, user, other)
    assert (shown["state"], shown["started_at"]) == ("cancelled", None)
    assert sync(api, who, "secret-west", capacity=1)["start"] == []
