"""Datasets and the model registry through the API: versions, the policy gate, lineage labels,
and bad uploads that must leave nothing behind."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile

import pytest
from fastapi.testclient import TestClient

from enclave.archive import pack_bytes
from enclave.services.context import Context

from .conftest import World
from .helpers import (
    DENIED,
    Headers,
    assert_invisible,
    assert_problem,
    listed_ids,
    ok,
    unchanged,
)

MANIFEST = json.dumps({"format": "enclave-model/1", "runtime": "sklearn", "task": "classification"}).encode()


def put_dataset(client: TestClient, headers: Headers, data: bytes, name: str = "flows.csv") -> dict:
    return ok(client.post("/v1/datasets", params={"name": name}, content=data, headers=headers), 201)


def register(client: TestClient, headers: Headers, archive: bytes, **params: str) -> dict:
    params = {"name": "clf", "runtime": "sklearn", **params}
    return ok(client.post("/v1/registry/models", params=params, content=archive, headers=headers), 201)


def test_dataset_versions_round_trip_and_delete(world: World) -> None:
    c = world.client
    first = put_dataset(c, world.alice_s, b"a,b\n1,2\n")
    second = put_dataset(c, world.alice_s, b"a,b\n3,4\n")
    other = put_dataset(c, world.alice_s, b"x\n", name="other.csv")
    assert (first["version"], second["version"], other["version"]) == (1, 2, 1)
    assert first["kind"] == "dataset" and first["label"] == "SECRET"
    got = c.get(f"/v1/datasets/{second['id']}/content", headers=world.alice_s)
    assert got.content == b"a,b\n3,4\n" and got.headers["x-enclave-label"] == "SECRET"
    assert listed_ids(c, "/v1/datasets", world.alice_s) == {first["id"], second["id"], other["id"]}
    # A dataset is not any artifact: the artifacts API lists it, the datasets API lists only datasets.
    plain = ok(c.post("/v1/artifacts", params={"name": "x"}, content=b"x", headers=world.alice_s), 201)
    assert_problem(c.get(f"/v1/datasets/{plain['id']}", headers=world.alice_s), 404)
    assert c.delete(f"/v1/datasets/{first['id']}", headers=world.alice_s).status_code == 204
    assert listed_ids(c, "/v1/datasets", world.alice_s) == {second["id"], other["id"]}
    # Numbers are never reused: the next upload is version 3 even after a delete.
    assert put_dataset(c, world.alice_s, b"a,b\n5,6\n")["version"] == 3


@pytest.mark.parametrize(
    ("body", "headers_extra", "detail"),
    [
        (b"", {}, "empty"),
        (b"a,b\n1,2\n", {"X-Content-SHA256": hashlib.sha256(b"other").hexdigest()}, "checksum mismatch"),
    ],
)
def test_bad_dataset_uploads_store_nothing(
    world: World, body: bytes, headers_extra: dict, detail: str
) -> None:
    with unchanged(world.ctx, audit=()):
        r = world.client.post(
            "/v1/datasets", params={"name": "d.csv"}, content=body, headers={**world.alice_s, **headers_extra}
        )
        assert_problem(r, 422, detail)


def test_oversized_dataset_stores_nothing(small_client: TestClient, small_ctx: Context) -> None:
    with unchanged(small_ctx, audit=()):
        r = small_client.post("/v1/datasets", params={"name": "big.csv"}, content=b"x" * 65)
        assert_problem(r, 413)


def test_secret_dataset_is_invisible_below(world: World) -> None:
    ds = put_dataset(world.client, world.alice_s, b"secret rows\n")
    assert ds["id"] not in listed_ids(world.client, "/v1/datasets", world.alice_u)
    assert_invisible(world.client, "GET", "/v1/datasets/{id}", ds["id"], world.alice_u)
    assert_invisible(world.client, "GET", "/v1/datasets/{id}/content", ds["id"], world.alice_u)


def test_model_label_follows_its_lineage(world: World) -> None:
    c = world.client
    ds = put_dataset(c, world.alice_s, b"secret rows\n")
    archive = pack_bytes({"model.json": MANIFEST, "model.skops": b"weights"})
    model = register(c, world.alice_s, archive, datasets=ds["id"])
    assert model["label"] == "SECRET"
    assert model["lineage"] == {"job": None, "datasets": [ds["id"]], "base_models": []}
    assert model["runtime"] == "sklearn" and model["task"] == "classification"
    # Below its dataset: an UNCLASSIFIED session cannot even name the dataset (invisible)...
    with unchanged(world.ctx, audit=DENIED):
        assert_problem(
            c.post(
                "/v1/registry/models",
                params={"name": "leak", "runtime": "sklearn", "datasets": ds["id"]},
                content=archive,
                headers=world.alice_u,
            ),
            404,
        )
    # ...and a SECRET session that states a lower label is refused, not silently relabelled.
    with unchanged(world.ctx, audit=()):
        r = c.post(
            "/v1/registry/models",
            params={"name": "leak", "runtime": "sklearn", "datasets": ds["id"], "label": "UNCLASSIFIED"},
            content=archive,
            headers=world.alice_s,
        )
        assert_problem(r, 422, "cannot be labelled below its inputs")
    # A base model's label counts too; versions count per name.
    derived = register(c, world.alice_s, archive, base_models=model["id"])
    assert (derived["label"], derived["version"]) == ("SECRET", 2)
    assert_invisible(c, "GET", "/v1/registry/models/{id}", model["id"], world.alice_u)
    assert model["id"] not in listed_ids(c, "/v1/registry/models", world.alice_u)


@pytest.mark.parametrize(
    ("archive", "detail"),
    [
        (b"not a tar at all", "not a model archive"),
        (pack_bytes({"model.json": b"{not json"}), "not valid JSON"),
        (
            pack_bytes({"model.json": json.dumps({"runtime": "pytorch"}).encode()}),
            "model.json says runtime",
        ),
    ],
)
def test_bad_model_archives_store_nothing(world: World, archive: bytes, detail: str) -> None:
    with unchanged(world.ctx, audit=()):
        r = world.client.post(
            "/v1/registry/models",
            params={"name": "m", "runtime": "sklearn"},
            content=archive,
            headers=world.alice_s,
        )
        assert_problem(r, 422, detail)


def test_archive_escaping_its_folder_is_refused(world: World) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("../evil.py")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with unchanged(world.ctx, audit=()):
        r = world.client.post(
            "/v1/registry/models",
            params={"name": "m", "runtime": "sklearn"},
            content=buf.getvalue(),
            headers=world.alice_s,
        )
        assert_problem(r, 422, "not a plain file inside the archive")


def test_unknown_runtime_and_builtin(world: World) -> None:
    c = world.client
    archive = pack_bytes({"model.json": MANIFEST})
    with unchanged(world.ctx, audit=()):
        assert_problem(
            c.post(
                "/v1/registry/models",
                params={"name": "m", "runtime": "tensorflow"},
                content=archive,
                headers=world.alice_s,
            ),
            422,
            "unknown runtime",
        )
        assert_problem(
            c.post(
                "/v1/registry/builtin-models", json={"name": "x", "builtin": "gpt"}, headers=world.alice_s
            ),
            422,
            "unknown builtin",
        )
    builtin = ok(
        c.post(
            "/v1/registry/builtin-models", json={"name": "minilm", "builtin": "minilm"}, headers=world.alice_s
        ),
        201,
    )
    assert (builtin["runtime"], builtin["label"], builtin["builtin"]) == (
        "sentence-embeddings",
        "SECRET",
        "minilm",
    )
    assert builtin["size_bytes"] > 80_000_000
