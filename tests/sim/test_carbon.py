"""Time-varying carbon intensity: curves (built-in and files), exact emissions, the
carbon-aware policy (deadlines, lower emissions, region shifting) and the oracle bound."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enclave.errors import InvalidInput
from enclave.fleet import Fleet, load_fleet
from enclave.scheduler.capacity import ClusterState
from enclave.scheduler.carbon import HourlyCurve
from enclave.scheduler.core import schedule
from enclave.scheduler.model import Reason
from enclave.scheduler.policies import CarbonAwareEASY, make_policy
from enclave.sim.carbon import (
    SHAPES,
    builtin_curve,
    hourly_values,
    job_grams,
    load_curve,
    oracle_bound,
    resolve_carbon,
)
from enclave.sim.engine import Outcome, simulate
from enclave.sim.metrics import CarbonCurve, summarize
from enclave.sim.workload import SimJob
from tests.scheduler.factory import PoolSpec, RegionSpec, make_fleet, make_job

HOUR = 3600.0
DAY = 24 * HOUR
# A grid that is dirty at night and clean from 10:00 to 15:00.
DIP = [500.0] * 10 + [100.0] * 5 + [500.0] * 9


def big_fleet(*names: str, nodes: int = 64) -> Fleet:
    """Regions with far more nodes than any test workload uses: nothing ever queues."""
    return make_fleet(*(RegionSpec(n, (PoolSpec("p", nodes),)) for n in names or ("r1",)))


def deferrable(
    job_id: str, submit: float, run_s: float, slack_s: float, *, walltime: float | None = None, seq: int = 0
) -> SimJob:
    walltime = walltime if walltime is not None else run_s
    job = make_job(job_id, walltime_s=walltime, submit_s=submit, seq=seq)
    return SimJob(job, run_s, True, submit + walltime + slack_s)


def plain(job_id: str, submit: float, run_s: float, seq: int = 0) -> SimJob:
    return SimJob(make_job(job_id, walltime_s=run_s, submit_s=submit, seq=seq), run_s)


def carbon_policy(fleet: Fleet, curve: CarbonCurve, **options: float) -> CarbonAwareEASY:
    policy = make_policy("carbon-aware", hourly=hourly_values(curve, fleet), **options)
    assert isinstance(policy, CarbonAwareEASY)
    return policy


def emissions(fleet: Fleet, outcome: Outcome, curve: CarbonCurve, horizon: float) -> float:
    return float(summarize(fleet, outcome, curve, horizon_s=horizon)["emissions_tco2e"])


# -- curves -------------------------------------------------------------------------------------
def test_builtin_curves_are_documented_shapes_scaled_to_the_flat_value() -> None:
    fleet = load_fleet("gigawatt")
    curve = builtin_curve(fleet)
    assert curve == builtin_curve(fleet)  # deterministic
    for region in fleet.regions:
        values = curve.hourly[region.name]
        assert len(values) == 24
        assert sum(values) / 24 == pytest.approx(region.carbon_g_per_kwh, rel=1e-3)
        low = min(range(24), key=values.__getitem__)
        high = max(range(24), key=values.__getitem__)
        assert 10 <= low <= 15, "a dip around midday (solar)"
        assert 17 <= high <= 21, "a peak in the evening"
    west, east = curve.hourly["secret-west"], curve.hourly["gov-east"]
    # The solar-heavy grid swings much more than the mixed one.
    assert max(west) / min(west) > 2.5 > 1.4 > max(east) / min(east)
    assert set(SHAPES) == {"solar", "mixed"}


def test_curve_files_toml_and_csv(tmp_path: Path) -> None:
    fleet = big_fleet("a", "b")
    toml = tmp_path / "c.toml"
    toml.write_text("[hourly]\na = [" + ", ".join(str(v) for v in DIP) + "]\n")
    curve = load_curve(toml, fleet)
    assert curve.hourly == {"a": DIP}
    assert hourly_values(curve, fleet)["b"] == [400.0] * 24  # the fleet's flat default
    csv_path = tmp_path / "c.csv"
    csv_path.write_text("hour,a,b\n" + "".join(f"{h},{DIP[h]},{300 + h}\n" for h in range(24)))
    curve = resolve_carbon(str(csv_path), fleet)
    assert curve is not None
    assert curve.hourly == {"a": DIP, "b": [300.0 + h for h in range(24)]}
    assert resolve_carbon(None, fleet) is None
    assert resolve_carbon("builtin", fleet) == builtin_curve(fleet)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("short.toml", "[hourly]\na = [1.0, 2.0]\n", "expected 24 hourly values, got 2"),
        ("unknown.toml", "[hourly]\nzz = [" + ", ".join(["1.0"] * 24) + "]\n", "region 'zz' is not in fleet"),
        ("negative.toml", "[hourly]\na = [" + ", ".join(["-1.0"] * 24) + "]\n", "hour 0: -1.0 is not"),
        ("nan.toml", "[hourly]\na = [" + ", ".join(["nan"] * 24) + "]\n", "is not a finite value"),
        ("strings.toml", '[hourly]\na = ["x"]\n', "expected an array of numbers"),
        ("other.toml", "a = 1\n", "one [hourly] table"),
        ("bad.toml", "[hourly\n", "not valid TOML"),
        ("header.csv", "h,a\n0,1\n", "header must be hour"),
        ("order.csv", "hour,a\n1,5\n", "c.csv:2: expected hour 0, found 1"),
        ("word.csv", "hour,a\n0,x\n", "c.csv:2: not a number"),
        ("fields.csv", "hour,a\n0,1,2\n", "c.csv:2: expected 2 fields, found 3"),
        ("curve.json", "{}", "a .toml or .csv file"),
    ],
)
def test_bad_curve_files_name_the_problem(tmp_path: Path, name: str, text: str, message: str) -> None:
    suffix = Path(name).suffix
    path = tmp_path / f"c{suffix}"
    path.write_text(text)
    with pytest.raises(InvalidInput, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_curve(path, big_fleet("a"))


def test_missing_curve_file() -> None:
    with pytest.raises(InvalidInput, match="no such carbon curve file"):
        resolve_carbon("/nonexistent/curve.toml", big_fleet())


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.floats(0, 1000, allow_nan=False), min_size=1, max_size=30),
    a=st.floats(-3 * DAY, 3 * DAY),
    b=st.floats(0, 2 * DAY),
    c=st.floats(0, 2 * DAY),
)
def test_curve_integral_is_additive_and_matches_the_hours(
    values: list[float], a: float, b: float, c: float
) -> None:
    curve = HourlyCurve(values)
    period = len(values) * HOUR
    total = sum(values) * HOUR
    scale = max(1.0, total)
    assert curve.integral(a, a + b) + curve.integral(a + b, a + b + c) == pytest.approx(
        curve.integral(a, a + b + c), abs=1e-6 * scale
    )
    assert curve.integral(a, a + period) == pytest.approx(total, abs=1e-6 * scale)
    k = math.floor(a / HOUR)
    assert curve.integral(k * HOUR, (k + 1) * HOUR) == pytest.approx(
        values[k % len(values)] * HOUR, abs=1e-9 * scale
    )


def test_emissions_integrate_the_curve_hour_by_hour() -> None:
    """One node busy from 09:30 to 11:30 on the DIP grid, one region (PUE 1.2)."""
    fleet = big_fleet(nodes=1)
    curve = CarbonCurve({"r1": DIP})
    job = plain("j", 9.5 * HOUR, 2 * HOUR)
    outcome = simulate(fleet, [job], make_policy("easy"))
    summary = summarize(fleet, outcome, curve, horizon_s=12 * HOUR)
    # idle 10 W all along (09:30 to 12:00), busy 100 W more while the job runs, times PUE 1.2
    idle_gkwh_s = 500 * 0.5 * HOUR + 100 * 2 * HOUR
    busy_gkwh_s = 500 * 0.5 * HOUR + 100 * 1.5 * HOUR
    expected_g = 1.2 * (10 * idle_gkwh_s + 100 * busy_gkwh_s) / 3.6e6
    assert summary["emissions_tco2e"] == pytest.approx(expected_g / 1e6)
    assert job_grams(outcome.runs[0], curve, fleet) == pytest.approx(1.2 * 100 * busy_gkwh_s / 3.6e6)
    flat = summarize(fleet, outcome, None, horizon_s=12 * HOUR)
    assert flat["emissions_tco2e"] == pytest.approx(flat["energy_mwh"] * 400 / 1e3)


# -- the carbon-aware policy ----------------------------------------------------------------------
def test_deferrable_jobs_wait_for_the_clean_hours_and_lower_emissions() -> None:
    fleet = big_fleet()
    curve = CarbonCurve({"r1": DIP})
    jobs = [deferrable(f"d{k}", k * HOUR, HOUR, 20 * HOUR, seq=k) for k in range(6)]
    jobs += [plain("p", 0.5 * HOUR, HOUR, seq=6)]
    jobs.sort(key=lambda s: (s.job.submit_s, s.job.seq))
    easy = simulate(fleet, jobs, make_policy("easy"))
    aware = simulate(fleet, jobs, carbon_policy(fleet, curve))
    starts = {r.sim.job.id: r.start_s for r in aware.runs}
    assert starts["p"] == 0.5 * HOUR  # not deferrable: as EASY
    for k in range(6):
        assert 10 * HOUR <= starts[f"d{k}"] < 15 * HOUR  # in the clean window
    horizon = max(o.power[-1].t_s for o in (easy, aware))
    e_easy, e_aware = (emissions(fleet, o, curve, horizon) for o in (easy, aware))
    assert e_aware < e_easy
    bound = oracle_bound(fleet, easy, curve)
    assert bound.deferrable_jobs == 6
    oracle = e_easy - bound.reduction_t
    assert oracle <= e_aware * (1 + 1e-12)
    # Every deferrable job's hour fits in the clean window: the policy reaches the bound.
    assert bound.share_reached(e_easy, e_aware) == pytest.approx(1.0)


def test_a_job_is_sent_to_the_cleaner_region() -> None:
    fleet = big_fleet("east", "west")
    curve = CarbonCurve({"east": [400.0] * 24, "west": [100.0] * 24})
    aware = simulate(fleet, [deferrable("d", 0.0, HOUR, 4 * HOUR)], carbon_policy(fleet, curve))
    easy = simulate(fleet, [deferrable("d", 0.0, HOUR, 4 * HOUR)], make_policy("easy"))
    assert easy.runs[0].placement.region == "east"  # first fit: the fleet's order
    assert aware.runs[0].placement.region == "west"
    assert aware.runs[0].start_s == 0.0  # cleanest now and later: no reason to wait


def test_held_jobs_are_reported_deferred() -> None:
    fleet = big_fleet()
    state = ClusterState.from_fleet(fleet)
    policy = carbon_policy(fleet, CarbonCurve({"r1": DIP}))
    job = replace(make_job("d", walltime_s=HOUR), deferrable=True, deadline_s=21 * HOUR)
    result = schedule(state, [job], 0.0, policy)
    assert result.reasons == {"d": Reason.DEFERRED} and not result.started
    assert policy.next_pass_s(0.0) == HOUR  # the next hour may decide differently
    result = schedule(state, [job], 10 * HOUR, policy)
    assert [j.id for j, _p in result.started] == ["d"]


def test_without_a_curve_nothing_is_held() -> None:
    fleet = big_fleet()
    jobs = [deferrable(f"d{k}", k * 600.0, HOUR, DAY, seq=k) for k in range(5)]
    default = simulate(fleet, jobs, make_policy("carbon-aware"))
    easy = simulate(fleet, jobs, make_policy("easy"))
    assert [(r.sim.job.id, r.start_s) for r in default.runs] == [(r.sim.job.id, r.start_s) for r in easy.runs]


@st.composite
def deadline_workloads(draw: st.DrawFn) -> tuple[list[SimJob], list[float]]:
    """Deferrable and plain jobs with feasible deadlines (deadline ≥ submit + walltime)."""
    curve = draw(st.lists(st.floats(0, 1000, allow_nan=False), min_size=24, max_size=24))
    n = draw(st.integers(1, 12))
    jobs = []
    for k in range(n):
        submit = draw(st.integers(0, 3 * 24)) * 1800.0
        walltime = draw(st.integers(1, 20)) * 1800.0
        run = walltime * draw(st.floats(0.1, 1.0))
        if draw(st.booleans()):
            slack = draw(st.floats(0, 2 * DAY))
            job = make_job(f"j{k}", walltime_s=walltime, submit_s=submit, seq=k)
            jobs.append(SimJob(job, run, True, submit + walltime + slack))
        else:
            jobs.append(plain(f"j{k}", submit, run, seq=k))
    jobs.sort(key=lambda s: (s.job.submit_s, s.job.seq))
    return jobs, curve


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(work=deadline_workloads(), guard=st.sampled_from([0.0, 0.25, 1.0]))
def test_deferral_never_costs_a_feasible_deadline(
    work: tuple[list[SimJob], list[float]], guard: float
) -> None:
    """Room for every job at once: a job's deadline can only be missed by holding it too long."""
    jobs, values = work
    fleet = big_fleet()
    curve = CarbonCurve({"r1": values})
    outcome = simulate(fleet, jobs, carbon_policy(fleet, curve, guard=guard))
    assert not outcome.never_started
    assert len(outcome.runs) == len(jobs)
    for run in outcome.runs:
        sim = run.sim
        if sim.deferrable:
            assert sim.deadline_s is not None
            assert run.end_s <= sim.deadline_s + 1e-6, (sim.job.id, run.start_s, sim.deadline_s)
        else:
            assert run.start_s == sim.job.submit_s  # never held
    # ... and emissions stay at or above the oracle bound.
    easy = simulate(fleet, jobs, make_policy("easy"))
    horizon = max(o.power[-1].t_s for o in (easy, outcome))
    e_easy, e_aware = (emissions(fleet, o, curve, horizon) for o in (easy, outcome))
    bound = oracle_bound(fleet, easy, curve)
    assert e_easy - bound.reduction_t <= e_aware + 1e-12 * max(1.0, e_easy)
    assert bound.reduction_t >= 0


def test_a_due_job_goes_first_and_unpinned() -> None:
    """Past its due time a deferrable job leads the order, in any region, whatever the grid."""
    fleet = big_fleet("east", "west")
    state = ClusterState.from_fleet(fleet)
    policy = carbon_policy(fleet, CarbonCurve({"east": DIP, "west": [50.0] * 24}), guard=0.0)
    older = make_job("older", submit_s=0.0, seq=0)
    late = make_job("late", walltime_s=HOUR, submit_s=0.0, seq=1)
    late = replace(late, deferrable=True, deadline_s=3 * HOUR)  # latest start 02:00
    early = replace(make_job("early", walltime_s=HOUR, submit_s=0.0, seq=2), deferrable=True, deadline_s=DAY)
    assert [j.id for j in policy.order([older, late, early], 2 * HOUR, state)] == ["late", "older", "early"]
    ordered = policy.order([older, late, early], 2 * HOUR, state)
    assert ordered[0] is late  # as submitted: any region
    assert ordered[2].region == "west"  # not due: sent to the cleaner region
    assert policy.order([late], 2 * HOUR - 1, state)[0].region == "west"
