"""What a capacity planner reads off a simulated run (pure: outcome in, numbers out)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from enclave.energy.model import HOMES_KWH_PER_YEAR
from enclave.fleet import Fleet
from enclave.scheduler.carbon import HOUR_S, HourlyCurve
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
    """Grid intensity (gCO2e/kWh) by hour of day per region; flat when no curve is given.

    Built-in curves and curve files: :mod:`enclave.sim.carbon`.
    """

    hourly: dict[str, list[float]]

    def curve(self, region: str) -> HourlyCurve | None:
        values = self.hourly.get(region)
        if not values:
            return None
        cache: dict[str, HourlyCurve] = self.__dict__.setdefault("_curves", {})
        got = cache.get(region)
        if got is None:
            got = cache[region] = HourlyCurve(values)
        return got

    def at(self, region: str, t_s: float, default: float) -> float:
        curve = self.curve(region)
        return default if curve is None else curve.at(t_s)

    def integral(self, region: str, t0_s: float, t1_s: float, default: float) -> float:
        """∫ intensity dt over [t0, t1] (gCO2e/kWh × s)."""
        curve = self.curve(region)
        if curve is None:
            return default * max(0.0, t1_s - t0_s)
        return curve.integral(t0_s, t1_s)


def summarize(
    fleet: Fleet, outcome: Outcome, carbon: CarbonCurve | None = None, horizon_s: float | None = None
) -> dict[str, Any]:
    """The run's figures. Energy, emissions and cost integrate the facility draw from the
    first sample to the last, or to ``horizon_s`` when later (idle draw after the last job:
    compare policies over one horizon so that the fleet's idle draw weighs the same).
    Column-wise with numpy: a million runs take a second or two."""
    runs = outcome.runs
    n = len(runs)
    submit = np.fromiter((r.sim.job.submit_s for r in runs), dtype=np.float64, count=n)
    start = np.fromiter((r.start_s for r in runs), dtype=np.float64, count=n)
    end = np.fromiter((r.end_s for r in runs), dtype=np.float64, count=n)
    cpus = np.fromiter((r.sim.job.nodes * r.sim.job.cpus for r in runs), dtype=np.float64, count=n)
    first_submit = float(submit.min()) if n else 0.0
    last_end = float(end.max()) if n else 0.0
    makespan = max(0.0, last_end - first_submit)
    total_cpus = sum(r.cpus for r in fleet.regions)
    run = end - start
    wait = start - submit
    work = run * cpus
    cpu_s = float(work.sum())
    energy = _energy(fleet, outcome, carbon or CarbonCurve({}), horizon_s)
    agency_index: dict[str, int] = {}
    codes = [agency_index.setdefault(r.sim.job.agency, len(agency_index)) for r in runs]
    per_agency = np.bincount(np.array(codes, dtype=np.int64), weights=work, minlength=len(agency_index))
    total_work = float(per_agency.sum()) or 1.0
    years = makespan / YEAR_S if makespan else 0.0
    slowdown = np.maximum(1.0, (wait + run) / np.maximum(TAU_S, run))
    return {
        "jobs": n,
        "jobs_never_started": len(outcome.never_started),
        "avg_wait_s": float(wait.mean()) if n else 0.0,
        "max_wait_s": float(wait.max()) if n else 0.0,
        "avg_response_s": float((end - submit).mean()) if n else 0.0,
        "avg_bounded_slowdown": float(slowdown.mean()) if n else 0.0,
        "utilization": cpu_s / (total_cpus * makespan) if makespan and total_cpus else 0.0,
        "makespan_s": makespan,
        "scheduling_passes": outcome.passes,
        **energy,
        "homes_equivalent": (energy["energy_mwh"] * 1000 / years / HOMES_KWH_PER_YEAR) if years else 0.0,
        "agency_share_of_work": {
            a: float(per_agency[i]) / total_work for a, i in sorted(agency_index.items())
        },
    }


def running_integral(carbon: CarbonCurve, region: str, t: np.ndarray, default: float) -> np.ndarray:
    """∫ intensity dt from 0 to each ``t`` (gCO2e/kWh × s), as :class:`HourlyCurve` does."""
    curve = carbon.curve(region)
    if curve is None:
        return default * t
    values = np.array(curve.values)
    cum = np.concatenate(([0.0], np.cumsum(values * HOUR_S)))
    cycles, rest = np.divmod(t, curve.period_s)
    h = np.minimum((rest // HOUR_S).astype(np.int64), len(values) - 1)
    return np.asarray(cycles * cum[-1] + cum[h] + (rest - h * HOUR_S) * values[h], dtype=np.float64)


def _energy(
    fleet: Fleet, outcome: Outcome, carbon: CarbonCurve, horizon_s: float | None = None
) -> dict[str, Any]:
    """Integrate the piecewise-constant facility draw between samples, the intensity hour by
    hour within each interval. Caps are the ones the run ran under (scaled, for a
    power-capped policy), else the fleet's."""
    samples = outcome.power
    m = len(samples)
    caps = dict(outcome.caps_w) or {r.name: r.power_cap_mw * 1e6 for r in fleet.regions}
    t = np.fromiter((s.t_s for s in samples), dtype=np.float64, count=m)
    ends = np.empty(m)
    ends[:-1] = t[1:]
    if m:  # the last draw lasts until the horizon, if one is given beyond it
        ends[-1] = max(t[-1], horizon_s) if horizon_s is not None else t[-1]
    dt = ends - t
    waiting = np.fromiter((s.queued > 0 for s in samples), dtype=bool, count=m)
    saturated_s = float(dt[waiting].sum())
    joules: dict[str, float] = {}
    saturated_j: dict[str, float] = {}
    peak: dict[str, float] = {}
    grams = 0.0
    violations = 0
    for region in fleet.regions:
        name = region.name
        watts = np.fromiter((s.facility_w[name] for s in samples), dtype=np.float64, count=m)
        violations += int((watts > caps[name] * (1 + 1e-9)).sum())
        peak[name] = float(watts.max()) if m else 0.0
        joules[name] = float((watts * dt).sum())
        saturated_j[name] = float((watts * dt)[waiting].sum())
        flat = region.carbon_g_per_kwh
        intensity_s = running_integral(carbon, name, ends, flat) - running_integral(carbon, name, t, flat)
        grams += float((watts * intensity_s).sum()) / 3.6e6
    kwh = {r: j / 3.6e6 for r, j in joules.items()}
    price = {r.name: r.price_per_kwh for r in fleet.regions}
    total_cap = sum(caps.values())
    return {
        "energy_mwh": sum(kwh.values()) / 1000.0,
        "emissions_tco2e": grams / 1e6,
        "cost": sum(kwh[r] * price[r] for r in kwh),
        "power_cap_violations": violations,
        # Mean facility draw over the time jobs were waiting (held ones included), as a share
        # of the cap: how much of the power the run was allowed it used when work was waiting.
        "queue_saturated_s": saturated_s,
        "cap_share_saturated": (
            sum(saturated_j.values()) / saturated_s / total_cap if saturated_s and total_cap else 0.0
        ),
        "cap_share_saturated_by_region": {
            r: (saturated_j[r] / saturated_s / c if saturated_s else 0.0) for r, c in sorted(caps.items())
        },
        "peak_power_mw": {r: w / 1e6 for r, w in sorted(peak.items())},
        "power_cap_mw": {r: c / 1e6 for r, c in sorted(caps.items())},
    }
