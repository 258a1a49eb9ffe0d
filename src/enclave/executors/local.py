"""The embedded default executor: each job is a real, confined process on this machine.

Every job gets its own folder ``<root>/<label digest>/<job id>/`` (mode 0700, the control
plane's), so folders of different labels are never shared. In it:

* ``work/`` — the job's sandbox: its working directory and HOME, owned by the job's own uid;
  the only writable place it sees (see :mod:`enclave.executors.confine`);
* ``stdout``, ``stderr`` — opened by the control plane and handed to the job as descriptors,
  out of the job's reach (it can neither read them back nor swap them for a link);
* ``env`` — the job's environment, read by the wrapper as the job's uid (never given to
  bubblewrap or setpriv, which run as root: see :mod:`enclave.executors.confine`).

The command runs confined under a small ``sh`` wrapper, the PID namespace's init, that

* sets umask 007 — files for the job's uid and group only (the group is the job's own, or,
  where the region has scratch space, the one its label and agency's jobs share there),
* applies the memory (``ulimit -v``), CPU-time (``ulimit -t``), process-count (``ulimit -p``)
  and file-size (``ulimit -f``: the per-job output cap) limits,
* forwards SIGTERM to the job (the grace signal) and waits for it to really end,
* writes the exit status to ``work/.exit`` — so a control plane restarted while the job ran
  still learns how it ended (the job could write that file too: it only ever describes the
  job's own outcome, and it is read without following links, size-capped).

Killing the wrapper ends every process of the job (its PID namespace goes with it), whatever
they did to their session or process group. Processes are spawned with ``posix_spawn`` and
reaped with ``wait4``, which also yields the CPU time the job used.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from pathlib import Path

from enclave.errors import Unavailable
from enclave.executors import confine, outputs
from enclave.executors.base import ExecSpec, Handle, Health, Mount, RunState, Status
from enclave.fleet import LocalBackend


class LocalExecutor:
    type = "local"
    stages_files = True
    runs_here = True

    def __init__(
        self, root: Path, backend: LocalBackend | None = None, hidden: tuple[Path, ...] = ()
    ) -> None:
        backend = backend or LocalBackend()
        self.root = root
        self.network, self.egress = confine.network_of(backend.model_dump())
        # The region's scratch file system, split by label and agency.
        self.scratch = Path(backend.scratch) if backend.scratch else None
        # Never visible to a job even where a system mount would show it (ENCLAVE_HOME).
        self.hidden = (*hidden, root)
        root.mkdir(parents=True, exist_ok=True, mode=0o700)

    def folder(self, spec: ExecSpec) -> Path:
        return self.root / spec.label_key / spec.job_id

    def sandbox(self, spec: ExecSpec) -> Path:
        return self.folder(spec) / "work"

    def start(self, spec: ExecSpec) -> Handle:
        why = confine.unavailable()
        if why is not None:
            raise Unavailable(f"jobs cannot be confined on this machine: {why}")
        folder, workdir = self.folder(spec), self.sandbox(spec)
        folder.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # A fresh folder for every attempt: nothing an earlier attempt left (a link planted
        # where the control plane writes) is ever opened by it.
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(mode=0o700)
        workdir.mkdir(mode=0o700)
        uid = confine.job_uid(spec.job_id)
        confine.give([workdir, *(m.path for m in spec.mounts)], uid)
        mounts, gid, extra_env = spec.mounts, uid, {}
        if self.scratch is not None:
            share = confine.scratch(self.scratch, spec.label_key, spec.agency)
            gid = share.stat().st_gid  # jobs of one label and agency share its group
            mounts = (*mounts, Mount(share, writable=True))
            extra_env = {"ENCLAVE_SCRATCH": str(share)}
        env = {
            "PATH": confine.SAFE_PATH,
            "HOME": str(workdir),
            "TMPDIR": str(workdir),
            "LANG": "C.UTF-8",
            "USER": "enclave",
            "LOGNAME": "enclave",
            **confine.network_env(self.network),
            **spec.env,
            **extra_env,
            "ENCLAVE_JOB_ID": spec.job_id,
            "ENCLAVE_REGION": spec.region,
            "ENCLAVE_CPUS": str(spec.cpus_per_node),
        }
        env_file = confine.write_env(folder / "env", env, uid)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        actions = [
            (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, str(folder / "stdout"), flags, 0o600),
            (os.POSIX_SPAWN_OPEN, 2, str(folder / "stderr"), flags, 0o600),
            *((os.POSIX_SPAWN_CLOSE, fd) for fd in _inherited()),
        ]
        jail = confine.Confinement(
            uid,
            workdir,
            mounts,
            hidden=self.hidden,
            gid=gid,
            env_file=env_file,
            network=self.network,
            egress=self.egress,
            gpus=spec.gpus_per_node > 0,
        )
        argv = confine.argv(jail, confine.wrapped(workdir, spec.command))
        program = shutil.which(argv[0]) or argv[0]  # bubblewrap, or the egress relay that becomes it
        privileged = confine.privileged_env(spec)
        pid = os.posix_spawn(program, argv, privileged, file_actions=actions, setsid=True)
        return {"pid": pid, "dir": str(workdir), "folder": str(folder), "start_ticks": _start_ticks(pid)}

    def recover(self, job_id: str, label_key: str, since: float) -> Handle | None:
        """The handle of a start whose handle was never recorded (the control plane died
        between starting the process and committing its handle), or None if the process was
        never started — so that a restarted control plane adopts the job instead of running it
        a second time. The spawn opened ``stdout`` before bubblewrap ran: without it nothing
        ran. With it: the job's bubblewrap if it still runs (found by its sandbox's path), else
        a handle whose process is gone (its wrapper's ``.exit`` tells how it ended). ``since``:
        when this attempt was committed as started — an older ``stdout`` is an earlier
        attempt's, whose folder this one never got to replace."""
        folder = self.root / label_key / job_id
        workdir = folder / "work"
        try:
            if (folder / "stdout").stat().st_ctime < since:
                return None
        except FileNotFoundError:
            return None
        handle: Handle = {"pid": 0, "dir": str(workdir), "folder": str(folder), "start_ticks": None}
        for pid in confine.sandboxes_of(workdir):
            ticks = _start_ticks(pid)
            if ticks is not None:
                handle |= {"pid": pid, "start_ticks": ticks}
                break
        return handle

    def poll(self, handle: Handle) -> Status:
        pid = int(handle["pid"])
        if pid <= 0:  # recovered after its process had gone
            return self._poll_adopted(handle)
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
        if self._alive(handle):
            return Status(RunState.RUNNING)
        record = outputs.read_small(Path(handle["dir"]) / ".exit")
        if record is not None:
            code = _exit_code(record)
            return Status(RunState.EXITED, exit_code=code, signal=code - 128 if code > 128 else None)
        return Status(RunState.LOST)

    def _alive(self, handle: Handle) -> bool:
        recorded = handle.get("start_ticks")
        return recorded is not None and _start_ticks(int(handle["pid"])) == recorded

    def _init(self, handle: Handle) -> int | None:
        """The host pid of the job's wrapper: the only child of bubblewrap, and the init of
        the job's PID namespace."""
        pid = int(handle["pid"])
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            return None
        return int(children[0]) if children else None

    def cancel(self, handle: Handle, grace_s: float) -> None:
        """SIGTERM to the wrapper, which forwards it to the job; ``kill`` follows after the grace."""
        if self._alive(handle):
            init = self._init(handle)
            if init is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(init, signal.SIGTERM)

    def kill(self, handle: Handle) -> None:
        """SIGKILL to the namespace's init takes every process of the job with it."""
        if self._alive(handle):
            init = self._init(handle)
            with contextlib.suppress(ProcessLookupError):
                if init is not None:
                    os.kill(init, signal.SIGKILL)
                os.killpg(int(handle["pid"]), signal.SIGKILL)

    def log_paths(self, handle: Handle) -> dict[str, Path]:
        folder = Path(handle.get("folder") or Path(handle["dir"]).parent)
        return {"stdout": folder / "stdout", "stderr": folder / "stderr"}

    def cleanup(self, handle: Handle) -> None:
        shutil.rmtree(handle.get("folder") or handle["dir"], ignore_errors=True)

    def health(self) -> Health:
        """Healthy while jobs can be confined and the sandbox root is writable."""
        why = confine.unavailable()
        if why is not None:
            return Health(False, f"cannot confine jobs: {why}")
        if os.access(self.root, os.W_OK | os.X_OK):
            return Health(True, "local processes, confined")
        return Health(False, f"sandbox root {self.root} is not writable")


def _inherited() -> list[int]:
    """Descriptors above stderr this process would hand down (inheritable ones it got from
    whatever started it: a pipe of a shell or service manager): a job gets none of them."""
    out = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2:
            with contextlib.suppress(OSError):
                if os.get_inheritable(fd):
                    out.append(fd)
    return out


def _exit_code(record: bytes) -> int:
    """The wrapper's exit record; anything but a small number reads as a failure."""
    text = record.strip()
    return int(text) if text.isdigit() and len(text) <= 3 else 1


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
