from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from enclave.api.deps import ActorDep, CtxDep, WindowDep
from enclave.api.schemas import ShareIn
from enclave.services import artifacts

router = APIRouter(tags=["artifacts"])
UPLOAD_PATH = "/v1/artifacts"
BINARY_BODY: dict[str, Any] = {
    "requestBody": {
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
    }
}


def stream_content(meta: dict[str, Any], chunks: Iterator[bytes]) -> StreamingResponse:
    headers = {
        "X-Content-SHA256": meta["sha256"],
        "X-Enclave-Label": meta["label"],
        "Content-Length": str(meta["size_bytes"]),
    }
    return StreamingResponse(chunks, media_type="application/octet-stream", headers=headers)


@router.post("/artifacts", status_code=201, openapi_extra=BINARY_BODY)
async def put(
    request: Request,
    ctx: CtxDep,
    actor: ActorDep,
    name: Annotated[str, Query(min_length=1, max_length=256)],
    project: Annotated[str | None, Query(max_length=64)] = None,
    x_content_sha256: Annotated[str | None, Header(max_length=64)] = None,
) -> dict[str, Any]:
    """Upload raw bytes as a new artifact at the session label (streamed, checksummed)."""
    return await artifacts.put(
        ctx, actor, name, request.stream(), expected_sha256=x_content_sha256, project=project
    )


@router.get("/artifacts")
def list_(
    ctx: CtxDep,
    actor: ActorDep,
    window: WindowDep,
    kind: Annotated[str | None, Query(max_length=32)] = None,
) -> dict[str, Any]:
    """Artifacts the session may read (its agency's and those shared with it), newest first,
    a page at a time (``limit``, ``offset`` or ``cursor``; ``total`` and ``next_cursor``)."""
    return artifacts.page(ctx, actor, kind, window)


@router.get("/artifacts/{artifact_id}")
def show(artifact_id: str, ctx: CtxDep, actor: ActorDep) -> dict[str, Any]:
    return artifacts.show(ctx, actor, artifact_id)


@router.get("/artifacts/{artifact_id}/content")
def content(artifact_id: str, ctx: CtxDep, actor: ActorDep) -> StreamingResponse:
    return stream_content(*artifacts.open_content(ctx, actor, artifact_id))


@router.delete("/artifacts/{artifact_id}", status_code=204)
def delete(artifact_id: str, ctx: CtxDep, actor: ActorDep) -> None:
    artifacts.delete(ctx, actor, artifact_id)


@router.post("/artifacts/{artifact_id}/shares")
def share(artifact_id: str, body: ShareIn, ctx: CtxDep, actor: ActorDep) -> dict[str, Any]:
    return artifacts.share(ctx, actor, artifact_id, body.agency)
