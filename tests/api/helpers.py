"""Small helpers for the API tests: actors, uploads, problem checks and "nothing changed" checks."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from enclave.services.context import Context
from enclave.store.models import AuditRecord, Base

PROBLEM_JSON = "application/problem+json"
Headers = dict[str, str]


def bearer(token: str) -> Headers:
    return {"Authorization": f"Bearer {token}"}


def missing_id() -> str:
    return str(uuid.uuid4())


# -- responses ----------------------------------------------------------------------------
def assert_problem(r: httpx.Response, status: int, detail: str | None = None) -> dict[str, Any]:
    """An RFC 9457 problem with the given status (and ``detail`` as a substring, if given)."""
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].split(";")[0].strip() == PROBLEM_JSON, r.headers
    body = r.json()
    assert body["status"] == status, body
    assert isinstance(body["title"], str) and body["title"], body
    assert isinstance(body["detail"], str) and body["detail"], body
    if detail is not None:
        assert detail in body["detail"], body
    return body


def assert_unauthenticated(r: httpx.Response) -> dict[str, Any]:
    body = assert_problem(r, 401)
    assert r.headers.get("www-authenticate", "").lower().startswith("bearer"), r.headers
    return body


def ok(r: httpx.Response, status: int = 200) -> Any:
    assert r.status_code == status, (r.status_code, r.text)
    return r.json() if r.content else None


def anon(client: TestClient, method: str, url: str, **kwargs: Any) -> httpx.Response:
    """A request with no Authorization header at all (the client carries the admin's)."""
    request = client.build_request(method, url, **kwargs)
    del request.headers["Authorization"]
    return client.send(request)


def chunked(data: bytes, size: int = 4096) -> Iterator[bytes]:
    """A body without Content-Length (sent chunked)."""
    for i in range(0, len(data), size):
        yield data[i : i + size]


def _scrub(body: dict[str, Any], ident: str) -> str:
    return json.dumps(body, sort_keys=True).replace(ident, "<id>")


def assert_invisible(
    client: TestClient, method: str, template: str, hidden_id: str, headers: Headers, **kwargs: Any
) -> None:
    """The hidden object answers exactly like an id that never existed (bar the id itself)."""
    other = missing_id()
    hidden = client.request(method, template.format(id=hidden_id), headers=headers, **kwargs)
    missing = client.request(method, template.format(id=other), headers=headers, **kwargs)
    assert_same_404(hidden, hidden_id, missing, other)


def assert_same_404(hidden: httpx.Response, hidden_id: str, missing: httpx.Response, other_id: str) -> None:
    """Two 404 problems that differ in nothing but the id they were asked about."""
    h, m = assert_problem(hidden, 404), assert_problem(missing, 404)
    assert _scrub(h, hidden_id) == _scrub(m, other_id)
    assert hidden.headers["content-type"] == missing.headers["content-type"]
    assert hidden.headers.get("www-authenticate") == missing.headers.get("www-authenticate")


# -- tenancy ------------------------------------------------------------------------------
def create_agency(client: TestClient, name: str, **quotas: Any) -> dict[str, Any]:
    return ok(client.post("/v1/agencies", json={"name": name, "quotas": quotas}), 201)


def create_user(
    client: TestClient,
    name: str,
    agency: str,
    clearance: str,
    roles: tuple[str, ...] = ("user",),
    password: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name, "agency": agency, "clearance": clearance, "roles": list(roles)}
    if password is not None:
        body["password"] = password
    return ok(client.post("/v1/users", json=body), 201)


def mint(client: TestClient, user: str, label: str, ttl_s: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"user": user, "label": label}
    if ttl_s is not None:
        body["ttl_s"] = ttl_s
    return ok(client.post("/v1/tokens", json=body), 201)


def token_header(client: TestClient, user: str, label: str) -> Headers:
    return bearer(mint(client, user, label)["token"])


# -- artifacts and transfers --------------------------------------------------------------
def upload(
    client: TestClient, headers: Headers, data: bytes, name: str = "blob.bin", **params: str
) -> dict[str, Any]:
    r = client.post("/v1/artifacts", params={"name": name, **params}, content=data, headers=headers)
    return ok(r, 201)


def listing(client: TestClient, path: str, headers: Headers, **params: Any) -> dict[str, Any]:
    body = ok(client.get(path, headers=headers, params=params))
    assert body["count"] == len(body["items"])
    return body


def listed_ids(client: TestClient, path: str, headers: Headers, **params: Any) -> set[str]:
    return {item["id"] for item in listing(client, path, headers, **params)["items"]}


def request_transfer(client: TestClient, headers: Headers, artifact_id: str, to: str) -> dict[str, Any]:
    body = {"artifact_id": artifact_id, "to": to, "why": "needed by the partner team"}
    return ok(client.post("/v1/transfers", json=body, headers=headers), 201)


# -- state --------------------------------------------------------------------------------
AUDIT_TABLES = ("audit_records", "audit_head")


def db_rows(ctx: Context, skip: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """Every row of every table (but the audit chain and ``skip``), as sorted text."""
    out: dict[str, list[str]] = {}
    with ctx.engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            if table.name in AUDIT_TABLES or table.name in skip:
                continue
            out[table.name] = sorted(repr(tuple(row)) for row in conn.execute(select(table)))
    return out


def blob_files(ctx: Context) -> set[str]:
    root = ctx.settings.home / "blobs"
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def audit_seq(ctx: Context) -> int:
    ctx.denials.flush()  # denials that answered like a miss are recorded off the request path
    with ctx.sessions() as session:
        return int(session.execute(select(func.coalesce(func.max(AuditRecord.seq), 0))).scalar_one())


def audit_events_after(ctx: Context, seq: int) -> list[str]:
    ctx.denials.flush()
    with ctx.sessions() as session:
        rows = session.execute(
            select(AuditRecord.event).where(AuditRecord.seq > seq).order_by(AuditRecord.seq)
        )
        return list(rows.scalars())


def assert_chain_ok(ctx: Context) -> None:
    ctx.denials.flush()
    with ctx.sessions() as session:
        result = ctx.audit.verify(session)
    assert result.ok, result


@contextmanager
def unchanged(ctx: Context, audit: tuple[str, ...] | None = (), skip: tuple[str, ...] = ()) -> Iterator[None]:
    """Nothing in the store or the blob directory changes inside the block; the audit log
    grows by exactly the events in ``audit`` (None: any) and still verifies."""
    rows, blobs, seq = db_rows(ctx, skip), blob_files(ctx), audit_seq(ctx)
    yield
    assert db_rows(ctx, skip) == rows
    assert blob_files(ctx) == blobs
    if audit is not None:
        assert audit_events_after(ctx, seq) == list(audit)
    assert_chain_ok(ctx)


DENIED = ("access.denied",)


def check_json_rejections(
    client: TestClient,
    ctx: Context,
    method: str,
    path: str,
    valid: dict[str, Any],
    headers: Headers | None = None,
) -> None:
    """Malformed JSON, an unknown field, a wrong shape and bodies over the JSON limit
    (declared and chunked) are refused with problem+json, and nothing is written."""
    auth = headers or {}
    as_json = {"content-type": "application/json", **auth}
    big = json.dumps({**valid, "pad": "x" * ctx.settings.max_json_bytes}).encode()
    assert len(big) > ctx.settings.max_json_bytes
    with unchanged(ctx):
        assert_problem(client.request(method, path, content=b'{"name": ', headers=as_json), 422)
        body = assert_problem(client.request(method, path, json={**valid, "surprise": 1}, headers=auth), 422)
        assert "surprise" in body["detail"]
        assert_problem(client.request(method, path, content=b"[1, 2]", headers=as_json), 422)
        assert_problem(client.request(method, path, content=big, headers=as_json), 413)
        assert_problem(client.request(method, path, content=chunked(big), headers=as_json), 413)


def assert_refused_as_input(client: TestClient, ctx: Context, method: str, path: str, **kwargs: Any) -> None:
    """422 problem+json, nothing written: for values no store can hold (NUL characters,
    integers beyond 64 bits, infinities), on SQLite and PostgreSQL alike."""
    with unchanged(ctx):
        assert_problem(client.request(method, path, **kwargs), 422)
