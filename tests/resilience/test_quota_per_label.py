"""Admission quotas (GPU-hours, kWh) hold per label: work at SECRET never changes when or why
an UNCLASSIFIED job is admitted, and a pending reason names only its own label's figures."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.conftest import Server, wait_state

TERMINAL = {"completed", "failed", "cancelled", "timeout"}


def _client(server: Server, admin: httpx.Client, label: str) -> httpx.Client:
    r = admin.post("/v1/tokens", json={"user": "admin", "label": label})
    assert r.status_code == 201, r.text
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {r.json()['token']}"})


def test_energy_used_at_secret_does_not_hold_up_unclassified(
    live_server: Callable[..., Server], tmp_path: Path
) -> None:
    server = live_server(tmp_path / "home")
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {server.admin_token}"}, timeout=30
    ) as admin:
        assert admin.put("/v1/agencies/enclave/quotas", json={"kwh": 1e-9}).status_code == 200
        secret, low = _client(server, admin, "SECRET"), _client(server, admin, "UNCLASSIFIED")
        with secret, low:
            job = {
                "name": "burn",
                "command": ["sh", "-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done"],
                "walltime_s": 60,
            }
            first = secret.post("/v1/jobs", json=job).json()["id"]
            assert wait_state(secret, first, TERMINAL)["state"] == "completed"
            second = secret.post("/v1/jobs", json=job).json()["id"]
            deadline = time.monotonic() + 20
            while not (reason := secret.get(f"/v1/jobs/{second}").json().get("reason") or "").startswith(
                "quota"
            ):
                assert time.monotonic() < deadline, reason
                time.sleep(0.1)
            assert "at SECRET" in reason  # the SECRET session sees its own label's use
            # UNCLASSIFIED has used nothing at its label: admitted and run at once.
            low_job = low.post("/v1/jobs", json=job).json()["id"]
            done = wait_state(low, low_job, TERMINAL)
            assert done["state"] == "completed", done
            assert "SECRET" not in (done.get("reason") or "")
            # Its own next job is then held by its own use, and says so at its own label only.
            again = low.post("/v1/jobs", json=job).json()["id"]
            deadline = time.monotonic() + 20
            while not (reason := low.get(f"/v1/jobs/{again}").json().get("reason") or "").startswith("quota"):
                assert time.monotonic() < deadline, reason
                time.sleep(0.1)
            assert "at UNCLASSIFIED" in reason and "SECRET" not in reason
