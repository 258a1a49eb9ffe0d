"""The Ray executor: each job is a Ray job, submitted through Ray's Job Submission REST API.

A region configured with ``backend = { type = "ray", address = "HOST:6379" }`` runs its jobs on
that Ray cluster. The executor talks HTTP to the cluster's job API (the dashboard, by default
``http://HOST:8265``; set ``dashboard = "http://..."`` to override) with ``httpx``; the control
plane itself never imports ``ray`` nor joins the cluster as a driver, so the core installs light
and a restarted control plane needs nothing but the stored handle to find its jobs again.

**Security: whoever reaches Ray's job API runs any command as the user Ray runs as.** So the
cluster asks for a token (Ray's ``RAY_AUTH_MODE=token``) and the region names the file that
holds it: ``token_file`` (read on every request, never through a link, refused when others may
read it; sent as ``Authorization: Bearer``). The job API must also listen on the region's own
accredited network only: ``scripts/ray.sh`` starts the head in a network namespace of its own
whose job API is reached over one veth link from this machine alone. Enclave's label checks
happen before anything reaches Ray, and a region's Ray cluster only ever receives jobs the
region is accredited for. HTTP proxies from the environment are ignored (``trust_env=False``):
job traffic never leaves for a proxy.

How a job maps onto Ray
-----------------------
* **One node** (``nodes == 1``): the entrypoint is a small ``sh`` wrapper around the command,
  with ``entrypoint_num_cpus/gpus/memory`` = the job's per-node CPUs, GPUs and memory, so Ray
  starts it only once those are free (it stays ``PENDING`` until then, as on a full cluster).
* **Gang** (``nodes > 1``): the wrapper runs a small Ray driver instead, which reserves a
  placement group of ``nodes`` bundles (CPUs, GPUs, memory each) with ``STRICT_SPREAD`` — all
  or nothing, one bundle per node — and only then starts the command once per bundle (rank
  ``ENCLAVE_RANK`` of ``ENCLAVE_NODES``; ``ENCLAVE_HOSTS`` lists the nodes' addresses). Until the
  whole gang fits nothing starts and the log says what it waits for.
* The command runs with the region's Ray environment plus the job's own variables
  (``ENCLAVE_JOB_ID``, ``ENCLAVE_REGION``, ``ENCLAVE_CPUS``), in a scratch directory on the node
  (``HOME`` and ``TMPDIR`` point there; removed when the job ends), umask 077. The environment
  is written into the entrypoint shell-quoted — never through Ray's ``runtime_env``, which
  expands ``${VAR}`` in values.
* **Output**: Ray merges stdout and stderr into one job log. On every status change and on
  reads the executor copies the job's part of that log (the wrapper brackets it with markers
  carrying a per-job nonce) into ``<root>/<label digest>/<job id>/stdout``; ``stderr`` holds
  only Ray's own error message when Ray, not the command, failed the job.
* **Exit codes** are the command's own: the wrapper prints the status it got from ``wait``
  after the output, so a signal death reads 128+signal (as in a shell) and a stopped job
  reports what the command really did with its SIGTERM. Ray's ``driver_exit_code`` is only the
  fallback.
* **Cancel** is Ray's ``stop``: SIGTERM to the command and all its descendants, then SIGKILL
  after ``RAY_JOB_STOP_WAIT_TIME_S`` — which the executor sets per job (``runtime_env`` of the
  job supervisor) to the region's grace (``grace_s``, default 10 s). ``kill`` asks again; the
  SIGKILL itself comes from Ray when that grace ends. A job cancelled while Ray still holds
  it ``PENDING`` is reported ended (143) at once; should Ray start it later, the queued stop
  ends it within milliseconds.
* **Status** is cached: ``poll`` answers from memory and a background thread refreshes the
  jobs being polled every ``status_ttl_s`` (0.5 s), so the control plane's 10 ms loop never waits
  on HTTP. The first poll of a handle this instance has not seen (a restarted control plane)
  asks Ray at once. A job Ray no longer knows is ``LOST``; so is one whose job API has not
  answered for ``lost_after_s`` (120 s).
* ``cleanup`` deletes the Ray job's record and logs from the cluster, and the local files.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import math
import os
import re
import secrets
import shlex
import shutil
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from enclave.errors import InvalidInput, Unavailable
from enclave.executors import confine
from enclave.executors.base import NOT_ENDED, ExecSpec, Handle, Health, RunState, Status

log = logging.getLogger("enclave.executors.ray")

DEFAULT_ADDRESS = "127.0.0.1:6379"
DASHBOARD_PORT = 8265
ACTIVE = frozenset({"PENDING", "RUNNING"})
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Ray's supervisor failed the job without the command having run to a status: the node or
# the supervisor died (the job may be retried elsewhere) ...
LOST_ERRORS = frozenset({"JOB_SUPERVISOR_ACTOR_DIED", "JOB_SUPERVISOR_ACTOR_UNKNOWN_FAILURE"})
SIGTERM, SIGKILL = 15, 9
# What a recovered handle is read back from: the entrypoint's nonce and a gang's width.
NONCE = re.compile(r"n=([0-9a-f]{16});")
GANG_NODES = re.compile(r'"nodes": (\d+)')
# What a job keeps of the Ray supervisor's environment: the accelerators Ray assigned it.
ACCELERATOR_ENV = ("CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES")

# The entrypoint: `sh -c` runs it on a Ray node (as a child of the job supervisor). It is
# filled in per job: {nonce}, {exports} (shell-quoted assignments), {env_script} and {command}.
ENTRYPOINT = (
    # The grace signal: Ray's stop signals every process of the job, bubblewrap included,
    # which dies of it; the sandbox's init (the job's wrapper) forwards it to the command and
    # records the command's status in the sandbox's .exit. So the status is taken from there
    # once the sandbox's init is gone (nothing of the job runs any more: no race), read only
    # if it is a plain file holding a number — the job could have written it, and it only
    # ever describes the job's own outcome.
    "n={nonce}; s=0; i=; trap 's=1; kill -TERM $i 2>/dev/null' TERM; "
    "ENCLAVE_RAY_PY=$(readlink /proc/$PPID/exe 2>/dev/null || command -v python3); "
    'd={sandbox}; mkdir -m 0700 "$d" && chown {uid}:{uid} "$d" && cd "$d" || exit 126; '
    # The job's environment, as a new file the wrapper reads as the job's uid ({env_script}
    # is empty for a gang: each rank writes its own); this shell, bubblewrap and setpriv run
    # as root and keep the control plane's ({exports}).
    "{env_script}"
    'export HOME="$d" TMPDIR="$d" ENCLAVE_RAY_PY {exports}; umask 077; '
    'printf "@%s begin\\n" "$n"; '
    # The job has its own copies of the descriptors; the wrapper's stderr goes quiet so that
    # its shell's "Killed"/"Terminated" notes never reach the job's output.
    "{command} </dev/null & c=$!; exec 2>/dev/null; "
    # The sandbox's init: bubblewrap's only child, there within milliseconds.
    'k=0; while [ -z "$i" ] && [ $k -lt 500 ] && kill -0 $c 2>/dev/null; do '
    'i=$(cat /proc/$c/task/$c/children 2>/dev/null); k=$((k+1)); [ -n "$i" ] || sleep 0.01; done; '
    'wait "$c"; rc=$?; while [ "$s" = 1 ]; do s=0; wait "$c"; rc=$?; done; '
    'if [ -n "$i" ]; then while kill -0 $i 2>/dev/null; do sleep 0.05; done; e="$d/.exit"; '
    'if [ -f "$e" ] && [ ! -h "$e" ]; then v=$(head -c 8 "$e"); case "$v" in ""|*[!0-9]*) ;; *) rc=$v;; esac; fi; fi; '
    'cd / && rm -rf "$d" "$d.env"; printf "\\n@%s exit %s\\n" "$n" "$rc"; exit "$rc" #{nonce}'
)

# The gang driver (nodes > 1), run by the Ray cluster's own Python: a placement group of one
# bundle per node (STRICT_SPREAD: all or nothing), then one rank process per bundle.
GANG_DRIVER = r"""
import ctypes, json, os, shlex, signal, socket, subprocess, sys, threading
# The ranks' output comes back through this driver: each line as is, prefixed "(rankN pid=...)".
os.environ.update(RAY_DEDUP_LOGS="0", RAY_COLOR_PREFIX="0")
import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

