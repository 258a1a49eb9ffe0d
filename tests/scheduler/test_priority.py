"""Multifactor priority (policy "priority"): QOS first, fair-share with decayed usage, age and
size, ties in submission order."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enclave.errors import InvalidInput
from enclave.scheduler.capacity import ClusterState
from enclave.scheduler.core import schedule
from enclave.scheduler.model import QOS, Job, Reason
from enclave.scheduler.policies import EASY, FCFS, MultifactorEASY, make_policy
from enclave.scheduler.priority import FairShare, Weights, billing_units, priorities

from .factory import PoolSpec, RegionSpec, make_fleet, make_job

HOUR = 3600.0


def state_with(nodes: int = 4) -> ClusterState:
    return ClusterState.from_fleet(make_fleet(RegionSpec("r1", (PoolSpec("p", nodes),))))


def ids(jobs: list[Job]) -> list[str]:
    return [j.id for j in jobs]


def test_policy_table() -> None:
    assert isinstance(make_policy(), MultifactorEASY)
    assert isinstance(make_policy("fcfs"), FCFS) and not make_policy("fcfs").backfill
    assert isinstance(make_policy("easy"), EASY) and make_policy("easy").backfill
    assert make_policy("priority").backfill
    with pytest.raises(InvalidInput):
        make_policy("lottery")


def test_higher_qos_first_whatever_the_submission_order() -> None:
    queue = [
        make_job("low", qos=QOS.LOW, seq=0),
        make_job("normal", qos=QOS.NORMAL, seq=1),
        make_job("high", qos=QOS.HIGH, seq=2),
        make_job("urgent", qos=QOS.URGENT, seq=3),
    ]
    order = MultifactorEASY().order(queue, 0.0, state_with())
    assert ids(order) == ["urgent", "high", "normal", "low"]
    # QOS outweighs a week of age and an agency that used everything.
    fs = FairShare()
    fs.charge("heavy", 1e9, 0.0)
    queue = [
        make_job("old-light", qos=QOS.NORMAL, agency="light", submit_s=0.0, nodes=4, seq=0),
        make_job("new-heavy", qos=QOS.HIGH, agency="heavy", submit_s=14 * 24 * HOUR, seq=1),
    ]
    assert ids(MultifactorEASY(fairshare=fs).order(queue, 14 * 24 * HOUR, state_with())) == [
        "new-heavy",
        "old-light",
    ]


def test_pass_starts_by_priority_and_backfills() -> None:
    state = state_with(2)
    queue = [
        make_job("normal-wide", nodes=2, qos=QOS.NORMAL, seq=0),
        make_job("high", nodes=1, qos=QOS.HIGH, walltime_s=100, seq=1),
        make_job("short", nodes=1, qos=QOS.LOW, walltime_s=100, seq=2),
    ]
    result = schedule(state, queue, 0.0, make_policy("priority"))
    # high goes first; normal-wide is the head then, reserved for 100 s; short fits in the
    # remaining node and ends by then.
    assert [j.id for j, _ in result.started] == ["high", "short"]
    assert result.reasons == {"normal-wide": Reason.RESERVED}
    assert result.reservation is not None and result.reservation.start_s == 100.0


def test_fair_share_factor_is_lower_for_more_decayed_usage() -> None:
    fs = FairShare(half_life_s=HOUR)
    fs.charge("a", 300.0, 0.0)
    fs.charge("b", 100.0, 0.0)
    f = fs.factors(["a", "b", "idle"], 0.0)
    assert f["a"] < f["b"] < f["idle"] == 1.0
    # Shares are equal (1/3 each): a used 3/4 of all usage, b 1/4.
    assert f["a"] == pytest.approx(2 ** (-(3 / 4) / (1 / 3)))
    assert f["b"] == pytest.approx(2 ** (-(1 / 4) / (1 / 3)))
    # An agency that used exactly its share gets 0.5.
    even = FairShare()
    even.charge("x", 50.0, 0.0)
    even.charge("y", 50.0, 0.0)
    assert even.factors(["x", "y"], 0.0) == {"x": pytest.approx(0.5), "y": pytest.approx(0.5)}
    # Jobs of the lighter agency go first, all else equal.
    queue = [make_job("from-a", agency="a", seq=0), make_job("from-b", agency="b", seq=1)]
    assert ids(MultifactorEASY(fairshare=fs).order(queue, 0.0, state_with())) == ["from-b", "from-a"]


def test_usage_halves_every_half_life() -> None:
    fs = FairShare(half_life_s=10 * HOUR)
    fs.charge("a", 800.0, 0.0)
    assert fs.usage(0.0)["a"] == 800.0
    assert fs.usage(10 * HOUR)["a"] == pytest.approx(400.0)
    assert fs.usage(30 * HOUR)["a"] == pytest.approx(100.0)
    fs.charge("a", 100.0, 10 * HOUR)  # decayed to 400, plus 100
    assert fs.usage(10 * HOUR)["a"] == pytest.approx(500.0)
    assert fs.usage(20 * HOUR)["a"] == pytest.approx(250.0)
    assert fs.usage(5 * HOUR)["a"] == pytest.approx(500.0)  # never grows back before the last charge
    # Decay changes who is lighter: a's old usage fades below b's recent, smaller one.
    fs.charge("b", 300.0, 30 * HOUR)
    f = fs.factors(["a", "b"], 30 * HOUR)  # a: 125, b: 300
    assert f["a"] > f["b"]


def test_shares_weight_the_factor() -> None:
    fs = FairShare(shares={"big": 3.0, "small": 1.0})
    fs.charge("big", 60.0, 0.0)
    fs.charge("small", 40.0, 0.0)
    f = fs.factors(["big", "small"], 0.0)
    assert f["big"] == pytest.approx(2 ** (-0.6 / 0.75))
    assert f["small"] == pytest.approx(2 ** (-0.4 / 0.25))
    assert f["big"] > f["small"]


def test_age_and_size_break_ties_below_qos_and_fair_share() -> None:
    w = Weights()
    jobs = [
        make_job("new", submit_s=10 * HOUR, seq=1),
        make_job("old", submit_s=0.0, seq=0),
        make_job("wide", nodes=4, submit_s=10 * HOUR, seq=2),
    ]
    now = 10 * HOUR
    prio = priorities(jobs, now, {"agency": 1.0}, w, max_nodes=4)
    base = w.fairshare * 1.0 + w.qos * (1 / 3)
    assert prio[0] == pytest.approx(base + w.size * 0.25)
    assert prio[1] == pytest.approx(base + w.age * (10 * HOUR / w.max_age_s) + w.size * 0.25)
    assert prio[2] == pytest.approx(base + w.size * 1.0)
    # Age is capped at max_age_s.
    assert priorities([jobs[1]], 100 * w.max_age_s, {}, w, 4)[0] == pytest.approx(
        w.age + w.fairshare + w.qos / 3 + w.size / 4
    )


def test_billing_units() -> None:
    job = make_job("j", nodes=2, cpus=4, gpus=1)
    assert billing_units(job, 10.0) == 2 * (4 + 10.0 * 1) * 10.0
    assert billing_units(job, -5.0) == 0.0


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(list(QOS)), st.sampled_from(["a", "b"])), min_size=1, max_size=12))
def test_ties_keep_submission_order_and_qos_never_inverts(rows: list[tuple[QOS, str]]) -> None:
    # Every job submitted at once with the same size: only QOS and agency differ.
    fs = FairShare()
    fs.charge("a", 10.0, 0.0)
    queue = [make_job(f"j{i}", qos=q, agency=a, seq=i) for i, (q, a) in enumerate(rows)]
    # Ids in an order unrelated to the queue, so that nothing sorts by id by accident.
    queue = [make_job(f"z{len(rows) - i}", qos=j.qos, agency=j.agency, seq=i) for i, j in enumerate(queue)]
    order = MultifactorEASY(fairshare=fs).order(queue, 0.0, state_with())
    rank = {QOS.LOW: 0, QOS.NORMAL: 1, QOS.HIGH: 2, QOS.URGENT: 3}
    position = {j.id: i for i, j in enumerate(queue)}
    expected = sorted(queue, key=lambda j: (-rank[j.qos], j.agency != "b", position[j.id]))
    assert ids(order) == ids(expected)
    assert sorted(ids(order)) == sorted(ids(queue))


def test_empty_queue() -> None:
    assert MultifactorEASY().order([], 0.0, state_with()) == []
    result = schedule(state_with(), [], 0.0, make_policy("priority"))
    assert result.started == [] and result.reasons == {} and result.reservation is None
