"""The Slurm executor against a real Slurm (Debian slurm-wlm 22.05: munge + slurmctld + slurmd
on this machine, started by ``scripts/slurm.sh start``): exit codes, signals, output, cancel
and kill, gang requests, environment quoting, restart adoption, poll caching, and one
end-to-end run through a real ``enclave up`` whose ``secret-west`` region is Slurm.

Without Slurm installed the module is skipped, except in CI (``CI=true``) where it fails."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from enclave.errors import InvalidInput
from enclave.executors.base import NOT_ENDED, ExecSpec, RunState, Status
from enclave.executors.registry import make_engine_executor
from enclave.executors.slurm import SlurmExecutor, from_fallback, from_sacct
from enclave.fleet import parse_fleet
from tests.conftest import Server, require_slurm, wait_for, wait_state

REPO = Path(__file__).resolve().parents[2]
BACKEND = {"type": "slurm", "partition": "debug"}


@pytest.fixture(scope="module", autouse=True)
def slurm() -> None:
    require_slurm()


def spec(
    job_id: str,
    command: list[str],
    *,
    env: dict[str, str] | None = None,
    nodes: int = 1,
    gpus: int = 0,
    walltime_s: int = 60,
) -> ExecSpec:
    return ExecSpec(
        job_id=job_id,
        label_key="label-a",
        command=command,
        env=env if env is not None else {"GREETING": "hi"},
        nodes=nodes,
        cpus_per_node=1,
        memory_mb=128,
        gpus_per_node=gpus,
        walltime_s=walltime_s,
        region="secret-west",
        pool="cpu",
    )


def wait_done(ex: SlurmExecutor, handle: dict[str, Any], timeout_s: float = 30.0) -> Status:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = ex.poll(handle)
        if status.state not in NOT_ENDED:
            return status
        time.sleep(0.02)
    raise AssertionError(f"Slurm job {handle['slurm_id']} did not end in time")


# Slurm's final job states (squeue -t all shows them for MinJobAge). Any other state —
# COMPLETING above all, which a job passes through after Enclave has already seen it end —
# is transient: a test that asserts how a job ended waits for one of these first.
SLURM_FINAL = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "PREEMPTED",
    "BOOT_FAIL",
    "DEADLINE",
    "OUT_OF_MEMORY",
}


def settled(read: Callable[[], str], timeout_s: float = 30.0) -> str:
    """``read()`` once its first word is a final Slurm state (or its last answer at the
    deadline, which the caller's assertion then reports)."""
    deadline = time.monotonic() + timeout_s
    out = read()
    while (out.split() or [""])[0] not in SLURM_FINAL and time.monotonic() < deadline:
        time.sleep(0.1)
        out = read()
    return out


def squeue(slurm_id: str) -> str:
    """State and reason as Slurm itself reports them, now (may be a transient state)."""
    out = subprocess.run(
        ["squeue", "-h", "-t", "all", "-j", slurm_id, "-o", "%T %r %P %j"], capture_output=True, text=True
    )
    return out.stdout.strip()


def squeue_final(slurm_id: str) -> str:
    """:func:`squeue` once Slurm has finished with the job."""
    return settled(lambda: squeue(slurm_id))


@pytest.fixture
def ex(tmp_path: Path) -> SlurmExecutor:
    return SlurmExecutor(tmp_path / "sandboxes", BACKEND)


# -- through the executor --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("command", "code", "sig"),
    [
        (["true"], 0, None),
        (["sh", "-c", "exit 3"], 3, None),
        (["no-such-program-xyz"], 127, None),
        (["sh", "-c", "kill -KILL $$"], 137, 9),
        (["sh", "-c", "kill -SEGV $$"], 139, 11),
    ],
)
def test_exit_codes_and_signals(ex: SlurmExecutor, command: list[str], code: int, sig: int | None) -> None:
    status = wait_done(ex, ex.start(spec("j1", command)))
    assert status.state is RunState.EXITED
    assert (status.exit_code, status.signal) == (code, sig)
    assert status.cpu_s is not None and status.cpu_s >= 0


