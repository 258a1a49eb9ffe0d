from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from enclave.api.deps import ActorDep, CtxDep, WindowDep
from enclave.api.routes.artifacts import BINARY_BODY, stream_content
from enclave.services import datasets

router = APIRouter(tags=["datasets"])


@router.post("/datasets", status_code=201, openapi_extra=BINARY_BODY)
async def upload(
    request: Request,
    ctx: CtxDep,
    actor: ActorDep,
    name: Annotated[str, Query(min_length=1, max_length=256)],
    project: Annotated[str | None, Query(max_length=64)] = None,
    description: Annotated[str | None, Query(max_length=1000)] = None,
    x_content_sha256: Annotated[str | None, Header(max_length=64)] = None,
) -> dict[str, Any]:
    """Upload a dataset version at the session label (streamed, checksummed, encrypted)."""
    return await datasets.upload(
        ctx,
        actor,
        name,
        request.stream(),
        expected_sha256=x_content_sha256,
        project=project,
        description=description,
    )


@router.get("/datasets")
def list_(ctx: CtxDep, actor: ActorDep, window: WindowDep) -> dict[str, Any]:
    """Dataset versions the session may read, newest first, a page at a time."""
    return datasets.page(ctx, actor, window)


@router.get("/datasets/{dataset_id}")
def show(dataset_id: str, ctx: CtxDep, actor: ActorDep) -> dict[str, Any]:
    return datasets.show(ctx, actor, dataset_id)


@router.get("/datasets/{dataset_id}/content")
def content(dataset_id: str, ctx: CtxDep, actor: ActorDep) -> StreamingResponse:
    return stream_content(*datasets.open_content(ctx, actor, dataset_id))


@router.delete("/datasets/{dataset_id}", status_code=204)
def delete(dataset_id: str, ctx: CtxDep, actor: ActorDep) -> None:
    datasets.delete(ctx, actor, dataset_id)
