"""Time-varying grid carbon intensity for the simulator, and the oracle bound on shifting.

**Curves.** A region's curve is 24 hourly values in gCO2e/kWh; hour 0 is the simulated
clock's midnight (``t_s = 0`` — for a trace, the first job's submission), and the curve
repeats every day. ``--carbon builtin`` gives every region of the fleet a built-in shape,
scaled so that its daily mean equals the region's flat ``carbon_g_per_kwh``:

* ``solar`` (regions whose name contains ``west``): a solar-heavy grid, the "duck curve" of
  a high-PV system such as California's — a deep dip around midday (≈0.45× the mean at
  13:00) and a steep evening ramp to a peak at 19–20:00 (≈1.4×) as solar fades and gas
  plants follow the evening load;
* ``mixed`` (every other region): a thermal grid with some solar, as in the US mid-Atlantic —
  a shallow midday dip (≈0.88×) and an evening peak (≈1.13×).

The shapes are fixed tables (not fitted to any year's data): illustrative, deterministic and
documented here. A curve file replaces them: ``.toml`` with one array per region::

    [hourly]
    gov-east = [420.0, 410.0, ...]   # 24 values

or ``.csv`` with a header ``hour,<region>,<region>...`` and 24 rows, hours 0 to 23 in order.
A fleet region the file does not name keeps the flat ``carbon_g_per_kwh``; naming a region
the fleet lacks is an error.

**Emissions of a job.** The facility draws ``(idle of every node + busy_w of every running
job) × PUE``. The idle part does not depend on the schedule, so what a schedule changes is
``Σ_jobs busy_w × PUE × ∫ intensity`` over each job's run: :func:`job_grams`.

**Oracle bound.** Ignoring capacity and caps, every deferrable job of the baseline run (EASY)
is given its energy in the cleanest hours its window allows: its run time ``run_s`` split
over the hour slots of ``[submit, deadline]`` (cleanest first, any of its accredited regions
for each slot — PUE × intensity — and not necessarily contiguous), at its baseline busy
draw. Jobs that are not deferrable stay where the baseline put them. No schedule that runs
the same jobs at the same draws can emit less, so ``baseline − Σ (baseline_j − oracle_j)``
bounds any policy's emissions, and ``(baseline − policy) / (baseline − oracle)`` is the share
of the achievable reduction a policy reached. (A job's oracle is never above its baseline:
when the baseline ran it outside its window, late because of queueing, it keeps that.)
"""

from __future__ import annotations

import csv
import io
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path

from enclave.errors import InvalidInput
from enclave.fleet import Fleet
from enclave.scheduler.capacity import ClusterState
from enclave.scheduler.carbon import HOUR_S
from enclave.scheduler.policies import DEFAULT_MAX_DEFER_S
from enclave.sim.engine import Outcome, Run
from enclave.sim.metrics import CarbonCurve

BUILTIN = "builtin"
HOURS = 24
J_PER_KWH = 3.6e6

# Relative shapes (normalised to a mean of 1 when used), hour 0 = midnight.
SHAPES: dict[str, tuple[float, ...]] = {
    "solar": (
        1.10, 1.08, 1.06, 1.05, 1.05, 1.08, 1.10, 1.00, 0.85, 0.70, 0.58, 0.50,
        0.46, 0.45, 0.48, 0.55, 0.70, 0.92, 1.20, 1.35, 1.38, 1.30, 1.22, 1.15,
    ),
    "mixed": (
        1.02, 1.00, 0.98, 0.97, 0.97, 1.00, 1.04, 1.06, 1.02, 0.96, 0.92, 0.89,
        0.88, 0.88, 0.90, 0.93, 0.98, 1.06, 1.12, 1.14, 1.12, 1.08, 1.05, 1.03,
    ),
}  # fmt: skip


def shape_for(region: str) -> str:
    return "solar" if "west" in region else "mixed"


