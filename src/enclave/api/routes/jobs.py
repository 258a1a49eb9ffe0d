from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse

from enclave.api.deps import ActorDep, CtxDep
from enclave.api.schemas import JobBatchIn, JobIn
from enclave.scheduler.model import QOS
from enclave.services import joblogs, jobs
from enclave.services.jobs import DependencyType, JobSpec, JobState

router = APIRouter(tags=["jobs"])


def to_spec(body: JobIn) -> JobSpec:
    r = body.resources
    return JobSpec(
        name=body.name,
        command=body.command,
        label=body.label,
        walltime_s=body.walltime_s,
        nodes=r.nodes,
        cpus_per_node=r.cpus_per_node,
        memory_mb=r.memory_mb,
        gpus_per_node=r.gpus_per_node,
        region=body.region,
        qos=QOS(body.qos),
        env=dict(body.env),
        depends_on=[(DependencyType(d.type), d.job) for d in body.depends_on],
        array=body.array,
        idempotency_key=body.idempotency_key,
        project=body.project,
    )


@router.post("/jobs", status_code=201)
def submit(body: JobIn, ctx: CtxDep, actor: ActorDep) -> dict[str, Any]:
    return jobs.submit(ctx, actor, [to_spec(body)])[0]


@router.post("/jobs/batch", status_code=201)
def submit_batch(body: JobBatchIn, ctx: CtxDep, actor: ActorDep) -> dict[str, Any]:
    """Submit many jobs in one transaction (all or none)."""
    items = jobs.submit(ctx, actor, [to_spec(j) for j in body.jobs])
    return {"jobs": items, "count": len(items)}


@router.get("/jobs")
def list_(
    ctx: CtxDep,
    actor: ActorDep,
    state: Annotated[JobState | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> dict[str, Any]:
    items = jobs.list_visible(ctx, actor, state, limit)
    return {"items": items, "count": len(items)}


@router.get("/jobs/{job_id}")
def show(job_id: str, ctx: CtxDep, actor: ActorDep) -> dict[str, Any]:
    return jobs.show(ctx, actor, job_id)


@router.post("/jobs/{job_id}/cancel")
def cancel(job_id: str, ctx: CtxDep, actor: ActorDep) -> dict[str, Any]:
    return jobs.cancel(ctx, actor, job_id)


@router.get("/jobs/{job_id}/logs", response_class=PlainTextResponse)
def logs(
    job_id: str,
    ctx: CtxDep,
    actor: ActorDep,
    stream: Annotated[Literal["stdout", "stderr"], Query()] = "stdout",
    offset: Annotated[int, Query(ge=0)] = 0,
) -> PlainTextResponse:
    """The job's output from ``offset`` (bytes): live while it runs, from the log artifact after."""
    text, next_offset = joblogs.read(ctx, actor, job_id, stream, offset)
    return PlainTextResponse(text, headers={"X-Next-Offset": str(next_offset)})
