"""The core's EASY and FCFS, through the event driver, match brute-force references exactly."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from enclave.scheduler.capacity import ClusterState
from enclave.scheduler.policies import make_policy

from .driver import Trace, Work, simulate
from .factory import make_job, one_pool_fleet
from .reference import RefJob, easy_reference, fcfs_reference


def run_core(n_nodes: int, jobs: list[RefJob], policy: str) -> Trace:
    state = ClusterState.from_fleet(one_pool_fleet(n_nodes, cpus=4))
    work = [
        Work(
            make_job(
                j.id, nodes=j.nodes, cpus=4, walltime_s=float(j.walltime), submit_s=float(j.submit), seq=i
            ),
            float(j.runtime),
        )
        for i, j in enumerate(jobs)
    ]
    return simulate(state, make_policy(policy), work)


@st.composite
def workloads(draw: st.DrawFn) -> tuple[int, list[RefJob]]:
    n_nodes = draw(st.integers(1, 8))
    rows = []
    for _ in range(draw(st.integers(1, 15))):
        nodes = draw(st.integers(1, n_nodes))
        walltime = draw(st.integers(1, 20))
        runtime = draw(st.one_of(st.just(walltime), st.integers(1, walltime)))
        submit = draw(st.integers(0, 30))
        rows.append((submit, nodes, walltime, runtime))
    rows.sort(key=lambda r: r[0])  # stable: the submission order among equal times is the drawn one
    jobs = [
        RefJob(f"j{i}", nodes, walltime, runtime, submit)
        for i, (submit, nodes, walltime, runtime) in enumerate(rows)
    ]
    return n_nodes, jobs


# A hand-worked case, so the reference itself is checked against a human:
# 4 nodes. a (2 nodes, 10 s) runs from 0. At 1, b (3 nodes) is blocked: shadow 10 (a ends),
# 1 extra node. c (1 node, 100 s) takes the extra node; d (1 node, 100 s) may not; e (1 node,
# 9 s) ends by the shadow time and backfills. At 10, a and e end and b starts; d waits for b.
HAND = [
    RefJob("a", 2, 10, 10, 0),
    RefJob("b", 3, 5, 5, 1),
    RefJob("c", 1, 100, 100, 1),
    RefJob("d", 1, 100, 100, 1),
    RefJob("e", 1, 9, 9, 1),
]


def test_hand_worked_easy() -> None:
    expected = {"a": 0, "b": 10, "c": 1, "d": 15, "e": 1}
    assert easy_reference(4, HAND) == expected
    trace = run_core(4, HAND, "easy")
    assert trace.starts == expected
    assert [(now, r.job_id, r.start_s) for now, r in trace.reservations] == [
        (1.0, "b", 10.0),
        (10.0, "d", 15.0),
    ]


def test_hand_worked_fcfs() -> None:
    expected = {"a": 0, "b": 10, "c": 10, "d": 15, "e": 15}
    assert fcfs_reference(4, HAND) == expected
    trace = run_core(4, HAND, "fcfs")
    assert trace.starts == expected
    assert trace.reservations == []


def test_extra_nodes_count_every_job_ending_at_the_shadow_time() -> None:
    # 5 nodes: a and b (1 node each) end at 10, c (2 nodes) at 30, 1 node free. The head (2
    # nodes) is blocked; at its shadow time 10 both a and b have ended, so 1 + 2 - 2 = 1 node
    # is extra and "long" backfills on it (counting only a would leave no extra node).
    jobs = [
        RefJob("a", 1, 10, 10, 0),
        RefJob("b", 1, 10, 10, 0),
        RefJob("c", 2, 30, 30, 0),
        RefJob("head", 2, 5, 5, 0),
        RefJob("long", 1, 50, 50, 0),
    ]
    expected = {"a": 0, "b": 0, "c": 0, "head": 10, "long": 0}
    assert easy_reference(5, jobs) == expected
    trace = run_core(5, jobs, "easy")
    assert trace.starts == expected
    assert [(r.job_id, r.start_s) for _now, r in trace.reservations] == [("head", 10.0)]


@settings(max_examples=300, deadline=None)
@given(workloads())
def test_easy_matches_reference(case: tuple[int, list[RefJob]]) -> None:
    n_nodes, jobs = case
    trace = run_core(n_nodes, jobs, "easy")
    assert trace.starts == easy_reference(n_nodes, jobs)
    assert trace.never_started == []


@settings(max_examples=150, deadline=None)
@given(workloads())
def test_fcfs_matches_reference(case: tuple[int, list[RefJob]]) -> None:
    n_nodes, jobs = case
    trace = run_core(n_nodes, jobs, "fcfs")
    assert trace.starts == fcfs_reference(n_nodes, jobs)
    assert trace.reservations == []
