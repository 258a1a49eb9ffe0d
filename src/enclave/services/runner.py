"""The live loop: admission, scheduling passes, executors, walltime, cancellation, energy.

One thread per control-plane process drives the pure scheduler core with the wall clock,
exactly as the simulator drives it with a simulated one. Durability rules:

* a job is marked ``running`` (with its placement) in a committed transaction *before* its
  process starts, so a crash can never leave an untracked process that a restart would
  start a second time; a restart finds such a job without a process and requeues it;
* completion, failure, timeout, cancellation and preemption are each one audited
  transition, committed before the sandbox is cleaned up;
* on start-up every ``running`` job is reconciled with its executor (still running, ended
  while we were down — the local wrapper leaves its exit status on disk — or lost).

Regions whose back end cannot take work now (unhealthy, or no region worker connected; see
:mod:`enclave.services.region_health`) get no new work: the core is told so before each pass.

A *handed-over* job — one given to a region worker (an executor with ``hands_over``) — is not
running until the worker says its engine runs it. Until then it stays ``admitted``, with its
region, placement and dispatch handle recorded (durable: a restart finds it handed over) and
the reason ``handed to the region worker of R; waiting for it to start the job``; its walltime
starts with the start the worker reports. When the worker reports it running it becomes
``running`` (``started_at`` then). A handover no worker takes is given up by the dispatch
executor once no worker of the region has been connected for WORKER_TIMEOUT_S (the job is
requeued as lost, and failed after MAX_ATTEMPTS), so it never waits on a region that is gone.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, update

from enclave.energy import measure
from enclave.energy.model import EnergySource, Usage, account, modelled_it_joules
from enclave.errors import EnclaveError, InvalidInput, Unavailable
from enclave.executors.base import NOT_ENDED, ExecSpec, Executor, Handle, RunState, Status
from enclave.scheduler.capacity import ClusterState
from enclave.scheduler.core import schedule
from enclave.scheduler.model import QOS, Job, Placement
from enclave.scheduler.policies import MultifactorEASY, Policy, make_policy, power_cap_scale, queue_order
from enclave.scheduler.priority import billing_units
from enclave.services import artifacts, endpoints, training
from enclave.services.context import Context
from enclave.services.jobs import TERMINAL as TERMINAL_STATES
from enclave.services.jobs import DependencyType, JobState, label_key, transition
from enclave.services.region_health import RegionHealth
from enclave.services.regions import executor_for
from enclave.services.unit import Unit, unit
from enclave.store.models import Agency
from enclave.store.models import Job as JobRow

log = logging.getLogger("enclave.runner")

CANCEL_GRACE_S = 10.0  # SIGTERM, then SIGKILL this much later
TICK_BUSY_S = 0.01
# A running job is polled at an interval that grows with its age (1/POLL_AGE_DIVISOR of it,
# between TICK_BUSY_S and POLL_MAX_S): a short job's end is seen within 10 ms, a replica that
# has served for an hour costs four polls a second, not a hundred.
POLL_AGE_DIVISOR = 20.0
POLL_MAX_S = 0.25
POLL_QUEUED_S = 0.05  # a job waiting in its engine's queue
TICK_IDLE_S = 0.5
RESCHEDULE_S = TICK_IDLE_S  # an unchanged queue is re-planned (and pending jobs polled) this often
MAX_ATTEMPTS = 5  # requeues after loss before a job is failed
HANDED_OVER = "handed to the region worker of {region}; waiting for it to start the job"


# Job kinds other than plain batch jobs: what they stage before a start (the real command and
# environment) and what they take from their work folder once the job has ended.
@dataclass(frozen=True)
class JobKind:
    prepare: Callable[[Context, JobRow], training.Launch]  # stage inputs: the real command
    finished: Callable[[Context, JobRow], None]  # take outputs once the job has ended for good


KINDS = {
    "train": JobKind(training.prepare, training.finished),
    "replica": JobKind(endpoints.prepare, endpoints.finished),
}
ADMIT_BATCH = 5000
LOAD_CHUNK = 1000  # rows per IN (...) query


@dataclass
class Live:
    job: Job
    row_seq: int
    handle: Handle | None
    executor: Executor
    started_s: float
    term_sent_s: float | None = None
    ending: JobState | None = None  # why we are stopping it
    energy_j: float = 0.0
    measured: bool = False
    next_poll_s: float = 0.0
    handed_over: bool = False  # given to a region worker, which has not reported it running yet


@dataclass
class RunnerStats:
    passes: int = 0
    started: int = 0
    finished: int = 0
    last_pass_ms: float = 0.0
    reasons: dict[str, str] = field(default_factory=dict)


class JobRunner:
    def __init__(
        self,
        ctx: Context,
        policy: Policy | None = None,
        clock: Callable[[], float] = time.time,
        grace_s: float = CANCEL_GRACE_S,
    ) -> None:
        self.ctx = ctx
        self.policy = policy or make_policy()
        self.clock = clock
        self.grace_s = grace_s
        scheduled = ctx.fleet.model_copy(update={"regions": [r.as_scheduled() for r in ctx.fleet.regions]})
        self.cluster = ClusterState.from_fleet(scheduled, power_cap_scale(self.policy))
        self.executors = {r.name: executor_for(ctx, r) for r in ctx.fleet.regions}
        self.health = RegionHealth(self.executors)
        self.live: dict[str, Live] = {}
        self.queue: dict[str, tuple[int, Job]] = {}  # admitted: id -> (seq, job)
        self._queue_list: list[Job] | None = None
        self.reasons: dict[str, str] = {}
        self.stats = RunnerStats()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rapl = measure.rapl_zones()
        self._rapl_last = measure.read_uj(self._rapl) if self._rapl else None
        self._check_cancels = True
        self._last_cancel_check_s = float("-inf")
        self._last_pass_s = float("-inf")
        self._last_admit_s = float("-inf")
        self._admit_due = True
        self._placements: dict[str, Placement] = {}
        self._agency_names: dict[int, str] = {}

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        self.reconcile()
        training.recover(self.ctx)
        self.health.start()
        self._thread = threading.Thread(target=self._run, name="enclave-runner", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.ctx.notify_jobs()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.health.stop()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.tick()
            except Exception:  # the loop must survive a bad tick; the error is logged
                log.exception("scheduler tick failed")
                busy = False
            woke = self.ctx.jobs_changed.wait(self._pause(busy))
            if woke:
                self.ctx.jobs_changed.clear()
                self._check_cancels = True
                self._admit_due = True

    def _pause(self, busy: bool) -> float:
        """Until the next poll falls due (walltime checks included), at most TICK_IDLE_S."""
        if busy:
            return TICK_BUSY_S
        if not self.live:
            return TICK_IDLE_S
        now = self.clock()
        due = min(
            min(lv.next_poll_s, lv.started_s + lv.job.walltime_s) if lv.term_sent_s is None else now
            for lv in self.live.values()
        )
        return min(TICK_IDLE_S, max(TICK_BUSY_S, due - now))

    # -- restart reconciliation ------------------------------------------------------------
    def reconcile(self) -> None:
        """Rebuild the in-memory view from the store after a (re)start."""
        now = self.clock()
        with unit(self.ctx) as u:
            rows = u.session.execute(
                select(JobRow)
                .where(JobRow.state.in_([JobState.RUNNING, JobState.ADMITTED]))
                .order_by(JobRow.seq)
            ).scalars()
            for row in rows:
                job = self._core_job(u, row)
                placement = Placement(**row.placement) if row.placement else None
                # Admitted with a placement: handed to a region worker before the stop.
                handed_over = (
                    row.state == JobState.ADMITTED
                    and placement is not None
                    and _hands_over(self.executors.get(placement.region))
                )
                if row.state == JobState.ADMITTED and not handed_over:
                    self.queue[row.id] = (row.seq, job)
                    continue
                if placement is not None and row.handle is None and not handed_over:
                    # Stopped between starting the process and recording its handle: adopt
                    # what was started rather than run the job a second time.
                    recover = getattr(self.executors.get(placement.region), "recover", None)
                    if recover is not None and row.started_at is not None:
                        since = row.started_at.replace(tzinfo=row.started_at.tzinfo or UTC).timestamp()
                        try:
                            row.handle = recover(row.id, label_key(row.label), since)
                        except EnclaveError as exc:  # the engine cannot tell now: start again
                            log.warning("job %s: could not look for its started process: %s", row.id, exc)
                if placement is None or row.handle is None:
                    self._requeue(
                        u, row, "lost: the control plane stopped before the job's process started", now
                    )
                    continue
                self.cluster.place(job, placement, row.started_at.timestamp() if row.started_at else now)
                self._placements[row.id] = placement
                self.live[row.id] = Live(
                    job,
                    row.seq,
                    row.handle,
                    self.executors[placement.region],
                    row.started_at.timestamp() if row.started_at else now,
                    handed_over=handed_over,
                )
        self._queue_list = None

    # -- one tick --------------------------------------------------------------------------
    def tick(self) -> bool:
        """Poll, enforce limits, admit, schedule. Returns True when something happened."""
        now = self.clock()
        self._sample_energy()
        finished: list[tuple[Live, Status]] = []
        begun: list[Live] = []
        for live in list(self.live.values()):
            if live.handle is None or (now < live.next_poll_s and live.term_sent_s is None):
                continue
            status = live.executor.poll(live.handle)
            if live.handed_over and status.state is RunState.RUNNING:
                begun.append(live)
            if status.state in NOT_ENDED:
                if status.state is RunState.QUEUED and live.term_sent_s is None:
                    # Waiting in the engine's own queue: walltime and wall time count from
                    # the engine's start, which is within one poll (POLL_QUEUED_S) of now.
                    live.started_s = now
                    live.next_poll_s = now + POLL_QUEUED_S
                else:
                    age = now - live.started_s
                    live.next_poll_s = now + min(POLL_MAX_S, max(TICK_BUSY_S, age / POLL_AGE_DIVISOR))
                self._enforce(live, now)
            else:
                finished.append((live, status))
        if begun:
            self._begun(begun, now)
        if finished:
            self._finish(finished, now)
        # Cancellations asked through this process wake the loop; those asked through another
        # control-plane replica are found at the idle cadence.
        if self._check_cancels or now - self._last_cancel_check_s >= RESCHEDULE_S:
            self._check_cancels = False
            self._last_cancel_check_s = now
            self._cancel_requested(now)
        # Pending jobs appear on a submission in this process (which wakes the loop), when a
        # job ends (dependencies, requeues) or through another process sharing the store:
        # poll for those at the idle cadence, not on every 10 ms poll of running jobs.
        admitted = 0
        if (
            finished
            or self._admit_due
            or self.ctx.jobs_changed.is_set()
            or now - self._last_admit_s >= RESCHEDULE_S
        ):
            self._last_admit_s = now
            admitted = self._admit(now)
            self._admit_due = admitted > 0  # a full batch (ADMIT_BATCH) may have left more
        # A pass decides the same as the last one unless the queue or the free capacity
        # changed; only the clock moves priorities (age, fair-share decay) meanwhile, so an
        # unchanged queue is re-planned at the idle cadence, not on every 10 ms poll.
        started = 0
        if self.cluster.set_unavailable(self.health.down()):
            self._queue_list = None  # what may start where has changed: plan again now
        if finished or self._queue_list is None or now - self._last_pass_s >= RESCHEDULE_S:
            self._last_pass_s = now
            started = self._schedule(now)
        return bool(finished or admitted or started)

    def _begun(self, begun: list[Live], now: float) -> None:
        """Handed-over jobs their region worker now reports running: ``running`` from now."""
        when = datetime.fromtimestamp(now, UTC)
        with unit(self.ctx) as u, u.session.no_autoflush:  # see _no_autoflush_note
            rows = self._load_rows(u, [live.row_seq for live in begun])
            for live in begun:
                live.handed_over = False
                live.started_s = now
                row = rows.get(live.row_seq)
                if row is not None and row.state == JobState.ADMITTED:
                    transition(u, row, JobState.RUNNING, None, when)

    def _enforce(self, live: Live, now: float) -> None:
        if live.term_sent_s is None and now >= live.started_s + live.job.walltime_s:
            live.ending = JobState.TIMEOUT
            self._signal(live, now)
        elif live.term_sent_s is not None and now - live.term_sent_s >= self.grace_s and live.handle:
            live.executor.kill(live.handle)

    def _signal(self, live: Live, now: float) -> None:
        if live.handle is not None:
            live.executor.cancel(live.handle, self.grace_s)
        live.term_sent_s = now

    # -- endings ---------------------------------------------------------------------------
    def _finish(self, finished: list[tuple[Live, Status]], now: float) -> None:
        when = datetime.fromtimestamp(now, UTC)
        done: list[tuple[Live, JobRow]] = []
        with unit(self.ctx) as u, u.session.no_autoflush:  # see _no_autoflush_note
            rows = self._load_rows(u, [live.row_seq for live, _status in finished])
            for live, status in finished:
                row = rows.get(live.row_seq) or self._row(u, live.row_seq)
                self.cluster.release(live.job.id)
                del self.live[live.job.id]
                wall_s = max(0.0, now - live.started_s)
                if status.state is RunState.LOST:
                    self._requeue(u, row, status.detail or "lost: the executor no longer knows this job", now)
                    continue
                if row.state == JobState.ADMITTED:  # handed over, not reported running
                    if live.ending is JobState.PREEMPTED:  # it never ran: nothing was lost
                        why = "requeued: preempted before its region worker started it"
                        transition(
                            u, row, JobState.PENDING, why, when, handle=None, placement=None, region=None
                        )
                        done.append((live, row))  # its (empty) output and record are cleared
                        continue
                    if live.ending is not JobState.CANCELLED:
                        # It ran and ended between two polls: it did run, however briefly.
                        transition(u, row, JobState.RUNNING, None, when)
                energy = self._energy(live, status, wall_s)
                fields: dict[str, Any] = {
                    "exit_code": status.exit_code,
                    "cpu_s": status.cpu_s,
                    "energy_kwh": energy.kwh,
                    "kgco2e": energy.kgco2e,
                    "cost": energy.cost,
                    "energy_source": str(energy.source),
                }
                if live.ending is JobState.PREEMPTED:
                    transition(u, row, JobState.PREEMPTED, "preempted by an urgent job", when, **fields)
                    row.attempts += 1
                    transition(
                        u,
                        row,
                        JobState.PENDING,
                        "requeued after preemption",
                        when,
                        handle=None,
                        placement=None,
                        region=None,
                    )
                elif live.ending is not None:
                    reason = (
                        "cancelled by request" if live.ending is JobState.CANCELLED else "walltime exceeded"
                    )
                    transition(u, row, live.ending, reason, when, **fields)
                elif status.exit_code == 0:
                    transition(u, row, JobState.COMPLETED, None, when, **fields)
                else:
                    why = (
                        f"killed by signal {status.signal}"
                        if status.signal
                        else f"exit code {status.exit_code}"
                    )
                    transition(u, row, JobState.FAILED, why, when, **fields)
                if isinstance(self.policy, MultifactorEASY):
                    self.policy.fairshare.charge(live.job.agency, billing_units(live.job, wall_s), now)
                done.append((live, row))
        self.stats.finished += len(done)
        self._collect_logs(done)

    def _energy(self, live: Live, status: Status, wall_s: float) -> Any:
        region = self.ctx.fleet.region(self.cluster_region(live))
        placement = self.cluster_placement(live)
        pool = next(p for p in region.pools if p.name == placement.pool)
        if status.energy_j is not None:
            return account(region, status.energy_j, EnergySource.MEASURED)
        if live.measured:
            return account(region, live.energy_j, EnergySource.MEASURED)
        cpu_s = status.cpu_s if status.cpu_s is not None else wall_s * live.job.cpus * live.job.nodes
        use = Usage(live.job.nodes, live.job.cpus, live.job.gpus, wall_s, cpu_s)
        return account(region, modelled_it_joules(pool, use), EnergySource.MODELLED)

    def cluster_region(self, live: Live) -> str:
        return self.cluster_placement(live).region

    def cluster_placement(self, live: Live) -> Placement:
        return self._placements[live.job.id]

    def _collect_logs(self, done: list[tuple[Live, JobRow]]) -> None:
        """Encrypt non-empty stdout/stderr as labelled log artifacts, then drop the sandbox."""
        for live, row in done:
            if live.handle is None:
                continue
            ids: dict[str, str] = {}
            try:
                for stream, path in live.executor.log_paths(live.handle).items():
                    art = artifacts.store_system_file(
                        self.ctx,
                        path,
                        name=f"{row.name}.{stream}",
                        kind="job-log",
                        label=row.label,
                        agency_id=row.agency_id,
                        owner_id=row.owner_id,
                        meta={"job": row.id, "stream": stream},
                    )
                    if art is not None:
                        ids[stream] = art
                if ids:
                    with unit(self.ctx) as u:
                        u.session.execute(
                            update(JobRow).where(JobRow.seq == row.seq).values(log_artifacts=ids)
                        )
                live.executor.cleanup(live.handle)
            except (OSError, EnclaveError):
                log.exception("could not keep the logs of job %s; its sandbox stays for inspection", row.id)
            self._placements.pop(row.id, None)
            self._kind_finished(row)

    def _kind_finished(self, row: JobRow) -> None:
        """Let a job's kind take its outputs once the job has ended for good."""
        if row.kind in KINDS and row.state in TERMINAL_STATES:
            try:
                KINDS[row.kind].finished(self.ctx, row)
            except Exception:  # one job's outputs must not stop the loop; recovered at next start
                log.exception("could not finish %s job %s; it is retried at the next start", row.kind, row.id)

    # -- cancellation ------------------------------------------------------------------------
    def _cancel_requested(self, now: float) -> None:
        when = datetime.fromtimestamp(now, UTC)
        ended: list[JobRow] = []
        stopping: list[Live] = []
        with unit(self.ctx) as u, u.session.no_autoflush:  # see _no_autoflush_note
            rows = u.session.execute(
                select(JobRow).where(
                    JobRow.cancel_requested.is_(True),
                    JobRow.state.in_([JobState.PENDING, JobState.ADMITTED, JobState.RUNNING]),
                )
            ).scalars()
            for row in rows:
                if row.state == JobState.RUNNING or row.id in self.live:  # started or handed over
                    live = self.live.get(row.id)
                    if live is not None and live.ending is None:
                        live.ending = JobState.CANCELLED
                        stopping.append(live)
                    continue
                self.queue.pop(row.id, None)
                self._queue_list = None
                transition(u, row, JobState.CANCELLED, "cancelled by request", when)
                ended.append(row)
        # Signalled after the commit: an executor may write to the store itself (a region
        # worker's mailbox), which must not wait on this transaction's lock.
        for live in stopping:
            self._signal(live, now)
        for row in ended:
            self._kind_finished(row)

    # -- admission ---------------------------------------------------------------------------
    def _admit(self, now: float) -> int:
        when = datetime.fromtimestamp(now, UTC)
        admitted = 0
        with unit(self.ctx) as u, u.session.no_autoflush:  # see _no_autoflush_note
            rows = list(
                u.session.execute(
                    select(JobRow)
                    .where(JobRow.state == JobState.PENDING, JobRow.cancel_requested.is_(False))
                    .order_by(JobRow.seq)
                    .limit(ADMIT_BATCH)
                ).scalars()
            )
            if not rows:
                return 0
            dep_ids = {d["job"] for r in rows for d in r.depends_on}
            dep_state: dict[str, str] = {}
            if dep_ids:
                found = u.session.execute(select(JobRow.id, JobRow.state).where(JobRow.id.in_(dep_ids)))
                dep_state = {job_id: state for job_id, state in found}
            quota = _QuotaBook(u)
            for row in rows:
                verdict = _dependencies(row, dep_state)
                if verdict == "wait":
                    self._set_reason(
                        row, "dependency: waiting for " + ", ".join(d["job"] for d in row.depends_on)
                    )
                    continue
                if verdict == "never":
                    transition(u, row, JobState.CANCELLED, "dependency can never be satisfied", when)
                    continue
                over = quota.check(row)
                if over:
                    self._set_reason(row, over)
                    continue
                # A placement left from an earlier attempt would read as a handover on restart.
                stale = {"placement": None, "region": None, "handle": None} if row.placement else {}
                transition(u, row, JobState.ADMITTED, None, when, **stale)
                self.queue[row.id] = (row.seq, self._core_job(u, row))
                self._queue_list = None
                admitted += 1
        return admitted

    def _set_reason(self, row: JobRow, reason: str) -> None:
        if row.reason != reason:
            row.reason = reason

    # -- scheduling --------------------------------------------------------------------------
    def _schedule(self, now: float) -> int:
        if not self.queue:
            return 0
        if self._queue_list is None:
            self._queue_list = sorted((job for _seq, job in self.queue.values()), key=queue_order)
        t0 = time.perf_counter()
        result = schedule(self.cluster, self._queue_list, now, self.policy)
        self.stats.last_pass_ms = (time.perf_counter() - t0) * 1000
        self.stats.passes += 1
        when = datetime.fromtimestamp(now, UTC)
        for victim in result.preempt:
            live = self.live.get(victim)
            if live is not None and live.ending is None:
                live.ending = JobState.PREEMPTED
                self._signal(live, now)
        changed = {jid: str(r) for jid, r in result.reasons.items() if self.reasons.get(jid) != str(r)}
        if not result.started and not changed:
            return 0
        starting: list[tuple[Job, Placement, JobRow]] = []
        with unit(self.ctx) as u:
            rows = self._load_rows(
                u, [self.queue[job.id][0] for job, _placement in result.started], lock=True
            )
            with u.session.no_autoflush:  # see _no_autoflush_note
                for job, placement in result.started:
                    seq, core = self.queue.pop(job.id)
                    row = rows.get(seq)
                    if row is None or row.state != JobState.ADMITTED:
                        # Busy in another transaction (try again next pass), or moved on by
                        # another control-plane replica — a leader that has not yet seen it
                        # lost its lock: never start a job twice.
                        self.cluster.release(job.id)
                        if row is None:
                            self.queue[job.id] = (seq, core)
                        continue
                    if _hands_over(self.executors[placement.region]):
                        # Not running until its region worker says so (module docstring).
                        row.region, row.placement = placement.region, _placement_dict(placement)
                        row.reason = HANDED_OVER.format(region=placement.region)
                    else:
                        transition(
                            u,
                            row,
                            JobState.RUNNING,
                            None,
                            when,
                            region=placement.region,
                            placement=_placement_dict(placement),
                        )
                    starting.append((job, placement, row))
            if changed:
                seqs = {jid: self.queue[jid][0] for jid in changed if jid in self.queue}
                u.session.execute(
                    update(JobRow), [{"seq": seqs[j], "reason": r} for j, r in changed.items() if j in seqs]
                )
                self.reasons.update(changed)
        if result.started:
            self._queue_list = None
            self._launch(starting, now)
        return len(result.started)

    def _launch(self, starting: list[tuple[Job, Placement, JobRow]], now: float) -> None:
        """Start processes for jobs already committed as running; record their handles."""
        handles: list[dict[str, Any]] = []
        failed: list[tuple[JobRow, str, bool]] = []  # (row, why, worth retrying)
        for job, placement, row in starting:
            executor = self.executors[placement.region]
            self._placements[job.id] = placement
            try:
                command, env, mounts = row.command, row.env, ()
                if row.kind in KINDS and not executor.stages_files:
                    # Their files are staged in the control plane's work folders, which a
                    # region worker's engine cannot see.
                    raise InvalidInput(
                        f"{row.kind} jobs do not run in regions run by a region worker yet; "
                        "choose another region"
                    )
                if row.kind in KINDS:
                    launch = KINDS[row.kind].prepare(self.ctx, row)
                    command, env, mounts = launch.command, {**row.env, **launch.env}, launch.mounts
                spec = ExecSpec(
                    job_id=job.id,
                    label_key=label_key(row.label),
                    command=command,
                    env=env,
                    nodes=row.nodes,
                    cpus_per_node=row.cpus_per_node,
                    memory_mb=row.memory_mb,
                    gpus_per_node=row.gpus_per_node,
                    walltime_s=row.walltime_s,
                    region=placement.region,
                    pool=placement.pool,
                    label=row.label,
                    mounts=mounts,
                    agency=job.agency,
                )
                handle = executor.start(spec)
            except (OSError, EnclaveError) as exc:
                self.cluster.release(job.id)
                self._placements.pop(job.id, None)
                # An engine that is down (Unavailable) may be back soon: requeue (up to
                # MAX_ATTEMPTS); anything else about this job will not change by retrying.
                failed.append((row, f"could not start: {exc}", isinstance(exc, Unavailable)))
                continue
            self.live[job.id] = Live(job, row.seq, handle, executor, now, handed_over=_hands_over(executor))
            handles.append({"seq": row.seq, "handle": handle})
        self.stats.started += len(handles)
        with unit(self.ctx) as u:
            if handles:
                u.session.execute(update(JobRow), handles)
            for row, why, retry in failed:
                current = self._row(u, row.seq)
                if retry:
                    self._requeue(u, current, why, now)
                else:
                    transition(u, current, JobState.FAILED, why, datetime.fromtimestamp(now, UTC))

    # -- helpers -----------------------------------------------------------------------------
    def _requeue(self, u: Unit, row: JobRow, why: str, now: float) -> None:
        when = datetime.fromtimestamp(now, UTC)
        row.attempts += 1
        if row.attempts > MAX_ATTEMPTS:
            transition(u, row, JobState.FAILED, f"{why} (gave up after {MAX_ATTEMPTS} attempts)", when)
        else:
            transition(u, row, JobState.PENDING, why, when, handle=None, placement=None, region=None)

    @staticmethod
    def _row(u: Unit, seq: int) -> JobRow:
        return u.session.get_one(JobRow, seq)

    @staticmethod
    def _load_rows(u: Unit, seqs: list[int], lock: bool = False) -> dict[int, JobRow]:
        """Many rows by seq in a few queries, instead of one SELECT each (``_row``). ``lock``
        takes them FOR UPDATE, skipping rows another transaction holds (PostgreSQL; SQLite's
        BEGIN IMMEDIATE already serialises writers)."""
        rows: dict[int, JobRow] = {}
        for i in range(0, len(seqs), LOAD_CHUNK):
            chunk = select(JobRow).where(JobRow.seq.in_(seqs[i : i + LOAD_CHUNK]))
            if lock:
                chunk = chunk.with_for_update(skip_locked=True)
            rows.update((row.seq, row) for row in u.session.execute(chunk).scalars())
        return rows

    def _core_job(self, u: Unit, row: JobRow) -> Job:
        agency = self._agency_names.get(row.agency_id)
        if agency is None:
            agency = u.session.execute(select(Agency.name).where(Agency.id == row.agency_id)).scalar_one()
            self._agency_names[row.agency_id] = agency
        return Job(
            id=row.id,
            agency=agency,
            label=self.ctx.scheme.parse(row.label),
            nodes=row.nodes,
            cpus=row.cpus_per_node,
            memory_mb=row.memory_mb,
            gpus=row.gpus_per_node,
            walltime_s=float(row.walltime_s),
            submit_s=row.submitted_at.timestamp(),
            qos=QOS(row.qos),
            region=row.region_request,
            seq=row.seq,
        )

    def _sample_energy(self) -> None:
        """Split the package energy read since the last tick over running jobs by CPUs held."""
        if not self._rapl or self._rapl_last is None:
            return
        now_uj = measure.read_uj(self._rapl)
        if now_uj is None:
            return
        joules = measure.delta_j(self._rapl, self._rapl_last, now_uj)
        self._rapl_last = now_uj
        # Only jobs running on this machine draw from its packages; an engine's or a region
        # worker's jobs are measured (or modelled) where they run.
        here = [lv for lv in self.live.values() if lv.executor.runs_here]
        total = sum(lv.job.cpus * lv.job.nodes for lv in here)
        for lv in here:
            lv.energy_j += joules * lv.job.cpus * lv.job.nodes / total if total else 0.0
            lv.measured = True


