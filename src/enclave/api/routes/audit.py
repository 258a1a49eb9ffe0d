from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import Field

from enclave.api.deps import ActorDep, CtxDep
from enclave.api.schemas import MAX_INT64, Strict
from enclave.audit.chain import Checkpoint
from enclave.services import audit

router = APIRouter(tags=["audit"])


class CheckpointIn(Strict):
    seq: Annotated[int, Field(ge=0, le=MAX_INT64)]
    hash: Annotated[str, Field(max_length=128)]
    ts: Annotated[str, Field(max_length=64)]
    signature: Annotated[str, Field(max_length=256)]


class VerifyIn(Strict):
    """``pubkey``: the pinned key (``ed25519:<hex>`` or PEM); ``sink``: the newest checkpoints
    read from an append-only sink."""

    pubkey: Annotated[str | None, Field(max_length=1024)] = None
    sink: Annotated[list[CheckpointIn], Field(max_length=audit.MAX_SINK_CHECKPOINTS)] = []


@router.get("/audit")
def list_(
    ctx: CtxDep,
    actor: ActorDep,
    after: Annotated[int, Query(ge=0, le=MAX_INT64)] = 0,
    limit: Annotated[int, Query(ge=1, le=audit.MAX_LIST)] = 100,
    event: Annotated[str | None, Query(max_length=64)] = None,
    before: Annotated[
        int | None, Query(ge=1, le=MAX_INT64, description="Only records before this seq")
    ] = None,
    order: Annotated[
        Literal["asc", "desc"], Query(description="asc: oldest first (the default); desc: newest first")
    ] = "asc",
    total: Annotated[bool, Query(description="Also count every readable record the filter matches")] = False,
) -> dict[str, Any]:
    """Records the session may read, ``{"items", "count", "total", "next_after", "next_before"}``.

    The next page: ``after=next_after`` (asc) or ``before=next_before`` (desc); null on the last.
    ``total`` is null unless asked for."""
    return audit.page_records(
        ctx, actor, after, limit, event, before_seq=before, order=order, with_total=total
    )


@router.get("/audit/verify")
def verify(ctx: CtxDep, actor: ActorDep) -> dict[str, Any]:
    return audit.verify(ctx, actor)


@router.post("/audit/verify")
def verify_pinned(body: VerifyIn, ctx: CtxDep, actor: ActorDep) -> dict[str, Any]:
    """Verify with a pinned public key and against checkpoints from an append-only sink."""
    sink = [Checkpoint(c.seq, c.hash, c.ts, c.signature) for c in body.sink]
    return audit.verify(ctx, actor, body.pubkey, sink)


@router.get("/audit/pubkey")
def pubkey(ctx: CtxDep, actor: ActorDep) -> dict[str, Any]:
    """The key this server signs records and checkpoints with."""
    return audit.public_key(ctx, actor)
