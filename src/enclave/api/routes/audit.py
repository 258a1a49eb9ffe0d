from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from enclave.api.deps import ActorDep, CtxDep
from enclave.api.schemas import MAX_INT64
from enclave.services import audit

router = APIRouter(tags=["audit"])


@router.get("/audit")
def list_(
    ctx: CtxDep,
    actor: ActorDep,
    after: Annotated[int, Query(ge=0, le=MAX_INT64)] = 0,
    limit: Annotated[int, Query(ge=1, le=audit.MAX_LIST)] = 100,
    event: Annotated[str | None, Query(max_length=64)] = None,
) -> dict[str, Any]:
    items = audit.list_records(ctx, actor, after, limit, event)
    return {"items": items, "count": len(items)}


@router.get("/audit/verify")
def verify(ctx: CtxDep, actor: ActorDep) -> dict[str, Any]:
    return audit.verify(ctx, actor)
