"""Region workers through the HTTP API, on SQLite and PostgreSQL: credentials, the sync a
worker takes its work through, and every way a worker might reach past its own region.

The control plane's runner is not started here: work is put in the mailbox with the
runner's own executor for a worker-run region (``DispatchExecutor``), as the runner does.
The live tests (real `enclave up` and `enclave worker` processes) are in
tests/services/test_workers_live.py."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from enclave.api.app import create_app
from enclave.executors.base import ExecSpec, RunState
from enclave.executors.dispatch import DispatchExecutor
from enclave.services.context import Context, Settings
from enclave.services.regions import executor_for
from enclave.store.models import AuditRecord, Dispatch, RegionWorker

from .helpers import (
    Headers,
    assert_problem,
    assert_same_404,
    bearer,
    create_agency,
    create_user,
    ok,
    token_header,
)

REPO = Path(__file__).resolve().parents[2]
FLEET = REPO / "examples" / "fleets" / "region-workers.toml"
TS = "TOP SECRET//SI/TK/HCS/G"


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def wctx(home: Path, db_url: str, clock: Clock) -> Iterator[Context]:
    context = Context(Settings(home=home, db_url=db_url, fleet=str(FLEET)), clock=clock)
    yield context
    context.close()


@pytest.fixture
def api(wctx: Context) -> Iterator[TestClient]:
    with TestClient(create_app(ctx=wctx, run_jobs=False)) as c:
        c.headers["Authorization"] = f"Bearer {(wctx.settings.home / 'admin.token').read_text().strip()}"
        yield c


def credential(api: TestClient, region: str) -> Headers:
    made = ok(api.post("/v1/worker-credentials", json={"region": region}), 201)
    assert made["region"] == region and made["secret"].startswith("encw_")
    return bearer(made["secret"])


def sync(
    api: TestClient,
    who: Headers,
    region: str,
    *,
    worker: str = "w1",
    session: str | None = None,
    capacity: int = 100,
    reports: list[dict[str, Any]] | None = None,
    holding: list[str] | None = None,
) -> dict[str, Any]:
    body = {
        "worker": worker,
        "session": session or SESSIONS.setdefault(worker, str(uuid.uuid4())),
        "capacity": capacity,
        "health": {"healthy": True, "detail": "engine fine"},
        "reports": reports or [],
        "holding": holding or [],
    }
    return ok(api.post(f"/v1/workers/{region}/sync", json=body, headers=who))


SESSIONS: dict[str, str] = {}


@pytest.fixture(autouse=True)
def _fresh_sessions() -> None:
    SESSIONS.clear()


def dispatcher(ctx: Context, region: str) -> DispatchExecutor:
    ex = executor_for(ctx, ctx.fleet.region(region))
    assert isinstance(ex, DispatchExecutor)
    return ex


def dispatch(
    ctx: Context, region: str, label: str, command: list[str] | None = None
) -> tuple[str, dict[str, Any]]:
    job_id = str(uuid.uuid4())
    spec = ExecSpec(
        job_id=job_id,
        label_key="k",
        command=command or ["true"],
        env={},
        nodes=1,
        cpus_per_node=1,
        memory_mb=64,
        gpus_per_node=0,
        walltime_s=60,
        region=region,
        pool="cpu",
        label=label,
    )
    return job_id, dispatcher(ctx, region).start(spec)


def row(ctx: Context, job_id: str) -> Dispatch | None:
    with ctx.sessions() as s:
        return s.get(Dispatch, job_id)


def refusals(ctx: Context) -> list[AuditRecord]:
    with ctx.sessions() as s:
        return list(s.execute(select(AuditRecord).where(AuditRecord.event == "worker.refused")).scalars())


# -- credentials ------------------------------------------------------------------------------
def test_credentials_are_made_by_admins_for_one_worker_run_region(api: TestClient) -> None:
    create_agency(api, "noaa")
    create_user(api, "alice", "noaa", TS)
    alice = token_header(api, "alice", TS)
    assert_problem(api.post("/v1/worker-credentials", json={"region": "ts-east"}, headers=alice), 403)
    assert_problem(api.get("/v1/worker-credentials", headers=alice), 403)
    assert_problem(api.post("/v1/worker-credentials", json={"region": "mars"}), 422, "unknown region")
    assert_problem(
        api.post("/v1/worker-credentials", json={"region": "gov-east"}), 422, "not run by a region worker"
    )
    assert_problem(api.post("/v1/worker-credentials", json={"region": "ts-east", "x": 1}), 422)

    made = ok(api.post("/v1/worker-credentials", json={"region": "ts-east"}), 201)
    listed = ok(api.get("/v1/worker-credentials"))["items"]
    assert [c["id"] for c in listed] == [made["id"]]
    assert "secret" not in listed[0] and "secret_hash" not in listed[0]
    assert made["secret"] not in api.get("/v1/worker-credentials").text


def test_a_revoked_or_forged_credential_is_refused(api: TestClient) -> None:
    made = ok(api.post("/v1/worker-credentials", json={"region": "ts-east"}), 201)
    who = bearer(made["secret"])
    sync(api, who, "ts-east")
    ok(api.delete(f"/v1/worker-credentials/{made['id']}"))
    body = {"worker": "w1", "session": str(uuid.uuid4()), "capacity": 1, "health": {"healthy": True}}
    assert_problem(api.post("/v1/workers/ts-east/sync", json=body, headers=who), 401)
    for forged in ("encw_" + "A" * 43, "enc_notaworker", made["secret"] + "x"):
        assert_problem(api.post("/v1/workers/ts-east/sync", json=body, headers=bearer(forged)), 401)
    # A user's token is not a worker credential, not even the admin's.
    assert_problem(api.post("/v1/workers/ts-east/sync", json=body), 401)


# -- a worker and other regions' work ------------------------------------------------------------
def test_a_worker_asking_for_another_regions_work_is_refused_and_audited(
    api: TestClient, wctx: Context
) -> None:
    ts, sw = credential(api, "ts-east"), credential(api, "secret-west")
    sync(api, ts, "ts-east", worker="ts-1")
    job_id, _ = dispatch(wctx, "ts-east", TS)

    body = {"worker": "sw-1", "session": str(uuid.uuid4()), "capacity": 100, "health": {"healthy": True}}
    problem = assert_problem(api.post("/v1/workers/ts-east/sync", json=body, headers=sw), 403)
    assert "secret-west" in problem["detail"] and job_id not in problem["detail"]

    # Nothing changed: the job waits for ts-east's worker, no worker was recorded for ts-east.
    found = row(wctx, job_id)
    assert found is not None and found.state == "queued" and found.worker is None
    with wctx.sessions() as s:
        assert {w.name for w in s.execute(select(RegionWorker)).scalars()} == {"ts-1"}
    [record] = refusals(wctx)
    assert record.outcome == "deny" and record.object_id == "ts-east"
    assert json.loads(record.details)["rule"] == "worker_own_region"
    assert json.loads(record.details)["credential_region"] == "secret-west"
    # The rightful worker still gets it.
    assert [s["job_id"] for s in sync(api, ts, "ts-east", worker="ts-1")["start"]] == [job_id]


def test_each_worker_receives_only_its_own_regions_jobs(api: TestClient, wctx: Context) -> None:
    ts, sw = credential(api, "ts-east"), credential(api, "secret-west")
    sync(api, ts, "ts-east", worker="ts-1")
    sync(api, sw, "secret-west", worker="sw-1")
    ts_jobs = {dispatch(wctx, "ts-east", TS)[0] for _ in range(3)}
    sw_jobs = {dispatch(wctx, "secret-west", "SECRET")[0] for _ in range(2)}

    got_sw = sync(api, sw, "secret-west", worker="sw-1")
    got_ts = sync(api, ts, "ts-east", worker="ts-1")
    assert {s["job_id"] for s in got_sw["start"]} == sw_jobs
    assert {s["job_id"] for s in got_ts["start"]} == ts_jobs
    assert all(s["spec"]["region"] == "ts-east" for s in got_ts["start"])
    assert got_sw["region"]["name"] == "secret-west" and got_sw["region"]["backend"]["worker"] is True
    # Claimed once: what the worker holds is not handed out again; what it never received (a
    # lost answer) is handed again to the same worker process, and to no one else.
    held = sorted(ts_jobs)[:2]
    again = sync(api, ts, "ts-east", worker="ts-1", holding=held)["start"]
    assert {s["job_id"] for s in again} == ts_jobs - set(held)
    assert sync(api, ts, "ts-east", worker="ts-1", holding=sorted(ts_jobs))["start"] == []
    assert sync(api, credential(api, "ts-east"), "ts-east", worker="ts-2")["start"] == []


def test_capacity_bounds_what_a_worker_takes(api: TestClient, wctx: Context) -> None:
    ts = credential(api, "ts-east")
    sync(api, ts, "ts-east", capacity=0)
    jobs = [dispatch(wctx, "ts-east", TS)[0] for _ in range(3)]
    assert sync(api, ts, "ts-east", capacity=0)["start"] == []
    assert [s["job_id"] for s in sync(api, ts, "ts-east", capacity=2)["start"]] == jobs[:2]
    assert [s["job_id"] for s in sync(api, ts, "ts-east", capacity=2, holding=jobs[:2])["start"]] == jobs[2:]


def test_reports_and_output_for_another_regions_job_change_nothing_and_are_audited(
    api: TestClient, wctx: Context
) -> None:
    ts, sw = credential(api, "ts-east"), credential(api, "secret-west")
    sync(api, ts, "ts-east", worker="ts-1")
    sync(api, sw, "secret-west", worker="sw-1")
    job_id, handle = dispatch(wctx, "ts-east", TS)
    sync(api, ts, "ts-east", worker="ts-1", reports=[])  # claimed by ts-1
    sync(
        api,
        ts,
        "ts-east",
        worker="ts-1",
        reports=[
            {"job_id": job_id, "event": "started", "handle": {"pid": 1}},
            {"job_id": job_id, "event": "running"},
        ],
    )

    never = str(uuid.uuid4())
    forged = [{"job_id": j, "event": "ended", "exit_code": 0} for j in (job_id, never)]
    answer = sync(api, sw, "secret-west", worker="sw-1", reports=forged)
    assert answer["acked"] == [job_id, never]  # the same answer for a hidden job as for none
    found = row(wctx, job_id)
    assert found is not None and (found.state, found.exit_code) == ("started", None)
    assert dispatcher(wctx, "ts-east").poll(handle).state is RunState.RUNNING

    url = "/v1/workers/secret-west/jobs/{}/logs/stdout"
    hidden = api.put(url.format(job_id), content=b"forged output", headers=sw)
    missing = api.put(url.format(never), content=b"forged output", headers=sw)
    assert_same_404(hidden, job_id, missing, never)
    assert not (wctx.settings.home / "worker-logs" / job_id / "stdout").exists()
    # And through ts-east's path with secret-west's credential: refused outright.
    assert_problem(api.put(f"/v1/workers/ts-east/jobs/{job_id}/logs/stdout", content=b"x", headers=sw), 403)

    records = refusals(wctx)
    assert [json.loads(r.details)["rule"] for r in records] == ["worker_own_region"] * 3
    assert [r.object_id for r in records] == [job_id, job_id, "ts-east"]


def test_work_above_the_regions_accreditation_is_never_handed_out(api: TestClient, wctx: Context) -> None:
    """Defence in depth: the scheduler never places such work, but a store changed behind
    its back must still not leak TOP SECRET work to the SECRET region's worker."""
    sw = credential(api, "secret-west")
    sync(api, sw, "secret-west")
    fine, _ = dispatch(wctx, "secret-west", "SECRET")
    above, handle = dispatch(wctx, "secret-west", "TOP SECRET")
    unlabelled, _ = dispatch(wctx, "secret-west", "")
    assert [s["job_id"] for s in sync(api, sw, "secret-west")["start"]] == [fine]
    status = dispatcher(wctx, "secret-west").poll(handle)
    assert status.state is RunState.LOST and "refused" in (status.detail or "")
    found = row(wctx, unlabelled)
    assert found is not None and found.lost
    assert {r.object_id for r in refusals(wctx)} == {above, unlabelled}


