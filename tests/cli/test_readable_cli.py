"""The CLI against a real `enclave up`, read at 80 and 120 columns as a person would: the values
they need are on screen, whole, with units; machine formats stay exact."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from enclave.client import Client
from tests.conftest import CLI, Server, free_port


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    port = free_port()
    srv = Server(tmp_path_factory.mktemp("readable") / "home", f"http://127.0.0.1:{port}", port)
    srv.start()
    yield srv
    srv.stop()


def cli(server: Server, *args: str, columns: int | None = 80) -> str:
    """Run `enclave ARGS` as a terminal COLUMNS wide would (rich reads $COLUMNS); None: piped."""
    env = {**os.environ, "ENCLAVE_HOME": str(server.home), "ENCLAVE_URL": server.url, "COLUMNS": str(columns)}
    env.pop("ENCLAVE_TOKEN", None)
    if columns is None:
        env.pop("COLUMNS")
    proc = subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def jobs(server: Server) -> list[dict[str, object]]:
    with Client(server.url, server.admin_token) as api:
        ids = [
            api.submit_job({"name": f"clim-{i}", "command": ["true"], "label": "UNCLASSIFIED"})["id"]
            for i in range(2)
        ]
        deadline = time.monotonic() + 60
        while any(api.job(j)["state"] != "completed" for j in ids):
            assert time.monotonic() < deadline, "jobs did not complete"
            time.sleep(0.2)
        return [api.job(j) for j in ids]


def _fits(text: str, columns: int) -> None:
    assert max(len(line.rstrip()) for line in text.splitlines()) <= columns, text


@pytest.mark.parametrize("columns", [80, 120])
def test_job_list_and_show(server: Server, jobs: list[dict[str, object]], columns: int) -> None:
    listed = cli(server, "job", "list", columns=columns)
    _fits(listed, columns)
    for job in jobs:
        line = next(line for line in listed.splitlines() if str(job["id"]) in line)
        assert all(str(job[k]) in line for k in ("name", "label", "state")), listed
        if columns == 120:
            assert str(job["region"]) in line
    shown = cli(server, "job", "show", str(jobs[0]["id"]), columns=columns)
    _fits(shown, columns)
    for key in ("id", "label", "state", "region", "exit_code"):
        assert f"{key} " in shown and str(jobs[0][key]) in shown, (key, shown)
    assert str(jobs[0]["energy"]["source"]) in shown  # type: ignore[index]
    assert "Wh" in shown and "CO2e" in shown and "e-0" not in shown  # units, no 1e-05


@pytest.mark.parametrize("columns", [80, 120])
def test_regions_and_usage(server: Server, jobs: list[dict[str, object]], columns: int) -> None:
    regions = cli(server, "regions", columns=columns)
    _fits(regions, columns)
    for name in ("gov-east", "secret-west", "ts-east", "TOP SECRET"):
        assert name in regions
    piped = cli(server, "regions", columns=None)  # to a program, without $COLUMNS: every column
    assert "healthy" in piped.splitlines()[1] and "hidden" not in piped
    usage = cli(server, "admin", "agency", "usage", "enclave", columns=columns)
    _fits(usage, columns)
    total = next(line for line in usage.splitlines() if line.startswith("total"))
    assert "Wh" in total and "CO2e" in total and "$" in total and "e-0" not in usage
    assert "unlimited" in usage and "{" not in usage  # quotas read as words, not raw JSON


def test_machine_formats(server: Server, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("hello\n")
    art = cli(server, "artifact", "put", str(tmp_path / "a.txt")).strip()
    assert cli(server, "artifact", "list", "-o", "ids").split() == [art]
    assert json.loads(cli(server, "artifact", "list", "--json"))[0]["id"] == art  # --json still works
    assert yaml.safe_load(cli(server, "artifact", "show", art, "-o", "yaml"))["id"] == art
    rows = list(csv.DictReader(io.StringIO(cli(server, "artifact", "list", "-o", "csv"))))
    assert rows[0]["id"] == art and rows[0]["size_bytes"] == "6"  # exact, not "6 B"
    shown = cli(server, "artifact", "show", art)
    assert art in shown and "6 B" in shown and "UNCLASSIFIED" in shown
    narrow = cli(server, "artifact", "list", columns=80)
    assert "created_at" not in narrow.splitlines()[1] and "hidden at 80 columns: created_at" in narrow
    assert "created_at" in cli(server, "artifact", "list", "--wide", columns=80).splitlines()[1]
