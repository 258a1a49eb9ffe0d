"""/v1/transfers: request, list, show, approve, refuse, release (the cross-domain guard)."""

from __future__ import annotations

import hashlib

import pytest

from enclave.errors import Unavailable

from .conftest import World
from .helpers import (
    DENIED,
    assert_invisible,
    assert_problem,
    assert_refused_as_input,
    assert_same_404,
    audit_events_after,
    audit_seq,
    bearer,
    blob_files,
    check_json_rejections,
    listed_ids,
    listing,
    mint,
    missing_id,
    ok,
    request_transfer,
    unchanged,
    upload,
)

CLEAN = b"Quarterly wind tunnel summary: drag down 4%.\n" * 4


def _approve(world: World, tid: str, headers: dict[str, str], comment: str | None = None) -> dict:
    body = {"comment": comment} if comment is not None else None
    return ok(world.client.post(f"/v1/transfers/{tid}/approve", json=body, headers=headers))


def test_downgrade_end_to_end(world: World) -> None:
    client, ctx = world.client, world.ctx
    art = upload(client, world.alice_s, CLEAN, name="summary.txt")
    seq = audit_seq(ctx)
    t = request_transfer(client, world.alice_s, art["id"], "unclassified")
    assert (t["state"], t["downgrade"], t["requester"]) == ("pending", True, "alice")
    assert (t["source_label"], t["target_label"]) == ("SECRET", "UNCLASSIFIED")
    assert (t["reviews"], t["released_artifact_id"], t["reason"]) == ([], None, None)
    assert t["artifact_id"] == art["id"] and t["justification"] == "needed by the partner team"
    assert audit_events_after(ctx, seq) == ["transfer.requested"]
    tid = t["id"]
    assert ok(client.get(f"/v1/transfers/{tid}", headers=world.alice_s)) == t
    assert listed_ids(client, "/v1/transfers", world.bob_s) == {tid}

    # One release authority approves: still pending; the same one again does not count.
    blobs = blob_files(ctx)
    after_one = _approve(world, tid, world.bob_s, "checked, nothing sensitive")
    assert after_one["state"] == "pending"
    assert [(r["reviewer"], r["decision"], r["comment"]) for r in after_one["reviews"]] == [
        ("bob", "approve", "checked, nothing sensitive")
    ]
    with unchanged(ctx):
        assert_problem(client.post(f"/v1/transfers/{tid}/approve", headers=world.bob_s), 409)
        assert_problem(client.post(f"/v1/transfers/{tid}/release", headers=world.alice_s), 409)
    assert blob_files(ctx) == blobs  # nothing released yet

    # A second, distinct authority approves (no body at all): released at once.
    seq = audit_seq(ctx)
    done = ok(client.post(f"/v1/transfers/{tid}/approve", headers=world.carol_s))
    assert done["state"] == "released"
    assert [r["reviewer"] for r in done["reviews"]] == ["bob", "carol"]
    assert audit_events_after(ctx, seq) == ["transfer.approved", "transfer.released", "artifact.created"]
    assert len(blob_files(ctx) - blobs) == 1
    copy_id = done["released_artifact_id"]
    assert copy_id and copy_id != art["id"]

    # The copy lives at the target label, readable by an UNCLASSIFIED session of the agency.
    copy = ok(client.get(f"/v1/artifacts/{copy_id}", headers=world.dave_u))
    assert (copy["label"], copy["agency"], copy["derived_from"]) == ("UNCLASSIFIED", "alpha", [art["id"]])
    assert copy["sha256"] == hashlib.sha256(CLEAN).hexdigest()
    assert copy["metadata"]["transfer"] == tid
    r = client.get(f"/v1/artifacts/{copy_id}/content", headers=world.dave_u)
    assert r.content == CLEAN and r.headers["x-enclave-label"] == "UNCLASSIFIED"
    assert listed_ids(client, "/v1/artifacts", world.dave_u) == {copy_id}
    # The original and the transfer stay invisible to that session.
    with unchanged(ctx, audit=None):
        assert_invisible(client, "GET", "/v1/artifacts/{id}", art["id"], world.dave_u)
        assert_invisible(client, "GET", "/v1/transfers/{id}", tid, world.dave_u)

    # Done is done: releasing again answers the same, reviewing again conflicts.
    with unchanged(ctx):
        assert ok(client.post(f"/v1/transfers/{tid}/release", headers=world.alice_s)) == done
        assert_problem(client.post(f"/v1/transfers/{tid}/approve", headers=world.bob_s), 409)
        assert_problem(client.post(f"/v1/transfers/{tid}/refuse", headers=world.bob_s), 409)
    assert ok(client.get(f"/v1/transfers/{tid}", headers=world.alice_s)) == done


