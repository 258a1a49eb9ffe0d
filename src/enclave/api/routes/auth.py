from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from enclave.api.deps import ActorDep, CtxDep
from enclave.api.schemas import LoginIn, TokenIn
from enclave.services import auth
from enclave.store.models import Token

router = APIRouter(tags=["auth"])


def _token_view(row: Token, secret: str) -> dict[str, Any]:
    return {"id": row.id, "token": secret, "label": row.label, "expires_at": row.expires_at.isoformat()}


@router.post("/auth/login", status_code=201)
def login(body: LoginIn, request: Request, ctx: CtxDep) -> dict[str, Any]:
    client = request.client.host if request.client else ""
    row, secret = auth.login(ctx, body.user, body.password, body.label, client)
    return _token_view(row, secret)


@router.post("/tokens", status_code=201)
def mint(body: TokenIn, ctx: CtxDep, actor: ActorDep) -> dict[str, Any]:
    row, secret = auth.mint_token(ctx, actor, body.user, body.label, body.ttl_s)
    return _token_view(row, secret)


@router.delete("/tokens/{token_id}", status_code=204)
def revoke(token_id: str, ctx: CtxDep, actor: ActorDep) -> None:
    auth.revoke_token(ctx, actor, token_id)


@router.get("/whoami")
def whoami(actor: ActorDep) -> dict[str, Any]:
    s = actor.subject
    return {
        "user": s.user,
        "agency": s.agency,
        "clearance": s.clearance.marking,
        "label": s.session.marking,
        "roles": sorted(s.roles),
        "token_id": actor.token_id,
    }