def builtin_curve(fleet: Fleet) -> CarbonCurve:
    """Every region's built-in shape, scaled to its flat ``carbon_g_per_kwh`` as the mean."""
    hourly = {}
    for region in fleet.regions:
        shape = SHAPES[shape_for(region.name)]
        mean = sum(shape) / len(shape)
        hourly[region.name] = [round(region.carbon_g_per_kwh * v / mean, 3) for v in shape]
    return CarbonCurve(hourly)


def load_curve(path: Path, fleet: Fleet) -> CarbonCurve:
    """A curve file (``.toml`` or ``.csv``, see the module docstring), checked against ``fleet``."""
    if not path.is_file():
        raise InvalidInput(f"no such carbon curve file: {path}")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".toml":
        hourly = _from_toml(text, path.name)
    elif path.suffix.lower() == ".csv":
        hourly = _from_csv(text, path.name)
    else:
        raise InvalidInput(f"{path.name}: a carbon curve is a .toml or .csv file")
    known = {r.name for r in fleet.regions}
    for region, values in hourly.items():
        if region not in known:
            raise InvalidInput(f"{path.name}: region {region!r} is not in fleet {fleet.name!r}")
        if len(values) != HOURS:
            raise InvalidInput(
                f"{path.name}: region {region!r}: expected {HOURS} hourly values, got {len(values)}"
            )
        for hour, v in enumerate(values):
            if not math.isfinite(v) or v < 0:
                raise InvalidInput(
                    f"{path.name}: region {region!r} hour {hour}: {v} is not a finite value ≥ 0"
                )
    return CarbonCurve(hourly)


def _from_toml(text: str, name: str) -> dict[str, list[float]]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(f"{name}: not valid TOML: {exc}") from exc
    table = data.get("hourly")
    if not isinstance(table, dict) or set(data) != {"hourly"}:
        raise InvalidInput(f"{name}: expected one [hourly] table of region = [24 values]")
    out = {}
    for region, values in table.items():
        if not isinstance(values, list) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in values
        ):
            raise InvalidInput(f"{name}: hourly.{region}: expected an array of numbers")
        out[region] = [float(v) for v in values]
    return out


def _from_csv(text: str, name: str) -> dict[str, list[float]]:
    rows = [r for r in csv.reader(io.StringIO(text)) if any(c.strip() for c in r)]
    if not rows or rows[0][0].strip().lower() != "hour" or len(rows[0]) < 2:
        raise InvalidInput(f"{name}: the header must be hour,<region>,<region>...")
    regions = [c.strip() for c in rows[0][1:]]
    out: dict[str, list[float]] = {r: [] for r in regions}
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(rows[0]):
            raise InvalidInput(f"{name}:{line}: expected {len(rows[0])} fields, found {len(row)}")
        try:
            hour = int(row[0])
            values = [float(c) for c in row[1:]]
        except ValueError as exc:
            raise InvalidInput(f"{name}:{line}: not a number ({exc})") from exc
        if hour != line - 2:
            raise InvalidInput(f"{name}:{line}: expected hour {line - 2}, found {hour}")
        for region, v in zip(regions, values, strict=True):
            out[region].append(v)
    return out


def resolve_carbon(spec: str | None, fleet: Fleet) -> CarbonCurve | None:
    """``None``: flat intensities; ``builtin``: :func:`builtin_curve`; else a curve file."""
    if spec is None or spec == "":
        return None
    if spec == BUILTIN:
        return builtin_curve(fleet)
    return load_curve(Path(spec), fleet)


def hourly_values(carbon: CarbonCurve | None, fleet: Fleet) -> dict[str, list[float]]:
    """Every region's hourly curve (flat where none is given): what a policy is handed."""
    hourly = carbon.hourly if carbon is not None else {}
    return {r.name: list(hourly.get(r.name) or [r.carbon_g_per_kwh] * HOURS) for r in fleet.regions}


