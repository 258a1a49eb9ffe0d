"""Regions the driver marks unavailable (an unhealthy back end, no region worker connected):
nothing is placed, reserved or preempted there, a job only they could run waits with
REGION_UNAVAILABLE, and otherwise a pass decides exactly as on the fleet without them.

The oracle is the same scheduler on a fleet from which the unavailable regions are removed:
marking a region unavailable must be indistinguishable from it not existing, except for the
reason a job gives when only that region could run it."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enclave.labels import DEFAULT_SCHEME
from enclave.scheduler.capacity import ClusterState
from enclave.scheduler.core import schedule
from enclave.scheduler.model import QOS, Job, PassResult, Reason
from enclave.scheduler.policies import make_policy

from .driver import simulate
from .factory import PoolSpec, RegionSpec, make_fleet, make_job
from .invariants import check_pools, check_power, check_started
from .strategies import Scenario, scenarios

ONLY_THERE = {Reason.NO_ACCREDITED_REGION, Reason.UNSATISFIABLE}


@settings(max_examples=200, deadline=None)
@given(
    scenarios(max_regions=3, labelled=True, name_regions=True, tight_power=True),
    st.sampled_from(["fcfs", "easy"]),
    st.data(),
)
def test_an_unavailable_region_is_as_if_it_did_not_exist(
    scenario: Scenario, policy: str, data: st.DataObject
) -> None:
    names = [r.name for r in scenario.fleet.regions]
    down = data.draw(st.sets(st.sampled_from(names), max_size=len(names)))
    state = ClusterState.from_fleet(scenario.fleet)
    assert state.set_unavailable(down) is bool(down)
    without = scenario.fleet.model_copy(
        update={"regions": [r for r in scenario.fleet.regions if r.name not in down]}
    )
    oracle = ClusterState.from_fleet(without)
    passes: list[PassResult] = []
    expected: list[PassResult] = []
    got = simulate(state, make_policy(policy), scenario.work, on_pass=lambda *a: passes.append(a[3]))
    want = simulate(oracle, make_policy(policy), scenario.work, on_pass=lambda *a: expected.append(a[3]))
    assert got.starts == want.starts
    assert got.placements == want.placements
    assert got.never_started == want.never_started
    assert len(passes) == len(expected)
    for mine, theirs in zip(passes, expected, strict=True):
        assert mine.reservation == theirs.reservation
        assert mine.reasons.keys() == theirs.reasons.keys()
        for job_id, reason in mine.reasons.items():
            if reason is Reason.REGION_UNAVAILABLE:
                assert theirs.reasons[job_id] in ONLY_THERE, (job_id, theirs.reasons[job_id])
            elif reason is Reason.UNSATISFIABLE and theirs.reasons[job_id] is Reason.NO_ACCREDITED_REGION:
                pass  # accredited only where it is down, and too big for it even when up
            else:
                assert reason is theirs.reasons[job_id], (job_id, reason, theirs.reasons[job_id])


@settings(max_examples=200, deadline=None)
@given(
    scenarios(max_regions=3, labelled=True, name_regions=True, tight_power=True),
    st.sampled_from(["fcfs", "easy", "priority"]),
    st.lists(st.sets(st.sampled_from(["r0", "r1", "r2"])), min_size=1, max_size=30),
)
def test_regions_going_down_and_up_never_get_new_work_while_down(
    scenario: Scenario, policy: str, outages: list[set[str]]
) -> None:
    """Availability changes between passes (as health checks see it); a pass places nothing in
    a region down at that pass, jobs already running there keep their resources, and the
    books (pools, power) stay right."""
    names = {r.name for r in scenario.fleet.regions}
    state = ClusterState.from_fleet(scenario.fleet)
    turn = iter(outages * 100)  # the same pattern over and over

    def flip(s: ClusterState) -> None:
        s.set_unavailable(next(turn) & names)

    def on_pass(now: float, s: ClusterState, queue: list[Job], result: PassResult) -> None:
        check_started(s, result)
        check_pools(s)
        check_power(s)
        for job, placement in result.started:
            assert placement.region not in s.unavailable, (job.id, placement.region, s.unavailable)
        if result.reservation is not None:
            assert result.reservation.region not in s.unavailable
        for job_id, reason in result.reasons.items():
            if reason is Reason.REGION_UNAVAILABLE:
                job = next(j for j in queue if j.id == job_id)
                assert s.unavailable and not s.candidates(job)

    simulate(state, make_policy(policy), scenario.work, before_pass=flip, on_pass=on_pass)


POOL = (PoolSpec("p", 1, cpus=4),)
FLEET = make_fleet(
    RegionSpec("secret-west", POOL, accreditation="SECRET"),
    RegionSpec("ts-east", POOL, accreditation="TOP SECRET//SI/TK/HCS/G"),
)


def secret_job(job_id: str, region: str | None = None, qos: QOS = QOS.NORMAL) -> Job:
    return make_job(job_id, nodes=1, cpus=4, label="SECRET", region=region, qos=qos)


def test_a_secret_job_goes_to_the_idle_healthy_region_not_the_unhealthy_lower_one() -> None:
    """Issue 13 item 6: secret-west (preferred: the lowest sufficient accreditation) has no
    worker; ts-east is idle and healthy: the job goes to ts-east."""
    state = ClusterState.from_fleet(FLEET)
    state.set_unavailable({"secret-west"})
    result = schedule(state, [secret_job("j1")], 0.0, make_policy("easy"))
    assert [(j.id, p.region) for j, p in result.started] == [("j1", "ts-east")]
    # Back up: the next job prefers secret-west again.
    assert state.set_unavailable(()) is True
    result = schedule(state, [secret_job("j2")], 1.0, make_policy("easy"))
    assert [(j.id, p.region) for j, p in result.started] == [("j2", "secret-west")]


def test_a_job_only_an_unavailable_region_could_run_waits_and_says_why() -> None:
    state = ClusterState.from_fleet(FLEET)
    state.set_unavailable({"secret-west"})
    pinned = secret_job("pinned", region="secret-west")
    ts = make_job("ts", nodes=1, cpus=1, label="TOP SECRET//SI/TK")
    state.set_unavailable({"secret-west", "ts-east"})
    result = schedule(state, [pinned, ts], 0.0, make_policy("fcfs"))
    assert result.started == []
    assert result.reasons == {"pinned": Reason.REGION_UNAVAILABLE, "ts": Reason.REGION_UNAVAILABLE}
    # Never runnable anywhere stays what it was: down regions do not change that answer.
    too_big = make_job("big", nodes=5, cpus=4, label="SECRET")
    assert schedule(state, [too_big], 0.0, make_policy("fcfs")).reasons == {"big": Reason.UNSATISFIABLE}
    assert DEFAULT_SCHEME.parse("SECRET")  # the label scheme the factory uses


def test_no_preemption_is_planned_in_an_unavailable_region() -> None:
    state = ClusterState.from_fleet(FLEET)
    low = secret_job("low", region="secret-west", qos=QOS.LOW)
    assert schedule(state, [low], 0.0, make_policy("easy")).started
    state.set_unavailable({"secret-west"})
    urgent = secret_job("urgent", region="secret-west", qos=QOS.URGENT)
    result = schedule(state, [urgent], 1.0, make_policy("easy"))
    assert result.preempt == [] and result.reasons == {"urgent": Reason.REGION_UNAVAILABLE}
    assert "low" in state.running  # what runs there keeps running


def test_unknown_regions_are_refused() -> None:
    state = ClusterState.from_fleet(FLEET)
    with pytest.raises(KeyError, match="no-such"):
        state.set_unavailable({"no-such"})
    assert state.set_unavailable(()) is False
