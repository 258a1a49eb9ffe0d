"""The power cap is never exceeded, and a job held back by it says so (Reason.POWER_CAP)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from enclave.fleet import load_fleet
from enclave.scheduler.capacity import ClusterState
from enclave.scheduler.core import schedule
from enclave.scheduler.model import Job, PassResult, Reason
from enclave.scheduler.policies import make_policy

from .driver import simulate
from .factory import PoolSpec, RegionSpec, make_fleet, make_job
from .invariants import check_power, check_reasons
from .strategies import Scenario, scenarios


def on_pass(now: float, state: ClusterState, queue: list[Job], result: PassResult) -> None:
    check_power(state)
    check_reasons(state, queue, result)


@settings(max_examples=300, deadline=None)
@given(
    scenarios(max_regions=2, tight_power=True, labelled=True), st.sampled_from(["fcfs", "easy", "priority"])
)
def test_cap_never_exceeded_and_reasons_true(scenario: Scenario, policy: str) -> None:
    state = ClusterState.from_fleet(scenario.fleet)
    simulate(state, make_policy(policy), scenario.work, on_pass=on_pass, on_release=check_power)


# One region: 4 nodes of 10 W idle, 110 W peak, PUE 1. Cap 240 W = 40 W idle + 2 busy nodes.
POWER_FLEET = make_fleet(
    RegionSpec("r1", (PoolSpec("p", 4, cpus=4, idle_w=10.0, peak_w=110.0),), power_cap_mw=240e-6, pue=1.0)
)


def node_job(job_id: str, seq: int, walltime_s: float = 10.0) -> Job:
    return make_job(job_id, cpus=4, walltime_s=walltime_s, seq=seq)


def test_whole_node_jobs_stop_at_the_cap() -> None:
    state = ClusterState.from_fleet(POWER_FLEET)
    queue = [node_job(f"j{i}", i) for i in range(4)]
    result = schedule(state, queue, 0.0, make_policy("easy"))
    assert [j.id for j, _ in result.started] == ["j0", "j1"]
    assert state.region("r1").facility_w == 240.0
    # Two nodes are idle, yet neither job may start: the cap, not resources, holds them.
    assert result.reasons["j2"] is Reason.RESERVED
    assert result.reservation is not None and result.reservation.start_s == 10.0
    assert result.reasons["j3"] is Reason.POWER_CAP


def test_every_job_held_by_the_cap_says_power_cap_under_fcfs_and_behind_a_reservation() -> None:
    for policy in ("fcfs", "easy", "priority"):
        state = ClusterState.from_fleet(POWER_FLEET)
        queue = [node_job(f"j{i}", i) for i in range(2)]
        schedule(state, queue, 0.0, make_policy(policy))
        blocked = [node_job("x", 2), node_job("y", 3, walltime_s=5.0)]
        result = schedule(state, blocked, 1.0, make_policy(policy))
        assert result.started == []
        if policy == "fcfs":
            assert result.reasons == {"x": Reason.POWER_CAP, "y": Reason.PRIORITY}
        else:
            assert result.reasons == {"x": Reason.RESERVED, "y": Reason.POWER_CAP}


def test_shared_jobs_fill_the_headroom_a_whole_node_would_pass() -> None:
    # Cap 290 W: 40 W idle + two busy nodes (200 W) leave 50 W, too little for a third whole
    # node (100 W) but room for two quarter-node jobs (1 of 4 CPUs: 25 W each), not three.
    fleet = make_fleet(
        RegionSpec("r1", (PoolSpec("p", 4, cpus=4, idle_w=10.0, peak_w=110.0),), power_cap_mw=290e-6, pue=1.0)
    )
    state = ClusterState.from_fleet(fleet)
    schedule(state, [node_job("a", 0), node_job("b", 1)], 0.0, make_policy("easy"))
    result = schedule(state, [node_job("c", 2)], 0.0, make_policy("easy"))
    assert result.reasons == {"c": Reason.RESERVED}
    quarter = [make_job(f"q{i}", cpus=1, walltime_s=10, seq=3 + i) for i in range(3)]
    result = schedule(state, quarter, 0.0, make_policy("easy"))
    assert [j.id for j, _ in result.started] == ["q0", "q1"]
    assert [pl.node for _, pl in result.started] == [0, 0]  # packed on one node
    assert result.reasons == {"q2": Reason.RESERVED}
    assert state.region("r1").facility_w == 290.0
    check_power(state)


def test_a_job_the_cap_can_never_allow_is_not_reserved() -> None:
    # Cap 100 W with 40 W idle: a whole node (100 W busy) can never start; a quarter can.
    fleet = make_fleet(
        RegionSpec("r1", (PoolSpec("p", 4, cpus=4, idle_w=10.0, peak_w=110.0),), power_cap_mw=100e-6, pue=1.0)
    )
    state = ClusterState.from_fleet(fleet)
    result = schedule(state, [node_job("big", 0), make_job("small", cpus=1, seq=1)], 0.0, make_policy("easy"))
    assert [j.id for j, _ in result.started] == ["small"]
    assert result.reasons == {"big": Reason.POWER_CAP}
    assert result.reservation is None


def test_pue_multiplies_the_draw() -> None:
    # Same fleet at PUE 1.2: the cap of 240 W facility leaves 200 W of IT load = 40 W idle +
    # 1.6 busy nodes: one whole-node job only.
    fleet = make_fleet(
        RegionSpec("r1", (PoolSpec("p", 4, cpus=4, idle_w=10.0, peak_w=110.0),), power_cap_mw=240e-6, pue=1.2)
    )
    state = ClusterState.from_fleet(fleet)
    result = schedule(state, [node_job("a", 0), node_job("b", 1)], 0.0, make_policy("fcfs"))
    assert [j.id for j, _ in result.started] == ["a"]
    assert result.reasons == {"b": Reason.POWER_CAP}
    assert state.region("r1").facility_w <= state.region("r1").cap_w


def test_fcfs_skips_a_job_no_cap_can_ever_allow() -> None:
    # Like an unsatisfiable job, a job that would pass the cap even in an idle region must not
    # stop a strict FCFS queue for good.
    fleet = make_fleet(
        RegionSpec("r1", (PoolSpec("p", 4, cpus=4, idle_w=10.0, peak_w=110.0),), power_cap_mw=100e-6, pue=1.0)
    )
    queue = [node_job("never", 0), make_job("small", cpus=1, seq=1), node_job("behind", 2)]
    result = schedule(ClusterState.from_fleet(fleet), queue, 0.0, make_policy("fcfs"))
    assert [j.id for j, _ in result.started] == ["small"]
    assert result.reasons == {"never": Reason.POWER_CAP, "behind": Reason.POWER_CAP}


def test_gigawatt_fleet_at_full_load_and_under_a_halved_cap() -> None:
    fleet = load_fleet("gigawatt")
    # The pools are sized so that every node at peak stays under the cap: the whole GPU pool
    # of gov-east runs as one gang.
    state = ClusterState.from_fleet(fleet)
    everything = make_job("all", nodes=55000, cpus=112, gpus=8, memory_mb=1024, label="CUI")
    result = schedule(state, [everything], 0.0, make_policy("easy"))
    assert [pl.region for _, pl in result.started] == ["gov-east"]
    check_power(state)
    # At half the cap, 1000-node jobs start until the next one would pass it, in the lowest
    # sufficient region first, and the rest wait for power.
    state = ClusterState.from_fleet(fleet, power_cap_scale=0.5)
    queue = [make_job(f"j{i}", nodes=1000, cpus=112, gpus=8, label="CUI", seq=i) for i in range(100)]
    result = schedule(state, queue, 0.0, make_policy("easy"))
    check_power(state)
    check_reasons(state, queue, result)
    region = state.region("gov-east")
    per_job_w = 1000 * (10200.0 - 1460.0)
    started_here = [j for j, pl in result.started if pl.region == "gov-east"]
    assert region.facility_w <= region.cap_w < region.facility_w + per_job_w * region.pue
    assert len(started_here) == int((region.cap_w / region.pue - region.idle_it_w) // per_job_w)
    assert Reason.POWER_CAP in result.reasons.values()
