"""/v1/artifacts: upload (raw body), list, show, content, delete, shares."""

from __future__ import annotations

import hashlib

import pytest
from fastapi.testclient import TestClient

from enclave.services.context import Context

from .conftest import SMALL_UPLOAD_BYTES, World
from .helpers import (
    DENIED,
    assert_invisible,
    assert_problem,
    assert_refused_as_input,
    assert_same_404,
    audit_events_after,
    audit_seq,
    blob_files,
    check_json_rejections,
    chunked,
    listed_ids,
    listing,
    missing_id,
    ok,
    unchanged,
    upload,
)

CONTENT = b"wind tunnel results, run 7\n" * 3


def test_upload_show_content_round_trip(world: World) -> None:
    client, ctx = world.client, world.ctx
    digest = hashlib.sha256(CONTENT).hexdigest()
    blobs, seq = blob_files(ctx), audit_seq(ctx)
    art = upload(client, world.alice_s, CONTENT, name="run-7.txt")
    assert audit_events_after(ctx, seq) == ["artifact.created"]
    assert art["label"] == "SECRET"  # created at exactly the session label
    assert (art["name"], art["agency"], art["kind"]) == ("run-7.txt", "alpha", "artifact")
    assert (art["size_bytes"], art["sha256"]) == (len(CONTENT), digest)
    assert (art["derived_from"], art["shared_with"], art["metadata"]) == ([], [], {})
    # One new blob file, and it does not hold the plaintext.
    new = blob_files(ctx) - blobs
    assert len(new) == 1
    raw = (ctx.settings.home / "blobs" / new.pop()).read_bytes()
    assert CONTENT[:20] not in raw

    assert ok(client.get(f"/v1/artifacts/{art['id']}", headers=world.alice_s)) == art
    r = client.get(f"/v1/artifacts/{art['id']}/content", headers=world.alice_s)
    assert r.status_code == 200 and r.content == CONTENT
    assert r.headers["x-content-sha256"] == digest
    assert r.headers["x-enclave-label"] == "SECRET"
    assert r.headers["content-type"] == "application/octet-stream"
    # A higher session of the same agency reads it too; the listing shows it.
    ok(client.get(f"/v1/artifacts/{art['id']}", headers=world.bob_s))
    assert art["id"] in listed_ids(client, "/v1/artifacts", world.bob_s)


def test_upload_checksum_header_raw_size_and_project(world: World) -> None:
    client, ctx = world.client, world.ctx
    digest = hashlib.sha256(CONTENT).hexdigest()
    r = client.post(
        "/v1/artifacts",
        params={"name": "checked"},
        content=CONTENT,
        headers={**world.dave_u, "X-Content-SHA256": digest.upper()},
    )
    art = ok(r, 201)
    assert art["sha256"] == digest and art["label"] == "UNCLASSIFIED"
    # A raw upload is not held to the JSON body limit.
    big = b"\0" * (ctx.settings.max_json_bytes + 1)
    assert upload(client, world.dave_u, big)["size_bytes"] == len(big)
    # Uploaded into a project of the agency.
    ok(client.post("/v1/agencies/alpha/projects", json={"name": "climate"}), 201)
    upload(client, world.dave_u, b"in a project", project="climate")