# -- the job's life through the mailbox ------------------------------------------------------------
def test_started_and_ended_reports_reach_the_runners_executor(api: TestClient, wctx: Context) -> None:
    ts = credential(api, "ts-east")
    sync(api, ts, "ts-east")
    job_id, handle = dispatch(wctx, "ts-east", TS)
    ex = dispatcher(wctx, "ts-east")
    [start] = sync(api, ts, "ts-east")["start"]
    assert start["spec"]["command"] == ["true"] and start["spec"]["label"] == TS
    assert ex.poll(handle).state is RunState.QUEUED  # waiting for the worker: walltime not begun
    sync(api, ts, "ts-east", reports=[{"job_id": job_id, "event": "started", "handle": {"pid": 42}}])
    assert dispatcher(wctx, "ts-east").poll(handle).state is RunState.QUEUED  # in the engine's queue
    sync(api, ts, "ts-east", reports=[{"job_id": job_id, "event": "running"}])
    assert dispatcher(wctx, "ts-east").poll(handle).state is RunState.RUNNING
    ended = {"job_id": job_id, "event": "ended", "exit_code": 3, "cpu_s": 0.5, "energy_j": 12.0}
    assert sync(api, ts, "ts-east", reports=[ended])["acked"] == [job_id]
    status = dispatcher(wctx, "ts-east").poll(handle)  # a fresh view of the mailbox
    assert (status.state, status.exit_code, status.cpu_s, status.energy_j) == (RunState.EXITED, 3, 0.5, 12.0)
    # A repeated report (its answer was lost) changes nothing and is acknowledged again.
    again = {**ended, "exit_code": 0}
    assert sync(api, ts, "ts-east", reports=[again])["acked"] == [job_id]
    found = row(wctx, job_id)
    assert found is not None and found.exit_code == 3
    ex.cleanup(handle)
    assert row(wctx, job_id) is None
    assert sync(api, ts, "ts-east", reports=[again])["acked"] == [job_id]


