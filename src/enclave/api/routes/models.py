"""The model registry. (``/v1/models`` is the gateway's OpenAI model list: the registry lives
at ``/v1/registry/models``.)"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from pydantic import BaseModel, Field

from enclave.api.deps import ActorDep, CtxDep, WindowDep
from enclave.api.routes.artifacts import BINARY_BODY
from enclave.services import models
from enclave.services.models import Lineage

router = APIRouter(tags=["models"])
UPLOAD_PATH = "/v1/registry/models"


class BuiltinIn(BaseModel):
    name: str = Field(min_length=1, max_length=256)
    builtin: str = Field(min_length=1, max_length=32)


def _ids(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


@router.post("/registry/models", status_code=201, openapi_extra=BINARY_BODY)
async def register(
    request: Request,
    ctx: CtxDep,
    actor: ActorDep,
    name: Annotated[str, Query(min_length=1, max_length=256)],
    runtime: Annotated[str, Query(min_length=1, max_length=32)],
    datasets: Annotated[str | None, Query(max_length=4096, description="comma-separated dataset ids")] = None,
    base_models: Annotated[
        str | None, Query(max_length=4096, description="comma-separated model ids")
    ] = None,
    job: Annotated[str | None, Query(max_length=36)] = None,
    label: Annotated[str | None, Query(max_length=256, description="the label you expect; checked")] = None,
    x_content_sha256: Annotated[str | None, Header(max_length=64)] = None,
) -> dict[str, Any]:
    """Upload a model archive (tar or tar.gz) with its lineage; the server computes its label."""
    lineage = Lineage(datasets=_ids(datasets), base_models=_ids(base_models), job=job)
    return await models.register(
        ctx,
        actor,
        request.stream(),
        name=name,
        runtime=runtime,
        lineage=lineage,
        label=label,
        expected_sha256=x_content_sha256,
    )


@router.post("/registry/builtin-models", status_code=201)
def register_builtin(body: BuiltinIn, ctx: CtxDep, actor: ActorDep) -> dict[str, Any]:
    return models.register_builtin(ctx, actor, body.name, body.builtin)


@router.get("/registry/models")
def list_(ctx: CtxDep, actor: ActorDep, window: WindowDep) -> dict[str, Any]:
    """Models the session may read, newest first, a page at a time."""
    return models.page(ctx, actor, window)


@router.get("/registry/models/{model_id}")
def show(model_id: str, ctx: CtxDep, actor: ActorDep) -> dict[str, Any]:
    return models.show(ctx, actor, model_id)


@router.delete("/registry/models/{model_id}", status_code=204)
def delete(model_id: str, ctx: CtxDep, actor: ActorDep) -> None:
    models.delete(ctx, actor, model_id)
