"""One scheduling pass: ``schedule(state, queue, now, policy) -> PassResult``.

The pass walks the queue in the policy's order and starts every job that fits now — in an
accredited region, whole (gang) or not at all, within the region's power cap. When a job
does not fit:

* FCFS stops there: nothing behind it starts (strict order).
* EASY reserves the earliest time it can start (the *shadow time*, from the walltime
  estimates of running jobs) and lets later jobs start only if they cannot delay it: they end
  before the shadow time, or they use nodes and power left over at that time.
* An URGENT job that does not fit asks for lower-QOS jobs to be preempted (requeued after a
  grace signal) and holds the reservation while they stop.

Regions the driver has marked unavailable (``state.set_unavailable``: an unhealthy back end,
a region worker not connected) are no candidates: nothing is placed, reserved or preempted
there, and a job that only they could run waits with REGION_UNAVAILABLE.

The pass applies its starts to ``state`` (which the driver owns) and returns them together
with a reason for every job left pending. It is deterministic: ties break on submission
order, candidates are tried in a fixed order.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Sequence
from dataclasses import dataclass

from enclave.scheduler.capacity import ClusterState, Option, PoolState, RegionState
from enclave.scheduler.model import QOS, QOS_RANK, Job, PassResult, Reason, Reservation, Running
from enclave.scheduler.policies import Policy

Candidate = tuple[RegionState, PoolState]
PREEMPTIBLE = frozenset({QOS.LOW, QOS.NORMAL})


@dataclass
class _Hold:
    """What the head job's reservation still leaves for backfill."""

    region: str
    pool: str
    shadow_s: float
    extra_nodes: int
    extra_busy_w: float  # IT watts of headroom in the region at the shadow time

    def copy(self) -> _Hold:  # dataclasses.replace is several times slower on this hot path
        return _Hold(self.region, self.pool, self.shadow_s, self.extra_nodes, self.extra_busy_w)


def schedule(
    state: ClusterState, queue: Sequence[Job], now: float, policy: Policy, explain: bool = True
) -> PassResult:
    """One pass. ``explain=False`` skips working out why each job waits (the simulator)."""
    if not gc.isenabled():
        return _schedule(state, queue, now, policy, explain)
    # A pass that starts many jobs makes tens of thousands of small objects, none of them in a
    # reference cycle; meanwhile the cyclic collector would walk them, and the jobs they point
    # to, again and again (about a tenth of a 100,000-job pass). It is paused for the pass and
    # runs afterwards as usual.
    gc.disable()
    try:
        return _schedule(state, queue, now, policy, explain)
    finally:
        gc.enable()


