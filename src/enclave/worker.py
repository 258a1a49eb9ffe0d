"""A region worker: runs one region's executor as its own process (``enclave worker``).

In production each classified region's worker lives inside that region's network, next to
its engine (local processes, Slurm or Ray), and reaches out to the control plane over HTTPS
with the region's credential; the control plane never connects into the region. The loop:

1. **sync** with the control plane: send reports (job started with the engine's handle,
   job ended, job could not start) and the engine's health; receive new jobs, jobs to adopt
   (held by this worker's previous process or by a worker gone silent) and cancellations;
2. start new jobs on the engine, cancel or kill what was asked;
3. poll running jobs; stream their output to the control plane as it grows, and once a job
   has ended, send the rest of its output, then report the end. The engine-side sandbox is
   removed only after the control plane acknowledged the end.

Walltime, priorities, placement and every access decision stay on the control plane; the
worker only ever receives work the server chose for its credential's region.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from enclave.client import Client
from enclave.errors import EnclaveError, Unavailable
from enclave.executors.base import NOT_ENDED, ExecSpec, Executor, Handle, RunState, Status
from enclave.executors.registry import make_engine_executor
from enclave.fleet import Region

log = logging.getLogger("enclave.worker")

POLL_S = 0.02  # the engine is asked this often while jobs run
SYNC_S = 0.05  # ... and the control plane this often (at once when there is news to report)
IDLE_S = 0.2  # nothing running: how often to ask for work
LOG_PUSH_S = 1.0  # running jobs' output is streamed this often
LOG_CHUNK = 512 * 1024  # bytes per upload (under the server's 1 MiB body limit)
HEALTH_S = 5.0
RETRY_MAX_S = 10.0  # back-off ceiling while the control plane is unreachable


@dataclass
class Running:
    job_id: str
    handle: Handle
    sent: dict[str, int] = field(default_factory=lambda: {"stdout": 0, "stderr": 0})
    running: bool = False  # reported out of the engine's queue
    cancel_sent: bool = False
    killed: bool = False
    ended: Status | None = None  # reported, waiting for the acknowledgement


class RegionWorker:
    def __init__(
        self,
        api: Client,
        region: str,
        sandbox_root: Path,
        name: str | None = None,
        max_jobs: int = 256,
    ) -> None:
        self.api = api
        self.region = region
        self.sandbox_root = sandbox_root
        self.name = name or socket.gethostname()
        self.session = str(uuid.uuid4())
        self.max_jobs = max_jobs
        self.executor: Executor | None = None
        self.running: dict[str, Running] = {}
        self.reports: list[dict[str, Any]] = []
        self._health: dict[str, Any] = {"healthy": True, "detail": "starting"}
        self._health_at = float("-inf")
        self._logs_at = 0.0
        self._synced_at = float("-inf")
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        """Until stopped. Exits with NotAuthenticated when the credential is revoked, and with
        Forbidden when it is not this region's: retrying cannot mend either."""
        backoff = IDLE_S
        while not self._stop.is_set():
            try:
                busy = self.step()
                backoff = IDLE_S
            except Unavailable as exc:  # the control plane is down or unreachable: keep going
                log.warning("%s; retrying in %.1f s", exc, backoff)
                self._stop.wait(backoff)
                backoff = min(RETRY_MAX_S, backoff * 2)
                continue
            if not busy:
                self._stop.wait(POLL_S if self.running else IDLE_S)

    # -- one round --------------------------------------------------------------------------
    def step(self) -> bool:
        """Sync (when due), act on the answer, poll. True when there is news to report now."""
        now = time.monotonic()
        if self.reports or self.executor is None or now - self._synced_at >= SYNC_S:
            self._synced_at = now
            self._sync(now)
        self._poll()
        return bool(self.reports)

    def _sync(self, now: float) -> None:
        if self.executor is not None and now - self._health_at >= HEALTH_S:
            self._health_at = now
            state = self.executor.health()
            self._health = {"healthy": state.healthy, "detail": state.detail[:2000]}
        sent, self.reports = self.reports, []
        try:
            answer = self.api.worker_sync(
                self.region,
                {
                    "worker": self.name,
                    "session": self.session,
                    "capacity": max(0, self.max_jobs - len(self.running)),
                    "health": self._health,
                    "reports": sent,
                    "holding": list(self.running),
                },
            )
        except Unavailable:
            self.reports = sent + self.reports  # resent next time: reports are idempotent
            raise
        if self.executor is None:
            self.executor = make_engine_executor(
                Region.model_validate(answer["region"]), self.sandbox_root, hidden=(self.sandbox_root.parent,)
            )
            self._health_at = float("-inf")
        self._acknowledged(answer["acked"])
        for item in answer["adopt"]:
            if item["job_id"] not in self.running:
                self.running[item["job_id"]] = Running(item["job_id"], item["handle"])
        for item in answer["cancel"]:
            self._cancel(item["job_id"], float(item["grace_s"]))
        for job_id in answer["kill"]:
            self._kill(job_id)
        for item in answer["start"]:
            self._start(item["job_id"], item["spec"])

    def _acknowledged(self, job_ids: list[str]) -> None:
        assert self.executor is not None
        for job_id in job_ids:
            run = self.running.get(job_id)
            if run is not None and run.ended is not None:
                del self.running[job_id]
                try:
                    self.executor.cleanup(run.handle)
                except OSError:
                    log.exception("could not clean up after job %s", job_id)

    def _start(self, job_id: str, spec: dict[str, Any]) -> None:
        assert self.executor is not None
        if job_id in self.running:
            return  # handed out again while our start report was on its way
        try:
            handle = self.executor.start(ExecSpec(**spec))
        except (OSError, EnclaveError, TypeError) as exc:
            self.reports.append({"job_id": job_id, "event": "start_failed", "error": str(exc)[:2000]})
            return
        run = Running(job_id, handle)
        self.running[job_id] = run
        self.reports.append({"job_id": job_id, "event": "started", "handle": handle})
        if self.executor.poll(handle).state is not RunState.QUEUED:
            run.running = True  # the engine ran it at once (the local one always does)
            self.reports.append({"job_id": job_id, "event": "running"})

    def _cancel(self, job_id: str, grace_s: float) -> None:
        run = self.running.get(job_id)
        if run is not None and not run.cancel_sent and run.ended is None:
            assert self.executor is not None
            run.cancel_sent = True
            self.executor.cancel(run.handle, grace_s)

    def _kill(self, job_id: str) -> None:
        run = self.running.get(job_id)
        if run is not None and not run.killed and run.ended is None:
            assert self.executor is not None
            run.killed = True
            self.executor.kill(run.handle)

    def _poll(self) -> None:
        assert self.executor is not None
        push_logs = time.monotonic() - self._logs_at >= LOG_PUSH_S
        if push_logs:
            self._logs_at = time.monotonic()
        for run in list(self.running.values()):
            if run.ended is not None:
                # Reported; the acknowledgement was lost with an answer: report it again.
                if not any(r["job_id"] == run.job_id for r in self.reports):
                    self.reports.append(_ended(run.job_id, run.ended))
                continue
            status = self.executor.poll(run.handle)
            if status.state in NOT_ENDED:
                if status.state is RunState.RUNNING and not run.running:
                    run.running = True  # out of the engine's queue: its walltime starts now
                    self.reports.append({"job_id": run.job_id, "event": "running"})
                if push_logs:
                    self._push_logs(run)
                continue
            if status.state is RunState.EXITED:
                self._push_logs(run)  # all of it, before the end is reported
            run.ended = status
            self.reports.append(_ended(run.job_id, status))

    def _push_logs(self, run: Running) -> None:
        assert self.executor is not None
        for stream, path in self.executor.log_paths(run.handle).items():
            if stream not in run.sent:
                continue
            try:
                with path.open("rb") as fh:
                    fh.seek(run.sent[stream])
                    while chunk := fh.read(LOG_CHUNK):
                        run.sent[stream] = self.api.worker_put_log(
                            self.region, run.job_id, stream, run.sent[stream], chunk
                        )
                        fh.seek(run.sent[stream])
            except FileNotFoundError:
                continue
            except Unavailable:
                raise
            except EnclaveError as exc:  # e.g. the server no longer holds the job: not fatal
                log.warning("output of job %s (%s) not streamed: %s", run.job_id, stream, exc)


def _ended(job_id: str, status: Status) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "event": "ended",
        "lost": status.state is RunState.LOST,
        "exit_code": status.exit_code,
        "signal": status.signal,
        "cpu_s": status.cpu_s,
        "energy_j": status.energy_j,
    }
