"""The local executor with real processes: exit codes, output, sandbox, signals, limits,
and jobs adopted from an earlier server process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from enclave.executors.base import ExecSpec, RunState, Status
from enclave.executors.local import LocalExecutor
from tests.conftest import wait_for


def spec(
    job_id: str, command: list[str], *, label_key: str = "label-a", memory_mb: int = 512, walltime_s: int = 60
) -> ExecSpec:
    return ExecSpec(
        job_id=job_id,
        label_key=label_key,
        command=command,
        env={"GREETING": "hi"},
        nodes=1,
        cpus_per_node=1,
        memory_mb=memory_mb,
        gpus_per_node=0,
        walltime_s=walltime_s,
        region="gov-east",
        pool="cpu",
    )


def wait_done(ex: LocalExecutor, handle: dict[str, object], timeout_s: float = 20.0) -> Status:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = ex.poll(handle)
        if status.state is not RunState.RUNNING:
            return status
        time.sleep(0.02)
    raise AssertionError("job did not end in time")


@pytest.fixture
def ex(tmp_path: Path) -> LocalExecutor:
    return LocalExecutor(tmp_path / "sandboxes")


@pytest.mark.parametrize(
    ("command", "code"), [(["true"], 0), (["sh", "-c", "exit 3"], 3), (["no-such-program-xyz"], 127)]
)
def test_exit_codes(ex: LocalExecutor, command: list[str], code: int) -> None:
    status = wait_done(ex, ex.start(spec("j1", command)))
    assert status.state is RunState.EXITED
    assert status.exit_code == code
    assert status.cpu_s is not None and status.cpu_s >= 0


def test_output_capture_and_environment(ex: LocalExecutor) -> None:
    handle = ex.start(spec("j1", ["sh", "-c", 'echo "$GREETING $ENCLAVE_JOB_ID"; echo oops >&2; pwd']))
    wait_done(ex, handle)
    paths = ex.log_paths(handle)
    out = paths["stdout"].read_text().splitlines()
    assert out[0] == "hi j1"
    assert out[1] == handle["dir"]  # runs inside its sandbox
    assert paths["stderr"].read_text() == "oops\n"


def test_sandbox_permissions_and_label_separation(ex: LocalExecutor) -> None:
    a = ex.start(spec("ja", ["sh", "-c", "echo secret > data.txt"], label_key="label-a"))
    b = ex.start(spec("jb", ["true"], label_key="label-b"))
    wait_done(ex, a)
    wait_done(ex, b)
    dir_a, dir_b = Path(a["dir"]), Path(b["dir"])
    assert dir_a.parent != dir_b.parent  # different labels never share a directory
    for d in (dir_a, dir_a.parent, dir_a.parent.parent, dir_b):
        assert d.stat().st_mode & 0o777 == 0o700
    # Nothing for others; the group is the job's own (or its label and agency's scratch group).
    assert (dir_a / "data.txt").stat().st_mode & 0o007 == 0
    for f in ("stdout", "stderr"):  # the control plane's, beside the sandbox
        assert (Path(a["folder"]) / f).stat().st_mode & 0o777 == 0o600


def test_cancel_sends_grace_signal(ex: LocalExecutor) -> None:
    script = "trap 'echo term > got-term; exit 0' TERM; touch ready; sleep 30 & wait"
    handle = ex.start(spec("j1", ["sh", "-c", script]))
    marker = Path(handle["dir"]) / "got-term"  # the job sees only its sandbox
    wait_for(Path(handle["dir"]) / "ready")
    ex.cancel(handle, grace_s=5)
    status = wait_done(ex, handle)
    assert marker.read_text() == "term\n"  # the job saw SIGTERM and could clean up
    assert status.exit_code == 0


def test_kill_after_grace_when_term_is_ignored(ex: LocalExecutor) -> None:
    handle = ex.start(spec("j1", ["sh", "-c", "trap '' TERM; touch ready; sleep 30"]))
    wait_for(Path(handle["dir"]) / "ready")
    ex.cancel(handle, grace_s=0.1)
    time.sleep(0.5)
    assert ex.poll(handle).state is RunState.RUNNING  # still alive: it ignored SIGTERM
    ex.kill(handle)
    status = wait_done(ex, handle)
    assert status.signal == 9 and status.exit_code == 137


def test_memory_limit_applies(ex: LocalExecutor) -> None:
    script = "x = bytearray(600 * 1024 * 1024)"
    status = wait_done(ex, ex.start(spec("j1", [sys.executable, "-c", script], memory_mb=300)))
    assert status.exit_code != 0
    roomy = wait_done(
        ex, ex.start(spec("j2", [sys.executable, "-c", "x = bytearray(10 * 1024 * 1024)"], memory_mb=2048))
    )
    assert roomy.exit_code == 0


ADOPT = """
import json, sys
from pathlib import Path
from enclave.executors.local import LocalExecutor
from enclave.executors.base import ExecSpec
ex = LocalExecutor(Path(sys.argv[1]))
spec = ExecSpec(job_id=sys.argv[2], label_key="k", command=sys.argv[3:], env={}, nodes=1, cpus_per_node=1,
                memory_mb=512, gpus_per_node=0, walltime_s=60, region="r", pool="p")
print(json.dumps(ex.start(spec)))
"""


def test_adopts_jobs_started_by_an_earlier_process(tmp_path: Path) -> None:
    """A restarted server is not the parent: it reads the wrapper's pid and exit records."""
    root = tmp_path / "sandboxes"
    out = subprocess.run(
        [sys.executable, "-c", ADOPT, str(root), "j1", "sh", "-c", "sleep 1; exit 5"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    handle = json.loads(out.stdout)
    ex = LocalExecutor(root)
    assert ex.poll(handle).state is RunState.RUNNING
    status = wait_done(ex, handle)
    assert (status.state, status.exit_code) == (RunState.EXITED, 5)


def test_unknown_process_is_lost(ex: LocalExecutor, tmp_path: Path) -> None:
    gone = {"pid": 2**22 - 7, "dir": str(tmp_path / "nothing"), "start_ticks": 1}
    assert ex.poll(gone).state is RunState.LOST


def test_cleanup_removes_sandbox(ex: LocalExecutor) -> None:
    handle = ex.start(spec("j1", ["true"]))
    wait_done(ex, handle)
    ex.cleanup(handle)
    assert not os.path.exists(handle["dir"])
