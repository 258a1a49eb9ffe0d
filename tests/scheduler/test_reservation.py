"""EASY never delays the reserved job: with exact runtime estimates, a job's first
reservation is honoured (it starts no later than that shadow time)."""

from __future__ import annotations

from hypothesis import given, settings

from enclave.scheduler.capacity import ClusterState
from enclave.scheduler.policies import make_policy

from .driver import Work, simulate
from .factory import PoolSpec, RegionSpec, make_fleet, make_job
from .strategies import Scenario, scenarios


def assert_reservations_honoured(scenario: Scenario) -> None:
    state = ClusterState.from_fleet(scenario.fleet)
    trace = simulate(state, make_policy("easy"), scenario.work)
    for job_id, shadow in trace.first_shadow().items():
        assert job_id in trace.starts, f"{job_id} was reserved for {shadow} and never started"
        assert trace.starts[job_id] <= shadow, (
            f"{job_id} was reserved for {shadow} but started at {trace.starts[job_id]}"
        )
    # Under EASY the head stays the head until it starts: its later reservations never slip.
    last: dict[str, float] = {}
    for now, res in trace.reservations:
        assert now <= res.start_s
        assert res.start_s <= last.get(res.job_id, res.start_s)
        last[res.job_id] = res.start_s


@settings(max_examples=250, deadline=None)
@given(scenarios(max_regions=1, exact=True))
def test_one_region_several_pools(scenario: Scenario) -> None:
    assert_reservations_honoured(scenario)


@settings(max_examples=250, deadline=None)
@given(scenarios(max_regions=2, exact=True, labelled=True, name_regions=True))
def test_two_regions_with_labels(scenario: Scenario) -> None:
    assert_reservations_honoured(scenario)


@settings(max_examples=250, deadline=None)
@given(scenarios(max_regions=2, exact=True, tight_power=True))
def test_two_regions_with_tight_power_caps(scenario: Scenario) -> None:
    assert_reservations_honoured(scenario)


@settings(max_examples=300, deadline=None)
@given(scenarios(max_regions=1, min_pools=2, max_jobs=15, exact=True, tight_power=True))
def test_two_pools_sharing_a_tight_power_cap(scenario: Scenario) -> None:
    # Backfill into the other pool must leave the power the head needs at its shadow time.
    assert_reservations_honoured(scenario)


def test_backfill_in_another_pool_leaves_the_power_the_head_needs() -> None:
    # Pools a (2 nodes of 4 CPUs) and b (2 nodes of 2 CPUs), 100 W busy per node, cap 250 W.
    # j0 holds one node of a until 10. The head needs both nodes of a (200 W): shadow 10, with
    # 50 W to spare then. A long whole-node job in b (100 W) fits now (200 W in all) but would
    # leave too little power at 10, so it waits until the head ends at 15.
    fleet = make_fleet(
        RegionSpec(
            "r1",
            (
                PoolSpec("a", 2, cpus=4, idle_w=0.0, peak_w=100.0),
                PoolSpec("b", 2, cpus=2, idle_w=0.0, peak_w=100.0),
            ),
            power_cap_mw=250e-6,
            pue=1.0,
        )
    )
    work = [
        Work(make_job("j0", cpus=4, walltime_s=10, seq=0), 10),
        Work(make_job("head", nodes=2, cpus=4, walltime_s=5, submit_s=1, seq=1), 5),
        Work(make_job("long", cpus=2, walltime_s=100, submit_s=1, seq=2), 100),
        Work(make_job("short", cpus=2, walltime_s=9, submit_s=1, seq=3), 9),
    ]
    trace = simulate(ClusterState.from_fleet(fleet), make_policy("easy"), work)
    assert trace.first_shadow()["head"] == 10
    assert trace.starts == {"j0": 0, "short": 1, "head": 10, "long": 15}


def test_backfill_that_would_delay_the_head_is_refused() -> None:
    # 2 nodes; a holds one until 10. The head needs both: shadow 10, no extra node. A short
    # job (ends by 10) backfills; a long one would delay the head and must wait.
    fleet = make_fleet(RegionSpec("r1", (PoolSpec("p", 2),)))
    work = [
        Work(make_job("a", walltime_s=10, seq=0), 10),
        Work(make_job("head", nodes=2, walltime_s=5, submit_s=1, seq=1), 5),
        Work(make_job("long", walltime_s=11, submit_s=1, seq=2), 11),
        Work(make_job("short", walltime_s=9, submit_s=1, seq=3), 9),
    ]
    trace = simulate(ClusterState.from_fleet(fleet), make_policy("easy"), work)
    assert trace.starts == {"a": 0, "short": 1, "head": 10, "long": 15}
    assert trace.first_shadow() == {"head": 10, "long": 15}
