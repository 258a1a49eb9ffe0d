"""The discrete-event driver: the real scheduler core on a simulated clock.

Events are processed in time order; at one instant, completions come first (they free
capacity), then submissions, then one scheduling pass — the same pass the live loop runs.
Deterministic: the same workload, fleet and policy give the same schedule, byte for byte.
A policy that holds jobs back until a time (carbon-aware) gets a pass at the instant it names
(``next_pass_s``) even when no job arrives or ends then; a policy with ``power_cap_scale``
runs on caps scaled by it.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace

from enclave.fleet import Fleet
from enclave.scheduler.capacity import ClusterState
from enclave.scheduler.core import schedule
from enclave.scheduler.model import QOS, Job, Placement
from enclave.scheduler.policies import MultifactorEASY, Policy, next_pass_s, power_cap_scale
from enclave.scheduler.priority import billing_units
from enclave.sim.workload import SimJob, no_gc

Progress = Callable[[int, int], None]  # (jobs finished, jobs total)


@dataclass(frozen=True, slots=True, init=False)
class Run:
    """One job's simulated life."""

    sim: SimJob
    start_s: float
    end_s: float
    placement: Placement

    def __init__(self, sim: SimJob, start_s: float, end_s: float, placement: Placement) -> None:
        # The fields set through their slots' descriptors, not object.__setattr__ (frozen).
        s = _RUN_SLOTS
        s[0](self, sim)
        s[1](self, start_s)
        s[2](self, end_s)
        s[3](self, placement)


_RUN_SLOTS = tuple(Run.__dict__[f.name].__set__ for f in fields(Run))


@dataclass(slots=True)
class PowerSample:
    """The draw from ``t_s`` until the next sample, and how many jobs were waiting then."""

    t_s: float
    facility_w: dict[str, float]
    queued: int = 0  # jobs submitted and not started, after the pass at t_s


@dataclass
class Outcome:
    runs: list[Run]
    power: list[PowerSample] = field(default_factory=list)
    passes: int = 0
    never_started: list[SimJob] = field(default_factory=list)
    caps_w: dict[str, float] = field(default_factory=dict)  # the caps the run ran under


def simulate(
    fleet: Fleet,
    jobs: list[SimJob],
    policy: Policy,
    *,
    cluster: ClusterState | None = None,
    progress: Progress | None = None,
) -> Outcome:
    """Replay ``jobs`` (sorted by submission) on ``fleet`` under ``policy``.

    The cyclic garbage collector is paused meanwhile (and turned back on if it was on): the
    run makes millions of small objects, none of them in a reference cycle, and the
    collector's full runs would walk every job of the workload again and again."""
    with no_gc():
        return _simulate(fleet, jobs, policy, cluster, progress)


def _simulate(
    fleet: Fleet, jobs: list[SimJob], policy: Policy, cluster: ClusterState | None, progress: Progress | None
) -> Outcome:
    state = cluster or ClusterState.from_fleet(fleet, power_cap_scale=power_cap_scale(policy))
    by_id: dict[str, SimJob] = {}
    queue: dict[str, Job] = {}  # in submission order
    urgent: dict[str, Job] = {}  # URGENT jobs lead the queue (scheduler.policies.queue_order)
    ends: list[tuple[float, int, str]] = []  # (end time, tie-break, job id)
    starts: dict[str, tuple[float, Placement]] = {}
    runs: list[Run] = []
    power: list[PowerSample] = []
    fairshare = policy.fairshare if isinstance(policy, MultifactorEASY) else None
    wakes = getattr(policy, "next_pass_s", None) is not None  # see policies.next_pass_s
    regions = state.regions
    submit_at = [sim.job.submit_s for sim in jobs] + [math.inf]  # a sentinel past the last job
    inf, heappush, heappop, release = math.inf, heapq.heappush, heapq.heappop, state.release
    i, n, passes, tie = 0, len(jobs), 0, 0
    wake = inf  # a pass the policy asked for
    while i < n or ends or wake < inf:
        t = min(submit_at[i], ends[0][0] if ends else inf, wake)
        changed = False
        while ends and ends[0][0] <= t:
            _, _, job_id = heappop(ends)
            release(job_id)
            sim = by_id.pop(job_id)
            start, placement = starts.pop(job_id)
            runs.append(Run(sim, start, t, placement))
            changed = True
            if fairshare is not None:
                fairshare.charge(sim.job.agency, billing_units(sim.job, t - start), t)
        while submit_at[i] <= t:
            sim = jobs[i]
            by_id[sim.job.id] = sim
            job = sim.job
            if sim.deferrable and not job.deferrable:  # the scheduler sees it on the Job
                job = replace(job, deferrable=True, deadline_s=sim.deadline_s)
            (urgent if job.qos is QOS.URGENT else queue)[job.id] = job
            i += 1
        if queue or urgent:
            offered = [*urgent.values(), *queue.values()] if urgent else list(queue.values())
            result = schedule(state, offered, t, policy, explain=False)
            passes += 1
            for job, placement in result.started:
                (urgent if job.id in urgent else queue).pop(job.id)
                starts[job.id] = (t, placement)
                tie += 1
                heappush(ends, (t + by_id[job.id].run_s, tie, job.id))
                changed = True
        wake = inf
        if wakes and (queue or urgent):
            when = next_pass_s(policy, t)
            if when is not None and when > t:
                wake = when
        # The draw is piecewise constant between changes; a sample also marks the queue
        # filling up or emptying (the share of the cap used while jobs wait needs it).
        queued = len(queue)
        if changed or not power or (queued > 0) != (power[-1].queued > 0):
            power.append(PowerSample(t, {r.name: r.facility_w for r in regions}, queued))
        if progress is not None:
            progress(len(runs), n)
    never = [by_id[j] for j in (*urgent, *queue)]
    return Outcome(runs, power, passes, never, {r.name: r.cap_w for r in regions})
