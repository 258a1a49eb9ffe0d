"""Alibaba GPU v2023 pod list reader: the real trace from ../shared, the mapping of each
column, skipped pods counted by reason, malformed rows named by line, and a real run."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from enclave.cli.main import app
from enclave.errors import InvalidInput
from enclave.labels import DEFAULT_SCHEME
from enclave.scheduler.model import QOS
from enclave.sim.alibaba import COLUMNS, load_alibaba, read_pods, to_workload
from enclave.sim.workloads import load_workload, workload_and_fleet

TRACES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "traces"
TRACE = TRACES / "alibaba-gpu-v2023-openb_pod_list_default.csv"
BOTTOM = DEFAULT_SCHEME.bottom
HEADER = ",".join(COLUMNS)


def pod(
    name: str = "p",
    cpu_milli: str = "4000",
    memory_mib: str = "8192",
    num_gpu: str = "1",
    gpu_milli: str = "1000",
    qos: str = "LS",
    phase: str = "Running",
    creation: str = "100",
    deletion: str = "200",
    scheduled: str = "110",
) -> str:
    return ",".join(
        [name, cpu_milli, memory_mib, num_gpu, gpu_milli, "", qos, phase, creation, deletion, scheduled]
    )


def write(tmp_path: Path, rows: list[str], header: str = HEADER) -> Path:
    path = tmp_path / "pods.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_real_trace() -> None:
    with TRACE.open() as fh:
        rows = list(csv.DictReader(fh))
    wl = load_alibaba(TRACE, BOTTOM)
    pending = sum(1 for r in rows if not r["scheduled_time"])
    assert len(rows) == 8152 and pending == 897
    assert wl.skipped == {"never scheduled (pending)": 897}
    assert len(wl.jobs) + sum(wl.skipped.values()) == len(rows)
    by_name = {r["name"]: r for r in rows}
    for sim in wl.jobs:
        job, row = sim.job, by_name[sim.job.id]
        assert job.nodes == 1
        assert job.cpus == math.ceil(int(row["cpu_milli"]) / 1000)
        assert job.gpus == int(row["num_gpu"])  # shares of a GPU hold one whole GPU
        assert job.memory_mb == max(1, int(row["memory_mib"]))
        assert sim.run_s == float(row["deletion_time"]) - float(row["scheduled_time"])
        assert job.walltime_s == max(sim.run_s, 1.0)  # no requested time in this trace
        assert not sim.deferrable and sim.deadline_s is None
    submits = [s.job.submit_s for s in wl.jobs]
    assert submits == sorted(submits) and submits[0] == 0.0
    assert [s.job.seq for s in wl.jobs] == list(range(len(wl.jobs)))
    qos = {r["name"]: r["qos"] for r in rows}
    expected = {"LS": QOS.HIGH, "Guaranteed": QOS.HIGH, "Burstable": QOS.NORMAL, "BE": QOS.LOW}
    assert all(s.job.qos == expected[qos[s.job.id]] for s in wl.jobs)
    shares = sum(1 for r in rows if r["num_gpu"] == "1" and int(r["gpu_milli"]) < 1000)
    assert read_pods(TRACE).gpu_share == shares > 0


def test_pending_pods_replayed_on_request() -> None:
    wl = to_workload(read_pods(TRACE), BOTTOM, pending="replay")
    assert len(wl.jobs) == 8152 and wl.skipped == {}
    # Pending: created at 10001278, deleted at 10001403
    sim = next(s for s in wl.jobs if s.job.id == "openb-pod-0061")
    assert sim.run_s == 125.0


def test_gpu_share_rounds_up_to_one_gpu(tmp_path: Path) -> None:
    path = write(
        tmp_path, [pod(name="a", num_gpu="1", gpu_milli="230"), pod(name="b", num_gpu="0", gpu_milli="0")]
    )
    pods = read_pods(path)
    wl = to_workload(pods, BOTTOM)
    assert [s.job.gpus for s in wl.jobs] == [1, 0]
    assert pods.gpu_share == 1


def test_cpu_milli_rounds_up_and_zero_memory(tmp_path: Path) -> None:
    path = write(tmp_path, [pod(cpu_milli="1001", memory_mib="0")])
    job = load_alibaba(path, BOTTOM).jobs[0].job
    assert (job.cpus, job.memory_mb) == (2, 1)


def test_bad_times_are_skipped_and_counted(tmp_path: Path) -> None:
    rows = [
        pod(name="ok"),
        pod(name="pending", phase="Pending", scheduled=""),
        pod(name="no-end", deletion=""),
        pod(name="backwards", creation="100", scheduled="90", deletion="200"),
        pod(name="ends-early", scheduled="150", deletion="120"),
        pod(name="instant", scheduled="110", deletion="110"),
    ]
    wl = load_alibaba(write(tmp_path, rows), BOTTOM)
    assert [s.job.id for s in wl.jobs] == ["ok", "instant"]
    assert wl.skipped == {
        "never scheduled (pending)": 1,
        "no deletion time": 1,
        "scheduled before it was created": 1,
        "deleted before it started": 1,
    }
    assert wl.jobs[0].run_s == 90 and wl.jobs[1].run_s == 0
    replay = to_workload(read_pods(write(tmp_path, rows)), BOTTOM, pending="replay")
    assert "pending" in {s.job.id for s in replay.jobs}
    assert next(s for s in replay.jobs if s.job.id == "pending").run_s == 100  # deletion - creation


def test_submit_times_start_at_zero(tmp_path: Path) -> None:
    rows = [
        pod(name="late", creation="500", scheduled="500", deletion="600"),
        pod(name="early", creation="300", scheduled="300", deletion="400"),
    ]
    wl = load_alibaba(write(tmp_path, rows), BOTTOM)
    assert [(s.job.id, s.job.submit_s) for s in wl.jobs] == [("early", 0.0), ("late", 200.0)]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("p,4000,8192,1", r"pods\.csv:3: expected 11 columns, found 4"),
        (pod(cpu_milli="4k"), r"pods\.csv:3: cpu_milli is not an integer"),
        (pod(cpu_milli="0"), r"pods\.csv:3: cpu_milli must be positive"),
        (pod(memory_mib="-5"), r"pods\.csv:3: memory_mib must not be negative"),
        (pod(creation=""), r"pods\.csv:3: creation_time is empty"),
        (pod(deletion="soon"), r"pods\.csv:3: deletion_time is not a number"),
        (pod(scheduled="inf"), r"pods\.csv:3: scheduled_time is not a finite number"),
        (pod(qos="Platinum"), r"pods\.csv:3: unknown qos 'Platinum'"),
        (pod(gpu_milli="1500"), r"pods\.csv:3: gpu_milli is per GPU"),
        (pod(num_gpu="2", gpu_milli="500"), r"pods\.csv:3: a share of a GPU"),
        (pod(num_gpu="0", gpu_milli="500"), r"pods\.csv:3: num_gpu 0 with gpu_milli 500"),
    ],
)
def test_malformed_row_names_its_line(tmp_path: Path, row: str, message: str) -> None:
    path = write(tmp_path, [pod(name="first"), row, pod(name="last")])
    with pytest.raises(InvalidInput, match=message):
        read_pods(path)


def test_missing_column_and_empty_file(tmp_path: Path) -> None:
    path = write(tmp_path, [], header=HEADER.replace(",qos", ""))
    with pytest.raises(InvalidInput, match=r"pods\.csv:1: missing column\(s\) qos"):
        read_pods(path)
    path.write_text("")
    with pytest.raises(InvalidInput, match="empty file"):
        read_pods(path)


def test_duplicate_pod_names(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="unique"):
        load_alibaba(write(tmp_path, [pod(name="x"), pod(name="x")]), BOTTOM)


def test_dispatch_and_default_fleet(tmp_path: Path) -> None:
    path = write(tmp_path, [pod()])
    assert len(load_workload(path, DEFAULT_SCHEME).jobs) == 1
    wl, fleet = workload_and_fleet(path)
    assert fleet.name == "gigawatt" and len(wl.jobs) == 1
    _, local = workload_and_fleet(path, "local")
    assert local.name == "local"


def test_sim_run_on_the_real_trace(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["sim", "run", "--workload", str(TRACE), "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["fleet"] == "gigawatt"
    assert summary["skipped"] == {"never scheduled (pending)": 897}
    # five 8-GPU pods ask for 121 CPUs: more than a gigawatt node has, counted, not dropped
    assert summary["jobs"] + summary["jobs_never_started"] == 7255
    assert summary["power_cap_violations"] == 0
    assert summary["energy_mwh"] > 0