def test_submission_output_sandbox_and_slurm_view(ex: SlurmExecutor) -> None:
    script = 'echo "$GREETING $ENCLAVE_JOB_ID $SLURM_JOB_PARTITION"; echo oops >&2; pwd; echo data > f.txt'
    handle = ex.start(spec("job-out", ["sh", "-c", script]))
    assert set(handle) == {"slurm_id", "dir"} and handle["slurm_id"].isdigit()
    assert json.loads(json.dumps(handle)) == handle
    assert wait_done(ex, handle).exit_code == 0
    paths = ex.log_paths(handle)
    assert paths["stdout"].read_text().splitlines() == ["hi job-out debug", f"{handle['dir']}/work"]
    assert paths["stderr"].read_text() == "oops\n"
    workdir = Path(handle["dir"])
    assert workdir == ex.root / "label-a" / "job-out"
    assert workdir.stat().st_mode & 0o777 == 0o700
    for name in ("stdout", "stderr"):
        assert (workdir / name).stat().st_mode & 0o777 == 0o600
    assert (workdir / "work" / "f.txt").stat().st_mode & 0o007 == 0  # written confined, in its sandbox
    assert (workdir / "work" / "f.txt").stat().st_uid != os.getuid()
    assert squeue_final(handle["slurm_id"]) == "COMPLETED None debug enclave-job-out"
    ex.cleanup(handle)
    assert not workdir.exists()