@pytest.mark.parametrize(
    "marking", ["SECRET//SI", "TOP SECRET", "(S)", "SECRET // TK"], ids=["banner", "ts", "portion", "spaced"]
)
def test_downgrade_refused_when_content_carries_a_marking(world: World, marking: str) -> None:
    client, ctx = world.client, world.ctx
    data = b"routine notes\nsee annex " + marking.encode() + b" for details\nend\n"
    art = upload(client, world.alice_s, data)
    blobs, seq = blob_files(ctx), audit_seq(ctx)
    t = request_transfer(client, world.alice_s, art["id"], "UNCLASSIFIED")
    assert t["state"] == "refused"
    assert marking in t["reason"]
    assert audit_events_after(ctx, seq) == ["transfer.requested", "transfer.scan_refused"]
    # Refused is final: no review, no release, no copy.
    with unchanged(ctx):
        assert_problem(client.post(f"/v1/transfers/{t['id']}/approve", headers=world.bob_s), 409)
        assert_problem(client.post(f"/v1/transfers/{t['id']}/release", headers=world.alice_s), 409)
    assert blob_files(ctx) == blobs
    assert listed_ids(client, "/v1/artifacts", world.dave_u) == set()
    assert ok(client.get(f"/v1/transfers/{t['id']}", headers=world.alice_s))["state"] == "refused"


def test_upgrade_is_released_at_once(world: World) -> None:
    client, ctx = world.client, world.ctx
    art = upload(client, world.alice_u, CLEAN)
    seq = audit_seq(ctx)
    t = request_transfer(client, world.alice_u, art["id"], "SECRET")
    assert (t["state"], t["downgrade"], t["reviews"]) == ("released", False, [])
    assert audit_events_after(ctx, seq) == ["transfer.requested", "transfer.released", "artifact.created"]
    # The copy sits above the transfer's own label: its id is shown only to sessions that
    # may read it, never to the UNCLASSIFIED session that sent it up.
    assert t["released_artifact_id"] is None
    copy_id = ok(client.get(f"/v1/transfers/{t['id']}", headers=world.alice_s))["released_artifact_id"]
    assert copy_id is not None
    copy = ok(client.get(f"/v1/artifacts/{copy_id}", headers=world.alice_s))
    assert (copy["label"], copy["derived_from"]) == ("SECRET", [art["id"]])
    assert client.get(f"/v1/artifacts/{copy_id}/content", headers=world.bob_s).content == CLEAN
    # Upgraded content is out of reach of the session that sent it up (the transfer itself
    # is labelled with its source label, so that session still follows it).
    with unchanged(ctx, audit=None):
        assert_invisible(client, "GET", "/v1/artifacts/{id}", copy_id, world.alice_u)
        assert_invisible(client, "GET", "/v1/artifacts/{id}/content", copy_id, world.alice_u)
    assert ok(client.get(f"/v1/transfers/{t['id']}", headers=world.alice_u)) == t
    assert listed_ids(client, "/v1/artifacts", world.alice_u) == {art["id"]}