def _schedule(
    state: ClusterState, queue: Sequence[Job], now: float, policy: Policy, explain: bool
) -> PassResult:
    result = PassResult()
    ordered = policy.order(queue, now, state)
    reasons = result.reasons
    if explain and len(ordered) < len(queue):  # the policy held some back (carbon-aware)
        offered = {job.id for job in ordered}
        reasons.update({job.id: Reason.DEFERRED for job in queue if job.id not in offered})
    why_not = _why_not if explain else _no_reason
    # Shapes that could not start now, and why: free resources and power headroom only shrink
    # during a pass. RESOURCES stays true; POWER_CAP may turn into RESOURCES, so it is rechecked
    # until it has.
    cannot_fit: dict[str, Reason] = {}
    held_from: dict[str, float] = {}  # shape -> shortest walltime the reservation held back
    hold: _Hold | None = None
    stopped = False
    # The pass has three phases, each its own loop over the one iterator: start jobs in order
    # until one does not fit; then either backfill around its reservation (EASY) or, for a
    # strict order (FCFS), only say why the rest waits. Long queues spend most of their time
    # in the last two, so they do the least per job.
    options: dict[str, tuple[Option, ...]] = {}  # per shape, as state.options(job) says
    jobs = iter(ordered)

    for job in jobs:
        shape = job.shape
        opts = options.get(shape)
        if opts is None:
            opts = options[shape] = state.options(job)
        if not opts:
            reasons[job.id] = _no_candidates(state, job)
            continue
        if shape not in cannot_fit and _start_first_fit(state, job, opts, now, result, None) is _STARTED:
            continue
        cands = state.candidates(job)
        why = why_not(job, cands)
        cannot_fit[shape] = why
        if job.qos is QOS.URGENT:
            victims = _plan_preemption(state, job, cands)
            if victims is not None:
                result.preempt.extend(victims)
                state.preempting.update(victims)
                why = Reason.PREEMPTING
        if not policy.backfill:
            reasons[job.id] = why
            # A job no region's cap can ever allow is skipped like an unsatisfiable one:
            # waiting for it would stop the queue for good.
            stopped = _ever_within_cap(job, cands)
            if stopped:
                break
            continue
        hold = _reserve(state, job, cands, now)
        if hold is not None:
            result.reservation = Reservation(job.id, hold.region, hold.pool, hold.shadow_s)
            reasons[job.id] = Reason.PREEMPTING if why is Reason.PREEMPTING else Reason.RESERVED
            break
        reasons[job.id] = why  # can never start under the current caps

    if stopped:  # nothing behind a blocked FCFS head starts
        for job in jobs:
            shape = job.shape
            opts = options.get(shape)
            if opts is None:
                opts = options[shape] = state.options(job)
            if not opts:
                reasons[job.id] = _no_candidates(state, job)
            elif not explain:
                break
            else:
                reasons[job.id] = _PRIORITY

    elif hold is not None:  # backfill: start only what cannot delay the reserved job
        cannot_fit_get, held_from_get, inf = cannot_fit.get, held_from.get, math.inf
        for job in jobs:
            shape = job.shape
            # Cheapest checks first: most of a long queue stops here.
            known = cannot_fit_get(shape)  # only shapes that had candidates are in it
            if known is not None:
                if explain:
                    if known is _POWER_CAP:
                        known = why_not(job, state.candidates(job))
                        if known is _RESOURCES:  # and so it stays
                            cannot_fit[shape] = known
                    reasons[job.id] = known
                continue
            if job.walltime_s >= held_from_get(shape, inf):  # the hold only tightens
                if explain:
                    reasons[job.id] = _PRIORITY
                continue
            opts = options.get(shape)
            if opts is None:
                opts = options[shape] = state.options(job)
            if not opts:
                reasons[job.id] = _no_candidates(state, job)
                continue
            outcome = _start_first_fit(state, job, opts, now, result, hold)
            if outcome is _FAILED:
                why = why_not(job, state.candidates(job))
                cannot_fit[shape] = why
                reasons[job.id] = why
            elif outcome is _HELD:
                held_from[shape] = min(job.walltime_s, held_from_get(shape, inf))
                reasons[job.id] = _PRIORITY
    return result


def _no_candidates(state: ClusterState, job: Job) -> Reason:
    if state.only_unavailable(job):
        return Reason.REGION_UNAVAILABLE
    return Reason.UNSATISFIABLE if state.accredited(job) else Reason.NO_ACCREDITED_REGION


_STARTED, _HELD, _FAILED = "started", "held", "failed"
# Enum members as module constants: ``Reason.X`` is an attribute lookup on the enum class, several
# times slower than a global, and the backfill loop reads one for nearly every queued job.
_PRIORITY, _POWER_CAP, _RESOURCES = Reason.PRIORITY, Reason.POWER_CAP, Reason.RESOURCES


def _no_reason(job: Job, cands: list[Candidate]) -> Reason:
    return _RESOURCES


def _start_first_fit(
    state: ClusterState,
    job: Job,
    opts: tuple[Option, ...],
    now: float,
    result: PassResult,
    hold: _Hold | None,
) -> str:
    """Start the job in the first candidate that fits; say whether only the hold stopped it.

    The hot path of a pass that starts many jobs: the checks of ``pool.fits_now``,
    ``region.power_fits`` and ``state.allocate`` + ``state.start``, with what depends only on
    the job's shape (exclusive or not, busy watts) looked up once per shape."""
    held = False
    for region, pool, exclusive, busy, placement in opts:
        if exclusive:
            if pool.idle < job.nodes:
                continue
            node = None
        else:
            node = pool.find_shared(job)
            if node is None and pool.idle < 1:
                continue
        if not region.draw_ok(region.busy_w + busy):
            continue
        if hold is not None and not _backfill_ok(hold, job, region, pool, exclusive, busy, now):
            held = True
            continue
        result.started.append((job, state.take(job, region, pool, exclusive, busy, node, placement, now)))
        return _STARTED
    return _HELD if held else _FAILED