spec, argv = json.loads(sys.argv[1]), sys.argv[2:]
# This node's address as the cluster sees it: the local end of a connection to the GCS (Ray
# would otherwise probe a public resolver to guess it).
gcs = os.environ.get("RAY_ADDRESS", "127.0.0.1:6379").rsplit(":", 1)
with socket.create_connection((gcs[0], int(gcs[1])), timeout=10) as conn:
    here = conn.getsockname()[0]
ray.init(log_to_driver=True, logging_level="WARNING", _node_ip_address=here)
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())  # after ray.init, which installs its own
bundle = {k: v for k, v in (("CPU", spec["cpus"]), ("GPU", spec["gpus"]), ("memory", spec["memory"])) if v}
n = spec["nodes"]
pg = placement_group([dict(bundle) for _ in range(n)], strategy="STRICT_SPREAD")
print(f"enclave: waiting for a gang of {n} nodes ({bundle} each, STRICT_SPREAD)", flush=True)
while not stop.is_set() and not ray.wait([pg.ready()], timeout=0.5)[0]:
    pass
if stop.is_set():
    remove_placement_group(pg)
    sys.exit(128 + signal.SIGTERM)
print(f"enclave: gang of {n} nodes placed", flush=True)


def _die_with_parent():
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: end with the Ray worker