def test_refuse(world: World) -> None:
    client, ctx = world.client, world.ctx
    art = upload(client, world.alice_s, CLEAN)
    tid = request_transfer(client, world.alice_s, art["id"], "CUI")["id"]
    _approve(world, tid, world.bob_s)
    with unchanged(ctx, audit=("transfer.refused",), skip=("transfers", "transfer_reviews")):
        r = client.post(
            f"/v1/transfers/{tid}/refuse", json={"comment": "names a source"}, headers=world.carol_s
        )
        refused = ok(r)
    assert refused["state"] == "refused"
    assert "carol" in refused["reason"] and "names a source" in refused["reason"]
    assert [(x["reviewer"], x["decision"]) for x in refused["reviews"]] == [
        ("bob", "approve"),
        ("carol", "refuse"),
    ]
    with unchanged(ctx):
        assert_problem(client.post(f"/v1/transfers/{tid}/approve", headers=world.carol_s), 409)
        assert_problem(client.post(f"/v1/transfers/{tid}/release", headers=world.alice_s), 409)
    assert listing(client, "/v1/artifacts", world.dave_u)["count"] == 0
    check_json_rejections(client, ctx, "POST", f"/v1/transfers/{tid}/refuse", {"comment": "x"}, world.bob_s)
    check_json_rejections(client, ctx, "POST", f"/v1/transfers/{tid}/approve", {"comment": "x"}, world.bob_s)


def test_review_forbidden(world: World) -> None:
    client, ctx = world.client, world.ctx
    art = upload(client, world.alice_s, CLEAN)
    by_alice = request_transfer(client, world.alice_s, art["id"], "UNCLASSIFIED")["id"]
    by_bob = request_transfer(client, world.bob_s, art["id"], "UNCLASSIFIED")["id"]
    before = ok(client.get(f"/v1/transfers/{by_bob}", headers=world.bob_s))
    for action in ("approve", "refuse"):
        with unchanged(ctx, audit=DENIED * 2):
            # Not a release authority (the transfer is visible to her: 403, not 404).
            r = client.post(f"/v1/transfers/{by_bob}/{action}", headers=world.alice_s)
            assert_problem(r, 403, "release-authority")
            # A release authority may not review their own request (two-person rule).
            assert_problem(client.post(f"/v1/transfers/{by_bob}/{action}", headers=world.bob_s), 403)
    assert ok(client.get(f"/v1/transfers/{by_bob}", headers=world.bob_s)) == before
    # A release authority whose session is below the source label cannot even see it, nor
    # can the admin (another agency) at a session that dominates it.
    bob_u = bearer(mint(client, "bob", "U")["token"])
    admin_s = bearer(mint(client, "admin", "SECRET")["token"])
    with unchanged(ctx, audit=None):
        for headers in (bob_u, admin_s):
            assert_invisible(client, "POST", "/v1/transfers/{id}/approve", by_alice, headers)
            assert_invisible(client, "POST", "/v1/transfers/{id}/refuse", by_alice, headers)
    assert ok(client.get(f"/v1/transfers/{by_alice}", headers=world.alice_s))["reviews"] == []


def test_transfer_invisible_to_low_and_foreign_sessions(world: World) -> None:
    client, ctx = world.client, world.ctx
    art = upload(client, world.alice_s, CLEAN)
    tid = request_transfer(client, world.alice_s, art["id"], "UNCLASSIFIED")["id"]
    low = upload(client, world.alice_u, CLEAN)
    visible_tid = request_transfer(client, world.alice_u, low["id"], "CUI")["id"]
    for headers in (world.alice_u, world.dave_u, world.eve_top, world.eve_u):
        with unchanged(ctx, audit=None):
            for template in (
                "/v1/transfers/{id}",
                "/v1/transfers/{id}/approve",
                "/v1/transfers/{id}/refuse",
                "/v1/transfers/{id}/release",
            ):
                method = "GET" if template.endswith("{id}") else "POST"
                assert_invisible(client, method, template, tid, headers)
            body = listing(client, "/v1/transfers", headers)
            assert tid not in {t["id"] for t in body["items"]}
    assert listed_ids(client, "/v1/transfers", world.dave_u) == {visible_tid}
    assert listing(client, "/v1/transfers", world.eve_top)["count"] == 0
    assert listed_ids(client, "/v1/transfers", world.bob_s) == {tid, visible_tid}
    assert ok(client.get(f"/v1/transfers/{tid}", headers=world.alice_s))["state"] == "pending"


