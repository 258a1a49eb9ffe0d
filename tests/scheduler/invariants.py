"""Checks of a ClusterState and a PassResult, written from the documented rules, not the code.

* A job takes whole idle nodes (all of them or none, in one pool) when it spans several nodes
  or asks for a whole node's CPUs or GPUs; otherwise it takes a slice of one node.
* A job's busy power is ``peak_w - idle_w`` per node it holds, times its share of the node
  (``max`` of its CPU and GPU fractions) when it holds a slice; a region draws
  ``(idle draw of every node + busy power of its jobs) × PUE`` and never more than its cap.
* A job may run only in a region whose accreditation dominates its label (and only in the
  region it named, if it named one).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from enclave.fleet import NodePool
from enclave.scheduler.capacity import ClusterState, PoolState, RegionState
from enclave.scheduler.model import Job, PassResult, Reason

CAP_EPS = 1e-9  # relative: float rounding only


def takes_whole_nodes(spec: NodePool, job: Job) -> bool:
    return job.nodes > 1 or job.cpus >= spec.cpus or (spec.gpus > 0 and job.gpus >= spec.gpus)


def could_ever_hold(spec: NodePool, job: Job) -> bool:
    return (
        job.nodes <= spec.count
        and job.cpus <= spec.cpus
        and job.memory_mb <= spec.memory_mb
        and job.gpus <= spec.gpus
    )


def fits_resources_now(pool: PoolState, job: Job) -> bool:
    if not could_ever_hold(pool.spec, job):
        return False
    if takes_whole_nodes(pool.spec, job):
        return pool.idle >= job.nodes
    if pool.idle > 0:
        return True
    return any(c >= job.cpus and m >= job.memory_mb and g >= job.gpus for c, m, g in pool.partial.values())


def expected_busy_w(spec: NodePool, job: Job) -> float:
    span = spec.peak_w - spec.idle_w
    if takes_whole_nodes(spec, job):
        return job.nodes * span
    share = max(job.cpus / spec.cpus, job.gpus / spec.gpus if spec.gpus else 0.0)
    return span * share


def accredited_regions(state: ClusterState, job: Job) -> list[RegionState]:
    return [
        r
        for r in state.regions
        if (job.region is None or r.name == job.region) and r.accreditation.dominates(job.label)
    ]


def idle_draw_w(region: RegionState) -> float:
    return sum(p.spec.count * p.spec.idle_w for p in region.pools)


def check_power(state: ClusterState) -> None:
    """Every region within its cap, its busy power the sum of its running jobs' busy power."""
    busy = {r.name: 0.0 for r in state.regions}
    for run in state.running.values():
        pl = run.placement
        spec = state.region(pl.region).pool(pl.pool).spec
        want = expected_busy_w(spec, run.job)
        assert abs(pl.busy_w - want) <= 1e-9 * max(1.0, want), (run.job.id, pl.busy_w, want)
        busy[pl.region] += want
    for r in state.regions:
        assert abs(r.busy_w - busy[r.name]) <= 1e-9 * max(1.0, busy[r.name]), (r.name, r.busy_w, busy[r.name])
        draw_w = (idle_draw_w(r) + busy[r.name]) * r.pue
        assert draw_w <= r.cap_w * (1 + CAP_EPS), f"region {r.name} draws {draw_w} W over its cap {r.cap_w} W"
        assert r.facility_w <= r.cap_w * (1 + CAP_EPS)


def check_pools(state: ClusterState) -> None:
    """Node conservation in every pool: idle + partly used + held whole = count, nothing negative."""
    for r in state.regions:
        for pool in r.pools:
            spec = pool.spec
            runs = list(state.by_pool[(r.name, spec.name)].values())
            whole = sum(run.placement.nodes for run in runs if run.placement.exclusive)
            assert 0 <= pool.idle <= spec.count, (r.name, spec.name, pool.idle)
            assert pool.idle + len(pool.partial) + whole == spec.count, (r.name, spec.name)
            used: dict[int, list[Job]] = {}
            for run in runs:
                if not run.placement.exclusive:
                    assert run.placement.node is not None
                    used.setdefault(run.placement.node, []).append(run.job)
            assert set(used) == set(pool.partial), "a partly used node is exactly one with shared jobs"
            for node, jobs in used.items():
                free = (
                    spec.cpus - sum(j.cpus for j in jobs),
                    spec.memory_mb - sum(j.memory_mb for j in jobs),
                    spec.gpus - sum(j.gpus for j in jobs),
                )
                assert pool.partial[node] == free, (r.name, spec.name, node)
                assert min(free) >= 0
    for job_id, run in state.running.items():
        assert run.job.id == job_id
        assert state.by_pool[(run.placement.region, run.placement.pool)][job_id] is run
    assert sum(len(d) for d in state.by_pool.values()) == len(state.running)


def check_started(state: ClusterState, result: PassResult) -> None:
    """Gang, shape and label rules for every job the pass started."""
    for job, pl in result.started:
        region = state.region(pl.region)
        spec = region.pool(pl.pool).spec
        assert region.accreditation.dominates(job.label), (job.id, job.label, region.name)
        assert job.region is None or pl.region == job.region
        assert could_ever_hold(spec, job)
        assert pl.nodes == job.nodes
        assert pl.exclusive == takes_whole_nodes(spec, job), job.id
        if job.nodes > 1:
            assert pl.exclusive and pl.node is None
        if not pl.exclusive:
            assert pl.node is not None
        assert state.running[job.id].placement == pl


def check_reasons(state: ClusterState, queue: Iterable[Job], result: PassResult) -> None:
    """Every pending job has a reason, and the reason is true at the end of the pass.

    Resources only shrink during a pass, so a job that fits somewhere at the end of the pass
    also fitted when the pass looked at it: it may not say RESOURCES.
    """
    started = {j.id for j, _ in result.started}
    pending = [j for j in queue if j.id not in started]
    assert set(result.reasons) == {j.id for j in pending}
    for job in pending:
        reason = result.reasons[job.id]
        regions = accredited_regions(state, job)
        cands = [(r, p) for r in regions for p in r.pools if could_ever_hold(p.spec, job)]
        if not regions:
            assert reason is Reason.NO_ACCREDITED_REGION, (job.id, reason)
            continue
        if not cands:
            assert reason is Reason.UNSATISFIABLE, (job.id, reason)
            continue
        assert reason not in (Reason.NO_ACCREDITED_REGION, Reason.UNSATISFIABLE), (job.id, reason)
        if reason is Reason.RESOURCES:
            fitting = [(r.name, p.spec.name) for r, p in cands if fits_resources_now(p, job)]
            assert not fitting, f"{job.id} says RESOURCES but fits {fitting} (power cap?)"


def snapshot(state: ClusterState) -> Any:
    """Everything the state holds, for exact comparison."""
    return (
        [
            (
                r.name,
                r.busy_w,
                r.idle_it_w,
                [
                    (
                        p.spec.name,
                        p.idle,
                        dict(p.partial),
                        dict(p.node_jobs),
                        {k: dict(v) for k, v in p._by_cpus.items()},
                    )
                    for p in r.pools
                ],
            )
            for r in state.regions
        ],
        dict(state.running),
        {k: dict(v) for k, v in state.by_pool.items()},
        set(state.preempting),
    )