def test_a_job_the_worker_cannot_start_is_lost_with_the_reason(api: TestClient, wctx: Context) -> None:
    ts = credential(api, "ts-east")
    sync(api, ts, "ts-east")
    job_id, handle = dispatch(wctx, "ts-east", TS)
    sync(api, ts, "ts-east")
    sync(api, ts, "ts-east", reports=[{"job_id": job_id, "event": "start_failed", "error": "sbatch: down"}])
    status = dispatcher(wctx, "ts-east").poll(handle)
    assert status.state is RunState.LOST and "sbatch: down" in (status.detail or "")


def test_cancel_and_kill_reach_the_worker_holding_the_job(api: TestClient, wctx: Context) -> None:
    ts = credential(api, "ts-east")
    sync(api, ts, "ts-east")
    ex = dispatcher(wctx, "ts-east")
    a, ha = dispatch(wctx, "ts-east", TS)
    b, hb = dispatch(wctx, "ts-east", TS)
    sync(api, ts, "ts-east")
    ex.cancel(ha, 7.5)
    ex.kill(hb)
    answer = sync(api, ts, "ts-east")
    assert answer["cancel"] == [{"job_id": a, "grace_s": 7.5}] and answer["kill"] == [b]
    # Not yet taken by a worker: stopped on the spot, it never ran.
    c, hc = dispatch(wctx, "ts-east", TS)
    ex.cancel(hc, 5.0)
    status = ex.poll(hc)
    assert (status.state, status.signal) == (RunState.EXITED, 15)
    assert all(s["job_id"] != c for s in sync(api, ts, "ts-east")["start"])


