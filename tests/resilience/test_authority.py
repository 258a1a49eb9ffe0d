"""Authority attacks, run for real through the HTTP API on SQLite and PostgreSQL (issue 12,
finding 8): an agency admin reaching into another agency, raising its own clearance or
approving its own request; a second credential of a region taking over a job that another
worker of the region holds, reporting it completed and replacing its output.

Each attack is tried the way an attacker would, then the store is checked: nothing changed,
the attempt is on the audit record, and the answer says no more than a miss would."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from enclave.api.app import create_app
from enclave.executors.base import ExecSpec, RunState
from enclave.executors.dispatch import WORKER_TIMEOUT_S, DispatchExecutor
from enclave.services.context import Context, Settings
from enclave.services.regions import executor_for
from enclave.store.models import AuditRecord, ClearanceRequest, Dispatch, Token, User

from ..api.helpers import (
    Headers,
    assert_problem,
    assert_same_404,
    bearer,
    create_agency,
    create_user,
    ok,
    token_header,
    unchanged,
)

REPO = Path(__file__).resolve().parents[2]
FLEET = REPO / "examples" / "fleets" / "region-workers.toml"
TS = "TOP SECRET//SI/TK/HCS/G"
DENIED = ("access.denied",)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def actx(home: Path, db_url: str, clock: Clock) -> Iterator[Context]:
    context = Context(Settings(home=home, db_url=db_url, fleet=str(FLEET)), clock=clock)
    yield context
    context.close()


@pytest.fixture
def api(actx: Context) -> Iterator[TestClient]:
    with TestClient(create_app(ctx=actx, run_jobs=False)) as c:
        c.headers["Authorization"] = f"Bearer {(actx.settings.home / 'admin.token').read_text().strip()}"
        yield c


def events(ctx: Context, event: str) -> list[dict[str, Any]]:
    with ctx.sessions() as s:
        rows = s.execute(select(AuditRecord).where(AuditRecord.event == event).order_by(AuditRecord.seq))
        return [{"actor": r.actor, "outcome": r.outcome, **json.loads(r.details)} for r in rows.scalars()]


def clearance_of(ctx: Context, name: str) -> str:
    with ctx.sessions() as s:
        return s.execute(select(User.clearance).where(User.name == name)).scalar_one()


def tokens_of(ctx: Context, name: str) -> int:
    with ctx.sessions() as s:
        return s.execute(
            select(func.count())
            .select_from(Token)
            .join(User, Token.user_id == User.id)
            .where(User.name == name)
        ).scalar_one()


@pytest.fixture
def agencies(api: TestClient) -> dict[str, Headers]:
    """Two agencies. nasa: ada and bea (admins, TOP SECRET), alice (SECRET user). noaa: nils
    (admin) and eve (TOP SECRET user). Every admin token is at UNCLASSIFIED, as an
    administrator's standing token is."""
    create_agency(api, "nasa")
    create_agency(api, "noaa")
    for name, agency, clearance, roles in (
        ("ada", "nasa", "TOP SECRET", ("admin",)),
        ("bea", "nasa", "TOP SECRET", ("admin",)),
        ("alice", "nasa", "SECRET", ("user",)),
        ("nils", "noaa", "TOP SECRET", ("admin",)),
        ("eve", "noaa", "TOP SECRET", ("user",)),
    ):
        create_user(api, name, agency, clearance, roles)
    return {name: token_header(api, name, "UNCLASSIFIED") for name in ("ada", "bea", "alice", "nils")}


