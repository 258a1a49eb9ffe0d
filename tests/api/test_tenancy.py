"""/v1/agencies (+ quotas, projects) and /v1/users (+ patch, password)."""

from __future__ import annotations

from argon2 import PasswordHasher
from sqlalchemy import select

from enclave.services.context import Context
from enclave.store.models import User

from .conftest import World
from .helpers import (
    DENIED,
    Headers,
    assert_invisible,
    assert_problem,
    assert_refused_as_input,
    assert_same_404,
    assert_unauthenticated,
    bearer,
    check_json_rejections,
    create_agency,
    create_user,
    missing_id,
    ok,
    token_header,
    unchanged,
    upload,
)

PASSWORD = "correct horse battery staple"


# -- agencies -----------------------------------------------------------------------------
def test_create_and_list_agencies(world: World) -> None:
    client, ctx = world.client, world.ctx
    with unchanged(ctx, audit=("admin.agency_created",), skip=("agencies",)):
        made = create_agency(client, "gamma", gpu_hours=10.5, kwh=100, storage_bytes=4096)
    assert made["name"] == "gamma"
    assert made["quotas"] == {
        "gpu_hours": 10.5,
        "kwh": 100,
        "storage_bytes": 4096,
        "gateway_rpm": None,
        "gateway_tpm": None,
        "gateway_token_budget": None,
    }
    listed = ok(client.get("/v1/agencies"))
    assert listed["count"] == len(listed["items"])
    assert [a["name"] for a in listed["items"]] == sorted(["enclave", "alpha", "beta", "gamma"])
    assert ok(client.get("/v1/agencies/gamma")) == made
    # No quotas given: unlimited (null).
    assert create_agency(client, "delta")["quotas"] == {
        "gpu_hours": None,
        "kwh": None,
        "storage_bytes": None,
        "gateway_rpm": None,
        "gateway_tpm": None,
        "gateway_token_budget": None,
    }


def test_create_agency_refusals(world: World) -> None:
    client, ctx = world.client, world.ctx
    with unchanged(ctx, audit=DENIED):
        assert_problem(client.post("/v1/agencies", json={"name": "rogue"}, headers=world.alice_s), 403)
    with unchanged(ctx):
        assert_problem(client.post("/v1/agencies", json={"name": "alpha"}), 409)
        for bad in ("Gamma", "1st", "has space", "x" * 65, ""):
            assert_problem(client.post("/v1/agencies", json={"name": bad}), 422)
        r = client.post("/v1/agencies", json={"name": "gamma", "quotas": {"kwh": -1}})
        assert_problem(r, 422)
        r = client.post("/v1/agencies", json={"name": "gamma", "quotas": {"cpu_years": 1}})
        assert_problem(r, 422, "cpu_years")
    check_json_rejections(client, ctx, "POST", "/v1/agencies", {"name": "gamma"})


def test_read_agencies_access(world: World) -> None:
    client, ctx = world.client, world.ctx
    # A member reads their own agency, nobody else's, and cannot list them all.
    assert ok(client.get("/v1/agencies/alpha", headers=world.dave_u))["name"] == "alpha"
    with unchanged(ctx, audit=DENIED + DENIED):
        assert_problem(client.get("/v1/agencies/beta", headers=world.dave_u), 403)
        assert_problem(client.get("/v1/agencies", headers=world.dave_u), 403)
    with unchanged(ctx):
        assert_problem(client.get("/v1/agencies/nowhere"), 404)