@ray.remote(max_concurrency=2)
class Rank:
    def __init__(self, rank):
        self.rank = rank

    def __repr__(self):
        return f"rank{self.rank}"

    def host(self):
        return ray.util.get_node_ip_address()

    def run(self, env):
        # The rank's sandbox: made here, handed to the job's uid; the command runs confined in it.
        work = spec["sandbox"].replace("@RANK@", str(self.rank))
        os.mkdir(work, 0o700)
        os.chown(work, spec["uid"], spec["uid"])
        # The job's environment goes to the wrapper alone, as a file (never to bubblewrap or
        # setpriv, which run as root): one quoted export per variable.
        env = {**env, "HOME": work, "TMPDIR": work}
        fd = os.open(work + ".env", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o400)
        os.write(fd, "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items()).encode())
        os.fchown(fd, spec["uid"], -1)
        os.close(fd)
        rank_argv = [a.replace("@RANK@", str(self.rank)) for a in argv]
        # Enclave's environment and the devices Ray gave this rank: nothing else of Ray's.
        keep = {k: os.environ[k] for k in spec["keep"] if k in os.environ}
        self.proc = subprocess.Popen(rank_argv, env={**spec["privileged"], **keep}, cwd="/",
                                     stdin=subprocess.DEVNULL, start_new_session=True,
                                     preexec_fn=_die_with_parent)
        rc = self.proc.wait()
        subprocess.run(["rm", "-rf", work, work + ".env"], check=False)
        return 128 - rc if rc < 0 else rc

    def signal(self, sig):
        # To the sandbox's init (the job's wrapper, bubblewrap's only child), which forwards it.
        proc = getattr(self, "proc", None)
        if proc is not None and proc.poll() is None:
            try:
                with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as fh:
                    kids = [int(k) for k in fh.read().split()]
            except OSError:
                kids = []
            for kid in kids:
                os.kill(kid, sig)


opts = {"num_cpus": bundle.get("CPU", 0), "num_gpus": bundle.get("GPU", 0), "memory": bundle.get("memory")}
ranks = [
    Rank.options(**opts, scheduling_strategy=PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=i)).remote(i)
    for i in range(n)
]
hosts = ray.get([r.host.remote() for r in ranks])
base = {**spec["env"], "ENCLAVE_NODES": str(n), "ENCLAVE_HOSTS": ",".join(hosts), "ENCLAVE_MASTER_ADDR": hosts[0]}
pending = [r.run.remote({**base, "ENCLAVE_RANK": str(i)}) for i, r in enumerate(ranks)]
refs, signalled = list(pending), False
while pending:
    _done, pending = ray.wait(pending, timeout=0.2)
    if stop.is_set() and not signalled:
        signalled = True
        ray.get([r.signal.remote(signal.SIGTERM) for r in ranks])