# _no_autoflush_note: the loops that make many transitions run with the session's autoflush
# off, so that a query inside the loop does not first flush the changes made so far — one
# round of statements per job; everything is flushed together at commit (the transitions'
# audit records are written in one statement then, see Unit.record). A query whose answer
# depends on this pass's changes (the quota sums) flushes explicitly first.


def _hands_over(executor: Executor | None) -> bool:
    """Whether starting a job on this executor only hands it over (to a region worker), the
    start to be reported later. A capability attribute; the engines' executors, which start
    the job (or queue it in the engine) before ``start`` returns, do not declare it."""
    return bool(getattr(executor, "hands_over", False))


def _placement_dict(p: Placement) -> dict[str, Any]:
    return {
        "region": p.region,
        "pool": p.pool,
        "nodes": p.nodes,
        "exclusive": p.exclusive,
        "node": p.node,
        "busy_w": p.busy_w,
    }


def _dependencies(row: JobRow, states: dict[str, str]) -> str:
    """'ok', 'wait' or 'never' for a job's dependencies."""
    verdict = "ok"
    for dep in row.depends_on:
        state = states.get(dep["job"])
        if state is None:
            return "never"
        terminal = state in {JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED, JobState.TIMEOUT}
        if dep["type"] == DependencyType.AFTEROK:
            if state == JobState.COMPLETED:
                continue
            if terminal:
                return "never"
            verdict = "wait"
        elif not terminal:
            verdict = "wait"
    return verdict