# -- emissions of jobs and the oracle bound ---------------------------------------------------
def job_grams(run: Run, carbon: CarbonCurve, fleet: Fleet) -> float:
    """gCO2e of the job's draw above idle, in the region it ran in."""
    region = fleet.region(run.placement.region)
    integral = carbon.integral(region.name, run.start_s, run.end_s, region.carbon_g_per_kwh)
    return run.placement.busy_w * region.pue * integral / J_PER_KWH


@dataclass(frozen=True)
class OracleBound:
    deferrable_jobs: int
    baseline_deferrable_t: float  # tCO2e of the deferrable jobs' busy draw in the baseline
    oracle_deferrable_t: float  # ... placed by the oracle
    reduction_t: float  # the best achievable reduction: baseline − oracle

    def share_reached(self, baseline_t: float, policy_t: float) -> float | None:
        """The share of the oracle's reduction a policy's emissions reached (None if 0)."""
        if self.reduction_t <= 0:
            return None
        return (baseline_t - policy_t) / self.reduction_t


def oracle_bound(
    fleet: Fleet, baseline: Outcome, carbon: CarbonCurve | None, max_defer_s: float = DEFAULT_MAX_DEFER_S
) -> OracleBound:
    """See the module docstring. ``max_defer_s`` is the window of a deferrable job with no
    deadline (as the carbon-aware policy treats it)."""
    curve = carbon or CarbonCurve({})
    values = hourly_values(curve, fleet)
    lengths = {len(v) for v in values.values()}
    if len(lengths) != 1:
        raise InvalidInput("the oracle needs curves of one length in every region")
    period = lengths.pop()
    pue = {r.name: r.pue for r in fleet.regions}
    cluster = ClusterState.from_fleet(fleet)
    per_set: dict[tuple[str, ...], list[tuple[float, int]]] = {}  # (g/kWh with PUE, hour) cleanest first
    base_g = oracle_g = 0.0
    count = 0
    for run in baseline.runs:
        sim = run.sim
        job = sim.job
        if not (sim.deferrable or job.deferrable):
            continue
        count += 1
        actual = job_grams(run, curve, fleet)
        base_g += actual
        deadline = sim.deadline_s if sim.deadline_s is not None else job.deadline_s
        if deadline is None:
            deadline = job.submit_s + job.walltime_s + max_defer_s
        run_s = run.end_s - run.start_s
        window = (job.submit_s, max(deadline, job.submit_s + run_s))
        regions = tuple(sorted({r.name for r, _p in cluster.candidates(job)} or {run.placement.region}))
        slots = per_set.get(regions)
        if slots is None:
            slots = sorted((min(pue[r] * values[r][h] for r in regions), h) for h in range(period))
            per_set[regions] = slots
        best = run.placement.busy_w * _cheapest_fill(slots, period, window, run_s) / J_PER_KWH
        oracle_g += min(actual, best)
    return OracleBound(count, base_g / 1e6, oracle_g / 1e6, (base_g - oracle_g) / 1e6)


def _cheapest_fill(
    slots: list[tuple[float, int]], period: int, window: tuple[float, float], run_s: float
) -> float:
    """Σ cost × seconds of ``run_s`` seconds put in the cheapest hour slots of ``window``."""
    free = _seconds_by_hour(window[0], window[1], period)
    left = run_s
    total = 0.0
    for cost, hour in slots:
        if left <= 0:
            break
        take = min(left, free[hour])
        total += cost * take
        left -= take
    return total


def _seconds_by_hour(t0: float, t1: float, period: int) -> list[float]:
    """Seconds of [t0, t1] falling in each hour of the (repeating) curve."""
    free = [0.0] * period
    span = t1 - t0
    cycles = int(span // (period * HOUR_S))
    if cycles:
        for h in range(period):
            free[h] += cycles * HOUR_S
        t0 += cycles * period * HOUR_S
    t = t0
    while t < t1:
        boundary = (math.floor(t / HOUR_S) + 1) * HOUR_S
        end = min(boundary, t1)
        free[int(t // HOUR_S) % period] += end - t
        t = end
    return free
