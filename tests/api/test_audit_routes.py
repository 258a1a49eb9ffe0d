"""/v1/audit and /v1/audit/verify."""

from __future__ import annotations

from sqlalchemy import update

from enclave.store.models import AuditRecord

from .conftest import World
from .helpers import (
    DENIED,
    assert_problem,
    assert_refused_as_input,
    audit_seq,
    bearer,
    create_user,
    listing,
    mint,
    ok,
    unchanged,
    upload,
)


def _events(items: list[dict]) -> list[str]:
    return [i["event"] for i in items]


def test_list_records(world: World) -> None:
    client, ctx = world.client, world.ctx
    art = upload(client, world.dave_u, b"open data")
    with unchanged(ctx):  # listing records nothing
        body = listing(client, "/v1/audit", {}, limit=5000)
    items = body["items"]
    seqs = [i["seq"] for i in items]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert seqs[0] == 1 and "server.bootstrapped" in _events(items)
    created = [i for i in items if i["event"] == "artifact.created"]
    assert [(c["object_id"], c["actor"], c["agency"], c["object_label"]) for c in created] == [
        (art["id"], "dave", "alpha", "UNCLASSIFIED")
    ]
    assert created[0]["details"]["sha256"] == art["sha256"]
    # Filters: event, after, limit.
    only = listing(client, "/v1/audit", {}, event="admin.user_created")["items"]
    assert [i["object_id"] for i in only] == ["admin", "alice", "bob", "carol", "dave", "eve"]
    tail = listing(client, "/v1/audit", {}, after=seqs[-3], limit=5000)["items"]
    assert [i["seq"] for i in tail] == seqs[-2:]
    assert listing(client, "/v1/audit", {}, limit=2)["items"] == items[:2]
    assert listing(client, "/v1/audit", {}, after=seqs[-1])["count"] == 0
    with unchanged(ctx):
        for params in (
            {"limit": 0},
            {"limit": 5001},
            {"after": -1},
            {"event": "artifact.stolen"},
            {"event": "e" * 65},
            {"after": "first"},
        ):
            assert_problem(client.get("/v1/audit", params=params), 422)


def test_records_above_the_session_are_invisible(world: World) -> None:
    client, ctx = world.client, world.ctx
    secret = upload(client, world.alice_s, b"plans")
    # The admin's standing token is UNCLASSIFIED: SECRET records are left out of the listing.
    low = listing(client, "/v1/audit", {}, limit=5000)["items"]
    assert secret["id"] not in {i["object_id"] for i in low}
    assert all(i["object_label"] in (None, "UNCLASSIFIED") for i in low)
    # At SECRET the same auditor sees them; still not the TOP SECRET token minted for eve.
    admin_s = bearer(mint(client, "admin", "SECRET")["token"])
    high = listing(client, "/v1/audit", admin_s, limit=5000)["items"]
    created = [i for i in high if i["object_id"] == secret["id"]]
    assert _events(created) == ["artifact.created"] and created[0]["object_label"] == "SECRET"
    assert {i["seq"] for i in low} < {i["seq"] for i in high}
    top = ctx.scheme.top.marking
    assert top not in {i["object_label"] for i in high}
    assert any(
        i["object_label"] == top
        for i in listing(client, "/v1/audit", bearer(mint(client, "admin", top)["token"]), limit=5000)[
            "items"
        ]
    )
    # An auditor of another agency reads records across agencies, within the session label.
    create_user(client, "olga", "beta", "SECRET", ("auditor",))
    olga = bearer(mint(client, "olga", "SECRET")["token"])
    assert secret["id"] in {i["object_id"] for i in listing(client, "/v1/audit", olga, limit=5000)["items"]}


def test_only_auditors_and_admins(world: World) -> None:
    client, ctx = world.client, world.ctx
    for headers in (world.alice_s, world.bob_s, world.eve_top):
        with unchanged(ctx, audit=DENIED * 2):
            assert_problem(client.get("/v1/audit", headers=headers), 403)
            assert_problem(client.get("/v1/audit/verify", headers=headers), 403)
    create_user(client, "olga", "beta", "UNCLASSIFIED", ("auditor",))
    olga = bearer(mint(client, "olga", "UNCLASSIFIED")["token"])
    assert listing(client, "/v1/audit", olga)["count"] > 0
    assert ok(client.get("/v1/audit/verify", headers=olga))["ok"] is True


def test_verify(world: World) -> None:
    client, ctx = world.client, world.ctx
    upload(client, world.alice_s, b"plans")
    records = audit_seq(ctx)
    with unchanged(ctx, audit=("audit.verified",)):
        result = ok(client.get("/v1/audit/verify"))
    assert result == {"ok": True, "records": records, "first_bad_seq": None, "problem": None}
    # Edit one record behind the server's back: verification names it and records nothing.
    victim = records // 2
    with ctx.engine.begin() as conn:
        conn.execute(update(AuditRecord).where(AuditRecord.seq == victim).values(actor="mallory"))
    before = audit_seq(ctx)
    result = ok(client.get("/v1/audit/verify"))
    assert result["ok"] is False
    assert result["first_bad_seq"] == victim
    assert result["problem"]
    assert audit_seq(ctx) == before


def test_values_no_store_can_hold_are_invalid_input(world: World) -> None:
    client, ctx = world.client, world.ctx
    assert_refused_as_input(client, ctx, "GET", "/v1/audit", params={"after": 2**63})
    assert_refused_as_input(client, ctx, "GET", "/v1/audit", params={"after": 10**30})
    assert_refused_as_input(client, ctx, "GET", "/v1/audit", params={"event": "artifact.created\x00"})
    assert listing(client, "/v1/audit", {}, after=2**63 - 1)["count"] == 0
