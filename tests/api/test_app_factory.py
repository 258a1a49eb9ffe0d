"""The server process's app factory (``enclave up`` runs ``app_from_env`` under uvicorn): its
settings from the environment, and its heap frozen out of the garbage collector's sight once
started. Each case runs in a fresh interpreter: freezing is process-wide."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PROBE = """
import gc, json, sys
from fastapi.testclient import TestClient
from enclave.api.app import app_from_env, create_app
from enclave.services.context import Settings
app = app_from_env() if sys.argv[1] == "server" else create_app(Settings(home=__import__("pathlib").Path(sys.argv[2])))
with TestClient(app) as client:
    assert client.get("/healthz").status_code == 200
    settings = app.state.ctx.settings
    print(json.dumps({"frozen": gc.get_freeze_count(), "idle_s": settings.endpoint_idle_s,
                      "fleet": settings.fleet, "policy": settings.policy}))
"""


def probe(tmp_path: Path, which: str, **env: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, which, str(tmp_path / "home")],
        env={**os.environ, "ENCLAVE_HOME": str(tmp_path / "home"), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_the_server_app_reads_its_settings_and_freezes_its_start_up_heap(tmp_path: Path) -> None:
    got = probe(tmp_path, "server", ENCLAVE_ENDPOINT_IDLE_S="7.5", ENCLAVE_POLICY="easy")
    assert got["idle_s"] == 7.5 and got["policy"] == "easy" and got["fleet"] == "local"
    assert isinstance(got["frozen"], int) and got["frozen"] > 10_000  # modules, routes, mappers...


def test_apps_made_by_tests_leave_the_collector_alone(tmp_path: Path) -> None:
    assert probe(tmp_path, "plain")["frozen"] == 0


def test_a_bad_number_in_the_environment_is_one_readable_line(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", "from enclave.api.app import app_from_env; app_from_env()"],
        env={**os.environ, "ENCLAVE_HOME": str(tmp_path / "home"), "ENCLAVE_ENDPOINT_IDLE_S": "soon"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert "ENCLAVE_ENDPOINT_IDLE_S must be a number, not 'soon'" in out.stderr
