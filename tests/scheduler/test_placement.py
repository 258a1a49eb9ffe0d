"""Label-aware placement: only accredited regions, the lowest sufficient accreditation first,
a named region only, and the right reason when a job can never run."""

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
from .invariants import check_reasons, check_started
from .strategies import Scenario, scenarios


def on_pass(now: float, state: ClusterState, queue: list[Job], result: PassResult) -> None:
    check_started(state, result)  # accreditation dominates the label; the named region only
    check_reasons(state, queue, result)


@settings(max_examples=300, deadline=None)
@given(
    scenarios(max_regions=2, labelled=True, name_regions=True, tight_power=True),
    st.sampled_from(["fcfs", "easy", "priority"]),
)
def test_jobs_run_only_where_accredited(scenario: Scenario, policy: str) -> None:
    state = ClusterState.from_fleet(scenario.fleet)
    trace = simulate(state, make_policy(policy), scenario.work, on_pass=on_pass)
    for job_id in trace.never_started:  # only jobs that can never run are left
        job = next(w.job for w in scenario.work if w.job.id == job_id)
        result = schedule(state, [job], 1e6, make_policy(policy))
        assert result.reasons[job_id] in (Reason.NO_ACCREDITED_REGION, Reason.UNSATISFIABLE, Reason.POWER_CAP)


POOL = (PoolSpec("p", 2, cpus=4),)
# Listed highest first, so that the fleet order is no help: SECRET//SI before SECRET.
LADDER = make_fleet(
    RegionSpec("ts", POOL, accreditation="TOP SECRET//SI/TK/HCS/G"),
    RegionSpec("secret-si", POOL, accreditation="SECRET//SI"),
    RegionSpec("secret", POOL, accreditation="SECRET"),
    RegionSpec("cui", POOL, accreditation="CUI"),
)


def placed(fleet_state: ClusterState, job: Job) -> str | None:
    result = schedule(fleet_state, [job], 0.0, make_policy("easy"))
    return result.started[0][1].region if result.started else None


def test_lowest_sufficient_accreditation_is_preferred() -> None:
    expected = {
        "UNCLASSIFIED": "cui",
        "CUI": "cui",
        "SECRET": "secret",  # not secret-si, which dominates SECRET strictly
        "SECRET//SI": "secret-si",
        "TOP SECRET": "ts",
        "SECRET//TK": "ts",
        "TOP SECRET//SI/TK": "ts",
    }
    for marking, region in expected.items():
        state = ClusterState.from_fleet(LADDER)
        assert placed(state, make_job("j", label=marking)) == region, marking


def test_next_sufficient_region_when_the_lowest_is_full() -> None:
    state = ClusterState.from_fleet(LADDER)
    jobs = [make_job(f"j{i}", label="SECRET", seq=i) for i in range(7)]
    result = schedule(state, jobs, 0.0, make_policy("easy"))
    assert [pl.region for _, pl in result.started] == ["secret"] * 2 + ["secret-si"] * 2 + ["ts"] * 2
    assert result.reasons == {"j6": Reason.RESERVED}


def test_no_region_dominates_the_label() -> None:
    fleet = make_fleet(
        RegionSpec("secret", POOL, accreditation="SECRET//SI/TK"),
        RegionSpec("ts", POOL, accreditation="TOP SECRET//SI"),
    )
    state = ClusterState.from_fleet(fleet)
    queue = [
        make_job("ts-tk", label="TOP SECRET//TK", seq=0),  # ts lacks TK, secret is too low
        make_job("hcs", label="SECRET//HCS", seq=1),
        make_job("ok", label="SECRET//SI/TK", seq=2),
    ]
    for policy in ("fcfs", "easy", "priority"):
        state = ClusterState.from_fleet(fleet)
        result = schedule(state, queue, 0.0, make_policy(policy))
        assert [(j.id, pl.region) for j, pl in result.started] == [("ok", "secret")]
        assert result.reasons == {"ts-tk": Reason.NO_ACCREDITED_REGION, "hcs": Reason.NO_ACCREDITED_REGION}


def test_too_big_for_every_accredited_pool_is_unsatisfiable() -> None:
    fleet = make_fleet(
        RegionSpec("small", (PoolSpec("cpu", 2, cpus=4),), accreditation="SECRET"),
        RegionSpec("big", (PoolSpec("gpu", 8, cpus=64, gpus=8),), accreditation="CUI"),
    )
    state = ClusterState.from_fleet(fleet)
    queue = [
        make_job("cpus", cpus=8, label="SECRET", seq=0),  # only the CUI region's nodes are that big
        make_job("nodes", nodes=3, cpus=1, label="SECRET", seq=1),
        make_job("gpus", gpus=1, cpus=1, label="SECRET", seq=2),
        make_job("memory", memory_mb=8193, cpus=1, label="SECRET", seq=3),
        make_job("wide", nodes=9, cpus=1, seq=4),  # no pool of any region has 9 nodes
        make_job("fits", gpus=8, cpus=64, seq=5),
    ]
    for policy in ("fcfs", "easy", "priority"):
        state = ClusterState.from_fleet(fleet)
        result = schedule(state, queue, 0.0, make_policy(policy))
        assert [j.id for j, _ in result.started] == ["fits"]
        assert result.reasons == {
            "cpus": Reason.UNSATISFIABLE,
            "nodes": Reason.UNSATISFIABLE,
            "gpus": Reason.UNSATISFIABLE,
            "memory": Reason.UNSATISFIABLE,
            "wide": Reason.UNSATISFIABLE,
        }
        assert result.reservation is None


def test_a_named_region_is_the_only_one_used() -> None:
    state = ClusterState.from_fleet(LADDER)
    # "secret" is full; the job named it, so the free secret-si and ts regions do not help.
    schedule(
        state,
        [make_job(f"f{i}", label="SECRET", region="secret", seq=i) for i in range(2)],
        0.0,
        make_policy("easy"),
    )
    result = schedule(
        state, [make_job("named", label="CUI", region="secret", seq=2)], 0.0, make_policy("easy")
    )
    assert result.started == []
    assert result.reasons == {"named": Reason.RESERVED}
    assert result.reservation is not None and result.reservation.region == "secret"
    # A named region that may not run the label, or does not exist, is no accredited region.
    result = schedule(
        state,
        [
            make_job("low", label="SECRET//SI", region="secret", seq=3),
            make_job("nowhere", region="mars", seq=4),
            make_job("high", label="UNCLASSIFIED", region="ts", seq=5),
        ],
        0.0,
        make_policy("easy"),
    )
    assert result.reasons == {"low": Reason.NO_ACCREDITED_REGION, "nowhere": Reason.NO_ACCREDITED_REGION}
    assert [(j.id, pl.region) for j, pl in result.started] == [("high", "ts")]


def test_builtin_fleets_place_by_label() -> None:
    for name in ("local", "gigawatt"):
        expected = {
            "UNCLASSIFIED": "gov-east",
            "CUI": "gov-east",
            "SECRET": "secret-west",
            "SECRET//SI": "ts-east",
            "TOP SECRET//SI/TK": "ts-east",
        }
        for marking, region in expected.items():
            state = ClusterState.from_fleet(load_fleet(name))
            assert placed(state, make_job("j", cpus=1, memory_mb=512, label=marking)) == region, (
                name,
                marking,
            )