# -- agency admins -----------------------------------------------------------------------------
def test_an_agency_admin_cannot_mint_a_token_for_another_agencys_user(
    api: TestClient, actx: Context, agencies: dict[str, Headers]
) -> None:
    """The finding: nasa's admin minted a token for noaa's eve, then read as eve."""
    ada = agencies["ada"]
    before = tokens_of(actx, "eve")
    with unchanged(actx, audit=DENIED):
        attack = api.post("/v1/tokens", json={"user": "eve", "label": "TOP SECRET"}, headers=ada)
    with unchanged(actx):
        miss = api.post("/v1/tokens", json={"user": "nobody", "label": "TOP SECRET"}, headers=ada)
    # The same answer as for a user who does not exist; no token made.
    assert assert_problem(attack, 422)["detail"] == "no user named 'eve'"
    assert assert_problem(miss, 422)["detail"] == "no user named 'nobody'"
    assert tokens_of(actx, "eve") == before
    [denial] = [e for e in events(actx, "access.denied") if e["actor"] == "ada"]
    assert (denial["action"], denial["rule"]) == ("issue_credentials", "admin_scope")
    # Nor through the other doors to eve's account: password, roles, clearance, disabling.
    for method, path, body in (
        ("PUT", "/v1/users/{}/password", {"new_password": "correct horse battery staple"}),
        ("PATCH", "/v1/users/{}", {"roles": ["user"]}),
        ("PATCH", "/v1/users/{}", {"disabled": True}),
        ("POST", "/v1/users/{}/clearance", {"clearance": "UNCLASSIFIED"}),
        ("GET", "/v1/users/{}", None),
    ):
        kwargs: dict[str, Any] = {"json": body} if body is not None else {}
        with unchanged(actx, audit=None):
            hidden = api.request(method, path.format("eve"), headers=ada, **kwargs)
            missing = api.request(method, path.format("nobody"), headers=ada, **kwargs)
        assert_same_404(hidden, "eve", missing, "nobody")
    # The operator, deployment-wide, still can.
    ok(api.post("/v1/tokens", json={"user": "eve", "label": "TOP SECRET"}), 201)


def test_an_agency_admin_cannot_raise_its_own_clearance(
    api: TestClient, actx: Context, agencies: dict[str, Headers]
) -> None:
    """The finding: an agency admin raised its own clearance."""
    ada = agencies["ada"]
    for attack in (
        lambda: api.post("/v1/users/ada/clearance", json={"clearance": TS}, headers=ada),
        lambda: api.patch("/v1/users/ada", json={"clearance": TS}, headers=ada),
    ):
        with unchanged(actx, audit=DENIED):
            assert_problem(attack(), 403, "own clearance")
    assert clearance_of(actx, "ada") == "TOP SECRET"
    # Nor by making itself an operator, nor by a sock puppet cleared beyond itself.
    with unchanged(actx, audit=DENIED):
        r = api.patch("/v1/users/ada", json={"roles": ["admin", "operator"]}, headers=ada)
        assert_problem(r, 403, "only an operator")
    puppet = {"name": "sock", "agency": "nasa", "clearance": TS, "password": "correct horse battery staple"}
    with unchanged(actx, audit=DENIED):
        assert_problem(api.post("/v1/users", json=puppet, headers=ada), 403, "own clearance")
    # Not even the operator changes its own.
    with unchanged(actx, audit=DENIED):
        assert_problem(api.post("/v1/users/admin/clearance", json={"clearance": "SECRET"}), 403)
    rules = [e["rule"] for e in events(actx, "access.denied")]
    assert rules == [
        "own_clearance",
        "own_clearance",
        "privileged_roles",
        "grants_within_clearance",
        "own_clearance",
    ]


def test_nobody_approves_their_own_clearance_request(
    api: TestClient, actx: Context, agencies: dict[str, Headers]
) -> None:
    ada, bea, alice, nils = agencies["ada"], agencies["bea"], agencies["alice"], agencies["nils"]
    asked = ok(api.post("/v1/users/alice/clearance", json={"clearance": "TOP SECRET"}, headers=ada), 201)
    approve = f"/v1/clearance-requests/{asked['id']}/approve"
    # The requester; the user it raises; another agency's admin (for whom it does not exist).
    with unchanged(actx, audit=DENIED):
        assert_problem(api.post(approve, headers=ada), 403, "other than its requester")
    with unchanged(actx, audit=DENIED):
        assert_problem(api.post(approve, headers=alice), 403)
    with unchanged(actx, audit=DENIED):
        hidden = api.post(approve, headers=nils)
    missing_id = str(uuid.uuid4())
    assert_same_404(
        hidden,
        asked["id"],
        api.post(f"/v1/clearance-requests/{missing_id}/approve", headers=nils),
        missing_id,
    )
    assert clearance_of(actx, "alice") == "SECRET"
    # Two admins colluding on each other's raise is the two-person rule working: but neither
    # approves a request for itself, whoever asked.
    for_bea = ok(api.post("/v1/users/bea/clearance", json={"clearance": TS}), 201)  # by the operator
    with unchanged(actx, audit=DENIED):
        r = api.post(f"/v1/clearance-requests/{for_bea['id']}/approve", headers=bea)
        assert_problem(r, 403, "own clearance")
    with unchanged(actx, audit=DENIED):  # ... and not beyond the approver's own clearance
        r = api.post(f"/v1/clearance-requests/{for_bea['id']}/approve", headers=ada)
        assert_problem(r, 403)
    assert clearance_of(actx, "bea") == "TOP SECRET"
    # The second admin approves: applied, and each step is on record.
    done = ok(api.post(approve, headers=bea))
    assert (done["state"], done["decided_by"]) == ("approved", "bea")
    assert clearance_of(actx, "alice") == "TOP SECRET"
    [requested] = [e for e in events(actx, "admin.clearance_requested") if e["request"] == asked["id"]]
    [approved] = events(actx, "admin.clearance_approved")
    assert (requested["actor"], requested["from"], requested["to"]) == ("ada", "SECRET", "TOP SECRET")
    assert (approved["actor"], approved["requested_by"], approved["to"]) == ("bea", "ada", "TOP SECRET")
    with actx.sessions() as s:
        states = {r.id: r.state for r in s.execute(select(ClearanceRequest)).scalars()}
    assert states == {asked["id"]: "approved", for_bea["id"]: "pending"}


