"""`enclave dataset|model|train|endpoint ...` against a real `enclave up` (fleet `local`)."""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from enclave.client import Client
from tests.conftest import Server, free_port

TRAIN_SCRIPT = """\
import json, os, pathlib
data = json.loads(os.environ["ENCLAVE_DATASETS"])
rows = sum(len(pathlib.Path(p).read_text().splitlines()) for p in data.values())
hp = json.loads(os.environ["ENCLAVE_HPARAMS"])
with open(os.environ["ENCLAVE_METRICS_FILE"], "a") as fh:
    for step in range(hp["steps"]):
        fh.write(json.dumps({"step": step, "loss": 1.0 / (step + 1), "rows": rows}) + "\\n")
out = pathlib.Path(os.environ["ENCLAVE_OUTPUT_DIR"])
(out / "model.json").write_text(json.dumps(
    {"format": "enclave-model/1", "runtime": "sklearn", "task": "classification",
     "metrics": {"rows": rows, "tag": hp["tag"]}}))
(out / "weights.txt").write_text("0.5\\n")
print("trained on", rows, "rows")
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One `enclave up` for the module (starting one is seconds); each test is its own agency."""
    port = free_port()
    srv = Server(tmp_path_factory.mktemp("ai-cli") / "home", f"http://127.0.0.1:{port}", port)
    srv.start()
    yield srv
    srv.stop()