def test_a_restarted_worker_adopts_running_jobs_and_loses_unstarted_ones(
    api: TestClient, wctx: Context
) -> None:
    ts = credential(api, "ts-east")
    first = str(uuid.uuid4())
    sync(api, ts, "ts-east", session=first)
    running, h_running = dispatch(wctx, "ts-east", TS)
    _unstarted, h_unstarted = dispatch(wctx, "ts-east", TS)
    sync(api, ts, "ts-east", session=first)
    sync(
        api,
        ts,
        "ts-east",
        session=first,
        reports=[
            {"job_id": running, "event": "started", "handle": {"pid": 7}},
            {"job_id": running, "event": "running"},
        ],
    )

    answer = sync(api, ts, "ts-east", session=str(uuid.uuid4()))  # the same worker, a new process
    assert answer["adopt"] == [{"job_id": running, "spec": answer["adopt"][0]["spec"], "handle": {"pid": 7}}]
    ex = dispatcher(wctx, "ts-east")
    assert ex.poll(h_running).state is RunState.RUNNING
    status = ex.poll(h_unstarted)
    assert status.state is RunState.LOST and "before starting" in (status.detail or "")
    with wctx.sessions() as s:
        events = [r.event for r in s.execute(select(AuditRecord).order_by(AuditRecord.seq)).scalars()]
    assert events.count("worker.connected") == 2