def _backfill_ok(
    hold: _Hold, job: Job, region: RegionState, pool: PoolState, exclusive: bool, busy: float, now: float
) -> bool:
    if now + job.walltime_s <= hold.shadow_s or region.name != hold.region:
        return True
    nodes = job.nodes if exclusive else 1  # a shared job may hold back one node: count it
    same_pool = pool.spec.name == hold.pool
    if busy > hold.extra_busy_w or (same_pool and nodes > hold.extra_nodes):
        return False
    hold.extra_busy_w -= busy
    if same_pool:
        hold.extra_nodes -= nodes
    return True


def _why_not(job: Job, cands: list[Candidate]) -> Reason:
    for region, pool in cands:
        if pool.fits_now(job) and not region.power_fits(pool.busy_w(job, pool.exclusive_for(job))):
            return Reason.POWER_CAP
    return Reason.RESOURCES


def _ever_within_cap(job: Job, cands: list[Candidate]) -> bool:
    """Could the job start in some candidate once everything else in its region has ended?"""
    return any(region.draw_ok(pool.busy_w(job, pool.exclusive_for(job))) for region, pool in cands)


def _reserve(state: ClusterState, job: Job, cands: list[Candidate], now: float) -> _Hold | None:
    """The earliest (shadow) time the job can start in any candidate, from running jobs' ends.

    Nothing in it changes while no job starts or ends, so the answer is kept with the state's
    version and reused by the next pass (the simulator makes many passes between changes).
    """
    key = (state.version, job.id, frozenset(state.preempting))
    cached = state.reservation_cache
    if cached is not None and cached[0] == key and (cached[1] is None or cached[1].shadow_s >= now):
        return None if cached[1] is None else cached[1].copy()
    best = _compute_reservation(state, job, cands, now)
    state.reservation_cache = (key, None if best is None else best.copy())
    return best


def _compute_reservation(state: ClusterState, job: Job, cands: list[Candidate], now: float) -> _Hold | None:
    best: _Hold | None = None
    for region, pool in cands:
        exclusive = pool.exclusive_for(job)
        need = job.nodes if exclusive else 1
        busy = pool.busy_w(job, exclusive)
        if not region.draw_ok(busy):
            continue  # not even an idle region leaves room for this job
        walk = _ReleaseWalk(state, region, pool)
        # Jobs already told to stop free their share now; then the rest, by estimated end.
        for job_id in state.preempting:
            walk.release(job_id)
        shadow = now if walk.fits(need, busy) else _walk_ends(state, walk, need, busy, now)
        if shadow == math.inf:
            continue
        if best is None or shadow < best.shadow_s:
            extra_w = region.cap_w / region.pue - (region.idle_it_w + max(0.0, walk.busy) + busy)
            best = _Hold(region.name, pool.spec.name, shadow, walk.idle - need, max(0.0, extra_w))
    return best


def _walk_ends(state: ClusterState, walk: _ReleaseWalk, need: int, busy: float, now: float) -> float:
    """The time everything ending by which leaves room for the job: running jobs are released
    by estimated end (jobs ending at one instant together) until it fits. ``walk.fits`` and
    ``walk.release`` written out on local variables: the simulator makes this walk tens of
    thousands of times."""
    region, pool = walk.region, walk.pool
    running, preempting, draw_ok = state.running, state.preempting, region.draw_ok
    region_name, pool_name, node_jobs, left = region.name, pool.spec.name, pool.node_jobs, walk._left
    idle, walk_busy = walk.idle, walk.busy
    shadow = math.inf
    pending_t: float | None = None
    for end, job_id in state.ends_of(region_name):  # by estimated end
        t = end if end > now else now  # max(now, end)
        if pending_t is not None and t != pending_t and idle >= need and draw_ok(walk_busy + busy):
            shadow = pending_t  # everything ending at pending_t is released
            break
        pending_t = t
        if job_id in preempting:
            continue
        run = running.get(job_id)
        if run is None or run.placement.region != region_name:
            continue
        pl = run.placement
        walk_busy -= pl.busy_w
        if pl.pool != pool_name:
            continue
        if pl.exclusive:
            idle += pl.nodes
        elif pl.node is not None:
            jobs_left = left.get(pl.node, node_jobs.get(pl.node, 1)) - 1
            left[pl.node] = jobs_left
            if jobs_left == 0:
                idle += 1
    else:
        if pending_t is not None and idle >= need and draw_ok(walk_busy + busy):
            shadow = pending_t
    walk.idle, walk.busy = idle, walk_busy
    return shadow


