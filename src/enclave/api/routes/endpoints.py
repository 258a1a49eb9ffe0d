from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from enclave.api.deps import ActorDep, CtxDep, WindowDep
from enclave.api.schemas import DeployIn, ScaleIn
from enclave.services import endpoints
from enclave.services.endpoints import DeploySpec

router = APIRouter(tags=["endpoints"])


@router.post("/endpoints", status_code=201)
def deploy(body: DeployIn, ctx: CtxDep, actor: ActorDep) -> dict[str, Any]:
    """Deploy a registered model as an endpoint (replicas placed by the scheduler)."""
    return endpoints.deploy(ctx, actor, DeploySpec(**body.model_dump()))


@router.get("/endpoints")
def list_(ctx: CtxDep, actor: ActorDep, window: WindowDep) -> dict[str, Any]:
    """Endpoints the session may read, newest first, a page at a time."""
    return endpoints.page(ctx, actor, window)


@router.get("/endpoints/{name}")
def show(name: str, ctx: CtxDep, actor: ActorDep) -> dict[str, Any]:
    return endpoints.show(ctx, actor, name)


@router.post("/endpoints/{name}/scale")
def scale(name: str, body: ScaleIn, request: Request, ctx: CtxDep, actor: ActorDep) -> dict[str, Any]:
    out = endpoints.scale(ctx, actor, name, body.replicas, body.min_replicas, body.max_replicas)
    return out


@router.delete("/endpoints/{name}", status_code=204)
def delete(name: str, request: Request, ctx: CtxDep, actor: ActorDep) -> None:
    endpoints.delete(ctx, actor, name)
    request.app.state.gateway.forget(actor.agency_id, name)
