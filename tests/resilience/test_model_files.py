"""Untrusted model files (issue 12, finding 4): a model's author must not run code where it is
registered, deployed or served, unless the region's fleet entry explicitly allows pickles.

The attack: a model file whose ``__reduce__`` calls ``os.system`` to write a marker file. Every
refusal below is checked by the marker never appearing; the control cases (a region that allows
pickles, ``--allow-pickle``) show the payload is real: there it does run, inside the replica.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import os
import pickle
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import skops.io
from fastapi.testclient import TestClient
from sqlalchemy import select

from enclave import archive
from enclave.api.app import create_app
from enclave.services import endpoints
from enclave.services.context import Context, Settings
from enclave.store.models import Job
from tests.api.helpers import Headers, assert_problem, create_agency, create_user, ok, token_header
from tests.serving.conftest import spawn, start_replica
from tests.serving.models import IRIS_META, iris_estimator, write_char_model, write_sklearn_model

LOCAL_FLEET = (Path(__file__).parents[2] / "src/enclave/fleets/local.toml").read_text()


class Payload:
    """Unpickled, it runs ``touch MARKER``: what finding 4 did at deploy."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def payload(marker: Path) -> bytes:
    return pickle.dumps(Payload(marker), protocol=4)


def pickle_model(model_dir: Path, marker: Path, name: str = "model.joblib", runtime: str = "sklearn") -> Path:
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / name).write_bytes(payload(marker))
    (model_dir / "model.json").write_text(json.dumps({**IRIS_META, "runtime": runtime}))
    return model_dir


def pack(model_dir: Path) -> bytes:
    buf = io.BytesIO()
    archive.pack(model_dir, buf)
    return buf.getvalue()


def failed_start(tmp: Path, *args: str) -> str:
    """Start a replica that must refuse to load: exit 2, no port file; its one stderr line."""
    proc = spawn(tmp, *args)
    assert proc.wait(timeout=120) == 2
    assert not (tmp / "port").exists()
    return (tmp / "stderr").read_text()


# -- the replica: what it loads ----------------------------------------------------------------
def test_a_pickled_sklearn_model_is_refused_by_the_replica_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    model = pickle_model(tmp_path / "model", marker)
    stderr = failed_start(tmp_path / "run", "--runtime", "sklearn", "--model-dir", str(model))
    assert "model.joblib is a pickle" in stderr and "allow_pickle_models" in stderr, stderr
    assert "model.skops" in stderr  # says what to save instead
    assert not marker.exists()


def test_with_allow_pickle_the_payload_is_real_and_runs_in_the_replica(tmp_path: Path) -> None:
    """The control: the same file, where the region allows pickles, is unpickled (and so runs)."""
    marker = tmp_path / "pwned"
    model = pickle_model(tmp_path / "model", marker)
    stderr = failed_start(
        tmp_path / "run", "--runtime", "sklearn", "--model-dir", str(model), "--allow-pickle"
    )
    assert marker.exists(), "the payload did not run: the refusal tests above would prove nothing"
    assert "which has no predict()" in stderr, stderr  # os.system returned an int, not an estimator


def test_a_pickled_estimator_serves_where_the_region_allows_it(tmp_path: Path) -> None:
    import joblib  # type: ignore[import-untyped,unused-ignore]

    model = tmp_path / "model"
    model.mkdir()
    joblib.dump(iris_estimator(), model / "model.joblib")
    (model / "model.json").write_text(json.dumps(IRIS_META))
    assert "is a pickle" in failed_start(
        tmp_path / "refused", "--runtime", "sklearn", "--model-dir", str(model)
    )
    replica = start_replica(
        tmp_path / "run", "--runtime", "sklearn", "--model-dir", str(model), "--allow-pickle"
    )
    try:
        import httpx

        r = httpx.post(f"{replica.url}/v1/completions", json={"prompt": "5.1,3.5,1.4,0.2"}, timeout=30)
        assert r.status_code == 200 and r.json()["choices"][0]["text"] == "setosa", r.text
    finally:
        assert replica.stop() == 0, replica.stderr


