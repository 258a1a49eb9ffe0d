from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from enclave.api.deps import ActorDep, CtxDep
from enclave.services import regions

router = APIRouter(tags=["regions"])


@router.get("/regions")
def list_regions(ctx: CtxDep, actor: ActorDep) -> dict[str, Any]:
    items = regions.list_all(ctx, actor)
    return {"fleet": ctx.fleet.name, "items": items, "count": len(items)}


@router.get("/regions/{name}")
def get_region(name: str, ctx: CtxDep, actor: ActorDep) -> dict[str, Any]:
    return regions.show(ctx, actor, name)
