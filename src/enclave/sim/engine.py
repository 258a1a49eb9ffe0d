"""The discrete-event driver: the real scheduler core on a simulated clock.

Events are processed in time order; at one instant, completions come first (they free
capacity), then submissions, then one scheduling pass — the same pass the live loop runs.
Deterministic: the same workload, fleet and policy give the same schedule, byte for byte.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field

from enclave.fleet import Fleet
from enclave.scheduler.capacity import ClusterState
from enclave.scheduler.core import schedule
from enclave.scheduler.model import Job, Placement
from enclave.scheduler.policies import MultifactorEASY, Policy
from enclave.scheduler.priority import billing_units
from enclave.sim.workload import SimJob

Progress = Callable[[int, int], None]  # (jobs finished, jobs total)


@dataclass(frozen=True, slots=True)
class Run:
    """One job's simulated life."""

    sim: SimJob
    start_s: float
    end_s: float
    placement: Placement


@dataclass
class PowerSample:
    t_s: float
    facility_w: dict[str, float]


@dataclass
class Outcome:
    runs: list[Run]
    power: list[PowerSample] = field(default_factory=list)
    passes: int = 0
    never_started: list[SimJob] = field(default_factory=list)


def simulate(
    fleet: Fleet,
    jobs: list[SimJob],
    policy: Policy,
    *,
    cluster: ClusterState | None = None,
    progress: Progress | None = None,
) -> Outcome:
    """Replay ``jobs`` (sorted by submission) on ``fleet`` under ``policy``."""
    state = cluster or ClusterState.from_fleet(fleet)
    by_id: dict[str, SimJob] = {}
    queue: dict[str, Job] = {}
    ends: list[tuple[float, int, str]] = []  # (end time, tie-break, job id)
    starts: dict[str, tuple[float, Placement]] = {}
    runs: list[Run] = []
    power: list[PowerSample] = []
    fairshare = policy.fairshare if isinstance(policy, MultifactorEASY) else None
    i, n, passes, tie = 0, len(jobs), 0, 0
    while i < n or ends:
        t = min(jobs[i].job.submit_s if i < n else float("inf"), ends[0][0] if ends else float("inf"))
        changed = False
        while ends and ends[0][0] <= t:
            _, _, job_id = heapq.heappop(ends)
            state.release(job_id)
            sim = by_id.pop(job_id)
            start, placement = starts.pop(job_id)
            runs.append(Run(sim, start, t, placement))
            changed = True
            if fairshare is not None:
                fairshare.charge(sim.job.agency, billing_units(sim.job, t - start), t)
        while i < n and jobs[i].job.submit_s <= t:
            sim = jobs[i]
            by_id[sim.job.id] = sim
            queue[sim.job.id] = sim.job
            i += 1
        if queue:
            result = schedule(state, list(queue.values()), t, policy, explain=False)
            passes += 1
            for job, placement in result.started:
                del queue[job.id]
                starts[job.id] = (t, placement)
                tie += 1
                heapq.heappush(ends, (t + by_id[job.id].run_s, tie, job.id))
                changed = True
        if changed or not power:  # the draw is piecewise constant between changes
            power.append(PowerSample(t, {r.name: r.facility_w for r in state.regions}))
        if progress is not None:
            progress(len(runs), n)
    never = [by_id[j] for j in queue]
    return Outcome(runs, power, passes, never)