# -- region workers ----------------------------------------------------------------------------
def credential(api: TestClient, region: str, worker: str | None = None) -> Headers:
    body = {"region": region, **({"worker": worker} if worker else {})}
    return bearer(ok(api.post("/v1/worker-credentials", json=body), 201)["secret"])


def sync(
    api: TestClient, who: Headers, worker: str, session: str, reports: list[dict[str, Any]] | None = None
) -> Any:
    body = {
        "worker": worker,
        "session": session,
        "capacity": 10,
        "health": {"healthy": True},
        "reports": reports or [],
    }
    return api.post("/v1/workers/ts-east/sync", json=body, headers=who)


def dispatch(ctx: Context) -> tuple[str, DispatchExecutor, dict[str, Any]]:
    ex = executor_for(ctx, ctx.fleet.region("ts-east"))
    assert isinstance(ex, DispatchExecutor)
    job_id = str(uuid.uuid4())
    spec = ExecSpec(
        job_id=job_id,
        label_key="k",
        command=["sleep", "600"],
        env={},
        nodes=1,
        cpus_per_node=1,
        memory_mb=64,
        gpus_per_node=0,
        walltime_s=3600,
        region="ts-east",
        pool="cpu",
        label=TS,
    )
    return job_id, ex, ex.start(spec)


def dispatch_row(ctx: Context, job_id: str) -> Dispatch:
    with ctx.sessions() as s:
        row = s.get(Dispatch, job_id)
    assert row is not None
    return row


@pytest.fixture
def running(api: TestClient, actx: Context) -> tuple[str, dict[str, Any], Headers, str]:
    """A TOP SECRET job that ts-east's worker w1 claimed, started and is running."""
    w1, s1 = credential(api, "ts-east", "w1"), str(uuid.uuid4())
    ok(sync(api, w1, "w1", s1))
    job_id, _ex, handle = dispatch(actx)
    assert [s["job_id"] for s in ok(sync(api, w1, "w1", s1))["start"]] == [job_id]
    started = [
        {"job_id": job_id, "event": "started", "handle": {"pid": 4242}},
        {"job_id": job_id, "event": "running"},
    ]
    ok(sync(api, w1, "w1", s1, started))
    url = f"/v1/workers/ts-east/jobs/{job_id}/logs/stdout"
    assert ok(api.put(url, params={"offset": 0}, content=b"real output\n", headers=w1)) == {"size": 12}
    return job_id, handle, w1, s1