@dataclass
class User:
    """A fresh agency with one user and a token at ``label``: what it lists is its own."""

    server: Server
    name: str
    token: str
    label: str

    def run(
        self, *args: str, check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return self.server.run(*args, token=self.token, check=check, stdin=stdin)

    def json(self, *args: str) -> object:
        return json.loads(self.run(*args, "--json").stdout)

    def api(self) -> Client:
        return Client(self.server.url, self.token)


@pytest.fixture
def user(server: Server, request: pytest.FixtureRequest) -> User:
    name = request.node.name.removeprefix("test_")[:40].replace("_", "-")
    with Client(server.url, server.admin_token) as admin:
        admin.create_agency(name)
        admin.create_user(name, name, "SECRET", [])
        token = admin.mint_token(name, "CUI")["token"]
    return User(server, name, token, "CUI")


def _one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1, proc
    assert proc.stderr.startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    return proc.stderr


def test_dataset_round_trip_and_refusals(user: User, tmp_path: Path) -> None:
    data = tmp_path / "iris.csv"
    data.write_bytes(b"sepal,petal,species\n5.1,1.4,setosa\n" * 1000)
    ds = user.run("dataset", "upload", str(data), "--name", "iris", "--description", "flowers").stdout.strip()
    assert "\n" not in ds
    again = user.run("dataset", "upload", str(data), "--name", "iris").stdout.strip()

    shown = user.json("dataset", "show", ds)
    assert isinstance(shown, dict)
    assert (shown["name"], shown["kind"], shown["version"], shown["label"]) == ("iris", "dataset", 1, "CUI")
    assert shown["sha256"] == hashlib.sha256(data.read_bytes()).hexdigest()
    assert shown["size_bytes"] == data.stat().st_size and shown["metadata"]["description"] == "flowers"
    listed = user.json("dataset", "list")
    assert isinstance(listed, list)
    assert [(d["id"], d["version"]) for d in listed] == [(again, 2), (ds, 1)]  # newest first

    out = tmp_path / "copy.csv"
    user.run("dataset", "download", ds, "-o", str(out))
    assert out.read_bytes() == data.read_bytes()
    assert user.run("dataset", "download", again).stdout == data.read_text()

    assert user.run("dataset", "delete", again).stdout.strip() == "deleted"
    assert "not found" in _one_line_error(user.run("dataset", "show", again, check=False))

    # Refused uploads leave nothing behind: an empty file, and content that is not its checksum.
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    assert "empty" in _one_line_error(user.run("dataset", "upload", str(empty), check=False))
    bad = httpx.post(
        f"{user.server.url}/v1/datasets",
        params={"name": "tampered"},
        content=b"some bytes",
        headers={
            "Authorization": f"Bearer {user.token}",
            "X-Content-SHA256": hashlib.sha256(b"other bytes").hexdigest(),
            "Content-Type": "application/octet-stream",
        },
    )
    assert bad.status_code in (400, 422) and "checksum" in bad.json()["detail"]
    assert [d["id"] for d in user.json("dataset", "list")] == [ds]  # type: ignore[union-attr]


def test_model_register_show_and_label_check(user: User, tmp_path: Path) -> None:
    folder = tmp_path / "clf"
    folder.mkdir()
    (folder / "model.json").write_text(
        json.dumps({"format": "enclave-model/1", "runtime": "sklearn", "framework": "scikit-learn"})
    )
    (folder / "weights.dat").write_bytes(b"\x00\x01" * 512)  # not a pickle (a .bin would be taken for one)
    data = tmp_path / "train.csv"
    data.write_text("x,y\n1,2\n")
    with user.api() as api:
        ds = api.upload_dataset(data)["id"]

    model = user.run(
        "model", "register", str(folder), "--name", "clf", "--runtime", "sklearn", "--dataset", ds
    ).stdout.strip()
    assert "\n" not in model
    shown = user.json("model", "show", model)
    assert isinstance(shown, dict)
    assert (shown["label"], shown["runtime"], shown["framework"]) == (user.label, "sklearn", "scikit-learn")
    assert shown["lineage"] == {"job": None, "datasets": [ds], "base_models": []}

    builtin = user.run("model", "register", "--builtin", "minilm", "--name", "embed").stdout.strip()
    upstream = user.run(
        "model",
        "register",
        "--name",
        "gpt",
        "--runtime",
        "openai-upstream",
        "--upstream-url",
        "http://127.0.0.1:9/v1",
        "--upstream-model",
        "llama",
        "--base-model",
        builtin,
        "--label",
        user.label,
    ).stdout.strip()
    listed = {m["id"]: m for m in user.json("model", "list")}  # type: ignore[union-attr]
    assert set(listed) == {model, builtin, upstream}
    assert (listed[builtin]["runtime"], listed[builtin]["builtin"]) == ("sentence-embeddings", "minilm")
    assert (listed[upstream]["runtime"], listed[upstream]["label"]) == ("openai-upstream", user.label)
    assert listed[upstream]["lineage"]["base_models"] == [builtin]

    # Refusals are one line, exit 1, and register nothing: a label below the session's, a
    # runtime that model.json contradicts, a runtime that needs PATH without one.
    low = user.run(
        "model",
        "register",
        str(folder),
        "--name",
        "clf",
        "--runtime",
        "sklearn",
        "--label",
        "UNCLASSIFIED",
        check=False,
    )
    assert "below" in _one_line_error(low)
    wrong = user.run("model", "register", str(folder), "--name", "x", "--runtime", "pytorch", check=False)
    assert "runtime" in _one_line_error(wrong)
    no_path = user.run("model", "register", "--name", "x", "--runtime", "sklearn", check=False)
    assert "PATH" in _one_line_error(no_path)

    assert user.run("model", "delete", model).stdout.strip() == "deleted"
    assert {m["id"] for m in user.json("model", "list")} == {builtin, upstream}  # type: ignore[union-attr]


def test_train_submit_wait_metrics_logs(user: User, tmp_path: Path) -> None:
    data = tmp_path / "rows.csv"
    data.write_text("a\nb\nc\n")
    with user.api() as api:
        ds = api.upload_dataset(data)["id"]
    script = tmp_path / "train.py"
    script.write_text(TRAIN_SCRIPT)
    done = user.run(
        "train",
        "submit",
        str(script),
        "--dataset",
        ds,
        "--name",
        "tiny",
        "--runtime",
        "sklearn",
        "--hp",
        "steps=3",
        "--hp",
        "tag=v1",
        "--walltime-s",
        "60",
        "--wait",
        "--interval",
        "0.2",
    )
    job, model = done.stdout.split()
    shown = user.json("train", "show", job)
    assert isinstance(shown, dict)
    assert (shown["state"], shown["name"], shown["label"]) == ("completed", "train-tiny", user.label)
    assert shown["training"]["model_id"] == model and shown["training"]["outcome"] == "registered"
    assert shown["training"]["hyperparameters"] == {"steps": 3, "tag": "v1"}

    metrics = user.json("train", "metrics", job)
    assert isinstance(metrics, dict) and metrics["state"] == "completed"
    assert metrics["metrics"] == [{"step": s, "loss": 1.0 / (s + 1), "rows": 3} for s in range(3)]
    followed = user.run("train", "metrics", job, "--json", "--follow").stdout.splitlines()
    assert [json.loads(line)["step"] for line in followed] == [0, 1, 2]
    assert "loss" in user.run("train", "metrics", job).stdout
    assert user.run("train", "logs", job).stdout == "trained on 3 rows\n"
    assert [j["id"] for j in user.json("train", "list")] == [job]  # type: ignore[union-attr]
    with user.api() as api:
        registered = api.model(model)
    assert registered["lineage"] == {"job": job, "datasets": [ds], "base_models": []}
    assert registered["metrics"] == {"rows": 3, "tag": "v1"} and registered["task"] == "classification"
    assert registered["label"] == user.label

    # A script that fails: --wait exits 1 and says no model was registered.
    broken = tmp_path / "broken.py"
    broken.write_text(
        "import sys\nprint('column flows.x is missing', file=sys.stderr)\nraise SystemExit(3)\n"
    )
    failed = user.run(
        "train", "submit", str(broken), "--name", "none", "--runtime", "sklearn", "--wait", check=False
    )
    # The cause is shown with the failure, not only in the logs.
    assert failed.returncode == 1 and "no model registered" in failed.stderr
    assert "column flows.x is missing" in failed.stderr, failed.stderr
    listed = user.json("train", "list")
    failed_id = next(t["id"] for t in listed if t["exit_code"] == 3)  # type: ignore[union-attr, index]
    assert "column flows.x is missing" in user.run("train", "logs", failed_id, "--stderr").stdout
    bad_hp = user.run(
        "train", "submit", str(script), "--name", "x", "--runtime", "sklearn", "--hp", "x", check=False
    )
    assert "KEY=VALUE" in _one_line_error(bad_hp)
    refused = user.run(
        "train", "submit", str(script), "--name", "x", "--runtime", "openai-upstream", check=False
    )
    assert "runtime" in _one_line_error(refused)
    with user.api() as api:  # the scripts of the two jobs, not the one of the refused submission
        assert len(api.list_artifacts("artifact")) == 2


def test_endpoint_deploy_call_scale_delete(user: User) -> None:
    with user.api() as api:
        model = api.register_builtin_model("minilm", "minilm")["id"]
    name = user.run(
        "endpoint",
        "deploy",
        model,
        "--name",
        "embed",
        "--pii",
        "mask",
        "--log-content",
        "--wait",
        "--timeout",
        "120",
    ).stdout.strip()
    assert name == "embed"
    ep = user.json("endpoint", "show", "embed")
    assert isinstance(ep, dict)
    assert (ep["state"], ep["label"], ep["model"], ep["runtime"], ep["agency"]) == (
        "ready",
        user.label,
        model,
        "sentence-embeddings",
        user.name,
    )
    assert ep["replicas"]["ready"] == 1 and ep["replicas"]["desired"] == 1
    assert ep["settings"] == {"pii": "mask", "log_content": True}
    assert "1 ready / 1 desired" in user.run("endpoint", "show", "embed").stdout

    oai = openai.OpenAI(base_url=f"{user.server.url}/v1", api_key=user.token, max_retries=0)
    vectors = oai.embeddings.create(model="embed", input=["hello world", "goodbye"])
    assert len(vectors.data) == 2 and len(vectors.data[0].embedding) == 384
    # The same from the CLI: one JSON vector per text, the same numbers as the SDK's.
    lines = user.run("endpoint", "embed", "embed", "hello world", "goodbye").stdout.splitlines()
    assert [len(json.loads(line)) for line in lines] == [384, 384]
    assert json.loads(lines[0]) == pytest.approx(vectors.data[0].embedding, abs=1e-6)
    piped = user.run("endpoint", "embed", "embed", stdin="hello world\n").stdout.splitlines()
    assert json.loads(piped[0]) == pytest.approx(vectors.data[0].embedding, abs=1e-6)
    # An embeddings model answers no chat: the gateway's refusal is one line, exit 1.
    no_chat = user.run("endpoint", "chat", "embed", "hi", check=False)
    assert (
        no_chat.returncode == 1
        and no_chat.stderr.startswith("error: ")
        and len(no_chat.stderr.splitlines()) == 1
    )
    # The replica's own output, by endpoint name.
    replica_logs = user.run("endpoint", "logs", "embed", "--stderr")
    assert "(replica job " in replica_logs.stderr

    assert [e["name"] for e in user.json("endpoint", "list")] == ["embed"]  # type: ignore[union-attr]
    assert "min 1, max 2" in user.run("endpoint", "scale", "embed", "--min", "1", "--max", "2").stdout
    with user.api() as api:
        assert api.endpoint("embed")["replicas"]["max"] == 2
    _one_line_error(user.run("endpoint", "scale", "embed", check=False))
    assert "not available" in _one_line_error(
        user.run("endpoint", "deploy", model, "--name", "embed", check=False)
    )

    assert user.run("endpoint", "delete", "embed").stdout.strip() == "deleted"
    assert user.json("endpoint", "list") == []
    assert "not found" in _one_line_error(user.run("endpoint", "show", "embed", check=False))