def test_a_silent_workers_jobs_go_to_the_regions_next_worker(
    api: TestClient, wctx: Context, clock: Clock
) -> None:
    a, b = credential(api, "ts-east"), credential(api, "ts-east")
    sync(api, a, "ts-east", worker="a")
    sync(api, b, "ts-east", worker="b", capacity=0)
    job_id, _ = dispatch(wctx, "ts-east", TS)
    sync(api, a, "ts-east", worker="a")
    sync(
        api, a, "ts-east", worker="a", reports=[{"job_id": job_id, "event": "started", "handle": {"pid": 9}}]
    )
    # b is alive and a too: b takes nothing of a's.
    assert sync(api, b, "ts-east", worker="b", capacity=0)["adopt"] == []
    clock.now += timedelta(seconds=31)  # a falls silent
    assert [x["job_id"] for x in sync(api, b, "ts-east", worker="b", capacity=0)["adopt"]] == [job_id]
    found = row(wctx, job_id)
    assert found is not None and found.worker == "b"
    with wctx.sessions() as s:
        claims = s.execute(select(AuditRecord).where(AuditRecord.event == "worker.claimed")).scalars()
        taken = [json.loads(r.details) for r in claims if "taken_over_from" in json.loads(r.details)]
    assert taken == [{"worker": "b", "jobs": [job_id], "taken_over_from": "a"}]


# -- output ------------------------------------------------------------------------------------
def test_output_appends_in_order_and_repeats_are_harmless(api: TestClient, wctx: Context) -> None:
    ts = credential(api, "ts-east")
    job_id, handle = dispatch(wctx, "ts-east", TS)
    sync(api, ts, "ts-east")  # claimed by this worker: its output is this worker's to send
    url = f"/v1/workers/ts-east/jobs/{job_id}/logs/stdout"
    assert ok(api.put(url, params={"offset": 0}, content=b"abc", headers=ts)) == {"size": 3}
    assert ok(api.put(url, params={"offset": 0}, content=b"abc", headers=ts)) == {"size": 3}
    assert ok(api.put(url, params={"offset": 2}, content=b"cde", headers=ts)) == {"size": 5}
    assert_problem(api.put(url, params={"offset": 9}, content=b"zz", headers=ts), 409)
    assert_problem(api.put(url, params={"offset": -1}, content=b"zz", headers=ts), 422)
    bad = f"/v1/workers/ts-east/jobs/{job_id}/logs/passwd"
    assert_problem(api.put(bad, content=b"zz", headers=ts), 422)
    path = dispatcher(wctx, "ts-east").log_paths(handle)["stdout"]
    assert path.read_bytes() == b"abcde" and path.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    "change",
    [
        {"capacity": -1},
        {"session": "not-a-uuid"},
        {"worker": "../etc"},
        {"surprise": True},
        {"reports": [{"job_id": "x", "event": "exploded"}]},
        {"reports": [{"job_id": "x", "event": "ended", "cpu_s": -1}]},
    ],
)
def test_bad_sync_bodies_are_refused_and_change_nothing(
    api: TestClient, wctx: Context, change: dict[str, Any]
) -> None:
    ts = credential(api, "ts-east")
    body = {
        "worker": "w1",
        "session": str(uuid.uuid4()),
        "capacity": 1,
        "health": {"healthy": True},
        **change,
    }
    assert_problem(api.post("/v1/workers/ts-east/sync", json=body, headers=ts), 422)
    with wctx.sessions() as s:
        assert s.execute(select(RegionWorker)).first() is None


