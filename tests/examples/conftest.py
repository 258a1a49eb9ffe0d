"""Run an example training script the way the platform does: a subprocess with the ENCLAVE_* contract."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load_example(relpath: str, name: str):
    """Import an example script as a module (the examples are script folders, not packages)."""
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / relpath)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class Job:
    """One training job's sandbox: data, output, checkpoint and metrics paths under tmp_path."""

    root: Path
    datasets: dict[str, Path]
    hparams: dict
    # One thread: these models are small enough that a second thread buys little, and two
    # OpenMP threads on a busy 2-core machine (a parallel test run) slow down many-fold.
    cpus: int = 1

    @property
    def output(self) -> Path:
        return self.root / "output"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def metrics_file(self) -> Path:
        return self.root / "metrics.jsonl"

    def env(self) -> dict[str, str]:
        for d in (self.output, self.checkpoints):
            d.mkdir(parents=True, exist_ok=True)
        data_dir = next(iter(self.datasets.values())).parent if self.datasets else self.root
        return {
            **os.environ,
            "ENCLAVE_DATA_DIR": str(data_dir),
            "ENCLAVE_DATASETS": json.dumps({name: str(p) for name, p in self.datasets.items()}),
            "ENCLAVE_OUTPUT_DIR": str(self.output),
            "ENCLAVE_CHECKPOINT_DIR": str(self.checkpoints),
            "ENCLAVE_METRICS_FILE": str(self.metrics_file),
            "ENCLAVE_HPARAMS": json.dumps(self.hparams),
            "ENCLAVE_CPUS": str(self.cpus),
        }

    def start(self, script: str) -> subprocess.Popen:
        work = self.root / "work"  # the sandbox working directory: nothing may land outside the contract dirs
        work.mkdir(parents=True, exist_ok=True)
        return subprocess.Popen(
            [sys.executable, str(EXAMPLES / script)],
            cwd=work,
            env=self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def run(self, script: str, timeout: float = 240) -> tuple[int, str]:
        proc = self.start(script)
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out

    def metrics(self) -> list[dict]:
        if not self.metrics_file.exists():
            return []
        text = self.metrics_file.read_text()
        complete = text[: text.rfind("\n") + 1]  # the job may be mid-way through appending a line
        return [json.loads(line) for line in complete.splitlines()]

    def model_card(self) -> dict:
        return json.loads((self.output / "model.json").read_text())


@pytest.fixture
def job_factory(tmp_path: Path):
    def make(datasets: dict[str, Path] | None = None, hparams: dict | None = None, name: str = "job") -> Job:
        return Job(tmp_path / name, datasets or {}, hparams or {})

    return make


def assert_metrics_well_formed(rows: list[dict]) -> None:
    """The platform streams these: an int "step" on every line, every other value a float."""
    assert rows, "no metrics were written"
    for row in rows:
        assert type(row["step"]) is int
        assert all(isinstance(v, float) for k, v in row.items() if k != "step"), row