codes = ray.get(refs)
sys.exit(next((c for c in codes if c), 0))
"""


@dataclass
class _Known:
    """What this instance last learnt about one Ray job."""

    handle: Handle
    status: Status | None = None
    fetched_s: float = float("-inf")
    wanted_s: float = 0.0  # when poll() last asked: the refresher only follows polled jobs
    unreachable_since: float | None = None


class RayExecutor:
    type = "ray"
    stages_files = True
    runs_here = False

    def __init__(self, root: Path, backend: Any = None, hidden: tuple[Path, ...] = ()) -> None:
        conf: dict[str, Any] = dict(
            backend.model_dump(exclude_none=True) if hasattr(backend, "model_dump") else backend or {}
        )
        self.root = root
        self.hidden = (*hidden, root)  # never visible to a job (ENCLAVE_HOME)
        self.network, self.egress = confine.network_of(conf)
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.address = str(conf.get("address") or DEFAULT_ADDRESS)
        host = self.address.removeprefix("ray://").rsplit(":", 1)[0] or "127.0.0.1"
        dashboard = str(conf.get("dashboard") or f"{host}:{DASHBOARD_PORT}")
        self.dashboard = dashboard if "://" in dashboard else f"http://{dashboard}"
        self.token_file = conf.get("token_file")
        self.grace_s = float(conf.get("grace_s", 10.0))
        self.timeout_s = float(conf.get("timeout_s", 10.0))
        self.status_ttl_s = float(conf.get("status_ttl_s", 0.5))
        self.lost_after_s = float(conf.get("lost_after_s", 120.0))
        self._http_client: httpx.Client | None = None
        self._known: dict[str, _Known] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._refresher: threading.Thread | None = None

    def _client(self, timeout_s: float | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=self.dashboard,
            timeout=timeout_s or self.timeout_s,
            trust_env=False,
            auth=_TokenAuth(Path(self.token_file)) if self.token_file else None,
        )

    @property
    def _http(self) -> httpx.Client:
        """Made on first use: executors built only to read a path or a health never open one."""
        if self._http_client is None:
            self._http_client = self._client()
        return self._http_client

    def close(self) -> None:
        if self._http_client is not None:
            self._http_client.close()
            self._http_client = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def sandbox(self, spec: ExecSpec) -> Path:
        return self.root / spec.label_key / spec.job_id

    # -- start -------------------------------------------------------------------------------
    def start(self, spec: ExecSpec) -> Handle:
        if not spec.command:
            raise InvalidInput("a job needs a command")
        bad = [k for k in spec.env if not ENV_NAME.match(k)]
        if bad:
            raise InvalidInput(f"invalid environment variable name(s): {', '.join(sorted(bad))}")
        nonce = secrets.token_hex(8)
        submission_id = f"enclave-{spec.job_id}-{secrets.token_hex(4)}"
        env = {
            **confine.network_env(self.network),
            **spec.env,
            "ENCLAVE_JOB_ID": spec.job_id,
            "ENCLAVE_REGION": spec.region,
            "ENCLAVE_CPUS": str(spec.cpus_per_node),
        }
        memory = spec.memory_mb * 1024 * 1024
        uid = confine.job_uid(spec.job_id)
        # The sandbox on the Ray node, made by the entrypoint (or, for a gang, each rank),
        # owned by the job's uid; the command runs confined in it (enclave.executors.confine).
        sandbox = Path(f"/tmp/enclave-job.{nonce}" + (".@RANK@" if spec.nodes > 1 else ""))  # noqa: S108
        privileged = confine.privileged_env(spec)
        env_file = Path(f"{sandbox}.env")
        jail = confine.Confinement(
            uid,
            sandbox,
            spec.mounts,
            hidden=self.hidden,
            env_file=env_file,
            network=self.network,
            egress=self.egress,
            gpus=spec.gpus_per_node > 0,
        )
        confined = confine.argv(jail, confine.wrapped(sandbox, spec.command))
        body: dict[str, Any] = {
            "submission_id": submission_id,
            "metadata": {"enclave_job": spec.job_id, "enclave_region": spec.region},
            # The supervisor's environment: Ray's grace between a stop's SIGTERM and SIGKILL.
            "runtime_env": {"env_vars": {"RAY_JOB_STOP_WAIT_TIME_S": str(math.ceil(self.grace_s))}},
        }
        if spec.nodes > 1:
            gang = {
                "nodes": spec.nodes,
                "cpus": spec.cpus_per_node,
                "gpus": spec.gpus_per_node,
                "memory": memory,
                "env": env,
                "privileged": privileged,
                "keep": ACCELERATOR_ENV,
                "uid": uid,
                "sandbox": str(sandbox),
            }
            command = ['"$ENCLAVE_RAY_PY"', "-c", shlex.quote(GANG_DRIVER), shlex.quote(json.dumps(gang))]
            command += [shlex.quote(a) for a in confined]  # each rank in a session of its own
            body |= {"entrypoint_num_cpus": 0, "entrypoint_num_gpus": 0}
        else:
            # The supervisor's environment (Ray's own settings, the token's path) stops here:
            # the privileged chain starts with Enclave's, plus the devices Ray gave the job.
            keep = [f'${{{k}+"{k}=${k}"}}' for k in ACCELERATOR_ENV]
            privileged_args = [shlex.quote(f"{k}={v}") for k, v in privileged.items()]
            command = ["env", "-i", *privileged_args, *keep, "setsid", *(shlex.quote(a) for a in confined)]
            body |= {
                "entrypoint_num_cpus": spec.cpus_per_node,
                "entrypoint_num_gpus": spec.gpus_per_node,
                "entrypoint_memory": memory,
            }
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in privileged.items())
        env_script = ""
        if spec.nodes == 1:
            text = confine.env_script({**env, "HOME": str(sandbox), "TMPDIR": str(sandbox)})
            env_script = (
                f'(umask 077; set -C; printf %s {shlex.quote(text)} > "$d.env") '
                f'&& chown {uid} "$d.env" || exit 126; '
            )
        body["entrypoint"] = ENTRYPOINT.format(
            env_script=env_script,
            nonce=nonce,
            exports=exports,
            command=" ".join(command),
            sandbox=shlex.quote(str(sandbox).replace(".@RANK@", ".driver")),
            uid=uid,
        )
        workdir = self.sandbox(spec)
        workdir.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        workdir.mkdir(mode=0o700, exist_ok=True)
        for name in ("stdout", "stderr"):
            _write(workdir / name, "")
        try:
            resp = self._http.post("/api/jobs/", json=body)
        except httpx.HTTPError as exc:
            raise Unavailable(f"Ray job API at {self.dashboard} is unreachable: {exc}") from exc
        if resp.status_code != 200:
            raise Unavailable(f"Ray refused the job ({resp.status_code}): {resp.text.strip()[-500:]}")
        handle: Handle = {
            "submission_id": submission_id,
            "nonce": nonce,
            "dir": str(workdir),
            "nodes": spec.nodes,
            "grace_s": self.grace_s,
        }
        with self._lock:
            self._known[submission_id] = _Known(handle, Status(RunState.RUNNING), time.monotonic())
        return handle

    def recover(self, job_id: str, label_key: str, since: float) -> Handle | None:
        """The handle of a submission whose handle was never recorded (the control plane died
        between Ray taking the job and committing its handle), or None if Ray never took it:
        so that a restarted control plane adopts the job instead of submitting it again. This
        attempt's output folder (made after ``since``, before the submission) must exist; the
        Ray job is the one whose metadata names this job and whose submission id and nonce
        this executor wrote, submitted since then."""
        workdir = self.root / label_key / job_id
        try:
            if (workdir / "stdout").stat().st_ctime < since:
                return None
        except FileNotFoundError:
            return None
        try:
            resp = self._http.get("/api/jobs/")
        except httpx.HTTPError as exc:
            raise Unavailable(f"Ray job API at {self.dashboard} is unreachable: {exc}") from exc
        if resp.status_code != 200:
            raise Unavailable(f"Ray's job list answered {resp.status_code}")
        found = []
        for info in resp.json():
            sid, entrypoint = str(info.get("submission_id") or ""), str(info.get("entrypoint") or "")
            nonce, gang = NONCE.match(entrypoint), GANG_NODES.search(entrypoint)
            if (
                (info.get("metadata") or {}).get("enclave_job") == job_id
                and sid.startswith(f"enclave-{job_id}-")
                and nonce is not None
                and (info.get("start_time") or 0) >= since * 1000
            ):
                nodes = int(gang.group(1)) if gang else 1
                found.append((info.get("start_time") or 0, sid, nonce.group(1), nodes))
        if not found:
            return None
        _at, sid, nonce, nodes = max(found)
        return {
            "submission_id": sid,
            "nonce": nonce,
            "dir": str(workdir),
            "nodes": nodes,
            "grace_s": self.grace_s,
        }

    # -- status ------------------------------------------------------------------------------
    def poll(self, handle: Handle) -> Status:
        sid = handle["submission_id"]
        now = time.monotonic()
        with self._lock:
            known = self._known.get(sid)
            if known is not None:
                known.wanted_s = now
                if known.status is not None:
                    if known.status.state in NOT_ENDED:
                        self._ensure_refresher()
                    return known.status
        # A handle this instance has never seen (started by an earlier server process).
        final = _read_final(Path(handle["dir"]))
        if final is None:
            final = self._refresh(handle)
        with self._lock:
            known = self._known.setdefault(sid, _Known(handle))
            known.status, known.fetched_s, known.wanted_s = final, time.monotonic(), now
        if final.state in NOT_ENDED:
            self._ensure_refresher()
        return final

    def _refresh(
        self, handle: Handle, info: dict[str, Any] | None = None, http: httpx.Client | None = None
    ) -> Status:
        """Ask Ray (unless ``info`` already came with a list); on an ending, keep the logs first."""
        http = http or self._http
        sid = handle["submission_id"]
        if info is None:
            try:
                resp = http.get(f"/api/jobs/{sid}")
            except httpx.HTTPError:
                return self._unreachable(handle)
            if resp.status_code == 404:
                return self._finalise(handle, Status(RunState.LOST), "Ray no longer knows this job\n")
            if resp.status_code != 200:
                return self._unreachable(handle)
            info = resp.json()
        with self._lock:
            known = self._known.get(sid)
            if known is not None:
                known.unreachable_since = None
        state = info.get("status")
        dirpath = Path(handle["dir"])
        if state in ACTIVE:
            if state == "PENDING" and (dirpath / ".cancelled").exists():
                never = "cancelled before Ray started the job"
                return self._finalise(handle, Status(RunState.EXITED, 128 + SIGTERM, SIGTERM), never)
            return Status(RunState.QUEUED if state == "PENDING" else RunState.RUNNING)
        try:
            raw = self._logs(sid, http)
        except (httpx.HTTPError, ValueError):
            return self._unreachable(handle)
        out, code, began = _job_output(raw, handle)
        message = str(info.get("message") or "")
        error_type = str(info.get("error_type") or "")
        note: str | None = None
        if code is None:
            if state == "SUCCEEDED":
                code = 0
            elif state == "STOPPED":
                # No status from the wrapper: it was SIGKILLed after the grace (or never ran).
                code = 128 + (SIGKILL if began else SIGTERM)
            elif error_type in LOST_ERRORS and not began:
                return self._finalise(handle, Status(RunState.LOST), message, out)
            elif info.get("driver_exit_code") is not None:
                code = int(info["driver_exit_code"])
            else:
                code = 1
            if state == "FAILED" and message:
                note = message
        sig = code - 128 if 128 < code < 160 else None
        return self._finalise(handle, Status(RunState.EXITED, code, sig), note, out)

    def _finalise(self, handle: Handle, status: Status, note: str | None, out: str | None = None) -> Status:
        """Keep the final output, Ray's note and the status on disk (what a new instance reads)."""
        dirpath = Path(handle["dir"])
        if dirpath.is_dir():
            with contextlib.suppress(OSError), _locked(dirpath):
                if out is not None:
                    _write(dirpath / "stdout", out)
                if note:
                    _write(dirpath / "stderr", f"ray: {note.strip()}\n")
                record = {"state": str(status.state), "exit_code": status.exit_code, "signal": status.signal}
                _write(dirpath / ".final", json.dumps(record))
        return status

    def _unreachable(self, handle: Handle) -> Status:
        now = time.monotonic()
        with self._lock:
            known = self._known.setdefault(handle["submission_id"], _Known(handle))
            if known.unreachable_since is None:
                known.unreachable_since = now
            since = known.unreachable_since
        if now - since >= self.lost_after_s:
            note = f"Ray job API at {self.dashboard} unreachable for {now - since:.0f} s"
            return self._finalise(handle, Status(RunState.LOST), note)
        return Status(RunState.RUNNING)

    def _logs(self, sid: str, http: httpx.Client | None = None) -> str:
        resp = (http or self._http).get(f"/api/jobs/{sid}/logs")
        resp.raise_for_status()
        return str(resp.json().get("logs") or "")

    # -- the background refresher ---------------------------------------------------------
    def _ensure_refresher(self) -> None:
        if self._refresher is None or not self._refresher.is_alive():
            self._refresher = threading.Thread(
                target=self._refresh_loop, name="enclave-ray-poll", daemon=True
            )
            self._refresher.start()

    def _refresh_loop(self) -> None:
        http = self._client()  # its own connections: start/cancel on the caller's thread never wait
        idle_since = time.monotonic()
        try:
            while True:
                now = time.monotonic()
                with self._lock:
                    due = [
                        k
                        for k in self._known.values()
                        if k.status is not None
                        and k.status.state in NOT_ENDED
                        and now - k.wanted_s < 10.0
                        and now - k.fetched_s >= self.status_ttl_s
                    ]
                    watched = any(
                        k.status is not None and k.status.state in NOT_ENDED and now - k.wanted_s < 10.0
                        for k in self._known.values()
                    )
                if not watched:
                    if now - idle_since > 30.0:
                        return
                else:
                    idle_since = now
                infos: dict[str, dict[str, Any]] = {}
                if len(due) > 8:  # one list call instead of many single ones
                    with contextlib.suppress(httpx.HTTPError, ValueError):
                        resp = http.get("/api/jobs/")
                        if resp.status_code == 200:
                            infos = {j.get("submission_id"): j for j in resp.json() if j.get("submission_id")}
                for known in due:
                    sid = known.handle["submission_id"]
                    try:
                        status = self._refresh(known.handle, infos.get(sid), http)
                    except Exception:  # one odd answer must not stop the refresher
                        log.exception("ray: could not refresh job %s", sid)
                        continue
                    with self._lock:
                        known.status, known.fetched_s = status, time.monotonic()
                self._wake.wait(min(self.status_ttl_s / 2, 0.25))
                self._wake.clear()
        finally:
            http.close()

    # -- stopping ----------------------------------------------------------------------------
    def cancel(self, handle: Handle, grace_s: float) -> None:
        """Ray's stop: SIGTERM to the command and its descendants, SIGKILL after the job's grace."""
        dirpath = Path(handle["dir"])
        if dirpath.is_dir():
            with contextlib.suppress(OSError):
                (dirpath / ".cancelled").touch()
        self._stop(handle)

    def kill(self, handle: Handle) -> None:
        """Ray's job API has no SIGKILL of its own: Ray sends it when the stop's grace ends."""
        self._stop(handle)

    def _stop(self, handle: Handle) -> None:
        sid = handle["submission_id"]
        try:
            resp = self._http.post(f"/api/jobs/{sid}/stop")
            if resp.status_code not in (200, 404):
                log.warning("ray: stop of %s answered %s: %s", sid, resp.status_code, resp.text[-300:])
        except httpx.HTTPError as exc:
            log.warning("ray: could not stop %s: %s", sid, exc)
        with self._lock:
            known = self._known.get(sid)
            if known is not None:
                known.fetched_s = float("-inf")  # look again at once
        self._wake.set()

    # -- logs and cleanup ----------------------------------------------------------------------
    def log_paths(self, handle: Handle) -> dict[str, Path]:
        """The job's output so far; refreshed from Ray (at most once a second) while it runs."""
        dirpath = Path(handle["dir"])
        out = dirpath / "stdout"
        if dirpath.is_dir() and not (dirpath / ".final").exists():
            try:
                fresh = time.time() - out.stat().st_mtime < 1.0
            except OSError:
                fresh = False
            if not fresh:
                with contextlib.suppress(httpx.HTTPError, ValueError, OSError):
                    text, _code, _began = _job_output(self._logs(handle["submission_id"]), handle)
                    with _locked(dirpath):
                        if not (dirpath / ".final").exists():  # the final copy is never overwritten
                            _write(out, text)
        return {"stdout": out, "stderr": dirpath / "stderr"}

    def cleanup(self, handle: Handle) -> None:
        sid = handle["submission_id"]
        with contextlib.suppress(httpx.HTTPError):
            self._http.delete(f"/api/jobs/{sid}")  # refused (and kept) while Ray still runs it
        with self._lock:
            self._known.pop(sid, None)
        shutil.rmtree(handle["dir"], ignore_errors=True)

    def health(self) -> Health:
        """Whether the region's Ray job API answers (and which Ray it is)."""
        try:
            with self._client(timeout_s=min(self.timeout_s, 2.0)) as http:
                resp = http.get("/api/version")
            if resp.status_code in (401, 403):
                why = "refused the token in" if self.token_file else "wants a token: name its file as"
                return Health(False, f"Ray job API at {self.dashboard} {why} the region's backend.token_file")
            if resp.status_code != 200:
                return Health(False, f"Ray job API at {self.dashboard} answered {resp.status_code}")
            version = resp.json().get("ray_version", "?")
        except (httpx.HTTPError, ValueError) as exc:
            return Health(False, f"Ray job API at {self.dashboard} unreachable: {exc}")
        return Health(True, f"Ray {version}, job API at {self.dashboard}")