def test_set_quotas(world: World) -> None:
    client, ctx = world.client, world.ctx
    with unchanged(ctx, audit=("admin.agency_updated",), skip=("agencies",)):
        view = ok(client.put("/v1/agencies/alpha/quotas", json={"storage_bytes": 10, "kwh": 5.5}))
    assert view["quotas"] == {
        "gpu_hours": None,
        "kwh": 5.5,
        "storage_bytes": 10,
        "gateway_rpm": None,
        "gateway_tpm": None,
        "gateway_token_budget": None,
    }
    assert ok(client.get("/v1/agencies/alpha"))["quotas"] == view["quotas"]
    # The quota is enforced: alice's 11-byte upload does not fit.
    with unchanged(ctx):
        r = client.post("/v1/artifacts", params={"name": "x"}, content=b"x" * 11, headers=world.alice_s)
        assert_problem(r, 413)
    with unchanged(ctx, audit=DENIED):
        r = client.put("/v1/agencies/alpha/quotas", json={"storage_bytes": 10**12}, headers=world.alice_s)
        assert_problem(r, 403)
    with unchanged(ctx):
        assert_problem(client.put("/v1/agencies/nowhere/quotas", json={"kwh": 1}), 404)
        assert_problem(client.put("/v1/agencies/alpha/quotas", json={"gpu_hours": -0.5}), 422)
        assert_problem(client.put("/v1/agencies/alpha/quotas", json={"storage_bytes": 1.5}), 422)
    check_json_rejections(client, ctx, "PUT", "/v1/agencies/alpha/quotas", {"kwh": 1})
    # Clearing the quota lifts the limit.
    ok(client.put("/v1/agencies/alpha/quotas", json={}))
    upload(client, world.alice_s, b"x" * 11)


def test_projects(world: World) -> None:
    client, ctx = world.client, world.ctx
    with unchanged(ctx, audit=("admin.project_created",), skip=("projects",)):
        made = ok(client.post("/v1/agencies/alpha/projects", json={"name": "climate"}), 201)
    assert made == {"agency": "alpha", "name": "climate"}
    ok(client.post("/v1/agencies/alpha/projects", json={"name": "energy"}), 201)
    ok(client.post("/v1/agencies/beta/projects", json={"name": "climate"}), 201)  # per agency
    # Members list their own agency's projects; admins any agency's.
    for headers in (world.dave_u, {}):
        listed = ok(client.get("/v1/agencies/alpha/projects", headers=headers))
        assert listed["count"] == 2
        assert [p["name"] for p in listed["items"]] == ["climate", "energy"]
    with unchanged(ctx, audit=DENIED + DENIED):
        assert_problem(client.get("/v1/agencies/beta/projects", headers=world.dave_u), 403)
        r = client.post("/v1/agencies/alpha/projects", json={"name": "mine"}, headers=world.alice_s)
        assert_problem(r, 403)
    with unchanged(ctx):
        assert_problem(client.post("/v1/agencies/alpha/projects", json={"name": "climate"}), 409)
        assert_problem(client.post("/v1/agencies/nowhere/projects", json={"name": "x"}), 404)
        assert_problem(client.get("/v1/agencies/nowhere/projects"), 404)
        assert_problem(client.post("/v1/agencies/alpha/projects", json={"name": "Bad Name"}), 422)
    check_json_rejections(client, ctx, "POST", "/v1/agencies/alpha/projects", {"name": "genomics"})


# -- users --------------------------------------------------------------------------------
def test_create_and_read_users(world: World) -> None:
    client, ctx = world.client, world.ctx
    with unchanged(ctx, audit=("admin.user_created",), skip=("users",)):
        made = create_user(client, "zoe", "beta", "top secret // tk / si", ("auditor", "user", "auditor"))
    assert made["clearance"] == ctx.scheme.parse("TOP SECRET//SI/TK").marking == "TOP SECRET//SI/TK"
    assert made["roles"] == ["auditor", "user"]
    assert (made["agency"], made["disabled"], made["has_password"]) == ("beta", False, False)
    assert ok(client.get("/v1/users/zoe")) == made
    users = ok(client.get("/v1/users"))
    assert users["count"] == len(users["items"])
    assert [u["name"] for u in users["items"]] == ["admin", "alice", "bob", "carol", "dave", "eve", "zoe"]
    # Users read themselves, nobody else, and cannot list.
    assert ok(client.get("/v1/users/dave", headers=world.dave_u))["name"] == "dave"
    with unchanged(ctx, audit=DENIED + DENIED):
        assert_problem(client.get("/v1/users/alice", headers=world.dave_u), 403)
        assert_problem(client.get("/v1/users", headers=world.dave_u), 403)
    with unchanged(ctx):
        assert_problem(client.get("/v1/users/nobody"), 404)


