"""What a capacity planner reads off a simulated run (pure: outcome in, numbers out)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from enclave.energy.model import HOMES_KWH_PER_YEAR
from enclave.fleet import Fleet
from enclave.sim.engine import Outcome, Run

TAU_S = 10.0  # bounded-slowdown threshold
YEAR_S = 365.25 * 24 * 3600


def wait_s(r: Run) -> float:
    return r.start_s - r.sim.job.submit_s


def bounded_slowdown(r: Run) -> float:
    run = r.end_s - r.start_s
    return max(1.0, (wait_s(r) + run) / max(TAU_S, run))


@dataclass(frozen=True)
class CarbonCurve:
    """Grid intensity (gCO2e/kWh) by hour of day per region; flat when no curve is given."""

    hourly: dict[str, list[float]]

    def at(self, region: str, t_s: float, default: float) -> float:
        curve = self.hourly.get(region)
        if not curve:
            return default
        return curve[int(t_s // 3600) % len(curve)]


def summarize(fleet: Fleet, outcome: Outcome, carbon: CarbonCurve | None = None) -> dict[str, Any]:
    runs = outcome.runs
    n = len(runs)
    first_submit = min((r.sim.job.submit_s for r in runs), default=0.0)
    last_end = max((r.end_s for r in runs), default=0.0)
    makespan = max(0.0, last_end - first_submit)
    total_cpus = sum(r.cpus for r in fleet.regions)
    cpu_s = sum((r.end_s - r.start_s) * r.sim.job.nodes * r.sim.job.cpus for r in runs)
    energy = _energy(fleet, outcome, carbon or CarbonCurve({}))
    per_agency: dict[str, float] = defaultdict(float)
    for r in runs:
        per_agency[r.sim.job.agency] += (r.end_s - r.start_s) * r.sim.job.nodes * r.sim.job.cpus
    total_work = sum(per_agency.values()) or 1.0
    years = makespan / YEAR_S if makespan else 0.0
    return {
        "jobs": n,
        "jobs_never_started": len(outcome.never_started),
        "avg_wait_s": sum(wait_s(r) for r in runs) / n if n else 0.0,
        "max_wait_s": max((wait_s(r) for r in runs), default=0.0),
        "avg_response_s": sum(r.end_s - r.sim.job.submit_s for r in runs) / n if n else 0.0,
        "avg_bounded_slowdown": sum(bounded_slowdown(r) for r in runs) / n if n else 0.0,
        "utilization": cpu_s / (total_cpus * makespan) if makespan and total_cpus else 0.0,
        "makespan_s": makespan,
        "scheduling_passes": outcome.passes,
        **energy,
        "homes_equivalent": (energy["energy_mwh"] * 1000 / years / HOMES_KWH_PER_YEAR) if years else 0.0,
        "agency_share_of_work": {a: w / total_work for a, w in sorted(per_agency.items())},
    }


def _energy(fleet: Fleet, outcome: Outcome, carbon: CarbonCurve) -> dict[str, Any]:
    """Integrate the piecewise-constant facility draw between samples."""
    samples = outcome.power
    caps = {r.name: r.power_cap_mw * 1e6 for r in fleet.regions}
    flat = {r.name: r.carbon_g_per_kwh for r in fleet.regions}
    price = {r.name: r.price_per_kwh for r in fleet.regions}
    joules: dict[str, float] = defaultdict(float)
    grams = 0.0
    violations = 0
    peak: dict[str, float] = defaultdict(float)
    for k, sample in enumerate(samples):
        for region, watts in sample.facility_w.items():
            if watts > caps[region] * (1 + 1e-9):
                violations += 1
            peak[region] = max(peak[region], watts)
        if k + 1 == len(samples):
            break
        dt = samples[k + 1].t_s - sample.t_s
        for region, watts in sample.facility_w.items():
            joules[region] += watts * dt
            grams += watts * dt / 3.6e6 * carbon.at(region, sample.t_s, flat[region])
    kwh = {r: j / 3.6e6 for r, j in joules.items()}
    return {
        "energy_mwh": sum(kwh.values()) / 1000.0,
        "emissions_tco2e": grams / 1e6,
        "cost": sum(kwh[r] * price[r] for r in kwh),
        "power_cap_violations": violations,
        "peak_power_mw": {r: w / 1e6 for r, w in sorted(peak.items())},
        "power_cap_mw": {r: c / 1e6 for r, c in sorted(caps.items())},
    }