def test_environment_is_quoted_and_the_control_plane_env_stays_out(
    ex: SlurmExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENCLAVE_TEST_SECRET", "do-not-leak")
    monkeypatch.setenv("SBATCH_PARTITION", "elsewhere")  # must not steer the submission
    nasty = {
        "SPACES": "a b  c",
        "QUOTES": 'it\'s "quoted"',
        "DOLLARS": "$HOME ${PATH} $(id) `id` $$",
        "NEWLINE": "one\ntwo",
        "SEMI": "x; touch pwned",
        "EMPTY": "",
    }
    dump = "import json, os; print(json.dumps(dict(os.environ)))"
    handle = ex.start(spec("j-env", [sys.executable, "-c", dump], env=nasty))
    assert wait_done(ex, handle).exit_code == 0
    seen = json.loads(ex.log_paths(handle)["stdout"].read_text())
    assert {k: seen.get(k) for k in nasty} == nasty
    assert "ENCLAVE_TEST_SECRET" not in seen and "SBATCH_PARTITION" not in seen
    assert seen["SLURM_JOB_PARTITION"] == "debug"
    assert seen["ENCLAVE_JOB_ID"] == "j-env" and seen["HOME"] == f"{handle['dir']}/work"
    assert not (Path(handle["dir"]) / "work" / "pwned").exists()


def test_bad_env_name_is_refused(ex: SlurmExecutor) -> None:
    with pytest.raises(InvalidInput, match="environment variable name"):
        ex.start(spec("j1", ["true"], env={"A B": "x"}))


def test_cancel_delivers_sigterm_and_the_job_ends(ex: SlurmExecutor) -> None:
    script = "trap 'echo term > got-term; exit 0' TERM; touch ready; sleep 30 & wait"
    handle = ex.start(spec("j-cancel", ["sh", "-c", script]))
    marker = Path(handle["dir"]) / "work" / "got-term"  # the confined job sees only its sandbox
    wait_for(Path(handle["dir"]) / "work" / "ready")
    ex.cancel(handle, grace_s=5)
    status = wait_done(ex, handle, timeout_s=10)
    assert marker.read_text() == "term\n"  # the job saw SIGTERM and could clean up
    assert (status.state, status.exit_code) == (RunState.EXITED, 0)


def test_job_dying_of_the_grace_signal_reports_it(ex: SlurmExecutor) -> None:
    handle = ex.start(spec("j-term", ["sh", "-c", "touch ready; exec sleep 30"]))
    wait_for(Path(handle["dir"]) / "work" / "ready")
    ex.cancel(handle, grace_s=5)
    status = wait_done(ex, handle, timeout_s=10)
    assert (status.exit_code, status.signal) == (143, 15)


def test_walltime_style_cancel_then_kill(ex: SlurmExecutor) -> None:
    """What the live loop does at a walltime: SIGTERM, the grace, then kill."""
    handle = ex.start(spec("j-stubborn", ["sh", "-c", "trap '' TERM; touch ready; sleep 60"]))
    wait_for(Path(handle["dir"]) / "work" / "ready")
    ex.cancel(handle, grace_s=0.2)
    time.sleep(1.0)
    assert ex.poll(handle).state is RunState.RUNNING  # still there: it ignores SIGTERM
    ex.kill(handle)
    status = wait_done(ex, handle, timeout_s=10)
    assert (status.exit_code, status.signal) == (137, 9)
    assert squeue_final(handle["slurm_id"]).split()[0] == "FAILED"  # Slurm: ExitCode 0:9


def test_kill_is_immediate_and_frees_the_node(ex: SlurmExecutor) -> None:
    handle = ex.start(spec("j-kill", ["sh", "-c", "trap '' TERM; touch ready; sleep 60"]))
    wait_for(Path(handle["dir"]) / "work" / "ready")
    ex.kill(handle)
    status = wait_done(ex, handle, timeout_s=10)
    assert (status.exit_code, status.signal) == (137, 9)
    # No process lingers for KillWait: the next job starts at once (a node with a COMPLETING
    # job would start nothing).
    t0 = time.monotonic()
    assert wait_done(ex, ex.start(spec("j-next", ["true"])), timeout_s=10).exit_code == 0
    assert time.monotonic() - t0 < 5


def test_gang_job_wider_than_the_cluster_stays_pending(ex: SlurmExecutor) -> None:
    """sbatch accepts a 2-node job on this 1-node partition (EnforcePartLimits is off); it waits."""
    handle = ex.start(spec("j-gang", ["true"], nodes=2))
    script = (Path(handle["dir"]) / "job.sh").read_text()
    assert "srun --nodes=2 --ntasks=2 --ntasks-per-node=1 --export=ALL sh -c" in script
    assert (
        "--no-new-privs -- sh -c" in script and script.rstrip().count(" true") >= 1
    )  # confined on each node
    time.sleep(1.0)
    assert ex.poll(handle).state is RunState.QUEUED  # held in Slurm's queue, not lost
    state, reason = squeue(handle["slurm_id"]).split()[:2]
    assert (state, reason) == ("PENDING", "PartitionNodeLimit")
    ex.cancel(handle, grace_s=1)  # a pending job has nothing to signal: it is cancelled outright
    status = wait_done(ex, handle, timeout_s=10)
    assert status.state is RunState.EXITED and status.exit_code == 143
    assert squeue_final(handle["slurm_id"]).split()[0] == "CANCELLED"


def test_sbatch_refusal_is_a_clear_error(ex: SlurmExecutor, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"Slurm \(partition debug\) refused job j-gpu: .*gres"):
        ex.start(spec("j-gpu", ["true"], gpus=1))  # this cluster has no GPUs (no GRES)
    elsewhere = SlurmExecutor(tmp_path / "other", {"type": "slurm", "partition": "nosuchpart"})
    with pytest.raises(InvalidInput, match=r"(?i)invalid partition"):
        elsewhere.start(spec("j-part", ["true"]))


@pytest.mark.parametrize("partition", [None, "", "debug,secret", "a b", "x;y"])
def test_partition_comes_only_from_the_region_and_is_one_name(tmp_path: Path, partition: str | None) -> None:
    with pytest.raises(InvalidInput, match="partition"):
        SlurmExecutor(tmp_path, {"type": "slurm", "partition": partition})


def test_sbatch_arguments(tmp_path: Path) -> None:
    ex = SlurmExecutor(tmp_path, {**BACKEND, "account": "noaa", "qos": "high", "gres": "gpu"})
    s = ExecSpec("j9", "lab", ["x"], {}, 3, 4, 2048, 2, 61, "secret-west", "gpu")
    args = ex.sbatch_args(s, tmp_path / "lab" / "j9")
    for want in (
        "--job-name=enclave-j9",
        "--partition=debug",
        "--nodes=3",
        "--ntasks-per-node=1",
        "--cpus-per-task=4",
        "--mem=2048M",
        "--gres=gpu:2",
        "--time=3",  # 61 s -> 2 minutes, +1 of slack (Enclave enforces the exact walltime)
        "--account=noaa",
        "--qos=high",
        "--no-requeue",
    ):
        assert want in args


def test_handle_round_trip_a_new_instance_adopts_running_and_ended_jobs(tmp_path: Path) -> None:
    first = SlurmExecutor(tmp_path / "sandboxes", BACKEND)
    running = first.start(spec("j-long", ["sh", "-c", "sleep 2; echo done"]))
    ended = first.start(spec("j-short", ["sh", "-c", "exit 5"]))
    wait_done(first, ended)
    stored = json.loads(json.dumps([running, ended]))  # as the store keeps them
    second = SlurmExecutor(tmp_path / "sandboxes", BACKEND)  # a restarted control plane
    assert second.poll(stored[0]).state in NOT_ENDED
    assert wait_done(second, stored[0]).exit_code == 0
    assert second.log_paths(stored[0])["stdout"].read_text() == "done\n"
    assert wait_done(second, stored[1]).exit_code == 5


def test_a_submission_whose_handle_was_lost_is_found_not_submitted_again(tmp_path: Path) -> None:
    """The control plane died between sbatch and recording the handle: its successor finds
    the Slurm job of that attempt (and nothing for an attempt Slurm never took)."""
    first = SlurmExecutor(tmp_path / "sandboxes", BACKEND)
    since = time.time()
    handle = first.start(spec("j-lost-handle", ["sh", "-c", "sleep 1; echo once"]))
    second = SlurmExecutor(tmp_path / "sandboxes", BACKEND)  # a restarted control plane
    found = second.recover("j-lost-handle", "label-a", since)
    assert found == json.loads(json.dumps(handle))
    assert wait_done(second, found).exit_code == 0
    assert second.log_paths(found)["stdout"].read_text() == "once\n"
    # An attempt that began after this submission (or never reached sbatch) finds nothing.
    assert second.recover("j-lost-handle", "label-a", time.time() + 5) is None
    assert second.recover("j-never-submitted", "label-a", since) is None


def test_a_job_slurm_does_not_know_is_lost(ex: SlurmExecutor, tmp_path: Path) -> None:
    (tmp_path / "gone").mkdir()
    assert wait_done(ex, {"slurm_id": "99999999", "dir": str(tmp_path / "gone")}).state is RunState.LOST


def test_many_polls_cost_one_squeue_per_half_second(tmp_path: Path) -> None:
    counter = tmp_path / "squeue-calls"
    wrapper = tmp_path / "squeue"
    real = shutil.which("squeue")
    wrapper.write_text(f'#!/bin/sh\necho >> {counter}\nexec {real} "$@"\n')
    wrapper.chmod(0o755)
    ex = SlurmExecutor(tmp_path / "sandboxes", {**BACKEND, "squeue": str(wrapper)})
    handles = [ex.start(spec(f"j{i}", ["sleep", "3"])) for i in range(3)]
    polls = 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < 1.6:
        for h in handles:
            assert ex.poll(h).state in NOT_ENDED
            polls += 1
        time.sleep(0.005)
    elapsed = time.monotonic() - t0
    calls = len(counter.read_text().splitlines())
    assert polls > 300
    assert calls <= elapsed / 0.5 + 1, f"{calls} squeue calls for {polls} polls in {elapsed:.2f}s"
    for h in handles:
        ex.kill(h)


def test_health_names_the_partition(tmp_path: Path) -> None:
    up = SlurmExecutor(tmp_path, BACKEND).health()
    assert up.healthy and up.detail.startswith("partition debug: 1 ")
    missing = SlurmExecutor(tmp_path, {"type": "slurm", "partition": "nosuchpart"}).health()
    assert not missing.healthy and "nosuchpart" in missing.detail


def test_registry_builds_the_regions_slurm_executor(tmp_path: Path) -> None:
    fleet = parse_fleet(FLEET, "test")
    ex = make_engine_executor(fleet.region("secret-west"), tmp_path)
    assert isinstance(ex, SlurmExecutor) and ex.partition == "debug"


# -- Slurm states and exit codes (pure translation; the sacct path needs slurmdbd) ------------
@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ("COMPLETED|0:0|20|0|00:01.500", (RunState.EXITED, 0, None, 1.5, None)),
        ("FAILED|3:0|20|0|00:00:00", (RunState.EXITED, 3, None, 20.0, None)),
        ("FAILED|0:9|4|5000|00:00.100", (RunState.EXITED, 137, 9, 0.1, 5000.0)),
        ("CANCELLED by 0|0:15|2|0|", (RunState.EXITED, 143, 15, 2.0, None)),
        ("CANCELLED by 0|0:0|0|0|", (RunState.EXITED, 143, 15, 0.0, None)),
        ("TIMEOUT|0:0|120|0|01:00", (RunState.EXITED, 143, 15, 60.0, None)),
        ("OUT_OF_MEMORY|0:125|3|0|", (RunState.EXITED, 137, 9, 3.0, None)),
        ("NODE_FAIL|0:0|3|0|", (RunState.LOST, None, None, None, None)),
        ("PREEMPTED|0:15|3|0|", (RunState.LOST, None, None, None, None)),
        ("BOOT_FAIL|0:0|0|0|", (RunState.LOST, None, None, None, None)),
        ("COMPLETED|0:0|2|18446744073709551614|", (RunState.EXITED, 0, None, 2.0, None)),
    ],
)
def test_sacct_rows_translate(row: str, expected: tuple[Any, ...]) -> None:
    """Rows as ``sacct -o JobID,State,ExitCode,CPUTimeRAW,ConsumedEnergyRaw,TotalCPU`` prints them."""
    status = from_sacct(f"42|{row}".split("|"), None)
    assert status is not None
    assert (status.state, status.exit_code, status.signal, status.cpu_s, status.energy_j) == expected


