"""Several policies on one workload and fleet, side by side, with the carbon oracle bound.

Every policy replays the same jobs on a fresh copy of the fleet. Energy, emissions and cost
are integrated over one horizon for all of them (from the first submission to the last end
of any run): the fleet's idle draw then weighs the same in every row, and differences come
from when and where work ran. When ``carbon-aware`` is compared, EASY is the baseline of the
oracle bound (:mod:`enclave.sim.carbon`): beside it the table shows the bound, the share of
the bound's reduction the policy reached and the wait it cost.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from enclave.errors import InvalidInput
from enclave.fleet import Fleet
from enclave.scheduler.policies import DEFAULT_POWER_CAP_SCALE, POLICIES, Policy, make_policy
from enclave.sim.carbon import hourly_values, oracle_bound
from enclave.sim.engine import Outcome, Progress, simulate
from enclave.sim.metrics import CarbonCurve, summarize, wait_s
from enclave.sim.workload import SimJob

DEFAULT_POLICIES = ("fcfs", "easy", "priority", "power-capped", "carbon-aware")
BASELINE = "easy"
CARBON_AWARE = "carbon-aware"
# The figures of each row, in the table's order (summary keys).
COLUMNS = (
    "jobs",
    "avg_wait_s",
    "avg_bounded_slowdown",
    "utilization",
    "makespan_s",
    "power_cap_violations",
    "cap_share_saturated",
    "energy_mwh",
    "emissions_tco2e",
    "cost",
)


@dataclass
class Comparison:
    rows: dict[str, dict[str, Any]]  # policy -> summary
    horizon_s: float
    carbon: dict[str, Any] | None = None  # the oracle bound and what carbon-aware reached
    outcomes: dict[str, Outcome] = field(default_factory=dict, repr=False)


def parse_policies(text: str) -> list[str]:
    names = [p.strip() for p in text.split(",") if p.strip()]
    if not names:
        raise InvalidInput("--policies names no policy")
    for name in names:
        if name not in POLICIES:
            raise InvalidInput(f"unknown scheduling policy {name!r} (known: {', '.join(POLICIES)})")
    if len(set(names)) != len(names):
        raise InvalidInput("--policies names a policy twice")
    return names


def build_policy(name: str, fleet: Fleet, carbon: CarbonCurve | None, power_cap_scale: float) -> Policy:
    if name == "power-capped":
        return make_policy(name, power_cap_scale=power_cap_scale)
    if name == CARBON_AWARE:
        return make_policy(name, hourly=hourly_values(carbon, fleet))
    return make_policy(name)


def mark_deferrable(jobs: Sequence[SimJob], share: float, slack_s: float, seed: int = 0) -> list[SimJob]:
    """A seeded ``share`` of the jobs made deferrable, each with the deadline
    ``submit + walltime + slack_s`` (jobs already deferrable keep theirs). For traces that
    say nothing about deferral."""
    if not 0.0 <= share <= 1.0:
        raise InvalidInput(f"the deferrable share must be in [0, 1], got {share}")
    if slack_s < 0:
        raise InvalidInput("the deadline slack must be non-negative")
    draws = np.random.Generator(np.random.PCG64(seed)).random(len(jobs)).tolist()
    out = []
    for sim, draw in zip(jobs, draws, strict=True):
        if draw < share and not sim.deferrable:
            job = sim.job
            sim = replace(sim, deferrable=True, deadline_s=job.submit_s + job.walltime_s + slack_s)
        out.append(sim)
    return out


def compare(
    fleet: Fleet,
    jobs: list[SimJob],
    policies: Sequence[str] = DEFAULT_POLICIES,
    *,
    carbon: CarbonCurve | None = None,
    power_cap_scale: float = DEFAULT_POWER_CAP_SCALE,
    progress: Callable[[str], Progress | None] | None = None,
) -> Comparison:
    """Run every policy (EASY too, as the oracle's baseline, when carbon-aware is asked for)."""
    names = list(policies)
    if CARBON_AWARE in names and BASELINE not in names:
        names.insert(names.index(CARBON_AWARE), BASELINE)
    outcomes: dict[str, Outcome] = {}
    for name in names:
        policy = build_policy(name, fleet, carbon, power_cap_scale)
        outcomes[name] = simulate(fleet, jobs, policy, progress=progress(name) if progress else None)
    horizon = max((o.power[-1].t_s for o in outcomes.values() if o.power), default=0.0)
    rows = {name: summarize(fleet, o, carbon, horizon_s=horizon) for name, o in outcomes.items()}
    for name in names:
        rows[name]["policy"] = name
        if name == "power-capped":
            rows[name]["power_cap_scale"] = power_cap_scale
    result = Comparison(rows, horizon, outcomes=outcomes)
    if CARBON_AWARE in outcomes:
        result.carbon = _carbon_figures(fleet, carbon, outcomes, rows)
    return result


def _carbon_figures(
    fleet: Fleet, carbon: CarbonCurve | None, outcomes: dict[str, Outcome], rows: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    bound = oracle_bound(fleet, outcomes[BASELINE], carbon)
    base_t = rows[BASELINE]["emissions_tco2e"]
    aware_t = rows[CARBON_AWARE]["emissions_tco2e"]
    share = bound.share_reached(base_t, aware_t)
    return {
        "baseline": BASELINE,
        "deferrable_jobs": bound.deferrable_jobs,
        "oracle_emissions_tco2e": base_t - bound.reduction_t,
        "oracle_reduction_tco2e": bound.reduction_t,
        "carbon_aware_reduction_tco2e": base_t - aware_t,
        "share_of_oracle_reduction": share,
        "extra_avg_wait_s": rows[CARBON_AWARE]["avg_wait_s"] - rows[BASELINE]["avg_wait_s"],
        "extra_avg_wait_deferrable_s": _avg_deferrable_wait(outcomes[CARBON_AWARE])
        - _avg_deferrable_wait(outcomes[BASELINE]),
        "deadlines_missed": _missed(outcomes[CARBON_AWARE]),
        "deadlines_missed_baseline": _missed(outcomes[BASELINE]),
    }


def _avg_deferrable_wait(outcome: Outcome) -> float:
    waits = [wait_s(r) for r in outcome.runs if r.sim.deferrable]
    return sum(waits) / len(waits) if waits else 0.0


def _missed(outcome: Outcome) -> int:
    return sum(
        1
        for r in outcome.runs
        if r.sim.deferrable and r.sim.deadline_s is not None and r.end_s > r.sim.deadline_s
    )


def write(out: Path, comparison: Comparison, meta: dict[str, Any]) -> list[Path]:
    """``compare.json`` (every figure of every run, the oracle, ``meta``), ``compare.csv``
    (one row per policy, the table's columns), and the policies side by side: ``compare.png``
    and ``compare.html``."""
    out.mkdir(parents=True, exist_ok=True)
    json_path, csv_path = out / "compare.json", out / "compare.csv"
    doc = {
        **meta,
        "horizon_s": comparison.horizon_s,
        "policies": comparison.rows,
        "carbon": comparison.carbon,
    }
    json_path.write_text(json.dumps(doc, indent=2) + "\n")  # policies in the order run
    with csv_path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["policy", *COLUMNS])
        for name, row in comparison.rows.items():
            w.writerow([name, *[row[c] for c in COLUMNS]])
        if comparison.carbon is not None:
            oracle = ["" for _ in COLUMNS]
            oracle[COLUMNS.index("emissions_tco2e")] = comparison.carbon["oracle_emissions_tco2e"]
            w.writerow(["oracle-bound", *oracle])
    from enclave.sim.report import compare_page  # matplotlib only when a comparison is written

    png, page = compare_page(comparison.rows, f"{meta.get('workload', 'workload')}: policies compared")
    png_path, html_path = out / "compare.png", out / "compare.html"
    png_path.write_bytes(png)
    html_path.write_text(page)
    return [json_path, csv_path, png_path, html_path]
