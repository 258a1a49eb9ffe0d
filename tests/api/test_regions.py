"""/v1/regions, /v1/regions/{name} and /healthz."""

from __future__ import annotations

from fastapi.testclient import TestClient

import enclave
from enclave.services.context import Context

from .conftest import World
from .helpers import anon, assert_problem, bearer, ok, unchanged


def test_healthz_needs_no_token(client: TestClient, ctx: Context) -> None:
    with unchanged(ctx):
        for r in (anon(client, "GET", "/healthz"), client.get("/healthz", headers=bearer("enc_bogus"))):
            assert ok(r) == {"status": "ok", "version": enclave.__version__, "leader": True}


def test_list_regions(world: World) -> None:
    client, ctx = world.client, world.ctx
    with unchanged(ctx):
        body = ok(client.get("/v1/regions", headers=world.dave_u))
    assert body["fleet"] == ctx.fleet.name
    assert body["count"] == len(body["items"]) == len(ctx.fleet.regions)
    by_name = {item["name"]: item for item in body["items"]}
    assert list(by_name) == [r.name for r in ctx.fleet.regions]
    for region in ctx.fleet.regions:
        item = by_name[region.name]
        assert item["accreditation"] == ctx.scheme.parse(region.accreditation).marking
        assert item["power_cap_mw"] == region.power_cap_mw
        assert item["capacity"]["nodes"] == region.nodes
        assert item["capacity"]["gpus"] == region.gpus
        assert item["capacity"]["peak_facility_mw"] > 0
        assert [p["name"] for p in item["pools"]] == [p.name for p in region.pools]
        assert item["backend"]["type"] == region.backend.type
        assert item["accepts_session_label"] is True  # every region takes UNCLASSIFIED work


def test_regions_say_which_accept_the_session_label(world: World) -> None:
    client, ctx = world.client, world.ctx
    for headers, label in ((world.alice_s, "SECRET"), (world.eve_top, ctx.scheme.top.marking)):
        items = ok(client.get("/v1/regions", headers=headers))["items"]
        session = ctx.scheme.parse(label)
        accepting = {i["name"] for i in items if i["accepts_session_label"]}
        expected = {i["name"] for i in items if ctx.scheme.parse(i["accreditation"]).dominates(session)}
        assert accepting == expected
        # A region accredited below the session label never accepts it.
        assert accepting != {i["name"] for i in items}
        one = ok(client.get(f"/v1/regions/{items[0]['name']}", headers=headers))
        assert one == items[0]


def test_get_region(world: World) -> None:
    client, ctx = world.client, world.ctx
    name = ctx.fleet.regions[-1].name
    assert ok(client.get(f"/v1/regions/{name}"))["name"] == name
    with unchanged(ctx):
        body = assert_problem(client.get("/v1/regions/atlantis"), 404)
    assert "atlantis" in body["detail"]