def test_a_torch_pickle_is_refused_by_the_pytorch_runtime(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    model = write_char_model(tmp_path / "model", steps=0)
    (model / "model.safetensors").unlink()
    (model / "model.pt").write_bytes(payload(marker))
    stderr = failed_start(tmp_path / "run", "--runtime", "pytorch", "--model-dir", str(model))
    assert "model.pt is a pickle" in stderr and "model.safetensors" in stderr, stderr
    assert not marker.exists()


def test_a_skops_model_naming_an_untrusted_function_is_refused(tmp_path: Path) -> None:
    from sklearn.pipeline import make_pipeline  # type: ignore[import-untyped,unused-ignore]
    from sklearn.preprocessing import FunctionTransformer  # type: ignore[import-untyped,unused-ignore]

    model = tmp_path / "model"
    write_sklearn_model(model, make_pipeline(FunctionTransformer(os.system)))
    assert skops.io.get_untrusted_types(file=model / "model.skops") == ["posix.system"]
    stderr = failed_start(tmp_path / "run", "--runtime", "sklearn", "--model-dir", str(model))
    assert "holds types that are not trusted: posix.system" in stderr, stderr


def test_a_skops_model_naming_an_untrusted_class_is_refused_before_its_module_is_imported(
    tmp_path: Path,
) -> None:
    """A type is checked by name against the trusted list before skops imports anything: a
    module that acts on import (here: writes the marker) is never imported."""
    marker = tmp_path / "pwned"
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "evil_estimators.py").write_text(
        "import os\n"
        "if os.environ.get('EVIL_MARKER'):\n"
        "    open(os.environ['EVIL_MARKER'], 'w').close()\n"
        "class Evil:\n"
        "    classes_ = None\n"
        "    def predict(self, x):\n"
        "        return x\n"
    )
    sys.path.insert(0, str(lib))
    try:
        import evil_estimators  # type: ignore[import-not-found]

        model = write_sklearn_model(tmp_path / "model", evil_estimators.Evil())
    finally:
        sys.path.remove(str(lib))
        sys.modules.pop("evil_estimators", None)
    assert skops.io.get_untrusted_types(file=model / "model.skops") == ["evil_estimators.Evil"]
    env = {"EVIL_MARKER": str(marker), "PYTHONPATH": os.pathsep.join([str(lib), *sys.path])}
    proc = spawn(tmp_path / "run", "--runtime", "sklearn", "--model-dir", str(model), env=env)
    assert proc.wait(timeout=120) == 2
    assert "not trusted: evil_estimators.Evil" in (tmp_path / "run" / "stderr").read_text()
    assert not marker.exists()


def test_the_trusted_tree_type_is_enough_for_a_forest(tmp_path: Path) -> None:
    """The trusted list is what real models need, no more: a random forest holds fitted trees."""
    model = write_sklearn_model(tmp_path / "model", iris_estimator(forest=True))
    assert skops.io.get_untrusted_types(file=model / "model.skops") == ["sklearn.tree._tree.Tree"]
    replica = start_replica(tmp_path / "run", "--runtime", "sklearn", "--model-dir", str(model))
    try:
        import httpx

        r = httpx.post(f"{replica.url}/v1/completions", json={"prompt": "6.7,3.0,5.2,2.3"}, timeout=30)
        assert r.status_code == 200 and r.json()["choices"][0]["text"] == "virginica", r.text
    finally:
        assert replica.stop() == 0, replica.stderr


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"n_embd": 64}, "does not match the architecture"),
        ({"n_layer": 2}, "does not match the architecture"),
        ({"n_embd": 1 << 20}, "n_embd must be an integer from 1 to"),
        ({"type": "llama"}, "architecture type 'llama'"),
    ],
)
def test_safetensors_weights_must_match_the_declared_architecture(
    tmp_path: Path, change: dict[str, Any], expected: str
) -> None:
    model = write_char_model(tmp_path / "model", steps=0)
    meta = json.loads((model / "model.json").read_text())
    meta["architecture"].update(change)
    (model / "model.json").write_text(json.dumps(meta))
    stderr = failed_start(tmp_path / "run", "--runtime", "pytorch", "--model-dir", str(model))
    assert expected in stderr and len(stderr.strip().splitlines()) == 1, stderr


