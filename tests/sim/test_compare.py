"""`enclave sim compare`: several policies on one workload, one table, compare.json/csv, and
the oracle bound beside carbon-aware."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from enclave.errors import InvalidInput
from enclave.sim.carbon import builtin_curve
from enclave.sim.compare import COLUMNS, DEFAULT_POLICIES, compare, mark_deferrable, parse_policies
from enclave.sim.workload import SimJob
from tests.scheduler.factory import PoolSpec, RegionSpec, make_fleet, make_job

HOUR = 3600


def small_swf(path: Path, jobs: int = 40) -> Path:
    """A 16-processor machine; jobs of 1-8 processors arriving every 20 minutes over 13 hours."""
    lines = ["; Version: 2.2", "; Computer: test", "; MaxProcs: 16", ";"]
    for k in range(jobs):
        procs = (1, 2, 4, 8)[k % 4]
        run = 600 + (k * 977) % 7200
        req = run * 2
        fields = [
            k + 1,
            k * 1200,
            -1,
            run,
            procs,
            -1,
            -1,
            procs,
            req,
            -1,
            1,
            k % 3,
            k % 2,
            -1,
            -1,
            -1,
            -1,
            -1,
        ]
        lines.append(" ".join(str(f) for f in fields))
    path.write_text("\n".join(lines) + "\n")
    return path


def enclave(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, COLUMNS="200")
    return subprocess.run(
        [sys.executable, "-m", "enclave", *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_compare_cli_writes_its_files(tmp_path: Path) -> None:
    swf = small_swf(tmp_path / "small.swf")
    out = tmp_path / "out"
    proc = enclave(
        "sim", "compare", "--workload", str(swf), "--out", str(out),
        "--policies", ",".join(DEFAULT_POLICIES), "--deferrable-share", "0.5", "--power-cap-scale", "0.4",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "oracle bound" in proc.stdout
    assert "carbon-aware" in proc.stdout and "of the bound reached" in proc.stdout
    doc = json.loads((out / "compare.json").read_text())
    assert list(doc["policies"]) == list(DEFAULT_POLICIES)
    for name, row in doc["policies"].items():
        assert row["policy"] == name
        assert row["jobs"] == 40
        assert row["power_cap_violations"] == 0
        for key in COLUMNS:
            assert isinstance(row[key], int | float)
    assert doc["policies"]["power-capped"]["power_cap_scale"] == 0.4
    assert doc["carbon_curve"] == "builtin"
    assert doc["deferrable_jobs"] > 0
    carbon = doc["carbon"]
    easy_t = doc["policies"]["easy"]["emissions_tco2e"]
    aware_t = doc["policies"]["carbon-aware"]["emissions_tco2e"]
    assert carbon["oracle_emissions_tco2e"] == pytest.approx(easy_t - carbon["oracle_reduction_tco2e"])
    assert carbon["oracle_reduction_tco2e"] > 0
    assert carbon["share_of_oracle_reduction"] == pytest.approx(
        (easy_t - aware_t) / carbon["oracle_reduction_tco2e"]
    )
    assert carbon["extra_avg_wait_s"] == pytest.approx(
        doc["policies"]["carbon-aware"]["avg_wait_s"] - doc["policies"]["easy"]["avg_wait_s"]
    )
    with (out / "compare.csv").open() as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["policy", *COLUMNS]
    assert [r[0] for r in rows[1:]] == [*DEFAULT_POLICIES, "oracle-bound"]
    assert float(rows[-1][1 + COLUMNS.index("emissions_tco2e")]) == pytest.approx(
        carbon["oracle_emissions_tco2e"]
    )


def test_compare_cli_rejects_an_unknown_policy(tmp_path: Path) -> None:
    swf = small_swf(tmp_path / "small.swf", jobs=3)
    proc = enclave(
        "sim", "compare", "--workload", str(swf), "--policies", "easy,nope", "--out", str(tmp_path)
    )
    assert proc.returncode == 1
    assert "unknown scheduling policy 'nope'" in proc.stderr
    assert not (tmp_path / "compare.json").exists()


def test_run_takes_a_carbon_curve(tmp_path: Path) -> None:
    swf = small_swf(tmp_path / "small.swf", jobs=10)
    curve = tmp_path / "curve.toml"
    curve.write_text("[hourly]\ntrace = [" + ", ".join(["100.0"] * 12 + ["900.0"] * 12) + "]\n")
    flat = enclave("sim", "run", "--workload", str(swf), "--out", str(tmp_path / "flat"))
    varying = enclave(
        "sim", "run", "--workload", str(swf), "--out", str(tmp_path / "c"), "--carbon", str(curve)
    )
    assert flat.returncode == 0 and varying.returncode == 0, flat.stderr + varying.stderr
    a = json.loads((tmp_path / "flat" / "summary.json").read_text())
    b = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert a["energy_mwh"] == b["energy_mwh"]
    assert a["emissions_tco2e"] != b["emissions_tco2e"]


def test_compare_adds_the_baseline_and_uses_one_horizon() -> None:
    fleet = make_fleet(RegionSpec("west", (PoolSpec("p", 2),)))
    jobs = mark_deferrable(
        [SimJob(make_job(f"j{k}", walltime_s=HOUR, submit_s=k * 1800.0, seq=k), HOUR / 2) for k in range(8)],
        share=1.0,
        slack_s=12 * HOUR,
    )
    result = compare(fleet, jobs, ["carbon-aware"], carbon=builtin_curve(fleet))
    assert list(result.rows) == ["easy", "carbon-aware"]
    assert result.horizon_s == max(o.power[-1].t_s for o in result.outcomes.values())
    assert result.carbon is not None
    assert result.carbon["deadlines_missed"] == 0
    easy, aware = result.rows["easy"], result.rows["carbon-aware"]
    assert aware["emissions_tco2e"] < easy["emissions_tco2e"]
    assert result.carbon["oracle_emissions_tco2e"] <= aware["emissions_tco2e"]


def test_mark_deferrable_is_seeded() -> None:
    jobs = [SimJob(make_job(f"j{k}", walltime_s=100.0, submit_s=float(k), seq=k), 50.0) for k in range(200)]
    a = mark_deferrable(jobs, 0.3, 3600.0, seed=7)
    assert a == mark_deferrable(jobs, 0.3, 3600.0, seed=7)
    marked = [s for s in a if s.deferrable]
    assert 30 < len(marked) < 90
    assert all(s.deadline_s == s.job.submit_s + 100.0 + 3600.0 for s in marked)
    assert mark_deferrable(jobs, 0.0, 0.0) == jobs
    with pytest.raises(InvalidInput):
        mark_deferrable(jobs, 1.5, 0.0)


def test_parse_policies() -> None:
    assert parse_policies("fcfs, easy") == ["fcfs", "easy"]
    for bad in ("", "easy,easy", "fcfs,x"):
        with pytest.raises(InvalidInput):
            parse_policies(bad)
