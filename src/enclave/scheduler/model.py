"""What the scheduler knows of jobs: requests, placements and decisions."""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass, field, fields
from enum import StrEnum

from enclave.labels import Label


class QOS(StrEnum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    URGENT = "urgent"  # may preempt LOW and NORMAL jobs


QOS_RANK: dict[QOS, int] = {QOS.LOW: 0, QOS.NORMAL: 1, QOS.HIGH: 2, QOS.URGENT: 3}


class Reason(StrEnum):
    """Why a job is still pending after a pass (shown to users)."""

    PRIORITY = "priority"  # resources exist, but a higher-priority job's reservation holds them
    RESOURCES = "resources"  # not enough free nodes/CPUs/GPUs/memory in any accredited region
    POWER_CAP = "power_cap"  # it fits, but starting it would exceed the region's power cap
    NO_ACCREDITED_REGION = "no_accredited_region"  # no region may run this label
    UNSATISFIABLE = "unsatisfiable"  # no pool of any accredited region can ever hold it
    PREEMPTING = "preempting"  # lower-QOS jobs are being preempted to make room
    RESERVED = "reserved"  # head of the queue: resources reserved for it (EASY)
    DEFERRED = "deferred"  # held back by the policy (a deferrable job waiting for low-carbon power)
    # Only regions whose back end cannot take work now (unhealthy, or no region worker
    # connected) could ever hold it: it waits for one of them to come back.
    REGION_UNAVAILABLE = "region_unavailable"


@dataclass(frozen=True, slots=True)
class PriorityInputs:
    """What a job's priority depends on besides its age (see ``Job.priority_index``)."""

    agency: str
    qos: QOS
    nodes: int


# Every PriorityInputs seen in this process, each once, and its index there. Only ever
# appended to; it grows with the distinct combinations seen (agencies x QOS levels x node
# counts: a few thousand at most).
PRIORITY_INPUTS: list[PriorityInputs] = []
_PRIORITY_INDEX: dict[tuple[str, QOS, int], int] = {}
_PRIORITY_LOCK = threading.Lock()


def priority_index(agency: str, qos: QOS, nodes: int) -> int:
    """The index of (agency, qos, nodes) in PRIORITY_INPUTS, added if new."""
    key = (agency, qos, nodes)
    got = _PRIORITY_INDEX.get(key)
    if got is None:
        with _PRIORITY_LOCK:  # two threads making the first such job get the same index
            got = _PRIORITY_INDEX.get(key)
            if got is None:
                got = _PRIORITY_INDEX[key] = len(PRIORITY_INPUTS)
                PRIORITY_INPUTS.append(PriorityInputs(agency, qos, nodes))
    return got


@dataclass(frozen=True, slots=True, init=False)
class Job:
    """A queued job as the scheduler sees it. Resources are per node; walltime is the limit."""

    # Jobs of one shape fit in the same places. An interned str: its hash is computed once, and
    # the jobs of one shape share one string, so the pass's lookups (one or more per queued
    # job) compare it by identity and touch one hot object instead of 100,000 cold copies.
    # First, so that it shares a cache line with ``id``: a long queue's pass reads both from
    # each job and little else.
    shape: str = field(init=False, repr=False, compare=False)
    id: str
    agency: str
    label: Label
    nodes: int
    cpus: int
    memory_mb: int
    gpus: int
    walltime_s: float
    submit_s: float
    qos: QOS = QOS.NORMAL
    region: str | None = None  # None: any accredited region
    seq: int = 0  # tie-breaker: submission order
    # A deferrable job may be started later than it could be (carbon-aware policies), but no
    # later than its deadline allows: it must *finish* by deadline_s (walltime as the bound).
    deferrable: bool = False
    deadline_s: float | None = None
    # Where the job's agency, QOS and node count are in PRIORITY_INPUTS, shared by the jobs
    # alike in them: a pass of the priority policy reads this one int per job instead of those
    # three fields (three reads of 100,000 objects far apart in memory), and works each factor
    # out once per distinct inputs (scheduler.priority.priorities). Valid in this process only:
    # see __reduce__.
    priority_index: int = field(init=False, repr=False, compare=False)

    def __init__(
        self,
        id: str,
        agency: str,
        label: Label,
        nodes: int,
        cpus: int,
        memory_mb: int,
        gpus: int,
        walltime_s: float,
        submit_s: float,
        qos: QOS = QOS.NORMAL,
        region: str | None = None,
        seq: int = 0,
        deferrable: bool = False,
        deadline_s: float | None = None,
    ) -> None:
        # What the dataclass would generate, but each field set through its slot's descriptor
        # rather than object.__setattr__ (frozen): about twice as fast, and the trace readers
        # and the synthetic generator make up to millions of jobs.
        s = _JOB_SLOTS
        s[0](self, sys.intern(f"{label.marking}|{region}|{nodes}|{cpus}|{memory_mb}|{gpus}"))
        s[1](self, id)
        s[2](self, agency)
        s[3](self, label)
        s[4](self, nodes)
        s[5](self, cpus)
        s[6](self, memory_mb)
        s[7](self, gpus)
        s[8](self, walltime_s)
        s[9](self, submit_s)
        s[10](self, qos)
        s[11](self, region)
        s[12](self, seq)
        s[13](self, deferrable)
        s[14](self, deadline_s)
        index = _PRIORITY_INDEX.get((agency, qos, nodes))  # written out: no call in the common case
        s[15](self, index if index is not None else priority_index(agency, qos, nodes))

    def __reduce__(self) -> tuple[type[Job], tuple[object, ...]]:
        # Pickled or copied, a job is made again by __init__: its priority_index is this
        # process's (and its shape an interned string again).
        return Job, tuple(getattr(self, f.name) for f in fields(self) if f.init)


# The setters of Job's slots, in field order (shape first, priority_index last).
_JOB_SLOTS = tuple(Job.__dict__[f.name].__set__ for f in fields(Job))


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a job runs. Exclusive jobs own whole nodes; shared ones a slice of one node."""

    region: str
    pool: str
    nodes: int
    exclusive: bool
    node: int | None = None  # the shared node's index inside the pool
    busy_w: float = 0.0  # IT power the job adds above its nodes' idle draw


@dataclass(frozen=True, slots=True)
class Running:
    job: Job
    placement: Placement
    start_s: float

    @property
    def end_estimate_s(self) -> float:
        return self.start_s + self.job.walltime_s


_new_object = object.__new__
_set_run_job, _set_run_placement, _set_run_start = (
    Running.__dict__[name].__set__ for name in ("job", "placement", "start_s")
)


def running(job: Job, placement: Placement, start_s: float) -> Running:
    """``Running(job, placement, start_s)``, without the frozen dataclass's ``__init__`` (which
    sets each field through ``object.__setattr__``): the same object in well under half the
    time, and a pass that starts 20,000 jobs makes one per start."""
    run: Running = _new_object(Running)
    _set_run_job(run, job)
    _set_run_placement(run, placement)
    _set_run_start(run, start_s)
    return run


@dataclass(frozen=True, slots=True)
class Reservation:
    job_id: str
    region: str
    pool: str
    start_s: float  # the shadow time: the head job starts no later than this


@dataclass
class PassResult:
    started: list[tuple[Job, Placement]] = field(default_factory=list)
    preempt: list[str] = field(default_factory=list)  # running job ids to preempt (requeue)
    reasons: dict[str, Reason] = field(default_factory=dict)
    reservation: Reservation | None = None