class _QuotaBook:
    """Agency quotas at admission: GPU-hours (used + running + asked) and kWh used.

    Like storage, each quota holds per label on its own: usage at one label is counted
    against that label only, and the pending reason names that label's figures only. A
    shared pool would let a job at one label learn, from its reason or from when it is
    admitted, how much work ran at a label it may not read."""

    def __init__(self, u: Unit) -> None:
        self.u = u
        self.limits: dict[int, tuple[float | None, float | None]] = {
            a.id: (a.quota_gpu_hours, a.quota_kwh)
            for a in u.session.execute(
                select(Agency).where((Agency.quota_gpu_hours.isnot(None)) | (Agency.quota_kwh.isnot(None)))
            ).scalars()
        }
        self.used: dict[tuple[int, str], tuple[float, float]] = {}

    def _usage(self, agency_id: int, label: str) -> tuple[float, float]:
        key = (agency_id, label)
        if key not in self.used:
            self.u.session.flush()  # admission runs without autoflush: count this pass's changes
            rows = self.u.session.execute(
                select(
                    func.coalesce(func.sum(JobRow.nodes * JobRow.gpus_per_node * JobRow.walltime_s), 0),
                    func.coalesce(func.sum(JobRow.energy_kwh), 0),
                ).where(
                    JobRow.agency_id == agency_id,
                    JobRow.label == label,
                    JobRow.state.in_(
                        [
                            JobState.ADMITTED,
                            JobState.RUNNING,
                            JobState.COMPLETED,
                            JobState.FAILED,
                            JobState.TIMEOUT,
                            JobState.CANCELLED,
                        ]
                    ),
                )
            ).one()
            self.used[key] = (float(rows[0]) / 3600.0, float(rows[1]))
        return self.used[key]

    def check(self, row: JobRow) -> str | None:
        limits = self.limits.get(row.agency_id)
        if limits is None:
            return None
        gpu_limit, kwh_limit = limits
        gpu_used, kwh_used = self._usage(row.agency_id, row.label)
        asked = row.nodes * row.gpus_per_node * row.walltime_s / 3600.0
        at = f"at {row.label}"
        if gpu_limit is not None and gpu_used + asked > gpu_limit:
            return f"quota: agency GPU-hours {at} {gpu_used:.1f} used/reserved + {asked:.1f} asked > quota {gpu_limit:.1f}"
        if kwh_limit is not None and kwh_used >= kwh_limit:
            return f"quota: agency energy {at} {kwh_used:.3f} kWh used >= quota {kwh_limit:.3f} kWh"
        self.used[(row.agency_id, row.label)] = (gpu_used + asked, kwh_used)
        return None