def test_create_user_refusals(world: World) -> None:
    client, ctx = world.client, world.ctx
    good = {"name": "zoe", "agency": "alpha", "clearance": "SECRET", "roles": ["user"]}
    with unchanged(ctx, audit=DENIED):
        assert_problem(client.post("/v1/users", json=good, headers=world.alice_s), 403)
    with unchanged(ctx):
        assert_problem(client.post("/v1/users", json={**good, "name": "alice"}), 409)
        assert_problem(client.post("/v1/users", json={**good, "agency": "nowhere"}), 404)
        assert_problem(client.post("/v1/users", json={**good, "name": "Zoe"}), 422)
        assert_problem(client.post("/v1/users", json={**good, "clearance": "COSMIC"}), 422)
        assert_problem(client.post("/v1/users", json={**good, "clearance": "SECRET//NOFORN"}), 422)
        assert_problem(client.post("/v1/users", json={**good, "roles": ["superuser"]}), 422)
        assert_problem(client.post("/v1/users", json={**good, "roles": ["user"] * 9}), 422)
        assert_problem(client.post("/v1/users", json={**good, "password": "short"}), 422)
        assert_problem(client.post("/v1/users", json={"name": "zoe", "agency": "alpha"}), 422)
    check_json_rejections(client, ctx, "POST", "/v1/users", good)


def test_patch_user(world: World) -> None:
    client, ctx = world.client, world.ctx
    with unchanged(ctx, audit=("admin.user_updated",), skip=("users",)):
        view = ok(client.patch("/v1/users/dave", json={"roles": ["user", "auditor"]}))
    assert view["roles"] == ["auditor", "user"]
    # A lowering applies at once (and is recorded as a request applied on the spot).
    lowered = ("admin.clearance_lowered", "admin.user_updated")
    with unchanged(ctx, audit=lowered, skip=("users", "clearance_requests")):
        view = ok(client.patch("/v1/users/bob", json={"clearance": "secret", "disabled": False}))
    assert (view["clearance"], view["disabled"]) == ("SECRET", False)
    assert ok(client.get("/v1/users/bob")) == view
    # A raise is not a PATCH: it is a request a second admin approves.
    with unchanged(ctx):
        r = client.patch("/v1/users/dave", json={"clearance": "CUI", "roles": ["user"]})
        assert_problem(r, 403, "second admin")
    with unchanged(ctx, audit=DENIED):
        assert_problem(
            client.patch("/v1/users/alice", json={"clearance": "TOP SECRET"}, headers=world.alice_s), 403
        )
    with unchanged(ctx):
        assert_problem(client.patch("/v1/users/nobody", json={"disabled": True}), 404)
        assert_problem(client.patch("/v1/users/dave", json={"clearance": "ULTRA"}), 422)
        assert_problem(client.patch("/v1/users/dave", json={"roles": ["root"]}), 422)
        assert_problem(client.patch("/v1/users/dave", json={"disabled": "maybe"}), 422)
        assert_problem(client.patch("/v1/users/dave", json={"agency": "beta"}), 422)
    check_json_rejections(client, ctx, "PATCH", "/v1/users/dave", {"disabled": False})


def test_lowering_clearance_takes_effect_on_live_tokens(world: World) -> None:
    client, ctx = world.client, world.ctx
    art = upload(client, world.alice_s, b"secret plans")
    ok(client.patch("/v1/users/alice", json={"clearance": "UNCLASSIFIED"}))
    # The SECRET token still authenticates, but the session is above the clearance now:
    # the SECRET artifact is invisible to it, exactly like a missing one.
    ok(client.get("/v1/whoami", headers=world.alice_s))
    with unchanged(ctx, audit=None):
        assert_invisible(client, "GET", "/v1/artifacts/{id}", art["id"], world.alice_s)
        assert art["id"] not in {
            a["id"] for a in ok(client.get("/v1/artifacts", headers=world.alice_s))["items"]
        }
    # Back up: a request, approved by a second admin (here bob, made an admin of alpha).
    asked = ok(client.post("/v1/users/alice/clearance", json={"clearance": "SECRET"}), 201)
    assert asked["state"] == "pending"
    assert_invisible(client, "GET", "/v1/artifacts/{id}", art["id"], world.alice_s)
    ok(client.patch("/v1/users/bob", json={"roles": ["user", "admin"]}))
    ok(client.post(f"/v1/clearance-requests/{asked['id']}/approve", headers=world.bob_s))
    ok(client.get(f"/v1/artifacts/{art['id']}", headers=world.alice_s))


