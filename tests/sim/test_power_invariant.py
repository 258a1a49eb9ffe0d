"""The power cap holds over a whole simulated run, for every policy, on random workloads
with tight caps: no sample of the facility draw is above the cap the run ran under, the
summary counts no violation, and the samples are the draw the running jobs really make."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enclave.fleet import Fleet
from enclave.scheduler.policies import POLICIES, make_policy
from enclave.sim.carbon import hourly_values
from enclave.sim.engine import Outcome, simulate
from enclave.sim.metrics import CarbonCurve, summarize
from enclave.sim.workload import SimJob
from tests.scheduler.factory import PoolSpec, RegionSpec, make_fleet, make_job

CAP_EPS = 1e-9
HOUR = 3600.0


@st.composite
def capped_fleets(draw: st.DrawFn) -> Fleet:
    """One or two regions whose cap lies between the idle draw and the full-load draw."""
    regions = []
    for r in range(draw(st.integers(1, 2))):
        pools = []
        for p in range(draw(st.integers(1, 2))):
            idle = draw(st.sampled_from([10.0, 50.0]))
            pools.append(
                PoolSpec(
                    f"p{p}",
                    draw(st.integers(1, 6)),
                    cpus=4,
                    gpus=draw(st.sampled_from([0, 4])),
                    idle_w=idle,
                    peak_w=idle + draw(st.sampled_from([100.0, 400.0])),
                )
            )
        pue = draw(st.sampled_from([1.0, 1.3]))
        idle_w = sum(p.count * p.idle_w for p in pools) * pue
        peak_w = sum(p.count * p.peak_w for p in pools) * pue
        tight = draw(st.floats(0.05, 0.9))
        cap_mw = (idle_w + tight * (peak_w - idle_w)) / 1e6
        regions.append(
            RegionSpec(f"r{r}", tuple(pools), accreditation="SECRET", power_cap_mw=cap_mw, pue=pue)
        )
    return make_fleet(*regions)


@st.composite
def workloads(draw: st.DrawFn) -> list[SimJob]:
    jobs = []
    for k in range(draw(st.integers(1, 25))):
        walltime = draw(st.integers(1, 8)) * 900.0
        job = make_job(
            f"j{k}",
            nodes=draw(st.integers(1, 3)),
            cpus=draw(st.sampled_from([1, 2, 4])),
            gpus=draw(st.sampled_from([0, 0, 1, 4])),
            walltime_s=walltime,
            submit_s=draw(st.integers(0, 48)) * 900.0,
            label=draw(st.sampled_from(["UNCLASSIFIED", "SECRET"])),
            seq=k,
        )
        defer = draw(st.booleans())
        deadline = job.submit_s + walltime + draw(st.integers(0, 24)) * 900.0 if defer else None
        jobs.append(SimJob(job, walltime * draw(st.floats(0.1, 1.0)), defer, deadline))
    jobs.sort(key=lambda s: (s.job.submit_s, s.job.seq))
    return jobs


def recomputed_draw(fleet: Fleet, outcome: Outcome, t: float) -> dict[str, float]:
    """The facility draw at ``t`` from the runs alone: idle of every node plus the busy draw
    of every job running then, times PUE."""
    busy = {r.name: 0.0 for r in fleet.regions}
    for run in outcome.runs:
        if run.start_s <= t < run.end_s:
            busy[run.placement.region] += run.placement.busy_w
    return {r.name: (sum(p.count * p.idle_w for p in r.pools) + busy[r.name]) * r.pue for r in fleet.regions}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    fleet=capped_fleets(),
    jobs=workloads(),
    policy=st.sampled_from(sorted(POLICIES)),
    scale=st.floats(0.3, 1.0),
    curve=st.lists(st.floats(10, 900), min_size=24, max_size=24),
)
def test_the_cap_is_never_exceeded_over_a_run(
    fleet: Fleet, jobs: list[SimJob], policy: str, scale: float, curve: list[float]
) -> None:
    carbon = CarbonCurve({r.name: curve for r in fleet.regions})
    options: dict[str, object] = {}
    if policy == "power-capped":
        options["power_cap_scale"] = scale
    elif policy == "carbon-aware":
        options["hourly"] = hourly_values(carbon, fleet)
    outcome = simulate(fleet, jobs, make_policy(policy, **options))
    expected_scale = scale if policy == "power-capped" else 1.0
    for region in fleet.regions:
        cap_w, idle_w = region.power_cap_mw * 1e6, region.idle_facility_mw * 1e6
        # Scaled, but never below the idle draw: no schedule could keep under that.
        assert outcome.caps_w[region.name] == pytest.approx(max(cap_w * expected_scale, min(cap_w, idle_w)))
    assert outcome.power, "the run has at least its first sample"
    for sample in outcome.power:
        for region, watts in sample.facility_w.items():
            assert watts <= outcome.caps_w[region] * (1 + CAP_EPS), (policy, sample)
        truth = recomputed_draw(fleet, outcome, sample.t_s)
        for region, watts in truth.items():
            assert abs(sample.facility_w[region] - watts) <= 1e-6 * max(1.0, watts), (sample.t_s, region)
    summary = summarize(fleet, outcome, carbon)
    assert summary["power_cap_violations"] == 0
    assert 0.0 <= summary["cap_share_saturated"] <= 1.0 + CAP_EPS
    # Every job either ran or is reported as never started: nothing is lost.
    assert len(outcome.runs) + len(outcome.never_started) == len(jobs)


def test_power_capped_runs_under_the_scaled_cap() -> None:
    """A region that could run four jobs at once under its cap runs two under half of it."""
    fleet = make_fleet(
        RegionSpec("r", (PoolSpec("p", 4, idle_w=0.0, peak_w=100.0),), power_cap_mw=400e-6, pue=1.0)
    )
    jobs = [SimJob(make_job(f"j{k}", walltime_s=HOUR, seq=k), HOUR) for k in range(4)]
    easy = simulate(fleet, jobs, make_policy("easy"))
    capped = simulate(fleet, jobs, make_policy("power-capped", power_cap_scale=0.5))
    assert {r.start_s for r in easy.runs} == {0.0}
    assert sorted(r.start_s for r in capped.runs) == [0.0, 0.0, HOUR, HOUR]
    assert max(s.facility_w["r"] for s in capped.power) == 200.0
    assert summarize(fleet, capped)["power_cap_mw"] == {"r": 200e-6}
    # While two jobs waited, the run used its whole (scaled) cap.
    assert summarize(fleet, capped)["cap_share_saturated"] == 1.0
    assert summarize(fleet, easy)["queue_saturated_s"] == 0.0


def test_a_scaled_cap_stops_at_the_idle_draw() -> None:
    """Half of a cap that idling already takes 80% of: the run gets the idle draw as its cap."""
    fleet = make_fleet(
        RegionSpec("r", (PoolSpec("p", 4, idle_w=80.0, peak_w=100.0),), power_cap_mw=400e-6, pue=1.0)
    )
    jobs = [SimJob(make_job("j", walltime_s=HOUR), HOUR)]
    outcome = simulate(fleet, jobs, make_policy("power-capped", power_cap_scale=0.5))
    assert outcome.caps_w == {"r": 320.0}
    assert outcome.never_started == [jobs[0]]  # any job would pass the cap
    assert summarize(fleet, outcome)["power_cap_violations"] == 0
