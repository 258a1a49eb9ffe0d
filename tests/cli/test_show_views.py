"""`show` commands and usage at 80 columns, on canned API answers (the live server tests in
test_readable_cli.py cover jobs, regions and artifacts; these objects need models deployed)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from enclave.cli import admin, common, endpoints, models, train

MODEL_ID = "5f0c2a8e-3d5b-4d53-9a0e-6f1f6f3d2b11"
JOB_ID = "0b7e6d9c-8a41-4a6f-9a55-3f0d4f3c9e21"
ENDPOINT = {
    "name": "chat-7b",
    "label": "SECRET//SI",
    "state": "ready",
    "reason": None,
    "model": MODEL_ID,
    "runtime": "llama.cpp",
    "region": "secret-west",
    "agency": "doe",
    "restarts": 1,
    "settings": {"pii": "mask", "log_content": False},
    "replicas": {"ready": 2, "desired": 2, "min": 1, "max": 4, "in_flight": 0, "jobs": []},
    "last_exit": {"job": JOB_ID, "state": "failed", "exit_code": 137, "summary": "killed by signal 9"},
}
MODEL = {
    "id": MODEL_ID,
    "name": "classifier",
    "version": 3,
    "label": "SECRET//SI",
    "runtime": "sklearn",
    "task": "classification",
    "size_bytes": 123456789,
    "created_at": "2026-12-07T06:36:14.499672+00:00",
    "framework": "scikit-learn 1.5",
    "metrics": {"accuracy": 0.912345, "rows": 1000},
    "lineage": {"job": JOB_ID, "datasets": ["d1", "d2"], "base_models": []},
}
USAGE = {
    "agency": "doe",
    "by_label": [
        {"label": "SECRET//SI", "jobs": 12, "cpu_hours": 3.5, "gpu_hours": 0.25, "energy_kwh": 1.0768611111111111e-05,
         "emissions_kgco2e": 4.2e-06, "cost": 12.3456},
    ],
    "jobs": 12, "cpu_hours": 3.5, "gpu_hours": 0.25, "energy_kwh": 1.0768611111111111e-05,
    "emissions_kgco2e": 4.2e-06, "cost": 12.3456,
    "quotas": {"gpu_hours": 100.0, "kwh": None, "storage_bytes": 10 * 2**30},
}  # fmt: skip
TRAINING = {
    "id": JOB_ID,
    "name": "train-classifier",
    "label": "SECRET//SI",
    "state": "completed",
    "reason": None,
    "region": "secret-west",
    "training": {
        "model_name": "classifier",
        "runtime": "sklearn",
        "model_id": MODEL_ID,
        "outcome": "registered",
        "script": "7a1c0f2e-0000-4000-8000-000000000001",
        "datasets": ["d1"],
        "base_models": [],
        "hyperparameters": {"steps": 3},
        "metrics": [],
    },
}


class FakeApi:
    def endpoint(self, name: str) -> dict[str, Any]:
        return ENDPOINT

    def model(self, model_id: str) -> dict[str, Any]:
        return MODEL

    def agency_usage(self, name: str) -> dict[str, Any]:
        return USAGE

    def training(self, job_id: str) -> dict[str, Any]:
        return TRAINING

    def training_metrics(self, job_id: str, since: int = -1) -> dict[str, Any]:
        extra = {f"grad_norm_layer_{i}": 1.0 / (i + 1) for i in range(8)}  # more than 80 columns hold
        points = [
            {"step": s, "loss": 1 / (s + 1) ** 0.5, "accuracy": 0.5 + s / 10, **extra} for s in range(3)
        ]
        return {"metrics": points, "state": "completed"}


@contextmanager
def fake_client() -> Iterator[FakeApi]:
    yield FakeApi()


@pytest.fixture
def screen(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    """An 80-column terminal: what the commands print lands here."""
    out = io.StringIO()
    monkeypatch.setattr(common, "console", Console(width=80, file=out, color_system=None))
    monkeypatch.setattr(train, "console", common.console)  # train prints metrics on it directly
    monkeypatch.setenv("COLUMNS", "80")
    for module in (admin, endpoints, models, train):
        monkeypatch.setattr(module, "client", fake_client)
    return out


def _run(app: Any, *args: str) -> None:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output


def _lines(screen: io.StringIO) -> list[str]:
    lines = screen.getvalue().splitlines()
    assert max(len(line.rstrip()) for line in lines) <= 80
    return lines


def test_endpoint_show(screen: io.StringIO) -> None:
    _run(endpoints.app, "show", "chat-7b")
    text = "\n".join(_lines(screen))
    for value in (
        "chat-7b",
        "SECRET//SI",
        "ready",
        MODEL_ID,
        "secret-west",
        "2 ready / 2 desired (min 1, max 4)",
    ):
        assert value in text
    assert "pii=mask" in text and "log_content=no" in text
    assert "killed by signal 9" in text and text.count(JOB_ID) == 1  # the failed replica's job


def test_model_show(screen: io.StringIO) -> None:
    _run(models.app, "show", MODEL_ID)
    text = "\n".join(_lines(screen))
    assert MODEL_ID in text and JOB_ID in text and "117.7 MiB" in text and "accuracy=0.9123" in text
    assert "2026-12-07 06:36:14Z" in text and "d1, d2" in text


def test_training_show(screen: io.StringIO) -> None:
    _run(train.app, "show", JOB_ID)
    text = "\n".join(_lines(screen))
    assert JOB_ID in text and MODEL_ID in text and "registered" in text and '{"steps": 3}' in text


def test_agency_usage(screen: io.StringIO) -> None:
    _run(admin.app, "agency", "usage", "doe")
    lines = _lines(screen)
    total = next(line for line in lines if line.startswith("total"))
    for value in ("12", "3.5 h", "15m", "10.8 mWh", "4.2 mgCO2e", "$12.35"):
        assert value in total, (value, total)
    gpu = next(line for line in lines if line.startswith("gpu_hours"))
    assert "15m" in gpu and "100 h" in gpu and "(0.2%)" in gpu
    assert "unlimited" in next(line for line in lines if line.startswith("kwh"))
    assert "10.0 GiB" in next(line for line in lines if line.startswith("storage_bytes"))


def test_training_metrics(screen: io.StringIO) -> None:
    _run(train.app, "metrics", JOB_ID)
    lines = _lines(screen)
    head = next(i for i, line in enumerate(lines) if line.startswith("step"))
    note = " ".join(lines[:head])  # the title names the metrics left out; it wraps to the table
    assert "not shown at this width:" in note and "grad_norm_layer_7" in note
    assert lines[head].split()[:3] == ["step", "loss", "accuracy"]
    assert lines[head + 2].split()[:3] == ["1", "0.7071", "0.6"]  # 4 significant digits
