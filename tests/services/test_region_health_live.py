"""Issue 13 item 6, for real: `enclave up` with examples/fleets/region-workers.toml and a region
worker connected for ts-east only. secret-west (no worker, ``healthy: false``) is the lower —
and so the preferred — region for SECRET work; the scheduler must not place work there while
ts-east fits, and a job that only secret-west may run is not ``running`` (no ``started_at``,
no walltime spent) until a worker of secret-west connects and starts it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Server, wait_state
from tests.services.test_workers_live import FLEET, TERMINAL, Worker

SECRET = "SECRET"


@dataclass
class Site:
    server: Server
    api: httpx.Client  # a SECRET session
    workers: list[Worker]

    def worker(self, region: str, home: Path) -> Worker:
        secret = self.server.run(
            "admin", "worker-credential", "create", region, token=self.server.admin_token
        ).stdout.strip()
        worker = Worker(home, self.server.url, secret, region=region)
        worker.start()
        self.workers.append(worker)
        return worker

    def health(self, region: str) -> dict[str, Any]:
        shown = self.api.get(f"/v1/regions/{region}")
        assert shown.status_code == 200, shown.text
        return dict(shown.json())


@pytest.fixture
def site(live_server: Callable[..., Server], tmp_path: Path) -> Iterator[Site]:
    server = live_server(tmp_path / "control", "--fleet", str(FLEET))
    with httpx.Client(base_url=server.url, timeout=30) as admin:
        admin.headers["Authorization"] = f"Bearer {server.admin_token}"
        assert admin.post("/v1/agencies", json={"name": "nsa"}).status_code == 201
        body = {"name": "sam", "agency": "nsa", "clearance": "TOP SECRET//SI/TK/HCS/G", "roles": ["user"]}
        assert admin.post("/v1/users", json=body).status_code == 201
        token = admin.post("/v1/tokens", json={"user": "sam", "label": SECRET}).json()["token"]
    made = Site(server, httpx.Client(base_url=server.url, timeout=30), [])
    made.api.headers["Authorization"] = f"Bearer {token}"
    try:
        yield made
    finally:
        made.api.close()
        for worker in made.workers:
            worker.stop()


def submit(api: httpx.Client, name: str, region: str | None = None, walltime_s: int = 30) -> str:
    body: dict[str, Any] = {
        "name": name,
        "label": SECRET,
        "command": ["sh", "-c", "echo ran in $ENCLAVE_REGION"],
        "walltime_s": walltime_s,
        "resources": {"nodes": 1, "cpus_per_node": 1, "memory_mb": 256},
    }
    if region is not None:
        body["region"] = region
    resp = api.post("/v1/jobs", json=body)
    assert resp.status_code in (200, 201), resp.text
    return str(resp.json()["id"])


def until(check: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.1)


def test_work_goes_to_the_region_whose_worker_is_connected_and_waits_truthfully_for_the_other(
    site: Site, tmp_path: Path
) -> None:
    site.worker("ts-east", tmp_path / "edge-ts")
    until(lambda: site.health("ts-east")["healthy"] is True)
    assert site.health("secret-west")["healthy"] is False

    # Any region may run it: secret-west is preferred (lowest sufficient accreditation) but has
    # no worker, so it runs in ts-east, which is idle.
    anywhere = submit(site.api, "anywhere")
    done = wait_state(site.api, anywhere, TERMINAL)
    assert (done["state"], done["region"], done["exit_code"]) == ("completed", "ts-east", 0)
    assert site.api.get(f"/v1/jobs/{anywhere}/logs").text == "ran in ts-east\n"

    # Only secret-west may run it: it waits, says why, and is never shown running — well past
    # its 2 s walltime, which has not begun.
    pinned = submit(site.api, "pinned", region="secret-west", walltime_s=2)
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        shown = site.api.get(f"/v1/jobs/{pinned}").json()
        assert shown["state"] in {"pending", "admitted"}, shown
        assert shown["started_at"] is None, shown
        time.sleep(0.2)
    assert shown["reason"] == "region_unavailable", shown

    # A worker of secret-west connects: the job runs there, its walltime from its real start.
    site.worker("secret-west", tmp_path / "edge-secret")
    done = wait_state(site.api, pinned, TERMINAL)
    assert (done["state"], done["region"], done["exit_code"]) == ("completed", "secret-west", 0), done
    assert site.api.get(f"/v1/jobs/{pinned}/logs").text == "ran in secret-west\n"