def test_upload_bad_input_leaves_nothing(world: World) -> None:
    client, ctx = world.client, world.ctx
    wrong = hashlib.sha256(b"something else").hexdigest()
    ok(client.post("/v1/agencies/beta/projects", json={"name": "theirs"}), 201)
    cases = [  # query, body, headers, what the detail says
        ({"name": "empty"}, b"", {}, "empty"),
        ({"name": "sum"}, CONTENT, {"X-Content-SHA256": wrong}, "checksum mismatch"),
        ({"name": "sum"}, CONTENT, {"X-Content-SHA256": "z" * 64}, "hex"),
        ({"name": "sum"}, CONTENT, {"X-Content-SHA256": digest_prefix(CONTENT)}, "hex"),
        ({"name": "sum"}, CONTENT, {"X-Content-SHA256": "0" * 65}, "sha256"),
        ({}, CONTENT, {}, "name"),
        ({"name": ""}, CONTENT, {}, "name"),
        ({"name": "   "}, CONTENT, {}, "name"),
        ({"name": "tab\there"}, CONTENT, {}, "name"),
        ({"name": "x" * 257}, CONTENT, {}, "name"),
        ({"name": "p", "project": "nope"}, CONTENT, {}, "project"),
        ({"name": "p", "project": "theirs"}, CONTENT, {}, "project"),  # another agency's project
    ]
    before = listing(client, "/v1/artifacts", world.alice_s)
    with unchanged(ctx):
        for params, data, extra, says in cases:
            r = client.post("/v1/artifacts", params=params, content=data, headers={**world.alice_s, **extra})
            assert_problem(r, 422, says)
        # The streamed form of a bad checksum is refused the same way.
        r = client.post(
            "/v1/artifacts",
            params={"name": "sum"},
            content=chunked(CONTENT, 7),
            headers={**world.alice_s, "X-Content-SHA256": wrong},
        )
        assert_problem(r, 422, "checksum mismatch")
    assert listing(client, "/v1/artifacts", world.alice_s) == before


def digest_prefix(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:63]


@pytest.mark.parametrize("streamed", [False, True], ids=["content-length", "chunked"])
def test_upload_over_the_limit(small_client: TestClient, small_ctx: Context, streamed: bool) -> None:
    client, ctx = small_client, small_ctx
    assert ctx.settings.max_upload_bytes == SMALL_UPLOAD_BYTES
    exact = b"e" * SMALL_UPLOAD_BYTES
    over = b"o" * (SMALL_UPLOAD_BYTES + 1)
    with unchanged(ctx):
        r = client.post(
            "/v1/artifacts", params={"name": "big"}, content=chunked(over, 16) if streamed else over
        )
        assert_problem(r, 413)
        r = client.post(
            "/v1/artifacts",
            params={"name": "big"},
            content=chunked(b"o" * 100_000) if streamed else b"o" * 100_000,
        )
        assert_problem(r, 413)
    assert ok(client.get("/v1/artifacts"))["count"] == 0
    art = ok(
        client.post(
            "/v1/artifacts", params={"name": "fits"}, content=chunked(exact, 16) if streamed else exact
        ),
        201,
    )
    assert art["size_bytes"] == SMALL_UPLOAD_BYTES


def test_agency_storage_quota(world: World) -> None:
    """The agency's storage quota holds at each label on its own (issue 12: a shared pool
    let an UNCLASSIFIED upload learn the size of SECRET ones)."""
    client, ctx = world.client, world.ctx
    ok(client.put("/v1/agencies/alpha/quotas", json={"storage_bytes": 10}))
    upload(client, world.alice_u, b"12345")
    with unchanged(ctx):
        r = client.post("/v1/artifacts", params={"name": "x"}, content=b"123456", headers=world.dave_u)
        assert_problem(r, 413, "limit of 5 bytes")
    upload(client, world.alice_u, b"12345")  # exactly fills the quota at UNCLASSIFIED
    with unchanged(ctx):
        assert_problem(
            client.post("/v1/artifacts", params={"name": "x"}, content=b"1", headers=world.dave_u), 413
        )
    # SECRET has its own 10 bytes, and its uploads leave UNCLASSIFIED's answers as they were.
    upload(client, world.alice_s, b"1234567890")
    with unchanged(ctx):
        assert_problem(
            client.post("/v1/artifacts", params={"name": "x"}, content=b"1", headers=world.alice_s), 413
        )
    # Another agency is not limited by alpha's quota.
    upload(client, world.eve_u, b"123456")


