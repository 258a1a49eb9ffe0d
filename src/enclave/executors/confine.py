"""Confinement: every process Enclave starts runs in a bubblewrap sandbox as an identity of its own.

A job is hostile code. The control plane starts it as

    bwrap <namespaces> <mounts> --as-pid-1 -- setpriv --reuid=UID ... -- <command>

* **Identity**: a uid/gid of its own (``job_uid``: one per job, from a range no account uses),
  no supplementary groups, no capabilities (bounding set emptied), ``no_new_privs`` — never
  the control plane's.
* **Namespaces**: its own PID namespace (it sees only its own processes; ``--as-pid-1`` makes
  the job's wrapper the namespace's init, so killing it ends every process the job started,
  whatever they did to their session or group), its own mount, IPC (no System V shared memory
  or semaphores between jobs) and UTS namespace,
  and its own network namespace with only a loopback of its own unless the region's fleet entry
  grants the host network (``backend.network = "host"``) or a list of destinations
  (``backend.network = "allow"``: a proxy in the sandbox, checked outside it by
  :mod:`enclave.egress`'s relay).
* **Files**: a fresh tmpfs root holding read-only system directories (``/usr`` and the
  merged-usr links, a short list of ``/etc`` files), the Python installation the control plane
  runs from (runtimes and training scripts need its frameworks; code, not secrets), a private
  ``/tmp`` of bounded size, a minimal ``/dev`` and a ``/proc`` of its own PID namespace — and
  the mounts it was given: its sandbox (writable) and, for training jobs and model replicas,
  their staged inputs (read-only) and outputs. Nothing of ``ENCLAVE_HOME`` (keys, database,
  tokens, blobs, other sandboxes) is visible: a hidden directory that lies under a system
  mount is covered by an empty tmpfs.

bubblewrap runs as root (the control plane's privilege is needed to switch to the job's uid),
with no user namespace; ``setpriv`` inside drops to the job's uid before anything of the job
runs. Without ``bwrap``/``setpriv`` or that privilege Enclave refuses to run jobs (fail closed):
:func:`unavailable` says why.

The job's own environment never reaches a process that runs as root (bubblewrap, setpriv, the
engine's launch script): ``LD_PRELOAD``, ``PATH`` and their kind, set by the job's author,
would otherwise choose what those processes load or run. The privileged chain runs with the
control plane's environment (:data:`SAFE_PATH`, the limits); the job's arrives as a file,
written by the control plane (:func:`write_env`) and bound read-only into the sandbox, that
the wrapper reads once it is the job's uid.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import shlex
import shutil
import signal
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from enclave import egress
from enclave.errors import InvalidInput
from enclave.executors.base import ExecSpec, Mount

# Job identities: uid = UID_BASE + a slot derived from the job id. A range far above the ones
# distributions hand to accounts and to subordinate-id ranges (/etc/subuid starts at 100000).
UID_BASE = 1_900_000_000
UID_SLOTS = 1 << 24
TMP_SIZE_BYTES = 256 << 20  # the private /tmp (memory-backed) of one sandbox
# The sandbox's own /tmp and /dev/shm: empty tmpfs mounts inside its mount namespace, not the
# host's shared directories (hence ruff's S108 does not apply).
PRIVATE_TMP = ("/tmp", "/dev/shm")  # noqa: S108
# /etc entries a job may read: dynamic linking, certificates, time zones, name service
# configuration (no passwd/shadow, no service configuration or keys such as munge's).
ETC_FILES = ("ld.so.cache", "alternatives", "localtime", "nsswitch.conf")
# Name resolution and certificates matter only where the region grants a network.
ETC_NETWORK_FILES = ("hosts", "resolv.conf", "gai.conf", "host.conf", "ssl", "ca-certificates")
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"  # the privileged chain's PATH, never the job's
# Where the sandbox sees its environment file (see write_env).
ENV_FILE = "/run/enclave/env"
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_PROCESSES = 4096  # per job (its uid is its own): a fork bomb stops there
MAX_OUTPUT_BYTES = 1 << 30  # per file a job writes, stdout and stderr included
# The job's wrapper, the init of its PID namespace, as the job's uid: limits, then the command;
# it forwards SIGTERM (the grace signal: an init gets no signal it has no handler for) and waits
# for the command to really end, and writes its exit status to ``.exit`` in the sandbox, so a
# control plane restarted meanwhile still learns how it ended (the job could write that file
# too: it only ever describes the job's own outcome, and is read without following links).
# The job's environment is read only after the limits (hard limits: the job cannot raise
# them, whatever it names its variables).
WRAPPER = r"""
cd "$1" || exit 126
shift
umask 007
ulimit -v "$ENCLAVE_LIMIT_MEM_KB" 2>/dev/null
ulimit -t "$ENCLAVE_LIMIT_CPU_S" 2>/dev/null
ulimit -p "$ENCLAVE_LIMIT_PROCS" 2>/dev/null
ulimit -f "$ENCLAVE_LIMIT_FILE_BLOCKS" 2>/dev/null
unset ENCLAVE_LIMIT_MEM_KB ENCLAVE_LIMIT_CPU_S ENCLAVE_LIMIT_PROCS ENCLAVE_LIMIT_FILE_BLOCKS
unset OLDPWD  # the control plane's working directory
if [ -f /run/enclave/env ]; then . /run/enclave/env || exit 126; fi
"$@" </dev/null &
child=$!
# The command keeps its own descriptors; the wrapper's stderr goes quiet so that the shell's
# "Killed"/"Terminated" notes never reach the job's output.
exec 2>/dev/null
signalled=0
trap 'signalled=1; kill -TERM "$child" 2>/dev/null' TERM
wait "$child"
rc=$?
# A trap interrupts `wait`; wait again for the job's real status (the shell keeps it).
while [ "$signalled" = 1 ]; do signalled=0; wait "$child"; rc=$?; done
echo "$rc" > .exit.tmp && mv -f .exit.tmp .exit
exit "$rc"
"""
# Accelerator device nodes a job that asked for GPUs sees, where the node has them (NVIDIA's,
# AMD's KFD and DRM render nodes). Which of them it may open is the engine's to enforce (Slurm's
# gres with ConstrainDevices, CUDA_VISIBLE_DEVICES); the sandbox only stops hiding them.
GPU_DEVICES = (
    "/dev/nvidiactl",
    "/dev/nvidia-uvm",
    "/dev/nvidia-uvm-tools",
    "/dev/nvidia-modeset",
    *(f"/dev/nvidia{i}" for i in range(16)),
    "/dev/kfd",
    "/dev/dri",
)
EGRESS_SCRIPT = str(Path(egress.__file__).resolve())  # run as a file by the root-run relay
Network = Literal["none", "allow", "host"]
TOP_LEVEL = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")


@dataclass(frozen=True)
class Confinement:
    uid: int
    sandbox: Path  # writable; the job's working directory and HOME
    mounts: tuple[Mount, ...] = ()
    hidden: tuple[Path, ...] = ()  # never visible, even where a system mount covers them
    gid: int | None = None  # its group: its own (the uid's) unless it shares a scratch space
    env_file: Path | None = None  # the job's environment (write_env), seen at ENV_FILE
    network: Network = "none"
    egress: tuple[str, ...] = ()  # network "allow": the destinations (enclave.egress rules)
    gpus: bool = False  # the job asked for GPUs: the node's accelerator devices are visible


def job_uid(job_id: str) -> int:
    """The job's own uid: stable across its attempts (its checkpoints stay its own)."""
    digest = hashlib.sha256(job_id.encode()).digest()
    return UID_BASE + int.from_bytes(digest[:8], "big") % UID_SLOTS


