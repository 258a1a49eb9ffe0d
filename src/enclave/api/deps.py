"""Request dependencies: the process context and the authenticated actor."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from enclave.errors import NotAuthenticated
from enclave.services.auth import authenticate
from enclave.services.context import Context
from enclave.services.unit import Actor


def get_ctx(request: Request) -> Context:
    ctx: Context = request.app.state.ctx
    return ctx


def current_actor(request: Request, ctx: Annotated[Context, Depends(get_ctx)]) -> Actor:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise NotAuthenticated("send 'Authorization: Bearer <token>'")
    return authenticate(ctx, token.strip())


CtxDep = Annotated[Context, Depends(get_ctx)]
ActorDep = Annotated[Actor, Depends(current_actor)]