def test_secret_artifact_is_invisible(world: World) -> None:
    client, ctx = world.client, world.ctx
    secret = upload(client, world.alice_s, CONTENT, name="secret")
    public = upload(client, world.alice_u, CONTENT, name="public")
    sid = secret["id"]
    for headers in (world.alice_u, world.dave_u, world.eve_top, world.eve_u):
        with unchanged(ctx, audit=None):
            assert_invisible(client, "GET", "/v1/artifacts/{id}", sid, headers)
            assert_invisible(client, "GET", "/v1/artifacts/{id}/content", sid, headers)
            assert_invisible(client, "DELETE", "/v1/artifacts/{id}", sid, headers)
            assert_invisible(
                client, "POST", "/v1/artifacts/{id}/shares", sid, headers, json={"agency": "beta"}
            )
            other = missing_id()
            assert_same_404(
                client.post(
                    "/v1/transfers", json={"artifact_id": sid, "to": "CUI", "why": "x"}, headers=headers
                ),
                sid,
                client.post(
                    "/v1/transfers", json={"artifact_id": other, "to": "CUI", "why": "x"}, headers=headers
                ),
                other,
            )
            body = listing(client, "/v1/artifacts", headers)
            assert sid not in {a["id"] for a in body["items"]}
    # The same agency's U sessions see the public one and only it; beta sees neither.
    for headers in (world.alice_u, world.dave_u):
        assert listed_ids(client, "/v1/artifacts", headers) == {public["id"]}
    assert listing(client, "/v1/artifacts", world.eve_top)["count"] == 0
    assert listed_ids(client, "/v1/artifacts", world.alice_s) == {sid, public["id"]}


def test_list_filters(world: World) -> None:
    client = world.client
    ids = [upload(client, world.alice_s, bytes([i]) * 3, name=f"n{i}")["id"] for i in range(3)]
    body = listing(client, "/v1/artifacts", world.alice_s)
    assert [a["id"] for a in body["items"]] == ids[::-1]  # newest first (issue 13)
    first = listing(client, "/v1/artifacts", world.alice_s, limit=2)
    assert [a["id"] for a in first["items"]] == ids[:0:-1] and first["total"] == 3
    rest = listing(client, "/v1/artifacts", world.alice_s, limit=2, cursor=first["next_cursor"])
    assert [a["id"] for a in rest["items"]] == ids[:1] and rest["next_cursor"] is None
    assert listed_ids(client, "/v1/artifacts", world.alice_s, kind="artifact") == set(ids)
    assert listing(client, "/v1/artifacts", world.alice_s, kind="model")["count"] == 0
    for params in ({"limit": 0}, {"limit": 10001}, {"limit": "many"}, {"kind": "k" * 33}):
        assert_problem(client.get("/v1/artifacts", params=params, headers=world.alice_s), 422)


def test_delete(world: World) -> None:
    client, ctx = world.client, world.ctx
    art = upload(client, world.alice_s, CONTENT)
    low = upload(client, world.alice_u, CONTENT)
    # Write-down: a SECRET session sees the UNCLASSIFIED artifact but may not change it.
    with unchanged(ctx, audit=DENIED):
        assert_problem(client.delete(f"/v1/artifacts/{low['id']}", headers=world.alice_s), 403)
    assert ok(client.get(f"/v1/artifacts/{low['id']}", headers=world.dave_u))["id"] == low["id"]
    # The owner deletes at the artifact's label (another SECRET session of the agency may too).
    with unchanged(ctx, audit=("artifact.deleted",), skip=("artifacts",)):
        ok(client.delete(f"/v1/artifacts/{art['id']}", headers=world.bob_s), 204)
    with unchanged(ctx):
        assert_invisible(client, "GET", "/v1/artifacts/{id}", art["id"], world.alice_s)
        assert_invisible(client, "DELETE", "/v1/artifacts/{id}", art["id"], world.alice_s)
        assert_invisible(client, "GET", "/v1/artifacts/{id}/content", art["id"], world.alice_s)
    assert art["id"] not in listed_ids(client, "/v1/artifacts", world.alice_s)
    ok(client.delete(f"/v1/artifacts/{low['id']}", headers=world.dave_u), 204)
    assert listing(client, "/v1/artifacts", world.alice_s)["count"] == 0


