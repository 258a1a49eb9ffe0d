"""Free capacity and power of a fleet, aggregated by pools of identical nodes.

A pool is a count of idle nodes plus the few nodes that shared (sub-node) jobs use in part,
so a fleet of 100,000 nodes costs a handful of integers, not 100,000 objects. Multi-node
jobs, and jobs asking for a whole node's CPUs or GPUs, take whole idle nodes (gang: all of
them or none). Smaller single-node jobs pack onto partly used nodes, best fit first.

Power: a region draws ``(idle draw of every node + busy_w of every running job) × PUE``;
a job's busy_w is its share of ``peak_w - idle_w`` on each node it holds. The cap check
uses the same formula, so the predicted draw never exceeds the cap.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from sortedcontainers import SortedList

from enclave.fleet import Fleet, NodePool
from enclave.labels import Label
from enclave.policy import may_place
from enclave.scheduler.model import Job, Placement, Running, running

Free = tuple[int, int, int]  # cpus, memory_mb, gpus free on one node
# Where a job of some shape may run, and what that shape implies there (ClusterState.options).
Option = tuple["RegionState", "PoolState", bool, float, Placement | None]


@dataclass
class PoolState:
    spec: NodePool
    idle: int  # nodes with nothing running
    partial: dict[int, Free] = field(default_factory=dict)  # shared nodes in use: free parts
    _by_cpus: dict[int, dict[int, None]] = field(default_factory=dict)  # free CPUs -> nodes
    node_jobs: dict[int, int] = field(default_factory=dict)  # shared node -> jobs on it
    _next_node: int = 0
    _cpus_keys: list[int] = field(default_factory=list, repr=False, compare=False)  # _by_cpus's keys, sorted
    # The jobs running here: the very dict ClusterState.by_pool holds for this pool (set there).
    jobs: dict[str, Running] = field(default_factory=dict, repr=False, compare=False)

    def _set_partial(self, node: int, free: Free | None) -> None:
        old = self.partial.pop(node, None)
        if old is not None:
            nodes = self._by_cpus[old[0]]
            del nodes[node]
            if not nodes:
                del self._by_cpus[old[0]]
                self._cpus_keys.remove(old[0])
        if free is not None:
            self.partial[node] = free
            on = self._by_cpus.get(free[0])
            if on is None:
                on = self._by_cpus[free[0]] = {}
                insort(self._cpus_keys, free[0])
            on[node] = None

    @property
    def full(self) -> Free:
        return (self.spec.cpus, self.spec.memory_mb, self.spec.gpus)

    def exclusive_for(self, job: Job) -> bool:
        s = self.spec
        return job.nodes > 1 or job.cpus >= s.cpus or (s.gpus > 0 and job.gpus >= s.gpus)

    def can_ever_hold(self, job: Job) -> bool:
        s = self.spec
        return (
            job.cpus <= s.cpus
            and job.memory_mb <= s.memory_mb
            and job.gpus <= s.gpus
            and job.nodes <= s.count
        )

    def busy_w(self, job: Job, exclusive: bool) -> float:
        s = self.spec
        share = 1.0 if exclusive else max(job.cpus / s.cpus, job.gpus / s.gpus if s.gpus else 0.0)
        return job.nodes * (s.peak_w - s.idle_w) * share

    def find_shared(self, job: Job) -> int | None:
        """Best fit among partly used nodes: the fewest free CPUs that still fit, else None."""
        keys, by_cpus, partial = self._cpus_keys, self._by_cpus, self.partial
        memory_mb, gpus = job.memory_mb, job.gpus
        for i in range(bisect_left(keys, job.cpus), len(keys)):
            for node in by_cpus[keys[i]]:
                _, m, g = partial[node]
                if m >= memory_mb and g >= gpus:
                    return node
        return None

    def fits_now(self, job: Job) -> bool:
        if self.exclusive_for(job):
            return self.idle >= job.nodes
        return self.idle > 0 or self.find_shared(job) is not None


@dataclass
class RegionState:
    name: str
    accreditation: Label
    cap_w: float  # facility power cap
    pue: float
    pools: list[PoolState]
    idle_it_w: float  # every node idle
    busy_w: float = 0.0  # above idle, summed over running jobs

    @property
    def facility_w(self) -> float:
        return (self.idle_it_w + self.busy_w) * self.pue

    def draw_ok(self, busy_w: float) -> bool:
        """Would the region stay within its cap with ``busy_w`` above idle in total?"""
        return (self.idle_it_w + busy_w) * self.pue <= self.cap_w * (1 + 1e-12)  # float slack only

    def power_fits(self, extra_busy_w: float) -> bool:
        return self.draw_ok(self.busy_w + extra_busy_w)

    def pool(self, name: str) -> PoolState:
        for p in self.pools:
            if p.spec.name == name:
                return p
        raise KeyError(name)


class ClusterState:
    """Mutable free-capacity view of a fleet. The driver applies starts and ends to it."""

    def __init__(self, regions: list[RegionState]) -> None:
        self.regions = regions
        self._by_name = {r.name: r for r in regions}
        self.running: dict[str, Running] = {}
        self.by_pool: dict[tuple[str, str], dict[str, Running]] = {}
        for r in regions:
            for p in r.pools:
                p.jobs = self.by_pool[(r.name, p.spec.name)] = {}
        self.preempting: set[str] = set()  # signalled, still in their grace period
        self.version = 0  # bumped on every allocation and release: caches key on it
        # Running jobs of each region by estimated end: the reservation walks them in order
        # and stops as soon as the head job fits, instead of sorting every running job. Starts
        # are added in bulk when the order is next needed (ends_of): a pass that starts 20,000
        # jobs would otherwise insert them into the sorted list one by one.
        self._ends: dict[str, SortedList] = {r.name: SortedList() for r in regions}
        self._new_ends: dict[str, list[tuple[float, str]]] = {r.name: [] for r in regions}
        self._candidates: dict[str, list[tuple[RegionState, PoolState]]] = {}
        self._options: dict[str, tuple[Option, ...]] = {}
        self.reservation_cache: tuple[object, Any] | None = None  # owned by the scheduler core
        # Regions whose back end cannot take work now, as the driver last said (set_unavailable):
        # no job is placed, reserved or preempted for there. Jobs already running there stay.
        self.unavailable: frozenset[str] = frozenset()

    @classmethod
    def from_fleet(cls, fleet: Fleet, power_cap_scale: float = 1.0) -> ClusterState:
        """The fleet idle, its caps times ``power_cap_scale`` — but a scaled cap never below the
        region's idle draw (nodes are not powered off: no schedule could keep under it)."""
        regions = []
        for r in fleet.regions:
            pools = [PoolState(p, p.count) for p in r.pools]
            idle_it_w = sum(p.count * p.idle_w for p in r.pools)
            cap_w = r.power_cap_mw * 1e6
            regions.append(
                RegionState(
                    name=r.name,
                    accreditation=fleet.accreditation(r),
                    cap_w=max(cap_w * power_cap_scale, min(cap_w, idle_it_w * r.pue)),
                    pue=r.pue,
                    pools=pools,
                    idle_it_w=idle_it_w,
                )
            )
        return cls(regions)

    def set_unavailable(self, regions: Iterable[str]) -> bool:
        """Say which regions cannot take new work now (health is the driver's to find out: the
        core does no I/O). Returns whether that changed; a change drops what was cached per shape."""
        down = frozenset(regions)
        if down == self.unavailable:
            return False
        unknown = down - self._by_name.keys()
        if unknown:
            raise KeyError(f"no such regions: {sorted(unknown)}")
        self.unavailable = down
        self._candidates.clear()
        self._options.clear()
        self.version += 1
        return True

    def ends_of(self, region: str) -> SortedList:
        """(estimated end, job id) of the jobs running in the region, in that order."""
        ends, new = self._ends[region], self._new_ends[region]
        if new:
            if len(new) < 16:  # update() would sort and merge: worth it for many only
                for end in new:
                    ends.add(end)
            else:
                ends.update(new)
            new.clear()
        return ends

    def region(self, name: str) -> RegionState:
        return self._by_name[name]

    def candidates(self, job: Job) -> list[tuple[RegionState, PoolState]]:
        """Where a job of this shape may ever run, lowest sufficient accreditation first.

        Accredited regions (the job's own, if it named one) that are available now, and pools
        that could ever hold it; the answer is cached per shape until the fleet's availability
        changes (set_unavailable). Preferring the
        lowest accreditation keeps higher regions free for work only they may run.
        """
        cached = self._candidates.get(job.shape)
        if cached is None:
            # Level, then number of compartments: a region that strictly dominates another sorts
            # after it (SECRET before SECRET//SI), whatever the order of the fleet file.
            cached = sorted(
                self._candidates_uncached(job),
                key=lambda rp: (rp[0].accreditation.rank, len(rp[0].accreditation.compartments)),
            )
            self._candidates[job.shape] = cached
        return cached

    def options(self, job: Job) -> tuple[Option, ...]:
        """:meth:`candidates`, each with what the job's shape implies there (cached per shape):
        ``(region, pool, exclusive, busy_w, placement)``, the placement being the one every
        exclusive job of the shape gets in that pool (None for shared jobs: theirs names a node).
        """
        got = self._options.get(job.shape)
        if got is None:
            opts = []
            for region, pool in self.candidates(job):
                exclusive = pool.exclusive_for(job)
                busy = pool.busy_w(job, exclusive)
                placement = (
                    Placement(region.name, pool.spec.name, job.nodes, True, None, busy) if exclusive else None
                )
                opts.append((region, pool, exclusive, busy, placement))
            got = self._options[job.shape] = tuple(opts)
        return got

    def _candidates_uncached(self, job: Job) -> list[tuple[RegionState, PoolState]]:
        return [(r, p) for r, p in self._placeable(job) if r.name not in self.unavailable]

    def _placeable(self, job: Job) -> list[tuple[RegionState, PoolState]]:
        """Where the job could ever run, available now or not."""
        out: list[tuple[RegionState, PoolState]] = []
        for r in self.regions:
            if job.region is not None and r.name != job.region:
                continue
            if not may_place(job.label, r.accreditation):
                continue
            out.extend((r, p) for p in r.pools if p.can_ever_hold(job))
        return out

    def only_unavailable(self, job: Job) -> bool:
        """The job has no candidate now, but would have one if every region were available."""
        return bool(self.unavailable) and bool(self._placeable(job)) and not self.candidates(job)

    def accredited(self, job: Job) -> bool:
        return any(
            may_place(job.label, r.accreditation) and (job.region is None or r.name == job.region)
            for r in self.regions
        )

    # -- applying decisions ---------------------------------------------------------------
    def allocate(self, job: Job, region: RegionState, pool: PoolState) -> Placement:
        """Take the job's resources in ``pool``; the caller has checked fit and power."""
        exclusive = pool.exclusive_for(job)
        busy = pool.busy_w(job, exclusive)
        node = None
        if exclusive:
            if pool.idle < job.nodes:
                raise ValueError(
                    f"pool {pool.spec.name} has {pool.idle} idle nodes, job {job.id} needs {job.nodes}"
                )
            pool.idle -= job.nodes
        else:
            node = pool.find_shared(job)
            if node is None:
                if pool.idle < 1:
                    raise ValueError(f"pool {pool.spec.name} cannot hold job {job.id}")
                pool.idle -= 1
                node = pool._next_node
                pool._next_node += 1
                pool._set_partial(node, pool.full)
            c, m, g = pool.partial[node]
            pool._set_partial(node, (c - job.cpus, m - job.memory_mb, g - job.gpus))
        region.busy_w += busy
        self.version += 1
        return Placement(region.name, pool.spec.name, job.nodes, exclusive, node, busy)

    def take(
        self,
        job: Job,
        region: RegionState,
        pool: PoolState,
        exclusive: bool,
        busy: float,
        node: int | None,
        placement: Placement | None,
        now: float,
    ) -> Placement:
        """:meth:`allocate` then :meth:`start` in one step, for an option of :meth:`options`
        that the caller has checked: fit, power, and for a shared job ``node`` =
        ``pool.find_shared(job)`` (None: an idle node). The same state as the two steps."""
        if exclusive:
            pool.idle -= job.nodes
            if placement is None:
                placement = Placement(region.name, pool.spec.name, job.nodes, True, None, busy)
        else:
            if node is None:
                pool.idle -= 1
                node = pool._next_node
                pool._next_node += 1
                c, m, g = pool.spec.cpus, pool.spec.memory_mb, pool.spec.gpus
            else:
                c, m, g = pool.partial[node]
            pool._set_partial(node, (c - job.cpus, m - job.memory_mb, g - job.gpus))
            pool.node_jobs[node] = pool.node_jobs.get(node, 0) + 1
            placement = Placement(region.name, pool.spec.name, job.nodes, False, node, busy)
        region.busy_w += busy
        self.version += 1
        run = running(job, placement, now)
        self.running[job.id] = run
        pool.jobs[job.id] = run
        self._new_ends[region.name].append((now + job.walltime_s, job.id))
        return placement

    def start(self, job: Job, placement: Placement, now: float) -> None:
        run = Running(job, placement, now)
        self.running[job.id] = run
        self.by_pool[(placement.region, placement.pool)][job.id] = run
        self._new_ends[placement.region].append((run.end_estimate_s, job.id))
        if placement.node is not None:
            pool = self.region(placement.region).pool(placement.pool)
            pool.node_jobs[placement.node] = pool.node_jobs.get(placement.node, 0) + 1

    def place(self, job: Job, placement: Placement, now: float) -> None:
        """Re-apply a known placement (restart reconciliation, or the simulator replaying)."""
        region = self.region(placement.region)
        pool = region.pool(placement.pool)
        if placement.exclusive:
            pool.idle -= placement.nodes
        else:
            node = placement.node if placement.node is not None else pool._next_node
            pool._next_node = max(pool._next_node, node + 1)
            if node not in pool.partial:
                pool.idle -= 1
                pool._set_partial(node, pool.full)
            c, m, g = pool.partial[node]
            pool._set_partial(node, (c - job.cpus, m - job.memory_mb, g - job.gpus))
            placement = replace(placement, node=node)  # release must find the node again
        region.busy_w += placement.busy_w
        self.version += 1
        self.start(job, placement, now)

    def release(self, job_id: str) -> Running | None:
        """Give back a finished (or preempted, cancelled) job's resources."""
        run = self.running.pop(job_id, None)
        if run is None:
            return None
        self.preempting.discard(job_id)
        pl, job = run.placement, run.job
        region = self._by_name[pl.region]
        pool = region.pool(pl.pool)
        del pool.jobs[job_id]
        self.ends_of(pl.region).remove((run.end_estimate_s, job_id))
        if pl.exclusive:
            pool.idle += pl.nodes
        elif pl.node is not None:
            c, m, g = pool.partial[pl.node]
            free = (c + job.cpus, m + job.memory_mb, g + job.gpus)
            if free == pool.full:
                pool._set_partial(pl.node, None)
                pool.idle += 1
            else:
                pool._set_partial(pl.node, free)
            left = pool.node_jobs.pop(pl.node) - 1
            if left:
                pool.node_jobs[pl.node] = left
        region.busy_w = max(0.0, region.busy_w - pl.busy_w)
        if not any(p.jobs for p in region.pools):
            # Nothing runs in the region: drop the rounding residue of adding and subtracting
            # fractional shares, which would otherwise accumulate over a long run.
            region.busy_w = 0.0
        self.version += 1
        return run

    def release_many(self, job_ids: Iterable[str]) -> None:
        for job_id in job_ids:
            self.release(job_id)

    def facility_w(self) -> dict[str, float]:
        return {r.name: r.facility_w for r in self.regions}
