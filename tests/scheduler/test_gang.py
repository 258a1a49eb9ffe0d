"""Gang scheduling and bookkeeping: a multi-node job gets all its nodes in one pool or none;
node counts are conserved after every start and release; releasing everything restores the
exact initial state."""

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
from .invariants import check_pools, check_power, check_started, snapshot
from .strategies import Scenario, scenarios


def on_pass(now: float, state: ClusterState, queue: list[Job], result: PassResult) -> None:
    check_started(state, result)
    check_pools(state)


def on_release(state: ClusterState) -> None:
    check_pools(state)
    check_power(state)


@settings(max_examples=300, deadline=None)
@given(
    scenarios(max_regions=2, tight_power=True, labelled=True, name_regions=True),
    st.sampled_from(["fcfs", "easy", "priority"]),
)
def test_gang_and_conservation_then_exact_initial_state(scenario: Scenario, policy: str) -> None:
    state = ClusterState.from_fleet(scenario.fleet)
    initial = snapshot(state)
    trace = simulate(state, make_policy(policy), scenario.work, on_pass=on_pass, on_release=on_release)
    assert set(trace.ends) == set(trace.starts)
    assert snapshot(state) == initial
    for r in state.regions:
        assert r.busy_w == 0.0
        for p in r.pools:
            assert p.idle == p.spec.count and p.partial == {}


def test_multi_node_job_is_never_split_across_pools_or_regions() -> None:
    # Two regions with two pools of 2 nodes each: 8 nodes free, but no pool has 3.
    pools = (PoolSpec("a", 2), PoolSpec("b", 2))
    fleet = make_fleet(RegionSpec("r1", pools), RegionSpec("r2", pools))
    state = ClusterState.from_fleet(fleet)
    result = schedule(state, [make_job("wide", nodes=3)], 0.0, make_policy("easy"))
    assert result.started == []
    assert result.reasons == {"wide": Reason.UNSATISFIABLE}
    result = schedule(state, [make_job("pair", nodes=2, cpus=1)], 0.0, make_policy("easy"))
    [(_job, pl)] = result.started
    assert (pl.region, pl.pool, pl.nodes, pl.exclusive, pl.node) == ("r1", "a", 2, True, None)
    assert state.region("r1").pool("a").idle == 0


def test_gang_waits_for_all_its_nodes() -> None:
    fleet = make_fleet(RegionSpec("r1", (PoolSpec("p", 4),)))
    state = ClusterState.from_fleet(fleet)
    schedule(state, [make_job("one", walltime_s=10)], 0.0, make_policy("fcfs"))
    result = schedule(state, [make_job("four", nodes=4, seq=1)], 0.0, make_policy("fcfs"))
    assert result.started == [] and result.reasons == {"four": Reason.RESOURCES}
    assert state.region("r1").pool("p").idle == 3  # nothing taken in part
    state.release("one")
    result = schedule(state, [make_job("four", nodes=4, seq=1)], 10.0, make_policy("fcfs"))
    assert [pl.nodes for _, pl in result.started] == [4]
    assert state.region("r1").pool("p").idle == 0


def test_shared_jobs_pack_best_fit_and_free_the_node_when_the_last_ends() -> None:
    fleet = make_fleet(RegionSpec("r1", (PoolSpec("p", 2, cpus=8, memory_mb=8192),)))
    state = ClusterState.from_fleet(fleet)
    initial = snapshot(state)
    jobs = [
        make_job("a", cpus=6, memory_mb=1024, seq=0),
        make_job("b", cpus=5, memory_mb=1024, seq=1),  # does not fit beside a: second node
        make_job("c", cpus=2, memory_mb=1024, seq=2),  # fits beside a (2 left) and b (3 left): best fit a
    ]
    result = schedule(state, jobs, 0.0, make_policy("fcfs"))
    nodes = {j.id: pl.node for j, pl in result.started}
    assert nodes["c"] == nodes["a"] != nodes["b"]
    pool = state.region("r1").pool("p")
    assert pool.idle == 0 and pool.partial[nodes["a"]] == (0, 6144, 0)
    check_pools(state)
    state.release("a")
    assert pool.idle == 0 and pool.partial[nodes["a"]] == (6, 7168, 0)
    state.release("c")
    assert pool.idle == 1 and nodes["a"] not in pool.partial
    state.release("b")
    assert snapshot(state) == initial
    assert state.release("b") is None  # releasing twice is harmless


def test_builtin_fleets_round_trip() -> None:
    for name in ("local", "gigawatt"):
        state = ClusterState.from_fleet(load_fleet(name))
        initial = snapshot(state)
        region = state.regions[0]
        pool = region.pools[0]
        jobs = [
            make_job("gang", nodes=min(2, pool.spec.count), cpus=pool.spec.cpus, memory_mb=1024, seq=0),
            make_job("slice", cpus=1, memory_mb=1024, seq=1),
            make_job("slice2", cpus=1, memory_mb=1024, seq=2),
        ]
        result = schedule(state, jobs, 0.0, make_policy("easy"))
        check_started(state, result)
        check_pools(state)
        check_power(state)
        for job, _ in result.started:
            state.release(job.id)
        assert snapshot(state) == initial, name


@settings(max_examples=100, deadline=None)
@given(scenarios(max_regions=2, labelled=True))
def test_replaying_placements_rebuilds_the_same_state(scenario: Scenario) -> None:
    # Restart reconciliation: place() re-applies known placements onto a fresh state.
    live = ClusterState.from_fleet(scenario.fleet)
    queue = [w.job for w in scenario.work]
    result = schedule(live, queue, 0.0, make_policy("easy"))
    replayed = ClusterState.from_fleet(scenario.fleet)
    for job, pl in result.started:
        replayed.place(job, pl, 0.0)
    check_pools(replayed)
    check_power(replayed)
    assert snapshot(replayed) == snapshot(live)