def test_disabled_user_is_locked_out(world: World) -> None:
    client, ctx = world.client, world.ctx
    ok(client.patch("/v1/users/bob", json={"disabled": True}))
    assert ok(client.get("/v1/users/bob"))["disabled"] is True
    assert_unauthenticated(client.get("/v1/whoami", headers=world.bob_s))
    with unchanged(ctx):
        assert_problem(client.post("/v1/tokens", json={"user": "bob", "label": "SECRET"}), 403)
    ok(client.patch("/v1/users/bob", json={"disabled": False}))
    ok(client.get("/v1/whoami", headers=world.bob_s))


def _hash_of(ctx: Context, name: str) -> str | None:
    with ctx.sessions() as session:
        return session.execute(select(User.password_hash).where(User.name == name)).scalar_one()


def test_set_password(world: World) -> None:
    client, ctx = world.client, world.ctx
    # The admin sets anyone's password; the hash is Argon2id, not the password.
    with unchanged(ctx, audit=("admin.password_set",), skip=("users",)):
        ok(client.put("/v1/users/dave/password", json={"new_password": PASSWORD}), 204)
    stored = _hash_of(ctx, "dave")
    assert stored is not None and stored.startswith("$argon2id$") and PASSWORD not in stored
    assert ok(client.get("/v1/users/dave"))["has_password"] is True
    login = {"user": "dave", "password": PASSWORD, "label": "UNCLASSIFIED"}
    ok(client.post("/v1/auth/login", json=login), 201)
    # A user changes their own, giving the current one.
    new = PASSWORD + " v2"
    with unchanged(ctx):
        r = client.put(
            "/v1/users/dave/password",
            json={"new_password": new, "current_password": "not my password"},
            headers=world.dave_u,
        )
        assert_problem(r, 401)
        r = client.put("/v1/users/dave/password", json={"new_password": new}, headers=world.dave_u)
        assert_problem(r, 401)
    assert _hash_of(ctx, "dave") == stored
    r = client.put(
        "/v1/users/dave/password",
        json={"new_password": new, "current_password": PASSWORD},
        headers=world.dave_u,
    )
    ok(r, 204)
    assert PasswordHasher().verify(_hash_of(ctx, "dave") or "", new)
    # Not somebody else's, and not one that is too short.
    with unchanged(ctx, audit=DENIED):
        r = client.put("/v1/users/alice/password", json={"new_password": PASSWORD}, headers=world.dave_u)
        assert_problem(r, 403)
    with unchanged(ctx):
        assert_problem(client.put("/v1/users/dave/password", json={"new_password": "short"}), 422)
        assert_problem(client.put("/v1/users/nobody/password", json={"new_password": PASSWORD}), 404)
    check_json_rejections(client, ctx, "PUT", "/v1/users/dave/password", {"new_password": PASSWORD})


def test_values_no_store_can_hold_are_invalid_input(world: World) -> None:
    client, ctx = world.client, world.ctx
    as_json = {"content-type": "application/json"}
    for body in (b'{"storage_bytes": 9223372036854775808}', b'{"kwh": Infinity}', b'{"gpu_hours": NaN}'):
        assert_refused_as_input(
            client, ctx, "PUT", "/v1/agencies/alpha/quotas", content=body, headers=as_json
        )
    body = b'{"name": "x", "quotas": {"kwh": 1e400}}'  # overflows to infinity
    assert_refused_as_input(client, ctx, "POST", "/v1/agencies", content=body, headers=as_json)
    ok(client.put("/v1/agencies/alpha/quotas", json={"storage_bytes": 2**63 - 1}))
    # NUL characters: in a path, a query or a body field.
    for method, path in (
        ("GET", "/v1/agencies/al%00pha"),
        ("GET", "/v1/agencies/al%00pha/projects"),
        ("GET", "/v1/users/da%00ve"),
        ("PATCH", "/v1/users/da%00ve"),
    ):
        kwargs = {"json": {"disabled": False}} if method == "PATCH" else {}
        assert_refused_as_input(client, ctx, method, path, **kwargs)
    assert_refused_as_input(client, ctx, "POST", "/v1/agencies/alpha/projects", json={"name": "a\u0000"})
    for field in ("name", "agency", "clearance"):
        user = {"name": "zoe", "agency": "alpha", "clearance": "SECRET", field: "x\x00"}
        assert_refused_as_input(client, ctx, "POST", "/v1/users", json=user)
    assert_refused_as_input(
        client,
        ctx,
        "POST",
        "/v1/users",
        json={"name": "zoe", "agency": "alpha", "clearance": "U", "roles": ["user\x00"]},
    )


