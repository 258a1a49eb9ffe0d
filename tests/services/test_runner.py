"""The live loop driven tick by tick, with real processes: reasons, walltime, preemption,
quotas and energy accounting."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from enclave.errors import Unavailable
from enclave.scheduler.model import QOS
from enclave.services import accounting, jobs, tenancy
from enclave.services.auth import authenticate, mint_token
from enclave.services.bootstrap import bootstrap
from enclave.services.context import Context, Settings
from enclave.services.jobs import JobSpec
from enclave.services.runner import JobRunner
from enclave.services.unit import Actor

FLEET = """
name = "one-node"
[[regions]]
name = "solo"
accreditation = "SECRET"
power_cap_mw = {cap}
pue = 1.1
carbon_g_per_kwh = 400.0
price_per_kwh = 0.2
[[regions.pools]]
name = "cpu"
count = 1
cpus = 2
memory_mb = 2048
idle_w = 10.0
peak_w = 45.0
"""


@pytest.fixture
def make_ctx(tmp_path: Path) -> Iterator[Callable[[float], Context]]:
    made: list[Context] = []

    def make(cap_mw: float = 0.001) -> Context:
        fleet = tmp_path / f"fleet-{len(made)}.toml"
        fleet.write_text(FLEET.format(cap=cap_mw))
        home = tmp_path / f"home-{len(made)}"
        ctx = Context(Settings(home=home, db_url=f"sqlite+pysqlite:///{home}.db", fleet=str(fleet)))
        bootstrap(ctx)
        made.append(ctx)
        return ctx

    yield make
    for ctx in made:
        ctx.close()


def admin(ctx: Context) -> Actor:
    return authenticate(ctx, (ctx.settings.home / "admin.token").read_text().strip())


def run_until(
    runner: JobRunner,
    ctx: Context,
    actor: Actor,
    job_id: str,
    done: Callable[[dict[str, object]], bool],
    timeout_s: float = 20,
) -> dict[str, object]:
    deadline = time.monotonic() + timeout_s
    while True:
        runner.tick()
        job = jobs.show(ctx, actor, job_id)
        if done(job):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} stuck in {job['state']} ({job['reason']})")
        time.sleep(0.02)


def submit(ctx: Context, actor: Actor, command: list[str], **kw: object) -> str:
    spec = JobSpec(name=command[0], command=command, **kw)  # type: ignore[arg-type]
    return str(jobs.submit(ctx, actor, [spec])[0]["id"])


def test_power_cap_keeps_a_job_waiting_with_a_visible_reason(make_ctx: Callable[[float], Context]) -> None:
    # Idle draw 10 W x 1.1 = 11 W; one busy CPU adds 17.5 W -> 30.25 W > a 20 W cap.
    ctx = make_ctx(0.00002)
    actor = admin(ctx)
    runner = JobRunner(ctx)
    job_id = submit(ctx, actor, ["true"])
    job = run_until(
        runner, ctx, actor, job_id, lambda j: j["state"] == "admitted" and j["reason"] == "power_cap"
    )
    assert job["started_at"] is None
    assert all(r.facility_w <= r.cap_w for r in runner.cluster.regions)


def test_walltime_is_enforced(make_ctx: Callable[[float], Context]) -> None:
    ctx = make_ctx(0.001)
    actor = admin(ctx)
    runner = JobRunner(ctx, grace_s=0.5)
    job_id = submit(ctx, actor, ["sh", "-c", "trap '' TERM; sleep 30"], walltime_s=1)
    job = run_until(runner, ctx, actor, job_id, lambda j: j["state"] in jobs.TERMINAL, timeout_s=30)
    assert job["state"] == "timeout"
    assert job["exit_code"] == 137  # ignored SIGTERM, killed after the grace period


def test_urgent_job_preempts_and_the_victim_is_requeued(make_ctx: Callable[[float], Context]) -> None:
    ctx = make_ctx(0.001)
    actor = admin(ctx)  # admins may use the urgent QOS
    runner = JobRunner(ctx, grace_s=2)
    low = submit(ctx, actor, ["sleep", "30"], cpus_per_node=2, qos=QOS.LOW)
    run_until(runner, ctx, actor, low, lambda j: j["state"] == "running")
    urgent = submit(ctx, actor, ["true"], cpus_per_node=2, qos=QOS.URGENT)
    run_until(runner, ctx, actor, urgent, lambda j: j["state"] == "completed")
    victim = jobs.show(ctx, actor, low)
    assert victim["attempts"] == 1
    assert victim["state"] in {"pending", "admitted", "running"}  # requeued, not lost
    from enclave.services.audit import list_records

    transitions = [
        (r["details"]["from"], r["details"]["to"])
        for r in list_records(ctx, actor, limit=1000, event="job.transition")
        if r["object_id"] == low
    ]
    assert ("running", "preempted") in transitions and ("preempted", "pending") in transitions


def test_energy_is_accounted_and_quota_holds_further_jobs(make_ctx: Callable[[float], Context]) -> None:
    ctx = make_ctx(0.001)
    actor = admin(ctx)
    runner = JobRunner(ctx)
    first = submit(ctx, actor, ["sh", "-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done"])
    done = run_until(runner, ctx, actor, first, lambda j: j["state"] == "completed")
    energy = done["energy"]
    assert isinstance(energy, dict)
    assert energy["source"] == "modelled"  # no RAPL on this machine kind
    assert energy["kwh"] > 0
    assert energy["kgco2e"] == pytest.approx(energy["kwh"] * 400.0 / 1000.0)
    usage = accounting.agency_usage(ctx, actor, tenancy.SYSTEM_AGENCY)
    assert usage["energy_kwh"] == pytest.approx(energy["kwh"])
    tenancy.update_quotas(ctx, actor, tenancy.SYSTEM_AGENCY, tenancy.Quotas(kwh=energy["kwh"] / 2))
    held = submit(ctx, actor, ["true"])
    job = run_until(runner, ctx, actor, held, lambda j: str(j["reason"]).startswith("quota"))
    assert job["state"] == "pending"


def test_a_user_cannot_submit_urgent_work(make_ctx: Callable[[float], Context]) -> None:
    ctx = make_ctx(0.001)
    actor = admin(ctx)
    tenancy.create_user(ctx, actor, "uma", tenancy.SYSTEM_AGENCY, "SECRET", ["user"])
    _row, secret = mint_token(ctx, actor, "uma", "SECRET")
    uma = authenticate(ctx, secret)
    from enclave.errors import Forbidden

    with pytest.raises(Forbidden):
        submit(ctx, uma, ["true"], qos=QOS.URGENT)


class _DownThenUp:
    """Test double for an engine outage (a real Slurm or Ray controller cannot be taken down
    and brought back inside a unit test): the first start fails as an unreachable engine
    does, later ones go to the real local executor."""

    def __init__(self, real: object) -> None:
        self.real = real
        self.failures = 1

    def __getattr__(self, name: str) -> object:
        return getattr(self.real, name)

    def start(self, spec: object) -> object:
        if self.failures:
            self.failures -= 1
            raise Unavailable("cannot reach the engine's controller")
        return self.real.start(spec)  # type: ignore[attr-defined]


def test_an_engine_outage_at_start_requeues_rather_than_fails(make_ctx: Callable[[float], Context]) -> None:
    ctx = make_ctx(0.001)
    actor = admin(ctx)
    runner = JobRunner(ctx)
    runner.executors["solo"] = _DownThenUp(runner.executors["solo"])  # type: ignore[assignment]
    job_id = submit(ctx, actor, ["true"])
    job = run_until(runner, ctx, actor, job_id, lambda j: j["state"] == "completed")
    assert job["attempts"] == 1 and job["exit_code"] == 0