def test_active_sacct_rows_are_not_an_end() -> None:
    for state in ("RUNNING", "PENDING", "COMPLETING", "REQUEUED"):
        assert from_sacct(["42", state, "0:0", "0", "0", ""], None) is None


def test_fallback_prefers_the_recorded_status(tmp_path: Path) -> None:
    (tmp_path / ".exit").write_text("7\n")
    assert from_fallback(("FAILED", 7 << 8), tmp_path).exit_code == 7
    assert from_fallback(None, tmp_path).exit_code == 7  # purged from Slurm, the file remains
    (tmp_path / ".exit").unlink()
    assert from_fallback(("FAILED", 4 << 8), tmp_path).exit_code == 4  # squeue's wait status
    assert from_fallback(("CANCELLED", 9), tmp_path).signal == 9
    assert from_fallback(None, tmp_path).state is RunState.LOST


# -- end to end through `enclave up` ------------------------------------------------------------
FLEET = """
name = "slurm-test"
[labels]
levels = ["UNCLASSIFIED", "CUI", "SECRET", "TOP SECRET"]
compartments = ["SI", "TK"]

[[regions]]
name = "gov-east"
accreditation = "CUI"
power_cap_mw = 0.0002
backend = { type = "local" }
[[regions.pools]]
name = "cpu"
count = 1
cpus = 2
memory_mb = 4096
idle_w = 10.0
peak_w = 45.0

[[regions]]
name = "secret-west"
accreditation = "SECRET"
power_cap_mw = 0.0002
backend = { type = "slurm", partition = "debug" }
[[regions.pools]]
name = "cpu"
count = 1
cpus = 2
memory_mb = 4096
idle_w = 10.0
peak_w = 45.0
"""

