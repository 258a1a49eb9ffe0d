"""`enclave job list|show|cancel` with pages, arrays and id prefixes, and `audit list`, against
a real `enclave up` (issue 13, items 2-4)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

from tests.conftest import Server


def test_arrays_pages_and_prefixes_from_the_cli(live_server: Callable[..., Server], tmp_path: Path) -> None:
    server = live_server(tmp_path / "home")
    sleep = ["--walltime", "120", "--", "sleep", "60"]
    made = server.run("job", "submit", "--name", "grid", "--array", "3", *sleep)
    array_id = made.stdout.strip()
    assert re.fullmatch(r"[0-9a-f-]{36}", array_id) and "array of 3 tasks" in made.stderr
    single = server.run("job", "submit", "--name", "solo", *sleep).stdout.strip()

    shown = json.loads(server.run("job", "show", array_id[:8], "--json").stdout)
    assert shown["kind"] == "array" and shown["tasks"] == 3 and shown["name"] == "grid"
    assert json.loads(server.run("job", "show", "--array", array_id[:8], "--json").stdout)["id"] == array_id
    assert json.loads(server.run("job", "show", single[:8], "--json").stdout)["id"] == single
    tasks = json.loads(server.run("job", "list", "--array", array_id[:8], "--json").stdout)
    assert sorted(t["name"] for t in tasks) == ["grid[0]", "grid[1]", "grid[2]"]

    first = server.run("job", "list", "--limit", "3").stdout
    assert "showing 1-3 of 4, newest first; next: --page 2" in first
    second = json.loads(server.run("job", "list", "--limit", "3", "--page", "2", "--json").stdout)
    assert [j["name"] for j in second] == ["grid[0]"]  # the oldest
    everything = json.loads(server.run("job", "list", "--limit", "1", "--all", "--json").stdout)
    assert everything[0]["id"] == single and len(everything) == 4

    cancelled = server.run("job", "cancel", "--array", array_id[:10])
    assert cancelled.stdout.strip() == "cancel requested for 3 of 3 tasks"
    assert server.run("job", "cancel", single[:8]).stdout.strip() == "cancel requested"

    ids = server.run("job", "list", "--array", array_id, "-o", "ids").stdout.split()
    assert sorted(ids) == sorted(t["id"] for t in tasks)  # machine output: no footer
    records = server.run("audit", "list", "--limit", "2").stdout
    assert re.search(r"2 of \d+ records, newest first; older: --before \d+", records), records

    for args in (
        ["job", "list", "--since", "last tuesday"],
        ["job", "show"],
        ["job", "show", "zz"],
        ["job", "cancel", "--array", single],
    ):
        bad = server.run(*args, check=False)
        assert bad.returncode != 0 and len(bad.stderr.strip().splitlines()) == 1, (args, bad.stderr)