# -- the archive check: what counts as a pickle ------------------------------------------------
def test_pickles_are_found_by_name_and_by_content(tmp_path: Path) -> None:
    import torch

    raw = payload(tmp_path / "pwned")
    torch_zip = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, torch_zip)
    files = {
        "model.json": json.dumps(IRIS_META).encode(),
        "model.skops": skops.io.dumps(iris_estimator()),
        "model.safetensors": (2).to_bytes(8, "little") + b"{}",
        "renamed.dat": raw,  # a pickle whatever its name
        "zlib.dat": zlib.compress(raw),  # joblib's compress=3
        "gzip.dat": gzip.compress(raw),
        "bz2.dat": bz2.compress(raw),
        "torch.dat": torch_zip.getvalue(),  # torch.save's zip of data.pkl
        "sub/weights.pth": b"named as a pickle",
        "notes.txt": b"hello",
    }
    found = archive.inspect([archive.pack_bytes(files)])
    assert found.pickles == ("bz2.dat", "gzip.dat", "renamed.dat", "sub/weights.pth", "torch.dat", "zlib.dat")
    assert found.manifest == IRIS_META
    assert not (tmp_path / "pwned").exists()


# -- the control plane: registration and deploy ------------------------------------------------
def pickle_fleet(tmp_path: Path, allowing: str | None) -> Path:
    """The local fleet; ``allowing`` names the one region whose entry allows pickled models."""
    text = LOCAL_FLEET.replace("memory_mb = 4096", "memory_mb = 8192")
    if allowing is not None:
        marker = f'name = "{allowing}"\n'
        assert marker in text
        text = text.replace(marker, f"{marker}allow_pickle_models = true\n")
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(text)
    return fleet


def control_plane(
    tmp_path: Path, allowing: str | None
) -> Iterator[tuple[Context, TestClient, dict[str, Headers]]]:
    home = tmp_path / "home"
    ctx = Context(Settings(home=home, fleet=str(pickle_fleet(tmp_path, allowing))))
    try:
        with TestClient(create_app(ctx=ctx, run_jobs=False)) as client:
            client.headers["Authorization"] = f"Bearer {(home / 'admin.token').read_text().strip()}"
            create_agency(client, "alpha")
            create_user(client, "alice", "alpha", "SECRET")
            yield ctx, client, {lab: token_header(client, "alice", lab) for lab in ("CUI", "SECRET")}
    finally:
        ctx.close()


@pytest.fixture
def strict_plane(tmp_path: Path) -> Iterator[tuple[Context, TestClient, dict[str, Headers]]]:
    yield from control_plane(tmp_path, None)


@pytest.fixture
def lenient_plane(tmp_path: Path) -> Iterator[tuple[Context, TestClient, dict[str, Headers]]]:
    yield from control_plane(tmp_path, "secret-west")


def register(client: TestClient, headers: Headers, content: bytes, runtime: str = "sklearn") -> Any:
    return client.post(
        "/v1/registry/models", params={"name": "clf", "runtime": runtime}, content=content, headers=headers
    )


def model_rows(ctx: Context) -> int:
    from enclave.store.models import Model

    with ctx.sessions() as session:
        return len(list(session.execute(select(Model.id)).scalars()))