def test_list_filters_by_state(world: World) -> None:
    client = world.client
    clean = upload(client, world.alice_s, CLEAN)
    dirty = upload(client, world.alice_s, b"TOP SECRET annex")
    pending = request_transfer(client, world.alice_s, clean["id"], "UNCLASSIFIED")["id"]
    refused = request_transfer(client, world.alice_s, dirty["id"], "UNCLASSIFIED")["id"]
    up = upload(client, world.alice_u, CLEAN)
    released = request_transfer(client, world.alice_u, up["id"], "SECRET")["id"]
    h = world.alice_s
    everything = listing(client, "/v1/transfers", h)  # newest first (issue 13)
    assert [t["id"] for t in everything["items"]] == [released, refused, pending] and everything["total"] == 3
    assert listing(client, "/v1/transfers", h, state="pending")["total"] == 1
    assert listed_ids(client, "/v1/transfers", h, state="pending") == {pending}
    assert listed_ids(client, "/v1/transfers", h, state="refused") == {refused}
    assert listed_ids(client, "/v1/transfers", h, state="released") == {released}
    assert listed_ids(client, "/v1/transfers", h, state="approved") == set()
    assert_problem(client.get("/v1/transfers", params={"state": "lost"}, headers=h), 422)


def test_request_refusals(world: World) -> None:
    client, ctx = world.client, world.ctx
    art = upload(client, world.alice_s, CLEAN)
    aid = art["id"]
    good = {"artifact_id": aid, "to": "UNCLASSIFIED", "why": "partner release"}
    with unchanged(ctx):
        for bad in (
            {**good, "to": "PUBLIC"},
            {**good, "to": "SECRET//NOFORN"},
            {**good, "to": "SECRET"},  # already there
            {**good, "why": "   "},
            {**good, "why": ""},
            {**good, "why": "x" * 4001},
            {"artifact_id": aid, "to": "CUI"},
            {**good, "artifact_id": ""},
        ):
            assert_problem(client.post("/v1/transfers", json=bad, headers=world.alice_s), 422)
        other = missing_id()
        r = client.post("/v1/transfers", json={**good, "artifact_id": other}, headers=world.alice_s)
        assert_problem(r, 404, other)
    # A deleted artifact is gone for the guard too (same words as one that never existed).
    ok(client.delete(f"/v1/artifacts/{aid}", headers=world.alice_s), 204)
    other = missing_id()
    assert_same_404(
        client.post("/v1/transfers", json=good, headers=world.alice_s),
        aid,
        client.post("/v1/transfers", json={**good, "artifact_id": other}, headers=world.alice_s),
        other,
    )
    check_json_rejections(client, ctx, "POST", "/v1/transfers", good, world.alice_s)