def limits(spec: ExecSpec) -> dict[str, str]:
    """The wrapper's limits (environment it reads and removes): address space, CPU time,
    processes, file size (the per-job output cap)."""
    return {
        "ENCLAVE_LIMIT_MEM_KB": str(spec.memory_mb * 1024),
        "ENCLAVE_LIMIT_CPU_S": str(spec.walltime_s * spec.cpus_per_node + 5),
        "ENCLAVE_LIMIT_PROCS": str(MAX_PROCESSES),
        "ENCLAVE_LIMIT_FILE_BLOCKS": str(MAX_OUTPUT_BYTES // 512),
    }


def privileged_env(spec: ExecSpec) -> dict[str, str]:
    """All the environment the privileged chain (bubblewrap, setpriv, the wrapper) starts with:
    the control plane's choice, nothing of the job's."""
    return {"PATH": SAFE_PATH, "LANG": "C.UTF-8", **limits(spec)}


def env_script(env: dict[str, str]) -> str:
    """The job's environment as the wrapper reads it: one quoted ``export`` per variable."""
    bad = sorted(k for k in env if not ENV_NAME.match(k))
    if bad:
        raise InvalidInput(f"invalid environment variable name(s): {', '.join(bad)}")
    if any("\x00" in v for v in env.values()):
        raise InvalidInput("an environment value holds a NUL character")
    return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())


