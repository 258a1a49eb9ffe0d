"""Synthetic AI + HPC workloads: exact counts, shapes, diurnal load, deadlines, and
determinism down to the bytes `enclave sim run` writes."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from enclave.cli.main import app
from enclave.errors import InvalidInput
from enclave.fleet import load_fleet
from enclave.labels import DEFAULT_SCHEME
from enclave.scheduler.model import QOS
from enclave.scheduler.policies import make_policy
from enclave.sim.engine import simulate
from enclave.sim.metrics import summarize
from enclave.sim.synthetic import Mix, SyntheticSpec, generate
from enclave.sim.workload import SimJob

DAY = 86400.0


def kind(sim: SimJob) -> str:
    return sim.job.id.split("-")[0]


def jobs_of(**params: object) -> list[SimJob]:
    return generate(SyntheticSpec.model_validate(params), DEFAULT_SCHEME).jobs


def fingerprint(jobs: list[SimJob]) -> list[tuple[object, ...]]:
    return [
        (s.job.id, s.job.agency, s.job.label.marking, s.job.nodes, s.job.cpus, s.job.memory_mb, s.job.gpus,
         s.job.walltime_s, s.job.submit_s, s.job.qos, s.run_s, s.deferrable, s.deadline_s)
        for s in jobs
    ]  # fmt: skip


def test_exact_count_and_mix() -> None:
    jobs = jobs_of(seed=1, jobs=5003, days=3, mix={"training": 0.5, "inference": 0.2, "hpc": 0.3})
    assert len(jobs) == 5003
    counts = Counter(kind(s) for s in jobs)
    assert counts == {"training": 2501, "inference": 1001, "hpc": 1501}  # largest remainders (.5 .6 .9)
    assert len({s.job.id for s in jobs}) == len(jobs)
    assert [s.job.seq for s in jobs] == list(range(len(jobs)))
    submits = [s.job.submit_s for s in jobs]
    assert submits == sorted(submits)
    assert submits[0] >= 0 and submits[-1] < 3 * DAY


def test_arrival_rate_sets_the_count() -> None:
    assert len(jobs_of(seed=1, arrival_rate_per_hour=50, days=2)) == 2400
    assert len(jobs_of(seed=1)) == 10_000  # the default
    assert jobs_of(seed=1, jobs=0) == []


@pytest.mark.parametrize("mix", [{"training": 1, "inference": 0, "hpc": 0}, {"inference": 1, "training": 0, "hpc": 0},
                                 {"hpc": 1, "training": 0, "inference": 0}])  # fmt: skip
def test_one_kind_only(mix: dict[str, float]) -> None:
    jobs = jobs_of(seed=4, jobs=777, days=2, mix=mix)
    assert len(jobs) == 777 and {kind(s) for s in jobs} == {k for k, v in mix.items() if v}


def test_shapes() -> None:
    jobs = jobs_of(seed=2, jobs=20_000, days=5)
    for s in jobs:
        j = s.job
        assert s.run_s <= j.walltime_s and s.run_s >= 60
        assert j.cpus >= 1 and j.memory_mb >= 1
        if kind(s) == "training":
            total = j.nodes * j.gpus
            assert total & (total - 1) == 0 and 1 <= total <= 512 * 8  # powers of two
            assert j.nodes == 1 or j.gpus == 8  # more than a node's GPUs: whole nodes
            assert j.cpus == 112 * j.gpus // 8 and j.qos == QOS.NORMAL
            assert j.walltime_s % 900 == 0  # users ask for quarter hours
        elif kind(s) == "inference":
            assert j.nodes == 1 and j.gpus in (1, 2, 4, 8) and j.qos == QOS.HIGH
            assert j.walltime_s == s.run_s <= DAY and not s.deferrable
        else:
            assert j.gpus == 0 and j.cpus == 128 and j.nodes in (1, 2, 4, 8, 16, 32, 64)
    sizes = Counter(s.job.nodes * s.job.gpus for s in jobs if kind(s) == "training")
    assert sizes[1] > sizes[8] > sizes[64] > 0  # heavy tail: many small, few huge
    assert max(sizes) >= 512


def test_hpc_ensembles_arrive_together() -> None:
    jobs = jobs_of(seed=3, jobs=4000, days=2, mix={"hpc": 1, "training": 0, "inference": 0})
    groups = Counter(s.job.submit_s for s in jobs)
    assert max(groups.values()) >= 20  # mean ensemble size 40
    assert len(groups) < len(jobs) / 10
    for t in list(groups)[:50]:
        members = [s for s in jobs if s.job.submit_s == t]
        assert len({(m.job.agency, m.job.label, m.job.nodes, m.deferrable) for m in members}) == 1


def test_diurnal_load() -> None:
    jobs = jobs_of(seed=5, jobs=30_000, days=4, diurnal_amplitude=0.8)
    hours = np.array([s.job.submit_s % DAY // 3600 for s in jobs if kind(s) == "training"])
    afternoon = int(np.sum((hours >= 12) & (hours < 16)))
    night = int(np.sum(hours < 4))
    assert afternoon > 2 * night
    inference = [s for s in jobs if kind(s) == "inference"]

    def replicas_at(t: float) -> int:
        return sum(1 for s in inference if s.job.submit_s <= t < s.job.submit_s + s.run_s)

    assert replicas_at(DAY + 14 * 3600) > 1.5 * replicas_at(DAY + 2 * 3600) > 0


def test_deferrable_jobs_have_deadlines() -> None:
    jobs = jobs_of(seed=6, jobs=5000, days=2, deferrable_share=0.5, deadline_slack_hours=10)
    deferrable = [s for s in jobs if s.deferrable]
    eligible = [s for s in jobs if kind(s) != "inference"]
    assert 0.3 < len(deferrable) / len(eligible) < 0.7
    for s in jobs:
        assert (s.job.deferrable, s.job.deadline_s) == (s.deferrable, s.deadline_s)  # the scheduler sees it
        if s.deferrable:
            assert s.deadline_s is not None
            slack = s.deadline_s - s.job.submit_s - s.job.walltime_s
            assert 5 * 3600 - 1e-6 <= slack <= 15 * 3600 + 1e-6
        else:
            assert s.deadline_s is None
    assert not any(s.deferrable for s in jobs_of(seed=6, jobs=500, deferrable_share=0))


def test_agencies_and_labels_by_share() -> None:
    jobs = jobs_of(
        seed=7, jobs=6000, days=2, agencies={"doe": 3, "nih": 1, "unused": 0},
        labels={"UNCLASSIFIED": 1, "secret": 1, "TS//SI": 0},
    )  # fmt: skip
    agencies = Counter(s.job.agency for s in jobs)
    assert set(agencies) == {"doe", "nih"} and agencies["doe"] > agencies["nih"]
    assert {s.job.label.marking for s in jobs} == {"UNCLASSIFIED", "SECRET"}


def test_same_seed_same_jobs_different_seed_different() -> None:
    params = {"jobs": 3000, "days": 2}
    a, b = jobs_of(seed=11, **params), jobs_of(seed=11, **params)
    assert fingerprint(a) == fingerprint(b)
    assert fingerprint(a) != fingerprint(jobs_of(seed=12, **params))


def test_invalid_parameters() -> None:
    with pytest.raises(ValidationError, match="not both"):
        SyntheticSpec(jobs=10, arrival_rate_per_hour=5)
    with pytest.raises(ValidationError, match="power of two"):
        SyntheticSpec(max_training_nodes=100)
    with pytest.raises(ValidationError, match="positive share"):
        SyntheticSpec(labels={"SECRET": 0})
    with pytest.raises(ValidationError, match="positive share"):
        Mix(training=0, inference=0, hpc=0)
    with pytest.raises(ValidationError, match="Extra inputs"):
        SyntheticSpec.model_validate({"jobz": 3})
    with pytest.raises(ValidationError):
        SyntheticSpec(days=0)
    with pytest.raises(InvalidInput, match="synthetic labels: 'COSMIC'"):
        generate(SyntheticSpec(labels={"COSMIC": 1}), DEFAULT_SCHEME)


def test_simulated_on_gigawatt_within_the_caps() -> None:
    fleet = load_fleet("gigawatt")
    wl = generate(SyntheticSpec(seed=8, jobs=2000, days=1), fleet.scheme)
    outcome = simulate(fleet, wl.jobs, make_policy("easy"))
    summary = summarize(fleet, outcome)
    assert summary["jobs"] == 2000 and summary["jobs_never_started"] == 0
    assert summary["power_cap_violations"] == 0
    assert all(r.start_s >= r.sim.job.submit_s for r in outcome.runs)
    # a SECRET job never runs below SECRET
    regions = {r.name: fleet.accreditation(r) for r in fleet.regions}
    assert all(regions[r.placement.region].dominates(r.sim.job.label) for r in outcome.runs)


def _sim_run(tmp_path: Path, seed: int, name: str) -> Path:
    scenario = tmp_path / f"{name}.toml"
    scenario.write_text(f"[synthetic]\nseed = {seed}\njobs = 1500\ndays = 1\n")
    out = tmp_path / f"out-{name}"
    result = CliRunner().invoke(app, ["sim", "run", "--workload", str(scenario), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_sim_run_output_bytes_are_deterministic(tmp_path: Path) -> None:
    first, second = _sim_run(tmp_path, 5, "a"), _sim_run(tmp_path, 5, "a")
    other = _sim_run(tmp_path, 6, "b")

    def summary(out: Path) -> bytes:
        data = json.loads((out / "summary.json").read_text())
        assert data["fleet"] == "gigawatt" and data["jobs"] == 1500
        assert math.isfinite(data.pop("wall_s"))
        return json.dumps(data, sort_keys=True).encode()

    assert (first / "jobs.csv").read_bytes() == (second / "jobs.csv").read_bytes()
    assert (first / "power.csv").read_bytes() == (second / "power.csv").read_bytes()
    assert summary(first) == summary(second)
    assert (first / "jobs.csv").read_bytes() != (other / "jobs.csv").read_bytes()
    assert summary(first) != summary(other)
