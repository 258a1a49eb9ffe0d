"""Finding 1 of the confinement issue, attacked for real: a job is hostile code.

A real `enclave up` runs real jobs. An UNCLASSIFIED job, written as an attacker would write
it, tries to read the control plane's keys, token and database, another label's sandbox while
that job runs, other processes through /proc, to reach the API port and any network, and to
rewrite the audit log; it reports what it achieved on stdout, which the test reads back
through the API. Every attempt must fail. A second part plants links where the control plane
reads a job's output (logs, training output) and checks that nothing outside is ever read.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from enclave.executors import outputs
from enclave.executors.base import ExecSpec, RunState
from enclave.executors.local import LocalExecutor
from tests.conftest import Server, wait_state

TERMINAL = {"completed", "failed", "cancelled", "timeout"}

ATTACK = r"""
import json, os, socket, sys
home, port, secret_file = sys.argv[1], int(sys.argv[2]), sys.argv[3]
got = {}
def try_read(name, path):
    try:
        with open(path, "rb") as fh:
            got[name] = fh.read(64).hex()
    except OSError as exc:
        got[name] = None
for rel in ("keys/master.key", "keys/audit-ed25519.pem", "admin.token", "enclave.db",
            "audit/checkpoint.json"):
    try_read(rel, os.path.join(home, rel))
try_read("secret-sandbox", secret_file)
try:
    got["home-listing"] = os.listdir(home)
except OSError:
    got["home-listing"] = None
# write: plant a file in the control plane's home, or open its database for writing
try:
    with open(os.path.join(home, "enclave.db"), "r+b"):
        got["db-writable"] = True
except OSError:
    got["db-writable"] = False
