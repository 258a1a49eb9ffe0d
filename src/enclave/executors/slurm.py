"""The Slurm executor: a region whose back end is a real Slurm cluster.

Fleet file: ``backend = { type = "slurm", partition = "debug", account = "...", qos = "...",
gres = "gpu", sbatch = "/usr/bin/sbatch", squeue = "...", sacct = "...", scancel = "..." }``
(only ``partition`` is required; the command paths default to the names on ``PATH``).

Security
    Enclave's label checks happen before an executor is called: the scheduler places a job
    only in a region accredited for its label. This executor then submits *only* to the
    partition (and account / QOS) of its own region's back-end settings; nothing in the job
    (its spec, command or environment) can name another partition, and ``sbatch`` runs with
    every ``SBATCH_*``/``SLURM_*`` input variable of the control plane's environment removed
    so none can override the region's settings. A region's Slurm therefore only ever receives
    that region's jobs. The partition must be one plain name (a comma would make it a list).

Confinement
    Slurm starts the script as the submitting user (the control plane's); the script then runs
    the command confined exactly as the local executor does (bubblewrap, the job's own uid, its
    own namespaces, only its sandbox visible: :mod:`enclave.executors.confine`), so no job code
    runs with the control plane's authority. The nodes need bubblewrap and util-linux's
    ``setpriv``, and the script root's privilege to switch uid: where they lack it the command
    fails at once (fail closed) instead of running unconfined.

Submission
    Each job gets a folder ``<root>/<label digest>/<job id>`` (0700, the control plane's)
    holding the script, its output and its records, and the job's sandbox ``work/`` (its own
    uid's), on a file system the Slurm nodes share with the control plane, as HPC scratch is. ``start`` writes ``job.sh`` there and submits it with ``sbatch
    --parsable``: one allocation of ``--nodes`` N with one task of ``--cpus-per-task`` C per
    node, ``--mem`` per node, ``--gres=<gres>:G`` when G > 0, ``--time`` = the walltime rounded
    up to minutes plus one (Enclave enforces the exact walltime itself; Slurm's limit is a
    backstop), the job's environment set by the script, every value shell-quoted (``sbatch`` runs
    with a bare environment -- PATH, LANG, SLURM_CONF -- and ``--export=ALL``: nothing of the
    control plane's environment reaches the job, as with ``--export=NONE``, which in Slurm
    22.05 also makes slurmd run ``su - <user> -c env`` before every job, ~0.3 s each),
    ``--no-requeue`` (Enclave requeues lost work itself; Slurm must not run a
    job a second time behind its back), output to the sandbox's ``stdout``/``stderr``. A gang
    job (N > 1) is one allocation whose script runs the command once per node with ``srun``.
    The script records the command's exit status in ``.exit`` (and its CPU time in
    ``.times``), like the local wrapper, so the end of a job is known even without Slurm
    accounting. ``sbatch`` refusing a job raises :class:`InvalidInput` with Slurm's message;
    an unreachable controller raises :class:`Unavailable`.

Polling
    The live loop polls every running job every few milliseconds; one ``squeue`` call for all
    watched jobs answers every poll for :data:`CACHE_S` seconds. A job that has left the active
    states is resolved once, all such jobs in one ``sacct`` call (state, exit code, CPU time,
    ``ConsumedEnergyRaw`` joules when the cluster measures energy); where accounting storage
    is disabled the executor falls back to ``squeue -t all`` (ended jobs stay known for
    ``MinJobAge``) and the status file the script wrote -- which it also looks at between
    squeue calls (a stat per job every :data:`FILE_CHECK_S`), so an end is seen at once.
    With accounting, an ended job waits up to :data:`SACCT_LAG_S` for slurmdbd's record.
    CPU time: the command's own (the script's ``times``), else sacct ``TotalCPU``, else
    ``CPUTimeRAW`` (allocated core-seconds; ``sacct -X`` leaves TotalCPU at zero in 22.05).
    Energy: ``ConsumedEnergyRaw`` where non-empty, positive and not Slurm's "no value".

Slurm state -> :class:`Status` (``code:signal`` is Slurm's ExitCode)
    ============================  ==========================================================
    PENDING RUNNING SUSPENDED      RUNNING (the job holds or waits for its allocation)
    CONFIGURING REQUEUED ...
    COMPLETED FAILED               EXITED, exit code ``code``; a signal ``sig`` gives 128+sig
    COMPLETING                     ended (the command is done): resolved like the above
    CANCELLED                      EXITED with the recorded status; with none (cancelled
                                   while pending, or killed): 137/SIGKILL after an Enclave
                                   ``kill``, else 143/SIGTERM (what ``scancel`` sends)
    TIMEOUT DEADLINE               EXITED with the recorded status, else 143/SIGTERM
    OUT_OF_MEMORY                  EXITED with the recorded status, else 137/SIGKILL (the OOM
                                   killer's signal)
    NODE_FAIL BOOT_FAIL PREEMPTED  LOST: the job did not end by itself, Enclave requeues it
    REVOKED, unknown to Slurm      LOST (purged from Slurm and no status file, or never existed)
    ============================  ==========================================================
    In every row but the LOST ones the status the script recorded, the command's own, wins
    over Slurm's figure. An exit code above 128 without a signal (the script's own ``exit
    143``) reports signal code-128, exactly as the local executor does; Slurm's pseudo-signals
    (OUT_OF_MEMORY's ``0:125``) are not signals.

Cancel and kill
    ``cancel`` sends SIGTERM to the batch script and everything it started (``scancel
    --signal=TERM --full``); the script waits for the command, so its real exit status is
    still recorded. A pending job has nothing to signal and is simply cancelled (``scancel
    --signal`` on a pending job keeps retrying for over a minute). ``kill`` is
    ``scancel --signal=KILL --full --batch`` (then a plain ``scancel`` if that failed, as for a
    pending job): the SIGKILL reaches every process of the job at once. A plain ``scancel
    --signal=KILL`` would not: Slurm 22.05 turns it into a cancel that sends SIGTERM, waits
    ``KillWait`` seconds, then SIGKILL -- and a node with a COMPLETING job starts no new job
    meanwhile.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from enclave.errors import InvalidInput, Unavailable
from enclave.executors import confine
from enclave.executors.base import ExecSpec, Handle, Health, RunState, Status

log = logging.getLogger("enclave.executors.slurm")

CACHE_S = 0.5  # one squeue call answers all polls for this long
SACCT_LAG_S = 5.0  # how long an ended job may wait for its accounting record
FILE_CHECK_S = 0.05  # without accounting, how often a job's status file is looked at
CALL_TIMEOUT_S = 30.0
MAX_J_IDS = 500  # above this many watched jobs, list the user's jobs instead of naming them
ACTIVE = frozenset(
    {
        "PENDING",
        "RUNNING",
        "SUSPENDED",
        "CONFIGURING",
        "REQUEUED",
        "REQUEUE_FED",
        "REQUEUE_HOLD",
        "RESIZING",
        "SIGNALING",
        "STAGE_OUT",
        "STOPPED",
        "RESV_DEL_HOLD",
    }
)
LOST_STATES = frozenset({"NODE_FAIL", "BOOT_FAIL", "PREEMPTED", "REVOKED"})
NAME = re.compile(r"^[A-Za-z0-9_.+-]{1,128}$")
ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
NO_VAL64 = 2**63  # Slurm's "no value" sentinels for 64-bit counters are at the top of the range

SCRIPT = """#!/bin/sh
# Enclave job {job_id} (region {region}, pool {pool}), written by enclave.executors.slurm.
{exports}
# srun steps take this environment.
export SLURM_EXPORT_ENV=ALL
cd {folder} || exit 126
umask 077
rm -f .exit .exit.tmp .times .times.tmp
{launch} </dev/null &
child=$!
# Slurm signals the script and all it started (scancel --full): the command gets the signal
# itself; the script only waits on, so that it can record how the command ended.
signalled=0
# Enclave's grace signal reaches this script alone (scancel --batch): it is relayed to the
# command, which relays it into the sandbox (bubblewrap itself must not get it: it would die
# of it and lose the command's exit status). Other signals only make the script wait on.
trap 'signalled=1; kill -TERM "$child" 2>/dev/null' TERM
trap 'signalled=1' INT HUP USR1 USR2
wait "$child"
rc=$?
while [ "$signalled" = 1 ]; do signalled=0; wait "$child"; rc=$?; done
times > .times.tmp && mv .times.tmp .times
echo "$rc" > .exit.tmp && mv .exit.tmp .exit
exit "$rc"
"""
# Runs bubblewrap ("$@") and relays SIGTERM to the sandbox's init (the job's wrapper, the only
# child of bubblewrap), which forwards it to the command.
RELAY = r"""
"$@" &
box=$!
trap 'kill -TERM $(cat /proc/$box/task/$box/children 2>/dev/null) 2>/dev/null' TERM
wait "$box"
rc=$?
while kill -0 "$box" 2>/dev/null; do wait "$box"; rc=$?; done
exit "$rc"
"""


class SlurmExecutor:
    type = "slurm"
    stages_files = True
    runs_here = False

    def __init__(self, root: Path, backend: Any = None, hidden: tuple[Path, ...] = ()) -> None:
        settings = _settings(backend)
        self.hidden = (*hidden, root)  # never visible to a job (ENCLAVE_HOME)
        self.network, self.egress = confine.network_of(settings)
        partition = settings.get("partition")
        if not isinstance(partition, str) or not NAME.match(partition):
            raise InvalidInput(
                f"a Slurm back end needs one partition name (letters, digits, _.+-), got {partition!r}"
            )
        self.partition = partition
        self.account = _optional_name(settings, "account")
        self.qos = _optional_name(settings, "qos")
        self.gres = _optional_name(settings, "gres") or "gpu"
        self.cmd = {}
        for tool in ("sbatch", "squeue", "sacct", "scancel"):
            value = settings.get(tool, tool)
            if not isinstance(value, str) or not value:
                raise InvalidInput(f"Slurm back end: {tool} must be a command path, got {value!r}")
            self.cmd[tool] = shutil.which(value) or value  # sbatch runs with a bare PATH
        self.root = root
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock = threading.Lock()
        self._watch: dict[str, Path] = {}  # slurm id -> sandbox, for jobs not known to have ended
        self._active: dict[str, str] = {}  # id -> state, from the last squeue answer
        self._ended: dict[str, Status] = {}
        self._looked: dict[str, float] = {}  # id -> when its status file was last looked at
        self._lagging: dict[str, float] = {}  # id -> when it ended before sacct had its record
        self._refreshed = float("-inf")
        self._accounting = True  # until sacct says accounting storage is disabled
        self.calls = 0  # Slurm commands run (for tests and benchmarks)

    # -- start ------------------------------------------------------------------------------
    def sandbox(self, spec: ExecSpec) -> Path:
        return self.root / spec.label_key / spec.job_id

    def start(self, spec: ExecSpec) -> Handle:
        for key in spec.env:
            if not ENV_KEY.match(key):
                raise InvalidInput(f"job {spec.job_id}: environment variable name {key!r} is not valid")
        why = confine.unavailable()
        if why is not None:
            raise Unavailable(f"jobs cannot be confined on this machine: {why}")
        workdir = self.sandbox(spec)
        workdir.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # A fresh folder for every attempt (nothing a job left is reused), the job's sandbox
        # inside it, the script, its output and records beside it, out of the job's reach.
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(mode=0o700)
        (workdir / "work").mkdir(mode=0o700)
        uid = confine.job_uid(spec.job_id)
        confine.give([workdir / "work", *(m.path for m in spec.mounts)], uid)
        # The job's environment, for the wrapper alone: the script and all it runs as root
        # (srun, bubblewrap, setpriv) keep the control plane's.
        confine.write_env(workdir / "env", self.job_env(spec, workdir / "work"), uid)
        script = workdir / "job.sh"
        fd = os.open(script, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o700)
        with os.fdopen(fd, "w") as f:
            f.write(self.script(spec, workdir))
        out = subprocess.run(
            [self.cmd["sbatch"], *self.sbatch_args(spec, workdir), str(script)],
            capture_output=True,
            text=True,
            env=_submit_env(),
            umask=0o077,  # sbatch hands its umask to the job: output files are 0600
            timeout=CALL_TIMEOUT_S,
            check=False,
        )
        self.calls += 1
        if out.returncode != 0:
            message = _one_line(out.stderr) or f"sbatch exited with {out.returncode}"
            if "contact" in message.lower() or "connect" in message.lower():
                raise Unavailable(f"Slurm controller unreachable submitting job {spec.job_id}: {message}")
            raise InvalidInput(f"Slurm (partition {self.partition}) refused job {spec.job_id}: {message}")
        slurm_id = out.stdout.strip().split(";")[0]
        if not slurm_id.isdigit():
            raise Unavailable(f"sbatch gave no job id for job {spec.job_id}: {out.stdout!r}")
        with self._lock:
            self._watch[slurm_id] = workdir
        return {"slurm_id": slurm_id, "dir": str(workdir)}

    def recover(self, job_id: str, label_key: str, since: float) -> Handle | None:
        """The handle of a submission whose handle was never recorded (the control plane died
        between sbatch and committing it), or None if Slurm never took it: so that a restarted
        control plane adopts the job instead of submitting it again. This attempt's script
        (written after ``since``, when the attempt was committed as started) must exist; the
        Slurm job is the one named for this job, submitted since then (``squeue -t all``: one
        that ended longer ago than Slurm's MinJobAge is no longer listed)."""
        workdir = self.root / label_key / job_id
        try:
            if (workdir / "job.sh").stat().st_ctime < since:
                return None
        except FileNotFoundError:
            return None
        out = subprocess.run(
            [self.cmd["squeue"], "-h", "-t", "all", "-n", f"enclave-{job_id}", "-o", "%i %V"],
            capture_output=True,
            text=True,
            env=_submit_env(),
            timeout=CALL_TIMEOUT_S,
            check=False,
        )
        if out.returncode != 0:
            raise Unavailable(f"squeue could not run to recover job {job_id}: {_one_line(out.stderr)}")
        taken = []
        for line in out.stdout.splitlines():
            sid, _, submitted = line.strip().partition(" ")
            try:
                at = time.mktime(time.strptime(submitted.strip(), "%Y-%m-%dT%H:%M:%S"))
            except ValueError:
                continue
            if sid.isdigit() and at >= int(since):  # Slurm keeps whole seconds
                taken.append(sid)
        if not taken:
            return None
        slurm_id = max(taken, key=int)
        with self._lock:
            self._watch[slurm_id] = workdir
        return {"slurm_id": slurm_id, "dir": str(workdir)}

    def sbatch_args(self, spec: ExecSpec, workdir: Path) -> list[str]:
        minutes = -(-max(1, spec.walltime_s) // 60) + 1
        out_dir = str(workdir).replace("%", "%%")  # sbatch expands %j and friends in paths
        args = [
            "--parsable",
            f"--job-name=enclave-{spec.job_id}",
            f"--partition={self.partition}",
            f"--nodes={spec.nodes}",
            "--ntasks-per-node=1",
            f"--cpus-per-task={spec.cpus_per_node}",
            f"--mem={spec.memory_mb}M",
            f"--time={minutes}",
            f"--output={out_dir}/stdout",
            f"--error={out_dir}/stderr",
            f"--chdir={workdir}",
            "--export=ALL",  # of the bare environment sbatch runs with: see the module doc
            "--no-requeue",
        ]
        if spec.gpus_per_node > 0:
            args.append(f"--gres={self.gres}:{spec.gpus_per_node}")
        if self.account:
            args.append(f"--account={self.account}")
        if self.qos:
            args.append(f"--qos={self.qos}")
        return args

    def job_env(self, spec: ExecSpec, sandbox: Path) -> dict[str, str]:
        return {
            "PATH": confine.SAFE_PATH,
            "HOME": str(sandbox),
            "TMPDIR": str(sandbox),
            "LANG": "C.UTF-8",
            "USER": "enclave",
            "LOGNAME": "enclave",
            **confine.network_env(self.network),
            **spec.env,
            "ENCLAVE_JOB_ID": spec.job_id,
            "ENCLAVE_REGION": spec.region,
            "ENCLAVE_CPUS": str(spec.cpus_per_node),
            "ENCLAVE_NODES": str(spec.nodes),
        }

    def script(self, spec: ExecSpec, workdir: Path) -> str:
        sandbox = workdir / "work"
        env = confine.privileged_env(spec)
        exports = "\n".join(f"export {key}={shlex.quote(value)}" for key, value in env.items())
        # The command runs confined on the node, as on the local executor: bubblewrap, the
        # job's own uid, only its sandbox visible (see enclave.executors.confine).
        jail = confine.Confinement(
            confine.job_uid(spec.job_id),
            sandbox,
            spec.mounts,
            hidden=self.hidden,
            env_file=workdir / "env",
            network=self.network,
            egress=self.egress,
            gpus=spec.gpus_per_node > 0,
        )
        confined = confine.argv(jail, confine.wrapped(sandbox, spec.command))
        command = shlex.join(["sh", "-c", RELAY, "enclave-relay", *confined])
        if spec.nodes > 1:  # one allocation, the command once per node
            launch = (
                f"srun --nodes={spec.nodes} --ntasks={spec.nodes} --ntasks-per-node=1 --export=ALL {command}"
            )
        else:
            launch = command
        return SCRIPT.format(
            job_id=_comment(spec.job_id),
            region=_comment(spec.region),
            pool=_comment(spec.pool),
            exports=exports,
            folder=shlex.quote(str(workdir)),
            launch=launch,
        )

    # -- poll -------------------------------------------------------------------------------
    def poll(self, handle: Handle) -> Status:
        sid = str(handle["slurm_id"])
        with self._lock:
            done = self._ended.get(sid)
            if done is not None:
                return done
            # A job unknown here (started by an earlier server process) is adopted; until the
            # next squeue answer covers it, it is taken as running.
            self._watch.setdefault(sid, Path(handle["dir"]))
            now = time.monotonic()
            if now - self._refreshed >= CACHE_S:
                self._refresh(now)
            elif not self._accounting:
                self._early_end(sid, now)
            done = self._ended.get(sid)
            if done is not None:
                return done
            # Pending in Slurm's own queue (a busy shared cluster, or work handed ahead of
            # capacity): not started, so its walltime has not either.
            return Status(RunState.QUEUED if self._active.get(sid) == "PENDING" else RunState.RUNNING)

    def _early_end(self, sid: str, now: float) -> None:
        """Between squeue calls, without accounting: the script's status file tells an end
        at once (one stat per job every FILE_CHECK_S), not up to CACHE_S later."""
        if now - self._looked.get(sid, float("-inf")) < FILE_CHECK_S:
            return
        self._looked[sid] = now
        workdir = self._watch[sid]
        if (workdir / ".exit").exists():
            self._ended[sid] = _translate("COMPLETED", 0, 0, workdir, None, None)
            del self._watch[sid]
            self._looked.pop(sid, None)

    def _refresh(self, now: float) -> None:
        """One squeue call for every watched job; resolve those that have ended."""
        self._refreshed = now
        ids = sorted(self._watch, key=int)
        if not ids:
            return
        answer = self._squeue(ids)
        if answer is None:  # Slurm unreachable: nothing is known to have changed
            return
        self._active = {}
        ended: dict[str, tuple[str, int] | None] = {}
        for sid in ids:
            seen = answer.get(sid)
            if seen is not None and (
                seen[0] in ACTIVE or (seen[0] == "COMPLETING" and not _ran_out(self._watch[sid]))
            ):
                # COMPLETING: Slurm is cleaning up; the end is known once the script has recorded
                # the status (or after an Enclave kill), else once Slurm settles on a final state.
                self._active[sid] = seen[0]
            else:
                ended[sid] = seen
        if ended:
            self._resolve(ended, now)

    def _squeue(self, ids: list[str]) -> dict[str, tuple[str, int]] | None:
        fmt = ["-O", "JobID:|,State:|,exit_code:|"]
        which = ["-j", ",".join(ids)] if len(ids) <= MAX_J_IDS else ["--me"]
        out = self._run("squeue", ["-h", "-t", "all", *which, *fmt])
        if out is None:
            return None
        if out.returncode != 0:
            if "invalid job id" in out.stderr.lower():
                return {}  # a single id Slurm no longer knows
            log.warning("squeue failed (%s): %s", out.returncode, _one_line(out.stderr))
            return None
        answer: dict[str, tuple[str, int]] = {}
        for line in out.stdout.splitlines():
            parts = line.split("|")
            if len(parts) >= 3 and parts[0].strip().isdigit():
                raw = parts[2].strip()
                answer[parts[0].strip()] = (parts[1].strip(), int(raw) if raw.isdigit() else 0)
        return answer

    def _resolve(self, ended: dict[str, tuple[str, int] | None], now: float) -> None:
        accounted = self._sacct(list(ended)) if self._accounting else {}
        for sid, seen in ended.items():
            row = accounted.get(sid)
            workdir = self._watch[sid]
            status = from_sacct(row, workdir) if row is not None else None
            # slurmdbd learns of an end a moment after slurmctld: wait a little for the record
            # (it carries the energy) before settling for what squeue saw.
            if status is None and self._accounting and now - self._lagging.setdefault(sid, now) < SACCT_LAG_S:
                continue
            if status is None:
                status = from_fallback(seen, workdir)
            self._lagging.pop(sid, None)
            self._ended[sid] = status
            del self._watch[sid]
            self._looked.pop(sid, None)
        if len(self._ended) > 100_000:  # drop the oldest answers; cleanup() drops the rest
            for sid in list(self._ended)[:50_000]:
                del self._ended[sid]

    def _sacct(self, ids: list[str]) -> dict[str, list[str]]:
        fields = "JobID,State,ExitCode,CPUTimeRAW,ConsumedEnergyRaw,TotalCPU"
        out = self._run("sacct", ["-n", "-P", "-X", "-j", ",".join(ids), "-o", fields])
        if out is None:
            return {}
        if out.returncode != 0:
            if "accounting storage is disabled" in (out.stderr + out.stdout).lower():
                self._accounting = False
                log.info("Slurm accounting storage is disabled: ended jobs are read from squeue")
            else:
                log.warning("sacct failed (%s): %s", out.returncode, _one_line(out.stderr))
            return {}
        return parse_sacct(out.stdout)

    def _run(self, tool: str, args: list[str]) -> subprocess.CompletedProcess[str] | None:
        self.calls += 1
        try:
            return subprocess.run(
                [self.cmd[tool], *args],
                capture_output=True,
                text=True,
                env=_slurm_env(),
                timeout=CALL_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("%s could not run: %s", tool, exc)
            return None

    # -- cancel, kill, logs -------------------------------------------------------------------
    def cancel(self, handle: Handle, grace_s: float) -> None:
        """SIGTERM to the script, relayed into the sandbox; Enclave's loop calls ``kill`` after the grace."""
        sid = str(handle["slurm_id"])
        if sid in self._ended:
            return
        with self._lock:
            state = self._active.get(sid) if time.monotonic() - self._refreshed < CACHE_S else None
        if state is None:
            answer = self._squeue([sid]) or {}
            state = answer[sid][0] if sid in answer else None
        if state == "PENDING":
            # Nothing to signal yet; `scancel --signal` on a pending job would keep retrying
            # ("Job can not be altered now") for over a minute. Cancel it outright.
            self._run("scancel", [sid])
        elif state is not None:
            self._run("scancel", ["--signal=TERM", "--batch", sid])  # the script relays it

    def kill(self, handle: Handle) -> None:
        sid = str(handle["slurm_id"])
        if sid in self._ended:
            return
        with contextlib.suppress(OSError):
            (Path(handle["dir"]) / ".killed").touch(mode=0o600)
        # --batch makes Slurm deliver the SIGKILL itself, to the script and all it started, at
        # once. Without it Slurm turns SIGKILL into a cancel: SIGTERM now, SIGKILL only KillWait
        # seconds later, the node COMPLETING (and starting nothing else) until then.
        out = self._run("scancel", ["--signal=KILL", "--full", "--batch", sid])
        if out is None or out.returncode != 0:
            self._run("scancel", [sid])  # pending (nothing to signal) or already going: cancel

    def log_paths(self, handle: Handle) -> dict[str, Path]:
        workdir = Path(handle["dir"])
        return {"stdout": workdir / "stdout", "stderr": workdir / "stderr"}

    def cleanup(self, handle: Handle) -> None:
        sid = str(handle["slurm_id"])
        with self._lock:
            self._ended.pop(sid, None)
            self._watch.pop(sid, None)
            self._looked.pop(sid, None)
            self._lagging.pop(sid, None)
        shutil.rmtree(handle["dir"], ignore_errors=True)

    # -- health -------------------------------------------------------------------------------
    def health(self) -> Health:
        """Whether this region's partition is up and has usable nodes (one ``sinfo`` call)."""
        sinfo = shutil.which("sinfo", path=str(Path(self.cmd["squeue"]).parent)) or "sinfo"
        try:
            out = subprocess.run(
                [sinfo, "-h", "-p", self.partition, "-o", "%a %D %T"],
                capture_output=True,
                text=True,
                env=_slurm_env(),
                timeout=10,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return Health(False, f"sinfo could not run: {exc}")
        if out.returncode != 0:
            return Health(False, f"Slurm unreachable: {_one_line(out.stderr)}")
        lines = [line.split() for line in out.stdout.splitlines() if line.strip()]
        if not lines:
            return Health(False, f"Slurm has no partition {self.partition}")
        usable = {"idle", "mixed", "allocated", "completing"}
        up = sum(int(n) for avail, n, state in lines if avail == "up" and state in usable)
        detail = f"partition {self.partition}: " + ", ".join(f"{n} {state}" for _a, n, state in lines)
        if lines[0][0] != "up":
            return Health(False, f"partition {self.partition} is {lines[0][0]}")
        return Health(up > 0, detail)


# -- translation (pure; unit-tested) ------------------------------------------------------------
def parse_sacct(text: str) -> dict[str, list[str]]:
    """``sacct -n -P -X`` rows by job id (a requeued job may repeat: the last row wins)."""
    rows: dict[str, list[str]] = {}
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) >= 3 and parts[0].isdigit():
            rows[parts[0]] = parts
    return rows


def from_sacct(row: list[str], workdir: Path | None) -> Status | None:
    """A sacct row -> Status; None while sacct still shows the job active."""
    state = _state(row[1])
    if state in ACTIVE or state == "COMPLETING":
        return None
    code, sig = _exit_code(row[2])
    cpu_s = _total_cpu(row[5]) if len(row) > 5 else None
    if cpu_s is None and len(row) > 3:
        cpu_s = _number(row[3])
    energy = _number(row[4]) if len(row) > 4 else None
    return _translate(state, code, sig, workdir, cpu_s, energy if energy and energy > 0 else None)


def from_fallback(seen: tuple[str, int] | None, workdir: Path | None) -> Status:
    """Without accounting: squeue's view of an ended job (None: Slurm forgot it) and the sandbox."""
    recorded = _recorded(workdir)
    if seen is None:
        if recorded is not None:
            done = _exited(recorded)
            return Status(done.state, done.exit_code, done.signal, _times_cpu(workdir))
        if workdir is not None and (workdir / ".killed").exists():
            return _signalled(signal.SIGKILL)
        return Status(RunState.LOST)
    state, raw = seen
    # squeue's exit_code is a wait status: exit code in the high byte, signal in the low bits
    code, sig = (raw >> 8) & 0xFF, raw & 0x7F
    sig = sig if sig <= 64 else 0
    return _translate(state, code, sig, workdir, None, None)


def _translate(
    state: str, code: int, sig: int, workdir: Path | None, cpu_s: float | None, energy_j: float | None
) -> Status:
    if state in LOST_STATES:
        return Status(RunState.LOST)
    recorded = _recorded(workdir)
    if recorded is not None:  # the script saw the command end: its status is the truth
        status = _exited(recorded)
    elif workdir is not None and (workdir / ".killed").exists():  # Enclave killed it
        status = _signalled(signal.SIGKILL)
    elif sig:
        status = _signalled(sig)
    elif code:
        status = _exited(code)
    elif state in ("COMPLETED", "COMPLETING"):
        status = _exited(0)
    elif state == "OUT_OF_MEMORY":
        status = _signalled(signal.SIGKILL)
    elif state == "CANCELLED" or state in ("TIMEOUT", "DEADLINE"):
        status = _signalled(signal.SIGTERM)
    else:  # FAILED with 0:0, SPECIAL_EXIT, or a state this version does not know
        status = Status(RunState.EXITED, exit_code=1)
    measured = _times_cpu(workdir)  # the command's own CPU time beats Slurm's allocation figure
    return Status(
        status.state, status.exit_code, status.signal, measured if measured is not None else cpu_s, energy_j
    )


def _ran_out(workdir: Path) -> bool:
    """The script recorded the command's end, or Enclave killed the job."""
    return (workdir / ".exit").exists() or (workdir / ".killed").exists()


def _exited(code: int) -> Status:
    return Status(RunState.EXITED, exit_code=code, signal=code - 128 if code > 128 else None)


def _signalled(sig: int) -> Status:
    return Status(RunState.EXITED, exit_code=128 + int(sig), signal=int(sig))


def _times_cpu(workdir: Path | None) -> float | None:
    """CPU time of the command from the script's ``times`` (its children's user + system)."""
    if workdir is None:
        return None
    try:
        lines = (workdir / ".times").read_text().splitlines()
    except OSError:
        return None
    if len(lines) < 2:
        return None
    total = 0.0
    for part in lines[1].split():
        m = re.fullmatch(r"(\d+)m([\d.]+)s", part)
        if m is None:
            return None
        total += int(m.group(1)) * 60 + float(m.group(2))
    return total


def _recorded(workdir: Path | None) -> int | None:
    if workdir is None:
        return None
    try:
        text = (workdir / ".exit").read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _state(text: str) -> str:
    return text.split()[0].rstrip("+").upper() if text.strip() else ""  # "CANCELLED by 0"


def _exit_code(text: str) -> tuple[int, int]:
    code, _, sig = text.partition(":")
    # Slurm writes pseudo-signals beyond the real ones (OUT_OF_MEMORY is 0:125): not a signal.
    signum = int(sig) if sig.isdigit() else 0
    return (int(code) if code.isdigit() else 0), (signum if 0 < signum <= 64 else 0)


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if 0 <= value < NO_VAL64 else None


def _total_cpu(text: str) -> float | None:
    """sacct TotalCPU, ``[D-][HH:]MM:SS[.mmm]``; None when absent or zero."""
    m = re.fullmatch(r"(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+(?:\.\d+)?)", text.strip())
    if m is None:
        return None
    days, hours, minutes, seconds = m.groups()
    total = int(days or 0) * 86400 + int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds)
    return total or None


def _settings(backend: Any) -> dict[str, Any]:
    if backend is None:
        return {}
    if isinstance(backend, Mapping):
        return dict(backend)
    if hasattr(backend, "model_dump"):
        return dict(backend.model_dump(exclude_none=True))
    return dict(vars(backend))


def _optional_name(settings: Mapping[str, Any], key: str) -> str | None:
    value = settings.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not NAME.match(value):
        raise InvalidInput(f"Slurm back end: {key} must be one plain name, got {value!r}")
    return value


def _submit_env() -> dict[str, str]:
    """All that sbatch (and so the job, before its script sets its own) gets."""
    env = {"PATH": confine.SAFE_PATH, "LANG": "C.UTF-8"}
    if "SLURM_CONF" in os.environ:
        env["SLURM_CONF"] = os.environ["SLURM_CONF"]
    return env


def _slurm_env() -> dict[str, str]:
    """The control plane's environment less every SBATCH_*/SLURM_* input (SLURM_CONF kept)."""
    return {
        k: v
        for k, v in os.environ.items()
        if not (k.startswith(("SBATCH_", "SLURM_", "SALLOC_", "SRUN_")) and k != "SLURM_CONF")
    }


def _comment(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.:-]", "_", text)


def _one_line(text: str) -> str:
    return " ".join(text.split())[:500]