def test_a_pickle_model_is_refused_at_registration_where_no_region_allows_pickles(
    strict_plane: tuple[Context, TestClient, dict[str, Headers]], tmp_path: Path
) -> None:
    ctx, client, tokens = strict_plane
    marker = tmp_path / "pwned"
    for name in ("model.joblib", "model.pkl", "weights.dat"):
        content = pack(pickle_model(tmp_path / name, marker, name))
        body = assert_problem(register(client, tokens["SECRET"], content), 422, "holds pickles")
        assert (
            name in body["detail"] and "allow_pickle_models" in body["detail"] and "skops" in body["detail"]
        )
    torch_model = pickle_model(tmp_path / "torch", marker, "model.pt", "pytorch")
    assert_problem(register(client, tokens["SECRET"], pack(torch_model), "pytorch"), 422, "model.pt")
    assert model_rows(ctx) == 0 and not marker.exists()
    # The same model saved with skops registers.
    model = ok(register(client, tokens["SECRET"], pack(write_sklearn_model(tmp_path / "safe"))), 201)
    assert model["metadata"] == {}


def test_where_one_region_allows_pickles_they_deploy_only_there(
    lenient_plane: tuple[Context, TestClient, dict[str, Headers]], tmp_path: Path
) -> None:
    _, client, tokens = lenient_plane
    marker = tmp_path / "pwned"
    content = pack(pickle_model(tmp_path / "model", marker))
    # CUI: the allowing region (SECRET) is accredited for it, so the model registers, marked.
    model = ok(register(client, tokens["CUI"], content), 201)
    assert model["metadata"] == {"pickle_files": ["model.joblib"]}
    # Deployed where pickles are not allowed (gov-east, the default for CUI): refused.
    for spec in ({}, {"region": "gov-east"}):
        r = client.post(
            "/v1/endpoints", json={"model": model["id"], "name": "clf", **spec}, headers=tokens["CUI"]
        )
        assert_problem(r, 422, "region gov-east does not")
    # In the region whose fleet entry allows them: deployed.
    deployed = client.post(
        "/v1/endpoints",
        json={"model": model["id"], "name": "clf", "region": "secret-west"},
        headers=tokens["CUI"],
    )
    assert ok(deployed, 201)["region"] == "secret-west"
    # A model made only of safe files needs no such region.
    safe = ok(register(client, tokens["CUI"], pack(write_sklearn_model(tmp_path / "safe"))), 201)
    ok(client.post("/v1/endpoints", json={"model": safe["id"], "name": "safe"}, headers=tokens["CUI"]), 201)
    assert not marker.exists()  # registering and deploying read no pickle


def test_only_the_allowing_regions_replica_is_started_with_allow_pickle(
    lenient_plane: tuple[Context, TestClient, dict[str, Headers]], tmp_path: Path
) -> None:
    """The flag goes to the replica's command line from the region's fleet entry, never from the
    model; the unpacked model is staged without being loaded."""
    ctx, client, tokens = lenient_plane
    marker = tmp_path / "pwned"
    pickled = ok(register(client, tokens["CUI"], pack(pickle_model(tmp_path / "model", marker))), 201)
    safe = ok(register(client, tokens["CUI"], pack(write_sklearn_model(tmp_path / "safe"))), 201)
    regions = {}
    for model, name, region in ((pickled, "pk", "secret-west"), (safe, "safe", "gov-east")):
        body = {"model": model["id"], "name": name, "region": region}
        regions[ok(client.post("/v1/endpoints", json=body, headers=tokens["CUI"]), 201)["id"]] = region
    supervisor = endpoints.Supervisor(ctx)
    try:
        supervisor.tick()  # submits each endpoint's replica job (no runner here)
    finally:
        supervisor.stop()
    with ctx.sessions() as session:
        replicas = list(session.execute(select(Job).where(Job.kind == "replica")).scalars())
    jobs = {regions[job.parent_id or ""]: job for job in replicas}
    assert len(replicas) == 2 and set(jobs) == {"secret-west", "gov-east"}
    assert "--allow-pickle" in endpoints.prepare(ctx, jobs["secret-west"]).command
    assert "--allow-pickle" not in endpoints.prepare(ctx, jobs["gov-east"]).command
    assert not marker.exists()
