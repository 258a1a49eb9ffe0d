"""Brute-force reference schedulers for the simplest setting, written without the core.

One region, one pool of ``n_nodes`` identical nodes, every job exclusive (whole nodes), no
power cap that binds. Times are integers. Each function walks the event times itself and
recomputes everything from the list of running jobs at every one; nothing is cached.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RefJob:
    id: str
    nodes: int
    walltime: int
    runtime: int
    submit: int


@dataclass
class _Run:
    job: RefJob
    start: int


def _free(n_nodes: int, running: list[_Run]) -> int:
    return n_nodes - sum(r.job.nodes for r in running)


def _start(job: RefJob, now: int, waiting: list[RefJob], running: list[_Run], starts: dict[str, int]) -> None:
    running.append(_Run(job, now))
    starts[job.id] = now
    waiting.remove(job)


def _run(n_nodes: int, jobs: list[RefJob], backfill: bool) -> dict[str, int]:
    unsubmitted = sorted(jobs, key=lambda j: j.submit)  # stable: submission order kept
    waiting: list[RefJob] = []
    running: list[_Run] = []
    starts: dict[str, int] = {}

    while unsubmitted or running:
        now = min([j.submit for j in unsubmitted] + [r.start + r.job.runtime for r in running])
        running = [r for r in running if r.start + r.job.runtime > now]  # completions first
        waiting += [j for j in unsubmitted if j.submit == now]  # then submissions, in order
        unsubmitted = [j for j in unsubmitted if j.submit != now]

        # Start the first queued job while it fits.
        while waiting and waiting[0].nodes <= _free(n_nodes, running):
            _start(waiting[0], now, waiting, running, starts)
        if not waiting or not backfill:
            continue
        # The head does not fit: its shadow time is the first estimated end at which the
        # nodes free now plus those of every job estimated to have ended are enough.
        head = waiting[0]
        shadow, extra = None, 0
        for end in sorted({r.start + r.job.walltime for r in running}):
            avail = _free(n_nodes, running) + sum(
                r.job.nodes for r in running if r.start + r.job.walltime <= end
            )
            if avail >= head.nodes:
                shadow, extra = end, avail - head.nodes
                break
        assert shadow is not None, "every job fits the pool, so the head fits once all have ended"
        for job in list(waiting[1:]):
            if job.nodes > _free(n_nodes, running):
                continue
            if now + job.walltime <= shadow:
                _start(job, now, waiting, running, starts)
            elif job.nodes <= extra:
                _start(job, now, waiting, running, starts)
                extra -= job.nodes
    return starts


def easy_reference(n_nodes: int, jobs: list[RefJob]) -> dict[str, int]:
    """EASY backfilling: the start time of every job."""
    return _run(n_nodes, jobs, backfill=True)


def fcfs_reference(n_nodes: int, jobs: list[RefJob]) -> dict[str, int]:
    """Strict first come, first served: the start time of every job."""
    return _run(n_nodes, jobs, backfill=False)