got["pids"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
got["uid"], got["gid"] = os.getuid(), os.getgid()
got["cap_eff"] = [l.split()[1] for l in open("/proc/self/status") if l.startswith("CapEff")][0]
got["interfaces"] = sorted(l.split(":")[0].strip() for l in open("/proc/net/dev").readlines()[2:])
try:
    socket.create_connection(("127.0.0.1", port), timeout=2).close()
    got["api"] = True
except OSError:
    got["api"] = False
try:
    os.kill(1, 0); got["init-visible"] = True
except OSError:
    got["init-visible"] = False
print(json.dumps(got))
"""


@pytest.fixture
def site(live_server: Callable[..., Server], tmp_path: Path) -> Iterator[tuple[Server, httpx.Client]]:
    server = live_server(tmp_path / "home")
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {server.admin_token}"}, timeout=30
    ) as admin:
        yield server, admin


def _token(admin: httpx.Client, label: str) -> str:
    r = admin.post("/v1/tokens", json={"user": "admin", "label": label})
    assert r.status_code == 201, r.text
    return str(r.json()["token"])


def _logs(api: httpx.Client, job: str) -> str:
    r = api.get(f"/v1/jobs/{job}/logs", params={"stream": "stdout"})
    assert r.status_code == 200, r.text
    return r.text


def test_a_job_reaches_nothing_of_the_control_plane_nor_of_another_label(
    site: tuple[Server, httpx.Client],
) -> None:
    server, admin = site
    secret = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {_token(admin, 'SECRET')}"})
    low = httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {_token(admin, 'UNCLASSIFIED')}"}
    )
    with secret, low:
        # A SECRET job that keeps a file in its sandbox while the attack runs.
        r = secret.post(
            "/v1/jobs",
            json={
                "name": "keeper",
                "command": ["sh", "-c", "echo crown-jewels > jewels; sleep 20"],
                "walltime_s": 60,
            },
        )
        assert r.status_code == 201, r.text
        keeper = r.json()["id"]
        wait_state(secret, keeper, {"running"})
        sandboxes = list((server.home / "sandboxes").glob(f"*/{keeper}/work"))
        deadline = time.monotonic() + 20
        while not sandboxes or not (sandboxes[0] / "jewels").exists():
            assert time.monotonic() < deadline
            time.sleep(0.1)
            sandboxes = list((server.home / "sandboxes").glob(f"*/{keeper}/work"))
        jewels = sandboxes[0] / "jewels"
        attack = low.post(
            "/v1/jobs",
            json={
                "name": "attack",
                "command": ["python3", "-c", ATTACK, str(server.home), str(server.port), str(jewels)],
                "walltime_s": 60,
            },
        )
        assert attack.status_code == 201, attack.text
        done = wait_state(low, attack.json()["id"], TERMINAL)
        assert done["state"] == "completed", done
        got = json.loads(_logs(low, attack.json()["id"]))
        secret.post(f"/v1/jobs/{keeper}/cancel")
    for rel in (
        "keys/master.key",
        "keys/audit-ed25519.pem",
        "admin.token",
        "enclave.db",
        "audit/checkpoint.json",
    ):
        assert got[rel] is None, rel  # nothing of ENCLAVE_HOME is readable
        assert (server.home / rel).exists()  # ... and it was there to be read
    assert got["secret-sandbox"] is None  # another label's running sandbox: invisible
    assert got["home-listing"] is None and got["db-writable"] is False
    assert got["uid"] != 0 and got["uid"] != os.getuid() and got["gid"] != 0
    assert int(got["cap_eff"], 16) == 0  # no capabilities
    assert got["pids"] == [1, 2] or len(got["pids"]) <= 3  # only its own processes
    assert got["interfaces"] == ["lo"]  # no network but a loopback of its own
    assert got["api"] is False  # the control plane's port is out of reach
    # The control plane's files stay its own.
    for rel in ("keys/master.key", "admin.token"):
        assert (server.home / rel).stat().st_mode & 0o077 == 0


def _spec(job_id: str, command: list[str], env: dict[str, str] | None = None) -> ExecSpec:
    return ExecSpec(
        job_id=job_id,
        label_key="lk",
        command=command,
        env=env or {},
        nodes=1,
        cpus_per_node=1,
        memory_mb=512,
        gpus_per_node=0,
        walltime_s=30,
        region="r",
        pool="p",
    )


LINKS = r"""
import os
os.symlink(os.environ["TARGET"], "stolen")             # a link to a file of the control plane
os.makedirs("out"); os.symlink("/", "out/root")        # a link to a directory
os.symlink(os.environ["TARGET"], "out/model.bin")
open("out/weights.txt", "w").write("mine")
os.mkfifo("out/fifo")                                   # would block a reader
"""


def test_server_side_reads_never_follow_what_a_job_planted(tmp_path: Path) -> None:
    secret = tmp_path / "master.key"
    secret.write_bytes(b"K" * 32)
    secret.chmod(0o600)
    ex = LocalExecutor(tmp_path / "sandboxes")
    handle = ex.start(_spec("links", ["python3", "-c", LINKS], {"TARGET": str(secret)}))
    deadline = time.monotonic() + 30
    while (status := ex.poll(handle)).state is RunState.RUNNING:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert status.exit_code == 0, ex.log_paths(handle)["stderr"].read_text()
    work = Path(handle["dir"])
    assert (work / "stolen").is_symlink()  # the job did plant them
    assert outputs.read_small(work / "stolen") is None
    assert list(outputs.chunks(work / "stolen", 1 << 20)) == []
    assert outputs.read_small(work / "out" / "fifo") is None  # refused at once, not blocked
    kept = tmp_path / "kept"
    copied = outputs.copy_tree(work / "out", kept, 1 << 20)
    assert sorted(p.name for p in kept.rglob("*")) == ["weights.txt"]
    assert copied == 4 and b"K" * 32 not in b"".join(p.read_bytes() for p in kept.rglob("*") if p.is_file())
    # A link in place of the folder itself is refused as a missing folder.
    with pytest.raises(Exception, match="no output folder"):
        outputs.copy_tree(work / "stolen", tmp_path / "k2", 1 << 20)


def test_killing_the_job_ends_every_process_it_started(tmp_path: Path) -> None:
    """A job that escapes its session and process group still dies with its namespace."""
    ex = LocalExecutor(tmp_path / "sandboxes")
    script = "setsid sleep 300 & (trap '' TERM HUP; exec sleep 300) & touch ready; wait"
    handle = ex.start(_spec("escape", ["sh", "-c", script]))
    deadline = time.monotonic() + 20
    while not (Path(handle["dir"]) / "ready").exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    from enclave.executors.confine import job_uid

    uid = job_uid("escape")

    def processes_of_job() -> list[int]:
        found = []
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    if os.stat(f"/proc/{pid}").st_uid == uid:
                        found.append(int(pid))
                except OSError:
                    pass
        return found

    assert len(processes_of_job()) >= 3
    ex.kill(handle)
    deadline = time.monotonic() + 10
    while ex.poll(handle).state is RunState.RUNNING or processes_of_job():
        assert time.monotonic() < deadline, processes_of_job()
        time.sleep(0.05)


def test_job_output_counts_against_the_storage_quota_at_its_label(
    site: tuple[Server, httpx.Client],
) -> None:
    """Finding 8: a 20 MB log under a 100 KB quota blocked every upload of the agency. Now a
    job's output is kept only as far as the quota at its label allows (marked truncated), and
    uploads at other labels never notice it."""
    server, admin = site
    r = admin.put("/v1/agencies/enclave/quotas", json={"storage_bytes": 100_000})
    assert r.status_code == 200, r.text
    low = httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {_token(admin, 'UNCLASSIFIED')}"}
    )
    secret = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {_token(admin, 'SECRET')}"})
    with low, secret:
        job = low.post(
            "/v1/jobs",
            json={
                "name": "chatty",
                "command": ["sh", "-c", "head -c 3000000 /dev/zero | tr '\\0' x"],
                "walltime_s": 60,
            },
        )
        assert job.status_code == 201, job.text
        done = wait_state(low, job.json()["id"], TERMINAL)
        assert done["state"] == "completed", done
        deadline = time.monotonic() + 20
        while "stdout" not in (low.get(f"/v1/jobs/{job.json()['id']}").json().get("logs") or {}):
            assert time.monotonic() < deadline, "the job's output was never kept"
            time.sleep(0.1)
        kept = _logs(low, job.json()["id"])
        assert 0 < len(kept) <= 100_000 and set(kept) == {"x"}
        # The label's quota is used up by the job's output: an upload there is refused ...
        full = low.post("/v1/artifacts", params={"name": "more"}, content=b"y" * 1000)
        assert full.status_code == 413, full.text
        # ... and another label never notices.
        other = secret.post("/v1/artifacts", params={"name": "elsewhere"}, content=b"z" * 50_000)
        assert other.status_code == 201, other.text
        assert "100000" not in full.text and "3000000" not in full.text


def test_the_python_installation_stays_visible_wherever_it_lies(tmp_path: Path) -> None:
    """A checkout under /tmp (as CI's may be) must not be covered by the sandbox's own /tmp."""
    from enclave.executors import confine

    jail = confine.Confinement(confine.job_uid("j"), tmp_path / "sb")
    args = confine.argv(jail, ["true"])
    tmp_at = max(i for i, a in enumerate(args) if a == "/tmp" and args[i - 1] == "--tmpfs")
    for path in confine.python_paths():
        binds = [i for i, a in enumerate(args) if a == str(path) and args[i - 2].startswith("--ro-bind")]
        assert binds and min(binds) > tmp_at, path
    # ... and ENCLAVE_HOME never is, even where a bound folder holds it.
    hidden = confine.python_paths()[0] / "enclave-home"
    args = confine.argv(confine.Confinement(1, tmp_path / "sb", hidden=(hidden,)), ["true"])
    assert ["--tmpfs", str(hidden)] == args[args.index(str(hidden)) - 1 : args.index(str(hidden)) + 1]


# A library whose constructor records who loaded it: appended to $MARK as "uid\n".
PRELOAD_C = r"""
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
__attribute__((constructor)) static void mark(void) {
    const char *path = getenv("MARK");
    if (!path) return;
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT, 0666);
    if (fd < 0) return;
    char line[32];
    int n = snprintf(line, sizeof line, "%u\n", (unsigned)getuid());
    write(fd, line, n);
    close(fd);
}
"""
# The job that lays the trap in its label's scratch space (a path the next job's root-run
# launcher could see): a fake setpriv first on a PATH the next job will name, and the library
# above, compiled in the sandbox.
TRAP = r"""
set -e
cd "$ENCLAVE_SCRATCH"
printf '#!/bin/sh\nid -u >> "$ENCLAVE_SCRATCH_MARK"\nexec /usr/bin/setpriv "$@"\n' > setpriv
chmod 775 setpriv
cat > evil.c <<'C'
__SOURCE__
C
cc -shared -fPIC -o evil.so evil.c
chmod 664 evil.so
touch preload-log setpriv-log
chmod 666 preload-log setpriv-log
"""


def test_the_jobs_environment_never_reaches_the_root_run_launcher(tmp_path: Path) -> None:
    """Found in review: a job's environment went to bubblewrap and setpriv, which run as
    root. ``PATH`` naming a folder the job could write made bubblewrap run the job's own
    ``setpriv`` as root (with every capability, inside the sandbox); ``LD_PRELOAD`` made
    bubblewrap load the job's library as root on the host. Both now reach the job alone."""
    from enclave.fleet import LocalBackend

    scratch = tmp_path / "scratch"
    ex = LocalExecutor(tmp_path / "sandboxes", LocalBackend(scratch=str(scratch)))

    def run(spec: ExecSpec) -> None:
        handle = ex.start(spec)
        deadline = time.monotonic() + 60
        while (status := ex.poll(handle)).state is RunState.RUNNING:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert status.exit_code == 0, ex.log_paths(handle)["stderr"].read_text()

    run(replace(_spec("trap", ["sh", "-c", TRAP.replace("__SOURCE__", PRELOAD_C)]), agency="a"))
    (share,) = [p for p in scratch.glob("*/*") if p.is_dir()]
    assert (share / "evil.so").is_file() and (share / "setpriv").is_file()  # the trap is laid
    victim_env = {
        "PATH": f"{share}:/usr/bin:/bin",
        "LD_PRELOAD": str(share / "evil.so"),
        "MARK": str(share / "preload-log"),
        "ENCLAVE_SCRATCH_MARK": str(share / "setpriv-log"),
    }
    run(replace(_spec("victim", ["sh", "-c", "true"], victim_env), agency="a"))
    from enclave.executors.confine import job_uid

    loaded_by = (share / "preload-log").read_text().split()
    # The job's own processes load what it names (its right, as its own uid) ...
    assert str(job_uid("victim")) in loaded_by
    # ... but nothing run as root ever did, on the host or in the sandbox.
    assert "0" not in loaded_by
    assert (share / "setpriv-log").read_text() == ""


def test_a_job_inherits_no_descriptor_of_the_control_plane(tmp_path: Path) -> None:
    """Whatever started the control plane may have left it inheritable descriptors (a shell's
    or a service manager's pipes): a job gets stdin, stdout and stderr, nothing else."""
    reader, writer = os.pipe()
    os.dup2(writer, 200)  # inheritable, as one handed down from a parent would be
    try:
        ex = LocalExecutor(tmp_path / "sandboxes")
        script = "import os; print(sorted(int(fd) for fd in os.listdir('/proc/self/fd')))"
        handle = ex.start(_spec("fds", ["python3", "-c", script]))
        deadline = time.monotonic() + 30
        while (status := ex.poll(handle)).state is RunState.RUNNING:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert status.exit_code == 0, ex.log_paths(handle)["stderr"].read_text()
        seen = json.loads(ex.log_paths(handle)["stdout"].read_text())
        assert set(seen) <= {0, 1, 2, 3}  # 3: the listing's own descriptor
    finally:
        for fd in (reader, writer, 200):
            os.close(fd)


def test_a_gpu_job_sees_the_nodes_accelerators_and_no_other_job_does(tmp_path: Path) -> None:
    """The accelerator device nodes are shown only to jobs that asked for GPUs (absent ones are
    skipped: the same command line serves every node of an engine). A GPU job runs here, where
    there is no GPU, and sees /dev/nvidia0 exactly where the machine has one (a GPU machine's
    check: the device tool's script, not CI)."""
    from enclave.executors import confine

    asked = confine.argv(replace(confine.Confinement(1, tmp_path / "sb"), gpus=True), ["true"])
    plain = confine.argv(confine.Confinement(1, tmp_path / "sb"), ["true"])
    for device in confine.GPU_DEVICES:
        assert ["--dev-bind-try", device, device] == asked[asked.index(device) - 1 : asked.index(device) + 2]
        assert device not in plain
    ex = LocalExecutor(tmp_path / "sandboxes")
    check = "import os; print(os.path.exists('/dev/nvidia0'))"
    handle = ex.start(replace(_spec("gpu", ["python3", "-c", check]), gpus_per_node=1))
    deadline = time.monotonic() + 30
    while (status := ex.poll(handle)).state is RunState.RUNNING:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert status.exit_code == 0, ex.log_paths(handle)["stderr"].read_text()
    assert ex.log_paths(handle)["stdout"].read_text().split() == [str(Path("/dev/nvidia0").exists())]
