"""The embedded default executor: each job is a real process on this machine.

Every job gets its own sandbox directory ``<root>/<label digest>/<job id>`` (mode 0700; the
job runs with umask 077, so its files are 0600), so directories of different labels are
never shared. The command runs under a small ``sh`` wrapper that

* records its pid, applies the memory (``ulimit -v``) and CPU-time (``ulimit -t``) limits,
* forwards SIGTERM to the job (the grace signal) and waits for it to really end,
* writes the exit status to ``.exit`` — so a control plane restarted while the job ran still
  learns how it ended.

The wrapper leads its own session, so SIGKILL to the process group ends everything it
started. Processes are spawned with ``posix_spawn`` and reaped with ``wait4``, which also
yields the CPU time the job used.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from pathlib import Path

from enclave.executors.base import ExecSpec, Handle, Health, RunState, Status

WRAPPER = r"""
cd "$1" || exit 126
shift
umask 077
echo $$ > .pid
ulimit -v "$ENCLAVE_LIMIT_MEM_KB" 2>/dev/null
ulimit -t "$ENCLAVE_LIMIT_CPU_S" 2>/dev/null
"$@" </dev/null &
child=$!
signalled=0
trap 'signalled=1; kill -TERM "$child" 2>/dev/null' TERM
wait "$child"
rc=$?
# A trap interrupts `wait`; wait again for the job's real status (the shell keeps it).
while [ "$signalled" = 1 ]; do signalled=0; wait "$child"; rc=$?; done
echo "$rc" > .exit.tmp && mv .exit.tmp .exit
exit "$rc"
"""
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"


class LocalExecutor:
    type = "local"

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True, mode=0o700)

    def sandbox(self, spec: ExecSpec) -> Path:
        return self.root / spec.label_key / spec.job_id

    def start(self, spec: ExecSpec) -> Handle:
        workdir = self.sandbox(spec)
        workdir.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        workdir.mkdir(mode=0o700, exist_ok=True)
        env = {
            "PATH": SAFE_PATH,
            "HOME": str(workdir),
            "TMPDIR": str(workdir),
            "LANG": "C.UTF-8",
            **spec.env,
            "ENCLAVE_JOB_ID": spec.job_id,
            "ENCLAVE_REGION": spec.region,
            "ENCLAVE_CPUS": str(spec.cpus_per_node),
            "ENCLAVE_LIMIT_MEM_KB": str(spec.memory_mb * 1024),
            "ENCLAVE_LIMIT_CPU_S": str(spec.walltime_s * spec.cpus_per_node + 5),
        }
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        actions = [
            (os.POSIX_SPAWN_OPEN, 1, str(workdir / "stdout"), flags, 0o600),
            (os.POSIX_SPAWN_OPEN, 2, str(workdir / "stderr"), flags, 0o600),
        ]
        argv = ["sh", "-c", WRAPPER, "enclave-job", str(workdir), *spec.command]
        pid = os.posix_spawn("/bin/sh", argv, env, file_actions=actions, setsid=True)
        return {"pid": pid, "dir": str(workdir), "start_ticks": _start_ticks(pid)}

    def poll(self, handle: Handle) -> Status:
        pid = int(handle["pid"])
        try:
            waited, status, usage = os.wait4(pid, os.WNOHANG)
        except ChildProcessError:
            return self._poll_adopted(handle)
        if waited == 0:
            return Status(RunState.RUNNING)
        cpu_s = usage.ru_utime + usage.ru_stime
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            return Status(RunState.EXITED, exit_code=128 + sig, signal=sig, cpu_s=cpu_s)
        code = os.WEXITSTATUS(status)
        return Status(RunState.EXITED, exit_code=code, signal=code - 128 if code > 128 else None, cpu_s=cpu_s)

    def _poll_adopted(self, handle: Handle) -> Status:
        """A job started by an earlier server process: read the wrapper's record."""
        exit_file = Path(handle["dir"]) / ".exit"
        if exit_file.exists():
            code = int(exit_file.read_text().strip() or "1")
            return Status(RunState.EXITED, exit_code=code, signal=code - 128 if code > 128 else None)
        if self._alive(handle):
            return Status(RunState.RUNNING)
        return Status(RunState.LOST)

    def _alive(self, handle: Handle) -> bool:
        recorded = handle.get("start_ticks")
        return recorded is not None and _start_ticks(int(handle["pid"])) == recorded

    def cancel(self, handle: Handle, grace_s: float) -> None:
        """SIGTERM to the wrapper, which forwards it to the job; ``kill`` follows after the grace."""
        if self._alive(handle):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(handle["pid"]), signal.SIGTERM)

    def kill(self, handle: Handle) -> None:
        if self._alive(handle):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(handle["pid"]), signal.SIGKILL)

    def log_paths(self, handle: Handle) -> dict[str, Path]:
        workdir = Path(handle["dir"])
        return {"stdout": workdir / "stdout", "stderr": workdir / "stderr"}

    def cleanup(self, handle: Handle) -> None:
        shutil.rmtree(handle["dir"], ignore_errors=True)

    def health(self) -> Health:
        """Jobs run as processes of this machine: healthy while the sandbox root is writable."""
        if os.access(self.root, os.W_OK | os.X_OK):
            return Health(True, "local processes")
        return Health(False, f"sandbox root {self.root} is not writable")


def _start_ticks(pid: int) -> int | None:
    """The process start time in clock ticks: tells a live pid from a reused one."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":
        return None  # a zombie has ended
    return int(fields[19])