# -- agency admins -------------------------------------------------------------------------
def agency_admins(world: World) -> tuple[Headers, Headers, Headers]:
    """ada and bea: admins of alpha (TOP SECRET); ben: admin of beta. Made by the operator."""
    client = world.client
    create_user(client, "ada", "alpha", "TOP SECRET", ("admin",))
    create_user(client, "bea", "alpha", "TOP SECRET", ("admin",))
    create_user(client, "ben", "beta", "TOP SECRET", ("admin",))
    return (
        token_header(client, "ada", "UNCLASSIFIED"),
        token_header(client, "bea", "UNCLASSIFIED"),
        token_header(client, "ben", "UNCLASSIFIED"),
    )


def test_an_agency_admin_administers_its_own_agency(world: World) -> None:
    client, ctx = world.client, world.ctx
    ada, _bea, _ben = agency_admins(world)
    listed = ok(client.get("/v1/users", headers=ada))
    assert [u["name"] for u in listed["items"]] == ["ada", "alice", "bea", "bob", "carol", "dave"]
    assert listed["count"] == 6
    made = ok(
        client.post("/v1/users", json={"name": "zed", "agency": "alpha", "clearance": "SECRET"}, headers=ada),
        201,
    )
    assert made["agency"] == "alpha" and made["roles"] == ["user"]
    token = ok(client.post("/v1/tokens", json={"user": "zed", "label": "SECRET"}, headers=ada), 201)
    assert ok(client.get("/v1/whoami", headers=bearer(token["token"])))["user"] == "zed"
    ok(client.put("/v1/users/zed/password", json={"new_password": PASSWORD}, headers=ada), 204)
    ok(client.patch("/v1/users/zed", json={"disabled": True}, headers=ada))
    ok(client.post("/v1/agencies/alpha/projects", json={"name": "wind"}, headers=ada), 201)
    assert ok(client.get("/v1/agencies/alpha", headers=ada))["name"] == "alpha"
    # The deployment is the operator's: agencies, their quotas, region credentials.
    with unchanged(ctx, audit=DENIED * 4):
        assert_problem(client.post("/v1/agencies", json={"name": "gamma"}, headers=ada), 403, "operator")
        assert_problem(client.get("/v1/agencies", headers=ada), 403, "operator")
        assert_problem(client.put("/v1/agencies/alpha/quotas", json={"kwh": 1e9}, headers=ada), 403)
        assert_problem(client.get("/v1/worker-credentials", headers=ada), 403, "operator")


