"""A tiny discrete-event driver for the scheduler core, as a simulator or a live loop uses it.

Events are job submissions and job completions. At each event time, in time order, the
driver first releases every job that completes then (``state.release``), then appends every
job submitted then to the queue (which therefore stays in submission order), then runs one
pass and starts what it started. A started job completes ``runtime_s`` later (its actual
runtime, at most its walltime). Nothing else happens between events, so nothing else needs a
pass. The driver records every start, placement, end and reservation.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from enclave.scheduler.capacity import ClusterState
from enclave.scheduler.core import schedule
from enclave.scheduler.model import Job, PassResult, Placement, Reservation
from enclave.scheduler.policies import Policy


@dataclass(frozen=True)
class Work:
    """A job and how long it really runs once started."""

    job: Job
    runtime_s: float


@dataclass
class Trace:
    starts: dict[str, float] = field(default_factory=dict)
    placements: dict[str, Placement] = field(default_factory=dict)
    ends: dict[str, float] = field(default_factory=dict)
    reservations: list[tuple[float, Reservation]] = field(default_factory=list)  # (pass time, reservation)
    never_started: list[str] = field(default_factory=list)
    passes: int = 0

    def first_shadow(self) -> dict[str, float]:
        """The shadow time of the first reservation made for each job."""
        out: dict[str, float] = {}
        for _now, res in self.reservations:
            out.setdefault(res.job_id, res.start_s)
        return out


# Called after every pass with the time, the state (starts applied), the queue the pass saw
# and its result.
PassCheck = Callable[[float, ClusterState, list[Job], PassResult], None]
# Called with the state after every release (and, if given, before every pass).
ReleaseCheck = Callable[[ClusterState], None]


def simulate(
    state: ClusterState,
    policy: Policy,
    work: Sequence[Work],
    on_pass: PassCheck | None = None,
    on_release: ReleaseCheck | None = None,
    before_pass: ReleaseCheck | None = None,
    explain: bool = True,
) -> Trace:
    for w in work:
        if not 0 < w.runtime_s <= w.job.walltime_s:
            raise ValueError(f"job {w.job.id}: runtime {w.runtime_s} not in (0, walltime]")
    if len({w.job.id for w in work}) != len(work):
        raise ValueError("job ids must be unique")
    runtime = {w.job.id: w.runtime_s for w in work}
    submits = sorted(work, key=lambda w: (w.job.submit_s, w.job.seq))
    submits.reverse()  # pop() takes the earliest
    completions: list[tuple[float, str]] = []
    queue: list[Job] = []
    trace = Trace()

    while submits or completions:
        now = min(
            submits[-1].job.submit_s if submits else math.inf,
            completions[0][0] if completions else math.inf,
        )
        while completions and completions[0][0] == now:
            _, job_id = heapq.heappop(completions)
            if state.release(job_id) is None:
                raise AssertionError(f"job {job_id} completed but the state did not know it ran")
            trace.ends[job_id] = now
            if on_release is not None:
                on_release(state)
        while submits and submits[-1].job.submit_s == now:
            queue.append(submits.pop().job)

        seen = list(queue)
        if before_pass is not None:
            before_pass(state)
        result = schedule(state, seen, now, policy, explain=explain)
        trace.passes += 1
        if result.preempt:
            raise AssertionError(f"this driver does not preempt, the pass asked for {result.preempt}")
        started = set()
        queued = {j.id for j in seen}
        for job, placement in result.started:
            if job.id not in queued or job.id in started:
                raise AssertionError(f"pass started {job.id}, which was not queued (or twice)")
            started.add(job.id)
            trace.starts[job.id] = now
            trace.placements[job.id] = placement
            heapq.heappush(completions, (now + runtime[job.id], job.id))
        queue = [j for j in queue if j.id not in started]
        if result.reservation is not None:
            trace.reservations.append((now, result.reservation))
        if on_pass is not None:
            on_pass(now, state, seen, result)

    trace.never_started = [j.id for j in queue]
    return trace
