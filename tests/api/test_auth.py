"""/v1/auth/login, /v1/tokens, /v1/whoami, and bearer authentication on every route."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from enclave.services.context import LOGIN_LOCKOUT_S, LOGIN_MAX_FAILURES, Context
from enclave.services.throttle import LOGIN_ADDRESS_MAX_ATTEMPTS, LOGIN_ADDRESS_WINDOW_S
from enclave.store.models import LoginThrottle, Token, User

from .conftest import Clock, World
from .helpers import (
    DENIED,
    anon,
    assert_problem,
    assert_refused_as_input,
    assert_unauthenticated,
    bearer,
    check_json_rejections,
    create_user,
    mint,
    missing_id,
    ok,
    unchanged,
)

# The operations these tests cover (each has its tests in this package). The 401 sweep below
# runs over every operation the server actually serves, so a route added later is held to
# bearer authentication too.
ROUTES = {
    ("POST", "/v1/auth/login"),
    ("POST", "/v1/tokens"),
    ("DELETE", "/v1/tokens/{token_id}"),
    ("GET", "/v1/whoami"),
    ("POST", "/v1/agencies"),
    ("GET", "/v1/agencies"),
    ("GET", "/v1/agencies/{name}"),
    ("PUT", "/v1/agencies/{name}/quotas"),
    ("POST", "/v1/agencies/{name}/projects"),
    ("GET", "/v1/agencies/{name}/projects"),
    ("POST", "/v1/users"),
    ("GET", "/v1/users"),
    ("GET", "/v1/users/{name}"),
    ("PATCH", "/v1/users/{name}"),
    ("PUT", "/v1/users/{name}/password"),
    ("GET", "/v1/regions"),
    ("GET", "/v1/regions/{name}"),
    ("POST", "/v1/artifacts"),
    ("GET", "/v1/artifacts"),
    ("GET", "/v1/artifacts/{artifact_id}"),
    ("DELETE", "/v1/artifacts/{artifact_id}"),
    ("GET", "/v1/artifacts/{artifact_id}/content"),
    ("POST", "/v1/artifacts/{artifact_id}/shares"),
    ("POST", "/v1/transfers"),
    ("GET", "/v1/transfers"),
    ("GET", "/v1/transfers/{transfer_id}"),
    ("POST", "/v1/transfers/{transfer_id}/approve"),
    ("POST", "/v1/transfers/{transfer_id}/refuse"),
    ("POST", "/v1/transfers/{transfer_id}/release"),
    ("GET", "/v1/audit"),
    ("GET", "/v1/audit/verify"),
    ("GET", "/healthz"),
}
UNAUTHENTICATED_ROUTES = {("POST", "/v1/auth/login"), ("GET", "/healthz")}
PASSWORD = "correct horse battery staple"


def _served(client: TestClient) -> set[tuple[str, str]]:
    spec = ok(client.get("/openapi.json"))
    return {(method.upper(), path) for path, ops in spec["paths"].items() for method in ops}


def test_route_inventory(client: TestClient) -> None:
    served = _served(client)
    assert served >= ROUTES, ROUTES - served
    # Everything else the server serves is under /v1 (and so behind the sweep below).
    assert all(path.startswith("/v1/") for _, path in served - ROUTES)


def test_unknown_routes_and_methods_are_problems(client: TestClient, ctx: Context) -> None:
    with unchanged(ctx):
        assert_problem(client.get("/v1/no-such-thing"), 404)
        assert_problem(anon(client, "GET", "/v1/no-such-thing"), 404)
        r = client.put("/v1/whoami")
        assert_problem(r, 405)
        assert "GET" in r.headers["allow"]


def test_every_route_refuses_bad_credentials_with_401(world: World, clock: Clock) -> None:
    client, ctx = world.client, world.ctx
    expired = mint(client, "dave", "UNCLASSIFIED", ttl_s=60)["token"]
    revoked = mint(client, "dave", "UNCLASSIFIED")
    ok(client.delete(f"/v1/tokens/{revoked['id']}"), 204)
    disabled = mint(client, "carol", "SECRET")["token"]
    ok(client.patch("/v1/users/carol", json={"disabled": True}))
    clock.advance(61)
    # The same tokens still work for what they are not refused for: the checks below are real.
    ok(client.get("/v1/whoami", headers=world.dave_u))
    variants: list[dict[str, str] | None] = [
        None,  # no Authorization header at all
        {"Authorization": ""},
        {"Authorization": "Basic YWRtaW46cGFzc3dvcmQ="},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer    "},
        bearer("enc_" + "A" * 43),  # well formed, never issued
        bearer("not-an-enclave-token"),
        bearer("enc_" + "a" * 200),  # too long
        bearer(expired),
        bearer(revoked["token"]),
        bearer(disabled),
    ]
    token_problems = variants[5:]
    with unchanged(ctx):
        for method, template in sorted(_served(client) - UNAUTHENTICATED_ROUTES):
            path = re.sub(r"\{[a-z_]+\}", missing_id(), template)
            for headers in variants:
                request = client.build_request(method, path, headers=headers or {})
                if headers is None:
                    del request.headers["Authorization"]
                r = client.send(request)
                body = assert_unauthenticated(r)
                if headers in token_problems:
                    # One answer for every token problem: nothing tells them apart. (Region
                    # workers' routes take a worker credential, not a user's token.)
                    expected = (
                        "invalid or revoked worker credential"
                        if template.startswith("/v1/workers/")
                        else "invalid or expired token"
                    )
                    assert body["detail"] == expected, (method, path, body)


def test_every_route_refuses_nul_characters_in_the_query(world: World) -> None:
    """FastAPI's app-wide check, and the gateway's plain Starlette routes' own, alike: 422
    before anything else (authentication, the body) is looked at, nothing written."""
    # A body every model call would take: only the NUL can be what is refused.
    call = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "prompt": "hi", "input": "hi"}
    served = _served(world.client)
    assert ("POST", "/v1/chat/completions") in served and ("POST", "/v1/embeddings") in served
    for method, template in sorted(served):
        path = re.sub(r"\{[a-z_]+\}", missing_id(), template)
        body = call if method == "POST" else None
        for headers in (world.dave_u, {"Authorization": ""}):
            with unchanged(world.ctx):
                r = world.client.request(method, f"{path}?name=a%00b", headers=headers, json=body)
                assert_problem(r, 422, "NUL characters")


def test_whoami_describes_the_session(world: World) -> None:
    client = world.client
    token = mint(client, "bob", "secret")  # markings are read loosely and stored canonically
    assert token["label"] == "SECRET"
    me = ok(client.get("/v1/whoami", headers=bearer(token["token"])))
    assert me == {
        "user": "bob",
        "agency": "alpha",
        "clearance": "TOP SECRET",
        "label": "SECRET",
        "roles": ["release-authority", "user"],
        "token_id": token["id"],
    }
    assert ok(client.get("/v1/whoami", headers=world.eve_u))["label"] == "UNCLASSIFIED"


def test_mint_token(world: World) -> None:
    client, ctx = world.client, world.ctx
    before = ctx.now()
    with unchanged(ctx, audit=("auth.token_minted",), skip=("tokens",)):
        token = mint(client, "alice", "SECRET", ttl_s=600)
    assert token["token"].startswith("enc_")
    expires = datetime.fromisoformat(token["expires_at"])
    assert before + timedelta(seconds=600) <= expires <= ctx.now() + timedelta(seconds=600)
    me = ok(client.get("/v1/whoami", headers=bearer(token["token"])))
    assert (me["user"], me["label"], me["token_id"]) == ("alice", "SECRET", token["id"])
    # Default lifetime comes from the settings; only a digest of the secret is stored.
    default = mint(client, "alice", "UNCLASSIFIED")
    expires = datetime.fromisoformat(default["expires_at"])
    assert expires - ctx.now() <= timedelta(seconds=ctx.settings.token_ttl_s)
    assert expires - ctx.now() > timedelta(seconds=ctx.settings.token_ttl_s - 60)
    with ctx.sessions() as session:
        stored = session.get(Token, default["id"])
        assert stored is not None and default["token"] not in stored.token_hash


def test_mint_token_refusals(world: World) -> None:
    client, ctx = world.client, world.ctx
    # A non-admin administering: visible, forbidden, audited as a denial.
    with unchanged(ctx, audit=DENIED):
        assert_problem(
            client.post("/v1/tokens", json={"user": "alice", "label": "SECRET"}, headers=world.alice_s), 403
        )
    with unchanged(ctx):
        # Above the user's clearance (SECRET for alice, UNCLASSIFIED for dave).
        assert_problem(client.post("/v1/tokens", json={"user": "alice", "label": "TOP SECRET"}), 403)
        assert_problem(client.post("/v1/tokens", json={"user": "dave", "label": "CUI"}), 403)
        assert_problem(client.post("/v1/tokens", json={"user": "alice", "label": "SECRET//SI"}), 403)
        # Unknown markings.
        for marking in ("BOGUS", "SECRET//NOFORN", "SECRET//SI//TK", "SECRET//"):
            assert_problem(client.post("/v1/tokens", json={"user": "alice", "label": marking}), 422)
        assert_problem(client.post("/v1/tokens", json={"user": "nobody", "label": "SECRET"}), 422)
        for ttl in (0, -5, 400 * 24 * 3600, "soon"):
            r = client.post("/v1/tokens", json={"user": "alice", "label": "SECRET", "ttl_s": ttl})
            assert_problem(r, 422)
        assert_problem(client.post("/v1/tokens", json={"user": "alice"}), 422)
    ok(client.patch("/v1/users/dave", json={"disabled": True}))
    with unchanged(ctx):
        assert_problem(client.post("/v1/tokens", json={"user": "dave", "label": "UNCLASSIFIED"}), 403)
    check_json_rejections(client, ctx, "POST", "/v1/tokens", {"user": "alice", "label": "SECRET"})


def test_revoke_token(world: World) -> None:
    client, ctx = world.client, world.ctx
    mine = mint(client, "alice", "UNCLASSIFIED")
    bobs = mint(client, "bob", "SECRET")
    # A user may not revoke someone else's token; it keeps working.
    with unchanged(ctx, audit=DENIED):
        assert_problem(client.delete(f"/v1/tokens/{bobs['id']}", headers=bearer(mine["token"])), 403)
    ok(client.get("/v1/whoami", headers=bearer(bobs["token"])))
    # ... and is told the same about a token id that does not exist: no existence oracle.
    with unchanged(ctx, audit=DENIED):
        assert_problem(client.delete(f"/v1/tokens/{missing_id()}", headers=bearer(mine["token"])), 403)
    # A user revokes their own token, which stops working at once.
    with unchanged(ctx, audit=("auth.token_revoked",), skip=("tokens",)):
        ok(client.delete(f"/v1/tokens/{mine['id']}", headers=bearer(mine["token"])), 204)
    assert_unauthenticated(client.get("/v1/whoami", headers=bearer(mine["token"])))
    # The admin revokes anyone's; revoking again changes nothing and records nothing.
    ok(client.delete(f"/v1/tokens/{bobs['id']}"), 204)
    assert_unauthenticated(client.get("/v1/whoami", headers=bearer(bobs["token"])))
    with unchanged(ctx):
        ok(client.delete(f"/v1/tokens/{bobs['id']}"), 204)
        assert_problem(client.delete(f"/v1/tokens/{missing_id()}"), 404)
    # Other tokens of the same users are untouched.
    ok(client.get("/v1/whoami", headers=world.alice_s))
    ok(client.get("/v1/whoami", headers=world.bob_s))


def test_expired_token_is_refused(world: World, clock: Clock) -> None:
    client = world.client
    token = mint(client, "alice", "SECRET", ttl_s=120)
    clock.advance(119)
    ok(client.get("/v1/whoami", headers=bearer(token["token"])))
    clock.advance(2)
    assert_unauthenticated(client.get("/v1/whoami", headers=bearer(token["token"])))


def _hash_of(ctx: Context, name: str) -> str | None:
    with ctx.sessions() as session:
        return session.execute(select(User.password_hash).where(User.name == name)).scalar_one()


def _tokens(ctx: Context) -> int:
    with ctx.sessions() as session:
        return int(session.execute(select(func.count()).select_from(Token)).scalar_one())


def test_password_login(client: TestClient, ctx: Context) -> None:
    create_user(client, "pat", "enclave", "SECRET", password=PASSWORD)
    stored = _hash_of(ctx, "pat")
    assert stored is not None and stored.startswith("$argon2id$")
    assert PASSWORD not in stored
    assert PasswordHasher().verify(stored, PASSWORD)

    with unchanged(ctx, audit=("auth.login_succeeded",), skip=("tokens",)):
        token = ok(
            client.post("/v1/auth/login", json={"user": "pat", "password": PASSWORD, "label": "cui"}), 201
        )
    assert token["label"] == "CUI"
    me = ok(client.get("/v1/whoami", headers=bearer(token["token"])))
    assert (me["user"], me["label"], me["token_id"]) == ("pat", "CUI", token["id"])

    # A label above the clearance: the password was right, but no token is issued.
    count = _tokens(ctx)
    with unchanged(ctx, audit=None, skip=("login_throttle",)):
        r = client.post("/v1/auth/login", json={"user": "pat", "password": PASSWORD, "label": "TOP SECRET"})
        assert_problem(r, 403)
    assert _tokens(ctx) == count
    # An unknown marking is refused before anything is looked at.
    with unchanged(ctx):
        r = client.post("/v1/auth/login", json={"user": "pat", "password": PASSWORD, "label": "SECRET//XX"})
        assert_problem(r, 422)
        assert_problem(client.post("/v1/auth/login", json={"user": "pat", "label": "SECRET"}), 422)
        r = client.post("/v1/auth/login", json={"user": "pat", "password": "", "label": "SECRET"})
        assert_problem(r, 422)
    # A wrong password: 401 with a challenge, the failure audited, no token.
    with unchanged(ctx, audit=("auth.login_failed",), skip=("login_throttle",)):
        r = client.post(
            "/v1/auth/login", json={"user": "pat", "password": "wrong password!", "label": "SECRET"}
        )
        assert_unauthenticated(r)
    # The bootstrap admin has no password: a password login never succeeds for it.
    r = client.post("/v1/auth/login", json={"user": "admin", "password": PASSWORD, "label": "UNCLASSIFIED"})
    assert_unauthenticated(r)
    check_json_rejections(
        client, ctx, "POST", "/v1/auth/login", {"user": "pat", "password": PASSWORD, "label": "SECRET"}
    )


@pytest.mark.parametrize("exists", [True, False], ids=["known-user", "unknown-user"])
def test_login_rate_limit(client: TestClient, ctx: Context, clock: Clock, exists: bool) -> None:
    name = "pat" if exists else "ghost"
    if exists:
        create_user(client, "pat", "enclave", "SECRET", password=PASSWORD)
    wrong = {"user": name, "password": "not the password", "label": "SECRET"}
    right = {**wrong, "password": PASSWORD}
    tokens = _tokens(ctx)
    for _ in range(LOGIN_MAX_FAILURES):
        assert_unauthenticated(client.post("/v1/auth/login", json=wrong))
    # Locked: even the right password is refused, with the same answer whether or not the
    # user exists, and nothing is issued.
    for body in (right, wrong):
        with unchanged(ctx, skip=("login_throttle",)):
            r = client.post("/v1/auth/login", json=body)
            assert_problem(r, 429)
        retry = int(r.headers["Retry-After"])
        assert 0 < retry <= LOGIN_LOCKOUT_S + 1
    assert _tokens(ctx) == tokens
    with ctx.sessions() as session:
        throttle = session.get(LoginThrottle, name)
        assert throttle is not None and throttle.locked_until is not None
    # Another name is not affected by this one's lock-out.
    other = client.post("/v1/auth/login", json={**wrong, "user": "someone-else"})
    assert_unauthenticated(other)
    # After the lock-out the right password works again (and clears the counter).
    clock.advance(LOGIN_LOCKOUT_S + 1)
    r = client.post("/v1/auth/login", json=right)
    if exists:
        ok(r, 201)
        with ctx.sessions() as session:
            assert session.get(LoginThrottle, name) is None
    else:
        assert_unauthenticated(r)


def test_login_is_throttled_per_client_address(client: TestClient, ctx: Context) -> None:
    """Rotating user names does not get round the per-name lock-out: the address runs out
    first, before any database work or hashing, and its refusals are counted, not logged."""
    create_user(client, "pat", "enclave", "SECRET", password=PASSWORD)
    for i in range(LOGIN_ADDRESS_MAX_ATTEMPTS):
        r = client.post(
            "/v1/auth/login", json={"user": f"name{i}", "password": "wrong password!", "label": "SECRET"}
        )
        assert_unauthenticated(r)
    for body in ({"user": "name-x", "password": "wrong password!"}, {"user": "pat", "password": PASSWORD}):
        with unchanged(ctx):
            r = client.post("/v1/auth/login", json={**body, "label": "SECRET"})
            assert_problem(r, 429, "from this address")
        assert 0 < int(r.headers["Retry-After"]) <= LOGIN_ADDRESS_WINDOW_S + 1
    assert ctx.auth_failures.pending() == 2
    # Once one attempt leaves the window (here: taken back), the address may try again.
    ctx.login_throttle.succeeded("testclient")
    ok(client.post("/v1/auth/login", json={"user": "pat", "password": PASSWORD, "label": "SECRET"}), 201)


def test_a_successful_login_does_not_count_against_its_address(client: TestClient, ctx: Context) -> None:
    create_user(client, "pat", "enclave", "SECRET", password=PASSWORD)
    for _ in range(LOGIN_ADDRESS_MAX_ATTEMPTS + 5):
        ok(client.post("/v1/auth/login", json={"user": "pat", "password": PASSWORD, "label": "SECRET"}), 201)


def test_nul_characters_are_invalid_input(world: World) -> None:
    client, ctx = world.client, world.ctx
    login = {"user": "da\x00ve", "password": PASSWORD, "label": "UNCLASSIFIED"}
    assert_refused_as_input(client, ctx, "POST", "/v1/auth/login", json=login)
    assert_refused_as_input(client, ctx, "POST", "/v1/tokens", json={"user": "dave\x00", "label": "U"})
    assert_refused_as_input(client, ctx, "POST", "/v1/tokens", json={"user": "dave", "label": "U\x00"})
    assert_refused_as_input(client, ctx, "DELETE", f"/v1/tokens/{missing_id()}%00")
