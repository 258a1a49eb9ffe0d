"""Scheduling policies: a small interface, a table of named implementations, one default.

The queue handed to a pass is in submission order (the store and the simulator keep it so);
a policy says in which order the pass considers jobs and whether later jobs may backfill
around a blocked one. ``fcfs`` is strict submission order; ``easy`` is EASY backfilling in
submission order (the classic algorithm, used to validate against published results);
``priority`` is EASY backfilling over the multifactor priority (age, fair-share with decay,
QOS, size) — the live default. ``power-capped`` is EASY on a fleet whose region caps are
scaled down by ``power_cap_scale``. ``carbon-aware`` is EASY that holds deferrable jobs back
while their regions' grid is dirtier than it will be before their deadline, and sends them
to the cleanest region when one is cleaner.

Two optional attributes, read through the functions at the bottom (one place): a policy with
``power_cap_scale`` runs under caps scaled by it (the driver builds the ClusterState with it);
a policy with ``next_pass_s(now)`` holds jobs back until a time and names the next instant a
pass may decide differently, so a driver with no event of its own then (the simulator) wakes
up for it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

from enclave.errors import InvalidInput
from enclave.scheduler.carbon import ANYWHERE, HOLD, HOUR_S, HourlyCurve, StartCosts
from enclave.scheduler.model import PRIORITY_INPUTS, QOS, Job
from enclave.scheduler.priority import FairShare, Weights, group_inputs, order_by_priority, priorities

if TYPE_CHECKING:
    from enclave.scheduler.capacity import ClusterState


class Policy(Protocol):
    name: str
    backfill: bool

    def order(self, queue: Sequence[Job], now: float, state: ClusterState) -> Sequence[Job]:
        """The jobs a pass considers, in the order it does: ``queue``, or all but those it holds."""
        ...


def _submit_order(queue: Sequence[Job]) -> list[Job]:
    """The queue's own order: drivers hand it over URGENT jobs first, then in submission order
    (see :func:`queue_order`); sorting or even scanning 100k jobs every pass costs too much."""
    return list(queue)


def queue_order(job: Job) -> tuple[bool, float, int]:
    """The order drivers keep their queue in: URGENT first — else a preempted, requeued victim,
    older than the urgent job, would take back the nodes it was preempted for — then by
    submission."""
    return (job.qos is not QOS.URGENT, job.submit_s, job.seq)


@dataclass
class FCFS:
    name: str = "fcfs"
    backfill: bool = False

    def order(self, queue: Sequence[Job], now: float, state: ClusterState) -> list[Job]:
        return _submit_order(queue)


@dataclass
class EASY:
    name: str = "easy"
    backfill: bool = True

    def order(self, queue: Sequence[Job], now: float, state: ClusterState) -> list[Job]:
        return _submit_order(queue)


@dataclass
class MultifactorEASY:
    """EASY backfilling over multifactor priority; fair-share usage lives in ``fairshare``."""

    fairshare: FairShare = field(default_factory=FairShare)
    weights: Weights = field(default_factory=Weights)
    name: str = "priority"
    backfill: bool = True

    def order(self, queue: Sequence[Job], now: float, state: ClusterState) -> Sequence[Job]:
        if not queue:
            return []
        grouped = group_inputs(queue)
        factors = self.fairshare.factors(sorted({PRIORITY_INPUTS[i].agency for i in grouped[0]}), now)
        max_nodes = max(p.spec.count for r in state.regions for p in r.pools)
        return order_by_priority(queue, priorities(queue, now, factors, self.weights, max_nodes, grouped))


DEFAULT_POWER_CAP_SCALE = 0.8


@dataclass
class PowerCappedEASY:
    """EASY backfilling under every region's cap times ``power_cap_scale`` (0 < scale ≤ 1)."""

    power_cap_scale: float = DEFAULT_POWER_CAP_SCALE
    name: str = "power-capped"
    backfill: bool = True

    def __post_init__(self) -> None:
        if not 0.0 < self.power_cap_scale <= 1.0:
            raise InvalidInput(f"power_cap_scale must be in (0, 1], got {self.power_cap_scale}")

    def order(self, queue: Sequence[Job], now: float, state: ClusterState) -> list[Job]:
        return _submit_order(queue)


DEFAULT_MAX_DEFER_S = 24 * 3600.0
DEFAULT_GUARD = 0.25  # share of a deferrable job's slack kept in reserve for queueing