TERMINAL = {"completed", "failed", "cancelled", "timeout"}


def secret_user_token(server: Server) -> str:
    """A token for alice (agency noaa, cleared SECRET) at SECRET."""
    with httpx.Client(base_url=server.url, timeout=30) as admin:
        admin.headers["Authorization"] = f"Bearer {server.admin_token}"
        assert admin.post("/v1/agencies", json={"name": "noaa"}).status_code == 201
        body = {"name": "alice", "agency": "noaa", "clearance": "SECRET", "roles": ["user"]}
        assert admin.post("/v1/users", json=body).status_code == 201
        minted = admin.post("/v1/tokens", json={"user": "alice", "label": "SECRET"})
        assert minted.status_code == 201, minted.text
        return str(minted.json()["token"])


@pytest.fixture
def secret_api(live_server: Callable[..., Server], tmp_path: Path) -> Iterator[tuple[Server, httpx.Client]]:
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(FLEET)
    server = live_server(tmp_path / "home", "--fleet", str(fleet))
    token = secret_user_token(server)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        yield server, client


def submit(client: httpx.Client, name: str, command: list[str]) -> str:
    body = {
        "name": name,
        "label": "SECRET",
        "region": "secret-west",
        "command": command,
        "walltime_s": 120,
        "resources": {"nodes": 1, "cpus_per_node": 1, "memory_mb": 256},
    }
    resp = client.post("/v1/jobs", json=body)
    assert resp.status_code in (200, 201), resp.text
    return str(resp.json()["id"])


