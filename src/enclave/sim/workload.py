"""What the simulator replays: jobs with their true run time and their estimate."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields

from enclave.scheduler.model import Job


@dataclass(frozen=True, slots=True, init=False)
class SimJob:
    job: Job  # as the scheduler sees it: walltime_s is the user's estimate
    run_s: float  # what it really takes (capped at the estimate: jobs are killed at their limit)
    deferrable: bool = False  # may wait for low-carbon hours (carbon-aware policies)
    deadline_s: float | None = None  # latest finish for a deferrable job

    def __init__(
        self, job: Job, run_s: float, deferrable: bool = False, deadline_s: float | None = None
    ) -> None:
        # The fields set through their slots' descriptors, not object.__setattr__ (frozen): a
        # workload has up to millions of these.
        s = _SIMJOB_SLOTS
        s[0](self, job)
        s[1](self, run_s)
        s[2](self, deferrable)
        s[3](self, deadline_s)


_SIMJOB_SLOTS = tuple(SimJob.__dict__[f.name].__set__ for f in fields(SimJob))


@dataclass
class Workload:
    jobs: list[SimJob]
    source: str
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count: never a silent drop
    max_procs: int | None = None  # from an SWF header, for the default one-region fleet


@contextmanager
def no_gc() -> Iterator[None]:
    """The cyclic collector paused (if it was on) while a workload's objects are made: it would
    walk the growing heap again and again, and none of them is cyclic garbage."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
