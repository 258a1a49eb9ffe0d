"""The control plane's side of a region run by a region worker: a mailbox in the store.

``start`` writes a *dispatch* row that the region's worker claims (``enclave worker``, see
:mod:`enclave.worker`); the worker starts the job on the region's engine and reports the
engine's handle, then the job's end. ``poll`` reads those reports, ``cancel`` and ``kill``
leave requests the worker picks up on its next sync, and the worker streams the job's output
into ``log_root`` so that logs read and kept exactly as for any other back end.

Starting a job here only *hands it over* (``hands_over``): the job is not running until the
worker reports that its engine runs it (the runner keeps it ``admitted`` until then). A
handover that no worker takes while none of the region's workers is connected is given up
after WORKER_TIMEOUT_S: ``poll`` reports it lost (the runner requeues it), and the record is
closed in the same transaction, so a worker that connects later can no longer take it.

Everything goes through the store, so any control-plane replica sharing it can take a
worker's reports and a restarted control plane finds every dispatched job where it was.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from enclave.executors.base import ExecSpec, Handle, Health, RunState, Status
from enclave.fleet import Region
from enclave.store.models import Dispatch, RegionWorker

# A worker syncs several times a second; one not heard from for this long is gone: its
# unstarted claims are lost and its running jobs go to the region's next worker to adopt.
WORKER_TIMEOUT_S = 30.0
SNAPSHOT_TTL_S = 0.02  # polls of many jobs in one tick share one read of the mailbox
GIVE_UP_EVERY_S = 1.0  # how often stale handovers are looked for (while there are any)
STREAMS = ("stdout", "stderr")


class DispatchState:
    QUEUED = "queued"
    CLAIMED = "claimed"
    STARTED = "started"
    ENDED = "ended"


def live_since(now: datetime) -> datetime:
    """Workers seen after this instant count as connected."""
    return now - timedelta(seconds=WORKER_TIMEOUT_S)


class DispatchExecutor:
    type = "worker"
    stages_files = False
    runs_here = False
    hands_over = True  # start() hands the job to a worker; the worker reports the real start

    def __init__(
        self,
        region: Region,
        store: sessionmaker[Session],
        reads: sessionmaker[Session],
        log_root: Path,
        clock: Callable[[], datetime],
    ) -> None:
        self.region = region.name
        self.store = store
        self.reads = reads  # polls and health must not take SQLite's write lock
        self.log_root = log_root
        self.clock = clock  # the control plane's: worker liveness is judged on one clock
        self._lock = threading.Lock()
        self._snapshot: dict[str, Status] = {}
        self._snapshot_at = float("-inf")
        self._gave_up_at = float("-inf")

    def start(self, spec: ExecSpec) -> Handle:
        # No worker connected is not a failure: the record is durable and the region's worker
        # takes it when it (re)connects, as an engine's queue would; the region's health says
        # meanwhile that no worker is connected.
        now = self.clock()
        with self.store.begin() as session:
            # A requeued job is dispatched again: the previous attempt's record is done with.
            session.execute(delete(Dispatch).where(Dispatch.job_id == spec.job_id))
            session.add(
                Dispatch(
                    job_id=spec.job_id,
                    region=self.region,
                    label=spec.label or "",
                    spec=asdict(spec),
                    state=DispatchState.QUEUED,
                    lost=False,
                    kill=False,
                    dispatched_at=now,
                )
            )
        self._snapshot_at = float("-inf")
        self.logs_dir(spec.job_id).mkdir(parents=True, exist_ok=True, mode=0o700)
        return {"dispatch": spec.job_id, "region": self.region}

    def poll(self, handle: Handle) -> Status:
        with self._lock:
            if time.monotonic() - self._snapshot_at > SNAPSHOT_TTL_S:
                self._snapshot, oldest_untaken = self._read_all()
                if oldest_untaken is not None and self._give_up_untaken(oldest_untaken):
                    self._snapshot, _ = self._read_all()
                self._snapshot_at = time.monotonic()
            status = self._snapshot.get(handle["dispatch"])
        return status or Status(RunState.LOST, detail="lost: the dispatch record is gone")

    def _read_all(self) -> tuple[dict[str, Status], datetime | None]:
        """Every dispatch of the region as a status, and when the oldest one that no worker
        has taken yet was handed over (None if there is none)."""
        with self.reads() as session:
            rows = session.execute(
                select(
                    Dispatch.job_id,
                    Dispatch.state,
                    Dispatch.exit_code,
                    Dispatch.signal,
                    Dispatch.cpu_s,
                    Dispatch.energy_j,
                    Dispatch.lost,
                    Dispatch.detail,
                    Dispatch.running_at,
                    Dispatch.dispatched_at,
                ).where(Dispatch.region == self.region)
            ).all()
        out: dict[str, Status] = {}
        oldest: datetime | None = None
        for job_id, state, exit_code, signal, cpu_s, energy_j, lost, detail, running_at, at in rows:
            if state == DispatchState.QUEUED and (oldest is None or at < oldest):
                oldest = at
            if state != DispatchState.ENDED:
                # Until the engine runs it — waiting for a worker to take it, or in the engine's
                # own queue — the job's walltime has not started.
                out[job_id] = Status(RunState.RUNNING if running_at else RunState.QUEUED)
            elif lost:
                out[job_id] = Status(RunState.LOST, detail=detail)
            else:
                out[job_id] = Status(RunState.EXITED, exit_code, signal, cpu_s, energy_j)
        return out, oldest

    def _give_up_untaken(self, oldest: datetime) -> bool:
        """Close the handovers no worker took while none of the region's workers has been
        connected for WORKER_TIMEOUT_S; True if any was closed. One conditional UPDATE: a
        worker claiming at the same moment either got the record first (then it is not
        ``queued`` any more and stays the worker's) or finds it closed — never both."""
        now = self.clock()
        if oldest > live_since(now) or time.monotonic() - self._gave_up_at < GIVE_UP_EVERY_S:
            return False
        self._gave_up_at = time.monotonic()
        with self.store.begin() as session:
            connected = session.execute(
                select(RegionWorker.name)
                .where(RegionWorker.region == self.region, RegionWorker.last_seen_at > live_since(now))
                .limit(1)
            ).first()
            if connected is not None:
                return False  # a worker is there: it takes them as it has room
            closed = session.execute(
                update(Dispatch)
                .where(
                    Dispatch.region == self.region,
                    Dispatch.state == DispatchState.QUEUED,
                    Dispatch.dispatched_at <= live_since(now),
                )
                .values(
                    state=DispatchState.ENDED,
                    lost=True,
                    ended_at=now,
                    detail=(
                        f"lost: no region worker of {self.region} was connected to take it "
                        f"within {WORKER_TIMEOUT_S:.0f} s"
                    ),
                )
            )
        return bool(getattr(closed, "rowcount", 0))

    def cancel(self, handle: Handle, grace_s: float) -> None:
        self._stop(handle, {"cancel_grace_s": grace_s})

    def kill(self, handle: Handle) -> None:
        self._stop(handle, {"kill": True})

    def _stop(self, handle: Handle, ask: dict[str, object]) -> None:
        job_id = handle["dispatch"]
        with self.store.begin() as session:
            # Not yet taken by a worker: it never ran, so it ends here, as by SIGTERM.
            session.execute(
                update(Dispatch)
                .where(Dispatch.job_id == job_id, Dispatch.state == DispatchState.QUEUED)
                .values(
                    state=DispatchState.ENDED,
                    signal=15,
                    exit_code=143,
                    detail="stopped before a region worker took it",
                    ended_at=self.clock(),
                )
            )
            session.execute(
                update(Dispatch)
                .where(
                    Dispatch.job_id == job_id,
                    Dispatch.state.in_([DispatchState.CLAIMED, DispatchState.STARTED]),
                )
                .values(**ask)
            )
        self._snapshot_at = float("-inf")

    def logs_dir(self, job_id: str) -> Path:
        return self.log_root / job_id

    def log_paths(self, handle: Handle) -> dict[str, Path]:
        return {stream: self.logs_dir(handle["dispatch"]) / stream for stream in STREAMS}

    def cleanup(self, handle: Handle) -> None:
        shutil.rmtree(self.logs_dir(handle["dispatch"]), ignore_errors=True)
        with self.store.begin() as session:
            session.execute(delete(Dispatch).where(Dispatch.job_id == handle["dispatch"]))

    def health(self) -> Health:
        now = self.clock()
        with self.reads() as session:
            workers = list(
                session.execute(
                    select(RegionWorker)
                    .where(RegionWorker.region == self.region, RegionWorker.last_seen_at > live_since(now))
                    .order_by(RegionWorker.last_seen_at.desc())
                ).scalars()
            )
        if not workers:
            return Health(False, f"no region worker connected in the last {WORKER_TIMEOUT_S:.0f} s")
        fine = [w for w in workers if w.health.get("healthy")]
        best = (fine or workers)[0]
        detail = f"worker {best.name}: {best.health.get('detail', '')}".rstrip(": ")
        return Health(bool(fine), detail)