def test_another_agencys_users_are_missing_to_an_agency_admin(world: World) -> None:
    client, ctx = world.client, world.ctx
    ada, _bea, _ben = agency_admins(world)
    # Every route about eve (beta) answers as for a name nobody has.
    for method, path, body in (
        ("GET", "/v1/users/{}", None),
        ("PATCH", "/v1/users/{}", {"disabled": True}),
        ("PATCH", "/v1/users/{}", {"clearance": "UNCLASSIFIED"}),
        ("PUT", "/v1/users/{}/password", {"new_password": PASSWORD}),
        ("POST", "/v1/users/{}/clearance", {"clearance": "UNCLASSIFIED"}),
    ):
        kwargs = {"json": body} if body is not None else {}
        with unchanged(ctx, audit=None):
            hidden = client.request(method, path.format("eve"), headers=ada, **kwargs)
            missing = client.request(method, path.format("nobody"), headers=ada, **kwargs)
        assert_same_404(hidden, "eve", missing, "nobody")
    with unchanged(ctx, audit=None):
        hidden = client.post("/v1/tokens", json={"user": "eve", "label": "UNCLASSIFIED"}, headers=ada)
        missing = client.post("/v1/tokens", json={"user": "nobody", "label": "UNCLASSIFIED"}, headers=ada)
    assert assert_problem(hidden, 422)["detail"] == "no user named 'eve'"
    assert assert_problem(missing, 422)["detail"] == "no user named 'nobody'"
    for method, path, body in (
        ("GET", "/v1/agencies/{}", None),
        ("GET", "/v1/agencies/{}/projects", None),
        ("POST", "/v1/agencies/{}/projects", {"name": "x"}),
    ):
        kwargs = {"json": body} if body is not None else {}
        hidden = client.request(method, path.format("beta"), headers=ada, **kwargs)
        missing = client.request(method, path.format("nowhere"), headers=ada, **kwargs)
        assert_same_404(hidden, "beta", missing, "nowhere")
    user = {"name": "mole", "agency": "beta", "clearance": "UNCLASSIFIED"}
    hidden = client.post("/v1/users", json=user, headers=ada)
    missing = client.post("/v1/users", json={**user, "agency": "nowhere"}, headers=ada)
    assert_same_404(hidden, "beta", missing, "nowhere")
    assert "eve" not in client.get("/v1/users", headers=ada).text
    assert ok(client.get("/v1/users/eve"))["disabled"] is False  # nothing changed


def test_privileged_roles_are_the_operators_to_grant(world: World) -> None:
    client, ctx = world.client, world.ctx
    ada, _bea, _ben = agency_admins(world)
    for role in ("admin", "operator", "auditor", "release-authority"):
        body = {"name": "sock", "agency": "alpha", "clearance": "SECRET", "roles": ["user", role]}
        with unchanged(ctx, audit=DENIED):
            assert_problem(client.post("/v1/users", json=body, headers=ada), 403, "only an operator")
        with unchanged(ctx, audit=DENIED):
            assert_problem(client.patch("/v1/users/alice", json={"roles": [role]}, headers=ada), 403)
    # Nor does an agency admin borrow a privileged user's identity (bob: a release authority;
    # bea: another admin — its token would make ada its own second approver).
    for who, label in (("bob", "SECRET"), ("bea", "UNCLASSIFIED")):
        with unchanged(ctx, audit=DENIED):
            r = client.post("/v1/tokens", json={"user": who, "label": label}, headers=ada)
            assert_problem(r, 403, "only an operator")
        with unchanged(ctx, audit=DENIED):
            r = client.put(f"/v1/users/{who}/password", json={"new_password": PASSWORD}, headers=ada)
            assert_problem(r, 403)
    # ... nor hand out more than its own clearance: a TOP SECRET//SI user or token.
    body = {"name": "sock", "agency": "alpha", "clearance": "TOP SECRET//SI"}
    with unchanged(ctx, audit=DENIED):
        assert_problem(client.post("/v1/users", json=body, headers=ada), 403, "own clearance")


def test_a_clearance_raise_waits_for_a_second_admin(world: World) -> None:
    client, ctx = world.client, world.ctx
    ada, bea, _ben = agency_admins(world)
    with unchanged(ctx, audit=("admin.clearance_requested",), skip=("clearance_requests",)):
        asked = ok(
            client.post("/v1/users/alice/clearance", json={"clearance": "top secret"}, headers=ada), 201
        )
    assert (asked["user"], asked["from"], asked["to"], asked["state"]) == (
        "alice",
        "SECRET",
        "TOP SECRET",
        "pending",
    )
    assert asked["requested_by"] == "ada" and asked["decided_by"] is None
    assert ok(client.get("/v1/users/alice"))["clearance"] == "SECRET"
    pending = ok(client.get("/v1/clearance-requests", params={"state": "pending"}, headers=bea))
    assert [r["id"] for r in pending["items"]] == [asked["id"]]
    with unchanged(ctx):  # no TOP SECRET token for alice meanwhile
        assert_problem(
            client.post("/v1/tokens", json={"user": "alice", "label": "TOP SECRET"}, headers=bea), 403
        )
    with unchanged(ctx, audit=("admin.clearance_approved",), skip=("clearance_requests", "users")):
        done = ok(client.post(f"/v1/clearance-requests/{asked['id']}/approve", headers=bea))
    assert (done["state"], done["decided_by"]) == ("approved", "bea")
    assert ok(client.get("/v1/users/alice"))["clearance"] == "TOP SECRET"
    ok(client.post("/v1/tokens", json={"user": "alice", "label": "TOP SECRET"}, headers=ada), 201)
    # Decided once.
    with unchanged(ctx):
        assert_problem(client.post(f"/v1/clearance-requests/{asked['id']}/approve"), 409, "approved")
        assert_problem(client.post(f"/v1/clearance-requests/{asked['id']}/refuse"), 409)
    assert ok(client.get("/v1/clearance-requests", params={"state": "pending"}))["count"] == 0
    history = ok(client.get("/v1/clearance-requests"))["items"]
    assert [(r["state"], r["to"]) for r in history] == [("approved", "TOP SECRET")]


