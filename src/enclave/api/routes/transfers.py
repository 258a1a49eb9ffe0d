from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from enclave.api.deps import ActorDep, CtxDep, WindowDep
from enclave.api.schemas import OverrideIn, ReviewIn, TransferIn
from enclave.services import transfers
from enclave.services.transfers import TransferState

router = APIRouter(tags=["transfers"])


@router.post("/transfers", status_code=201)
def request(body: TransferIn, ctx: CtxDep, actor: ActorDep) -> dict[str, Any]:
    return transfers.request(ctx, actor, body.artifact_id, body.to, body.why)


@router.get("/transfers")
def list_(
    ctx: CtxDep, actor: ActorDep, window: WindowDep, state: Annotated[TransferState | None, Query()] = None
) -> dict[str, Any]:
    """Transfers the session may read, newest first, a page at a time."""
    return transfers.page(ctx, actor, state, window)


@router.get("/transfers/{transfer_id}")
def show(transfer_id: str, ctx: CtxDep, actor: ActorDep) -> dict[str, Any]:
    return transfers.show(ctx, actor, transfer_id)


@router.post("/transfers/{transfer_id}/approve")
def approve(transfer_id: str, ctx: CtxDep, actor: ActorDep, body: ReviewIn | None = None) -> dict[str, Any]:
    return transfers.review(ctx, actor, transfer_id, True, body.comment if body else None)


@router.post("/transfers/{transfer_id}/refuse")
def refuse(transfer_id: str, ctx: CtxDep, actor: ActorDep, body: ReviewIn | None = None) -> dict[str, Any]:
    return transfers.review(ctx, actor, transfer_id, False, body.comment if body else None)


@router.post("/transfers/{transfer_id}/override")
def override(transfer_id: str, body: OverrideIn, ctx: CtxDep, actor: ActorDep) -> dict[str, Any]:
    """A release authority vouches for content the guard could not read, with a reason."""
    return transfers.override(ctx, actor, transfer_id, body.reason)


@router.post("/transfers/{transfer_id}/release")
def release(transfer_id: str, ctx: CtxDep, actor: ActorDep) -> dict[str, Any]:
    return transfers.release(ctx, actor, transfer_id)
