"""`enclave sim run` writes its folder whole or not at all: Ctrl-C while the report renders
(found by a user) left a partial folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from enclave.cli.main import app
from enclave.sim import report
from tests.sim.test_scenario import scenario, swf


def test_an_interrupted_report_leaves_the_last_whole_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    swf(tmp_path)
    path = scenario(tmp_path, "[trace]\npath = 'traces/small.swf'\n")
    out = tmp_path / "out"
    args = ["sim", "run", "--workload", str(path), "--out", str(out), "--policy", "fcfs"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert set(before) == set(report.NAMES)

    def interrupted(*_: object) -> str:
        raise KeyboardInterrupt  # stands in for the user's Ctrl-C, which cannot be timed here

    monkeypatch.setattr(report, "_html", interrupted)
    second = CliRunner().invoke(app, [*args[:-1], "easy"])
    assert second.exit_code != 0
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing half-replaced
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []  # no debris
    assert json.loads((out / "summary.json").read_text())["policy"] == "fcfs"