class _ReleaseWalk:
    """Idle nodes of one pool and busy power of its region as running jobs are released in
    imagination: exclusive jobs give back their nodes, a shared node comes back when its last
    job ends, and power comes back as any job in the region ends."""

    def __init__(self, state: ClusterState, region: RegionState, pool: PoolState) -> None:
        self.state, self.region, self.pool = state, region, pool
        self.idle = pool.idle
        self.busy = region.busy_w
        self._left: dict[int, int] = {}  # shared node -> jobs still on it (copied on first touch)

    def fits(self, need: int, busy_w: float) -> bool:
        return self.idle >= need and self.region.draw_ok(self.busy + busy_w)

    def release(self, job_id: str) -> None:
        run = self.state.running.get(job_id)
        if run is None or run.placement.region != self.region.name:
            return
        pl = run.placement
        self.busy -= pl.busy_w
        if pl.pool != self.pool.spec.name:
            return
        if pl.exclusive:
            self.idle += pl.nodes
        elif pl.node is not None:
            left = self._left.get(pl.node, self.pool.node_jobs.get(pl.node, 1)) - 1
            self._left[pl.node] = left
            if left == 0:
                self.idle += 1


def _plan_preemption(state: ClusterState, job: Job, cands: list[Candidate]) -> list[str] | None:
    """Fewest lower-QOS victims that make room; None if impossible.

    A victim unit is an exclusive job (its nodes) or a whole shared node (every job on it
    must be preemptible). Units with the lowest QOS, then the latest start, go first: they
    lose the least work.
    """
    best: list[str] | None = None
    for region, pool in cands:
        exclusive = pool.exclusive_for(job)
        need = job.nodes if exclusive else 1
        busy = pool.busy_w(job, exclusive)
        idle, region_busy = pool.idle, region.busy_w
        units: list[tuple[tuple[int, float], list[str], int, float]] = []  # (sort key, ids, nodes, busy_w)
        shared: dict[int, list[Running]] = {}
        for run in state.by_pool[(region.name, pool.spec.name)].values():
            if run.placement.exclusive:
                if run.job.id in state.preempting:  # already signalled: counts as freed
                    idle += run.placement.nodes
                    region_busy -= run.placement.busy_w
                elif run.job.qos in PREEMPTIBLE:
                    key = (QOS_RANK[run.job.qos], -run.start_s)
                    units.append((key, [run.job.id], run.placement.nodes, run.placement.busy_w))
            elif run.placement.node is not None:
                shared.setdefault(run.placement.node, []).append(run)
        for runs in shared.values():
            live = [r for r in runs if r.job.id not in state.preempting]
            if not live:
                idle += 1
                region_busy -= sum(r.placement.busy_w for r in runs)
            elif all(r.job.qos in PREEMPTIBLE for r in live):
                key = (max(QOS_RANK[r.job.qos] for r in live), -max(r.start_s for r in live))
                units.append((key, [r.job.id for r in live], 1, sum(r.placement.busy_w for r in runs)))
        victims: list[str] = []
        if not (idle >= need and region.draw_ok(region_busy + busy)):
            chosen: list[tuple[list[str], int, float]] = []
            for _key, ids, nodes, unit_busy in sorted(units, key=lambda u: (u[0], u[1])):
                chosen.append((ids, nodes, unit_busy))
                idle += nodes
                region_busy -= unit_busy
                if idle >= need and region.draw_ok(region_busy + busy):
                    break
            else:
                continue  # even every preemptible job would not make room here
            # A cheap unit taken early may be made needless by a larger one taken later: drop
            # every unit the others make needless, dearest first, so each victim is needed.
            # (The last unit taken is always needed: without it there was not enough room.)
            for unit in reversed(chosen[:-1]):
                _ids, nodes, unit_busy = unit
                if idle - nodes >= need and region.draw_ok(region_busy + unit_busy + busy):
                    chosen.remove(unit)
                    idle -= nodes
                    region_busy += unit_busy
            victims = [v for ids, _nodes, _busy in chosen for v in ids]
        if best is None or len(victims) < len(best):
            best = victims
    return best