class _TokenAuth(httpx.Auth):
    """Ray's token, read from its file for every request (a restarted head may have a new one)."""

    MAX_BYTES = 4096

    def __init__(self, path: Path) -> None:
        self.path = path

    def auth_flow(self, request: httpx.Request) -> Iterator[httpx.Request]:
        try:
            token = _read_token(self.path, self.MAX_BYTES)
        except OSError as exc:
            raise httpx.RequestError(
                f"token_file {self.path}: {exc.strerror or exc}", request=request
            ) from exc
        request.headers["Authorization"] = f"Bearer {token}"
        yield request


def _read_token(path: Path, max_bytes: int) -> str:
    """The token, from a regular file only its owner may read; never through a link."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        if st.st_mode & 0o077:
            raise OSError(errno.EPERM, f"others may read it (mode {stat.S_IMODE(st.st_mode):04o}; chmod 600)")
        token = os.read(fd, max_bytes + 1).decode("ascii", "replace").strip()
    finally:
        os.close(fd)
    if not token or len(token) > max_bytes or not token.isprintable() or " " in token:
        raise OSError(errno.EINVAL, "does not hold one token")
    return token


def _job_output(raw: str, handle: Handle) -> tuple[str, int | None, bool]:
    """The command's own output in Ray's job log, its exit status (None if not printed yet),
    and whether it began at all."""
    nonce, sid = handle["nonce"], handle["submission_id"]
    # Ray writes this line into the same log when it starts the entrypoint, at a point of its
    # choosing (often after the command's first output); the entrypoint ends with #<nonce>.
    ray_line = f"Running entrypoint for job {sid}: "
    i = raw.find(ray_line)
    if i >= 0:
        j = raw.find(f"#{nonce}\n", i)
        if j >= 0:
            raw = raw[:i] + raw[j + len(nonce) + 2 :]
    begin = f"@{nonce} begin\n"
    b = raw.find(begin)
    if b < 0:
        return "", None, False
    body = raw[b + len(begin) :]
    m = re.search(rf"\n@{nonce} exit (\d+)\n", body)
    if m is None:
        return body, None, True
    return body[: m.start()], int(m.group(1)), True


def _read_final(dirpath: Path) -> Status | None:
    try:
        record = json.loads((dirpath / ".final").read_text())
    except (OSError, ValueError):
        return None
    return Status(RunState(record["state"]), record.get("exit_code"), record.get("signal"))


@contextlib.contextmanager
def _locked(dirpath: Path) -> Iterator[None]:
    """Writers of one job's files take turns (the refresher, and readers refreshing the log)."""
    fd = os.open(dirpath / ".lock", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write(path: Path, text: str) -> None:
    """Replace a file atomically (readers never see half of it), mode 0600."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)