def test_a_refused_or_stale_request_changes_nothing(world: World) -> None:
    client, ctx = world.client, world.ctx
    ada, bea, ben = agency_admins(world)
    first = ok(client.post("/v1/users/dave/clearance", json={"clearance": "SECRET"}, headers=ada), 201)
    with unchanged(ctx, audit=("admin.clearance_refused",), skip=("clearance_requests",)):
        refused = ok(client.post(f"/v1/clearance-requests/{first['id']}/refuse", headers=ada))  # withdrawn
    assert (refused["state"], refused["decided_by"]) == ("refused", "ada")
    with unchanged(ctx):
        assert_problem(client.post(f"/v1/clearance-requests/{first['id']}/approve", headers=bea), 409)
    # A request made before the clearance changed is not applied over the change.
    to_cui = ok(client.post("/v1/users/dave/clearance", json={"clearance": "CUI"}, headers=bea), 201)
    ok(client.post(f"/v1/clearance-requests/{to_cui['id']}/approve", headers=ada))
    second = ok(client.post("/v1/users/dave/clearance", json={"clearance": "SECRET"}, headers=ada), 201)
    third = ok(client.post("/v1/users/dave/clearance", json={"clearance": "UNCLASSIFIED"}, headers=bea), 201)
    assert third["state"] == "applied"  # a lowering: at once
    with unchanged(ctx):
        r = client.post(f"/v1/clearance-requests/{second['id']}/approve", headers=bea)
        assert_problem(r, 409, "changed since")
    assert ok(client.get("/v1/users/dave"))["clearance"] == "UNCLASSIFIED"
    # Unknown ids, and a request of another agency to beta's admin, answer the same.
    for verb in ("approve", "refuse"):
        hidden = client.post(f"/v1/clearance-requests/{second['id']}/{verb}", headers=ben)
        other = missing_id()
        missing = client.post(f"/v1/clearance-requests/{other}/{verb}", headers=ben)
        assert_same_404(hidden, second["id"], missing, other)
    assert ok(client.get("/v1/clearance-requests", headers=ben))["count"] == 0
    with unchanged(ctx):
        assert_problem(client.post("/v1/users/dave/clearance", json={"clearance": "ULTRA"}, headers=ada), 422)
        assert_problem(client.get("/v1/clearance-requests", params={"state": "odd"}, headers=ada), 422)
    check_json_rejections(client, ctx, "POST", "/v1/users/dave/clearance", {"clearance": "CUI"}, headers=ada)


def test_clearance_requests_are_admins_only(world: World) -> None:
    client, ctx = world.client, world.ctx
    with unchanged(ctx, audit=DENIED * 2):
        assert_problem(client.get("/v1/clearance-requests", headers=world.alice_s), 403)
        r = client.post("/v1/users/dave/clearance", json={"clearance": "SECRET"}, headers=world.alice_s)
        assert_problem(r, 403)
    asked = ok(client.post("/v1/users/dave/clearance", json={"clearance": "SECRET"}), 201)
    with unchanged(ctx, audit=DENIED):
        assert_problem(client.post(f"/v1/clearance-requests/{asked['id']}/approve", headers=world.bob_s), 403)
