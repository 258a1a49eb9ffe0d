"""The priority policy's fast paths change nothing: priorities computed column-wise from the
jobs' shared ``priority_inputs`` are, to the bit, the straightforward per-job sum, and the
order is exactly a stable sort on them (ties in queue order)."""

from __future__ import annotations

import copy
import pickle
from dataclasses import fields

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from enclave.scheduler.capacity import ClusterState
from enclave.scheduler.model import PRIORITY_INPUTS, QOS, QOS_RANK, Job, PriorityInputs, priority_index
from enclave.scheduler.policies import MultifactorEASY
from enclave.scheduler.priority import FairShare, Weights, descending_stable, priorities

from .factory import PoolSpec, RegionSpec, make_fleet, make_job

MAX_NODES = 8


def priority_one_by_one(job: Job, now: float, fairshare: dict[str, float], w: Weights) -> float:
    """The multifactor priority as first written: every factor read from the job itself."""
    age = min(max((now - job.submit_s) / w.max_age_s, 0.0), 1.0)
    qos = QOS_RANK[job.qos] / max(QOS_RANK.values())
    size = min(1.0, job.nodes / max(1, MAX_NODES))
    return w.age * age + w.fairshare * fairshare.get(job.agency, 1.0) + w.qos * qos + w.size * size


# Few distinct values of each input, so that jobs share inputs and priorities tie; submission
# times up to past the age cap (ages clipped to 1: more ties) and after ``now`` (clipped to 0).
job_rows = st.lists(
    st.tuples(
        st.sampled_from(["nasa", "doe", "noaa", "other"]),
        st.sampled_from(list(QOS)),
        st.integers(1, 12),
        st.one_of(st.sampled_from([0.0, 10.0, 10.0, 5e5]), st.floats(-1e6, 2e6)),
    ),
    max_size=40,
)


def queue_of(rows: list[tuple[str, QOS, int, float]]) -> list[Job]:
    # Ids unrelated to the queue's order, so that nothing sorts by id by accident.
    return [
        make_job(f"z{len(rows) - i}", agency=a, qos=q, nodes=n, submit_s=s, seq=i)
        for i, (a, q, n, s) in enumerate(rows)
    ]


@settings(max_examples=300, deadline=None)
@given(job_rows, st.floats(0, 1e6), st.lists(st.tuples(st.sampled_from(["nasa", "doe"]), st.floats(0, 1e6))))
def test_priorities_and_order_are_the_straightforward_ones(
    rows: list[tuple[str, QOS, int, float]], now: float, usage: list[tuple[str, float]]
) -> None:
    queue = queue_of(rows)
    fs = FairShare(shares={"doe": 2.0})
    for agency, units in usage:
        fs.charge(agency, units, 0.0)
    factors = fs.factors(sorted({j.agency for j in queue}), now)
    w = Weights()
    expected = [priority_one_by_one(j, now, factors, w) for j in queue]
    assert priorities(queue, now, factors, w, MAX_NODES).tolist() == expected  # to the bit

    state = ClusterState.from_fleet(make_fleet(RegionSpec("r1", (PoolSpec("p", MAX_NODES),))))
    order = MultifactorEASY(fairshare=fs).order(queue, now, state)
    position = {j.id: i for i, j in enumerate(queue)}
    by_hand = sorted(queue, key=lambda j: (-expected[position[j.id]], position[j.id]))
    assert [j.id for j in order] == [j.id for j in by_hand]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.integers(-3, 3).map(float), st.floats(-1e9, 1e9)), max_size=60))
def test_descending_stable_is_a_stable_argsort(values: list[float]) -> None:
    a = np.array(values, dtype=np.float64)
    assert descending_stable(a).tolist() == np.argsort(-a, kind="stable").tolist()


def test_jobs_alike_share_their_priority_index_in_this_process_even_through_pickle() -> None:
    a, b = make_job("a", nodes=3, qos=QOS.HIGH), make_job("b", nodes=3, qos=QOS.HIGH, submit_s=5.0)
    assert a.priority_index == b.priority_index
    assert make_job("c", nodes=4, qos=QOS.HIGH).priority_index != a.priority_index
    assert PRIORITY_INPUTS[a.priority_index] == PriorityInputs("agency", QOS.HIGH, 3)
    assert priority_index("agency", QOS.HIGH, 3) == a.priority_index
    for again in (pickle.loads(pickle.dumps(a)), copy.deepcopy(a), copy.copy(a)):  # noqa: S301 (bytes made here)
        assert again == a and again.priority_index == a.priority_index and again.shape is a.shape
    # The index is this process's: pickled, a job carries only what __init__ takes.
    assert a.__reduce__() == (Job, tuple(getattr(a, f.name) for f in fields(Job) if f.init))
