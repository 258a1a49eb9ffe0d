from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from enclave.api.deps import ActorDep, CtxDep, WindowDep
from enclave.api.schemas import TrainingIn
from enclave.scheduler.model import QOS
from enclave.services import training
from enclave.services.training import TrainingSpec

router = APIRouter(tags=["training"])


@router.post("/training", status_code=201)
def submit(body: TrainingIn, ctx: CtxDep, actor: ActorDep) -> dict[str, Any]:
    """Submit a training job: a script artifact run over datasets; its output becomes a model."""
    spec = TrainingSpec(
        name=body.name,
        script=body.script,
        model_name=body.model_name,
        runtime=body.runtime,
        datasets=list(body.datasets),
        base_models=list(body.base_models),
        hyperparameters=dict(body.hyperparameters),
        args=list(body.args),
        walltime_s=body.walltime_s,
        nodes=body.resources.nodes,
        cpus_per_node=body.resources.cpus_per_node,
        memory_mb=body.resources.memory_mb,
        gpus_per_node=body.resources.gpus_per_node,
        region=body.region,
        qos=QOS(body.qos),
        idempotency_key=body.idempotency_key,
    )
    return training.submit(ctx, actor, spec)


@router.get("/training")
def list_(ctx: CtxDep, actor: ActorDep, window: WindowDep) -> dict[str, Any]:
    """Training jobs the session may read, newest first, a page at a time."""
    return training.page(ctx, actor, window)


@router.get("/training/{job_id}")
def show(job_id: str, ctx: CtxDep, actor: ActorDep) -> dict[str, Any]:
    return training.show(ctx, actor, job_id)


@router.get("/training/{job_id}/metrics")
def metrics(
    job_id: str, ctx: CtxDep, actor: ActorDep, since_step: Annotated[int, Query(ge=-1)] = -1
) -> dict[str, Any]:
    return training.metrics(ctx, actor, job_id, since_step)