def test_release_finishes_an_interrupted_approval(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    client, ctx = world.client, world.ctx
    art = upload(client, world.alice_s, CLEAN)
    tid = request_transfer(client, world.alice_s, art["id"], "UNCLASSIFIED")["id"]
    _approve(world, tid, world.bob_s)

    def broken_writer(*args: object, **kwargs: object) -> None:
        raise Unavailable("blob store is down")

    blobs = blob_files(ctx)
    with monkeypatch.context() as m:
        m.setattr(ctx.blobs, "writer", broken_writer)
        assert_problem(client.post(f"/v1/transfers/{tid}/approve", headers=world.carol_s), 503)
        # The approval stands; the copy was not made.
        t = ok(client.get(f"/v1/transfers/{tid}", headers=world.alice_s))
        assert (t["state"], t["released_artifact_id"]) == ("approved", None)
        assert_problem(client.post(f"/v1/transfers/{tid}/release", headers=world.alice_s), 503)
        assert ok(client.get(f"/v1/transfers/{tid}", headers=world.alice_s))["state"] == "approved"
    assert blob_files(ctx) == blobs
    assert listing(client, "/v1/artifacts", world.dave_u)["count"] == 0
    assert listed_ids(client, "/v1/transfers", world.alice_s, state="approved") == {tid}
    # Invisible to a low session even now; then released by a session that can read it.
    with unchanged(ctx, audit=None):
        assert_invisible(client, "POST", "/v1/transfers/{id}/release", tid, world.dave_u)
    done = ok(client.post(f"/v1/transfers/{tid}/release", headers=world.alice_s))
    assert done["state"] == "released"
    r = client.get(f"/v1/artifacts/{done['released_artifact_id']}/content", headers=world.dave_u)
    assert r.content == CLEAN


def test_nul_characters_are_invalid_input(world: World) -> None:
    client, ctx = world.client, world.ctx
    art = upload(client, world.alice_s, CLEAN)
    tid = request_transfer(client, world.alice_s, art["id"], "UNCLASSIFIED")["id"]
    h = world.alice_s
    good = {"artifact_id": art["id"], "to": "UNCLASSIFIED", "why": "partner release"}
    for field in ("artifact_id", "to", "why"):
        body = {**good, field: good[field] + "\x00"}
        assert_refused_as_input(client, ctx, "POST", "/v1/transfers", json=body, headers=h)
    for suffix in ("", "/approve", "/refuse", "/release"):
        method = "POST" if suffix else "GET"
        assert_refused_as_input(client, ctx, method, f"/v1/transfers/{tid}%00{suffix}", headers=world.bob_s)
    comment = {"comment": "fine\x00"}
    assert_refused_as_input(
        client, ctx, "POST", f"/v1/transfers/{tid}/approve", json=comment, headers=world.bob_s
    )
    assert_refused_as_input(
        client, ctx, "POST", f"/v1/transfers/{tid}/refuse", json=comment, headers=world.bob_s
    )
    assert ok(client.get(f"/v1/transfers/{tid}", headers=h))["reviews"] == []


def test_deleted_source_is_never_released(world: World) -> None:
    client, ctx = world.client, world.ctx
    art = upload(client, world.alice_s, CLEAN)
    t = request_transfer(client, world.alice_s, art["id"], "UNCLASSIFIED")
    _approve(world, t["id"], world.bob_s)
    assert client.delete(f"/v1/artifacts/{art['id']}", headers=world.alice_s).status_code == 204
    blobs = blob_files(ctx)
    done = _approve(world, t["id"], world.carol_s)
    assert (done["state"], done["reason"], done["released_artifact_id"]) == (
        "refused",
        "the source artifact was deleted",
        None,
    )
    assert blob_files(ctx) == blobs
    assert listed_ids(client, "/v1/artifacts", world.dave_u) == set()


def test_override_is_only_for_unreadable_content_and_its_body_is_checked(world: World) -> None:
    client, ctx = world.client, world.ctx
    art = upload(client, world.alice_s, CLEAN)
    tid = request_transfer(client, world.alice_s, art["id"], "UNCLASSIFIED")["id"]
    with unchanged(ctx):  # readable and pending: nothing to vouch for
        r = client.post(f"/v1/transfers/{tid}/override", json={"reason": "fine"}, headers=world.bob_s)
        assert_problem(r, 409, "can be overridden")
    body = {"reason": "checked offline"}
    check_json_rejections(client, ctx, "POST", f"/v1/transfers/{tid}/override", body, world.bob_s)
    assert_refused_as_input(
        client, ctx, "POST", f"/v1/transfers/{tid}/override", json={"reason": "ok\x00"}, headers=world.bob_s
    )
    with unchanged(ctx, audit=None):
        assert_invisible(client, "POST", "/v1/transfers/{id}/override", tid, world.dave_u, json=body)
    assert ok(client.get(f"/v1/transfers/{tid}", headers=world.alice_s))["reviews"] == []
