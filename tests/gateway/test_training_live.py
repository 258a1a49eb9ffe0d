"""Training jobs end to end on a real `enclave up`: staged read-only inputs, streamed metrics,
the output registered as a model at the lub of its inputs, and a preempted job that resumes
from its checkpoint."""

from __future__ import annotations

import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.conftest import Server

SCRIPT = textwrap.dedent(
    """
    import json, os, signal, sys, time
    data = os.environ["ENCLAVE_DATA_DIR"]
    rows = open(json.loads(os.environ["ENCLAVE_DATASETS"])["flows.csv"]).read().splitlines()
    assert os.stat(data).st_mode & 0o222 == 0, "inputs must be read-only"
    hp = json.loads(os.environ["ENCLAVE_HPARAMS"])
    ckpt = os.path.join(os.environ["ENCLAVE_CHECKPOINT_DIR"], "step")
    start = int(open(ckpt).read()) if os.path.exists(ckpt) else 0
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))
    with open(os.environ["ENCLAVE_METRICS_FILE"], "a") as m:
        for step in range(start, hp["steps"]):
            loss = 1.0 / (step + 1)
            m.write(json.dumps({"step": step, "loss": loss, "resumed_from": start}) + "\\n")
            m.flush()
            with open(ckpt + ".tmp", "w") as f:
                f.write(str(step + 1))
            os.replace(ckpt + ".tmp", ckpt)
            time.sleep(hp["sleep"])
    out = os.environ["ENCLAVE_OUTPUT_DIR"]
    json.dump({"format": "enclave-model/1", "runtime": "sklearn", "task": "classification",
               "metrics": {"rows": len(rows), "loss": loss}}, open(os.path.join(out, "model.json"), "w"))
    open(os.path.join(out, "model.skops"), "wb").write(b"weights")
    print("trained on", len(rows), "rows")
    """
)


def _ok(r: httpx.Response, status: int = 200) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    return r.json()


def _setup(server: Server) -> tuple[httpx.Client, httpx.Client, httpx.Client]:
    admin = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.admin_token}"})
    _ok(admin.post("/v1/agencies", json={"name": "alpha"}), 201)
    for name, roles in (("alice", ["user"]), ("olga", ["user", "operator"])):
        _ok(
            admin.post(
                "/v1/users", json={"name": name, "agency": "alpha", "clearance": "SECRET", "roles": roles}
            ),
            201,
        )

    def client(user: str, label: str) -> httpx.Client:
        token = _ok(admin.post("/v1/tokens", json={"user": user, "label": label}), 201)["token"]
        return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)

    out = client("alice", "SECRET"), client("alice", "CUI"), client("olga", "SECRET")
    admin.close()
    return out


def _submit(api: httpx.Client, steps: int, sleep: float, cpus: int = 1) -> tuple[str, str]:
    ds = _ok(api.post("/v1/datasets", params={"name": "flows.csv"}, content=b"a,b\n1,2\n3,4\n"), 201)
    script = _ok(api.post("/v1/artifacts", params={"name": "train.py"}, content=SCRIPT.encode()), 201)
    job = _ok(
        api.post(
            "/v1/training",
            json={
                "name": "fit",
                "script": script["id"],
                "model_name": "flows-clf",
                "runtime": "sklearn",
                "datasets": [ds["id"]],
                "hyperparameters": {"steps": steps, "sleep": sleep},
                "region": "secret-west",
                "resources": {"cpus_per_node": cpus, "memory_mb": 1024},
                "walltime_s": 300,
            },
        ),
        201,
    )
    return job["id"], ds["id"]


def _wait(api: httpx.Client, job_id: str, done: Callable[[dict], bool], timeout_s: float = 120) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        t = _ok(api.get(f"/v1/training/{job_id}"))
        if done(t):
            return t
        assert time.monotonic() < deadline, (t["state"], t["reason"], t["exit_code"], t["training"])
        time.sleep(0.2)


def test_training_registers_a_model_at_the_label_of_its_inputs(
    live_server: Callable[..., Server], tmp_path: Path
) -> None:
    server = live_server(tmp_path / "home")
    secret, cui, _ = _setup(server)
    job_id, ds_id = _submit(secret, steps=5, sleep=0.05)
    t = _wait(secret, job_id, lambda t: t["training"]["model_id"] or t["training"]["outcome"])
    assert t["state"] == "completed", t
    model = _ok(secret.get(f"/v1/registry/models/{t['training']['model_id']}"))
    assert model["label"] == "SECRET" and model["runtime"] == "sklearn"
    assert model["lineage"] == {"job": job_id, "datasets": [ds_id], "base_models": []}
    assert model["metrics"] == {"rows": 3, "loss": 0.2}
    points = _ok(secret.get(f"/v1/training/{job_id}/metrics"))["metrics"]
    assert [p["step"] for p in points] == [0, 1, 2, 3, 4]
    assert (
        _ok(secret.get(f"/v1/training/{job_id}/metrics", params={"since_step": 3}))["metrics"] == points[4:]
    )
    # Below its label the model, the job and its metrics do not exist.
    assert cui.get(f"/v1/registry/models/{model['id']}").status_code == 404
    assert cui.get(f"/v1/training/{job_id}/metrics").status_code == 404
    assert model["id"] not in {m["id"] for m in _ok(cui.get("/v1/registry/models"))["items"]}
    # The work folder (staged inputs, outputs) is gone once the model is registered.
    assert not list((server.home / "work").rglob(job_id))
    for c in (secret, cui):
        c.close()


def test_a_preempted_training_job_resumes_from_its_checkpoint(
    live_server: Callable[..., Server], tmp_path: Path
) -> None:
    server = live_server(tmp_path / "home")
    secret, cui, operator = _setup(server)
    job_id, _ = _submit(secret, steps=30, sleep=0.1, cpus=2)  # the whole secret-west node
    _wait(secret, job_id, lambda t: len(_ok(secret.get(f"/v1/training/{job_id}/metrics"))["metrics"]) >= 5)
    urgent = {
        "name": "urgent",
        "command": ["sleep", "1"],
        "qos": "urgent",
        "region": "secret-west",
        "resources": {"cpus_per_node": 2, "memory_mb": 256},
        "walltime_s": 60,
    }
    _ok(operator.post("/v1/jobs", json=urgent), 201)
    t = _wait(secret, job_id, lambda t: t["training"]["model_id"] or t["training"]["outcome"], timeout_s=180)
    assert t["state"] == "completed" and t["attempts"] >= 1, t
    points = _ok(secret.get(f"/v1/training/{job_id}/metrics"))["metrics"]
    steps = [p["step"] for p in points]
    assert steps == list(range(30)), steps  # every step once: the second attempt went on, not over
    assert max(p["resumed_from"] for p in points) > 0
    for c in (secret, cui, operator):
        c.close()
