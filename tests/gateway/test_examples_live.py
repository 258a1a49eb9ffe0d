"""The shipped examples through the whole platform: dataset upload, a training job that runs
the example script, the registered model deployed as an endpoint, and the official openai
client calling it."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import openai

from tests.conftest import Server

ROOT = Path(__file__).parents[2]
FLEET = (ROOT / "src/enclave/fleets/local.toml").read_text()


def _ok(r: httpx.Response, status: int = 200) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    return r.json()


def _session(server: Server) -> tuple[httpx.Client, str]:
    admin = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.admin_token}"})
    _ok(admin.post("/v1/agencies", json={"name": "alpha"}), 201)
    _ok(admin.post("/v1/users", json={"name": "alice", "agency": "alpha", "clearance": "SECRET"}), 201)
    token = _ok(admin.post("/v1/tokens", json={"user": "alice", "label": "SECRET"}), 201)["token"]
    admin.close()
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=60), token


def _train(api: httpx.Client, script: Path, dataset: bytes, name: str, runtime: str, hp: dict) -> dict:
    ds = _ok(api.post("/v1/datasets", params={"name": name}, content=dataset), 201)
    art = _ok(api.post("/v1/artifacts", params={"name": script.name}, content=script.read_bytes()), 201)
    job = _ok(
        api.post(
            "/v1/training",
            json={
                "script": art["id"],
                "model_name": f"{name}-model",
                "runtime": runtime,
                "datasets": [ds["id"]],
                "hyperparameters": hp,
                "resources": {"cpus_per_node": 2, "memory_mb": 3072},
                "walltime_s": 600,
            },
        ),
        201,
    )
    deadline = time.monotonic() + 300
    while True:
        t = _ok(api.get(f"/v1/training/{job['id']}"))
        if t["training"]["model_id"] or t["training"]["outcome"]:
            break
        assert time.monotonic() < deadline, t["state"]
        time.sleep(0.5)
    assert t["state"] == "completed" and t["training"]["model_id"], (t["state"], t["reason"], t["training"])
    model = _ok(api.get(f"/v1/registry/models/{t['training']['model_id']}"))
    assert model["label"] == "SECRET" and model["lineage"]["datasets"] == [ds["id"]]
    return model


def _deploy(api: httpx.Client, model: dict, name: str) -> None:
    _ok(api.post("/v1/endpoints", json={"model": model["id"], "name": name, "memory_mb": 3072}), 201)
    deadline = time.monotonic() + 120
    while _ok(api.get(f"/v1/endpoints/{name}"))["state"] != "ready":
        assert time.monotonic() < deadline
        time.sleep(0.3)


def _retire(api: httpx.Client, name: str, server: Server) -> None:
    assert api.delete(f"/v1/endpoints/{name}").status_code == 204
    deadline = time.monotonic() + 60
    while any(j["state"] == "running" for j in _ok(api.get("/v1/jobs"))["items"] if j["kind"] == "replica"):
        assert time.monotonic() < deadline
        time.sleep(0.3)


def test_intrusion_example_trains_deploys_and_classifies(
    live_server: Callable[..., Server], tmp_path: Path
) -> None:
    flows = tmp_path / "flows.csv"
    subprocess.run(
        [sys.executable, str(ROOT / "examples/intrusion/generate.py"), "--out", str(flows), "--rows", "6000"],
        check=True,
        capture_output=True,
    )
    server = live_server(tmp_path / "home")
    api, token = _session(server)
    model = _train(api, ROOT / "examples/intrusion/train.py", flows.read_bytes(), "flows.csv", "sklearn", {})
    metrics = model["metrics"]
    assert metrics["accuracy"] > metrics["baseline_accuracy"] + 0.1, metrics
    _deploy(api, model, "intrusion")
    header, row = flows.read_text().splitlines()[:2]
    features = [f for f in header.split(",") if f != "label"]
    values = dict(zip(header.split(","), row.split(","), strict=True))
    prompt = ", ".join(values[f] for f in features)
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key=token, max_retries=0) as client:
        answer = client.completions.create(model="intrusion", prompt=prompt)
    assert answer.choices[0].text.strip() in {"normal", "dos", "probe", "r2l", "u2r"}
    _retire(api, "intrusion", server)
    api.close()


def test_charlm_example_trains_deploys_and_generates(
    live_server: Callable[..., Server], tmp_path: Path
) -> None:
    server = live_server(tmp_path / "home")
    api, token = _session(server)
    text = (ROOT / "examples/charlm/data/shakespeare.txt").read_bytes()
    model = _train(
        api,
        ROOT / "examples/charlm/train.py",
        text,
        "shakespeare.txt",
        "pytorch",
        {"preset": "smoke", "steps": 120},
    )
    assert model["metrics"]["val_loss"] < model["metrics"]["unigram_loss"], model["metrics"]
    _deploy(api, model, "bard")
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key=token, max_retries=0) as client:
        out = client.completions.create(model="bard", prompt="ROMEO:", max_tokens=40, temperature=0.8, seed=1)
        streamed = client.completions.create(
            model="bard", prompt="ROMEO:", max_tokens=40, temperature=0.8, seed=1, stream=True
        )
        pieces = "".join(c.choices[0].text for c in streamed if c.choices)
    assert len(out.choices[0].text) == 40 and pieces == out.choices[0].text
    _retire(api, "bard", server)
    api.close()