@dataclass
class CarbonAwareEASY:
    """EASY backfilling that shifts deferrable jobs to low-carbon hours or regions.

    ``hourly`` maps a region to its repeating hourly grid intensity (gCO2e/kWh; see
    :mod:`enclave.scheduler.carbon`) — plain values; the clock is the pass's ``now``. For a
    deferrable job the latest start is ``deadline_s - walltime_s`` (it still finishes by its
    deadline if it starts then; ``submit_s + max_defer_s`` when it has no deadline). Its
    slack is the time from submission to the latest start; ``guard`` of the slack is kept in
    reserve for queueing, so the job is *due* at ``latest start - guard × slack``:

    1. once due, the job goes to the head of the order (earliest due first) in any region:
       deferral never holds a job past the point where starting would still meet its
       deadline, and on a busy fleet the reserve absorbs the wait for room;
    2. before that, it is offered now only if starting in this hour, in the cleanest of its
       candidate regions, is within ``tolerance`` of the cleanest start (hour and region)
       still ahead of it before it is due — cost being PUE × mean intensity over its
       walltime; when that region is cleaner now than its other regions, the job is offered
       pinned to it (``region=``), so it waits for room there rather than running dirtier
       elsewhere;
    3. otherwise it is left out of the order (held; the pass reports it DEFERRED).

    Jobs that are not deferrable, and regions without a curve, are scheduled as EASY does;
    with no curve at all nothing is held. ``next_pass_s`` names the next hour boundary or
    the next due time while something is held.
    """

    hourly: Mapping[str, Sequence[float]] = field(default_factory=dict)
    tolerance: float = 0.01
    max_defer_s: float = DEFAULT_MAX_DEFER_S
    guard: float = DEFAULT_GUARD
    name: str = "carbon-aware"
    backfill: bool = True
    _costs: StartCosts = field(init=False, repr=False)
    _regions: dict[tuple[str, frozenset[str]], tuple[tuple[str, float], ...]] = field(
        default_factory=dict, init=False, repr=False
    )
    _pinned: dict[tuple[str, str], Job] = field(default_factory=dict, init=False, repr=False)
    _held: dict[str, float] = field(default_factory=dict, init=False, repr=False)  # id -> held until
    _next_s: float | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        try:
            curves = {region: HourlyCurve(values) for region, values in self.hourly.items()}
        except ValueError as exc:
            raise InvalidInput(f"carbon-aware policy: {exc}") from exc
        if self.tolerance < 0 or self.max_defer_s < 0 or not 0.0 <= self.guard <= 1.0:
            raise InvalidInput(
                "carbon-aware policy: tolerance and max_defer_s must be non-negative, guard in [0, 1]"
            )
        self._costs = StartCosts(curves, self.tolerance)

    def latest_start_s(self, job: Job) -> float:
        """The last start that still meets the job's deadline (if its walltime holds)."""
        if job.deadline_s is None:
            return job.submit_s + self.max_defer_s
        return job.deadline_s - job.walltime_s

    def due_s(self, job: Job) -> float:
        """From when on the job is no longer held: its latest start less the reserve."""
        latest = self.latest_start_s(job)
        return latest - self.guard * max(0.0, latest - job.submit_s)

    def order(self, queue: Sequence[Job], now: float, state: ClusterState) -> list[Job]:
        due: list[tuple[float, int, Job]] = []
        out: list[Job] = []
        next_hour = (now // HOUR_S + 1) * HOUR_S
        last_held, held = self._held, {}
        held_until = math.inf
        pinned: dict[tuple[str, str], Job] = {}
        for job in queue:
            if not job.deferrable:
                out.append(job)
                continue
            until = last_held.get(job.id)
            if until is not None and now < until:  # nothing that decides it has changed yet
                held[job.id] = until
                held_until = min(held_until, until)
                continue
            due_s = self.due_s(job)
            if now >= due_s:
                due.append((due_s, job.seq, job))
                continue
            regions = self._candidate_regions(job, state)
            verdict = self._costs.verdict(regions, now, due_s, job.walltime_s) if regions else ANYWHERE
            if verdict is HOLD:
                until = min(due_s, next_hour)
                held[job.id] = until
                held_until = min(held_until, until)
            elif verdict == ANYWHERE:
                out.append(job)
            else:
                key = (job.id, verdict)
                there = self._pinned.get(key) or replace(job, region=verdict)
                pinned[key] = there
                out.append(there)
        self._pinned = pinned  # only jobs still queued and pinned keep their pinned copy
        self._held = held
        self._next_s = None if held_until == math.inf else held_until
        due.sort(key=lambda d: (d[0], d[1]))
        return [job for _due, _seq, job in due] + out

    def next_pass_s(self, now: float) -> float | None:
        """When a held job's verdict may change: the next hour, or the first due time."""
        return self._next_s

    def _candidate_regions(self, job: Job, state: ClusterState) -> tuple[tuple[str, float], ...]:
        """The job's candidate regions that have a curve, with their PUE (cached per shape and
        set of unavailable regions: a region that is down is no candidate)."""
        key = (job.shape, state.unavailable)
        got = self._regions.get(key)
        if got is None:
            seen: dict[str, float] = {}
            for region, _pool in state.candidates(job):
                if region.name in self._costs.curves:
                    seen.setdefault(region.name, region.pue)
            got = tuple(seen.items())
            self._regions[key] = got
        return got


POLICIES: dict[str, Any] = {
    "fcfs": FCFS,
    "easy": EASY,
    "priority": MultifactorEASY,
    "power-capped": PowerCappedEASY,
    "carbon-aware": CarbonAwareEASY,
}
DEFAULT_POLICY = "priority"


def make_policy(name: str = DEFAULT_POLICY, **options: Any) -> Policy:
    """The named policy; ``options`` go to its constructor (``power_cap_scale=``, ``hourly=``)."""
    try:
        factory = POLICIES[name]
    except KeyError:
        raise InvalidInput(f"unknown scheduling policy {name!r} (known: {', '.join(POLICIES)})") from None
    try:
        policy: Policy = factory(**options)
    except TypeError as exc:
        raise InvalidInput(f"policy {name!r}: {exc}") from exc
    return policy


def power_cap_scale(policy: Policy) -> float:
    """The factor the policy scales region caps by (1.0 for policies without one)."""
    return float(getattr(policy, "power_cap_scale", 1.0))


def next_pass_s(policy: Policy, now: float) -> float | None:
    """The next instant the policy may decide differently with nothing else changed, if any."""
    wake = getattr(policy, "next_pass_s", None)
    if wake is None:
        return None
    when = wake(now)
    return None if when is None else float(when)