def test_shares(world: World) -> None:
    client, ctx = world.client, world.ctx
    art = upload(client, world.alice_s, CONTENT)
    aid = art["id"]
    with unchanged(ctx, audit=("artifact.shared",), skip=("shares",)):
        view = ok(client.post(f"/v1/artifacts/{aid}/shares", json={"agency": "beta"}, headers=world.alice_s))
    assert view["shared_with"] == ["beta"] and view["label"] == "SECRET"
    # beta now reads it at a session that dominates its label ...
    assert ok(client.get(f"/v1/artifacts/{aid}", headers=world.eve_top))["shared_with"] == ["beta"]
    assert client.get(f"/v1/artifacts/{aid}/content", headers=world.eve_top).content == CONTENT
    assert listed_ids(client, "/v1/artifacts", world.eve_top) == {aid}
    # ... but not below it, and sharing never lets beta change, re-share or move it.
    with unchanged(ctx, audit=None):
        assert_invisible(client, "GET", "/v1/artifacts/{id}", aid, world.eve_u)
    assert listing(client, "/v1/artifacts", world.eve_u)["count"] == 0
    ok(client.post("/v1/agencies", json={"name": "gamma"}), 201)
    with unchanged(ctx, audit=DENIED * 3):
        assert_problem(client.delete(f"/v1/artifacts/{aid}", headers=world.eve_top), 403)
        r = client.post(f"/v1/artifacts/{aid}/shares", json={"agency": "gamma"}, headers=world.eve_top)
        assert_problem(r, 403)
        r = client.post(
            "/v1/transfers",
            json={"artifact_id": aid, "to": "UNCLASSIFIED", "why": "ours now"},
            headers=world.eve_top,
        )
        assert_problem(r, 403)
    with unchanged(ctx):
        r = client.post(f"/v1/artifacts/{aid}/shares", json={"agency": "beta"}, headers=world.alice_s)
        assert_problem(r, 409)
        r = client.post(f"/v1/artifacts/{aid}/shares", json={"agency": "alpha"}, headers=world.alice_s)
        assert_problem(r, 422)
        r = client.post(f"/v1/artifacts/{aid}/shares", json={"agency": "nowhere"}, headers=world.alice_s)
        assert_problem(r, 404)
        r = client.post(
            f"/v1/artifacts/{missing_id()}/shares", json={"agency": "beta"}, headers=world.alice_s
        )
        assert_problem(r, 404)
    # Write-down: a SECRET session may not share an UNCLASSIFIED artifact.
    low = upload(client, world.alice_u, CONTENT)
    with unchanged(ctx, audit=DENIED):
        r = client.post(f"/v1/artifacts/{low['id']}/shares", json={"agency": "beta"}, headers=world.alice_s)
        assert_problem(r, 403)
    check_json_rejections(
        client, ctx, "POST", f"/v1/artifacts/{aid}/shares", {"agency": "gamma"}, world.alice_s
    )


def test_nul_characters_are_invalid_input(world: World) -> None:
    client, ctx = world.client, world.ctx
    art = upload(client, world.alice_s, CONTENT)
    h = world.alice_s
    for method, path in (
        ("GET", f"/v1/artifacts/{art['id']}%00"),
        ("GET", f"/v1/artifacts/{art['id']}%00/content"),
        ("DELETE", f"/v1/artifacts/{art['id']}%00"),
        ("GET", "/v1/artifacts?kind=a%00"),
    ):
        assert_refused_as_input(client, ctx, method, path, headers=h)
    assert_refused_as_input(client, ctx, "POST", "/v1/artifacts?name=n&project=p%00", content=b"x", headers=h)
    assert_refused_as_input(client, ctx, "POST", "/v1/artifacts?name=n%00", content=b"x", headers=h)
    path = f"/v1/artifacts/{art['id']}/shares"
    assert_refused_as_input(client, ctx, "POST", path, json={"agency": "be\x00ta"}, headers=h)
    assert_refused_as_input(
        client, ctx, "POST", "/v1/artifacts/%00/shares", json={"agency": "beta"}, headers=h
    )