def write_env(path: Path, env: dict[str, str], uid: int) -> Path:
    """Write the job's environment file (a new file: never through a link planted there),
    readable by the job's uid alone."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o400)
    try:
        os.write(fd, env_script(env).encode())
        os.fchown(fd, uid, -1)
    finally:
        os.close(fd)
    return path


def wrapped(sandbox: Path, command: list[str]) -> list[str]:
    """``command`` under the wrapper, run in ``sandbox``."""
    return ["sh", "-c", WRAPPER, "enclave-job", str(sandbox), *command]


def unavailable() -> str | None:
    """Why processes cannot be confined here, or None when they can."""
    if shutil.which("bwrap") is None:
        return "bubblewrap (bwrap) is not installed"
    if shutil.which("setpriv") is None:
        return "setpriv (util-linux) is not installed"
    if os.geteuid() != 0:
        return "the control plane must run as root to start jobs under identities of their own"
    return None


@functools.cache
def python_paths() -> list[Path]:
    """The Python installation the control plane runs from, and where ``enclave`` itself lives
    (an editable install keeps it outside site-packages)."""
    import enclave

    found = {Path(sys.prefix), Path(sys.base_prefix), Path(sys.exec_prefix)}
    found.add(Path(enclave.__file__).resolve().parent.parent)
    found.add(Path(os.path.realpath(sys.executable)).parent)
    paths = sorted(p for p in found if p.is_dir())
    return [p for p in paths if not any(p != q and _under(p, q) for q in paths)]  # outermost only


def network_of(settings: Mapping[str, Any]) -> tuple[Network, tuple[str, ...]]:
    """The network a back end's settings grant its confined processes, and the destinations
    of ``"allow"`` (checked: an engine's settings may come from outside a fleet file)."""
    mode, rules = settings.get("network", "none"), tuple(settings.get("network_allow") or ())
    if mode not in ("none", "allow", "host"):
        raise InvalidInput(f'network must be "none", "allow" or "host", got {mode!r}')
    try:
        egress.parse_rules(rules)
    except ValueError as exc:
        raise InvalidInput(f"network_allow: {exc}") from None
    if (mode == "allow") != bool(rules):
        raise InvalidInput('network_allow lists destinations exactly when network = "allow"')
    return mode, rules


def network_env(network: Network) -> dict[str, str]:
    """What a confined process is told about its network: the proxy, where it has one."""
    return dict(egress.PROXY_ENV) if network == "allow" else {}


def argv(c: Confinement, command: list[str]) -> list[str]:
    """The full command line: bubblewrap, then setpriv, then ``command`` as the job's uid —
    with a list of destinations, the egress relay first, which becomes bubblewrap (see
    :mod:`enclave.egress`)."""
    base, system, made_base, binds_base = _system(c.network)
    out = []
    if c.network == "allow":
        if not c.egress:
            raise InvalidInput("network 'allow' needs a list of destinations")
        out += [sys.executable, "-I", "-S", EGRESS_SCRIPT, "relay", "--uid", str(c.uid)]
        for rule in c.egress:
            out += ["--allow", rule]
        out += ["--"]
    out += base
    made, binds = set(made_base), list(binds_base)
    for hidden in c.hidden:
        if any(_under(hidden, s) for s in system):
            out += ["--perms", "0711", "--tmpfs", str(hidden)]
            made.add(hidden)
            binds = [b for b in binds if not _under(hidden, b)]  # what lies below is empty now
    for mount in (Mount(c.sandbox, writable=True), *c.mounts):
        out += _parents(mount.path, made, binds)
        out += ["--bind" if mount.writable else "--ro-bind", str(mount.path), str(mount.path)]
        binds.append(mount.path)
    if c.gpus:
        for device in GPU_DEVICES:  # bound where this node has them
            out += ["--dev-bind-try", device, device]
    if c.env_file is not None:
        out += _parents(Path(ENV_FILE), made, binds)
        out += ["--ro-bind", str(c.env_file), ENV_FILE]
    out += [
        "--",
        "setpriv",
        f"--reuid={c.uid}",
        f"--regid={c.uid if c.gid is None else c.gid}",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--no-new-privs",
        "--",
        *command,
    ]
    return out


@functools.cache
def _system(network: Network) -> tuple[tuple[str, ...], tuple[Path, ...], frozenset[Path], tuple[Path, ...]]:
    """What every sandbox of this process shares (built once): namespaces, its own /dev, /proc,
    /tmp, the read-only system and Python installation. Returns the arguments, the paths bound
    from the host (system and Python), the directories made and the bind mounts so far."""
    out = [
        "bwrap",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        # No cgroup namespace: it would hide only the control plane's cgroup path from
        # /proc/self/cgroup (no cgroup file system is mounted in the sandbox), and costs about
        # a millisecond per start, a tenth of a trivial job's.
        "--hostname",
        "enclave-job",
        "--as-pid-1",
        "--perms",
        "0755",
        "--tmpfs",
        "/",
    ]
    if network != "host":
        out.append("--unshare-net")
    # First the sandbox's own /dev, /proc, /tmp and /dev/shm (POSIX semaphores and shared
    # memory: multiprocessing, joblib), so that what is bound next — the Python installation
    # may lie under /tmp — lands on them instead of being covered by them.
    out += ["--dev", "/dev", "--proc", "/proc"]
    for tmp in PRIVATE_TMP:
        out += ["--size", str(TMP_SIZE_BYTES), "--perms", "1777", "--tmpfs", tmp]
    system: list[Path] = [Path("/usr")]
    for name in TOP_LEVEL:
        host = Path("/") / name
        if host.is_symlink():
            out += ["--symlink", os.readlink(host), str(host)]
        elif host.is_dir():
            system.append(host)
    etc = ETC_FILES + (ETC_NETWORK_FILES if network != "none" else ())
    out += ["--perms", "0755", "--dir", "/etc"]
    for name in etc:
        out += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    python = [p for p in python_paths() if not any(_under(p, s) for s in system)]
    made = {Path("/"), Path("/etc"), Path("/dev"), Path("/proc"), *(Path(t) for t in PRIVATE_TMP)}
    binds: list[Path] = []
    for path in system + python:
        out += _parents(path, made, binds)
        # The Python installation may lie elsewhere on an engine's node: bound where present.
        out += ["--ro-bind-try" if path in python else "--ro-bind", str(path), str(path)]
        binds.append(path)
    cpus = Path("/sys/devices/system/cpu")  # CPU topology, read by numeric libraries
    if cpus.is_dir():
        out += _parents(cpus, made, binds)
        out += ["--ro-bind", str(cpus), str(cpus)]
        binds.append(cpus)
    return tuple(out), tuple(system + python), frozenset(made), tuple(binds)


def give(paths: Iterable[Path], uid: int) -> None:
    """Hand staged folders to the job's uid (without following links), so that it can read
    them — read-only mounts keep them unchanged — and write where it is meant to."""
    for top in paths:
        os.lchown(top, uid, uid)
        if top.is_dir() and not top.is_symlink():
            for root, dirs, files in os.walk(top):
                for name in dirs + files:
                    os.lchown(os.path.join(root, name), uid, uid)


def scratch(root: Path, label_key: str, agency: str) -> Path:
    """The scratch folder of one label and agency (made on first use): owned by root, group
    of its own (derived like a job's uid), setgid and 2770 — its jobs share it, no one else."""
    if not agency or "/" in agency or agency in {".", ".."}:
        raise ValueError(f"not an agency name: {agency!r}")
    root.mkdir(parents=True, exist_ok=True, mode=0o711)
    by_label = root / label_key
    by_label.mkdir(exist_ok=True, mode=0o711)
    share = by_label / agency
    gid = job_uid(f"scratch:{label_key}:{agency}")
    share.mkdir(exist_ok=True, mode=0o770)
    os.lchown(share, 0, gid)
    share.chmod(0o2770)
    return share


def _under(path: Path, parent: Path) -> bool:
    return path == parent or parent in path.parents


def _parents(path: Path, made: set[Path], binds: list[Path]) -> list[str]:
    """Directories leading to a mount point, traversable but not listable by the job (bwrap
    would otherwise copy the host's modes, and a 0700 parent would lock the job out). Those
    inside a bind mount made already are the host's own and are left alone."""
    out: list[str] = []
    for parent in reversed(path.parents):
        if parent in made or any(_under(parent, b) for b in binds):
            continue
        out += ["--perms", "0711", "--dir", str(parent)]
        made.add(parent)
    return out


def sandboxes_of(home: Path) -> list[int]:
    """The bubblewrap processes running jobs or replicas of the control plane at ``home``
    (their command lines name its sandboxes): what outlives a stopped control plane, by design,
    so that the next one adopts it."""
    needle = str(home).encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"bwrap") and any(needle in a for a in argv):
            found.append(int(proc.name))
    return found


def end(bwrap_pids: Iterable[int]) -> int:
    """SIGKILL each sandbox's init (its whole PID namespace goes with it) and its bubblewrap;
    how many sandboxes were ended."""
    ended = 0
    for pid in bwrap_pids:
        try:
            kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            kids = []
        for target in [*(int(k) for k in kids), pid]:
            try:
                os.kill(target, signal.SIGKILL)
            except ProcessLookupError:
                continue
        ended += 1
    return ended
