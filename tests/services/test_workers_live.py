"""Region workers for real: `enclave up` with examples/fleets/region-workers.toml and
`enclave worker --region ts-east` as separate processes, each with its own home (the worker's
sandboxes are not the control plane's). Jobs run, fail, are cancelled and time out through the
worker; the worker and then the control plane are killed mid-job and restarted without losing
or repeating anything; a worker holding another region's credential is refused and audited."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import CLI, Server, scratch_file, wait_for, wait_state

REPO = Path(__file__).resolve().parents[2]
FLEET = REPO / "examples" / "fleets" / "region-workers.toml"
TS = "TOP SECRET//SI/TK/HCS/G"
TERMINAL = {"completed", "failed", "cancelled", "timeout"}


@dataclass
class Worker:
    home: Path
    url: str
    secret: str
    region: str = "ts-east"
    proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        env = {**os.environ, "ENCLAVE_HOME": str(self.home), "ENCLAVE_URL": self.url}
        env["ENCLAVE_WORKER_CREDENTIAL"] = self.secret
        self.proc = subprocess.Popen(
            [*CLI, "worker", "--region", self.region, "--name", "edge-1"],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )

    def stop(self, kill: bool = False) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            self.proc.wait(timeout=30)
        if self.proc is not None and self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None


@dataclass
class Site:
    server: Server
    worker: Worker
    api: httpx.Client  # a TOP SECRET user's session
    cui: httpx.Client  # the same user at CUI


@pytest.fixture
def site(live_server: Callable[..., Server], tmp_path: Path) -> Iterator[Site]:
    # Confined jobs see only their sandbox and the region's scratch space: the tests' jobs
    # leave their marks there.
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(
        FLEET.read_text().replace("worker = true }", f'worker = true, scratch = "{tmp_path / "scratch"}" }}')
    )
    server = live_server(tmp_path / "control", "--fleet", str(fleet))
    secret = server.run(
        "admin", "worker-credential", "create", "ts-east", token=server.admin_token
    ).stdout.strip()
    worker = Worker(tmp_path / "region-ts-east", server.url, secret)
    worker.start()
    with httpx.Client(base_url=server.url, timeout=30) as admin:
        admin.headers["Authorization"] = f"Bearer {server.admin_token}"
        assert admin.post("/v1/agencies", json={"name": "nsa"}).status_code == 201
        body = {"name": "tess", "agency": "nsa", "clearance": TS, "roles": ["user"]}
        assert admin.post("/v1/users", json=body).status_code == 201
        token = admin.post("/v1/tokens", json={"user": "tess", "label": TS}).json()["token"]
        cui_token = admin.post("/v1/tokens", json={"user": "tess", "label": "CUI"}).json()["token"]
    with (
        httpx.Client(base_url=server.url, timeout=30) as api,
        httpx.Client(base_url=server.url, timeout=30) as cui,
    ):
        api.headers["Authorization"] = f"Bearer {token}"
        cui.headers["Authorization"] = f"Bearer {cui_token}"
        yield Site(server, worker, api, cui)
    worker.stop()


def submit(api: httpx.Client, name: str, command: list[str], region: str = "ts-east", **extra: Any) -> str:
    body = {
        "name": name,
        "label": TS,
        "region": region,
        "command": command,
        "walltime_s": 120,
        "resources": {"nodes": 1, "cpus_per_node": 1, "memory_mb": 256},
        **extra,
    }
    resp = api.post("/v1/jobs", json=body)
    assert resp.status_code in (200, 201), resp.text
    return str(resp.json()["id"])


def logs(api: httpx.Client, job: str, stream: str = "stdout") -> str:
    resp = api.get(f"/v1/jobs/{job}/logs", params={"stream": stream})
    assert resp.status_code == 200, resp.text
    return resp.text


def audit(server: Server, event: str) -> list[dict[str, Any]]:
    out = server.run("audit", "list", "--json", "--limit", "1000", token=server.admin_token).stdout
    items = json.loads(out)
    return [r for r in (items if isinstance(items, list) else items["items"]) if r["event"] == event]


def test_jobs_run_fail_cancel_and_time_out_through_the_regions_worker(site: Site, tmp_path: Path) -> None:
    api, server = site.api, site.server
    ok = submit(api, "hello", ["sh", "-c", "echo hello from $ENCLAVE_REGION in $PWD; echo warn >&2"])
    bad = submit(api, "broken", ["sh", "-c", "echo failing; exit 4"])
    here = submit(site.cui, "at-home", ["sh", "-c", "echo $PWD"], region="gov-east", label="CUI")

    done = wait_state(api, ok, TERMINAL)
    assert (done["state"], done["exit_code"], done["region"]) == ("completed", 0, "ts-east")
    out = logs(api, ok)
    # It ran in the worker's sandbox, not in the control plane's.
    assert out.startswith("hello from ts-east in " + str(site.worker.home / "worker-sandboxes")), out
    assert logs(api, ok, "stderr") == "warn\n"
    assert done["energy"]["source"] == "modelled" and done["energy"]["kwh"] > 0

    failed = wait_state(api, bad, TERMINAL)
    assert (failed["state"], failed["exit_code"], failed["reason"]) == ("failed", 4, "exit code 4")
    assert logs(api, bad) == "failing\n"

    # gov-east is the control plane's own: the worker never sees its jobs.
    assert wait_state(site.cui, here, TERMINAL)["state"] == "completed"
    assert logs(site.cui, here).startswith(str(server.home / "sandboxes"))
    claimed = [j for r in audit(server, "worker.claimed") for j in r["details"]["jobs"]]
    assert ok in claimed and bad in claimed and here not in claimed

    long = submit(api, "long", ["sh", "-c", 'echo begun; touch "$ENCLAVE_SCRATCH/started"; exec sleep 60'])
    wait_for(lambda: scratch_file(tmp_path / "scratch", "started").exists())
    assert wait_state(api, long, {"running"})["state"] == "running"
    deadline = time.monotonic() + 10
    while logs(api, long) != "begun\n":  # output streams while the job runs
        assert time.monotonic() < deadline, "output was not streamed while the job ran"
        time.sleep(0.1)
    assert api.post(f"/v1/jobs/{long}/cancel").status_code == 200
    cancelled = wait_state(api, long, TERMINAL, timeout_s=30)
    assert (cancelled["state"], cancelled["exit_code"]) == ("cancelled", 143)

    slow = submit(api, "slow", ["sleep", "60"], walltime_s=1)
    timed_out = wait_state(api, slow, TERMINAL, timeout_s=30)
    assert (timed_out["state"], timed_out["exit_code"]) == ("timeout", 143)

    # Sandboxes are removed once the control plane has taken the end and the output.
    deadline = time.monotonic() + 10
    while any(p.is_dir() for p in (site.worker.home / "worker-sandboxes").glob("*/*")):
        assert time.monotonic() < deadline, list((site.worker.home / "worker-sandboxes").glob("*/*"))
        time.sleep(0.1)


def test_worker_and_control_plane_restarts_lose_and_repeat_nothing(site: Site, tmp_path: Path) -> None:
    api, server, worker = site.api, site.server, site.worker
    script = 'echo x >> "$ENCLAVE_SCRATCH/runs"; touch "$ENCLAVE_SCRATCH/begun"; sleep 2; echo one; sleep 1; echo two'
    job = submit(api, "survivor", ["sh", "-c", script])
    wait_for(lambda: scratch_file(tmp_path / "scratch", "begun").exists())
    runs, begun = scratch_file(tmp_path / "scratch", "runs"), scratch_file(tmp_path / "scratch", "begun")
    worker.stop(kill=True)  # SIGKILL: the job's process lives on without its worker
    time.sleep(0.5)
    worker.start()  # the same worker, a new process: adopts the running job
    finished = wait_state(api, job, TERMINAL)
    assert (finished["state"], finished["exit_code"], finished["attempts"]) == ("completed", 0, 0)
    assert logs(api, job) == "one\ntwo\n"
    assert runs.read_text() == "x\n"  # started once

    # Now the control plane dies mid-job.
    begun.unlink()
    runs.unlink()
    job = submit(api, "survivor-2", ["sh", "-c", script])
    wait_for(begun)
    server.stop(kill=True)
    time.sleep(1)
    server.start()
    finished = wait_state(api, job, TERMINAL)
    assert (finished["state"], finished["exit_code"], finished["attempts"]) == ("completed", 0, 0)
    assert logs(api, job) == "one\ntwo\n"
    assert runs.read_text() == "x\n"

    # No worker connected: the region says so, and its work waits for the worker.
    worker.stop()
    later = submit(api, "later", ["echo", "waited"])
    time.sleep(1)
    assert api.get(f"/v1/jobs/{later}").json()["state"] in {"pending", "admitted", "running"}
    worker.start()
    assert wait_state(api, later, TERMINAL)["state"] == "completed"
    assert logs(api, later) == "waited\n"
    assert len(audit(server, "worker.connected")) == 3  # one per worker process


def test_a_worker_with_another_regions_credential_is_refused_and_audited(site: Site, tmp_path: Path) -> None:
    server = site.server
    secret = server.run(
        "admin", "worker-credential", "create", "secret-west", token=server.admin_token
    ).stdout.strip()
    job = submit(site.api, "ts-work", ["sh", "-c", "echo ts"])
    env = {**os.environ, "ENCLAVE_HOME": str(tmp_path / "rogue"), "ENCLAVE_URL": server.url}
    env["ENCLAVE_WORKER_CREDENTIAL"] = secret
    rogue = subprocess.run(
        [*CLI, "worker", "--region", "ts-east", "--name", "rogue"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert rogue.returncode == 1
    assert rogue.stderr.strip().splitlines()[-1] == "error: this worker credential is for region secret-west"
    [refused] = audit(server, "worker.refused")
    assert refused["outcome"] == "deny" and refused["details"]["asked_region"] == "ts-east"
    assert refused["details"]["rule"] == "worker_own_region"
    # The job went to ts-east's own worker, never to the rogue.
    assert wait_state(site.api, job, TERMINAL)["state"] == "completed"
    assert not (tmp_path / "rogue" / "worker-sandboxes").exists()
    regions = json.loads(server.run("regions", "--json", token=server.admin_token).stdout)
    ts = next(r for r in regions if r["name"] == "ts-east")
    assert ts["backend"]["type"] == "local" and ts["backend"]["worker"] is True and ts["healthy"] is True
    assert ts["health"].startswith("worker edge-1")
