"""The fast paths change nothing: ``explain=False`` and the reservation kept from one pass to
the next start the same jobs at the same times with the same reservations; the fused start
leaves the state that allocate + start leave."""

from __future__ import annotations

from dataclasses import FrozenInstanceError, fields, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enclave.labels import DEFAULT_SCHEME
from enclave.scheduler.capacity import ClusterState, PoolState
from enclave.scheduler.model import QOS, Job, PassResult
from enclave.scheduler.policies import make_policy

from .driver import simulate
from .invariants import snapshot
from .strategies import Scenario, scenarios


def forget_reservation(state: ClusterState) -> None:
    state.reservation_cache = None


@settings(max_examples=200, deadline=None)
@given(
    scenarios(max_regions=2, tight_power=True, labelled=True, name_regions=True),
    st.sampled_from(["fcfs", "easy", "priority"]),
)
def test_same_schedule_without_explanations_and_without_the_kept_reservation(
    scenario: Scenario, policy: str
) -> None:
    def run(explain: bool, forget: bool) -> tuple[object, ...]:
        state = ClusterState.from_fleet(scenario.fleet)
        before = forget_reservation if forget else None
        trace = simulate(state, make_policy(policy), scenario.work, before_pass=before, explain=explain)
        return (trace.starts, trace.placements, trace.reservations, trace.never_started)

    reference = run(explain=True, forget=True)
    assert run(explain=True, forget=False) == reference
    assert run(explain=False, forget=False) == reference


def find_shared_by_scan(pool: PoolState, job: Job) -> int | None:
    """Best fit as first written: every distinct free-CPU count, sorted, on every call."""
    for cpus in sorted(c for c in pool._by_cpus if c >= job.cpus):
        for node in pool._by_cpus[cpus]:
            _, m, g = pool.partial[node]
            if m >= job.memory_mb and g >= job.gpus:
                return node
    return None


@settings(max_examples=200, deadline=None)
@given(
    scenarios(max_regions=2, tight_power=True, labelled=True, name_regions=True),
    st.sampled_from(["fcfs", "easy", "priority"]),
)
def test_the_fused_start_leaves_the_state_allocate_and_start_leave(scenario: Scenario, policy: str) -> None:
    """The pass starts jobs with ``ClusterState.take`` (per-shape options, ends added in bulk);
    replaying its starts with ``allocate`` + ``start`` on a second state, and its releases in
    the driver's order, gives the same placements and the same state after every pass."""
    state = ClusterState.from_fleet(scenario.fleet)
    twin = ClusterState.from_fleet(scenario.fleet)

    def on_pass(now: float, seen_state: ClusterState, queue: list[Job], result: PassResult) -> None:
        assert seen_state is state
        for job_id in sorted(set(twin.running) - set(state.running)):  # same instant: by id
            twin.release(job_id)
        for job, placement in result.started:
            region = twin.region(placement.region)
            again = twin.allocate(job, region, region.pool(placement.pool))
            twin.start(job, again, now)
            assert again == placement
        assert snapshot(state) == snapshot(twin)
        for region in state.regions:
            want = sorted(
                (r.end_estimate_s, i) for i, r in state.running.items() if r.placement.region == region.name
            )
            assert list(state.ends_of(region.name)) == want == list(twin.ends_of(region.name))
            for pool in region.pools:
                assert pool._cpus_keys == sorted(pool._by_cpus)
                for job in queue:
                    assert pool.find_shared(job) == find_shared_by_scan(pool, job)

    simulate(state, make_policy(policy), scenario.work, on_pass=on_pass)


@given(
    st.text(min_size=1, max_size=8),
    st.sampled_from(["UNCLASSIFIED", "SECRET//SI", "TOP SECRET//SI/TK"]),
    st.integers(1, 64),
    st.integers(0, 128),
    st.floats(1, 1e6),
    st.sampled_from(list(QOS)),
    st.one_of(st.none(), st.just("r1")),
    st.booleans(),
)
def test_job_fields_as_given_and_shape_from_them(
    job_id: str,
    marking: str,
    nodes: int,
    cpus: int,
    walltime: float,
    qos: QOS,
    region: str | None,
    defer: bool,
) -> None:
    """Job's hand-written constructor (slots set directly) keeps the dataclass's contract."""
    label = DEFAULT_SCHEME.parse(marking)
    args = dict(
        id=job_id, agency="a", label=label, nodes=nodes, cpus=cpus, memory_mb=cpus * 2, gpus=nodes % 3,
        walltime_s=walltime, submit_s=walltime / 2, qos=qos, region=region, seq=nodes, deferrable=defer,
        deadline_s=walltime * 3 if defer else None,
    )  # fmt: skip
    job = Job(**args)  # type: ignore[arg-type]
    assert {f.name: getattr(job, f.name) for f in fields(Job) if f.init} == args
    assert job.shape == f"{marking}|{region}|{nodes}|{cpus}|{cpus * 2}|{nodes % 3}"
    assert job == Job(*args.values()) and hash(job) == hash(Job(*args.values()))  # type: ignore[arg-type]
    moved = replace(job, region="elsewhere")
    assert moved.shape == f"{marking}|elsewhere|{nodes}|{cpus}|{cpus * 2}|{nodes % 3}" and moved.id == job.id
    with pytest.raises(FrozenInstanceError):
        job.nodes = 2  # type: ignore[misc]