def slurm_job(name: str) -> str:
    out = subprocess.run(
        ["squeue", "-h", "-t", "all", "-n", name, "-o", "%T %P"], capture_output=True, text=True
    )
    return out.stdout.strip()


def slurm_job_final(name: str) -> str:
    """:func:`slurm_job` once Slurm has finished with the job."""
    return settled(lambda: slurm_job(name))


def _in_sandbox(server: Server, job: str, name: str) -> Callable[[], bool]:
    """Whether the confined job left ``name`` in its sandbox (all it can write)."""
    return lambda: any((server.home / "sandboxes").glob(f"*/{job}/work/{name}"))


def test_end_to_end_secret_job_runs_on_slurm(secret_api: tuple[Server, httpx.Client], tmp_path: Path) -> None:
    server, client = secret_api
    ok = submit(client, "hello", ["sh", "-c", "echo hello from $SLURM_JOB_PARTITION; echo warn >&2"])
    bad = submit(client, "broken", ["sh", "-c", "echo failing; exit 4"])
    long = submit(client, "long", ["sh", "-c", "touch started; exec sleep 60"])
    ready = _in_sandbox(server, long, "started")

    done = wait_state(client, ok, TERMINAL)
    assert (done["state"], done["exit_code"], done["region"]) == ("completed", 0, "secret-west")
    assert slurm_job_final(f"enclave-{ok}") == "COMPLETED debug"  # Slurm itself ran it
    assert client.get(f"/v1/jobs/{ok}/logs").text == "hello from debug\n"
    assert client.get(f"/v1/jobs/{ok}/logs", params={"stream": "stderr"}).text == "warn\n"

    failed = wait_state(client, bad, TERMINAL)
    assert (failed["state"], failed["exit_code"], failed["reason"]) == ("failed", 4, "exit code 4")
    assert client.get(f"/v1/jobs/{bad}/logs").text == "failing\n"
    assert slurm_job_final(f"enclave-{bad}") == "FAILED debug"

    wait_for(ready)
    assert wait_state(client, long, {"running"})["state"] == "running"
    assert slurm_job(f"enclave-{long}") == "RUNNING debug"
    assert client.post(f"/v1/jobs/{long}/cancel").status_code == 200
    cancelled = wait_state(client, long, TERMINAL, timeout_s=30)
    assert cancelled["state"] == "cancelled" and cancelled["exit_code"] == 143
    assert slurm_job_final(f"enclave-{long}").split()[0] in {"FAILED", "CANCELLED", "COMPLETED"}

    # The control plane dies (SIGKILL) while a job runs on Slurm; restarted, it adopts the job.
    survivor = submit(client, "survivor", ["sh", "-c", "touch begun; sleep 3; echo survived"])
    wait_for(_in_sandbox(server, survivor, "begun"))
    server.stop(kill=True)
    assert slurm_job(f"enclave-{survivor}") == "RUNNING debug"  # Slurm's, not the server's
    server.start()
    finished = wait_state(client, survivor, TERMINAL)
    assert (finished["state"], finished["exit_code"]) == ("completed", 0)
    assert client.get(f"/v1/jobs/{survivor}/logs").text == "survived\n"
    assert slurm_job_final(f"enclave-{survivor}") == "COMPLETED debug"


