"""Preemption: an URGENT job that does not fit asks for the fewest LOW/NORMAL victims (never
HIGH or URGENT ones), and starts on the next pass, before anything else, once they are gone."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from enclave.scheduler.capacity import ClusterState
from enclave.scheduler.core import schedule
from enclave.scheduler.model import QOS, Job, PassResult, Reason
from enclave.scheduler.policies import make_policy

from .factory import PoolSpec, RegionSpec, make_fleet, make_job
from .invariants import check_pools, check_power

PREEMPTIBLE = {QOS.LOW, QOS.NORMAL}


def run_at(state: ClusterState, jobs: list[Job], now: float, policy: str = "priority") -> PassResult:
    result = schedule(state, jobs, now, make_policy(policy))
    check_pools(state)
    check_power(state)
    return result


def fill(state: ClusterState, specs: list[tuple[str, QOS, int]]) -> None:
    """Start one job per (id, qos, nodes), the i-th at time i, each taking whole nodes."""
    for i, (job_id, qos, nodes) in enumerate(specs):
        result = run_at(state, [make_job(job_id, nodes=nodes, qos=qos, walltime_s=1000, seq=i)], float(i))
        assert [j.id for j, _ in result.started] == [job_id]


def one_pool(nodes: int, cap_mw: float = 1000.0) -> ClusterState:
    return ClusterState.from_fleet(
        make_fleet(
            RegionSpec(
                "r1", (PoolSpec("p", nodes, cpus=4, idle_w=10.0, peak_w=110.0),), power_cap_mw=cap_mw, pue=1.0
            )
        )
    )


def test_lowest_qos_then_latest_start_are_preempted_and_the_urgent_job_goes_next() -> None:
    state = one_pool(4)
    fill(state, [("n0", QOS.NORMAL, 1), ("l1", QOS.LOW, 1), ("l2", QOS.LOW, 1), ("n3", QOS.NORMAL, 1)])
    waiting = make_job("waiting", nodes=1, qos=QOS.NORMAL, submit_s=4, seq=4)  # queued before it
    urgent = make_job("urgent", nodes=2, qos=QOS.URGENT, submit_s=5, seq=5)
    result = run_at(state, [waiting, urgent], 5.0)
    victims = result.preempt
    assert result.started == []
    assert victims == ["l2", "l1"]
    assert result.reasons == {"urgent": Reason.PREEMPTING, "waiting": Reason.RESOURCES}
    assert result.reservation is not None
    assert (result.reservation.job_id, result.reservation.start_s) == ("urgent", 5.0)
    assert state.preempting == {"l1", "l2"}

    # While the victims stop (grace period), no further victims are chosen.
    result = run_at(state, [waiting, urgent], 6.0)
    assert result.started == [] and result.preempt == []
    assert result.reasons["urgent"] is Reason.PREEMPTING

    state.release_many(victims)
    assert state.preempting == set()
    # The victims are requeued (earlier submission than the urgent job) next to "waiting".
    requeued = [make_job(v, qos=QOS.LOW, seq=i, submit_s=float(i)) for i, v in ((1, "l1"), (2, "l2"))]
    queue = [*requeued, waiting, urgent]
    result = run_at(state, queue, 7.0)
    assert [j.id for j, _ in result.started] == ["urgent"]
    assert result.preempt == []


def test_high_and_urgent_jobs_are_never_victims() -> None:
    state = one_pool(4)
    fill(state, [("h0", QOS.HIGH, 1), ("u1", QOS.URGENT, 1), ("n2", QOS.NORMAL, 1), ("h3", QOS.HIGH, 1)])
    urgent = make_job("urgent", nodes=2, qos=QOS.URGENT, submit_s=5, seq=5)
    result = run_at(state, [urgent], 5.0)
    # One NORMAL node is not enough and nothing else may be taken: no preemption at all.
    assert result.preempt == []
    assert result.reasons == {"urgent": Reason.RESERVED}
    assert state.preempting == set()
    small = make_job("small", nodes=1, qos=QOS.URGENT, submit_s=6, seq=6)
    result = run_at(state, [urgent, small], 6.0, policy="fcfs")
    assert result.preempt == [] and result.reasons["urgent"] is Reason.RESOURCES
    result = run_at(state, [small], 6.0)
    assert result.preempt == ["n2"]


def test_no_needless_victim_among_jobs_of_different_sizes() -> None:
    # The urgent job needs 2 nodes. The LOW 1-node job started last would be the cheapest
    # loss, but alone it is not enough and the LOW 3-node job is enough alone.
    state = one_pool(4)
    fill(state, [("big", QOS.LOW, 3), ("one", QOS.LOW, 1)])
    result = run_at(state, [make_job("urgent", nodes=2, qos=QOS.URGENT, seq=2)], 2.0)
    assert result.preempt == ["big"]


def test_a_shared_node_is_one_unit_and_only_if_every_job_on_it_is_preemptible() -> None:
    state = one_pool(2)
    jobs = [
        make_job("a-low", cpus=2, qos=QOS.LOW, seq=0),
        make_job("a-normal", cpus=2, qos=QOS.NORMAL, seq=1),
        make_job("b-high", cpus=3, qos=QOS.HIGH, seq=2),
        make_job("b-low", cpus=1, qos=QOS.LOW, seq=3),
    ]
    result = run_at(state, jobs, 0.0)
    nodes = {j.id: pl.node for j, pl in result.started}
    assert nodes["a-low"] == nodes["a-normal"] != nodes["b-high"] == nodes["b-low"]
    result = run_at(state, [make_job("urgent", cpus=4, qos=QOS.URGENT, seq=4)], 1.0)
    assert sorted(result.preempt) == ["a-low", "a-normal"]
    state.release_many(["a-low", "a-normal"])
    result = run_at(state, [make_job("urgent", cpus=4, qos=QOS.URGENT, seq=4)], 2.0)
    assert [j.id for j, _ in result.started] == ["urgent"]


def test_preemption_frees_power_when_the_cap_binds() -> None:
    # 4 nodes, cap 240 W: 40 W idle + two busy nodes. Two LOW jobs run; two nodes are idle
    # but the cap holds the urgent job: one victim frees enough power.
    state = one_pool(4, cap_mw=240e-6)
    fill(state, [("l0", QOS.LOW, 1), ("l1", QOS.LOW, 1)])
    urgent = make_job("urgent", qos=QOS.URGENT, seq=2, submit_s=2)
    result = run_at(state, [urgent], 2.0)
    assert result.preempt == ["l1"]
    assert result.reasons == {"urgent": Reason.PREEMPTING}
    state.release("l1")
    assert [j.id for j, _ in run_at(state, [urgent], 3.0).started] == ["urgent"]


@st.composite
def full_pools(draw: st.DrawFn) -> tuple[int, list[tuple[str, QOS, int]], int]:
    n_nodes = draw(st.integers(2, 8))
    specs: list[tuple[str, QOS, int]] = []
    used = 0
    while used < n_nodes:
        nodes = draw(st.integers(1, min(3, n_nodes - used)))
        specs.append((f"r{len(specs)}", draw(st.sampled_from(list(QOS))), nodes))
        used += nodes
    return n_nodes, specs, draw(st.integers(1, n_nodes))


@settings(max_examples=300, deadline=None)
@given(full_pools(), st.sampled_from(["priority", "easy", "fcfs"]))
def test_victims_are_preemptible_sufficient_and_minimal(
    case: tuple[int, list[tuple[str, QOS, int]], int], policy: str
) -> None:
    n_nodes, specs, need = case
    state = one_pool(n_nodes)
    fill(state, specs)
    size = {job_id: nodes for job_id, _, nodes in specs}
    qos = {job_id: q for job_id, q, _ in specs}
    urgent = make_job("urgent", nodes=need, qos=QOS.URGENT, submit_s=100, seq=100)
    result = run_at(state, [urgent], 100.0, policy)
    assert result.started == []  # the pool is full
    preemptible = sum(size[j] for j in size if qos[j] in PREEMPTIBLE)
    victims = result.preempt
    if preemptible < need:
        assert victims == [] and result.reasons["urgent"] is not Reason.PREEMPTING
        return
    assert victims and result.reasons["urgent"] is Reason.PREEMPTING
    assert len(set(victims)) == len(victims)
    assert all(qos[v] in PREEMPTIBLE for v in victims)
    freed = sum(size[v] for v in victims)
    assert freed >= need
    for v in victims:  # none is needless
        assert freed - size[v] < need, f"{v} need not be preempted: {victims}"
    state.release_many(victims)
    result = run_at(state, [urgent], 101.0, policy)
    assert [j.id for j, _ in result.started] == ["urgent"]