def test_a_second_credential_cannot_take_over_a_live_workers_job(
    api: TestClient, actx: Context, running: tuple[str, dict[str, Any], Headers, str]
) -> None:
    """The finding: another credential of the same region took over a running job, reported
    it completed and replaced its output — while its worker was alive."""
    job_id, handle, w1, s1 = running
    mallory = credential(api, "ts-east")  # a genuine credential of the same region
    m_session = str(uuid.uuid4())
    # 1. Pass for w1: its name is bound to w1's credential.
    assert_problem(sync(api, mallory, "w1", m_session), 403, "another credential")
    # 2. As itself: a forged end and a forged start for w1's job, as for a job that never was.
    ok(sync(api, mallory, "mallory", m_session))
    never = str(uuid.uuid4())
    forged = [
        {"job_id": job_id, "event": "ended", "exit_code": 0, "cpu_s": 1.0},
        {"job_id": job_id, "event": "started", "handle": {"pid": 1}},
        {"job_id": never, "event": "ended", "exit_code": 0},
    ]
    answer = ok(sync(api, mallory, "mallory", m_session, forged))
    assert answer["acked"] == [job_id, job_id, never] and answer["adopt"] == [] and answer["start"] == []
    # 3. Replace or extend its output: 404 exactly as for a job that does not exist.
    url = "/v1/workers/ts-east/jobs/{}/logs/stdout"
    hidden = api.put(
        url.format(job_id), params={"offset": 0}, content=b"forged: all clear\n", headers=mallory
    )
    missing = api.put(
        url.format(never), params={"offset": 0}, content=b"forged: all clear\n", headers=mallory
    )
    assert_same_404(hidden, job_id, missing, never)
    # Nothing changed: still w1's, running, its output intact.
    row = dispatch_row(actx, job_id)
    assert (row.state, row.worker, row.session, row.exit_code, row.handle) == (
        "started",
        "w1",
        s1,
        None,
        {"pid": 4242},
    )
    ex = executor_for(actx, actx.fleet.region("ts-east"))
    assert isinstance(ex, DispatchExecutor)
    assert ex.poll(handle).state is RunState.RUNNING
    assert ex.log_paths(handle)["stdout"].read_bytes() == b"real output\n"
    # Every attempt is on record, with the rule that refused it.
    refused = events(actx, "worker.refused")
    assert [(e["rule"], e["worker"]) for e in refused] == [
        ("worker_name_taken", "w1"),
        ("worker_holds_job", "mallory"),
        ("worker_holds_job", "mallory"),
        ("worker_holds_job", "mallory"),
    ]
    # w1 itself carries on and ends its job.
    ok(sync(api, w1, "w1", s1, [{"job_id": job_id, "event": "ended", "exit_code": 3}]))
    assert dispatch_row(actx, job_id).exit_code == 3


def test_a_job_passes_to_another_worker_only_after_its_lease_ran_out(
    api: TestClient, actx: Context, clock: Clock, running: tuple[str, dict[str, Any], Headers, str]
) -> None:
    job_id, _handle, w1, s1 = running
    w2, s2 = credential(api, "ts-east", "w2"), str(uuid.uuid4())
    clock.now += timedelta(seconds=WORKER_TIMEOUT_S - 1)  # w1 quiet, but within its lease
    assert ok(sync(api, w2, "w2", s2))["adopt"] == []
    clock.now += timedelta(seconds=2)  # now past it: w1 is gone
    adopted = ok(sync(api, w2, "w2", s2))["adopt"]
    assert [(a["job_id"], a["handle"]) for a in adopted] == [(job_id, {"pid": 4242})]
    row = dispatch_row(actx, job_id)
    assert (row.worker, row.session) == ("w2", s2)
    [taken] = [e for e in events(actx, "worker.claimed") if "taken_over_from" in e]
    assert taken == {
        "actor": None,
        "outcome": "allow",
        "worker": "w2",
        "jobs": [job_id],
        "taken_over_from": "w1",
    }
    # The job is w2's now: its output and end are w2's to report, no longer w1's.
    url = f"/v1/workers/ts-east/jobs/{job_id}/logs/stdout"
    assert_problem(api.put(url, params={"offset": 12}, content=b"late w1\n", headers=w1), 404)
    ok(sync(api, w1, "w1", s1, [{"job_id": job_id, "event": "ended", "exit_code": 9}]))
    assert dispatch_row(actx, job_id).exit_code is None
    assert ok(api.put(url, params={"offset": 12}, content=b"from w2\n", headers=w2)) == {"size": 20}
    ok(sync(api, w2, "w2", s2, [{"job_id": job_id, "event": "ended", "exit_code": 0}]))
    row = dispatch_row(actx, job_id)
    assert (row.state, row.exit_code) == ("ended", 0)
    assert [e["worker"] for e in events(actx, "worker.refused")] == ["w1", "w1"]