def test_region_health_follows_its_worker(api: TestClient, wctx: Context, clock: Clock) -> None:
    def ts_east() -> dict[str, Any]:
        return next(r for r in ok(api.get("/v1/regions"))["items"] if r["name"] == "ts-east")

    before = ts_east()
    assert before["backend"] == {"type": "local", "worker": True}
    assert not before["healthy"] and "no region worker" in before["health"]
    ex = dispatcher(wctx, "ts-east")
    assert not ex.health().healthy
    ts = credential(api, "ts-east")
    sync(api, ts, "ts-east", worker="edge-7")
    state = ex.health()
    assert state.healthy and state.detail == "worker edge-7: engine fine"


# -- one credential, one worker ------------------------------------------------------------------
def test_a_credential_is_bound_to_one_worker_name(api: TestClient, wctx: Context) -> None:
    made = ok(api.post("/v1/worker-credentials", json={"region": "ts-east", "worker": "edge-1"}), 201)
    assert made["worker"] == "edge-1"
    named = bearer(made["secret"])
    sync(api, named, "ts-east", worker="edge-1")
    body = {"worker": "edge-2", "session": str(uuid.uuid4()), "capacity": 1, "health": {"healthy": True}}
    assert_problem(api.post("/v1/workers/ts-east/sync", json=body, headers=named), 403, "bound to another")
    # Unnamed: its first sync binds it (audited), and it is that worker from then on.
    unnamed = credential(api, "ts-east")
    sync(api, unnamed, "ts-east", worker="edge-3")
    assert_problem(api.post("/v1/workers/ts-east/sync", json=body, headers=unnamed), 403, "bound to another")
    listed = {c["worker"] for c in ok(api.get("/v1/worker-credentials"))["items"]}
    assert listed == {"edge-1", "edge-3"}
    # A name a live credential holds is no one else's: not by binding, not by issuing.
    third = credential(api, "ts-east")
    taken = {**body, "worker": "edge-1"}
    assert_problem(api.post("/v1/workers/ts-east/sync", json=taken, headers=third), 403, "another credential")
    assert_problem(api.post("/v1/worker-credentials", json={"region": "ts-east", "worker": "edge-1"}), 409)
    # ... until it is revoked: then the name is given to a new credential (rotation).
    ok(api.delete(f"/v1/worker-credentials/{made['id']}"))
    rotated = ok(api.post("/v1/worker-credentials", json={"region": "ts-east", "worker": "edge-1"}), 201)
    sync(api, bearer(rotated["secret"]), "ts-east", worker="edge-1")
    # The same name in another region is another worker.
    ok(api.post("/v1/worker-credentials", json={"region": "secret-west", "worker": "edge-1"}), 201)
    with wctx.sessions() as s:
        bound = [
            json.loads(r.details)["worker"]
            for r in s.execute(
                select(AuditRecord).where(AuditRecord.event == "worker.bound").order_by(AuditRecord.seq)
            ).scalars()
        ]
    assert bound == ["edge-3"]
    assert [json.loads(r.details)["rule"] for r in refusals(wctx)] == [
        "worker_bound_name",
        "worker_bound_name",
        "worker_name_taken",
    ]
    assert_problem(api.post("/v1/worker-credentials", json={"region": "ts-east", "worker": "../x"}), 422)