def test_a_region_worker_runs_the_regions_jobs_on_slurm(
    live_server: Callable[..., Server], tmp_path: Path
) -> None:
    """secret-west run by a region worker whose engine is the real Slurm: the control plane
    never calls Slurm, the worker (its own process, its own home) submits to it."""
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(FLEET.replace('partition = "debug" }', 'partition = "debug", worker = true }'))
    server = live_server(tmp_path / "control", "--fleet", str(fleet))
    secret = server.run("admin", "worker-credential", "create", "secret-west", token=server.admin_token)
    env = {**os.environ, "ENCLAVE_HOME": str(tmp_path / "edge"), "ENCLAVE_URL": server.url}
    env["ENCLAVE_WORKER_CREDENTIAL"] = secret.stdout.strip()
    worker = subprocess.Popen(
        [sys.executable, "-m", "enclave", "worker", "--region", "secret-west"],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    try:
        token = secret_user_token(server)
        with httpx.Client(base_url=server.url, timeout=30) as client:
            client.headers["Authorization"] = f"Bearer {token}"
            ok = submit(client, "via-worker", ["sh", "-c", "echo on $SLURM_JOB_PARTITION in $PWD"])
            bad = submit(client, "via-worker-bad", ["sh", "-c", "exit 5"])
            done = wait_state(client, ok, TERMINAL)
            assert (done["state"], done["exit_code"], done["region"]) == ("completed", 0, "secret-west")
            assert slurm_job_final(f"enclave-{ok}") == "COMPLETED debug"
            out = client.get(f"/v1/jobs/{ok}/logs").text
            assert out.startswith(f"on debug in {tmp_path / 'edge' / 'worker-sandboxes'}"), out
            assert out.rstrip().endswith(f"{ok}/work"), out  # in its sandbox, confined
            failed = wait_state(client, bad, TERMINAL)
            assert (failed["state"], failed["exit_code"]) == ("failed", 5)
            assert slurm_job_final(f"enclave-{bad}") == "FAILED debug"
    finally:
        worker.terminate()
        worker.wait(timeout=30)


def test_a_deeper_queue_lets_slurm_start_the_next_job_and_walltime_waits_for_it(
    live_server: Callable[..., Server], tmp_path: Path
) -> None:
    """queue_depth = 2: Enclave hands Slurm twice what fits, so jobs wait in Slurm's own queue
    (PENDING) — and a job's walltime starts when Slurm starts it, not when it was handed over:
    each job runs 2 s under a 3 s walltime after waiting about as long in Slurm's queue."""
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(FLEET.replace('partition = "debug" }', 'partition = "debug", queue_depth = 2 }'))
    server = live_server(tmp_path / "control", "--fleet", str(fleet))
    token = secret_user_token(server)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        jobs = []
        for i in range(4):
            spec = {
                "name": f"queued-{i}",
                "label": "SECRET",
                "region": "secret-west",
                "command": ["sh", "-c", "sleep 2; echo done"],
                "walltime_s": 3,
                "resources": {"nodes": 1, "cpus_per_node": 1, "memory_mb": 256},
            }
            resp = client.post("/v1/jobs", json=spec)
            assert resp.status_code in (200, 201), resp.text
            jobs.append(resp.json()["id"])
        pending_seen = False
        deadline = time.monotonic() + 60
        while not pending_seen and time.monotonic() < deadline:
            states = [slurm_job(f"enclave-{j}").split(" ")[0] for j in jobs]
            pending_seen = "PENDING" in states and states.count("RUNNING") == 2
            time.sleep(0.05)
        assert pending_seen, "Slurm never held a job of Enclave's in its own queue"
        for j in jobs:
            done = wait_state(client, j, TERMINAL)
            assert (done["state"], done["exit_code"]) == ("completed", 0), done
            assert client.get(f"/v1/jobs/{j}/logs").text == "done\n"
